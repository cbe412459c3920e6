"""The HTTP application over a real socket: DICOMweb search against C-FIND, media types,
status codes, the front door (tokens, limits) and the status page.

The web application runs under uvicorn on loopback in a thread of the test; C-FIND answers come
from a ``python -m wlmd`` on the same directory, queried with pynetdicom. Requests are made with
httpx, a client this project did not write.
"""

from __future__ import annotations

import datetime
import email.parser
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from tests.support.processes import free_port, start_wlmd, stop_process
from wlmd.config.settings import Settings
from wlmd.web.app import WebContext, create_app, web_service
from wlmd.web.auth import TokenStore
from wlmd.web.guard import GuardSettings
from wlmd.worklist.writer import WorklistWriter

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "worklists"
READ_TOKEN, WRITE_TOKEN = "read-token-for-tests", "write-token-for-tests"
SEARCH = "/aets/{ae}/rs/modality-scheduled-procedure-steps"


@dataclass
class Web:
    base: str
    root: Path

    def get(self, path: str, token: str | None = READ_TOKEN, **kwargs: object) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.get(self.base + path, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]


def _token_file(path: Path) -> Path:
    lines = [f"reader read sha256:{hashlib.sha256(READ_TOKEN.encode()).hexdigest()}",
             f"writer write sha256:{hashlib.sha256(WRITE_TOKEN.encode()).hexdigest()}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def worklists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("web") / "worklists"
    shutil.copytree(EXAMPLES, root)
    today = datetime.date.today().strftime("%Y%m%d")
    entry = Dataset()
    entry.SpecificCharacterSet = "ISO_IR 192"
    entry.PatientName = "<b>Müller</b>^Jörg"
    entry.PatientID = "WEB-1"
    entry.AccessionNumber = "WEBACC1"
    entry.StudyInstanceUID = "1.2.826.0.1.3680043.2.1143.1"
    entry.RequestedProcedureID = "RP1"
    entry.RequestedProcedureDescription = "CT HEAD"
    step = Dataset()
    step.ScheduledStationAETitle = "CT01"
    step.ScheduledProcedureStepStartDate = today
    step.ScheduledProcedureStepStartTime = "101500"
    step.Modality = "CT"
    step.ScheduledProcedureStepID = "SPS1"
    step.ScheduledProcedureStepDescription = "CT HEAD"
    step.ScheduledProcedureStepStatus = "SCHEDULED"
    entry.ScheduledProcedureStepSequence = Sequence([step])
    WorklistWriter(root).write("CT01", "web_today.wl", entry)
    return root


def _serve(app: object, sock: socket.socket) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))  # type: ignore[arg-type]
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    return server


