"""Seeded generators of hostile cases: each family writes one kind of bad input as raw bytes.

A ``Case`` is what one connection sends after reaching its ``stage``, plus what the judge may
accept as the end of that association. Families whose input is certainly wrong (an unexpected
PDU, a PDV on a context that was never accepted) say exactly how the server must end it;
families that mutate at random accept any clean end (never a hang).
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tests.support import wire

# How an association may end, as the runner classifies it.
ABORT, REJECT, RELEASE, CLOSE = "abort", "reject", "release", "close"
ANY_END = frozenset((ABORT, REJECT, RELEASE, CLOSE))
# Stages a case starts from.
IDLE = "idle"  # nothing sent yet: the case's bytes are the first on the connection
ESTABLISHED = "established"  # after a well-formed RQ and its AC
IDENTIFIER = "identifier"  # after a C-FIND-RQ command set: the server awaits the identifier

KNOWN_AE_TITLES = frozenset(("CT01", "MR01", "US01", "WORKLIST"))
MAX_FRAGMENT = 16384 - 6  # PDV data per P-DATA at wlmd's default max PDU
LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                      b"UR", b"UT", b"UV"))
UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class Case:
    """One connection's worth of hostile input and the ends the judge accepts."""

    family: str
    stage: str
    chunks: tuple[bytes, ...]
    expect: frozenset[str] = ANY_END
    unprompted: bool = False  # the server must end it without our release or half-close
    note: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "family": self.family,
                "stage": self.stage,
                "chunks": [c.hex() for c in self.chunks],
                "expect": sorted(self.expect),
                "unprompted": self.unprompted,
                "note": self.note,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Case:
        raw = json.loads(text)
        return cls(
            raw["family"],
            raw["stage"],
            tuple(bytes.fromhex(c) for c in raw["chunks"]),
            frozenset(raw["expect"]),
            raw["unprompted"],
            raw.get("note", ""),
        )


def rand_bytes(rng: random.Random, low: int, high: int) -> bytes:
    return rng.randbytes(rng.randint(low, high))


# --- identifiers, written element by element so that any field can lie --------------------------


def ex(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """An explicit VR little endian element; ``length`` overrides the true value length."""
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in LONG_VRS:
        return head + b"\0\0" + struct.pack("<L", n & UNDEFINED) + value
    return head + struct.pack("<H", n & 0xFFFF) + value


def ex_item(body: bytes, undefined: bool = False) -> bytes:
    """A sequence item, with a defined length or closed by an item delimiter."""
    if undefined:
        return struct.pack("<HHL", 0xFFFE, 0xE000, UNDEFINED) + body + struct.pack(
            "<HHL", 0xFFFE, 0xE00D, 0
        )
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(body)) + body


def ex_seq(tag: int, items: list[bytes], undefined: bool = False) -> bytes:
    """A sequence, with a defined length or closed by a sequence delimiter."""
    body = b"".join(items)
    if undefined:
        return ex(tag, b"SQ", body, UNDEFINED) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return ex(tag, b"SQ", body)


SPS = 0x00400100  # Scheduled Procedure Step Sequence


def base_elements() -> list[tuple[int, bytes, bytes]]:
    """The top-level (tag, VR, value) triples of a plain worklist query, in tag order."""
    return [
        (0x00080050, b"SH", b""),
        (0x00100010, b"PN", b""),
        (0x00100020, b"LO", b""),
        (0x00100030, b"DA", b""),
        (0x0020000D, b"UI", b""),
    ]


def step_elements() -> list[tuple[int, bytes, bytes]]:
    return [
        (0x00080060, b"CS", b""),
        (0x00400001, b"AE", b""),
        (0x00400002, b"DA", b""),
        (0x00400003, b"TM", b""),
        (0x00400009, b"SH", b""),
    ]


def plain(elements: list[tuple[int, bytes, bytes]]) -> bytes:
    """Elements written as they are, in the order given."""
    return b"".join(ex(*e) for e in elements)


def render(elements: list[tuple[int, bytes, bytes]], step: bytes | None = None) -> bytes:
    """Top-level elements plus the SPS (its item body ``step``), the SPS placed in tag order."""
    step = plain(step_elements()) if step is None else step
    before = plain([e for e in elements if e[0] < SPS])
    after = plain([e for e in elements if e[0] > SPS])
    return before + ex_seq(SPS, [ex_item(step)]) + after


