"""The differential corpus: worklist databases and queries built at test time.

``build_database(root)`` writes one directory per called AE title:

- ``CT01``, ``MR01``, ``US01``, ``WORKLIST``: the realistic examples (examples/make_worklists.py);
- ``OFFIS``: DCMTK's own example database, converted with ``dump2dcm``;
- ``EDGE``: hand-made entries with byte-exact values (padding, multi-valued attributes,
  character sets, odd VRs, other transfer syntaxes, files without meta header), entries that
  break each file-reject rule (served only with ``-dfr``) and files that must be skipped;
- ``NOLOCK`` (no lockfile: 0xA700) and ``EMPTY`` (a lockfile only).

``QUERIES`` holds the queries as dump text; ``write_queries`` converts them with ``dump2dcm``.
Every query carries tags that say which option runs of the differential suite send it.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from pydicom import Dataset, Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.support.processes import DCMTK_EXAMPLES, dump2dcm

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
EXAMPLE_AES = ("CT01", "MR01", "US01", "WORKLIST")
LATIN1, UTF8 = "ISO_IR 100", "ISO_IR 192"
CODECS = {None: "ascii", LATIN1: "latin-1", UTF8: "utf-8"}
MWL_FIND = "1.2.840.10008.5.1.4.31"

# --- worklist entries ----------------------------------------------------------------------
# An entry is {"gggg,eeee": (VR, value)}; value is str (written byte-exact in the entry's
# character set), int (US) or a list of items (SQ). None as the whole pair removes the key.
Spec = dict[str, tuple[str, object] | None]


def code(value: str = "C1", scheme: str = "99EDGE", meaning: str = "MEANING") -> Spec:
    """A code sequence item."""
    return {"0008,0100": ("SH", value), "0008,0102": ("SH", scheme), "0008,0104": ("LO", meaning)}


def sps(**changes: tuple[str, object] | None) -> Spec:
    """A complete Scheduled Procedure Step item; keyword ``x0040_0001`` changes (0040,0001)."""
    item: Spec = {
        "0008,0060": ("CS", "CT"),
        "0040,0001": ("AE", "EDGE1"),
        "0040,0002": ("DA", "20240304"),
        "0040,0003": ("TM", "080000"),
        "0040,0006": ("PN", "TECH^ONE"),
        "0040,0007": ("LO", "PROTOCOL ONE"),
        "0040,0008": ("SQ", [code("P1", meaning="PROTOCOL ONE")]),
        "0040,0009": ("SH", "SPS1"),
        "0040,0010": ("SH", "STATION1"),
        "0040,0011": ("SH", "ROOM1"),
        "0040,0020": ("CS", "SCHEDULED"),
    }
    return merge(item, changes)


def merge(base: Spec, changes: dict[str, tuple[str, object] | None]) -> Spec:
    """``base`` with changes keyed ``x0010_0010`` or ``"0010,0010"``; None removes."""
    out = dict(base)
    for key, value in changes.items():
        tag = key[1:].replace("_", ",") if key.startswith("x") else key
        if value is None:
            out.pop(tag, None)
        else:
            out[tag] = value
    return out


def entry(n: int, *, sps_items: list[Spec] | None = None, **changes: tuple[str, object] | None
          ) -> Spec:
    """A complete entry number ``n`` (unique IDs), with ``changes`` applied."""
    base: Spec = {
        "0008,0020": ("DA", "20240301"),
        "0008,0030": ("TM", "1200"),
        "0008,0050": ("SH", f"ACC{n:04d}"),
        "0008,0080": ("LO", "EDGE HOSPITAL"),
        "0008,0090": ("PN", "REFERRER^ONE"),
        "0010,0010": ("PN", f"EDGE^PATIENT{n}"),
        "0010,0020": ("LO", f"EDGE{n:03d}"),
        "0010,0021": ("LO", "HOSP_A"),
        "0010,0030": ("DA", "19700101"),
        "0010,0040": ("CS", "M" if n % 2 else "F"),
        "0020,000d": ("UI", f"1.2.826.0.1.3680043.10.1447.{n}"),
        "0032,1032": ("PN", "REQUESTER^ONE"),
        "0032,1060": ("LO", f"PROCEDURE {n}"),
        "0032,1064": ("SQ", [code(f"RP{n}", meaning=f"PROCEDURE {n}")]),
        "0038,0010": ("LO", f"ADM{n}"),
        "0040,0100": ("SQ", sps_items if sps_items is not None else [sps()]),
        "0040,1001": ("SH", f"RP{n:04d}"),
        "0040,1003": ("SH", "ROUTINE"),
    }
    return merge(base, changes)


D0 = "20240304"
COMPLETE: dict[str, Spec] = {
    "e01_plain": entry(1),
    "e02_multivalue_padded": entry(
        2, x0010_0010=("PN", "VIVALDI^ANTONIO"), x0010_0020=("LO", " AV35674 "),
        x0008_0050=("SH", "AV35674\\HF"), x0010_1000=("LO", "OLD1\\OLD2"),
        sps_items=[sps(x0008_0060=("CS", "MR"), x0040_0001=("AE", "AA32\\AA33"),
                       x0040_0003=("TM", "083000.123456"), x0040_0006=("PN", "JOHNSON"))]),
    "e03_trailing_spaces": entry(
        3, x0010_0010=("PN", "SMITH^JOHN  "), x0008_0090=("PN", " LEADING^SPACE"),
        x0010_0021=("LO", "HOSP_B  "), x0040_1003=("SH", "HIGH "),
        sps_items=[sps(x0008_0060=("CS", "US"), x0040_0001=("AE", "US1 "),
                       x0040_0002=("DA", "20240305"), x0040_0003=("TM", "1630  "))]),
    "e04_latin1": entry(
        4, x0008_0005=("CS", LATIN1), x0010_0010=("PN", "MÜLLER^JÜRGEN"),
        x0008_0090=("PN", "NUÑEZ^JOSÉ"), x0032_1060=("LO", "IRM CÉRÉBRALE"),
        x0010_2000=("LO", "ALLERGIE À L'IODE"),
        sps_items=[sps(x0040_0006=("PN", "BJØRNSTAD^ÅSE"), x0040_0007=("LO", "SÉQUENCE T1"))]),
    "e05_utf8_cyrillic": entry(
        5, x0008_0005=("CS", UTF8), x0010_0010=("PN", "ИВАНОВ^ИВАН"),
        x0032_1060=("LO", "МРТ ГОЛОВНОГО МОЗГА"), x0008_0090=("PN", "ΠΑΠΑΔΟΠΟΥΛΟΣ^ΝΙΚΟΣ"),
        sps_items=[sps(x0008_0060=("CS", "MR"), x0040_0001=("AE", "MR1"))]),
    "e06_utf8_japanese": entry(
        6, x0008_0005=("CS", UTF8), x0010_0010=("PN", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        x0010_4000=("LT", "日本語のコメント"),
        sps_items=[sps(x0040_0002=("DA", "20240306"), x0040_0003=("TM", "0930"))]),
    "e07_latin1_without_charset": entry(7, x0010_0010=("PN", "GÓMEZ^MARÍA")),
    "e08_missing_optional": entry(
        8, x0010_0030=None, x0010_0040=None, x0008_0020=None, x0008_0030=None,
        x0032_1064=None, x0010_0021=None, x0038_0010=None, x0032_1032=None,
        sps_items=[sps(x0040_0006=None, x0040_0011=None, x0040_0008=None)]),
    "e09_empty_values": entry(
        9, x0010_0040=("CS", ""), x0008_0050=("SH", ""), x0010_0021=("LO", ""),
        x0008_0090=("PN", ""), x0010_0020=("LO", "   "),
        sps_items=[sps(x0040_0007=None, x0040_0006=("PN", ""))]),
    "e10_references_and_codes": entry(
        10, x0008_1110=("SQ", [{"0008,1150": ("UI", "1.2.840.10008.3.1.2.3.1"),
                                "0008,1155": ("UI", "1.2.826.0.1.3680043.10.1447.9001")}]),
        x0008_1120=("SQ", [{"0008,1150": ("UI", "1.2.840.10008.3.1.2.1.1"),
                            "0008,1155": ("UI", "1.2.826.0.1.3680043.10.1447.9002")},
                           {"0008,1150": ("UI", "1.2.840.10008.3.1.2.1.1"),
                            "0008,1155": ("UI", "1.2.826.0.1.3680043.10.1447.9003")}]),
        x0032_1064=("SQ", [code("RPA", meaning="FIRST"), code("RPB", meaning="SECOND")]),
        x0010_21c0=("US", 1), x0010_0040=("CS", "F"),
        sps_items=[sps(x0040_0008=("SQ", [code("PA"), code("PB", meaning="")]),
                       x0040_0400=("LT", "BRING OLD FILMS"), x0040_0012=("LO", "NONE"),
                       x0032_1070=("LO", "IODINE"))]),
    "e11_empty_reference_sequences": entry(
        11, x0008_1110=("SQ", []), x0008_1120=("SQ", [{"0008,1150": ("UI", "1.2.3"),
                                                       "0008,1155": ("UI", "1.2.3.4")}]),
        x0032_1064=("SQ", [merge(code("RP11"), {"0008,0103": ("SH", ""),
                                                "0008,0104": ("LO", "")})])),
    "e12_odd_vrs": entry(12, x0008_0050=("LO", "ACC0012"), x0010_0020=("SH", "EDGE012"),
                         x0010_0010=("LO", "ODD^VR")),
    "e13_private_and_unsupported": entry(
        13, x0009_0010=("LO", "WLMD EDGE"), x0009_1001=("LO", "SECRET"),
        x0010_1010=("AS", "045Y"), x0008_1040=("LO", "RADIOLOGY DEPT"),
        x0008_1030=("LO", "STUDY DESC")),
    "e14_datetimes": entry(
        14, x0008_0020=("DA", "20240303"), x0008_0030=("TM", "235959"),
        sps_items=[sps(x0040_0002=("DA", "20240303"), x0040_0003=("TM", "2359"))]),
    "e15_midnight": entry(
        15, x0008_0020=("DA", "20240305"), x0008_0030=("TM", "00"),
        sps_items=[sps(x0040_0002=("DA", "20240305"), x0040_0003=("TM", "00"))]),
    "e16_short_times": entry(
        16, sps_items=[sps(x0040_0003=("TM", "14"), x0008_0060=("CS", "DX"),
                           x0040_0001=("AE", "DX1"))]),
    "e17_responsible_person": entry(
        17, x0010_2297=("PN", "OWNER^PET"), x0010_2298=("CS", "OWNER"),
        x0040_1003=("SH", "STAT"), x0032_1032=("PN", "WHO^DR"),
        x0010_0010=("PN", "van der Berg^Jan"), x0010_0040=("CS", "O")),
    "e18_multi_pn": entry(18, x0010_0010=("PN", "DOE^JANE\\DOE^J"),
                          x0032_1032=("PN", "A^B\\C^D")),
    "e19_pregnancy_and_extras": entry(
        19, x0010_21c0=("US", 3), x0010_1030=("DS", "72.5"), x0010_1020=("DS", "1.70"),
        x0038_0050=("LO", "WHEELCHAIR"), x0040_1002=("LO", "PAIN"),
        x0040_2016=("LO", "PLACER1"), x0040_2017=("LO", "FILLER1")),
}
# Entries rejected by the default --enable-file-reject, one per rule (docs/compat.md §3).
INCOMPLETE: dict[str, Spec] = {
    "i01_two_sps_items": entry(101, sps_items=[sps(), sps(x0040_0009=("SH", "SPS2"))]),
    "i02_zero_sps_items": entry(102, sps_items=[]),
    "i03_no_sps": entry(103, x0040_0100=None),
    "i04_no_station_ae": entry(104, sps_items=[sps(x0040_0001=None)]),
    "i05_empty_sps_date": entry(105, sps_items=[sps(x0040_0002=("DA", ""))]),
    "i06_no_modality": entry(106, sps_items=[sps(x0008_0060=None)]),
    "i07_no_sps_id": entry(107, sps_items=[sps(x0040_0009=None)]),
    "i08_no_requested_procedure_id": entry(108, x0040_1001=None),
    "i09_empty_study_uid": entry(109, x0020_000d=("UI", "")),
    "i10_no_patient_name": entry(110, x0010_0010=None),
    "i11_empty_patient_id": entry(111, x0010_0020=("LO", "")),
    "i12_zero_protocol_codes": entry(112, sps_items=[sps(x0040_0008=("SQ", []))]),
    "i13_code_without_scheme": entry(
        113, sps_items=[sps(x0040_0008=("SQ", [merge(code(), {"0008,0102": None})]))]),
    "i14_no_procedure_description_or_code": entry(114, x0032_1060=None, x0032_1064=None),
    "i15_blank_procedure_description": entry(115, x0032_1060=("LO", "   ")),
    "i16_study_reference_without_instance": entry(
        116, x0008_1110=("SQ", [{"0008,1150": ("UI", "1.2.840.10008.3.1.2.3.1")}])),
    "i17_patient_reference_empty_class": entry(
        117, x0008_1120=("SQ", [{"0008,1150": ("UI", ""), "0008,1155": ("UI", "1.2.3")}])),
    "i18_no_sps_time": entry(118, sps_items=[sps(x0040_0003=None)]),
    "i19_empty_sps_item": entry(119, sps_items=[{}]),
}


def encode(spec: Spec, codec: str) -> Dataset:
    """Build a dataset whose text values are the exact bytes of ``spec``."""
    ds = Dataset()
    for key, pair in sorted(spec.items()):
        if pair is None:
            continue
        vr, value = pair
        tag = Tag(*(int(part, 16) for part in key.split(",")))
        if vr == "SQ":
            assert isinstance(value, list)
            ds.add_new(tag, vr, Sequence([encode(item, codec) for item in value]))
        elif vr == "US":
            ds.add_new(tag, vr, value)
        else:
            ds.add_new(tag, vr, str(value).encode(codec))
    return ds


def charset_of(spec: Spec) -> str | None:
    """The entry's (0008,0005) value, if any."""
    pair = spec.get("0008,0005")
    return None if pair is None else str(pair[1])


