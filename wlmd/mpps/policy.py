"""What MPPS does to the worklist, and where it forwards, per called AE (``[mpps_policy.<AE>]``).

The policies are part of ``Settings`` (``mpps_policy`` in ``wlmd.conf``), so they are immutable,
comparable values, re-read on SIGHUP like every other setting. The ``"*"`` table applies to
every AE without a table of its own.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

E = TypeVar("E", bound=enum.Enum)

DEFAULT_AE = "*"
MAX_DELAY = 366 * 86400.0


class InProgressAction(enum.Enum):
    """What an N-CREATE (IN PROGRESS) does to the linked worklist entry."""

    NONE = "none"
    MARK = "mark"  # Scheduled Procedure Step Status (0040,0020) = STARTED
    HIDE = "hide"  # moved out of the worklist until the step ends


class CompletedAction(enum.Enum):
    """What an N-SET to COMPLETED does to the linked entry."""

    NONE = "none"
    MARK = "mark"  # status COMPLETED
    ARCHIVE = "archive"  # moved to <mpps_path>/<AE>/archive/
    DELETE = "delete"


class DiscontinuedAction(enum.Enum):
    """What an N-SET to DISCONTINUED does to the linked entry."""

    NONE = "none"
    RESCHEDULE = "reschedule"  # status SCHEDULED (and back in the worklist when hidden)
    MARK = "mark"  # status DISCONTINUED
    ARCHIVE = "archive"


@dataclass(frozen=True)
class Destination:
    """An MPPS SCP every accepted N-CREATE/N-SET of the AE is forwarded to."""

    ae_title: str
    host: str
    port: int
    tls: bool = False
    tls_ca_file: Path | None = None  # None: the system's trusted CAs
    calling_ae: str = "WLMD"

    @property
    def key(self) -> str:
        """The queue directory name: unique per destination, safe as a file name."""
        raw = f"{self.ae_title}@{self.host}_{self.port}{'_tls' if self.tls else ''}"
        return "".join(c if c.isalnum() or c in "._@-" else "_" for c in raw)


@dataclass(frozen=True)
class AePolicy:
    """The MPPS behaviour of one called AE."""

    in_progress: InProgressAction = InProgressAction.MARK
    completed: CompletedAction = CompletedAction.MARK
    completed_delay: float = 0.0  # seconds between COMPLETED and archive/delete
    discontinued: DiscontinuedAction = DiscontinuedAction.MARK
    forward: tuple[Destination, ...] = ()


@dataclass(frozen=True)
class MppsPolicies:
    """Every AE's policy: ``by_ae`` overrides ``default``."""

    default: AePolicy = field(default_factory=AePolicy)
    by_ae: tuple[tuple[str, AePolicy], ...] = ()

    def for_ae(self, ae: str) -> AePolicy:
        """The policy of called AE ``ae``."""
        return next((policy for name, policy in self.by_ae if name == ae), self.default)

    def destinations(self) -> tuple[Destination, ...]:
        """Every configured destination, once each."""
        seen: dict[str, Destination] = {}
        for policy in (self.default, *(p for _, p in self.by_ae)):
            for destination in policy.forward:
                seen.setdefault(destination.key, destination)
        return tuple(seen.values())

    @classmethod
    def from_toml(cls, raw: object) -> MppsPolicies:
        """The ``[mpps_policy.<AE>]`` tables of wlmd.conf; ValueError names the bad key."""
        if not isinstance(raw, dict):
            raise ValueError('expected tables such as [mpps_policy."*"]')
        default = AePolicy()
        by_ae = []
        for ae, table in raw.items():
            if ae != DEFAULT_AE and not is_safe_ae(ae):
                raise ValueError(f"{ae!r} is not a usable AE title")
            try:
                policy = _policy(table)
            except ValueError as exc:
                raise ValueError(f"[{ae}]: {exc}") from None
            if ae == DEFAULT_AE:
                default = policy
            else:
                by_ae.append((ae, policy))
        return cls(default, tuple(by_ae))

    def to_toml(self, key: str) -> str:
        """The ``[<key>.<AE>]`` tables that ``from_toml`` reads back ('' for the defaults)."""
        if self == MppsPolicies():
            return ""
        out = []
        for ae, policy in ((DEFAULT_AE, self.default), *self.by_ae):
            out.append(f"\n[{key}.{json.dumps(ae)}]\n")
            out.append(f"in_progress = {json.dumps(policy.in_progress.value)}\n")
            out.append(f"completed = {json.dumps(policy.completed.value)}\n")
            out.append(f"completed_delay = {policy.completed_delay!r}\n")
            out.append(f"discontinued = {json.dumps(policy.discontinued.value)}\n")
            out.append(f"forward = [{', '.join(_destination_toml(d) for d in policy.forward)}]\n")
        return "".join(out)


