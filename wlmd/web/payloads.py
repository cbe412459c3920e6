"""The media types of PS3.18 search results: DICOM JSON, DICOM XML and their multipart forms.

JSON comes from pydicom (``Dataset.to_json_dict``, PS3.18 Annex F). pydicom has no writer for
the Native DICOM Model of PS3.19 (``application/dicom+xml``), so ``to_xml`` builds it with the
standard library's ElementTree, element by element as Annex A of PS3.19 describes.
"""

from __future__ import annotations

import functools
import io
import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.filereader import read_dataset
from pydicom.valuerep import PersonName
from starlette.responses import JSONResponse, Response

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
MULTIPART = "multipart/related"
CACHED_ANSWERS = 20_000  # JSON of recent answers kept (a few KB each)
PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


class NotAcceptable(ValueError):
    """None of the Accept header's media types can be served (HTTP 406)."""


def choose_media_type(accept: str) -> tuple[str, bool]:
    """The (type, multipart) to answer with; DICOM JSON when the client takes anything."""
    if not accept.strip():
        return DICOM_JSON, False
    for choice in (part.strip() for part in accept.split(",")):
        media, _, parameters = choice.partition(";")
        media = media.strip().lower()
        params = {key.strip().lower(): value.strip().strip('"').lower()
                  for key, _, value in (p.partition("=") for p in parameters.split(";"))
                  if key.strip()}
        if params.get("q") == "0":
            continue
        if media in (DICOM_JSON, "application/json", "application/*", "*/*"):
            return DICOM_JSON, False
        if media == DICOM_XML:
            return DICOM_XML, False
        if media == MULTIPART:
            inner = params.get("type", DICOM_XML)
            if inner in (DICOM_JSON, DICOM_XML):
                return inner, True
    raise NotAcceptable(accept)


def render(answers: Sequence[bytes], media_type: str, multipart: bool) -> tuple[bytes, str]:
    """The response body and its Content-Type, from the encoded answers of the search."""
    if not multipart:
        if media_type == DICOM_JSON:
            return b"[" + b",".join(json_of(answer) for answer in answers) + b"]", DICOM_JSON
        return _xml_document([answer_dataset(answer) for answer in answers]), \
            f"{DICOM_XML}; charset=utf-8"
    boundary = secrets.token_hex(16)
    parts = []
    for answer in answers:
        payload = json_of(answer) if media_type == DICOM_JSON else to_xml(answer_dataset(answer))
        parts.append(f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode() + payload
                     + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f'{MULTIPART}; type="{media_type}"; boundary={boundary}'


@functools.lru_cache(maxsize=CACHED_ANSWERS)
def json_of(answer: bytes) -> bytes:
    """One answer in DICOM JSON. The C-FIND service hands out the same bytes object for the
    same record and query until the file changes, so repeated searches convert nothing."""
    return json.dumps(answer_dataset(answer).to_json_dict()).encode()


def answer_dataset(answer: bytes) -> Dataset:
    """One answer (explicit VR little endian, as the C-FIND service encoded it) as a dataset."""
    return read_dataset(io.BytesIO(answer), is_implicit_VR=False, is_little_endian=True)


def problem(status: int, message: str) -> Response:
    """An error answer of the API: ``{"error": message}`` with the HTTP status."""
    return JSONResponse({"error": message}, status_code=status)


def _xml_document(datasets: Sequence[Dataset]) -> bytes:
    """Several results in one XML body: one NativeDicomModel element each, in a wrapper."""
    if len(datasets) == 1:
        return to_xml(datasets[0])
    root = ET.Element("NativeDicomModels")
    for ds in datasets:
        root.append(_native_model(ds))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def to_xml(dataset: Dataset) -> bytes:
    """One dataset in the PS3.19 Native DICOM Model."""
    return ET.tostring(_native_model(dataset), encoding="utf-8", xml_declaration=True)


def _native_model(dataset: Dataset) -> ET.Element:
    root = ET.Element("NativeDicomModel", xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM")
    _add_attributes(root, dataset)
    return root


def _add_attributes(parent: ET.Element, dataset: Dataset) -> None:
    for element in dataset:
        parent.append(_attribute(element))


def _attribute(element: DataElement) -> ET.Element:
    node = ET.Element("DicomAttribute", {"tag": f"{element.tag.group:04X}{element.tag.element:04X}",
                                         "vr": element.VR})
    if element.keyword:
        node.set("keyword", element.keyword)
    if element.VR == "SQ":
        for number, item in enumerate(element.value, start=1):
            item_node = ET.SubElement(node, "Item", number=str(number))
            _add_attributes(item_node, item)
        return node
    values = element.value
    if values is None or values == "":
        return node
    if not isinstance(values, (list, tuple)) or isinstance(values, (bytes, str)):
        values = [values]
    for number, value in enumerate(values, start=1):
        if element.VR == "PN":
            _person_name(node, number, PersonName(value) if not isinstance(value, PersonName)
                         else value)
        else:
            ET.SubElement(node, "Value", number=str(number)).text = str(value)
    return node


def _person_name(node: ET.Element, number: int, name: PersonName) -> None:
    person = ET.SubElement(node, "PersonName", number=str(number))
    groups = (("Alphabetic", name.alphabetic), ("Ideographic", name.ideographic),
              ("Phonetic", name.phonetic))
    for group_name, text in groups:
        if not text:
            continue
        group = ET.SubElement(person, group_name)
        for component, part in zip(PN_COMPONENTS, text.split("^"), strict=False):
            if part:
                ET.SubElement(group, component).text = part
