"""Issue #6 item 3: worklist file faults against a running wlmd (fork mode, unprivileged).

Each test owns one called-AE directory of a shared server. What must hold whatever the files
do: the good entries keep being served, each problem is logged once per file version, and no
worklist file is ever written, moved or deleted by the server (fingerprints before and after).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import (
    STATUS_OUT_OF_RESOURCES,
    Wlmd,
    associate,
    example_files,
    find,
    fingerprint,
    make_ae_dir,
    patient_ids,
    public_directory,
    unprivileged_args,
    wait_until,
    worklist_bytes,
)
from tests.support.wire import request_association

LOCK_WAIT = 10.0  # wlmd.worklist.store.DEFAULT_LOCK_WAIT: a writer is held longer than this
HUGE_BYTES = 20 << 20
CHURN_OPERATIONS = 1000
CHURN_QUERIES = 60


class Site:
    """The shared server and its ``-dfp`` root."""

    def __init__(self, root: Path, server: Wlmd) -> None:
        self.root = root
        self.dfp = root / "db"
        self.server = server
        self.stable_before = fingerprint(self.dfp / "STABLE")

    def tree(self) -> dict[str, tuple[object, ...]]:
        """Fingerprint of everything under the root but the server's log."""
        return {k: v for k, v in fingerprint(self.root).items() if not k.startswith("logs")}

    def warnings_about(self, path: Path) -> int:
        """Warning lines naming ``path`` (quoted, as the store logs it)."""
        return sum(1 for line in self.server.log().splitlines()
                   if line.startswith("W:") and f'{path}"' in line)

    def assert_alive(self) -> None:
        assert self.server.proc.poll() is None, "the supervisor exited"
        assert "during its association" not in self.server.log(), "a worker died"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with public_directory() as root:
        dfp = root / "db"
        dfp.mkdir()
        make_ae_dir(dfp, "STABLE", {"stable.wl": worklist_bytes("STABLE-1")})
        logs = root / "logs"
        logs.mkdir()
        server = Wlmd(logs, ["-dfp", str(dfp), *unprivileged_args()])
        try:
            yield Site(root, server)
        finally:
            server.stop()


def templates() -> list[Path]:
    return example_files()


