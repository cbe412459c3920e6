"""hosts.allow/hosts.deny access rules (hosts_access(5)) for ``+ac``, evaluated without libwrap.

Rules are parsed once into a policy; checking a peer is pure address arithmetic (netaddr), plus
a reverse lookup only when a rule that names hosts is reached. Unsupported libwrap features fail
loudly at load time instead of silently never matching, because a deny rule that never matches
opens the door.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import netaddr

LOGGER = logging.getLogger(__name__)

# Names a daemon list may use for this server: its own and the reference's (docs/compat.md §12.9).
# Both are aliases of one daemon, so `ALL EXCEPT wlmscpfs` excludes wlmd too, as it did before.
DAEMON_NAMES = frozenset({"wlmd", "wlmscpfs"})
LOOKUP_TIMEOUT = 2.0  # seconds for the reverse (and confirming forward) lookup
# Options of hosts_options(5) that only change side effects (logging, socket knobs): ignored.
IGNORED_OPTIONS = frozenset(
    {"severity", "spawn", "keepalive", "linger", "rfc931", "banners", "nice", "setenv",
     "umask", "user"}
)
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.IGNORECASE)
_DOMAIN = re.compile(rf"^(?:\.{_LABEL})+$", re.IGNORECASE)
_V4_PREFIX = re.compile(r"^(?:\d{1,3}\.){1,3}$")
_LOOKS_NUMERIC = re.compile(r"^[\d.]+(?:/[\d.]*)?$")

Resolver = Callable[[str], str | None]


@dataclass(frozen=True)
class RuleProblem:
    """A malformed or partly ignored rule, located by file and (first) line."""

    path: Path
    line: int
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        kind = "error" if self.fatal else "warning"
        return f"{self.path}:{self.line}: {kind}: {self.message}"


class AccessRuleError(ValueError):
    """The rule files cannot be used; every fatal problem is listed with file:line."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Decision:
    """The verdict for one peer and the rule that gave it (``file:line`` or ``default``)."""

    allowed: bool
    rule: str


class _Peer:
    """The client being checked: its address, and its host name looked up at most once."""

    def __init__(self, address: netaddr.IPAddress, resolver: Resolver | None) -> None:
        self.address = address
        self.text = str(address)
        self._resolver = resolver
        self._name: str | None = None
        self._looked_up = False

    @property
    def name(self) -> str | None:
        """The verified host name (lower case), or None if unknown or lookups are off."""
        if not self._looked_up:
            self._looked_up = True
            found = self._resolver(self.text) if self._resolver else None
            self._name = found.lower().rstrip(".") if found else None
        return self._name


# --- client patterns: each is a predicate on a _Peer ---------------------------------------

@dataclass(frozen=True)
class _Network:
    network: netaddr.IPNetwork

    def __call__(self, peer: _Peer) -> bool:
        return peer.address.version == self.network.version and peer.address in self.network


@dataclass(frozen=True)
class _V4Prefix:
    prefix: str  # "192.168." matches the dotted address textually, as libwrap does

    def __call__(self, peer: _Peer) -> bool:
        return peer.address.version == 4 and peer.text.startswith(self.prefix)


@dataclass(frozen=True)
class _Always:
    def __call__(self, peer: _Peer) -> bool:
        return True


@dataclass(frozen=True)
class _Local:
    """LOCAL: a host whose (looked-up) name has no dot."""

    def __call__(self, peer: _Peer) -> bool:
        name = peer.name
        return name is not None and "." not in name


@dataclass(frozen=True)
class _HostName:
    name: str

    def __call__(self, peer: _Peer) -> bool:
        return peer.name == self.name


@dataclass(frozen=True)
class _Domain:
    suffix: str  # ".example.org"

    def __call__(self, peer: _Peer) -> bool:
        name = peer.name
        return name is not None and name.endswith(self.suffix)


@dataclass(frozen=True)
class _Wildcard:
    pattern: str  # `*` and `?` against the address, and the host name when lookups are on

    def __call__(self, peer: _Peer) -> bool:
        if fnmatch.fnmatchcase(peer.text, self.pattern):
            return True
        name = peer.name
        return name is not None and fnmatch.fnmatchcase(name, self.pattern)


Pattern = Callable[[_Peer], bool]


