"""One policy applied to one query: the masks to match and answer with, and the extra tests.

``apply_policy`` leaves the client's prepared query alone and returns a ``PolicyQuery``:

* ``match`` — the mask wlmd's matcher runs: station from the caller, coerced keys, the date
  window. Keys compared as decoded text (tolerant names, non-ASCII values) are made universal
  here and checked by ``text_tests`` instead.
* ``answer`` — the mask responses are built from: the client's, plus and minus return keys.
* ``target`` — the character set to answer in (None: the stored bytes, as wlmscpfs).
"""

from __future__ import annotations

import datetime
import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from wlmd.dicom.dump import element_vr as dictionary_vr
from wlmd.findscu.keys import OverrideKey
from wlmd.policy.charsets import Charset, Conversion, convert_text, is_plain_ascii
from wlmd.policy.model import QUERY_CHARSET, Fallback, NameMatching, PeerPolicy
from wlmd.policy.names import names_match, wildcard_match
from wlmd.worklist.index import Prefilter, prefilter_of
from wlmd.worklist.keys import (
    ROOT_MATCHING_KEYS,
    SCHEDULED_PERFORMING_PHYSICIAN_NAME,
    SCHEDULED_PROCEDURE_STEP_SEQUENCE,
    SCHEDULED_STATION_AE_TITLE,
    SPECIFIC_CHARACTER_SET,
    SPS_START_DATE,
)
from wlmd.worklist.matching import rule_for
from wlmd.worklist.query import (
    CHARSET_VRS,
    PreparedQuery,
    element_vr,
    make_raw,
    tag_name,
    value_of,
)

RecordTest = Callable[[Dataset], bool]
TEXT_KEYS_SPS = (SCHEDULED_PERFORMING_PHYSICIAN_NAME,)


@dataclass
class PolicyQuery:
    """What the worklist application runs for one query under one policy."""

    policy: PeerPolicy
    match: PreparedQuery
    answer: PreparedQuery
    target: Charset | None
    text_tests: list[tuple[str, RecordTest]] = field(default_factory=list)  # (key path, test)
    cache_key: bytes = b""

    @functools.cached_property
    def prefilter(self) -> Prefilter | None:
        """The index prefilter of ``match``, worked out once: a repeated query (``AppliedQueries``)
        reuses it, as coerced keys (station list, modalities, date window) make it costly."""
        return prefilter_of(self.match)

    def matches_text(self, record: Dataset) -> bool:
        return all(test(record) for _, test in self.text_tests)

    def text_mismatch(self, record: Dataset) -> str | None:
        """The first key compared as text that ``record`` fails (for explanations), or None."""
        return next((path for path, test in self.text_tests if not test(record)), None)


def query_charset(identifier: Dataset) -> Charset:
    """The (0008,0005) the query declares (prepare_query drops it from the mask)."""
    found = value_of(identifier, SPECIFIC_CHARACTER_SET)
    return Charset.of(found[1] if found else b"")


def record_charset(record: Dataset) -> Charset:
    """The (0008,0005) a worklist entry is stored in (the default repertoire when absent)."""
    found = value_of(record, SPECIFIC_CHARACTER_SET)
    return Charset.of(found[1] if found else b"")


