"""``make soak``: the long chaos run of issue #6 item 4 (2,000 attempts at 200 concurrent with
``--max-associations 50``, workers killed and stopped throughout), plus the dependency audit.

Prints the figures for docs/reliability.md as JSON and exits 1 if an association was lost
outside a killed worker, an answer was wrong, or a worklist file changed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata

from tests.chaos import flood
from tests.support.server import (
    Wlmd,
    example_files,
    fingerprint,
    make_ae_dir,
    public_directory,
    worklist_bytes,
)

ENTRIES = 5
DEPENDENCIES = ("pydicom", "pynetdicom", "psutil", "netaddr", "python-daemon", "lockfile")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__)
    parser.add_argument("--attempts", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--max-associations", type=int, default=50)
    parser.add_argument("--kills", type=int, default=10, help="kill -9 of random workers")
    parser.add_argument("--stops", type=int, default=5, help="SIGSTOP of random workers")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between signals")
    parser.add_argument("--hold", type=float, default=0.05, help="mean seconds a client holds")
    parser.add_argument("--seed", type=int, default=6)
    return parser.parse_args(argv)


def soak_flood(args: argparse.Namespace) -> tuple[dict[str, object], bool]:
    """One flood against a fresh server; (figures, every invariant held)."""
    with public_directory() as root:
        dfp = root / "db"
        make_ae_dir(dfp, "LOAD", {f"e{i}.wl": worklist_bytes(f"LOAD-{i}", t)
                                  for i, t in enumerate(example_files()[:ENTRIES])})
        before = fingerprint(dfp)
        logs = root / "logs"
        logs.mkdir()
        server = Wlmd(logs, flood.server_args(dfp, args.max_associations))
        try:
            report = flood.run_flood(server, "LOAD", attempts=args.attempts,
                                     concurrency=args.concurrency, hold=args.hold,
                                     expected_matches=ENTRIES, kills=args.kills,
                                     stops=args.stops, chaos_interval=args.interval,
                                     seed=args.seed)
            alive = server.proc.poll() is None
        finally:
            server.stop()
        untouched = fingerprint(dfp) == before
    figures = {**report.summary(), "server alive after": alive, "worklist untouched": untouched}
    ok = (alive and untouched and not report.unexplained()
          and report.counts()[flood.WRONG] == 0
          and all(e.reaped_after is not None for e in report.events))
    return figures, ok


def audit() -> str:
    """pip-audit of the pinned runtime dependencies, or why it could not run."""
    pins = "\n".join(f"{name}=={metadata.version(name)}" for name in DEPENDENCIES)
    try:
        result = subprocess.run([sys.executable, "-m", "pip_audit", "--strict", "--no-deps",
                                 "--desc", "off", "--timeout", "5", "-r", "/dev/stdin"], input=pins,
                                capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not run: {exc}"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return f"exit {result.returncode}: {lines[-1] if lines else ''}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    figures, ok = soak_flood(args)
    figures["pip-audit"] = audit()
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