def find_chunks(identifier: bytes, context_id: int = 1, message_id: int = 7) -> tuple[bytes, ...]:
    """A C-FIND-RQ command PDU then the identifier in P-DATA PDUs of the default max size."""
    chunks = [wire.p_data(wire.pdv(context_id, True, True, wire.find_command(message_id)))]
    chunks.extend(identifier_chunks(identifier, context_id))
    return tuple(chunks)


def identifier_chunks(identifier: bytes, context_id: int = 1) -> list[bytes]:
    parts = [identifier[i : i + MAX_FRAGMENT] for i in range(0, max(len(identifier), 1),
                                                                 MAX_FRAGMENT)]
    return [wire.p_data(wire.pdv(context_id, False, n == len(parts) - 1, part))
            for n, part in enumerate(parts)]


def _identifier_case(family: str, identifier: bytes, note: str = "") -> Case:
    return Case(family, ESTABLISHED, find_chunks(identifier), note=note)


INTERESTING_VALUES: dict[int, list[bytes]] = {
    0x00100010: [b"*", b"?", b"A*", b"\\", b"^^^^", b"*" * 600, b"=", b"Doe^*=\xe3\x83\x89",
                 b"\xff\xfe\x80\x81", b"\x1b$B\x1b(B", b"\xc3\x28", b"\0\0", b"%s%s%n"],
    0x00100030: [b"20240304", b"20240301-20240305", b"-20240304", b"2024-", b"20249999",
                 b"abc", b"-", b"19000101-29991231", b"2024030"],
    0x00080050: [b"A24*", b"*", b"?" * 16, b"A2403030008\\A2403030009", b"\xff"],
    0x00100020: [b"*", b"PAT*", b"\\\\\\", b" " * 64],
    0x0020000D: [b"1.2.3", b"1..2", b"x" * 64, b"1.2\0"],
}
STEP_VALUES: dict[int, list[bytes]] = {
    0x00080060: [b"CT", b"C*", b"??", b"\\CT", b"MR\\CT"],
    0x00400001: [b"CT01", b"*", b"../x", b"\xff" * 16],
    0x00400002: [b"20240304-", b"-", b"20240230", b"2024030420240305"],
    0x00400003: [b"0800-1200", b"2500", b"-", b".", b"080000.123456", b"12:00"],
}


def fam_identifier_values(rng: random.Random) -> Case:
    """Legal structure, hostile values: wildcards, broken ranges, bytes of no character set."""
    elements = base_elements()
    for n, (tag, vr, _) in enumerate(elements):
        if tag in INTERESTING_VALUES and rng.random() < 0.5:
            elements[n] = (tag, vr, rng.choice(INTERESTING_VALUES[tag]))
    if rng.random() < 0.5:
        charset = rng.choice([b"ISO_IR 100", b"ISO_IR 192", b"ISO_IR 999", b"\\ISO 2022 IR 87",
                              b"ISO 2022 IR 149\\ISO_IR 192", rand_bytes(rng, 1, 20)])
        elements.insert(0, (0x00080005, b"CS", charset))
    step = [(t, vr, rng.choice(STEP_VALUES[t]) if t in STEP_VALUES and rng.random() < 0.5 else v)
            for t, vr, v in step_elements()]
    return _identifier_case("identifier.values", render(elements, plain(step)))


WRONG_VRS = [b"SQ", b"UN", b"OB", b"US", b"UL", b"FD", b"AT", b"XX", b"\0\0", b"UT", b"DA", b"PN"]


def fam_wrong_vr(rng: random.Random) -> Case:
    """An element declared with a VR its tag does not have (or no VR at all)."""
    elements = base_elements()
    n = rng.randrange(len(elements))
    tag, _, value = elements[n]
    vr = rng.choice(WRONG_VRS)
    if rng.random() < 0.5:
        value = rand_bytes(rng, 0, 12)
    elements[n] = (tag, vr, value)
    return _identifier_case("identifier.wrong-vr", render(elements), f"{tag:08x} as {vr!r}")


