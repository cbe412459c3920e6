"""The README's wlmctl walk-through, run line by line as it stands: DCMTK's findscu sees the
entry ``wlmctl add`` wrote, from wlmd and from DCMTK's wlmscpfs on the same directory; explain,
lint and expire say and do what the README says."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import (
    dcmtk_tool,
    free_port,
    require_dcmtk,
    start_wlmd,
    start_wlmscpfs,
    stop_process,
)

pytestmark = pytest.mark.interop

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- walkthrough:"


def walkthrough() -> list[str]:
    """The commands of the README block after the walk-through marker, continuations joined."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index(MARKER):].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def without_comment(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def test_readme_walkthrough_with_dcmtk_findscu_against_wlmd_and_wlmscpfs(
        tmp_path: Path) -> None:
    require_dcmtk("wlmscpfs", "findscu")
    config = tmp_path / "empty.conf"
    config.touch()
    ports = {"11112": str(free_port()), "11113": str(free_port())}
    servers: list[subprocess.Popen] = []
    outputs: dict[str, list[subprocess.CompletedProcess[str]]] = {}
    try:
        for line in walkthrough():
            words = [ports.get(word, word) for word in without_comment(line)]
            program, args = words[0], words[1:]
            if args and args[-1] == "&":
                args = args[:-1]
            if program == "wlmd":
                port = int(args.pop())
                assert args[:2] == ["--listen-address", "127.0.0.1"]
                servers.append(start_wlmd(args[2:], port, cwd=tmp_path))
                continue
            if program == "wlmscpfs":
                port = int(args.pop())
                servers.append(start_wlmscpfs(args, port, cwd=tmp_path))
                continue
            if program not in ("wlmctl", "findscu"):  # mkdir, printf: plain shell lines
                subprocess.run(line, shell=True, cwd=tmp_path, check=True, timeout=60)
                continue
            command = {
                "wlmctl": [sys.executable, "-m", "wlmd.wlmctl", "--config", str(config)],
                "findscu": [dcmtk_tool("findscu")],
            }[program]
            result = subprocess.run([*command, *args], cwd=tmp_path, capture_output=True,
                                    text=True, timeout=60, check=False)
            key = program if program != "wlmctl" else f"wlmctl {args[2]}"
            outputs.setdefault(key, []).append(result)
    finally:
        for server in servers:
            stop_process(server)
    assert len(servers) == 2
    assert all(r.returncode == 0 for r in outputs["wlmctl add"])
    assert "DOE^JOHN" in outputs["wlmctl list"][0].stdout
    for answer in outputs["findscu"]:  # wlmd, then wlmscpfs
        assert answer.returncode == 0, answer.stderr
        assert re.search(r"\(0010,0010\) PN \[DOE\^JOHN\]", answer.stderr)
        assert re.search(r"\(0008,0050\) SH \[A1\]", answer.stderr)
        assert answer.stderr.count("Find Response: 1 (Pending)") == 1
    explained = outputs["wlmctl explain"][0].stdout
    assert re.search(r"A1_\w+\.wl: excluded: ScheduledProcedureStepStartDate '20240305' "
                     r"does not match '20240306'", explained)
    lint = outputs["wlmctl lint"][0]
    assert lint.returncode == 1
    assert lint.stdout.startswith("wl/CT01/broken.wl: -: unreadable, wlmd skips it")
    dry, real = outputs["wlmctl expire"]
    assert "would expire CT01/A1_" in dry.stdout and real.returncode == 0
    assert [p.name for p in (tmp_path / "wl" / "CT01").iterdir()] == ["lockfile"]
    assert len(list((tmp_path / "archive" / "CT01").glob("A1_*.wl"))) == 1