def write_entry(path: Path, spec: Spec, *, codec: str | None = None, implicit: bool = False,
                big_endian: bool = False, raw_dataset: bool = False) -> None:
    """Write one worklist file; ``raw_dataset`` leaves out preamble and meta header."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # odd values (padded TM...) are the point
        ds = encode(spec, codec or CODECS[charset_of(spec)])
    if not raw_dataset:
        ds.ensure_file_meta()
        ds.file_meta.MediaStorageSOPClassUID = MWL_FIND
        ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.10.1447.{len(path.name)}"
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRBigEndian if big_endian else
                                          ExplicitVRLittleEndian)
    ds.save_as(path, enforce_file_format=not raw_dataset, implicit_vr=implicit,
               little_endian=not big_endian)


def write_edge(directory: Path) -> None:
    """The EDGE database: complete, incomplete and unusable files side by side."""
    directory.mkdir(parents=True)
    (directory / "lockfile").touch()
    for name, spec in {**COMPLETE, **INCOMPLETE}.items():
        write_entry(directory / f"{name}.wl", spec,
                    codec="latin-1" if name == "e07_latin1_without_charset" else None)
    write_entry(directory / "t01_implicit_vr.wl",
                entry(201, x0010_0010=("PN", "IMPLICIT^VR")), implicit=True)
    write_entry(directory / "t02_big_endian.wl",
                entry(202, x0010_0010=("PN", "BIG^ENDIAN")), big_endian=True)
    write_entry(directory / "t03_no_meta_header.wl",
                entry(203, x0010_0010=("PN", "NO^META")), raw_dataset=True)
    write_entry(directory / ".t04_hidden.wl", entry(204, x0010_0010=("PN", "HIDDEN^FILE")))
    # Files that must never be served: wrong extension, not DICOM, truncated, a directory.
    write_entry(directory / "x01_upper_extension.WL", entry(301))
    write_entry(directory / "x02_backup.wl.bak", entry(302))
    write_entry(directory / ".wl", entry(303))
    (directory / "x04_text.wl").write_text("this is not a DICOM file\n" * 8)
    (directory / "x05_empty.wl").touch()
    whole = (directory / "e01_plain.wl").read_bytes()
    (directory / "x06_truncated.wl").write_bytes(whole[: len(whole) // 2])
    (directory / "x07_directory.wl").mkdir()


def load_generator() -> ModuleType:
    """Import examples/make_worklists.py (examples is not a package)."""
    spec = importlib.util.spec_from_file_location("make_worklists",
                                                  EXAMPLES / "make_worklists.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def build_database(root: Path) -> Path:
    """Write every corpus AE directory under ``root``."""
    generator = load_generator()
    generator.write_worklists(root, generator.BASE_DATE, generator.SEED)
    offis = root / "OFFIS"
    offis.mkdir()
    (offis / "lockfile").touch()
    for dump in sorted((DCMTK_EXAMPLES / "wlistdb" / "OFFIS").glob("*.dump")):
        dump2dcm(dump, offis / f"{dump.stem}.wl")
    write_edge(root / "EDGE")
    (root / "NOLOCK").mkdir()
    write_entry(root / "NOLOCK" / "entry.wl", entry(401))
    (root / "EMPTY").mkdir()
    (root / "EMPTY" / "lockfile").touch()
    return root


def dcmtk(tool: str) -> str:
    """The DCMTK binary ``tool``: PATH may hold pynetdicom's findscu (and friends) first."""
    for directory in ("/usr/bin", "/usr/local/bin"):
        candidate = Path(directory) / tool
        if candidate.exists():
            return str(candidate)
    found = shutil.which(tool)
    if found is None:
        raise FileNotFoundError(tool)
    return found