class AppliedQueries:
    """The ``PolicyQuery`` of recent queries, so that a modality repeating its query (they do)
    costs one encoding of the mask and a dictionary lookup, and reuses the compiled matcher."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._known: OrderedDict[bytes, PolicyQuery] = OrderedDict()

    def get(self, policy: PeerPolicy, query: PreparedQuery, declared: Charset,
            calling_ae: str) -> PolicyQuery:
        today = datetime.date.today()
        # b"policy": never the start of an encoded mask, the response cache's other keys
        key = b"\0".join((b"policy", policy.name.encode(), calling_ae.encode(), declared.value,
                          f"{today:%Y%m%d}".encode(),
                          query.key()))
        applied = self._known.get(key)
        if applied is None:
            applied = apply_policy(policy, query, declared, calling_ae, today)
            applied.cache_key = key
            self._known[key] = applied
            if len(self._known) > self._size:
                self._known.popitem(last=False)
        else:
            self._known.move_to_end(key)
        return applied


def apply_policy(policy: PeerPolicy, query: PreparedQuery, declared: Charset, calling_ae: str,
                 today: datetime.date | None = None) -> PolicyQuery:
    """The masks and tests ``policy`` asks for, for ``query`` from ``calling_ae``.

    ``cache_key`` stays empty: ``AppliedQueries`` sets it (everything the result depends on).
    """
    mask = copy_mask(query.mask)
    stations = policy.stations or ((calling_ae,) if policy.station_from_caller else ())
    if stations and _is_universal(mask, (SCHEDULED_PROCEDURE_STEP_SEQUENCE,
                                         SCHEDULED_STATION_AE_TITLE)):
        _put(mask, (SCHEDULED_PROCEDURE_STEP_SEQUENCE, SCHEDULED_STATION_AE_TITLE),
             "\\".join(stations).encode("latin-1"))  # AE titles are read as latin-1
    for key in policy.set_keys:
        if _is_universal(mask, _path(key)):
            _put(mask, _path(key), _encoded(key, declared))
    for key in policy.override_keys:
        _put(mask, _path(key), _encoded(key, declared))
    if policy.date_window_days is not None and _is_universal(
            mask, (SCHEDULED_PROCEDURE_STEP_SEQUENCE, SPS_START_DATE)):
        day = today or datetime.date.today()
        span = datetime.timedelta(days=policy.date_window_days)
        window = f"{day - span:%Y%m%d}-{day + span:%Y%m%d}".encode("ascii")
        _put(mask, (SCHEDULED_PROCEDURE_STEP_SEQUENCE, SPS_START_DATE), window)
    answer = query
    if policy.add_return_keys or policy.drop_return_keys:
        answer_mask = copy_mask(query.mask)
        for key in policy.add_return_keys:
            if value_of_path(answer_mask, _path(key)) is None:
                _put(answer_mask, _path(key), b"")
        for key in policy.drop_return_keys:
            _drop(answer_mask, _path(key))
        answer = PreparedQuery(answer_mask, query.unsupported_removed)
    target = None
    if policy.charset is not None:
        target = declared if policy.charset == QUERY_CHARSET else Charset.of(policy.charset)
    tests = _text_tests(mask, policy, declared)
    return PolicyQuery(policy, PreparedQuery(mask, query.unsupported_removed), answer, target,
                       tests)


# --- paths in a mask ----------------------------------------------------------------------------


def copy_mask(mask: Dataset) -> Dataset:
    """A copy whose levels can be changed; elements are shared, as they are only replaced
    (raw elements are immutable), never changed in place."""
    copied = Dataset()
    for tag in sorted(mask.keys()):
        element = mask.get_item(tag)
        if element_vr(element) == "SQ":
            items = [copy_mask(item) for item in mask[tag].value or []]
            copied.add(DataElement(tag, "SQ", Sequence(items)))
        else:
            copied[tag] = element
    return copied


def _path(key: OverrideKey) -> tuple[BaseTag, ...]:
    return tuple(step.tag for step in key.steps)


def _encoded(key: OverrideKey, declared: Charset) -> bytes:
    """A configured value in the query's character set, so both compare alike."""
    return declared.encode(key.value or "")


def _level(mask: Dataset, path: tuple[BaseTag, ...], create: bool) -> Dataset | None:
    """The dataset holding the path's last tag (item 0 of each sequence on the way)."""
    current = mask
    for tag in path[:-1]:
        element = current.get_item(tag)
        if element is None or element_vr(element) != "SQ" or not current[tag].value:
            if not create:
                return None
            current[tag] = DataElement(tag, "SQ", Sequence([Dataset()]))
        current = current[tag].value[0]
    return current


def value_of_path(mask: Dataset, path: tuple[BaseTag, ...]) -> tuple[str, bytes] | None:
    level = _level(mask, path, create=False)
    return None if level is None else value_of(level, path[-1])


def _is_universal(mask: Dataset, path: tuple[BaseTag, ...]) -> bool:
    found = value_of_path(mask, path)
    return found is None or rule_for(found[0]).is_universal(found[1], True)


def _put(mask: Dataset, path: tuple[BaseTag, ...], value: bytes) -> None:
    level = _level(mask, path, create=True)
    assert level is not None
    tag = path[-1]
    vr = dictionary_vr(tag)
    if vr == "SQ":
        if tag not in level:
            level[tag] = DataElement(tag, "SQ", Sequence([Dataset()]))
        return
    existing = level.get_item(tag)
    if existing is not None:
        vr = element_vr(existing)
    level[tag] = make_raw(tag, vr, value + (b" " if len(value) % 2 else b""))


def _drop(mask: Dataset, path: tuple[BaseTag, ...]) -> None:
    level = _level(mask, path, create=False)
    if level is not None and path[-1] in level:
        del level[path[-1]]


# --- keys compared as decoded text -----------------------------------------------------------


@dataclass(frozen=True)
class _TextKey:
    """One matching key compared as decoded text instead of bytes."""

    tag: BaseTag
    vr: str
    wanted: tuple[str, ...]  # the query's values, decoded
    tolerant: bool  # PN compared by names_match
    phonetic: bool
    wildcards: bool

    def accepts(self, level: Dataset, charset: Charset) -> bool:
        candidate = value_of(level, self.tag)
        if candidate is None or candidate[0] != self.vr:
            return False
        person_name = self.vr == "PN"
        text = charset.decode(candidate[1].split(b"\0", 1)[0], person_name)
        return any(self._accepts(wanted, value) for wanted in self.wanted
                   for value in _values(text, person_name))

    def _accepts(self, wanted: str, value: str) -> bool:
        if self.tolerant:
            return names_match(wanted, value, phonetic=self.phonetic)
        if self.wildcards and ("*" in wanted or "?" in wanted):
            return wildcard_match(wanted, value)
        return wanted == value


