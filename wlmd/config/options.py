"""wlmd's option table: every option of wlmscpfs 3.6.7 and wlmd's own, one row each.

Each row names the ``Settings`` field it sets, so the command line (``wlmd.config.commandline``),
``--help``, the config file keys (``wlmd.config.file``) and the man page all come from
``OPTIONS`` and cannot drift apart. Keep one entry per option so that additions merge.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from logging.handlers import SysLogHandler

from wlmd.cmdline.general import GENERAL_OPTIONS
from wlmd.cmdline.option import Option
from wlmd.cmdline.render import render_man_option_list
from wlmd.cmdline.values import ValueSpec, path, seconds, signed, text, unsigned
from wlmd.config.settings import (
    CharsetMode,
    IpFamily,
    LogFormat,
    RefreshMode,
    TlsProfile,
    TransferSyntaxPreference,
)

# --- wlmd's own value kinds ---


def _ip_address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _listen_address(text: str) -> str | None:
    """``port``, ``address:port`` or ``[v6address]:port``; returned as given when valid."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    host = host.strip("[]")
    if host and _ip_address(host) is None:
        return None
    return text


def _scope(text: str) -> str | None:
    return text if text in ("read", "write") else None


def _facility(text: str) -> str | None:
    return text if text in SysLogHandler.facility_names else None


def _tls_profile(text: str) -> TlsProfile | None:
    return next((p for p in TlsProfile if p.value == text), None)


def _log_format(text: str) -> LogFormat | None:
    return next((f for f in LogFormat if f.value == text), None)


def _refresh_mode(text: str) -> RefreshMode | None:
    return next((m for m in RefreshMode if m.value == text), None)


def _needs(field: str, wanted: object) -> Callable[[dict[str, object]], bool]:
    return lambda values: values.get(field) == wanted


def _has(field: str) -> Callable[[dict[str, object]], bool]:
    return lambda values: bool(values.get(field))


MULTI = "multi-process options:"
INPUT = "input options:"
PROCESSING = "processing options:"
NETWORK = "network options:"
OUTPUT = "output options:"
WLMD = "wlmd options:"

_O = Option