def fam_undefined_length(rng: random.Random) -> Case:
    """Undefined length where it is not allowed (a text element), or unclosed sequences."""
    if rng.random() < 0.5:
        tag, vr = rng.choice([(0x00100010, b"UN"), (0x00100010, b"UT"), (0x00080050, b"OB")])
        element = ex(tag, vr, rand_bytes(rng, 0, 16), UNDEFINED)
        return _identifier_case("identifier.undefined-length", element + render(base_elements()))
    body = ex(SPS, b"SQ", b"", UNDEFINED) + struct.pack("<HHL", 0xFFFE, 0xE000, UNDEFINED)
    body += b"".join(ex(*e) for e in step_elements())
    return _identifier_case("identifier.unclosed-sequence", render(base_elements()[:3]) + body)


def nested(depth: int, undefined: bool) -> bytes:
    """Sequences nested ``depth`` deep, built in linear time (headers computed inside out)."""
    core = ex(0x00080060, b"CS", b"CT")
    heads, tails = [], []
    size = len(core)
    for _ in range(depth):
        item_len, seq_len = (UNDEFINED, UNDEFINED) if undefined else (size, size + 8)
        heads.append(ex(SPS, b"SQ", b"", seq_len) + struct.pack("<HHL", 0xFFFE, 0xE000, item_len))
        if undefined:
            tails.append(struct.pack("<HHLHHL", 0xFFFE, 0xE00D, 0, 0xFFFE, 0xE0DD, 0))
        size += 20
    return b"".join(reversed(heads)) + core + b"".join(tails)


def fam_deep_nesting(rng: random.Random) -> Case:
    """Sequence nesting in the hundreds to tens of thousands."""
    depth = rng.choice([9, 64, 1000, 3000, 20000])
    undefined = rng.random() < 0.5
    identifier = plain(base_elements()[:3]) + nested(depth, undefined)
    return _identifier_case("identifier.deep-nesting", identifier, f"depth {depth}")


def fam_wide(rng: random.Random) -> Case:
    """Thousands of items in one sequence, or thousands of private elements."""
    count = rng.choice([65, 500, 5000])
    if rng.random() < 0.5:
        items = [ex_item(ex(0x00080060, b"CS", b"CT")) for _ in range(count)]
        identifier = plain(base_elements()[:2]) + ex_seq(SPS, items, rng.random() < 0.5)
    else:
        privates = b"".join(ex(0x00091000 + n, b"LO", b"X") for n in range(min(count, 0xFF)))
        identifier = privates + render(base_elements())
    return _identifier_case("identifier.wide", identifier, f"{count} items")


def fam_huge_length(rng: random.Random) -> Case:
    """A declared value length of gigabytes with a few bytes behind it."""
    length = rng.choice([0x7FFFFFFF, 0xFFFFFFF0, 0x40000000, 0x00100001, 0xFFFE])
    tag, vr = rng.choice([(0x00100010, b"UT"), (0x00080050, b"OB"), (SPS, b"SQ"),
                          (0x00100010, b"PN")])
    return _identifier_case("identifier.huge-length",
                            ex(tag, vr, rand_bytes(rng, 0, 32), length), f"{length:#x}")


def fam_oversize(rng: random.Random) -> Case:
    """An identifier just over the 1 MiB limit, in many P-DATA PDUs."""
    size = (1 << 20) + rng.choice([2, 4096, 70000])
    value = b"A" * (size - 12)
    return _identifier_case("identifier.oversize", ex(0x00100010, b"UT", value), f"{size} bytes")


def fam_identifier_havoc(rng: random.Random) -> Case:
    """A valid identifier with random bytes flipped, inserted or cut."""
    return _identifier_case("identifier.havoc", havoc(rng, render(base_elements())))


def fam_implicit_on_explicit(rng: random.Random) -> Case:
    """An identifier written in the other syntax from the one negotiated on its context."""
    identifier = wire.encode_identifier(wire.health_query(), implicit=rng.random() < 0.5)
    context_id = rng.choice([1, 3])
    return Case("identifier.syntax-swap", ESTABLISHED,
                find_chunks(identifier, context_id), note=f"context {context_id}")


def fam_deflate_bomb(rng: random.Random) -> Case:
    """Deflated bytes on a context that never negotiated deflate: just more garbage to parse."""
    bomb = zlib.compress(b"\0" * rng.choice([10_000, 2_000_000]), 9)[2:-4]
    return _identifier_case("identifier.deflate-bomb", bomb + b"\0" * (len(bomb) % 2))


# --- P-DATA framing -------------------------------------------------------------------------------


def _valid_find() -> tuple[bytes, bytes]:
    return wire.find_command(), render(base_elements())


