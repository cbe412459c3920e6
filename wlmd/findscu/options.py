"""DCMTK-style command line for findscu: one option table drives parsing, -h and --arguments.

DCMTK's console applications accept ``-x``/``+x`` options anywhere, expand ``@file`` arguments,
print their help in a fixed two-column layout and report errors as ``error: ...`` after a
two-line banner. Scripts written for DCMTK's findscu depend on all of that, so it is reproduced
here rather than approximated with argparse.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from wlmd import __version__

PROGRAM = "findscu"
BANNER = f"$wlmd: {PROGRAM} v{__version__} $\n\n{PROGRAM}: DICOM query (C-FIND) SCU"
USAGE = f"usage: {PROGRAM} [options] peer port [dcmfile-in...]"
PARAMETERS = (
    ("peer", "hostname of DICOM peer"),
    ("port", "tcp/ip port number of peer"),
    ("dcmfile-in", "DICOM query file(s)"),
)


class UsageError(Exception):
    """A command line DCMTK would refuse: printed after the banner as ``error: ...``, exit 1."""


@dataclass(frozen=True)
class Option:
    """One row of the option table: spellings, argument count and help lines."""

    short: str | None
    long: str
    nargs: int
    help: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    """A heading of ``-h``; ``level`` 1 for sections, 2 for their sub-headings."""

    title: str
    level: int
    options: tuple[Option, ...] = ()


def _o(short: str | None, long: str, *help_lines: str, nargs: int = 0) -> Option:
    return Option(short, long, nargs, help_lines)


_TLS_PROFILES = (
    _o("+pg", "--profile-8996", "BCP 195 RFC 8996 TLS Profile (default)"),
    _o("+pm", "--profile-8996-mod", "Modified BCP 195 RFC 8996 TLS Profile"),
    _o("+py", "--profile-bcp195-nd", "Non-downgrading BCP 195 TLS Profile (retired)"),
    _o("+px", "--profile-bcp195", "BCP 195 TLS Profile (retired)"),
    _o("+pz", "--profile-bcp195-ex", "Extended BCP 195 TLS Profile (retired)"),
    _o("+pb", "--profile-basic", "Basic TLS Secure Transport Connection Profile",
       "(retired, needs 3DES: refused)"),
    _o("+pa", "--profile-aes", "AES TLS Secure Transport Connection Profile", "(retired)"),
    _o("+pn", "--profile-null", "Authenticated unencrypted communication",
       "(retired, was used in IHE ATNA: refused)"),
)

GROUPS: tuple[Group, ...] = (
    Group("general options", 1, (
        _o("-h", "--help", "print this help text and exit"),
        _o(None, "--version", "print version information and exit"),
        _o(None, "--arguments", "print expanded command line arguments"),
        _o("-q", "--quiet", "quiet mode, print no warnings and errors"),
        _o("-v", "--verbose", "verbose mode, print processing details"),
        _o("-d", "--debug", "debug mode, print debug information"),
        _o("-ll", "--log-level", "[l]evel: string constant",
           "(fatal, error, warn, info, debug, trace)", "use level l for the logger", nargs=1),
        _o("-lc", "--log-config", "[f]ilename: string", "use config file f for the logger",
           nargs=1),
    )),
    Group("network options", 1),
    Group("override matching keys:", 2, (
        _o("-k", "--key", '[k]ey: gggg,eeee="str", path or dict. name="str"',
           "override matching key", nargs=1),
    )),
    Group("query information model:", 2, (
        _o("-W", "--worklist", "use modality worklist information model (def.)"),
        _o("-P", "--patient", "use patient root information model"),
        _o("-S", "--study", "use study root information model"),
        _o("-O", "--psonly", "use patient/study only information model"),
    )),
    Group("application entity titles:", 2, (
        _o("-aet", "--aetitle", "[a]etitle: string", "set my calling AE title (default: FINDSCU)",
           nargs=1),
        _o("-aec", "--call", "[a]etitle: string", "set called AE title of peer (default: ANY-SCP)",
           nargs=1),
    )),
    Group("post-1993 value representations:", 2, (
        _o("+u", "--enable-new-vr", "enable support for new VRs (UN/UT) (default)"),
        _o("-u", "--disable-new-vr", "disable support for new VRs, convert to OB"),
    )),
    Group("proposed transmission transfer syntaxes:", 2, (
        _o("-x=", "--propose-uncompr", "propose all uncompressed TS, explicit VR",
           "with local byte ordering first (default)"),
        _o("-xe", "--propose-little", "propose all uncompressed TS, explicit VR",
           "little endian first"),
        _o("-xb", "--propose-big", "propose all uncompressed TS, explicit VR",
           "big endian first"),
        _o("-xd", "--propose-deflated", "propose deflated explicit VR little endian TS",
           "and all uncompressed transfer syntaxes"),
        _o("-xi", "--propose-implicit", "propose implicit VR little endian TS only"),
    )),
    Group("deflate compression level (only with --propose-deflated):", 2, (
        _o("+cl", "--compression-level", "[l]evel: integer (default: 6)",
           "0=uncompressed, 1=fastest, 9=best compression", nargs=1),
    )),
    Group("other network options:", 2, (
        _o("-to", "--timeout", "[s]econds: integer (default: unlimited)",
           "timeout for connection requests", nargs=1),
        _o("-ts", "--socket-timeout", "[s]econds: integer (default: 60)",
           "timeout for network socket (0 for none)", nargs=1),
        _o("-ta", "--acse-timeout", "[s]econds: integer (default: 30)",
           "timeout for ACSE messages", nargs=1),
        _o("-td", "--dimse-timeout", "[s]econds: integer (default: unlimited)",
           "timeout for DIMSE messages", nargs=1),
        _o("-pdu", "--max-pdu", "[n]umber of bytes: integer (4096..131072)",
           "set max receive pdu to n bytes (default: 16384)", nargs=1),
        _o(None, "--repeat", "[n]umber: integer", "repeat n times", nargs=1),
        _o(None, "--abort", "abort association instead of releasing it"),
        _o(None, "--cancel", "[n]umber: integer", "cancel after n responses (default: never)",
           nargs=1),
    )),
    Group("transport layer security (TLS) options", 1),
    Group("transport protocol stack:", 2, (
        _o("-tls", "--disable-tls", "use normal TCP/IP connection (default)"),
        _o("+tls", "--enable-tls", "[p]rivate key file, [c]ertificate file: string",
           "use authenticated secure TLS connection", nargs=2),
        _o("+tla", "--anonymous-tls", "use secure TLS connection without certificate"),
    )),
    Group("private key password (only with --enable-tls):", 2, (
        _o("+ps", "--std-passwd", "prompt user to type password on stdin (default)"),
        _o("+pw", "--use-passwd", "[p]assword: string", "use specified password", nargs=1),
        _o("-pw", "--null-passwd", "use empty string as password"),
    )),
    Group("key and certificate file format:", 2, (
        _o("-pem", "--pem-keys", "read keys and certificates as PEM file (default)"),
        _o("-der", "--der-keys", "read keys and certificates as DER file"),
    )),
    Group("certification authority:", 2, (
        _o("+cf", "--add-cert-file", "[f]ilename: string",
           "add certificate file to list of certificates", nargs=1),
        _o("+cd", "--add-cert-dir", "[d]irectory: string",
           "add certificates in d to list of certificates", nargs=1),
        _o("+crl", "--add-crl-file", "[f]ilename: string",
           "add certificate revocation list file", "(implies --enable-crl-vfy)", nargs=1),
        _o("+crv", "--enable-crl-vfy", "enable leaf CRL verification"),
        _o("+cra", "--enable-crl-all", "enable full chain CRL verification"),
    )),
    Group("security profile:", 2, _TLS_PROFILES),
    Group("ciphersuite:", 2, (
        _o("+cc", "--list-ciphers", "show list of supported TLS ciphersuites and exit"),
        _o("+cs", "--cipher", "[c]iphersuite name: string",
           "add ciphersuite to list of negotiated suites", nargs=1),
    )),
    Group("server name indication:", 2, (
        _o(None, "--no-sni", "do not use SNI (default)"),
        _o(None, "--request-sni", "[s]erver name: string", "request server name s", nargs=1),
    )),
    Group("pseudo random generator:", 2, (
        _o("+rs", "--seed", "[f]ilename: string", "seed random generator with contents of f",
           nargs=1),
        _o("+ws", "--write-seed", "write back modified seed (only with --seed)"),
        _o("+wf", "--write-seed-file", "[f]ilename: string (only with --seed)",
           "write modified seed to file f", nargs=1),
    )),
    Group("peer authentication:", 2, (
        _o("-rc", "--require-peer-cert", "verify peer certificate, fail if absent (default)"),
        _o("-ic", "--ignore-peer-cert", "don't verify peer certificate"),
    )),
    Group("output options", 1),
    Group("general:", 2, (
        _o("-od", "--output-directory", '[d]irectory: string (default: ".")',
           "write output files to existing directory d", nargs=1),
    )),
    Group("automatic data correction:", 2, (
        _o("+dc", "--enable-correction", "enable automatic data correction"),
        _o("-dc", "--disable-correction", "disable automatic data correction (default)"),
    )),
    Group("C-FIND responses:", 2, (
        _o("+sr", "--show-responses", "always output responses to the logger"),
        _o("-sr", "--hide-responses", "do not output responses to the logger"),
        _o("-X", "--extract", "extract responses to DICOM file (rsp0001.dcm...)"),
        _o("-Xx", "--extract-xml", "extract responses to XML file (rsp0001.xml...)"),
        _o("-Xs", "--extract-xml-single", "[f]ilename: string",
           "extract all responses to given XML file f", nargs=1),
        _o("-Xlo", "--limit-output", "[n]umber: integer",
           "limit number of responses extracted to file to n", "(default: unlimited)", nargs=1),
    )),
)

_BY_SPELLING: dict[str, Option] = {
    spelling: opt
    for group in GROUPS for opt in group.options
    for spelling in (opt.short, opt.long) if spelling
}


@dataclass
class CommandLine:
    """The parsed command line: options in the order given, then the positional parameters."""

    options: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    expanded: list[str] = field(default_factory=list)  # long spellings, for --arguments

    def has(self, *longs: str) -> bool:
        """True if any of the long options was given."""
        return any(name in longs for name, _ in self.options)

    def last(self, *longs: str) -> tuple[str, tuple[str, ...]] | None:
        """The rightmost of mutually exclusive options (DCMTK: the rightmost one wins)."""
        found = [(name, values) for name, values in self.options if name in longs]
        return found[-1] if found else None

    def values(self, long: str) -> list[tuple[str, ...]]:
        """Every value tuple given to a repeatable option, in order."""
        return [values for name, values in self.options if name == long]


def expand_command_files(argv: list[str]) -> list[str]:
    """Replace each ``@file`` argument by the whitespace-separated words of that file."""
    out: list[str] = []
    for arg in argv:
        if arg.startswith("@") and len(arg) > 1:
            try:
                text = Path(arg[1:]).read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise UsageError(f"cannot open command file '{arg[1:]}'") from exc
            out += shlex.split(text, comments=False, posix=True)
        else:
            out.append(arg)
    return out


def _looks_like_option(arg: str) -> bool:
    return len(arg) > 1 and arg[0] in "-+" and not arg[1:].lstrip("-").isdigit()


def parse(argv: list[str]) -> CommandLine:
    """Split ``argv`` (without the program name) into options and parameters, DCMTK's way."""
    args = expand_command_files(argv)
    cmd = CommandLine()
    i = 0
    while i < len(args):
        arg = args[i]
        opt = _BY_SPELLING.get(arg)
        if opt is None:
            if _looks_like_option(arg):
                raise UsageError(f"Unknown option {arg}")
            cmd.params.append(arg)
            cmd.expanded.append(arg)
            i += 1
            continue
        values = tuple(args[i + 1 : i + 1 + opt.nargs])
        if len(values) < opt.nargs:
            raise UsageError(f"Missing value for option {opt.long}")
        cmd.options.append((opt.long, values))
        cmd.expanded += [opt.long, *values]
        i += 1 + opt.nargs
    return cmd


def render_help() -> str:
    """The ``-h`` text in DCMTK's layout: short spelling, long spelling, then help at column 32."""
    lines = [BANNER, USAGE, "", "parameters:"]
    lines += [f"  {name:<30}{text}" for name, text in PARAMETERS]
    for group in GROUPS:
        lines.append(("  " * (group.level - 1)) + group.title)
        for opt in group.options:
            lines += _option_lines(opt, group.level)
    return "\n".join(lines) + "\n"


def _option_lines(opt: Option, level: int) -> list[str]:
    short_width = 8 if level == 1 else 6
    indent = "  " * level
    head = f"{indent}{opt.short or '':<{short_width}}{opt.long:<22}"
    pad = " " * len(head)
    return [f"{head}{opt.help[0]}"] + [f"{pad}{text}" for text in opt.help[1:]]


def parse_int(long: str, text: str, low: int, high: int | None = None) -> int:
    """An integer option value with DCMTK's messages for junk and out-of-range values."""
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"Invalid value for option {long} ({text})") from None
    if value < low:
        raise UsageError(f"Invalid value for option {long} (underflow: {value})")
    if high is not None and value > high:
        raise UsageError(f"Invalid value for option {long} (overflow: {value})")
    return value