@pytest.fixture(scope="module")
def web(worklists: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    settings = Settings(port=0, data_files_path=worklists)
    context = WebContext(service=web_service(settings), data_path=worklists,
                         ready=lambda: (True, "ready"),
                         problems=lambda: ["CT01/broken.wl: PatientName <missing>"])
    tokens = TokenStore.load(_token_file(tmp_path_factory.mktemp("tokens") / "tokens"))
    guard = GuardSettings(tokens=tokens, max_body=4096, rate=1000, burst=1000)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = _serve(create_app(context, guard), sock)
    yield Web(f"http://127.0.0.1:{sock.getsockname()[1]}", worklists)
    server.should_exit = True


@pytest.fixture(scope="module")
def cfind_port(worklists: Path) -> Iterator[int]:
    port = free_port()
    proc = start_wlmd(["-csk", "-dfp", str(worklists)], port)  # as HTTP: the file's charset
    yield port
    stop_process(proc)


def _cfind(port: int, ae: str, identifier: Dataset) -> list[Dataset]:
    client = AE(ae_title="WEBTEST")
    client.add_requested_context(ModalityWorklistInformationFind)
    assoc = client.associate("127.0.0.1", port, ae_title=ae)
    assert assoc.is_established
    try:
        return [ds for status, ds in assoc.send_c_find(identifier, ModalityWorklistInformationFind)
                if status and status.Status in (0xFF00, 0xFF01)]
    finally:
        assoc.release()


def _identifier(**matching: str) -> Dataset:
    """A C-FIND identifier asking for the keys compared below, with the given matching keys."""
    ds = Dataset()
    ds.SpecificCharacterSet = ""
    ds.AccessionNumber = matching.get("AccessionNumber", "")
    ds.PatientName = matching.get("PatientName", "")
    ds.PatientID = matching.get("PatientID", "")
    ds.PatientBirthDate = ""
    ds.StudyInstanceUID = ""
    ds.RequestedProcedureID = ""
    step = Dataset()
    step.ScheduledStationAETitle = matching.get("ScheduledStationAETitle", "")
    step.ScheduledProcedureStepStartDate = matching.get("ScheduledProcedureStepStartDate", "")
    step.ScheduledProcedureStepStartTime = ""
    step.Modality = matching.get("Modality", "")
    step.ScheduledProcedureStepID = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def _projection(ds: Dataset, like: Dataset) -> dict[str, object]:
    """``ds`` restricted to the attributes of ``like`` (one level of sequence), as DICOM JSON."""
    kept = Dataset()
    for element in like:
        if element.tag not in ds or element.keyword == "SpecificCharacterSet":
            continue
        if element.VR == "SQ":
            item = Dataset()
            source = ds[element.tag].value[0]
            for inner in element.value[0]:
                if inner.tag in source:
                    item.add(source[inner.tag])
            kept.add_new(element.tag, "SQ", Sequence([item]))
        else:
            kept.add(ds[element.tag])
    return kept.to_json_dict()


SPS = "ScheduledProcedureStepSequence."
DIFFERENTIAL = [
    ("CT01", {}, {}),
    ("CT01", {f"{SPS}Modality": "CT"}, {"Modality": "CT"}),
    ("WORKLIST", {"PatientName": "*a*"}, {"PatientName": "*a*"}),
    ("WORKLIST", {"00400100.00400002": "20240304-20240305"},
     {"ScheduledProcedureStepStartDate": "20240304-20240305"}),
    ("WORKLIST", {"00100020": "NOSUCHID"}, {"PatientID": "NOSUCHID"}),
    ("MR01", {f"{SPS}ScheduledStationAETitle": "MR01", "AccessionNumber": "A24*"},
     {"ScheduledStationAETitle": "MR01", "AccessionNumber": "A24*"}),
]


@pytest.mark.parametrize(("ae", "params", "keys"), DIFFERENTIAL)
def test_search_returns_what_cfind_returns(web: Web, cfind_port: int, ae: str,
                                           params: dict[str, str], keys: dict[str, str]) -> None:
    identifier = _identifier(**keys)
    expected = [_projection(ds, identifier) for ds in _cfind(cfind_port, ae, identifier)]
    response = web.get(SEARCH.format(ae=ae), params=params)
    if not expected:
        assert response.status_code == 204
        return
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    got = [_projection(Dataset.from_json(item), identifier) for item in response.json()]
    assert got == expected


def test_paging_with_offset_and_limit_warns_of_the_rest(web: Web) -> None:
    everything = web.get(SEARCH.format(ae="WORKLIST")).json()
    page = web.get(SEARCH.format(ae="WORKLIST"), params={"offset": "3", "limit": "4"})
    assert page.status_code == 200
    assert page.json() == everything[3:7]
    assert f"There are {len(everything) - 7} additional results" in page.headers["warning"]


def test_fuzzy_matching_ignores_case_and_accents_of_names(web: Web) -> None:
    literal = web.get(SEARCH.format(ae="CT01"), params={"PatientName": "muller^jurgen*"})
    assert literal.status_code == 204
    fuzzy = web.get(SEARCH.format(ae="CT01"), params={"PatientName": "muller^jurgen*",
                                                      "fuzzymatching": "true"})
    assert fuzzy.status_code == 200
    assert "warning" not in fuzzy.headers
    names = [item["00100010"]["Value"][0]["Alphabetic"] for item in fuzzy.json()]
    assert names and all(name.startswith("MÜLLER^JÜRGEN") for name in names)


def test_xml_and_multipart_forms_hold_the_same_datasets(web: Web) -> None:
    params = {f"{SPS}Modality": "CT", "limit": "3"}
    as_json = web.get(SEARCH.format(ae="CT01"), params=params).json()
    xml = web.get(SEARCH.format(ae="CT01"), params=params,
                  headers={"Accept": "application/dicom+xml"})
    assert xml.status_code == 200
    models = ET.fromstring(xml.content).findall("{*}NativeDicomModel")
    assert len(models) == 3
    accessions = [m.find("{*}DicomAttribute[@keyword='AccessionNumber']/{*}Value").text
                  for m in models]
    assert accessions == [item["00080050"]["Value"][0] for item in as_json]
    multipart = web.get(SEARCH.format(ae="CT01"), params=params,
                        headers={"Accept": 'multipart/related; type="application/dicom+json"'})
    assert multipart.status_code == 200
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + multipart.headers["content-type"].encode() + b"\r\n\r\n"
        + multipart.content)
    parts = [json.loads(part.get_payload(decode=True)) for part in message.get_payload()]
    assert parts == as_json