@dataclass(frozen=True)
class _ClientList:
    """``items [EXCEPT rest]``: matches if an item matches and ``rest`` does not."""

    items: tuple[Pattern, ...]
    exception: _ClientList | None = None

    def __call__(self, peer: _Peer) -> bool:
        if not any(item(peer) for item in self.items):
            return False
        return self.exception is None or not self.exception(peer)


@dataclass(frozen=True)
class _Rule:
    where: str  # "file:line"
    clients: _ClientList
    action: bool | None  # from a `: allow` / `: deny` option; None = the file decides


@dataclass
class _Parse:
    """Problems found while parsing one file, and the rules that apply to this daemon."""

    path: Path
    host_lookup: bool
    rules: list[_Rule] = field(default_factory=list)
    problems: list[RuleProblem] = field(default_factory=list)

    def problem(self, line: int, message: str, *, fatal: bool = True) -> None:
        self.problems.append(RuleProblem(self.path, line, message, fatal))


class AccessPolicy:
    """The parsed allow and deny tables; ``check(ip)`` applies hosts_access(5) order."""

    def __init__(self, allow: list[_Rule], deny: list[_Rule], resolver: Resolver | None) -> None:
        self._allow = allow
        self._deny = deny
        self._resolver = resolver

    @classmethod
    def load(cls, allow_path: Path, deny_path: Path, *, host_lookup: bool,
             resolver: Resolver | None = None) -> AccessPolicy:
        """Parse both files (a missing file is empty); raise AccessRuleError on a bad rule.

        Warnings (ignored options, host patterns without host lookup) are logged. ``resolver``
        replaces the default verified reverse lookup (tests, or a caching resolver).
        """
        allow, deny = (_parse_file(Path(p), host_lookup) for p in (allow_path, deny_path))
        problems = allow.problems + deny.problems
        fatal = [p for p in problems if p.fatal]
        if fatal:
            raise AccessRuleError(fatal)
        for warning in problems:
            LOGGER.warning("%s", warning)
        if host_lookup and resolver is None:
            resolver = lookup_host_name
        return cls(allow.rules, deny.rules, resolver if host_lookup else None)

    @property
    def needs_host_lookup(self) -> bool:
        """True if some rule may need the peer's host name (a check may then block briefly)."""
        return self._resolver is not None and any(
            _uses_names(rule.clients) for rule in self._allow + self._deny
        )

    def address_allow_list(self) -> list[str] | None:
        """The allowed networks when the rules are only "allow these addresses, deny ALL".

        Then systemd's ``IPAddressAllow=`` can say the same in the kernel (the unit's
        hardening); None when any rule needs more (names, EXCEPT, options, other denials).
        """
        deny = self._deny
        if len(deny) != 1 or deny[0].action is not None or deny[0].clients.exception is not None \
                or deny[0].clients.items != (_Always(),):
            return None
        networks: list[str] = []
        for rule in self._allow:
            if rule.action is False or rule.clients.exception is not None:
                return None
            for item in rule.clients.items:
                network = _as_network(item)
                if network is None:
                    return None
                networks.append(network)
        return networks

    def check(self, ip: str) -> Decision:
        """Decide for peer address ``ip``: first allow match grants, first deny match refuses."""
        peer = _Peer(_peer_address(ip), self._resolver)
        for rules, default in ((self._allow, True), (self._deny, False)):
            for rule in rules:
                if rule.clients(peer):
                    allowed = default if rule.action is None else rule.action
                    return Decision(allowed, rule.where)
        return Decision(True, "default")


def _as_network(pattern: Pattern) -> str | None:
    """A plain address pattern as CIDR text (``192.168.`` is 192.168.0.0/16); else None."""
    if isinstance(pattern, _Network):
        return str(pattern.network.cidr)
    if isinstance(pattern, _V4Prefix):
        octets = pattern.prefix.rstrip(".").split(".")
        if len(octets) <= 3 and all(o.isdigit() and int(o) <= 255 for o in octets):
            return ".".join([*octets, *["0"] * (4 - len(octets))]) + f"/{8 * len(octets)}"
    return None


