"""A worklist file's bytes kept compressed in memory, against a preset dictionary.

Every served record keeps its file's bytes to build answers from them, about 1 KiB each: the
largest part of a 100,000-entry worklist that the supervisor and every worker share. Compressed
alone, so small a file shrinks only to half; most of its bytes are the same few element headers,
transfer syntax and class UIDs as in every other worklist file, so a preset dictionary of them
(``DICTIONARY``) takes it to under half. Zstandard, not zlib: with a dictionary it compresses a
file in about a sixth and decompresses it in about a quarter of zlib's time (measured 15 and
5 µs against 96 and 21 µs per 1 KiB file), which the first start pays per file and a fresh
worker per answer.

The dictionary is built from the tags of the conformance statement and a few constants, never
from served files (no patient data in it); ``DICTIONARY_ID`` names it, so that the index file
(``persist.py``) never decompresses bytes that were compressed against another dictionary.
"""

from __future__ import annotations

import struct
import zlib

import zstandard
from pydicom.datadict import dictionary_VR
from pydicom.tag import BaseTag

from wlmd.worklist import keys

_LONG_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT",
                       "UV"))
_COMMON_TAGS = (  # the other elements most worklist files hold (besides the keys module's)
    0x00080050, 0x00080080, 0x00080090, 0x00100010, 0x00100020, 0x00100021, 0x00100030,
    0x00100040, 0x00101030, 0x00102000, 0x00102110, 0x00104000, 0x0020000D, 0x00321032,
    0x00321033, 0x00380010, 0x00380300, 0x00380500, 0x00401001, 0x00401003, 0x00401010,
    0x00401400,
)
_CONSTANTS = (
    b"1.2.840.10008.5.1.4.31\0",  # Modality Worklist Information Model - FIND
    b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2\0",  # explicit and implicit VR little endian
    b"1.2.276.0.7230010.3.0.3.6.7\0OFFIS_DCMTK_367 ",  # DCMTK's implementation class
    b"ISO_IR 100ISO_IR 192SCHEDULED 2.25.",
    # the start of a meta header: group length, version, media storage SOP class UID
    b"\x02\x00\x00\x00UL\x04\x00\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"
    b"\x02\x00\x02\x00UI\x16\x00",
)
_ITEM_PARTS = (b"\xfe\xff\x00\xe0\xff\xff\xff\xff",  # item of undefined length
               b"\xfe\xff\x0d\xe0\0\0\0\0",  # item delimitation
               b"\xfe\xff\xdd\xe0\0\0\0\0")  # sequence delimitation


def _element_header(tag: int) -> bytes:
    """The explicit VR little endian header of ``tag`` with an empty (or undefined) length."""
    vr = dictionary_VR(tag)
    group, element = tag >> 16, tag & 0xFFFF
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, 0xFFFFFFFF)
    return struct.pack("<HH2sH", group, element, vr.encode(), 0)


def _dictionary() -> bytes:
    tags: set[int] = {tag for tag in vars(keys).values() if isinstance(tag, BaseTag)}
    tags.update(_COMMON_TAGS)
    return b"".join((*_CONSTANTS, *map(_element_header, sorted(tags)), *_ITEM_PARTS))


DICTIONARY = _dictionary()
DICTIONARY_ID = f"zstd-{zlib.crc32(DICTIONARY):08x}"
_PREPARED = zstandard.ZstdCompressionDict(DICTIONARY, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
# One compressor and decompressor per process: making one per call would cost more than the call.
# Level 1: with the dictionary, a worklist file compresses faster and smaller than at the
# default 3 (10.0 against 12.6 us, 510 against 518 bytes per benchmark file); any level
# decompresses alike, so bytes saved at another level stay readable.
_COMPRESSOR = zstandard.ZstdCompressor(level=1, dict_data=_PREPARED, write_checksum=False,
                                       write_content_size=True, write_dict_id=False)
_DECOMPRESSOR = zstandard.ZstdDecompressor(dict_data=_PREPARED)


def compressed(data: bytes) -> bytes:
    """``data`` compressed against ``DICTIONARY``."""
    return _COMPRESSOR.compress(data)


def decompressed(blob: bytes) -> bytes:
    """The bytes ``compressed`` made ``blob`` of."""
    return _DECOMPRESSOR.decompress(blob)