# --- queries -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    """One C-FIND identifier as dump text, the AE it is sent to, and the runs that send it."""

    name: str
    ae: str
    dump: str
    tags: frozenset[str] = field(default_factory=frozenset)
    charset: str | None = None

    def write(self, directory: Path) -> Path:
        """Write the dump text and convert it with dump2dcm; returns the .dcm path."""
        text = directory / f"{self.name}.dump"
        text.write_bytes(self.dump.encode(CODECS[self.charset]))
        return dump2dcm(text, directory / f"{self.name}.dcm")


def lines(*items: str) -> str:
    """Join dump lines."""
    return "\n".join(items) + "\n"


def seq(tag: str, *items: list[str]) -> list[str]:
    """Dump lines of a sequence with the given items (each a list of lines)."""
    out = [f"({tag}) SQ"]
    for item in items:
        out += ["(fffe,e000) -", *item, "(fffe,e00d) -"]
    return [*out, "(fffe,e0dd) -"]


RETURN_TOP = [
    "(0008,0050) SH []", "(0008,0090) PN []", "(0010,0010) PN []", "(0010,0020) LO []",
    "(0010,0021) LO []", "(0010,0030) DA []", "(0010,0040) CS []", "(0020,000d) UI []",
    "(0032,1032) PN []", "(0032,1060) LO []", "(0038,0010) LO []", "(0040,1001) SH []",
    "(0040,1003) SH []",
]
RETURN_SPS = [
    "(0008,0060) CS []", "(0040,0001) AE []", "(0040,0002) DA []", "(0040,0003) TM []",
    "(0040,0006) PN []", "(0040,0007) LO []", "(0040,0009) SH []", "(0040,0010) SH []",
    "(0040,0011) SH []",
]
# Every return key of the wlmscpfs 3.6.7 key table except (0008,1040) (a documented difference).
ALL_RETURN_KEYS = [
    "(0008,0020) DA []", "(0008,0030) TM []", "(0008,0050) SH []", "(0008,0080) LO []",
    "(0008,0081) ST []", "(0008,0090) PN []", "(0008,1080) LO []",
    *seq("0008,1110", ["(0008,1150) UI []", "(0008,1155) UI []"]),
    *seq("0008,1120", ["(0008,1150) UI []", "(0008,1155) UI []"]),
    "(0010,0010) PN []", "(0010,0020) LO []", "(0010,0021) LO []", "(0010,0030) DA []",
    "(0010,0040) CS []", "(0010,1000) LO []", "(0010,1001) PN []", "(0010,1020) DS []",
    "(0010,1030) DS []", "(0010,1040) LO []", "(0010,1080) LO []", "(0010,2000) LO []",
    "(0010,2110) LO []", "(0010,2160) SH []", "(0010,21a0) CS []", "(0010,21b0) LT []",
    "(0010,21c0) US", "(0010,21d0) DA []", "(0010,2297) PN []", "(0010,2298) CS []",
    "(0010,4000) LT []", "(0020,000d) UI []", "(0032,1032) PN []", "(0032,1033) LO []",
    "(0032,1060) LO []",
    *seq("0032,1064", ["(0008,0100) SH []", "(0008,0102) SH []", "(0008,0103) SH []",
                       "(0008,0104) LO []"]),
    "(0038,0010) LO []", "(0038,0011) LO []", "(0038,0050) LO []", "(0038,0300) LO []",
    "(0038,0500) LO []",
    *seq("0040,0100", [
        "(0008,0060) CS []", "(0032,1070) LO []", "(0040,0001) AE []", "(0040,0002) DA []",
        "(0040,0003) TM []", "(0040,0004) DA []", "(0040,0005) TM []", "(0040,0006) PN []",
        "(0040,0007) LO []",
        *seq("0040,0008", ["(0008,0100) SH []", "(0008,0102) SH []", "(0008,0103) SH []",
                           "(0008,0104) LO []"]),
        "(0040,0009) SH []", "(0040,0010) SH []", "(0040,0011) SH []", "(0040,0012) LO []",
        "(0040,0020) CS []", "(0040,0400) LT []"]),
    "(0040,1001) SH []", "(0040,1002) LO []", "(0040,1003) SH []", "(0040,1004) LO []",
    "(0040,1005) LO []", "(0040,1008) LO []", "(0040,1009) SH []", "(0040,1010) PN []",
    "(0040,1400) LT []", "(0040,2001) LO []", "(0040,2004) DA []", "(0040,2005) TM []",
    "(0040,2008) PN []", "(0040,2009) SH []", "(0040,2010) SH []", "(0040,2016) LO []",
    "(0040,2017) LO []", "(0040,2400) LT []", "(0040,3001) LO []",
]