def check_rules(allow_path: Path, deny_path: Path, *, host_lookup: bool) -> list[RuleProblem]:
    """Every problem in both files, errors and warnings, for ``--check-config``."""
    return [p for path in (allow_path, deny_path)
            for p in _parse_file(Path(path), host_lookup).problems]


def lookup_host_name(ip: str, timeout: float = LOOKUP_TIMEOUT) -> str | None:
    """The host name of ``ip`` if its reverse lookup resolves back to ``ip``, within ``timeout``.

    Forward confirmation stops a peer from claiming a trusted name through its own reverse
    zone. The lookup runs in a daemon thread because the resolver has no timeout of its own.
    """
    result: list[str | None] = [None]

    def resolve() -> None:
        try:
            name = socket.gethostbyaddr(ip)[0]
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return
        if any(_peer_address(str(info[4][0])) == _peer_address(ip) for info in infos):
            result[0] = name

    thread = threading.Thread(target=resolve, name=f"lookup {ip}", daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0]


# --- parsing ---------------------------------------------------------------------------------

def _parse_file(path: Path, host_lookup: bool) -> _Parse:
    parse = _Parse(path, host_lookup)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return parse
    except OSError as exc:
        parse.problem(0, f"cannot read: {exc.strerror or exc}")
        return parse
    for line_no, line in _logical_lines(text):
        _parse_rule(parse, line_no, line)
    return parse


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Join backslash-continued lines; skip blanks and comments; yield (first line no., text)."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending.append(raw[:-1])
            continue
        pending.append(raw)
        line = " ".join(pending).strip()
        pending = []
        if line and not line.startswith("#"):
            yield start, line
    if pending and (line := " ".join(pending).strip()) and not line.startswith("#"):
        yield start, line


def _split_fields(line: str) -> list[str]:
    """Split at colons outside ``[...]`` (IPv6) and not escaped with a backslash."""
    fields, current, depth, escaped = [], [], 0, False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":" and depth == 0:
            fields.append("".join(current).strip())
            current = []
        else:
            depth += (char == "[") - (char == "]")
            current.append(char)
    fields.append("".join(current).strip())
    return fields


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[\s,]+", text) if t]


def _parse_rule(parse: _Parse, line_no: int, line: str) -> None:
    fields = _split_fields(line)
    if len(fields) < 2:
        parse.problem(line_no, "missing ':' between daemon list and client list")
        return
    daemons, clients, options = _tokens(fields[0]), _tokens(fields[1]), fields[2:]
    if not daemons or not clients:
        parse.problem(line_no, "empty daemon list" if not daemons else "empty client list")
        return
    try:
        applies = _daemon_list_matches(daemons)
        if not applies:
            return  # a rule for another daemon in a shared file: not ours to judge
        client_list = _client_list(clients, parse, line_no)
        action = _options(options, parse, line_no)
    except ValueError as exc:
        parse.problem(line_no, str(exc))
        return
    parse.rules.append(_Rule(f"{parse.path}:{line_no}", client_list, action))


def _split_except(tokens: list[str]) -> tuple[list[str], list[str] | None]:
    """``a b EXCEPT c EXCEPT d`` → ``([a, b], [c, EXCEPT, d])``; nesting is to the right."""
    upper = [t.upper() for t in tokens]
    if "EXCEPT" not in upper:
        return tokens, None
    cut = upper.index("EXCEPT")
    head, rest = tokens[:cut], tokens[cut + 1:]
    if not head or not rest:
        raise ValueError("EXCEPT needs a list on both sides")
    return head, rest


def _daemon_list_matches(tokens: list[str]) -> bool:
    """Whether a daemon list names this server (decided once, at load time)."""
    head, rest = _split_except(tokens)
    if not any(_daemon_matches(token) for token in head):
        return False
    return rest is None or not _daemon_list_matches(rest)


def _daemon_matches(token: str) -> bool:
    name, at, _host = token.partition("@")
    ours = name.upper() == "ALL" or any(
        fnmatch.fnmatchcase(d, name.lower()) for d in DAEMON_NAMES)
    if ours and at:
        raise ValueError(f"server endpoint pattern {token!r} (daemon@host) is not supported")
    return ours


def _client_list(tokens: list[str], parse: _Parse, line_no: int) -> _ClientList:
    head, rest = _split_except(tokens)
    items = tuple(_client_pattern(token, parse, line_no) for token in head)
    exception = _client_list(rest, parse, line_no) if rest is not None else None
    return _ClientList(items, exception)


