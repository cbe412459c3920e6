"""Answers encoded straight from raw elements (``AnswerPlan``) are byte for byte those of
``build_response`` + ``encode_dataset``: over the differential corpus with every query, over
generated entries and queries, and through the service where a plan must step aside."""

from __future__ import annotations

import itertools
import os
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from tests.support import corpus
from tests.support.worklists import code_item, worklist_dataset
from wlmd.config.settings import CharsetMode, Settings
from wlmd.dicom.dimse import encode_dataset
from wlmd.dicom.dump_text import parse_dump
from wlmd.dicom.rawfile import (
    ElementReader,
    NotRaw,
    RawLevel,
    encode_element,
    encode_sequence,
    part10,
)
from wlmd.dicom.types import STATUS_PENDING, AssociationInfo
from wlmd.worklist.answerplan import AnswerPlan, NotDirect
from wlmd.worklist.fileview import raw_elements
from wlmd.worklist.query import PreparedQuery, make_raw, prepare_query
from wlmd.worklist.records import FileLoader, WorklistRecord
from wlmd.worklist.response import build_response
from wlmd.worklist.service import WorklistService

SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
            DeflatedExplicitVRLittleEndian)
# every transfer syntax, character set mode and -u/+u in turn
VARIANTS = list(itertools.product(SYNTAXES, CharsetMode, (True, False)))


def _old_answer(query: PreparedQuery, elements: RawLevel, syntax: str, charset: CharsetMode,
                new_vr: bool) -> bytes:
    return encode_dataset(build_response(query, elements, charset), syntax, new_vr=new_vr)


def _plan(query: PreparedQuery, syntax: str, charset: CharsetMode, new_vr: bool
          ) -> AnswerPlan | None:
    try:
        return AnswerPlan(query.mask, syntax, charset=charset, new_vr=new_vr,
                          compression_level=6)
    except NotDirect:
        return None


def _records(directory: Path) -> list[WorklistRecord]:
    """The entries of one AE directory that the file-reject check leaves."""
    loader = FileLoader(str(directory), file_reject=True, max_file_bytes=1 << 20)
    found = []
    for path in sorted(directory.glob("*.wl")):
        entry, _ = loader.load(str(path), path.name, os.stat(path), False, str(directory))
        if entry is not None and entry.record is not None:
            found.append(entry.record)
    return found


def test_corpus_answers_are_those_of_the_dataset_encoder(tmp_path: Path) -> None:
    """Every query of the differential suite (read from its dump text) on the entries of its
    AE, each query in one transfer syntax, character set mode and -u/+u in turn."""
    root = corpus.build_database(tmp_path / "db")
    records = {ae: [record for record in _records(root / ae) if raw_elements(record) is not None]
               for ae in {source.ae for source in corpus.QUERIES}}
    variants = itertools.cycle(itertools.product(VARIANTS, (True, False)))
    compared = direct = 0
    for source in corpus.QUERIES:
        (syntax, charset, new_vr), expand = next(variants)
        identifier = parse_dump(source.dump.encode(corpus.CODECS[source.charset]))
        query = prepare_query(identifier, no_fail=True, expand_sequences=expand)
        plan = _plan(query, syntax, charset, new_vr)
        for record in records[source.ae]:
            elements = raw_elements(record)
            assert elements is not None
            expected = _old_answer(query, elements, syntax, charset, new_vr)
            compared += 1
            if plan is not None:  # read as the service reads it: only what the plan wants
                kept = raw_elements(record, plan.wanted)
                assert kept is not None
                assert plan.answer(kept) == expected, (source.name, record.name, syntax)
                direct += 1
    assert compared > 1000
    assert direct > 0.9 * compared  # what a plan leaves to the old way stays the exception


# --- generated entries and queries ----------------------------------------------------------

VALUES = st.one_of(st.binary(max_size=7), st.sampled_from(
    [b"", b"SMITH^JOHN", b"SMITH^J ", b"A\0B", b"A\\B\\C", b"\xc4\xd6", b"ISO_IR 100",
     b"ISO_IR 192", b"\\ISO 2022 IR 87", b"1.2.3\0"]))
TOP = ((0x00080005, "CS"), (0x00080050, "SH"), (0x00100010, "PN"), (0x00100020, "LO"),
       (0x00100030, "DA"), (0x0020000D, "UI"), (0x00321060, "LO"), (0x00401001, "SH"))
SPS = ((0x00080060, "CS"), (0x00400001, "AE"), (0x00400002, "DA"), (0x00400006, "PN"),
       (0x00400007, "LO"), (0x00400009, "SH"))
CODE = ((0x00080100, "SH"), (0x00080102, "SH"), (0x00080104, "LO"))
REFERENCE = ((0x00081150, "UI"), (0x00081155, "UI"))
PREGNANCY = 0x001021C0
SEQUENCES = {0x00081110: REFERENCE, 0x00321064: CODE, 0x00400008: CODE}
SPS_SEQUENCE = 0x00400100