def override(base: list[str], keys: tuple[str, ...]) -> list[str]:
    """``base`` with lines of the same tag replaced by ``keys`` (dump2dcm sorts the tags)."""
    replaced = {key[:11] for key in keys}
    return [line for line in base if line[:11] not in replaced] + list(keys)


def top(*keys: str, sps_keys: list[str] | None = None) -> str:
    """A query: the standard top-level return keys overridden by ``keys``, plus an SPS."""
    return lines(*override(RETURN_TOP, keys),
                 *seq("0040,0100", RETURN_SPS if sps_keys is None else sps_keys))


def in_sps(*keys: str) -> list[str]:
    """The standard SPS return keys overridden by ``keys``."""
    return override(RETURN_SPS, keys)


def q(name: str, dump: str, *tags: str, ae: str = "EDGE", charset: str | None = None) -> Query:
    """Shorthand for a Query."""
    return Query(name, ae, dump, frozenset(tags), charset)


def matching_queries() -> list[Query]:
    """Every matching key, wildcards, ranges, combined date-time, multi-valued attributes."""
    return [
        q("m_universal", top(), "dfr", "ts"),
        q("m_name_exact", top("(0010,0010) PN [VIVALDI^ANTONIO]")),
        q("m_name_star", top("(0010,0010) PN [EDGE*]")),
        q("m_name_question", top("(0010,0010) PN [EDGE^PATIENT?]")),
        q("m_name_lowercase", top("(0010,0010) PN [edge*]")),
        q("m_name_family_only", top("(0010,0010) PN [VIVALDI]")),
        q("m_name_leading_space", top("(0010,0010) PN [ VIV*]")),
        q("m_name_universal_caret", top("(0010,0010) PN [^]")),
        q("m_name_padded_file", top("(0010,0010) PN [SMITH^JOHN]")),
        q("m_name_multi_in_file", top("(0010,0010) PN [DOE^J]")),
        q("m_name_space_component", top("(0010,0010) PN [van der*]")),
        q("m_pid_exact", top("(0010,0020) LO [EDGE001]")),
        q("m_pid_padded_file", top("(0010,0020) LO [AV35674]")),
        q("m_pid_star_universal", top("(0010,0020) LO [*]")),
        q("m_pid_no_wildcards", top("(0010,0020) LO [EDGE*]")),
        q("m_pid_blank_file", top("(0010,0020) LO [ ]")),
        q("m_issuer", top("(0010,0021) LO [HOSP_B]")),
        q("m_issuer_wild", top("(0010,0021) LO [HOSP_?]")),
        q("m_accession_multi_query", top("(0008,0050) SH [AV35674\\ACC0001]")),
        q("m_accession_multi_file", top("(0008,0050) SH [HF]")),
        q("m_accession_wrong_vr_file", top("(0008,0050) SH [ACC0012]")),
        q("m_accession_wrong_vr_query", top("(0008,0050) LO [ACC0012]")),
        q("m_rpid", top("(0040,1001) SH [RP000?]")),
        q("m_referring", top("(0008,0090) PN [REFERRER*]")),
        q("m_referring_leading_space", top("(0008,0090) PN [ LEADING^SPACE]")),
        q("m_sex", top("(0010,0040) CS [F]")),
        q("m_sex_wild", top("(0010,0040) CS [?]")),
        q("m_requesting", top("(0032,1032) PN [A^B]")),
        q("m_admission", top("(0038,0010) LO [ADM1*]")),
        q("m_priority", top("(0040,1003) SH [HIGH]")),
        q("m_priority_wild", top("(0040,1003) SH [*T*]")),
        q("m_responsible", top("(0010,2297) PN [OWNER*]", "(0010,2298) CS [OWNER]")),
        q("m_birth_exact", top("(0010,0030) DA [19700101]")),
        q("m_birth_range", top("(0010,0030) DA [19600101-19800101]")),
        q("m_birth_open_start", top("(0010,0030) DA [-19750101]")),
        q("m_study_date", top("(0008,0020) DA [20240303-]", "(0008,0030) TM []")),
        q("m_study_datetime", top("(0008,0020) DA [20240303-20240305]",
                                  "(0008,0030) TM [2300-0100]")),
        q("m_study_time_only", top("(0008,0020) DA []", "(0008,0030) TM [00-0100]")),
        q("m_station_ae", top(sps_keys=in_sps("(0040,0001) AE [AA33]"))),
        q("m_station_ae_padded", top(sps_keys=in_sps("(0040,0001) AE [US1]"))),
        q("m_station_ae_star", top(sps_keys=in_sps("(0040,0001) AE [*]")), "dfr"),
        q("m_station_ae_literal", top(sps_keys=in_sps("(0040,0001) AE [EDGE*]"))),
        q("m_modality", top(sps_keys=in_sps("(0008,0060) CS [MR]"))),
        q("m_modality_literal", top(sps_keys=in_sps("(0008,0060) CS [C*]"))),
        q("m_modality_multi", top(sps_keys=in_sps("(0008,0060) CS [MR\\US]"))),
        q("m_perf_phys_star", top(sps_keys=in_sps("(0040,0006) PN [*]")), "dfr"),
        q("m_perf_phys_wild", top(sps_keys=in_sps("(0040,0006) PN [TECH*]"))),
        q("m_sps_date", top(sps_keys=in_sps(f"(0040,0002) DA [{D0}]"))),
        q("m_sps_date_range", top(sps_keys=in_sps("(0040,0002) DA [20240303-20240305]"))),
        q("m_sps_date_open_end", top(sps_keys=in_sps("(0040,0002) DA [20240305-]"))),
        q("m_sps_time_exact", top(sps_keys=in_sps("(0040,0003) TM [0800]"))),
        q("m_sps_time_hour_only", top(sps_keys=in_sps("(0040,0003) TM [08]"))),
        q("m_sps_time_fraction", top(sps_keys=in_sps("(0040,0003) TM [083000.123456]"))),
        q("m_sps_time_range", top(sps_keys=in_sps("(0040,0003) TM [0800-1700]"))),
        q("m_sps_time_open", top(sps_keys=in_sps("(0040,0003) TM [1600-]"))),
        q("m_sps_datetime_interval", top(sps_keys=in_sps(
            "(0040,0002) DA [20240303-20240305]", "(0040,0003) TM [2300-0100]"))),
        q("m_sps_datetime_single", top(sps_keys=in_sps(
            f"(0040,0002) DA [{D0}]", "(0040,0003) TM [0800]"))),
        q("m_sps_datetime_mixed_shape", top(sps_keys=in_sps(
            f"(0040,0002) DA [{D0}]", "(0040,0003) TM [0700-0900]"))),
        q("m_sps_datetime_open", top(sps_keys=in_sps(
            "(0040,0002) DA [20240304-]", "(0040,0003) TM [1600-]"))),
        q("m_two_keys_and", top("(0010,0040) CS [M]", sps_keys=in_sps("(0008,0060) CS [CT]"))),
        q("m_return_value_ignored", top("(0020,000d) UI [1.2.3]", "(0032,1060) LO [NOPE]")),
    ]