def _client_pattern(token: str, parse: _Parse, line_no: int) -> Pattern:
    word = token.upper()
    if word == "ALL":
        return _Always()
    if word in {"KNOWN", "UNKNOWN", "PARANOID"} or token[0] in "@/" or "@" in token:
        raise ValueError(f"client pattern {token!r} is not supported")
    address = _address_pattern(token)
    if address is not None:
        return address
    if "*" in token or "?" in token:
        return _Wildcard(token.lower())
    if word == "LOCAL":
        pattern: Pattern = _Local()
    elif _DOMAIN.match(token):
        pattern = _Domain(token.lower())
    elif _HOST_NAME.match(token):
        pattern = _HostName(token.lower().rstrip("."))
    else:
        raise ValueError(f"malformed client pattern {token!r}")
    if not parse.host_lookup:
        parse.problem(line_no, f"{token!r} never matches: host lookup is disabled", fatal=False)
    return pattern


def _address_pattern(token: str) -> Pattern | None:
    """An address, CIDR, net/mask, [v6]/len or ``a.b.`` prefix; None if not address-like."""
    if token.startswith("["):
        match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?:/(\d{1,3}))?", token)
        if not match:
            raise ValueError(f"malformed IPv6 pattern {token!r}")
        return _network(match[1], match[2], token, version=6)
    if _V4_PREFIX.match(token):
        if any(int(part) > 255 for part in token.split(".")[:-1]):
            raise ValueError(f"malformed address prefix {token!r}")
        return _V4Prefix(token)
    if not _LOOKS_NUMERIC.match(token):
        return None
    address, _, mask = token.partition("/")
    return _network(address, mask or None, token, version=4)


def _network(address: str, mask: str | None, token: str, *, version: int) -> _Network:
    try:
        ip = netaddr.IPAddress(address, version=version, flags=netaddr.INET_PTON)
        if mask is not None and "." in mask and not netaddr.IPAddress(mask).is_netmask():
            raise ValueError(f"{mask!r} in {token!r} is not a netmask")
        network = netaddr.IPNetwork(f"{ip}/{mask}" if mask is not None else str(ip))
    except (netaddr.AddrFormatError, TypeError):
        raise ValueError(f"malformed address pattern {token!r}") from None
    if network.ip != network.network:
        raise ValueError(f"{token!r} has host bits set (network is {network.cidr})")
    if network.version == 6 and network.ip.is_ipv4_mapped() and network.prefixlen >= 96:
        network = netaddr.IPNetwork(f"{network.ip.ipv4()}/{network.prefixlen - 96}")
    return _Network(network)


def _options(options: list[str], parse: _Parse, line_no: int) -> bool | None:
    """The ``allow``/``deny`` extension of hosts_options(5); other options are ignored."""
    action = None
    for option in options:
        keyword = option.split(None, 1)[0].lower() if option else ""
        if keyword in {"allow", "deny"} and option.lower() == keyword:
            action = keyword == "allow"
        elif keyword in {"allow", "deny"}:
            raise ValueError(f"option {keyword!r} takes no value")
        elif keyword == "twist":
            raise ValueError("option 'twist' is not supported (it would replace the service)")
        elif keyword in IGNORED_OPTIONS:
            parse.problem(line_no, f"option {keyword!r} is ignored", fatal=False)
        else:
            raise ValueError(f"unknown option {option!r}")
    return action


def _plain(address: netaddr.IPAddress) -> netaddr.IPAddress:
    """An IPv4-mapped IPv6 address as its IPv4 address; anything else unchanged."""
    return address.ipv4() if address.version == 6 and address.is_ipv4_mapped() else address


def _peer_address(ip: str) -> netaddr.IPAddress:
    """Parse a peer address as given by accept(); drop an IPv6 zone (``%eth0``)."""
    return _plain(netaddr.IPAddress(ip.split("%", 1)[0]))


def _uses_names(clients: _ClientList | None) -> bool:
    if clients is None:
        return False
    named = (_Local, _HostName, _Domain, _Wildcard)
    return any(isinstance(i, named) for i in clients.items) or _uses_names(clients.exception)