def _vrs(vr: str) -> st.SearchStrategy[str]:
    """Mostly the dictionary's VR; sometimes another, as a hand-made file may have it."""
    return st.one_of(st.just(vr), st.sampled_from(["LO", "UT", "US", "UN", "SQ"]))


def _file_level(strings: tuple[tuple[int, str], ...], sequences: dict[int, tuple[tuple[int, str],
                ...]]) -> st.SearchStrategy[bytes]:
    """One level of an explicit VR little endian entry: some elements, each of some VR."""
    def element(tag: int, vr: str) -> st.SearchStrategy[bytes | None]:
        return st.none() | st.builds(
            lambda vr, value: encode_element(tag, vr.encode(), value)
            if vr != "SQ" else encode_sequence(tag, []), _vrs(vr), VALUES)

    def sequence(tag: int, keys: tuple[tuple[int, str], ...]) -> st.SearchStrategy[bytes | None]:
        return st.none() | st.lists(_file_level(keys, {}), max_size=2).map(
            lambda items: encode_sequence(tag, items))

    parts = [element(tag, vr) for tag, vr in strings]
    parts += [sequence(tag, keys) for tag, keys in sequences.items()]
    return st.tuples(*parts).map(lambda found: b"".join(
        part for _, part in sorted((_tag_of(part), part) for part in found if part)))


def _tag_of(encoded: bytes) -> int:
    group, element = struct.unpack_from("<HH", encoded)
    return int(group << 16 | element)


def _entry(top: bytes, sps_items: list[bytes] | None, pregnancy: bytes | None) -> bytes:
    """An entry's dataset: its top-level elements, SPS items and PregnancyStatus, in order."""
    elements = _split(top)
    if sps_items is not None:
        elements.append(encode_sequence(SPS_SEQUENCE, sps_items))
    if pregnancy is not None:
        elements.append(encode_element(PREGNANCY, b"US", pregnancy))
    return b"".join(sorted(elements, key=_tag_of))


ENTRIES = st.builds(
    _entry,
    _file_level(TOP, {tag: keys for tag, keys in SEQUENCES.items() if tag != 0x00400008}),
    st.none() | st.lists(_file_level(SPS, {0x00400008: CODE}), max_size=2),
    st.none() | st.binary(max_size=3),
)


def _split(level: bytes) -> list[bytes]:
    """The top-level elements of an encoded level (explicit VR little endian)."""
    elements: list[bytes] = []
    at = 0
    while at < len(level):
        vr = level[at + 4:at + 6]
        if vr in (b"SQ", b"UT", b"UN"):
            end = at + 12 + struct.unpack_from("<L", level, at + 8)[0]
        else:
            end = at + 8 + struct.unpack_from("<H", level, at + 6)[0]
        elements.append(level[at:end])
        at = end
    return elements


MASK_VALUES = st.sampled_from([b"", b"", b"", b"MR", b"SMITH*", b"A?", b"ABC", b"20240304"])


def _mask_level(keys: tuple[tuple[int, str], ...], sequences: dict[int, tuple[tuple[int, str],
                ...]]) -> st.SearchStrategy[Dataset]:
    """One level of a query: some return keys, mostly of the dictionary's VR, some values."""
    def element(tag: int, vr: str) -> st.SearchStrategy[object]:
        values = st.sampled_from([b"", b"\2\0"]) if vr == "US" else MASK_VALUES
        return st.none() | st.builds(lambda vr, value: make_raw(Tag(tag), vr, value),
                                     st.sampled_from([vr, vr, "UN"]), values)

    def sequence(tag: int, keys: tuple[tuple[int, str], ...]) -> st.SearchStrategy[object]:
        return st.none() | st.lists(_mask_level(keys, {}), max_size=2).map(
            lambda items: DataElement(tag, "SQ", Sequence(items)))

    def build(elements: tuple[object, ...]) -> Dataset:
        level = Dataset()
        for found in elements:
            if isinstance(found, RawDataElement | DataElement):
                level[found.tag] = found
        return level

    parts = [element(tag, vr) for tag, vr in keys]
    parts += [sequence(tag, keys) for tag, keys in sequences.items()]
    return st.tuples(*parts).map(build)