def charset_queries() -> list[Query]:
    """Non-ASCII names under ISO_IR 100 and ISO_IR 192, with and without (0008,0005)."""
    return [
        q("c_latin1_name", top("(0008,0005) CS [ISO_IR 100]", "(0010,0010) PN [MÜLLER*]"),
          "charset", "ts", charset=LATIN1),
        q("c_utf8_name", top("(0008,0005) CS [ISO_IR 192]", "(0010,0010) PN [ИВАНОВ^ИВАН]"),
          "charset", "ts", charset=UTF8),
        q("c_utf8_ideographic", top("(0008,0005) CS [ISO_IR 192]",
                                    "(0010,0010) PN [*山田*]"), "charset", charset=UTF8),
        q("c_non_ascii_without_charset", top("(0010,0010) PN [MÜLLER*]"), "charset", "invalid",
          charset=LATIN1),
        q("c_charset_only", top("(0008,0005) CS [ISO_IR 100]"), "charset"),
        q("c_all_return_keys", lines(*ALL_RETURN_KEYS), "charset", "sequence", "ts", "dfr"),
        q("c_no_text_keys", lines("(0010,0030) DA []", "(0020,000d) UI []"), "charset"),
        q("c_sps_text_only", lines(*seq("0040,0100", ["(0040,0006) PN []"])), "charset"),
    ]


