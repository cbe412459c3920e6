"""The one server harness of the tests: a real ``python -m wlmd`` process with its log, its
workers and (optionally) a config file re-read on SIGHUP; a pynetdicom client; worklist files;
and a fingerprint of the worklist tree to prove nothing was touched."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from io import BytesIO
from pathlib import Path

import psutil
from pydicom import Dataset, dcmread
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification

from tests.support.processes import free_port, start_wlmd, stop_process, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "worklists"
HEARTBEAT = "/memfd:wlmd-heartbeat"  # only pre-forked workers hold one (wlmd/daemon/pool.py)
STATUS_OUT_OF_RESOURCES = 0xA700
ANY_AE = "ANYSCP"  # the one called AE directory of start_configured()
# A small pool with short timeouts: process-management tests reach every limit quickly.
SMALL_POOL = {"max_associations": 2, "min_spare_workers": 1, "max_spare_workers": 2,
              "worker_timeout": 5, "graceful_timeout": 10, "acse_timeout": 5}


class Wlmd:
    """One ``python -m wlmd`` (fork mode unless asked) started by a test, logging to a file."""

    def __init__(self, workdir: Path, args: Sequence[str], *, host: str = "127.0.0.1",
                 port: int | None = None, verbose: bool = True,
                 config_path: Path | None = None) -> None:
        self.host = host
        self.config_path = config_path
        self.port = port or free_port(host)
        self.log_path = workdir / f"wlmd-{self.port}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = start_wlmd([*(["-v"] if verbose else []), *args], self.port, host,
                               stderr=self._log)
        if verbose:  # the readiness probe holds a worker until it reports: let it go first
            wait_until(lambda: "outcome=closed" in self.log(), what="probe association")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def count(self, text: str) -> int:
        """Log lines containing ``text``."""
        return sum(1 for line in self.log().splitlines() if text in line)

    def workers(self) -> list[int]:
        """PIDs of the live pre-forked workers (the children holding a heartbeat file)."""
        return worker_pids(self.pid)

    def children(self) -> list[psutil.Process]:
        """Live children; one that exits while being looked at is not one."""
        return [p for p in psutil.Process(self.pid).children() if alive(p)]

    def worker_serving(self, assoc: Association) -> psutil.Process:
        """The worker whose TCP connection has the client's local port."""
        local_port = assoc.dul.socket.socket.getsockname()[1]
        for worker in self.children():
            if any(c.raddr and c.raddr.port == local_port
                   for c in worker.net_connections(kind="tcp")):
                return worker
        raise AssertionError(f"no worker serves client port {local_port}")

    def reconfigure(self, text: str) -> None:
        """Rewrite the config file and make the supervisor re-read it (SIGHUP)."""
        assert self.config_path is not None, "started without --config"
        self.config_path.write_text(text)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


def start_configured(workdir: Path, options: dict[str, object], host: str = "127.0.0.1"
                     ) -> Wlmd:
    """A verbose wlmd whose settings come from a TOML config file (so SIGHUP can change them),
    serving ``workdir/db`` with one empty called AE directory, ANY_AE."""
    (workdir / "db" / ANY_AE).mkdir(parents=True, exist_ok=True)
    config_path = workdir / "wlmd.toml"
    config_path.write_text(toml(options))
    return Wlmd(workdir, ["--config", str(config_path), "-dfp", str(workdir / "db")],
                host=host, config_path=config_path)


def toml(options: dict[str, object]) -> str:
    """A flat TOML document of ``options`` (strings, numbers and booleans)."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in options.items())


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def worker_pids(supervisor: int) -> list[int]:
    """Live children of ``supervisor`` holding a worker heartbeat file."""
    pids = []
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(supervisor).children():
            with contextlib.suppress(psutil.Error, OSError):
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                fds = os.listdir(f"/proc/{child.pid}/fd")
                if any(_link(child.pid, fd).startswith(HEARTBEAT) for fd in fds):
                    pids.append(child.pid)
    return pids


def _link(pid: int, fd: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return ""


def process_ids(pid: int) -> dict[str, list[int]]:
    """Uid, Gid and Groups lines of /proc/PID/status as integer lists."""
    fields: dict[str, list[int]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            fields[key] = [int(v) for v in value.split()]
        elif key == "CapEff":
            fields[key] = [int(value.strip(), 16)]
    return fields


# ---- client --------------------------------------------------------------------------------

def associate(port: int, called: str, host: str = "127.0.0.1",
              calling: str = "CHAOSSCU") -> Association:
    """A pynetdicom association proposing MWL FIND and Verification."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae.associate(host, port, ae_title=called)