def _destination_toml(destination: Destination) -> str:
    fields = [f"ae_title = {json.dumps(destination.ae_title)}",
              f"host = {json.dumps(destination.host)}", f"port = {destination.port}",
              f"tls = {'true' if destination.tls else 'false'}",
              f"calling_ae = {json.dumps(destination.calling_ae)}"]
    if destination.tls_ca_file is not None:
        fields.append(f"tls_ca_file = {json.dumps(str(destination.tls_ca_file))}")
    return "{ " + ", ".join(fields) + " }"


_POLICY_KEYS = ("in_progress", "completed", "completed_delay", "discontinued", "forward")
_DESTINATION_KEYS = ("ae_title", "host", "port", "tls", "tls_ca_file", "calling_ae")


def is_safe_ae(ae: str) -> bool:
    """The worklist store's AE-title rule (imported here: the store imports the settings,
    which hold these policies)."""
    from wlmd.worklist.store import is_safe_ae as store_rule

    return store_rule(ae)


def _policy(table: object) -> AePolicy:
    if not isinstance(table, dict):
        raise ValueError("expected a table")
    unknown = sorted(set(table) - set(_POLICY_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    delay = table.get("completed_delay", 0.0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not (
        0 <= delay <= MAX_DELAY
    ):
        raise ValueError(f"completed_delay: expected seconds from 0 to {MAX_DELAY:g}")
    forward = table.get("forward", [])
    if not isinstance(forward, list):
        raise ValueError("forward: expected a list of destination tables")
    return AePolicy(
        in_progress=_choice(InProgressAction, table, "in_progress", InProgressAction.MARK),
        completed=_choice(CompletedAction, table, "completed", CompletedAction.MARK),
        completed_delay=float(delay),
        discontinued=_choice(DiscontinuedAction, table, "discontinued",
                             DiscontinuedAction.MARK),
        forward=tuple(_destination(item) for item in forward),
    )


def _choice(kind: type[E], table: dict[str, object], key: str, default: E) -> E:
    value = table.get(key, default.value)
    for member in kind:
        if member.value == value:
            return member
    names = ", ".join(repr(m.value) for m in kind)
    raise ValueError(f"{key}: expected one of {names}")


def _destination(item: object) -> Destination:
    if not isinstance(item, dict):
        raise ValueError("forward: expected tables {ae_title, host, port}")
    unknown = sorted(set(item) - set(_DESTINATION_KEYS))
    if unknown:
        raise ValueError(f"forward: unknown key {unknown[0]!r}")
    ae, host, port = item.get("ae_title"), item.get("host"), item.get("port")
    calling = item.get("calling_ae", "WLMD")
    if not isinstance(ae, str) or not is_safe_ae(ae) or not isinstance(calling, str):
        raise ValueError("forward: ae_title must be an AE title (1-16 characters)")
    if not isinstance(host, str) or not host:
        raise ValueError("forward: host is required")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("forward: port must be 1..65535")
    tls = item.get("tls", False)
    ca_file = item.get("tls_ca_file")
    if not isinstance(tls, bool) or not (ca_file is None or isinstance(ca_file, str)):
        raise ValueError("forward: tls must be true or false, tls_ca_file a path")
    return Destination(ae, host, port, tls, Path(ca_file) if ca_file else None, calling)


CONFIG_EXAMPLE = '''\
# MPPS (--mpps): what N-CREATE/N-SET do to the worklist entry they link to, and where they are
# forwarded, per called AE; the "*" table applies to every AE without its own. The default
# (an empty mpps_policy) marks entries and forwards nowhere. Instead of the inline value, the
# tables can come at the end of the file (TOML tables follow the plain keys):
# mpps_policy = {}
#   [mpps_policy."*"]
#   in_progress = "mark"        # "mark" (status STARTED), "hide" or "none"
#   completed = "mark"          # "mark", "archive", "delete" or "none"
#   completed_delay = 0         # seconds before archive/delete
#   discontinued = "mark"       # "reschedule", "mark", "archive" or "none"
#   forward = [{ ae_title = "RIS", host = "192.0.2.10", port = 104, tls = false }]
'''