def sequence_queries() -> list[Query]:
    """Empty items, zero items, nested sequences, query values that leak into responses."""
    return [
        q("s_sps_empty_item", lines("(0010,0010) PN []", *seq("0040,0100", [])),
          "sequence", "ts", "dfr"),
        q("s_sps_zero_items", lines("(0010,0010) PN []", "(0040,0100) SQ", "(fffe,e0dd) -"),
          "sequence", "zero_sps", "dfr"),
        q("s_ref_study_empty_item", lines("(0010,0020) LO []", *seq("0008,1110", []),
                                          *seq("0008,1120", [])), "sequence", "dfr"),
        q("s_ref_study_zero_items", lines("(0010,0020) LO []", "(0008,1110) SQ",
                                          "(fffe,e0dd) -"), "sequence"),
        q("s_codes_empty_items", lines("(0010,0020) LO []", *seq("0032,1064", []),
                                       *seq("0040,0100", ["(0040,0007) LO []",
                                                          *seq("0040,0008", [])])),
          "sequence", "ts"),
        q("s_protocol_codes_zero_items", lines(
            "(0010,0020) LO []", *seq("0040,0100", ["(0040,0007) LO []", "(0040,0008) SQ",
                                                    "(fffe,e0dd) -"])), "sequence"),
        q("s_leak_query_values", lines(
            "(0010,0020) LO []", *seq("0008,1110", ["(0008,1150) UI [1.2.3]",
                                                    "(0008,1155) UI [4.5.6]"]),
            *seq("0040,0100", ["(0040,0010) SH [A2]", "(0040,0400) LT [*]"])), "sequence"),
        q("s_two_sps_items", lines("(0010,0010) PN []", *seq("0040,0100", RETURN_SPS,
                                                            RETURN_SPS)), "sequence", "invalid"),
        q("s_pregnancy", lines("(0010,0020) LO []", "(0010,21c0) US"), "sequence"),
    ]


