"""hosts.allow/hosts.deny rules: parsing, order, patterns, EXCEPT, errors with file:line."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from wlmd.security import access
from wlmd.security.access import AccessPolicy, AccessRuleError, check_rules

# Names a fake resolver gives, so host-name patterns are tested without DNS.
NAMES = {
    "10.0.0.5": "ct1.radiology.example",
    "10.0.0.6": "mr2",
    "10.0.0.7": "printer.office.example",
    "2001:db8::5": "us3.radiology.example",
}


def fake_resolver(calls: list[str] | None = None):
    def resolve(ip: str) -> str | None:
        if calls is not None:
            calls.append(ip)
        return NAMES.get(ip)
    return resolve


def write_rules(tmp_path: Path, allow: str, deny: str = "") -> tuple[Path, Path]:
    allow_path, deny_path = tmp_path / "hosts.allow", tmp_path / "hosts.deny"
    allow_path.write_text(allow)
    deny_path.write_text(deny)
    return allow_path, deny_path


def load(tmp_path: Path, allow: str, deny: str = "", *, host_lookup: bool = True,
         resolver=None) -> AccessPolicy:
    allow_path, deny_path = write_rules(tmp_path, allow, deny)
    return AccessPolicy.load(allow_path, deny_path, host_lookup=host_lookup,
                             resolver=resolver or fake_resolver())


# (hosts.allow, hosts.deny, peer, allowed, deciding rule: "allow:N", "deny:N" or "default")
DECISIONS = [
    # order: allow wins, then deny, then default grant
    ("wlmd: 127.0.0.2\n", "wlmd: ALL\n", "127.0.0.2", True, "allow:1"),
    ("wlmd: 127.0.0.2\n", "wlmd: ALL\n", "127.0.0.3", False, "deny:1"),
    ("", "wlmd: 127.0.0.3\n", "127.0.0.2", True, "default"),
    ("", "", "::1", True, "default"),
    ("wlmd: 10.0.0.1\nwlmd: ALL\n", "", "10.0.0.2", True, "allow:2"),
    # daemon lists
    ("wlmscpfs: 127.0.0.2\n", "ALL: ALL\n", "127.0.0.2", True, "allow:1"),
    ("WLMD: 127.0.0.2\n", "ALL: ALL\n", "127.0.0.2", True, "allow:1"),
    ("sshd, wlmd: 127.0.0.2\n", "ALL: ALL\n", "127.0.0.2", True, "allow:1"),
    ("sshd: 127.0.0.2\n", "ALL: ALL\n", "127.0.0.2", False, "deny:1"),
    ("ALL EXCEPT wlmd: 127.0.0.2\n", "ALL: ALL\n", "127.0.0.2", False, "deny:1"),
    ("ALL EXCEPT wlmscpfs: 127.0.0.2\n", "ALL: ALL\n", "127.0.0.2", False, "deny:1"),
    ("ALL EXCEPT sshd: 127.0.0.2\n", "ALL: ALL\n", "127.0.0.2", True, "allow:1"),
    ("ALL EXCEPT sshd EXCEPT wlmd: ALL\n", "", "127.0.0.2", True, "allow:1"),
    ("wl*: 127.0.0.2\n", "ALL: ALL\n", "127.0.0.2", True, "allow:1"),
    # IPv4 addresses, CIDR, net/mask, prefixes
    ("wlmd: 192.168.1.7\n", "ALL: ALL\n", "192.168.1.7", True, "allow:1"),
    ("wlmd: 192.168.1.7\n", "ALL: ALL\n", "192.168.1.70", False, "deny:1"),
    ("wlmd: 10.1.0.0/16\n", "ALL: ALL\n", "10.1.255.3", True, "allow:1"),
    ("wlmd: 10.1.0.0/16\n", "ALL: ALL\n", "10.2.0.3", False, "deny:1"),
    ("wlmd: 131.155.72.0/255.255.254.0\n", "ALL: ALL\n", "131.155.73.255", True, "allow:1"),
    ("wlmd: 131.155.72.0/255.255.254.0\n", "ALL: ALL\n", "131.155.74.0", False, "deny:1"),
    ("wlmd: 192.168.\n", "ALL: ALL\n", "192.168.200.1", True, "allow:1"),
    ("wlmd: 192.168.\n", "ALL: ALL\n", "192.169.0.1", False, "deny:1"),
    ("wlmd: 10.\n", "ALL: ALL\n", "100.0.0.1", False, "deny:1"),
    ("wlmd: 10.0.0.?\n", "ALL: ALL\n", "10.0.0.9", True, "allow:1"),
    ("wlmd: 10.0.0.?\n", "ALL: ALL\n", "10.0.0.19", False, "deny:1"),
    # IPv6, and IPv4 peers never match IPv6 patterns (or the reverse)
    ("wlmd: [::1]\n", "ALL: ALL\n", "::1", True, "allow:1"),
    ("wlmd: [2001:db8::]/32\n", "ALL: ALL\n", "2001:db8:ffff::1", True, "allow:1"),
    ("wlmd: [2001:db8::]/32\n", "ALL: ALL\n", "2001:db9::1", False, "deny:1"),
    ("wlmd: [2001:DB8::]/32\n", "ALL: ALL\n", "2001:db8::1%eth0", True, "allow:1"),
    ("wlmd: [::]/0\n", "ALL: ALL\n", "127.0.0.1", False, "deny:1"),
    ("wlmd: 0.0.0.0/0\n", "ALL: ALL\n", "::1", False, "deny:1"),
    # an IPv4-mapped peer is its IPv4 address; a mapped pattern is an IPv4 pattern
    ("wlmd: 127.0.0.2\n", "ALL: ALL\n", "::ffff:127.0.0.2", True, "allow:1"),
    ("wlmd: 127.0.0.0/8\n", "ALL: ALL\n", "::ffff:127.9.9.9", True, "allow:1"),
    ("wlmd: 127.\n", "ALL: ALL\n", "::ffff:127.0.0.2", True, "allow:1"),
    ("wlmd: [::ffff:10.0.0.0]/104\n", "ALL: ALL\n", "10.200.0.1", True, "allow:1"),
    ("", "wlmd: 127.0.0.2\n", "::ffff:127.0.0.2", False, "deny:1"),
    # EXCEPT nests to the right: a EXCEPT (b EXCEPT c)
    ("wlmd: 10.0.0.0/8 EXCEPT 10.1.0.0/16\n", "ALL: ALL\n", "10.1.2.3", False, "deny:1"),
    ("wlmd: 10.0.0.0/8 EXCEPT 10.1.0.0/16\n", "ALL: ALL\n", "10.2.2.3", True, "allow:1"),
    ("wlmd: 10. EXCEPT 10.1. EXCEPT 10.1.2.3\n", "ALL: ALL\n", "10.1.2.3", True, "allow:1"),
    ("wlmd: 10. EXCEPT 10.1. EXCEPT 10.1.2.3\n", "ALL: ALL\n", "10.1.2.4", False, "deny:1"),
    ("wlmd: ALL EXCEPT [::1]\n", "ALL: ALL\n", "::1", False, "deny:1"),
    ("", "ALL: ALL EXCEPT 127.0.0.1\n", "127.0.0.1", True, "default"),
    # host names, domains and LOCAL (host lookup on, fake resolver)
    ("wlmd: ct1.radiology.example\n", "ALL: ALL\n", "10.0.0.5", True, "allow:1"),
    ("wlmd: CT1.Radiology.Example\n", "ALL: ALL\n", "10.0.0.5", True, "allow:1"),
    ("wlmd: .radiology.example\n", "ALL: ALL\n", "2001:db8::5", True, "allow:1"),
    ("wlmd: .radiology.example\n", "ALL: ALL\n", "10.0.0.7", False, "deny:1"),
    ("wlmd: .example EXCEPT .office.example\n", "ALL: ALL\n", "10.0.0.7", False, "deny:1"),
    ("wlmd: LOCAL\n", "ALL: ALL\n", "10.0.0.6", True, "allow:1"),
    ("wlmd: LOCAL\n", "ALL: ALL\n", "10.0.0.5", False, "deny:1"),
    ("wlmd: LOCAL\n", "ALL: ALL\n", "10.0.0.99", False, "deny:1"),  # no name at all
    ("wlmd: *.radiology.example\n", "ALL: ALL\n", "10.0.0.5", True, "allow:1"),
    # options: allow/deny override the file; ignored options keep the file's meaning
    ("wlmd: 127.0.0.2 : deny\n", "", "127.0.0.2", False, "allow:1"),
    ("", "wlmd: 127.0.0.2 : allow\n", "127.0.0.2", True, "deny:1"),
    ("wlmd: [::1] : severity auth.info : deny\n", "", "::1", False, "allow:1"),
    ("wlmd: [::1]: spawn /bin/true\n", "ALL: ALL\n", "::1", True, "allow:1"),
    # comments, blank lines, continuation lines, commas
    ("# wlmd: ALL\n\n   \nwlmd: 127.0.0.3\n", "ALL: ALL\n", "127.0.0.2", False, "deny:1"),
    ("wlmd: 127.0.0.3,\\\n  127.0.0.2\nwlmd: ALL\n", "", "127.0.0.2", True, "allow:1"),
    ("# one\n# two \\\n wlmd: ALL\nwlmd: 1.2.3.4\n", "ALL:ALL", "1.2.3.4", True, "allow:4"),
]


@pytest.mark.parametrize(("allow", "deny", "peer", "allowed", "rule"), DECISIONS)
def test_decision(tmp_path: Path, allow: str, deny: str, peer: str, allowed: bool,
                  rule: str) -> None:
    decision = load(tmp_path, allow, deny).check(peer)
    expected_rule = "default" if rule == "default" else (
        f"{tmp_path / ('hosts.' + rule.split(':')[0])}:{rule.split(':')[1]}")
    assert (decision.allowed, decision.rule) == (allowed, expected_rule)


def test_shipped_examples_are_clean() -> None:
    etc = Path(__file__).resolve().parents[2] / "etc"
    allow_path, deny_path = etc / "hosts.allow.example", etc / "hosts.deny.example"
    assert check_rules(allow_path, deny_path, host_lookup=True) == []
    policy = AccessPolicy.load(allow_path, deny_path, host_lookup=False)
    assert [policy.check(ip).allowed for ip in ("127.0.0.1", "::1", "10.20.1.1")] == [True] * 3
    assert [policy.check(ip).allowed for ip in ("10.20.99.1", "10.30.0.66", "192.0.2.1")] == [
        False] * 3


def test_missing_files_grant_everyone(tmp_path: Path) -> None:
    policy = AccessPolicy.load(tmp_path / "nope.allow", tmp_path / "nope.deny", host_lookup=False)
    assert policy.check("192.0.2.1") == access.Decision(True, "default")


# (rule line, fragment of the message); every rule sits on line 3 after a comment and a
# continued line, so the reported location is checked too.
MALFORMED = [
    ("wlmd 127.0.0.1", "missing ':'"),
    (": 127.0.0.1", "empty daemon list"),
    ("wlmd:", "empty client list"),
    ("wlmd: 10.1.2.3/8", "host bits set (network is 10.0.0.0/8)"),
    ("wlmd: 10.0.0.0/33", "malformed address pattern"),
    ("wlmd: 300.1.1.1", "malformed address pattern"),
    ("wlmd: 10.1.2", "malformed address pattern"),
    ("wlmd: 10.0.0.0/255.0.255.0", "is not a netmask"),
    ("wlmd: 256.", "malformed address prefix"),
    ("wlmd: [::1", "malformed IPv6 pattern"),
    ("wlmd: [10.0.0.1]", "malformed address pattern"),
    ("wlmd: [2001:db8::1]/64", "host bits set"),
    ("wlmd: [::1]/129", "malformed address pattern"),
    ("wlmd: EXCEPT 10.", "EXCEPT needs a list on both sides"),
    ("wlmd: 10. EXCEPT", "EXCEPT needs a list on both sides"),
    ("ALL EXCEPT: 10.", "EXCEPT needs a list on both sides"),
    ("wlmd: @netgroup", "not supported"),
    ("wlmd: /etc/trusted", "not supported"),
    ("wlmd: user@10.0.0.1", "not supported"),
    ("wlmd: PARANOID", "not supported"),
    ("wlmd@10.0.0.1: ALL", "daemon@host"),
    ("wlmd: bad_host!", "malformed client pattern"),
    ("wlmd: ALL : twist /bin/echo no", "'twist' is not supported"),
    ("wlmd: ALL : deny now", "takes no value"),
    ("wlmd: ALL : frobnicate", "unknown option"),
]


@pytest.mark.parametrize(("rule", "message"), MALFORMED)
def test_malformed_rule_reports_file_and_line(tmp_path: Path, rule: str, message: str) -> None:
    allow_path, deny_path = write_rules(tmp_path, "# header\nsshd: 10.\\\n 11.\n" + rule + "\n")
    with pytest.raises(AccessRuleError) as raised:
        AccessPolicy.load(allow_path, deny_path, host_lookup=True)
    assert str(raised.value).startswith(f"{allow_path}:4: error: ")
    assert message in str(raised.value)
    problems = check_rules(allow_path, deny_path, host_lookup=True)
    assert [(p.line, p.fatal) for p in problems] == [(4, True)]


def test_all_errors_of_both_files_are_reported(tmp_path: Path) -> None:
    allow_path, deny_path = write_rules(tmp_path, "wlmd: 1.2.3.4/8\nwlmd: ok.example\n",
                                        "\nwlmd: 999.\n")
    problems = check_rules(allow_path, deny_path, host_lookup=True)
    assert [(p.path, p.line) for p in problems] == [(allow_path, 1), (deny_path, 2)]


def test_rules_for_other_daemons_are_not_judged(tmp_path: Path) -> None:
    """A shared /etc/hosts.allow may use features wlmd lacks in rules for other daemons."""
    policy = load(tmp_path, "sshd: @trusted /etc/ssh.hosts\nin.tftpd: ALL : twist /x\n",
                  "ALL EXCEPT wlmd wlmscpfs: PARANOID\n")
    assert policy.check("10.0.0.1") == access.Decision(True, "default")


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    directory = tmp_path / "hosts.allow.d"
    directory.mkdir()
    with pytest.raises(AccessRuleError, match=rf"^{directory}:0: error: cannot read"):
        AccessPolicy.load(directory, tmp_path / "none", host_lookup=False)


def test_host_patterns_without_lookup_warn_and_never_match(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    allow_path, deny_path = write_rules(tmp_path, "wlmd: LOCAL ct1.radiology.example\n",
                                        "wlmd: .example\n")
    with caplog.at_level(logging.WARNING, logger="wlmd.security.access"):
        policy = AccessPolicy.load(allow_path, deny_path, host_lookup=False,
                                   resolver=fake_resolver(calls))
    assert policy.check("10.0.0.5") == access.Decision(True, "default")
    assert calls == []
    assert not policy.needs_host_lookup
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [f"{allow_path}:1: warning: 'LOCAL' never matches: host lookup is disabled",
                      f"{allow_path}:1: warning: 'ct1.radiology.example' never matches: host "
                      "lookup is disabled",
                      f"{deny_path}:1: warning: '.example' never matches: host lookup is disabled"]
    assert [p.fatal for p in check_rules(allow_path, deny_path, host_lookup=False)] == [False] * 3


def test_ignored_option_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="wlmd.security.access"):
        load(tmp_path, "\nwlmd: ALL : severity auth.info\n")
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'hosts.allow'}:2: warning: option 'severity' is ignored"]


def test_lookup_only_when_a_name_rule_is_reached_and_once(tmp_path: Path) -> None:
    calls: list[str] = []
    policy = load(tmp_path, "wlmd: 10.0.0.0/8\nwlmd: .a.example\nwlmd: LOCAL\n",
                  "wlmd: host.b.example\n", resolver=fake_resolver(calls))
    assert policy.needs_host_lookup
    assert policy.check("10.1.1.1").allowed
    assert calls == []
    assert policy.check("192.0.2.1") == access.Decision(True, "default")
    assert calls == ["192.0.2.1"]


def test_address_only_rules_need_no_lookup(tmp_path: Path) -> None:
    assert not load(tmp_path, "wlmd: 10. [::1]\n", "ALL: ALL\n").needs_host_lookup


@pytest.mark.parametrize(("bind", "listen", "rules", "allowed"), [
    ("127.0.0.2", "127.0.0.1", "wlmd: 127.0.0.2\n", True),
    ("127.0.0.3", "127.0.0.1", "wlmd: 127.0.0.2\n", False),
    ("127.0.0.2", "::ffff:127.0.0.1", "wlmd: 127.0.0.2\n", True),
    ("::1", "::1", "wlmd: [::1]/128\n", True),
    ("::1", "::1", "wlmd: 127.0.0.1\n", False),
])
def test_real_peer_addresses(tmp_path: Path, bind: str, listen: str, rules: str,
                             allowed: bool) -> None:
    """Peer addresses exactly as accept() gives them, including a dual-stack mapped peer."""
    policy = load(tmp_path, rules, "ALL: ALL\n", host_lookup=False)
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET
    with socket.socket(family) as server:
        if family == socket.AF_INET6:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        server.bind((listen, 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as client:
            client.settimeout(5)
            client.bind((bind, 0))
            client.connect(("127.0.0.1" if ":" not in bind else "::1", port))
            conn, peer = server.accept()
            conn.close()
    assert policy.check(peer[0]).allowed is allowed


class TestLookupHostName:
    """The default resolver keeps a reverse name only if it resolves back to the peer."""

    def test_confirmed_name(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fake_dns(monkeypatch, "ct1.example", ["::ffff:10.0.0.5", "10.0.0.9"])
        assert access.lookup_host_name("10.0.0.5") == "ct1.example"

    def test_spoofed_reverse_name_is_dropped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fake_dns(monkeypatch, "trusted.example", ["10.0.0.9"])
        assert access.lookup_host_name("10.0.0.5") is None

    def test_failed_lookup(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def fail(ip: str):
            raise socket.herror(1, "Unknown host")
        monkeypatch.setattr(socket, "gethostbyaddr", fail)
        assert access.lookup_host_name("10.0.0.5") is None

    def test_slow_lookup_times_out(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def slow(ip: str):
            time.sleep(1.0)
            return ("late.example", [], [ip])
        monkeypatch.setattr(socket, "gethostbyaddr", slow)
        started = time.monotonic()
        assert access.lookup_host_name("10.0.0.5", timeout=0.1) is None
        assert time.monotonic() - started < 0.8

    def test_used_by_default_when_lookup_is_on(self, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        fake_dns(monkeypatch, "ct1.example", ["10.0.0.5"])
        allow_path, deny_path = write_rules(tmp_path, "wlmd: ct1.example\n", "ALL: ALL\n")
        policy = AccessPolicy.load(allow_path, deny_path, host_lookup=True)
        assert policy.check("10.0.0.5").allowed
        assert not policy.check("10.0.0.6").allowed


def fake_dns(monkeypatch: pytest.MonkeyPatch, name: str, forward: list[str]) -> None:
    monkeypatch.setattr(socket, "gethostbyaddr", lambda ip: (name, [], [ip]))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, **kw: [
        (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0))
        for a in forward] if host == name else [])


@pytest.mark.parametrize(("allow", "deny", "networks"), [
    ("wlmd: 10.0.0.0/8, 192.168.1. 127.0.0.1\n", "wlmd: ALL\n",
     ["10.0.0.0/8", "192.168.1.0/24", "127.0.0.1/32"]),
    ("wlmd: [::1]\nwlmd: 172.16.0.0/255.240.0.0\n", "ALL: ALL\n", ["::1/128", "172.16.0.0/12"]),
    ("wlmd: 10.0.0.0/8\n", "", None),  # nothing denied: no allow list to give the kernel
    ("wlmd: .example.org\n", "wlmd: ALL\n", None),  # names need wlmd's lookups
    ("wlmd: 10.0.0.0/8 EXCEPT 10.0.0.1\n", "wlmd: ALL\n", None),
    ("wlmd: 10.0.0.0/8\n", "wlmd: 10.0.0.7\nwlmd: ALL\n", None),
])
def test_address_allow_list_for_systemd(tmp_path: Path, allow: str, deny: str,
                                        networks: list[str] | None) -> None:
    """Only "allow these addresses, deny ALL" becomes IPAddressAllow= for the unit."""
    assert load(tmp_path, allow, deny).address_allow_list() == networks
