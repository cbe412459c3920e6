"""The HTTP service as wlmd runs it: a supervised child on ``--http-listen``.

A real ``python -m wlmd`` with ``--http-listen`` on loopback; the peers are pynetdicom (C-FIND),
httpx and prometheus_client's own parser for ``/metrics``. Covers what the in-thread tests of
the application cannot: the child's life (respawn, reload, stop), counting by the supervisor
(including associations of workers that exited), readiness and the single-process mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom import Dataset
from pydicom.uid import generate_uid

from tests.support.mpps import (
    create_attributes,
    final_modifications,
    n_create,
    n_set,
    worklist_status,
    write_entry,
)
from tests.support.processes import free_port, wait_until
from tests.support.server import Wlmd, alive, associate, find

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "worklists"
TOKEN = "metrics-reader-token"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Wlmd, str]]:
    root = tmp_path / "worklists"
    shutil.copytree(EXAMPLES, root)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"prom read sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    http_port = free_port()
    server = Wlmd(tmp_path, ["-dfp", str(root), "--http-listen", f"127.0.0.1:{http_port}",
                             "--http-tokens", str(tokens), "--worker-max-uses", "1"])
    base = f"http://127.0.0.1:{http_port}"
    wait_until(lambda: _ok(base + "/healthz"), what="HTTP child answering")
    yield server, base
    server.stop()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                     timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _metrics_at(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return _metrics(url.removesuffix("/metrics"))


def _http_child(server: Wlmd, port: int) -> psutil.Process:
    for child in server.children():
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
               for c in child.net_connections(kind="tcp")):
            return child
    raise AssertionError("no child listens on the HTTP port")


def test_metrics_count_every_association_even_of_exited_workers(
        served: tuple[Wlmd, str]) -> None:
    server, base = served
    for _ in range(3):  # --worker-max-uses 1: each association's worker exits after it
        assoc = associate(server.port, "CT01", calling="METRICS")
        matches, status = find(assoc, PatientName="*")
        assert status == 0x0000 and matches
        assoc.release()
    wait_until(lambda: _metrics(base).get(
        ("wlmd_associations_total", (("called_ae", "CT01"), ("calling_ae", "METRICS"),
                                      ("outcome", "released")))) == 3, what="3 counted")
    samples = _metrics(base)
    assert samples[("wlmd_cfind_queries_total", (("called_ae", "CT01"),))] == 3
    assert samples[("wlmd_cfind_matches_total", (("called_ae", "CT01"),))] == 3 * len(matches)
    assert samples[("wlmd_cfind_duration_seconds_count", (("called_ae", "CT01"),))] == 3
    assert samples[("wlmd_worker_exits_total", (("reason", "recycled"),))] >= 3
    assert samples[("wlmd_worklist_file_problems_total", ())] == 0
    page = httpx.get(base + "/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert ("<tr><td>CT01</td><td>METRICS</td><td>released</td><td>3</td></tr>"
            in page.text)  # the status page counts from the same metrics
    broken = server.log_path.parent / "worklists" / "CT01" / "broken.wl"
    broken.write_bytes(b"not a worklist file")
    assoc = associate(server.port, "CT01", calling="METRICS")
    find(assoc, PatientName="*")
    assoc.release()
    wait_until(lambda: _metrics(base).get(("wlmd_worklist_file_problems_total", ())) == 1,
               what="the broken file counted once")
    assert httpx.get(base + "/metrics", timeout=5).status_code == 401
    after = _metrics(base)
    assert after[("wlmd_http_requests_total", (("method", "GET"), ("status", "401")))] >= 1
    assert after[("wlmd_http_requests_total", (("method", "GET"), ("status", "200")))] >= 1


def test_readiness_follows_the_pool(served: tuple[Wlmd, str]) -> None:
    _server, base = served
    wait_until(lambda: httpx.get(base + "/readyz", timeout=5).status_code == 200,
               what="ready")
    assert httpx.get(base + "/readyz", timeout=5).text == "ready\n"


def test_http_children_run_below_the_dicom_port(served: tuple[Wlmd, str]) -> None:
    server, base = served
    supervisor = psutil.Process(server.proc.pid)
    child = _http_child(server, int(base.rsplit(":", 1)[1]))
    assert child.nice() == min(supervisor.nice() + 10, 19)


def test_the_child_is_respawned_recycled_on_reload_and_stopped(
        served: tuple[Wlmd, str]) -> None:
    server, base = served
    port = int(base.rsplit(":", 1)[1])
    first = _http_child(server, port)
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: not alive(first), what="killed child gone")
    wait_until(lambda: _ok(base + "/healthz"), timeout=15, what="respawned child answering")
    second = _http_child(server, port)
    assert second.pid != first.pid
    assert server.count("http child") >= 2
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: not alive(second), what="old child recycled on reload")
    wait_until(lambda: _ok(base + "/healthz"), timeout=15, what="new child answering")
    assert _http_child(server, port).pid not in (first.pid, second.pid)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    assert not _ok(base + "/healthz")


def _http_children(server: Wlmd, port: int) -> list[psutil.Process]:
    return [child for child in server.children()
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                   for c in child.net_connections(kind="tcp"))]


def _serving(children: list[psutil.Process], port: int) -> set[int]:
    """The children holding an established connection on the HTTP port."""
    return {child.pid for child in children if alive(child)
            and any(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
                    for c in child.net_connections(kind="tcp"))}


def test_two_http_children_both_answer_and_one_killed_leaves_the_port_serving(
        tmp_path: Path) -> None:
    root = tmp_path / "worklists"
    shutil.copytree(EXAMPLES, root)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"prom read sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    search = base + "/aets/CT01/rs/modality-scheduled-procedure-steps"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    server = Wlmd(tmp_path, ["-dfp", str(root), "--http-listen", f"127.0.0.1:{port}",
                             "--http-tokens", str(tokens), "--http-workers", "2"])
    clients: list[httpx.Client] = []
    try:
        wait_until(lambda: len(_http_children(server, port)) == 2, what="two HTTP children")
        children = _http_children(server, port)
        answered = 0
        while len(clients) < 64 and _serving(children, port) != {c.pid for c in children}:
            client = httpx.Client(headers=headers, timeout=10)  # its own keep-alive connection
            clients.append(client)
            for _ in range(5):
                response = client.get(search)
                assert response.status_code == 200 and response.json()
                answered += 1
        assert _serving(children, port) == {c.pid for c in children}, "one child never answered"
        killed, survivor = children
        os.kill(killed.pid, signal.SIGKILL)
        wait_until(lambda: not alive(killed), what="killed child gone")
        for _ in range(10):  # new connections, while the supervisor starts a replacement
            response = httpx.get(search, headers=headers, timeout=10)
            assert response.status_code == 200 and response.json()
            answered += 1
        assert alive(survivor)
        wait_until(lambda: len(_http_children(server, port)) == 2, timeout=15,
                   what="the killed child replaced")
        assert killed.pid not in {c.pid for c in _http_children(server, port)}
        counted = _metrics(base)[("wlmd_http_requests_total",
                                  (("method", "GET"), ("status", "200")))]
        assert counted >= answered  # the killed child's requests are still counted
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_single_process_mode_serves_http_in_a_thread(tmp_path: Path) -> None:
    root = tmp_path / "worklists"
    shutil.copytree(EXAMPLES, root)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"prom read sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    http_port = free_port()
    server = Wlmd(tmp_path, ["--single-process", "-dfp", str(root), "--http-listen",
                             f"127.0.0.1:{http_port}", "--http-tokens", str(tokens)])
    try:
        base = f"http://127.0.0.1:{http_port}"
        wait_until(lambda: _ok(base + "/healthz"), what="HTTP thread answering")
        found = httpx.get(base + "/aets/CT01/rs/modality-scheduled-procedure-steps",
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert found.status_code == 200 and found.json()
        assert httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=10).status_code == 404
    finally:
        server.stop()


@pytest.fixture
def with_mpps(tmp_path: Path) -> Iterator[tuple[Wlmd, str, Path]]:
    root = tmp_path / "worklists"
    (root / "CT01").mkdir(parents=True)
    (root / "CT01" / "lockfile").touch()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ris write sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    http_port = free_port()
    server = Wlmd(tmp_path, ["-dfp", str(root), "--mpps", "--mpps-path", str(tmp_path / "mpps"),
                             "--http-listen", f"127.0.0.1:{http_port}",
                             "--http-tokens", str(tokens)])
    base = f"http://127.0.0.1:{http_port}/aets/CT01/rs/modality-performed-procedure-steps"
    wait_until(lambda: _ok(f"http://127.0.0.1:{http_port}/healthz"), what="HTTP child")
    yield server, base, root / "CT01"
    server.stop()


def _post(url: str, dataset: Dataset) -> httpx.Response:
    return httpx.post(url, content=json.dumps(dataset.to_json_dict()).encode(), timeout=30,
                      headers={"Authorization": f"Bearer {TOKEN}",
                               "Content-Type": "application/dicom+json"})


def _get(url: str) -> httpx.Response:
    return httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)


def test_a_step_created_over_http_completes_over_dimse(
        with_mpps: tuple[Wlmd, str, Path]) -> None:
    server, base, directory = with_mpps
    study = generate_uid()
    write_entry(directory, "WEBMPPS1", study)
    uid = generate_uid()
    assert _post(f"{base}/{uid}", create_attributes("WEBMPPS1", study)).status_code == 201
    assert worklist_status(server.port, "CT01", "WEBMPPS1") == ["STARTED"]
    assert n_set(server.port, "CT01", uid, final_modifications()).Status == 0x0000
    metrics = base.split("/aets/")[0] + "/metrics"
    wait_until(lambda: (("wlmd_mpps_total", (("called_ae", "CT01"), ("operation", "N-SET"),
                                              ("status", "0x0000"))) in _metrics_at(metrics)),
               what="the N-SET counted")
    retrieved = Dataset.from_json(_get(f"{base}/{uid}").json())
    assert retrieved.PerformedProcedureStepStatus == "COMPLETED"
    assert worklist_status(server.port, "CT01", "WEBMPPS1") == ["COMPLETED"]
    final = _post(f"{base}/{uid}", final_modifications("DISCONTINUED"))
    assert final.status_code == 409
    assert final.json()["status"] == "0x0110"


def test_a_step_created_over_dimse_completes_over_http(
        with_mpps: tuple[Wlmd, str, Path]) -> None:
    server, base, directory = with_mpps
    study = generate_uid()
    write_entry(directory, "WEBMPPS2", study)
    uid = generate_uid()
    assert n_create(server.port, "CT01", uid, create_attributes("WEBMPPS2", study)).Status \
        == 0x0000
    assert _post(f"{base}/{uid}", final_modifications()).status_code == 200
    assert worklist_status(server.port, "CT01", "WEBMPPS2") == ["COMPLETED"]


def test_bad_steps_get_the_standard_refusals_over_http(
        with_mpps: tuple[Wlmd, str, Path]) -> None:
    _server, base, _directory = with_mpps
    incomplete = create_attributes("WEBMPPS3", generate_uid())
    del incomplete.PerformedProcedureStepStartDate
    refused = _post(f"{base}/{generate_uid()}", incomplete)
    assert refused.status_code == 400
    assert refused.json()["status"] == "0x0120"
    assert "00400244" in refused.json()["attributes"]
    assert _post(f"{base}/1.2.3.abc", create_attributes("X", generate_uid())).status_code \
        == 400
    assert _get(f"{base}/{generate_uid()}").status_code == 404
    assert _get(f"{base}/..%2F..%2Fetc").status_code == 404
    garbage = httpx.post(f"{base}/{generate_uid()}", content=b"[1,2", timeout=10,
                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert garbage.status_code == 400