def rejection(ae: AE, port: int, called: str, host: str = "127.0.0.1",
              source: str | None = None) -> tuple[int, int, int] | None:
    """Ask ``ae`` for an association: (result, source, reason) of the A-ASSOCIATE-RJ it got,
    or None when it was accepted (and then released).

    Read from the PDU as pynetdicom receives it, not from ``Association.is_rejected``: when the
    rejection and the server's close arrive before pynetdicom's requesting thread looks at its
    socket, pynetdicom reports an abort although it received the rejection.
    """
    seen: list[tuple[int, int, int]] = []

    def on_pdu(event: evt.Event) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            seen.append((event.pdu.result, event.pdu.source, event.pdu.reason_diagnostic))

    assoc = ae.associate(host, port, ae_title=called, bind_address=(source, 0) if source else None,
                         evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)])
    if assoc.is_established:
        assoc.release()
    return seen[0] if seen else None


def find(assoc: Association, **keys: object) -> tuple[list[Dataset], int]:
    """C-FIND with the given keys (plus empty Patient ID and Name): (matches, final status)."""
    query = Dataset()
    query.PatientName = ""
    query.PatientID = ""
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    matches, final = [], -1
    for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
        if status is None:
            raise AssertionError("no C-FIND response (association lost)")
        if status.Status in (0xFF00, 0xFF01):
            matches.append(identifier)
        else:
            final = status.Status
    return matches, final


def patient_ids(matches: Sequence[Dataset]) -> list[str]:
    return sorted(str(m.PatientID) for m in matches)


# ---- worklist files ------------------------------------------------------------------------

def example_files(ae: str = "CT01") -> list[Path]:
    return sorted((EXAMPLES / ae).glob("*.wl"))


def worklist_bytes(patient_id: str, template: Path | None = None) -> bytes:
    """A complete worklist file (an example's) whose Patient ID is ``patient_id``."""
    dataset = dcmread(template or example_files()[0], force=True)
    dataset.PatientID = patient_id
    out = BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def make_ae_dir(root: Path, ae: str, files: dict[str, bytes]) -> Path:
    """``root/ae`` with a lockfile (openable by the server's user) and the given files."""
    ae_dir = root / ae
    ae_dir.mkdir(parents=True)
    lockfile = ae_dir / "lockfile"
    lockfile.write_bytes(b"")
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(lockfile, nobody.pw_uid, nobody.pw_gid)
    for name, data in files.items():
        write_atomically(ae_dir / name, data)
    return ae_dir


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file the way careful worklist writers do: a hidden temporary, then rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def fingerprint(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: kind plus content hash, size, mtime, inode and mode.

    Symbolic links are recorded, not followed; FIFOs are not opened.
    """
    prints: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            key = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                prints[key] = ("link", os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                prints[key] = ("file", _sha256(path), st.st_size, st.st_mtime_ns, st.st_ino,
                               st.st_mode)
            else:
                prints[key] = ("other", stat.S_IFMT(st.st_mode), st.st_mtime_ns, st.st_ino)
    return prints


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def public_directory() -> Iterator[Path]:
    """A temporary directory the unprivileged server user can traverse (pytest's is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="wlmd-chaos-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(dirpath, name), 0o755)
        shutil.rmtree(path, ignore_errors=True)


def unprivileged_args() -> list[str]:
    """``--user nobody --group nogroup`` when the tests run as root, else nothing."""
    return ["--user", "nobody", "--group", "nogroup"] if os.geteuid() == 0 else []