def fam_pdata(rng: random.Random) -> Case:
    """P-DATA framing faults: order, context IDs, PDV lengths, oversize PDUs."""
    command, identifier = _valid_find()
    kind = rng.choice(["data-first", "wrong-context", "pdv-overrun", "pdv-short", "oversize",
                       "context-switch", "command-then-data", "empty", "truncated", "tiny"])
    family = f"pdata.{kind}"
    abort = frozenset((ABORT,))
    if kind == "data-first":
        return Case(family, ESTABLISHED, (wire.p_data(wire.pdv(1, False, True, identifier)),),
                    abort, True)
    if kind == "wrong-context":
        ctx = rng.choice([0, 2, 7, 255])
        return Case(family, ESTABLISHED, (wire.p_data(wire.pdv(ctx, True, True, command)),),
                    abort, True, f"context {ctx}")
    if kind == "pdv-overrun":
        item = wire.pdv(1, True, True, command)
        bad = struct.pack(">L", len(command) + 2 + rng.randint(1, 1 << 30)) + item[4:]
        return Case(family, ESTABLISHED, (wire.pdu(wire.P_DATA, bad),), abort, True)
    if kind == "pdv-short":
        bad = struct.pack(">LBB", rng.choice([0, 1]), 1, 3) + command
        return Case(family, ESTABLISHED, (wire.pdu(wire.P_DATA, bad),), abort, True)
    if kind == "oversize":
        length = rng.choice([16385, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF])
        head = struct.pack(">BxL", wire.P_DATA, length)
        return Case(family, ESTABLISHED, (head + wire.pdv(1, True, True, command),), abort, True,
                    f"declared {length}")
    if kind == "context-switch":
        half = len(command) // 2 & ~1
        return Case(family, ESTABLISHED, (wire.p_data(wire.pdv(1, True, False, command[:half]),
                                                      wire.pdv(3, True, True, command[half:])),),
                    abort, True)
    if kind == "command-then-data":
        return Case(family, ESTABLISHED, (wire.p_data(wire.pdv(1, True, False, command[:8]),
                                                      wire.pdv(1, False, True, identifier)),),
                    abort, True)
    if kind == "empty":
        return Case(family, ESTABLISHED, (wire.pdu(wire.P_DATA, b""),))
    if kind == "truncated":
        whole = b"".join(find_chunks(identifier))
        return Case(family, ESTABLISHED, (whole[: rng.randrange(1, len(whole))],))
    step = rng.choice([1, 2, 3])
    pieces = [command[i : i + step] for i in range(0, len(command), step)]
    pdvs = [wire.pdv(1, True, n == len(pieces) - 1, p) for n, p in enumerate(pieces)]
    split = rng.choice([1, len(pdvs)])
    chunks = [wire.p_data(*pdvs[i : i + split]) for i in range(0, len(pdvs), split)]
    return Case(family, ESTABLISHED, (*chunks, *identifier_chunks(identifier)),
                frozenset((RELEASE,)), note=f"{step}-byte fragments")


# --- command sets ---------------------------------------------------------------------------------


NOT_SERVED = [0x0001, 0x0010, 0x0021, 0x0100, 0x0110, 0x0120, 0x0130, 0x0140, 0x0150, 0x8020,
              0x8030, 0x8FFF, 0x0000, 0xFFFF]


