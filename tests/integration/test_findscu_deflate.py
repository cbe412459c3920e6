"""findscu ``-xd +cl``: the identifier on the wire is deflated at the level asked for."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from pydicom import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind

from tests.support.processes import free_port

HOST = "127.0.0.1"
NAME = "A" * 64  # stored as is at level 0, a few bytes at any other level


class DeflateScp:
    """A worklist SCP that accepts only deflated identifiers and keeps what it received."""

    def __init__(self) -> None:
        self.pdus: list[bytes] = []
        self.names: list[str] = []
        ae = AE(ae_title="DEFLATE")
        ae.add_supported_context(ModalityWorklistInformationFind, DeflatedExplicitVRLittleEndian)
        self.port = free_port()
        self.server = ae.start_server((HOST, self.port), block=False, evt_handlers=[
            (evt.EVT_DATA_RECV, self._on_data), (evt.EVT_C_FIND, self._on_find)])

    def _on_data(self, event: evt.Event) -> None:
        self.pdus.append(bytes(event.data))  # type: ignore[attr-defined]

    def _on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        self.names.append(str(event.identifier.PatientName))  # type: ignore[attr-defined]
        yield 0x0000, None

    def query(self, *args: str) -> bytes:
        """Run our findscu with ``args``; the P-DATA bytes it sent."""
        self.pdus.clear()
        result = subprocess.run([sys.executable, "-m", "wlmd.findscu", "-xd", *args, HOST,
                                 str(self.port), "-k", f"PatientName={NAME}"],
                                capture_output=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert self.names.pop() == NAME  # the SCP inflated it: a valid deflate stream
        return b"".join(pdu for pdu in self.pdus if pdu[:1] == b"\x04")


@pytest.fixture(scope="module")
def scp() -> Iterator[DeflateScp]:
    server = DeflateScp()
    yield server
    server.server.shutdown()


def test_level_zero_sends_the_identifier_stored(scp: DeflateScp) -> None:
    assert NAME.encode() in scp.query("+cl", "0")


def test_higher_levels_compress(scp: DeflateScp) -> None:
    stored, default, best = scp.query("+cl", "0"), scp.query(), scp.query("+cl", "9")
    assert NAME.encode() not in default and NAME.encode() not in best
    assert len(best) <= len(default) < len(stored)
