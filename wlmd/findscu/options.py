"""findscu's option table: DCMTK 3.6.7 findscu's options, one row each.

The shared engine (``wlmd.cmdline``) parses, lays out ``--help`` and words the errors from this
table; ``wlmd.findscu.cli`` evaluates the options in DCMTK's order. Scripts written for DCMTK's
findscu depend on all of that, so it is reproduced rather than approximated with argparse.
"""

from __future__ import annotations

from collections.abc import Sequence

from wlmd import __version__
from wlmd.cmdline import console
from wlmd.cmdline.console import Program
from wlmd.cmdline.general import GENERAL_OPTIONS
from wlmd.cmdline.option import Option
from wlmd.cmdline.tokens import CommandLine
from wlmd.cmdline.tokens import parse as parse_arguments
from wlmd.cmdline.values import signed, text, unsigned

PROGRAM = Program(
    name="findscu",
    description="DICOM query (C-FIND) SCU",
    identification=f"$wlmd: findscu v{__version__} $",
    synopsis="peer port [dcmfile-in...]",
    parameters=(
        ("peer", "hostname of DICOM peer"),
        ("port", "tcp/ip port number of peer"),
        ("dcmfile-in", "DICOM query file(s)"),
    ),
    long_column=20,
)

NETWORK = "network options:"
TLS = "transport layer security (TLS) options:"
OUTPUT = "output options:"
KEYS = "override matching keys:"
MODEL = "query information model:"
AE_TITLES = "application entity titles:"
NEW_VR = "post-1993 value representations:"
PROPOSED = "proposed transmission transfer syntaxes:"
DEFLATE = "deflate compression level (only with --propose-deflated):"
OTHER_NETWORK = "other network options:"
STACK = "transport protocol stack:"
PASSWORD = "private key password (only with --enable-tls):"
KEY_FORMAT = "key and certificate file format:"
CA = "certification authority:"
PROFILE = "security profile:"
CIPHERS = "ciphersuite:"
SNI = "server name indication:"
RANDOM = "pseudo random generator:"
PEER = "peer authentication:"
OUTPUT_GENERAL = "general:"
CORRECTION = "automatic data correction:"
RESPONSES = "C-FIND responses:"

_O = Option