def test_bad_files_are_logged_once_per_version_and_the_rest_is_served(site: Site) -> None:
    good = {f"good{i}.wl": worklist_bytes(f"GOOD-{i}", t) for i, t in enumerate(templates()[:3])}
    complete = worklist_bytes("NOT-SERVED")
    ae_dir = make_ae_dir(site.dfp, "FAULTS", {
        **good,
        "truncated.wl": complete[:len(complete) // 2],
        "empty.wl": b"",
        "text.wl": b"this is not a DICOM file\n" * 40,
        "noperm.wl": complete,
        "notes.txt": worklist_bytes("NOT-A-WL-NAME"),
    })
    with (ae_dir / "huge.wl").open("wb") as huge:
        huge.write(complete)
        huge.truncate(HUGE_BYTES)
    (ae_dir / "noperm.wl").chmod(0)
    os.mkfifo(ae_dir / "fifo.wl")
    (ae_dir / "dir.wl").mkdir()
    outside = site.root / "outside.wl"
    outside.write_bytes(worklist_bytes("OUTSIDE"))
    (ae_dir / "outside.wl").symlink_to(outside)
    (ae_dir / "dangling.wl").symlink_to(site.root / "missing.wl")
    bad = ["truncated", "empty", "text", "huge", "noperm", "fifo", "dir", "outside", "dangling"]
    before = site.tree()

    assoc = associate(site.server.port, "FAULTS")
    for _ in range(5):
        matches, final = find(assoc)
        assert final == 0x0000
        assert patient_ids(matches) == ["GOOD-0", "GOOD-1", "GOOD-2"]
    for name in bad:
        assert site.warnings_about(ae_dir / f"{name}.wl") == 1, name
    for name in good:
        assert site.warnings_about(ae_dir / name) == 0, name
    assert site.tree() == before

    # a new version of a bad file is judged (and logged) again; a repaired one is served
    (ae_dir / "truncated.wl").write_bytes(complete[:len(complete) // 3])
    (ae_dir / "empty.wl").write_bytes(worklist_bytes("REPAIRED"))
    changed = site.tree()
    for _ in range(3):
        matches, final = find(assoc)
        assert final == 0x0000
        assert patient_ids(matches) == ["GOOD-0", "GOOD-1", "GOOD-2", "REPAIRED"]
    assoc.release()
    assert site.warnings_about(ae_dir / "truncated.wl") == 2
    assert site.warnings_about(ae_dir / "empty.wl") == 1
    assert site.tree() == changed
    site.assert_alive()


def test_a_bad_file_is_logged_once_across_workers(site: Site) -> None:
    ae_dir = make_ae_dir(site.dfp, "XWORKER", {"good.wl": worklist_bytes("XW-GOOD"),
                                               "bad.wl": b"not DICOM at all"})
    first, second = associate(site.server.port, "XWORKER"), associate(site.server.port,
                                                                      "XWORKER")
    for assoc in (first, second):  # both open at once: two different workers serve them
        matches, final = find(assoc)
        assert (patient_ids(matches), final) == (["XW-GOOD"], 0x0000)
    first.release()
    second.release()
    assert site.warnings_about(ae_dir / "bad.wl") == 1


def _churn(path: Path, stop: threading.Event, versions: list[str]) -> None:
    """Replace, delete and rewrite in place, in turn, until told to stop (bounded)."""
    for i in range(CHURN_OPERATIONS):
        if stop.is_set():
            return
        data = worklist_bytes(f"CHURN-{i}")
        if i % 3 == 0:
            versions.append(f"CHURN-{i}")
            tmp = path.with_name(".churn.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        elif i % 3 == 1:
            path.unlink(missing_ok=True)
        else:  # a careless writer: the file is visibly partial for a moment
            versions.append(f"CHURN-{i}")
            with path.open("wb") as f:
                f.write(data[:len(data) // 2])
                f.flush()
                time.sleep(0.003)
                f.write(data[len(data) // 2:])
        time.sleep(0.004)


def test_files_replaced_or_deleted_while_queried_never_give_a_broken_answer(site: Site) -> None:
    ae_dir = make_ae_dir(site.dfp, "CHURN", {"a.wl": worklist_bytes("STEADY-A"),
                                             "b.wl": worklist_bytes("STEADY-B")})
    churned = ae_dir / "churn.wl"
    steady = ["STEADY-A", "STEADY-B"]
    before = fingerprint(ae_dir)
    associations = [associate(site.server.port, "CHURN") for _ in range(2)]
    stop, versions = threading.Event(), []
    writer = threading.Thread(target=_churn, args=(churned, stop, versions))
    writer.start()
    queries, seen = 0, set()
    try:
        while writer.is_alive() and queries < CHURN_QUERIES:
            matches, final = find(associations[queries % 2])
            queries += 1
            ids = patient_ids(matches)
            assert final == 0x0000
            assert [i for i in ids if i in steady] == steady
            extra = [i for i in ids if i not in steady]
            assert len(extra) <= 1 and set(extra) <= set(versions), ids
            seen.update(extra)
    finally:
        stop.set()
        writer.join(30)
    churned.write_bytes(worklist_bytes("CHURN-FINAL"))
    for assoc in associations:
        matches, final = find(assoc)
        assert (patient_ids(matches), final) == (["CHURN-FINAL", *steady], 0x0000)
        assoc.release()
    print(f"churn: {len(versions)} versions written, {queries} queries, "
          f"{len(seen)} versions served, "
          f"{site.warnings_about(churned)} warnings about partial versions")
    assert queries == CHURN_QUERIES and len(seen) >= 2
    assert site.warnings_about(ae_dir / "a.wl") == site.warnings_about(ae_dir / "b.wl") == 0
    after = fingerprint(ae_dir)
    assert {k: v for k, v in after.items() if k != "churn.wl"} == before
    site.assert_alive()


def test_a_directory_that_disappears_and_comes_back(site: Site) -> None:
    files = {f"v{i}.wl": worklist_bytes(f"VANISH-{i}", t) for i, t in enumerate(templates()[:2])}
    ae_dir = make_ae_dir(site.dfp, "VANISH", files)
    expected = ["VANISH-0", "VANISH-1"]
    before = fingerprint(site.dfp)
    held, stable = associate(site.server.port, "VANISH"), associate(site.server.port, "STABLE")
    matches, final = find(held)
    assert (patient_ids(matches), final) == (expected, 0x0000)

    away = site.dfp / ".VANISH.away"
    ae_dir.rename(away)
    assert find(held)[1] == STATUS_OUT_OF_RESOURCES
    assert request_association("127.0.0.1", site.server.port, "VANISH").reason == (1, 1, 7)
    assert patient_ids(find(stable)[0]) == ["STABLE-1"]

    away.rename(ae_dir)
    matches, final = find(held)
    assert (patient_ids(matches), final) == (expected, 0x0000)
    fresh = associate(site.server.port, "VANISH")
    assert patient_ids(find(fresh)[0]) == expected
    for assoc in (held, stable, fresh):
        assoc.release()
    assert fingerprint(site.dfp) == before
    site.assert_alive()


def _hold_write_lock(lockfile: Path, seconds: float) -> subprocess.Popen:
    """A writer process holding an fcntl write lock on ``lockfile`` for ``seconds``."""
    code = ("import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'r+b')\n"
            "fcntl.lockf(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\n")
    writer = subprocess.Popen([sys.executable, "-c", code, str(lockfile), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline() == "locked\n"
    return writer


def test_a_writer_holding_the_lock_longer_than_the_wait_leaves_the_snapshot_served(
        site: Site) -> None:
    ae_dir = make_ae_dir(site.dfp, "LOCKED", {"one.wl": worklist_bytes("LOCKED-1"),
                                              "two.wl": worklist_bytes("LOCKED-2")})
    assoc = associate(site.server.port, "LOCKED")
    assert patient_ids(find(assoc)[0]) == ["LOCKED-1", "LOCKED-2"]  # the snapshot

    writer = _hold_write_lock(ae_dir / "lockfile", LOCK_WAIT + 1.5)
    try:
        (ae_dir / "three.wl").write_bytes(worklist_bytes("LOCKED-3"))  # under the lock
        started, slowest, answers = time.monotonic(), 0.0, 0
        while writer.poll() is None and answers < 100:
            asked = time.monotonic()
            matches, final = find(assoc)
            slowest = max(slowest, time.monotonic() - asked)
            answers += 1
            if writer.poll() is None:  # still locked when the answer came
                assert (patient_ids(matches), final) == (["LOCKED-1", "LOCKED-2"], 0x0000)
            time.sleep(0.5)
        held = time.monotonic() - started
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()  # type: ignore[union-attr]
    print(f"lock held {held:.1f}s: {answers} answers from the snapshot, slowest {slowest:.3f}s")
    assert held > LOCK_WAIT and answers >= 10 and slowest < 1.0
    assert site.server.count(f"{ae_dir}/lockfile is write-locked") == 1
    wait_until(lambda: len(find(assoc)[0]) == 3, timeout=5, what="new file after unlock")
    assert patient_ids(find(assoc)[0]) == ["LOCKED-1", "LOCKED-2", "LOCKED-3"]
    assoc.release()
    site.assert_alive()


def test_the_directory_queried_alongside_all_others_is_unchanged(site: Site) -> None:
    assoc = associate(site.server.port, "STABLE")
    assert patient_ids(find(assoc)[0]) == ["STABLE-1"]
    assoc.release()
    assert fingerprint(site.dfp / "STABLE") == site.stable_before
    site.assert_alive()