def invalid_queries() -> list[Query]:
    """Invalid values (0xA900 unless --no-fail) and unsupported keys (0xFF01)."""
    return [
        q("v_cs_lowercase", top(sps_keys=in_sps("(0008,0060) CS [ct]")), "invalid"),
        q("v_da_star", top("(0010,0030) DA [*]"), "invalid"),
        q("v_da_prefix_star", top("(0010,0030) DA [1678*]"), "invalid"),
        q("v_da_bad_month", top("(0010,0030) DA [19701301]"), "invalid"),
        q("v_tm_bad", top(sps_keys=in_sps("(0040,0003) TM [2561]")), "invalid"),
        q("v_pn_tilde", top("(0010,0010) PN [A~B]"), "invalid"),
        q("v_ae_control", top(sps_keys=in_sps("(0040,0001) AE [A\tB]")), "invalid"),
        q("v_two_errors", top("(0010,0030) DA [*]", sps_keys=in_sps("(0008,0060) CS [mr]")),
          "invalid"),
        q("v_three_sps_items", lines("(0010,0010) PN []", *seq(
            "0040,0100", in_sps("(0008,0060) CS [CT]"), in_sps("(0008,0060) CS [MR]"),
            in_sps("(0008,0060) CS [US]"))), "three_sps"),
        q("v_three_sps_first_item", lines("(0010,0010) PN []", *seq(
            "0040,0100", in_sps("(0008,0060) CS [CT]"))), "three_sps"),
        q("u_query_retrieve_level", top("(0008,0052) CS [WORKLIST]"), "invalid"),
        q("u_private_tag", top("(0009,0010) LO [WLMD EDGE]", "(0009,1001) LO []"), "invalid"),
        q("u_patient_age", top("(0010,1010) AS []"), "invalid"),
        q("u_study_description", top("(0008,1030) LO []")),
        q("u_nested_unsupported", top(sps_keys=in_sps("(0040,0100) SQ", "(fffe,e0dd) -"))),
    ]