OPTIONS: tuple[Option, ...] = (
    *GENERAL_OPTIONS,
    # --- network options ---
    _O("--key", "override matching key", NETWORK, KEYS,
       short="-k", value=text('[k]ey: gggg,eeee="str", path or dict. name="str"')),
    _O("--worklist", "use modality worklist information model (def.)", NETWORK, MODEL, short="-W"),
    _O("--patient", "use patient root information model", NETWORK, MODEL, short="-P"),
    _O("--study", "use study root information model", NETWORK, MODEL, short="-S"),
    _O("--psonly", "use patient/study only information model", NETWORK, MODEL, short="-O"),
    _O("--aetitle", "set my calling AE title (default: FINDSCU)", NETWORK, AE_TITLES,
       short="-aet", value=text("[a]etitle: string")),
    _O("--call", "set called AE title of peer (default: ANY-SCP)", NETWORK, AE_TITLES,
       short="-aec", value=text("[a]etitle: string")),
    _O("--enable-new-vr", "enable support for new VRs (UN/UT) (default)", NETWORK, NEW_VR,
       short="+u"),
    _O("--disable-new-vr", "disable support for new VRs, convert to OB", NETWORK, NEW_VR,
       short="-u"),
    _O("--propose-uncompr", "propose all uncompressed TS, explicit VR\n"
       "with local byte ordering first (default)", NETWORK, PROPOSED, short="-x="),
    _O("--propose-little", "propose all uncompressed TS, explicit VR\n"
       "little endian first", NETWORK, PROPOSED, short="-xe"),
    _O("--propose-big", "propose all uncompressed TS, explicit VR\n"
       "big endian first", NETWORK, PROPOSED, short="-xb"),
    _O("--propose-deflated", "propose deflated explicit VR little endian TS\n"
       "and all uncompressed transfer syntaxes", NETWORK, PROPOSED, short="-xd"),
    _O("--propose-implicit", "propose implicit VR little endian TS only", NETWORK, PROPOSED,
       short="-xi"),
    _O("--compression-level", "0=uncompressed, 1=fastest, 9=best compression", NETWORK, DEFLATE,
       short="+cl", value=unsigned("[l]evel: integer (default: 6)", 0, 9)),
    _O("--timeout", "timeout for connection requests", NETWORK, OTHER_NETWORK,
       short="-to", value=signed("[s]econds: integer (default: unlimited)", 1)),
    _O("--socket-timeout", "timeout for network socket (0 for none)", NETWORK, OTHER_NETWORK,
       short="-ts", value=signed("[s]econds: integer (default: 60)", 0)),
    _O("--acse-timeout", "timeout for ACSE messages", NETWORK, OTHER_NETWORK,
       short="-ta", value=signed("[s]econds: integer (default: 30)", 1)),
    _O("--dimse-timeout", "timeout for DIMSE messages", NETWORK, OTHER_NETWORK,
       short="-td", value=signed("[s]econds: integer (default: unlimited)", 1)),
    _O("--max-pdu", "set max receive pdu to n bytes (default: 16384)", NETWORK, OTHER_NETWORK,
       short="-pdu", value=unsigned("[n]umber of bytes: integer (4096..131072)", 4096, 131072)),
    _O("--repeat", "repeat n times", NETWORK, OTHER_NETWORK,
       value=unsigned("[n]umber: integer", 1)),
    _O("--abort", "abort association instead of releasing it", NETWORK, OTHER_NETWORK),
    _O("--cancel", "cancel after n responses (default: never)", NETWORK, OTHER_NETWORK,
       value=signed("[n]umber: integer", 0)),
    # --- transport layer security (TLS) options ---
    _O("--disable-tls", "use normal TCP/IP connection (default)", TLS, STACK, short="-tls"),
    _O("--enable-tls", "use authenticated secure TLS connection", TLS, STACK,
       short="+tls", value=text("[p]rivate key file, [c]ertificate file: string", count=2)),
    _O("--anonymous-tls", "use secure TLS connection without certificate", TLS, STACK,
       short="+tla"),
    _O("--std-passwd", "prompt user to type password on stdin (default)", TLS, PASSWORD,
       short="+ps"),
    _O("--use-passwd", "use specified password", TLS, PASSWORD,
       short="+pw", value=text("[p]assword: string")),
    _O("--null-passwd", "use empty string as password", TLS, PASSWORD, short="-pw"),
    _O("--pem-keys", "read keys and certificates as PEM file (default)", TLS, KEY_FORMAT,
       short="-pem"),
    _O("--der-keys", "read keys and certificates as DER file", TLS, KEY_FORMAT, short="-der"),
    _O("--add-cert-file", "add certificate file to list of certificates", TLS, CA,
       short="+cf", value=text("[f]ilename: string")),
    _O("--add-cert-dir", "add certificates in d to list of certificates", TLS, CA,
       short="+cd", value=text("[d]irectory: string")),
    _O("--add-crl-file", "add certificate revocation list file\n"
       "(implies --enable-crl-vfy)", TLS, CA, short="+crl", value=text("[f]ilename: string")),
    _O("--enable-crl-vfy", "enable leaf CRL verification", TLS, CA, short="+crv"),
    _O("--enable-crl-all", "enable full chain CRL verification", TLS, CA, short="+cra"),
    _O("--profile-8996", "BCP 195 RFC 8996 TLS Profile (default)", TLS, PROFILE, short="+pg"),
    _O("--profile-8996-mod", "Modified BCP 195 RFC 8996 TLS Profile", TLS, PROFILE, short="+pm"),
    _O("--profile-bcp195-nd", "Non-downgrading BCP 195 TLS Profile (retired)", TLS, PROFILE,
       short="+py"),
    _O("--profile-bcp195", "BCP 195 TLS Profile (retired)", TLS, PROFILE, short="+px"),
    _O("--profile-bcp195-ex", "Extended BCP 195 TLS Profile (retired)", TLS, PROFILE, short="+pz"),
    _O("--profile-basic", "Basic TLS Secure Transport Connection Profile\n"
       "(retired, needs 3DES: refused)", TLS, PROFILE, short="+pb"),
    _O("--profile-aes", "AES TLS Secure Transport Connection Profile\n(retired)", TLS, PROFILE,
       short="+pa"),
    _O("--profile-null", "Authenticated unencrypted communication\n"
       "(retired, was used in IHE ATNA: refused)", TLS, PROFILE, short="+pn"),
    _O("--list-ciphers", "show list of supported TLS ciphersuites and exit", TLS, CIPHERS,
       short="+cc"),
    _O("--cipher", "add ciphersuite to list of negotiated suites", TLS, CIPHERS,
       short="+cs", value=text("[c]iphersuite name: string")),
    _O("--no-sni", "do not use SNI (default)", TLS, SNI),
    _O("--request-sni", "request server name s", TLS, SNI, value=text("[s]erver name: string")),
    _O("--seed", "seed random generator with contents of f", TLS, RANDOM,
       short="+rs", value=text("[f]ilename: string")),
    _O("--write-seed", "write back modified seed (only with --seed)", TLS, RANDOM, short="+ws"),
    _O("--write-seed-file", "write modified seed to file f", TLS, RANDOM,
       short="+wf", value=text("[f]ilename: string (only with --seed)")),
    _O("--require-peer-cert", "verify peer certificate, fail if absent (default)", TLS, PEER,
       short="-rc"),
    _O("--ignore-peer-cert", "don't verify peer certificate", TLS, PEER, short="-ic"),
    # --- output options ---
    _O("--output-directory", "write output files to existing directory d", OUTPUT, OUTPUT_GENERAL,
       short="-od", value=text('[d]irectory: string (default: ".")')),
    _O("--enable-correction", "enable automatic data correction", OUTPUT, CORRECTION, short="+dc"),
    _O("--disable-correction", "disable automatic data correction (default)", OUTPUT, CORRECTION,
       short="-dc"),
    _O("--show-responses", "always output responses to the logger", OUTPUT, RESPONSES, short="+sr"),
    _O("--hide-responses", "do not output responses to the logger", OUTPUT, RESPONSES, short="-sr"),
    _O("--extract", "extract responses to DICOM file (rsp0001.dcm...)", OUTPUT, RESPONSES,
       short="-X"),
    _O("--extract-xml", "extract responses to XML file (rsp0001.xml...)", OUTPUT, RESPONSES,
       short="-Xx"),
    _O("--extract-xml-single", "extract all responses to given XML file f", OUTPUT, RESPONSES,
       short="-Xs", value=text("[f]ilename: string")),
    _O("--limit-output", "limit number of responses extracted to file to n\n"
       "(default: unlimited)", OUTPUT, RESPONSES,
       short="-Xlo", value=unsigned("[n]umber: integer", 1)),
)

BY_LONG: dict[str, Option] = {option.long: option for option in OPTIONS}


def parse(argv: Sequence[str]) -> CommandLine:
    """Split ``argv`` (without the program name) into options and parameters, DCMTK's way."""
    return parse_arguments(argv, OPTIONS)


def render_help() -> str:
    """``findscu --help``."""
    return console.render_help(PROGRAM, OPTIONS)


def read_int(cmd: CommandLine, long: str, default: int) -> int:
    """The rightmost value of integer option ``long``, read and range-checked as DCMTK does."""
    values = cmd.values(long)
    if not values:
        return default
    spec = BY_LONG[long].value
    assert spec is not None
    value = spec.read(long, values[-1][0])
    assert isinstance(value, int)
    return value