OPTIONS: tuple[Option, ...] = (
    *GENERAL_OPTIONS,
    _O("--single-process", "single process mode", MULTI, short="-s",
       field="single_process", const=True),
    _O("--fork", "fork child process for each association (def.)", MULTI,
       field="single_process", const=False),
    _O("--data-files-path", "path to worklist data files", INPUT, "general:", short="-dfp",
       field="data_files_path", value=path("[p]ath: string (default: .)")),
    _O("--enable-file-reject", "enable rejection of incomplete worklist files\n(default)", INPUT,
       "handling of worklist files:", short="-efr", field="file_reject", const=True),
    _O("--disable-file-reject", "disable rejection of incomplete worklist files", INPUT,
       "handling of worklist files:", short="-dfr", field="file_reject", const=False),
    _O("--return-no-char-set", "return no specific character set (default)", PROCESSING,
       "returned character set:", short="-cs0", field="return_charset", const=CharsetMode.NONE),
    _O("--return-iso-ir-100", "return specific character set ISO IR 100", PROCESSING,
       "returned character set:", short="-cs1", field="return_charset",
       const=CharsetMode.ISO_IR_100),
    _O("--keep-char-set", "return character set provided in file", PROCESSING,
       "returned character set:", short="-csk", field="return_charset", const=CharsetMode.KEEP),
    _O("--no-sq-expansion", "disable expansion of empty sequences in C-FIND\nrequest messages",
       PROCESSING, "other processing options:", short="-nse", field="sequence_expansion",
       const=False),
    _O("--ipv4", "use IPv4 only (default)", NETWORK, "IP protocol version:", short="-i4",
       field="ip_family", const=IpFamily.IPV4, in_wlmscpfs=False),
    _O("--ipv6", "use IPv6 only", NETWORK, "IP protocol version:", short="-i6",
       field="ip_family", const=IpFamily.IPV6, in_wlmscpfs=False),
    _O("--ip-auto", "use IPv6/IPv4 dual stack", NETWORK, "IP protocol version:", short="-i0",
       field="ip_family", const=IpFamily.AUTO, in_wlmscpfs=False),
    _O("--prefer-uncompr", "prefer explicit VR local byte order (default)", NETWORK,
       "preferred network transfer syntaxes:", short="+x=", field="transfer_syntax",
       const=TransferSyntaxPreference.UNCOMPRESSED),
    _O("--prefer-little", "prefer explicit VR little endian TS", NETWORK,
       "preferred network transfer syntaxes:", short="+xe", field="transfer_syntax",
       const=TransferSyntaxPreference.LITTLE),
    _O("--prefer-big", "prefer explicit VR big endian TS", NETWORK,
       "preferred network transfer syntaxes:", short="+xb", field="transfer_syntax",
       const=TransferSyntaxPreference.BIG),
    _O("--prefer-deflated", "prefer deflated explicit VR little endian TS", NETWORK,
       "preferred network transfer syntaxes:", short="+xd", field="transfer_syntax",
       const=TransferSyntaxPreference.DEFLATED),
    _O("--implicit", "accept implicit VR little endian TS only", NETWORK,
       "preferred network transfer syntaxes:", short="+xi", field="transfer_syntax",
       const=TransferSyntaxPreference.IMPLICIT),
    _O("--access-full", "accept connections from any host (default)", NETWORK,
       "network host access control (tcp wrapper):", short="-ac", field="access_control",
       const=False),
    _O("--access-control", "enforce host access control rules", NETWORK,
       "network host access control (tcp wrapper):", short="+ac", field="access_control",
       const=True),
    _O("--enable-new-vr", "enable support for new VRs (UN/UT) (default)", NETWORK,
       "post-1993 value representations:", short="+u", field="new_vr", const=True),
    _O("--disable-new-vr", "disable support for new VRs, convert to OB", NETWORK,
       "post-1993 value representations:", short="-u", field="new_vr", const=False),
    _O("--compression-level", "0=uncompressed, 1=fastest, 9=best compression", NETWORK,
       "deflate compression level (only with --prefer-deflated):", short="+cl",
       field="compression_level", value=unsigned("[l]evel: integer (default: 6)", 0, 9),
       requires=("--prefer-deflated",
                 _needs("transfer_syntax", TransferSyntaxPreference.DEFLATED))),
    _O("--acse-timeout", "timeout for ACSE messages", NETWORK, "other network options:",
       short="-ta", field="acse_timeout", value=signed("[s]econds: integer (default: 30)", 1)),
    _O("--dimse-timeout", "timeout for DIMSE messages", NETWORK, "other network options:",
       short="-td", field="dimse_timeout",
       value=signed("[s]econds: integer (default: unlimited)", 1)),
    _O("--max-associations", "limit maximum number of parallel associations", NETWORK,
       "other network options:", field="max_associations",
       value=signed("[a]ssocs: integer (default: 50)", 1)),
    _O("--refuse", "refuse association", NETWORK, "other network options:", field="refuse",
       const=True),
    _O("--reject", "reject association if no implement. class UID", NETWORK,
       "other network options:", field="reject", const=True),
    _O("--no-fail", "don't fail on an invalid query", NETWORK, "other network options:",
       field="no_fail", const=True),
    _O("--sleep-before", "sleep s seconds before find (default: 0)", NETWORK,
       "other network options:", field="sleep_before", value=unsigned("[s]econds: integer", 0)),
    _O("--sleep-after", "sleep s seconds after find (default: 0)", NETWORK,
       "other network options:", field="sleep_after", value=unsigned("[s]econds: integer", 0)),
    _O("--sleep-during", "sleep s seconds during find (default: 0)", NETWORK,
       "other network options:", field="sleep_during", value=unsigned("[s]econds: integer", 0)),
    _O("--max-pdu", "set max receive pdu to n bytes (default: 16384)", NETWORK,
       "other network options:", short="-pdu", field="max_pdu",
       value=unsigned("[n]umber of bytes: integer (4096..131072)", 4096, 131072)),
    _O("--disable-host-lookup", "disable hostname lookup", NETWORK, "other network options:",
       short="-dhl", field="host_lookup", const=False),
    _O("--request-file-path", "path to store request files to", OUTPUT, "general:",
       short="-rfp", field="request_file_path", value=path("[p]ath: string")),
    _O("--request-file-format", "request file name format", OUTPUT, "general:", short="-rff",
       field="request_file_format", value=text("[f]ormat: string (default: #t.dump)"),
       requires=("--request-file-path", _has("request_file_path"))),
    # --- wlmd's own options: long spellings only ---
    _O("--config", "read settings from TOML file f\n(default: /etc/wlmd/wlmd.conf if present)",
       WLMD, "configuration and daemon:", field="config_file",
       value=path("[f]ilename: string"), in_wlmscpfs=False),
    _O("--check-config", "check configuration, access rules, TLS files,\n"
       "data path, port and user, then exit", WLMD, "configuration and daemon:",
       in_wlmscpfs=False),
    _O("--daemon", "detach from the terminal and run in the background", WLMD,
       "configuration and daemon:", field="daemon", const=True, in_wlmscpfs=False),
    _O("--pid-file", "write the server's process id to file f", WLMD,
       "configuration and daemon:", field="pid_file", value=path("[f]ilename: string"),
       in_wlmscpfs=False),
    _O("--index-file", "keep the parsed worklist in file f, so that a\nrestart parses "
       "changed files only; serve while it loads\n(default: none)", WLMD,
       "configuration and daemon:", field="index_file", value=path("[f]ilename: string"),
       in_wlmscpfs=False),
    _O("--user", "run as user u after binding the port", WLMD, "configuration and daemon:",
       field="user", value=text("[u]ser: string"), in_wlmscpfs=False),
    _O("--group", "run as group g after binding the port", WLMD, "configuration and daemon:",
       field="group", value=text("[g]roup: string"), in_wlmscpfs=False),
    _O("--refresh", "how changed worklist files are found: inotify,\n"
       "stat (scan; for directories shared by several\nnodes) or auto (stat on NFS, CephFS, "
       "CIFS...)", WLMD, "worklist directory:", field="refresh",
       value=ValueSpec("[m]ode: string (default: auto)", _refresh_mode), in_wlmscpfs=False),
    _O("--listen-address", "listen on address a only (default: all addresses)", WLMD,
       "network:", field="listen_address",
       value=ValueSpec("[a]ddress: IPv4 or IPv6 address", _ip_address), in_wlmscpfs=False),
    _O("--max-associations-per-host", "limit parallel associations per peer address\n"
       "(default: 0 = unlimited)", WLMD, "network:", field="max_associations_per_host",
       value=unsigned("[a]ssocs: integer", 0), in_wlmscpfs=False),
    _O("--idle-timeout", "close an association idle between commands\nfor s seconds "
       "(default: never)", WLMD, "network:", field="idle_timeout",
       value=seconds("[s]econds: number"), in_wlmscpfs=False),
    _O("--hosts-allow", "host access rules allowing peers (with +ac)", WLMD, "network:",
       field="hosts_allow", value=path("[f]ilename: string (default: /etc/hosts.allow)"),
       in_wlmscpfs=False),
    _O("--hosts-deny", "host access rules denying peers (with +ac)", WLMD, "network:",
       field="hosts_deny", value=path("[f]ilename: string (default: /etc/hosts.deny)"),
       in_wlmscpfs=False),
    _O("--min-spare-workers", "keep at least n idle worker processes", WLMD, "worker pool:",
       field="min_spare_workers", value=unsigned("[n]umber: integer (default: 2)", 0),
       in_wlmscpfs=False),
    _O("--max-spare-workers", "keep at most n idle worker processes", WLMD, "worker pool:",
       field="max_spare_workers", value=unsigned("[n]umber: integer (default: 8)", 1),
       in_wlmscpfs=False),
    _O("--worker-max-uses", "recycle a worker after n associations", WLMD, "worker pool:",
       field="worker_max_uses", value=unsigned("[n]umber: integer (default: 1000)", 1),
       in_wlmscpfs=False),
    _O("--worker-timeout", "kill a busy worker silent for s seconds", WLMD, "worker pool:",
       field="worker_timeout", value=seconds("[s]econds: number (default: 30)"),
       in_wlmscpfs=False),
    _O("--worker-max-memory", "recycle a worker above m MiB of private memory", WLMD,
       "worker pool:", field="worker_max_memory_mb",
       value=unsigned("[m]ebibytes: integer (default: 512)", 1), in_wlmscpfs=False),
    _O("--graceful-timeout", "on SIGTERM, let associations finish for s seconds", WLMD,
       "worker pool:", field="graceful_timeout",
       value=seconds("[s]econds: number (default: 30)", allow_zero=True), in_wlmscpfs=False),
    _O("--log-format", "text: DCMTK's layout; json: one JSON object per line", WLMD,
       "logging:", field="log_format", value=ValueSpec("[f]ormat: text or json (default: text)",
                                                       _log_format), in_wlmscpfs=False),
    _O("--syslog", "log to syslog instead of standard error", WLMD, "logging:",
       field="syslog", const=True, in_wlmscpfs=False),
    _O("--syslog-facility", "syslog facility (daemon, local0..local7, ...)", WLMD, "logging:",
       field="syslog_facility", value=ValueSpec("[f]acility: string (default: daemon)",
                                                _facility), in_wlmscpfs=False),
    _O("--syslog-socket", "syslog socket path, or host:port for UDP", WLMD, "logging:",
       field="syslog_socket", value=text("[s]ocket: string (default: /dev/log)"),
       in_wlmscpfs=False),
    _O("--max-identifier-size", "refuse C-FIND identifiers above n bytes", WLMD, "limits:",
       field="max_identifier_bytes", value=unsigned("[n]umber of bytes: integer "
                                                    "(default: 1048576)", 1),
       in_wlmscpfs=False),
    _O("--max-sequence-depth", "refuse identifiers nesting sequences deeper than n", WLMD,
       "limits:", field="max_sequence_depth", value=unsigned("[n]umber: integer (default: 8)",
                                                             1), in_wlmscpfs=False),
    _O("--max-sequence-items", "refuse identifiers with more than n sequence items",
       WLMD, "limits:", field="max_sequence_items",
       value=unsigned("[n]umber: integer (default: 64)", 1), in_wlmscpfs=False),
    _O("--max-responses",
       "refuse (0xA700) a C-FIND matching more than n\nentries (default: 0 = unlimited)", WLMD,
       "limits:", field="max_responses", value=unsigned("[n]umber: integer", 0),
       in_wlmscpfs=False),
    _O("--tls-key", "enable TLS with private key file f (PEM)", WLMD, "TLS:",
       field="tls_key", value=path("[f]ilename: string"), in_wlmscpfs=False),
    _O("--tls-cert", "server certificate file f (PEM)", WLMD, "TLS:", field="tls_cert",
       value=path("[f]ilename: string"), in_wlmscpfs=False),
    _O("--tls-ca-file", "trust peer certificates signed by CAs in file f\n"
       "(a client certificate is then verified if sent)", WLMD, "TLS:",
       field="tls_ca_file", value=path("[f]ilename: string"), in_wlmscpfs=False),
    _O("--tls-require-peer-cert", "require a valid client certificate", WLMD, "TLS:",
       field="tls_require_peer_cert", const=True, in_wlmscpfs=False),
    _O("--tls-profile", "TLS security profile p, as findscu's +pg ... +pa:\n"
       + ", ".join(p.value for p in TlsProfile), WLMD, "TLS:", field="tls_profile",
       value=ValueSpec("[p]rofile: string (default: 8996)", _tls_profile), in_wlmscpfs=False),
    _O("--hl7-listen", "accept HL7 orders over MLLP on [address:]port\n(default: off)", WLMD,
       "HL7 order intake:", field="hl7_listen",
       value=ValueSpec("[a]ddress: [address:]port", _listen_address), in_wlmscpfs=False),
    _O("--hl7-mapping", "map HL7 fields to worklist attributes as TOML\nfile f says "
       "(default: IHE mapping)", WLMD, "HL7 order intake:", field="hl7_mapping",
       value=path("[f]ilename: string"), in_wlmscpfs=False),
    _O("--hl7-journal", "keep the HL7 journal in directory d (default:\n"
       "hl7-journal beside the data files path)", WLMD, "HL7 order intake:",
       field="hl7_journal", value=path("[d]irectory: string"), in_wlmscpfs=False),
    _O("--hl7-tls", "MLLP over TLS with the --tls-key and --tls-cert", WLMD,
       "HL7 order intake:", field="hl7_tls", const=True, in_wlmscpfs=False),
    _O("--hl7-allow-senders", "accept MLLP connections from these addresses or\n"
       "networks only (comma-separated)", WLMD, "HL7 order intake:",
       field="hl7_allow_senders", value=text("[l]ist: string"), in_wlmscpfs=False),
    _O("--hl7-allow-applications", "accept messages from these MSH-3 applications\n"
       "(APP or APP^FACILITY, comma-separated) only", WLMD, "HL7 order intake:",
       field="hl7_allow_applications", value=text("[l]ist: string"), in_wlmscpfs=False),
    _O("--hl7-max-message-size", "refuse HL7 messages above n bytes", WLMD,
       "HL7 order intake:", field="hl7_max_message_bytes",
       value=unsigned("[n]umber of bytes: integer (default: 1048576)", 256),
       in_wlmscpfs=False),
    _O("--hl7-max-rate", "accept at most r messages per second and\nconnection "
       "(default: 0 = unlimited)", WLMD, "HL7 order intake:", field="hl7_max_rate",
       value=seconds("[r]ate: number", allow_zero=True), in_wlmscpfs=False),
    _O("--hl7-max-connections", "serve at most n MLLP connections at once", WLMD,
       "HL7 order intake:", field="hl7_max_connections",
       value=unsigned("[n]umber: integer (default: 16)", 1), in_wlmscpfs=False),
    _O("--mpps", "also serve Modality Performed Procedure Step\n(N-CREATE/N-SET) on the same port",
       WLMD, "MPPS:", field="mpps", const=True, in_wlmscpfs=False),
    _O("--mpps-path", "keep MPPS instances under path p, one\ndirectory per called AE",
       WLMD, "MPPS:", field="mpps_path", value=path("[p]ath: string"), in_wlmscpfs=False),
    _O("--http-listen", "serve DICOMweb search, entries, metrics and\nstatus on [address:]port "
       "(default: off)", WLMD, "HTTP:", field="http_listen",
       value=ValueSpec("[a]ddress: [address:]port", _listen_address), in_wlmscpfs=False),
    _O("--http-tokens", "bearer tokens (NAME read|write sha256:HEX per\nline) in file f", WLMD,
       "HTTP:", field="http_tokens", value=path("[f]ilename: string"), in_wlmscpfs=False),
    _O("--http-tls", "HTTPS with the --tls-key, --tls-cert and CA", WLMD, "HTTP:",
       field="http_tls", const=True, in_wlmscpfs=False),
    _O("--http-client-cert-scope", "give verified TLS clients scope s (read or\nwrite; needs "
       "--tls-require-peer-cert)", WLMD, "HTTP:", field="http_client_cert_scope",
       value=ValueSpec("[s]cope: read|write", _scope), in_wlmscpfs=False),
    _O("--http-max-body", "refuse HTTP request bodies above n bytes", WLMD, "HTTP:",
       field="http_max_body",
       value=unsigned("[n]umber of bytes: integer (default: 1048576)", 256), in_wlmscpfs=False),
    _O("--http-rate", "accept r HTTP requests per second and client\naddress in each HTTP "
       "process (bursts of 2r; default: 50)", WLMD, "HTTP:", field="http_rate",
       value=seconds("[r]ate: number"), in_wlmscpfs=False),
    _O("--http-max-connections", "serve at most n HTTP connections at once\n(in each HTTP "
       "process)", WLMD, "HTTP:",
       field="http_max_connections", value=unsigned("[n]umber: integer (default: 64)", 1),
       in_wlmscpfs=False),
    _O("--http-workers", "serve HTTP with n processes on the one port\n(default: 0 = one per "
       "CPU, at most 8; one with --single-process)", WLMD, "HTTP:", field="http_workers",
       value=unsigned("[n]umber: integer", 0, 256), in_wlmscpfs=False),
)


def options_for(field: str) -> list[Option]:
    """The options that set ``field``, in table order."""
    return [option for option in OPTIONS if option.field == field]


def spellings_for(field: str) -> list[str]:
    """The long spellings of the options that set ``field``."""
    return [option.long for option in options_for(field)]


def spec_for(field: str) -> ValueSpec | None:
    """The value spec that range-checks ``field`` (None for flag-only fields)."""
    return next((o.value for o in options_for(field) if o.value is not None), None)


def render_man_options() -> str:
    """The OPTIONS list of wlmd(8) (``man/render.py`` splices it into the page)."""
    return render_man_option_list(OPTIONS)