def fam_command(rng: random.Random) -> Case:
    """Command sets that are malformed, unsupported or lie about their dataset."""
    kind = rng.choice(["unsupported", "find-no-dataset", "no-field", "group", "overrun",
                       "garbage", "huge", "cancel-idle", "odd", "duplicate", "echo-weird"])
    family = f"command.{kind}"
    abort = frozenset((ABORT,))
    elements = wire.command_elements(wire.C_FIND_RQ)
    identifier = render(base_elements())
    if kind == "unsupported":
        field_ = rng.choice(NOT_SERVED)
        elements = wire.command_elements(field_, dataset=rng.choice([wire.HAS_DATASET,
                                                                     wire.NO_DATASET]))
        return _command_case(family, elements, abort, True, f"field {field_:#06x}")
    if kind == "find-no-dataset":
        elements = wire.command_elements(wire.C_FIND_RQ, dataset=wire.NO_DATASET)
        return _command_case(family, elements, abort, True)
    if kind == "no-field":
        return _command_case(family, [e for e in elements if e[2:4] != b"\x00\x01"], abort, True)
    if kind == "group":
        elements.append(wire.element(0x0010, b"DOE^JOHN", group=rng.choice([0x0008, 0x0010,
                                                                             0xFFFE])))
        return _command_case(family, elements, abort, True)
    if kind == "overrun":
        body = b"".join(elements)[:-2] + struct.pack("<HHL", 0, 0x0800, rng.choice([4, 1 << 31]))
        return Case(family, ESTABLISHED, (wire.p_data(wire.pdv(1, True, True, body)),), abort,
                    True)
    if kind == "garbage":
        body = rand_bytes(rng, 1, 200)
        return Case(family, ESTABLISHED, (wire.p_data(wire.pdv(1, True, True, body)),))
    if kind == "huge":
        big = wire.command_set([*elements, wire.element(0x0902, b"X" * 70000)])
        pdvs = [wire.pdv(1, True, i + MAX_FRAGMENT >= len(big), big[i : i + MAX_FRAGMENT])
                for i in range(0, len(big), MAX_FRAGMENT)]
        return Case(family, ESTABLISHED, tuple(wire.p_data(p) for p in pdvs), abort, True)
    if kind == "cancel-idle":
        cancel = wire.command_elements(wire.C_CANCEL_RQ, dataset=wire.NO_DATASET, responded_to=9)
        return _command_case(family, cancel, frozenset((RELEASE,)))
    if kind == "odd":
        elements.append(wire.element(0x0902, b"ODD"))
        return _command_case(family, elements, data=identifier)
    if kind == "duplicate":
        return _command_case(family, elements + elements[1:2], data=identifier)
    sop = rng.choice([wire.VERIFICATION, wire.MWL, "1.2.3" * 20, ""])
    echo = wire.command_elements(wire.C_ECHO_RQ, dataset=wire.NO_DATASET, sop_class=sop)
    if rng.random() < 0.5:
        echo = [e for e in echo if e[2:4] != b"\x10\x01"]  # no message ID
    return _command_case(family, echo, context_id=rng.choice([1, 5]))


def _command_case(family: str, elements: list[bytes], expect: frozenset[str] = ANY_END,
                  unprompted: bool = False, note: str = "", *, data: bytes | None = None,
                  context_id: int = 1) -> Case:
    chunks = [wire.p_data(wire.pdv(context_id, True, True, wire.command_set(elements)))]
    if data is not None:
        chunks.extend(identifier_chunks(data, context_id))
    return Case(family, ESTABLISHED, tuple(chunks), expect, unprompted, note)


# --- unexpected PDUs in every state ---------------------------------------------------------------


STRAY_TYPES = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x7F, 0xFF]


def fam_unexpected_pdu(rng: random.Random) -> Case:
    """A PDU that has no business in the state the association is in."""
    stage = rng.choice([IDLE, ESTABLISHED, IDENTIFIER])
    choices = [t for t in STRAY_TYPES if not (stage == IDLE and t == wire.ASSOCIATE_RQ)]
    if stage != IDLE:
        choices.remove(wire.P_DATA)
    pdu_type = rng.choice(choices)
    body = rand_bytes(rng, 0, 64)
    if pdu_type == wire.ABORT:
        expect = frozenset((CLOSE,))
    elif pdu_type == wire.RELEASE_RQ and stage != IDLE:
        expect = frozenset((RELEASE,))
    else:
        expect = frozenset((ABORT,))
    return Case(f"unexpected.{stage}", stage, (wire.pdu(pdu_type, body),), expect, True,
                f"PDU type {pdu_type:#04x}")


# --- A-ASSOCIATE-RQ -------------------------------------------------------------------------------


ODD_TITLES = [b"../x", b"..", b"/etc", b"CT01/../MR01", b"", b" ", b"\0CT01", b"ct01",
              b"\xff\xfe", b"%s%n", b"CT01\0junk", b"..\\..\\x", b"WORKLIST ", b"*", b"CT0?"]


def parse_title(raw: bytes) -> str:
    """An AE title as a DICOM acceptor reads its field: cut at NUL, trailing spaces trimmed."""
    return raw[:16].split(b"\0", 1)[0].rstrip(b" ").decode("latin-1")