@pytest.mark.parametrize(("params", "headers", "status"), [
    ({"NoSuchKeyword": "x"}, {}, 400),
    ({"limit": "-1"}, {}, 400),
    ({"PatientName.PatientID": "x"}, {}, 400),
    ({"fuzzymatching": "maybe"}, {}, 400),
    ({}, {"Accept": "image/png"}, 406),
])
def test_bad_searches_are_refused_with_the_standard_status(
        web: Web, params: dict[str, str], headers: dict[str, str], status: int) -> None:
    response = web.get(SEARCH.format(ae="CT01"), params=params, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]


def test_unknown_or_unsafe_ae_is_not_found(web: Web) -> None:
    assert web.get(SEARCH.format(ae="NOSUCHAE")).status_code == 404
    assert web.get("/aets/..%2FCT01/rs/modality-scheduled-procedure-steps").status_code == 404


def test_credentials_are_required_except_for_the_probes(web: Web) -> None:
    assert web.get("/healthz", token=None).status_code == 200
    assert web.get("/readyz", token=None).text == "ready\n"
    refused = web.get(SEARCH.format(ae="CT01"), token=None)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert web.get(SEARCH.format(ae="CT01"), token="not-a-token").status_code == 401
    assert web.get("/", token=None).status_code == 401