def database_queries() -> list[Query]:
    """Other AE directories: DCMTK's examples, the realistic examples, no lockfile, empty."""
    offis = [q(f"offis_{p.stem}", p.read_text(), "dfr", ae="OFFIS")
             for p in sorted((DCMTK_EXAMPLES / "wlistqry").glob("*.dump"),
                             key=lambda p: int(p.stem.removeprefix("wlistqry")))]
    examples = [q(f"example_{p.stem}_{ae}", p.read_text(encoding="latin-1"), ae=ae,
                  charset=LATIN1)
                for ae in EXAMPLE_AES for p in sorted((EXAMPLES / "queries").glob("*.dump"))
                if "ISO_IR 192" not in p.read_text(encoding="latin-1")]
    utf8 = [q(f"example_{p.stem}_WORKLIST", p.read_text(encoding="utf-8"), ae="WORKLIST",
              charset=UTF8)
            for p in sorted((EXAMPLES / "queries").glob("*.dump"))
            if "ISO_IR 192" in p.read_text(encoding="latin-1")]
    return [*offis, *examples, *utf8,
            q("db_no_lockfile", top(), ae="NOLOCK"),
            q("db_empty", top(), ae="EMPTY"),
            q("db_unknown_ae_case", top(), ae="edge")]


QUERIES: list[Query] = [*matching_queries(), *charset_queries(), *sequence_queries(),
                        *invalid_queries(), *database_queries()]


def write_queries(directory: Path, queries: list[Query] = QUERIES) -> dict[str, Path]:
    """Convert every query to DICOM under ``directory``; returns name → .dcm path."""
    directory.mkdir(parents=True, exist_ok=True)
    return {query.name: query.write(directory) for query in queries}