def fam_called_ae(rng: random.Random) -> Case:
    """Odd called AE titles: unknown or path-like ones must be rejected, never served."""
    title = rng.choice([*ODD_TITLES, rand_bytes(rng, 1, 16)])
    rq = wire.pdu(wire.ASSOCIATE_RQ, wire.rq_fixed(title) + b"".join(wire.rq_items()))
    known = parse_title(title) in KNOWN_AE_TITLES
    expect = frozenset((RELEASE,)) if known else frozenset((REJECT,))
    return Case("rq.called-ae", IDLE, (rq,), expect, not known, repr(title))


def huge_identity(rng: random.Random) -> bytes:
    """A user identity negotiation sub-item (0x58) with a big primary field."""
    primary = rand_bytes(rng, 1000, 65000)
    value = bytes((rng.choice([1, 2, 3, 4, 5]), 1)) + struct.pack(">H", len(primary)) + primary
    return wire.item(0x58, value[:65535] + struct.pack(">H", 0))


def _mutate_rq_items(rng: random.Random, items: list[bytes]) -> str:
    kind = rng.choice(["drop", "duplicate", "item-length", "unknown-item", "identity",
                       "contexts", "max-length", "extra-subitems"])
    if kind == "drop" and items:
        items.pop(rng.randrange(len(items)))
    elif kind == "duplicate" and items:
        items.insert(rng.randrange(len(items) + 1), rng.choice(items))
    elif kind == "item-length" and items:
        n = rng.randrange(len(items))
        length = rng.choice([0, 1, 3, len(items[n]) - 5, len(items[n]) - 3, 0xFFFF])
        items[n] = items[n][:2] + struct.pack(">H", max(length, 0)) + items[n][4:]
    elif kind == "unknown-item":
        items.insert(rng.randrange(len(items) + 1),
                     wire.item(rng.choice([0x00, 0x11, 0x21, 0x60, 0xFF]), rand_bytes(rng, 0, 40)))
    elif kind == "identity":
        items[-1:] = [wire.user_info(extra=(huge_identity(rng),))]
    elif kind == "contexts":
        items[1:-1] = _odd_contexts(rng)
    elif kind == "max-length":
        value = rng.choice([b"", b"\0", b"\0\0\0\0\0", struct.pack(">L", rng.choice([0, 1, 7,
                                                                                    0xFFFFFFFF]))])
        items[-1:] = [wire.item(0x50, wire.item(0x51, value) + wire.item(0x52, b"1.2"))]
    else:
        extra = tuple(wire.item(rng.choice([0x53, 0x54, 0x56, 0x57, 0x5F]),
                                rand_bytes(rng, 0, 30)) for _ in range(rng.randint(1, 4)))
        items[-1:] = [wire.user_info(extra=extra)]
    return kind


def _odd_contexts(rng: random.Random) -> list[bytes]:
    """Presentation contexts with odd IDs, no or hundreds of syntaxes, garbage UIDs."""
    count = rng.choice([1, 2, 128, 300])
    out = []
    for n in range(count):
        ctx_id = rng.choice([0, 2, 255, (2 * n + 1) & 0xFF, 1])
        abstract = rng.choice([wire.MWL, wire.VERIFICATION, "1.2.3.4", "", "x" * 64])
        syntaxes = rng.choice([(), (wire.ELE,), tuple(wire.ELE for _ in range(300)),
                               ("1.2.840.10008.1.2.4.50",), (wire.ILE, "garbage")])
        out.append(wire.context_item(ctx_id, abstract, syntaxes))
    return out


def fam_associate_rq(rng: random.Random) -> Case:
    """A-ASSOCIATE-RQs with items dropped, doubled, mis-sized, unknown, or enormous."""
    items = wire.rq_items()
    kinds = [_mutate_rq_items(rng, items) for _ in range(rng.randint(1, 3))]
    fixed = wire.rq_fixed(b"CT01", rand_bytes(rng, 0, 16) if rng.random() < 0.3 else b"FUZZ",
                          rng.choice([1, 1, 1, 0, 2, 0xFFFF]))
    body = fixed + b"".join(items)
    rq = wire.pdu(wire.ASSOCIATE_RQ, body)
    if rng.random() < 0.2:  # the PDU length lies
        rq = rq[:2] + struct.pack(">L", max(len(body) + rng.choice([-7, -1, 1, 1000]), 0)) + rq[6:]
    if rng.random() < 0.3:  # go on with a query: odd max lengths are felt only when answering
        rq += b"".join(find_chunks(render(base_elements())))
    return Case("rq." + "+".join(kinds), IDLE, (rq,))


