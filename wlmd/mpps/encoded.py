"""An MPPS data set on its encoded bytes: N-CREATE and N-SET checked, merged and stored as
received, without decoding and encoding it again.

A step arrives in explicit VR little endian (what wlmd prefers) and its instance file is kept
in it, so its elements can be copied: the checks of ``wlmd.mpps.rules`` read the raw elements
(an ``EncodedLevel`` is the ``RawLevel`` they take like a Dataset), an N-SET replaces whole
top-level elements, and the instance file is its meta header plus the elements' bytes in tag
order. pydicom took about three quarters of a millisecond per step to check, merge and encode
what this does in tens of microseconds. Whatever pydicom might read or write otherwise (tags
out of order, group lengths, odd value lengths, values that are not plain ASCII where a check
reads them) raises ``NotRaw``, and the step takes the pydicom path.
"""

from __future__ import annotations

from wlmd.dicom.rawfile import (
    ElementReader,
    NotRaw,
    RawLevel,
    RawSequence,
    encode_element,
    part10,
    span,
    uid_value,
)

SOP_CLASS_UID, SOP_INSTANCE_UID = 0x00080016, 0x00080018

__all__ = ["EncodedLevel", "NotRaw", "encoded_level", "instance_file"]


class EncodedLevel(RawLevel):
    """The top level of an encoded data set: its raw elements, and each one's bytes."""

    def __init__(self, elements: RawLevel, pieces: dict[int, bytes]) -> None:
        super().__init__(elements)
        self.pieces = pieces

    def merged(self, changes: EncodedLevel) -> EncodedLevel:
        """This level with each element of ``changes`` replacing the stored one whole."""
        return EncodedLevel(RawLevel({**self, **changes}), {**self.pieces, **changes.pieces})


def encoded_level(data: bytes, start: int = 0) -> EncodedLevel:
    """The data set in ``data`` from ``start`` (explicit VR little endian), strictly read."""
    level = ElementReader(data, implicit=False, strict=True).level(start, len(data),
                                                                     top=True)[0]
    _refuse_unstorable(level)
    pieces = {}
    for tag, element in level.items():
        begin, end = span(element)
        pieces[tag] = data[begin:end]
    return EncodedLevel(level, pieces)


def _refuse_unstorable(level: RawLevel) -> None:
    """NotRaw for what the pydicom path would not store as it came: group lengths (no
    longer true once elements change) and values of odd length (which it pads)."""
    for tag, element in level.items():
        if isinstance(element, RawSequence):
            for item in element.value:
                _refuse_unstorable(item)
        elif tag & 0xFFFF == 0 or element.length % 2:
            raise NotRaw("a group length or a value of odd length")


def instance_file(level: EncodedLevel, sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """The Part 10 bytes of the instance: ``level`` with its SOP Class and Instance UIDs."""
    pieces = dict(level.pieces)
    pieces[SOP_CLASS_UID] = encode_element(SOP_CLASS_UID, b"UI", uid_value(sop_class_uid))
    pieces[SOP_INSTANCE_UID] = encode_element(SOP_INSTANCE_UID, b"UI", uid_value(sop_instance_uid))
    body = b"".join(pieces[tag] for tag in sorted(pieces))
    return part10(body, sop_class_uid, sop_instance_uid)