def test_a_read_token_cannot_write(web: Web) -> None:
    response = httpx.post(web.base + "/aets/CT01/entries", content=b"{}",
                          headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert response.status_code == 403


def test_oversized_bodies_are_refused_whatever_they_declare(web: Web) -> None:
    headers = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    declared = httpx.post(web.base + "/aets/CT01/entries", content=b"x" * 5000, headers=headers)
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    streamed = httpx.post(web.base + "/aets/CT01/entries", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert web.get("/healthz", token=None).status_code == 200  # the server is still there


def test_status_page_shows_todays_entries_escaped(web: Web) -> None:
    page = web.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "&lt;b&gt;Müller&lt;/b&gt;^Jörg" in page.text
    assert "<b>Müller" not in page.text
    assert "WEBACC1" in page.text and "10:15" in page.text
    assert "CT01/broken.wl: PatientName &lt;missing&gt;" in page.text


def test_rate_limit_answers_429_and_recovers(worklists: Path) -> None:
    settings = Settings(port=0, data_files_path=worklists)
    context = WebContext(service=web_service(settings), data_path=worklists,
                         ready=lambda: (True, "ready"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = _serve(create_app(context, GuardSettings(rate=0.5, burst=3)), sock)
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/healthz"
        statuses = [httpx.get(url).status_code for _ in range(6)]
        assert statuses[:3] == [200, 200, 200]
        assert 429 in statuses[3:]
        time.sleep(2.5)  # one request's worth at 0.5 per second
        assert httpx.get(url).status_code == 200
    finally:
        server.should_exit = True


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's chromium is required under CI")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return path


def test_status_page_in_headless_chromium_shows_the_worklist(web: Web, tmp_path: Path) -> None:
    """A browser with the token as Basic credentials renders today's rows, readable on a phone."""
    chromium = _chromium()
    url = web.base.replace("http://", f"http://reader:{READ_TOKEN}@") + "/"
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              f"--user-data-dir={tmp_path / 'profile'}", "--window-size=412,915"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    rows = ET.fromstring(dom[dom.index("<table class=\"entries\" data-ae=\"CT01\""):
                             dom.index("</table>", dom.index("data-ae=\"CT01\"")) + 8])
    cells = [[td.text or "" for td in tr.findall("td")] for tr in rows.iter("tr")][1:]
    today = datetime.date.today().strftime("%Y%m%d")
    expected = []
    for path in sorted((web.root / "CT01").glob("*.wl")):
        ds = dcmread(path)
        step = ds.ScheduledProcedureStepSequence[0]
        if step.ScheduledProcedureStepStartDate == today:
            expected.append([str(ds.AccessionNumber), str(step.Modality)])
    assert [[row[3], row[4]] for row in cells] == expected
    screenshot = tmp_path / "status.png"
    subprocess.run([*common, f"--screenshot={screenshot}", url], capture_output=True,
                   timeout=60, check=True)
    width, height = struct.unpack(">II", screenshot.read_bytes()[16:24])
    assert (width, height) == (412, 915)


def _entry_json(accession: str, sps_id: str = "") -> dict[str, object]:
    entry = Dataset()
    entry.PatientName = "HTTP^ENTRY"
    entry.PatientID = "PID-HTTP"
    entry.AccessionNumber = accession
    entry.RequestedProcedureDescription = "US ABDOMEN"
    step = Dataset()
    step.ScheduledStationAETitle = "US01"
    step.ScheduledProcedureStepStartDate = "20240304"
    step.ScheduledProcedureStepStartTime = "120000"
    step.Modality = "US"
    step.ScheduledProcedureStepDescription = "US ABDOMEN"
    if sps_id:
        step.ScheduledProcedureStepID = sps_id
    entry.ScheduledProcedureStepSequence = Sequence([step])
    return entry.to_json_dict()


def _write(method: str, url: str, body: object, token: str = WRITE_TOKEN) -> httpx.Response:
    return httpx.request(method, url, content=json.dumps(body).encode(),
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/dicom+json"}, timeout=10)


def _cfind_accessions(port: int, accession: str) -> list[str]:
    return [str(ds.AccessionNumber) for ds in _cfind(port, "US01", _identifier(
        AccessionNumber=accession))]


def test_entry_lifecycle_over_http_is_what_cfind_sees(web: Web, cfind_port: int) -> None:
    base = web.base + "/aets/US01/entries"
    created = _write("POST", base, _entry_json("HTTPACC1", "SPS1"))
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    name = location.rsplit("/", 1)[1]
    assert name == "HTTPACC1_SPS1.wl"
    assert set(created.json()["filled"]) >= {"StudyInstanceUID", "RequestedProcedureID"}
    path = web.root / "US01" / name
    assert path.stat().st_mode & 0o777 == 0o600
    assert _cfind_accessions(cfind_port, "HTTPACC1") == ["HTTPACC1"]
    stored = web.get(location).json()
    assert stored["00080050"]["Value"] == ["HTTPACC1"]
    assert _write("POST", base, _entry_json("HTTPACC1", "SPS1")).status_code == 409
    stored["00400100"]["Value"][0]["00400020"] = {"vr": "CS", "Value": ["STARTED"]}
    replaced = _write("PUT", web.base + location, stored)
    assert replaced.status_code == 200, replaced.text
    assert dcmread(path).ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus \
        == "STARTED"
    listed = [item["name"] for item in web.get("/aets/US01/entries").json()]
    assert name in listed
    deleted = httpx.delete(web.base + location,
                           headers={"Authorization": f"Bearer {WRITE_TOKEN}"})
    assert deleted.status_code == 204
    assert not path.exists()
    assert _cfind_accessions(cfind_port, "HTTPACC1") == []
    assert web.get(location).status_code == 404


def test_bad_entries_are_refused_and_nothing_is_written(web: Web) -> None:
    before = sorted(p.name for p in (web.root / "US01").iterdir())
    base = web.base + "/aets/US01/entries"
    incomplete = _entry_json("HTTPBAD1")
    del incomplete["00100020"]  # PatientID, type 1
    refused = _write("POST", base, incomplete)
    assert refused.status_code == 422
    assert any("PatientID" in finding for finding in refused.json()["findings"])
    assert _write("POST", base, {"00100010": {"vr": "XX"}}).status_code == 422
    assert _write("POST", base, ["not", "an", "object"]).status_code == 400
    garbage = httpx.post(base, content=b"{not json", headers={
        "Authorization": f"Bearer {WRITE_TOKEN}"})
    assert garbage.status_code == 400
    for trick in ("..%2F..%2Fescape.wl", ".hidden.wl", "name.txt"):
        assert _write("PUT", f"{base}/{trick}", _entry_json("HTTPBAD2")).status_code == 404
    assert _write("POST", web.base + "/aets/NOSUCH/entries", _entry_json("X")).status_code \
        == 404
    assert sorted(p.name for p in (web.root / "US01").iterdir()) == before


def test_the_served_openapi_description_lists_every_route(web: Web) -> None:
    served = web.get("/openapi.json").json()
    assert served == json.loads((Path(__file__).resolve().parents[2] / "wlmd" / "web"
                                 / "openapi.json").read_text())
    documented = {(path, method.upper()) for path, item in served["paths"].items()
                  for method in item}
    context = WebContext(service=web_service(Settings(port=0, data_files_path=web.root)),
                         data_path=web.root, ready=lambda: (True, "ready"))
    starlette = create_app(context, GuardSettings()).app
    routed = {(route.path, method) for route in starlette.routes
              for method in route.methods - {"HEAD"}}
    assert documented == routed


def test_wlmctl_http_token_line_admits_its_token(tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-m", "wlmd.wlmctl", "http-token", "ris", "write"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    token = made[0].removeprefix("token: ")
    (tmp_path / "tokens").write_text(made[1].removeprefix("line for the http_tokens file: ")
                                     + "\n")
    assert token not in (tmp_path / "tokens").read_text()
    principal = TokenStore.load(tmp_path / "tokens").authenticate(token)
    assert principal is not None and (principal.name, principal.scope) == ("ris", "write")
    refused = subprocess.run([sys.executable, "-m", "wlmd.wlmctl", "http-token", "r#s", "read"],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "one word" in refused.stderr