MASKS = st.tuples(
    _mask_level((*TOP, (PREGNANCY, "US")), {tag: keys for tag, keys in SEQUENCES.items()
                                             if tag != 0x00400008}),
    st.none() | st.lists(_mask_level(SPS, {0x00400008: CODE}), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(ENTRIES, MASKS, st.sampled_from(VARIANTS), st.booleans())
def test_generated_answers_are_those_of_the_dataset_encoder(
        body: bytes, mask: tuple[Dataset, list[Dataset] | None],
        variant: tuple[str, CharsetMode, bool], expand: bool) -> None:
    identifier, sps_items = mask
    if sps_items is not None:
        identifier.add(DataElement(SPS_SEQUENCE, "SQ", Sequence(sps_items)))
    try:
        elements = ElementReader(body, implicit=False).level(0, None, top=True)[0]
    except NotRaw:
        return  # answered from pydicom's decode, as before
    query = prepare_query(identifier, no_fail=True, expand_sequences=expand)
    syntax, charset, new_vr = variant
    expected = _old_answer(query, elements, syntax, charset, new_vr)
    plan = _plan(query, syntax, charset, new_vr)
    if plan is None:
        return
    try:
        answer = plan.answer(ElementReader(body, implicit=False).level(0, None, top=True,
                                                                       keep=plan.wanted)[0])
    except NotDirect:
        return
    assert answer == expected


# --- through the service --------------------------------------------------------------------


def test_a_value_too_long_for_the_query_vr_is_answered_the_old_way(tmp_path: Path) -> None:
    """PatientID asked as LO (2-byte length) but held as a 70,000-byte UT: the plan steps
    aside for that record, and the service sends what the dataset encoder writes."""
    ae = tmp_path / "db" / "CT01"
    ae.mkdir(parents=True)
    (ae / "lockfile").touch()
    long_entry = worklist_dataset("A2")
    long_entry[0x00100020] = make_raw(Tag(0x00100020), "UT", b"P" * 70_000)
    for name, entry in (("short.wl", worklist_dataset("A1")), ("long.wl", long_entry)):
        (ae / name).write_bytes(part10(encode_dataset(entry, ExplicitVRLittleEndian),
                                       corpus.MWL_FIND, "1.2.3.4"))
    identifier = Dataset()
    identifier.PatientID = ""
    identifier.AccessionNumber = ""
    service = WorklistService(Settings(port=0, data_files_path=tmp_path / "db"))
    assoc = AssociationInfo("127.0.0.1", 40000, calling_ae="MOD", called_ae="CT01")
    sent = [response for response in service.find(assoc, identifier, ExplicitVRLittleEndian)
            if response.status == STATUS_PENDING]
    query = prepare_query(identifier, no_fail=False, expand_sequences=True)
    records = sorted(_records(ae), key=lambda record: record.sort_key)
    assert len(sent) == len(records) == 2
    for response, record in zip(sent, records, strict=True):
        elements = raw_elements(record)
        assert elements is not None
        assert response.identifier == _old_answer(query, elements, ExplicitVRLittleEndian,
                                                  CharsetMode.NONE, True)
    long_record = next(record for record in records if len(record.data) > 70_000)
    long_elements = raw_elements(long_record)
    assert long_elements is not None
    plan = _plan(query, ExplicitVRLittleEndian, CharsetMode.NONE, True)
    assert plan is not None
    try:
        plan.answer(long_elements)
    except NotDirect:
        pass
    else:
        raise AssertionError("a 70,000-byte value cannot go in a 2-byte length field")


def test_a_sequence_no_answer_reads_is_not_looked_into(tmp_path: Path) -> None:
    """A defined-length RequestedProcedureCodeSequence whose item has an unknown VR: pydicom
    reads such a sequence as bytes until asked for it, so a query that does not ask for it is
    answered from the plan's read as from pydicom's decode; the whole raw read steps aside."""
    ae = tmp_path / "db" / "CT01"
    ae.mkdir(parents=True)
    entry = worklist_dataset("A1")
    entry.RequestedProcedureCodeSequence = Sequence([code_item()])
    body = bytearray(encode_dataset(entry, ExplicitVRLittleEndian))  # defined lengths
    code = encode_element(0x00080100, b"SH", b"C1")
    at = body.index(code)
    body[at + 4:at + 6] = b"XX"
    path = ae / "odd.wl"
    path.write_bytes(part10(bytes(body), corpus.MWL_FIND, "1.2.3.4"))
    (record,) = _records(ae)
    assert raw_elements(record) is None
    identifier = Dataset()
    identifier.PatientName = ""
    identifier.RequestedProcedureDescription = ""
    step = Dataset()
    step.Modality = ""
    identifier.ScheduledProcedureStepSequence = Sequence([step])
    query = prepare_query(identifier, no_fail=False, expand_sequences=True)
    for syntax, charset, new_vr in VARIANTS:
        plan = _plan(query, syntax, charset, new_vr)
        assert plan is not None
        kept = raw_elements(record, plan.wanted)
        assert kept is not None
        expected = encode_dataset(build_response(query, record.dataset, charset), syntax,
                                  new_vr=new_vr)
        assert plan.answer(kept) == expected
        if syntax != DeflatedExplicitVRLittleEndian:
            assert b"MR" in expected and b"C1" not in expected