def _values(text: str, person_name: bool) -> list[str]:
    """Values split at '\\', normalised as the matcher normalises bytes for the VR."""
    return [v.rstrip(" ") if person_name else v.strip(" ") for v in text.split("\\")]


def _text_tests(mask: Dataset, policy: PeerPolicy, declared: Charset
                ) -> list[tuple[str, RecordTest]]:
    """Blank the keys that need text comparison in ``mask`` and return their tests."""
    tests: list[tuple[str, RecordTest]] = []
    for tag, wildcards in ROOT_MATCHING_KEYS.keys:
        key = _text_key(mask, tag, wildcards, policy, declared)
        if key is not None:
            tests.append((tag_name(tag), functools.partial(_at_top, key)))
    sps = mask.get_item(SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    if sps is not None and element_vr(sps) == "SQ" and mask[sps.tag].value:
        item = mask[sps.tag].value[0]
        for tag in TEXT_KEYS_SPS:
            key = _text_key(item, tag, True, policy, declared)
            if key is not None:
                path = f"{tag_name(SCHEDULED_PROCEDURE_STEP_SEQUENCE)}>{tag_name(tag)}"
                tests.append((path, functools.partial(_in_any_step, key)))
    return tests


def _at_top(key: _TextKey, record: Dataset) -> bool:
    return key.accepts(record, record_charset(record))


def _in_any_step(key: _TextKey, record: Dataset) -> bool:
    """The key holds in some step of the record (tested apart from the other step keys)."""
    element = record.get_item(SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    if element is None or element_vr(element) != "SQ":
        return False
    charset = record_charset(record)
    return any(key.accepts(item, charset)
               for item in record[SCHEDULED_PROCEDURE_STEP_SEQUENCE].value or [])


def _text_key(level: Dataset, tag: BaseTag, wildcards: bool, policy: PeerPolicy,
              declared: Charset) -> _TextKey | None:
    """A text comparison for ``tag`` when the query needs one (the key is then blanked)."""
    found = value_of(level, tag)
    if found is None or found[0] not in CHARSET_VRS:
        return None
    vr, raw = found
    if rule_for(vr).is_universal(raw, wildcards):
        return None
    person_name = vr == "PN"
    tolerant = person_name and policy.name_matching is not NameMatching.EXACT
    if not tolerant and is_plain_ascii(raw):
        return None  # bytes compare exactly as decoded text would
    level[tag] = make_raw(tag, vr, b"")
    return _TextKey(tag, vr, tuple(_values(declared.decode(raw, person_name), person_name)),
                    tolerant, policy.name_matching is NameMatching.PHONETIC, wildcards)


# --- answers in the peer's character set -----------------------------------------------------


def convert_response(response: Dataset, source: Charset, target: Charset,
                     fallback: Fallback) -> Conversion:
    """Re-encode every text value of ``response`` from ``source`` into ``target`` in place,
    and declare ``target`` in (0008,0005) (left out for the default repertoire)."""
    outcome = Conversion()
    has_text = _convert_level(response, source, target, fallback, outcome)
    if outcome.omitted:
        return outcome
    if SPECIFIC_CHARACTER_SET in response:
        del response[SPECIFIC_CHARACTER_SET]
    if has_text and not target.is_default:
        response[SPECIFIC_CHARACTER_SET] = make_raw(SPECIFIC_CHARACTER_SET, "CS",
                                                    _even(target.value))
    return outcome


def _convert_level(level: Dataset, source: Charset, target: Charset, fallback: Fallback,
                   outcome: Conversion) -> bool:
    """Convert one level (and its items); True if it holds a text element (PN, LO, ...).

    Answers hold raw elements with explicit VRs (``build_response``) and sequences, read here
    without pydicom converting them.
    """
    has_text = False
    for tag, element in list(level.items()):
        vr = element.VR
        if vr == "SQ":
            for item in level[tag].value or []:
                has_text |= _convert_level(item, source, target, fallback, outcome)
                if outcome.omitted:
                    return has_text
        elif vr in CHARSET_VRS:
            has_text = True
            raw = element.value
            if not isinstance(raw, bytes) or is_plain_ascii(raw):
                continue  # ASCII reads the same in every set wlmd answers in
            person_name = vr == "PN"
            converted = convert_text(source.decode(raw, person_name), target, fallback,
                                     person_name, outcome)
            if converted is None:
                return has_text
            level[tag] = make_raw(tag, vr, _even(target.encode(converted)))
    return has_text


def _even(value: bytes) -> bytes:
    return value + b" " if len(value) % 2 else value