def fam_rq_rules(rng: random.Random) -> Case:
    """Well-formed RQs that the reject rules must refuse in a stated way."""
    kind = rng.choice(["app-context", "no-contexts", "no-accepted"])
    items = wire.rq_items()
    if kind == "app-context":
        items[0] = wire.item(0x10, rng.choice([b"1.2.3", b"", b"1.2.840.10008.3.1.1.2"]))
        expect = REJECT
    elif kind == "no-contexts":
        items = [items[0], items[-1]]
        expect = CLOSE
    else:
        items[1:-1] = [wire.context_item(1, "1.2.840.10008.5.1.4.1.2.2.1", (wire.ELE,)),
                       wire.context_item(3, wire.MWL, ("1.2.840.10008.1.2.4.50",))]
        expect = REJECT
    rq = wire.pdu(wire.ASSOCIATE_RQ, wire.rq_fixed() + b"".join(items))
    return Case(f"rq.{kind}", IDLE, (rq,), frozenset((expect,)), True)


# --- random mutation of a whole valid conversation ------------------------------------------------


def conversation() -> bytes:
    """Everything a well-behaved SCU sends for one query: RQ, C-FIND, release."""
    return (wire.associate_rq() + b"".join(find_chunks(render(base_elements())))
            + wire.pdu(wire.RELEASE_RQ, bytes(4)))


def havoc(rng: random.Random, data: bytes, rounds: int | None = None) -> bytes:
    """AFL-style havoc: flips, interesting bytes, inserts, deletions, duplicated runs."""
    buf = bytearray(data)
    for _ in range(rounds or rng.randint(1, 8)):
        if not buf:
            buf += rng.randbytes(4)
        pos = rng.randrange(len(buf))
        op = rng.randrange(5)
        if op == 0:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF])
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del buf[pos : pos + rng.randint(1, 16)]
        else:
            span = bytes(buf[pos : pos + rng.randint(1, 64)])
            buf[pos:pos] = span
    return bytes(buf)


def fam_havoc(rng: random.Random) -> Case:
    """A whole valid conversation with random damage anywhere."""
    return Case("havoc.conversation", IDLE, (havoc(rng, conversation()),))


FAMILIES: list[tuple[Callable[[random.Random], Case], int]] = [
    (fam_associate_rq, 12),
    (fam_called_ae, 5),
    (fam_rq_rules, 3),
    (fam_unexpected_pdu, 8),
    (fam_pdata, 10),
    (fam_command, 10),
    (fam_identifier_values, 10),
    (fam_wrong_vr, 6),
    (fam_undefined_length, 4),
    (fam_deep_nesting, 4),
    (fam_wide, 3),
    (fam_huge_length, 4),
    (fam_oversize, 1),
    (fam_identifier_havoc, 8),
    (fam_implicit_on_explicit, 2),
    (fam_deflate_bomb, 1),
    (fam_havoc, 12),
]


def anchors() -> list[Case]:
    """Fixed cases with one certain answer each, so that even a short run sees every end."""
    items = wire.rq_items()
    return [
        Case("anchor.conversation", IDLE, (conversation(),), frozenset((RELEASE,)), True),
        Case("anchor.no-contexts", IDLE,
             (wire.pdu(wire.ASSOCIATE_RQ, wire.rq_fixed() + items[0] + items[-1]),),
             frozenset((CLOSE,)), True),
        Case("anchor.unknown-ae", IDLE, (wire.associate_rq(b"NOSUCHAE"),),
             frozenset((REJECT,)), True),
        Case("anchor.peer-abort", ESTABLISHED, (wire.pdu(wire.ABORT, bytes(4)),),
             frozenset((CLOSE,)), True),
        Case("anchor.second-rq", ESTABLISHED, (wire.associate_rq(),), frozenset((ABORT,)), True),
    ]


@dataclass
class CaseStream:
    """An endless, reproducible stream of cases: the same seed gives the same cases.

    It opens with the anchors and one case of every family, then draws families by weight.
    """

    seed: int
    families: list[tuple[Callable[[random.Random], Case], int]] = field(
        default_factory=lambda: list(FAMILIES)
    )

    def __iter__(self) -> Iterator[Case]:
        rng = random.Random(self.seed)
        makers = [f for f, _ in self.families]
        weights = [w for _, w in self.families]
        yield from anchors()
        for make in makers:
            yield make(rng)
        while True:
            yield rng.choices(makers, weights)[0](rng)
