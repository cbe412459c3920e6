"""The server's settings: one immutable value built by the option parser and read everywhere.

Field names follow the long option names of wlmscpfs(1); defaults are wlmscpfs's defaults.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from wlmd.mpps.policy import MppsPolicies
from wlmd.policy.model import PolicySet


class CharsetMode(enum.Enum):
    """What to put in (0008,0005) of responses (``-cs0``, ``-cs1``, ``-csk``)."""

    NONE = "none"
    ISO_IR_100 = "iso-ir-100"
    KEEP = "keep"


class IpFamily(enum.Enum):
    """Which listening sockets to open (``-i4``, ``-i6``, ``-i0``)."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"
    AUTO = "auto"


class TransferSyntaxPreference(enum.Enum):
    """The server's order of preference when accepting a presentation context (``+x…``)."""

    UNCOMPRESSED = "uncompr"  # +x= : explicit VR in local byte order first
    LITTLE = "little"  # +xe
    BIG = "big"  # +xb
    DEFLATED = "deflated"  # +xd
    IMPLICIT = "implicit"  # +xi


class RefreshMode(enum.Enum):
    """How the store learns of changed worklist files (``--refresh``).

    inotify cannot see changes made by another machine on a shared (NFS, CephFS, CIFS)
    directory: ``auto`` detects such file systems and scans them instead.
    """

    AUTO = "auto"
    INOTIFY = "inotify"
    STAT = "stat"


class LogFormat(enum.Enum):
    """How stderr lines look: DCMTK's ``I: message``, or one JSON object per line."""

    TEXT = "text"
    JSON = "json"


class TlsProfile(enum.Enum):
    """The TLS security profiles of DCMTK that Python's ssl can honour, for both ends (wlmd's
    ``--tls-profile``, findscu's ``+pg`` ...): ``wlmd.security.tls`` turns each into a context.

    The Basic (``+pb``) and NULL (``+pn``) profiles are left out: they need 3DES or unencrypted
    suites (``wlmd.security.tls.UNSUPPORTED_PROFILES`` says so to whoever asks for them).
    """

    RFC8996 = "8996"  # +pg: TLS 1.2+, BCP 195 RFC 8996 suites (default)
    RFC8996_MOD = "8996-mod"  # +pm: as +pg, also allowing TLS 1.3 only peers
    BCP195_ND = "bcp195-nd"  # +py (retired)
    BCP195 = "bcp195"  # +px (retired)
    BCP195_EX = "bcp195-ex"  # +pz (retired): the extended (strongest) list only
    AES = "aes"  # +pa (retired): TLS_RSA_WITH_AES_*_CBC_SHA


@dataclass(frozen=True)
class Settings:
    """Everything the command line of wlmscpfs(1) can set, plus wlmd's own additions."""

    port: int
    # multi-process options
    single_process: bool = False
    # input options
    data_files_path: Path = Path(".")
    file_reject: bool = True
    refresh: RefreshMode = RefreshMode.AUTO  # wlmd addition
    # processing options
    return_charset: CharsetMode = CharsetMode.NONE
    sequence_expansion: bool = True
    # network options
    ip_family: IpFamily = IpFamily.IPV4
    listen_address: str | None = None  # wlmd addition; None = all addresses of ip_family
    transfer_syntax: TransferSyntaxPreference = TransferSyntaxPreference.UNCOMPRESSED
    access_control: bool = False
    new_vr: bool = True
    compression_level: int = 6
    acse_timeout: float = 30
    dimse_timeout: float | None = None
    max_associations: int = 50
    refuse: bool = False
    reject: bool = False
    no_fail: bool = False
    sleep_before: int = 0
    sleep_after: int = 0
    sleep_during: int = 0
    max_pdu: int = 16384
    host_lookup: bool = True
    # output options
    request_file_path: Path | None = None
    request_file_format: str = "#t.dump"

    # --- wlmd additions (not in wlmscpfs) ---
    # configuration and daemon
    config_file: Path | None = None  # --config; /etc/wlmd/wlmd.conf is read when it exists
    daemon: bool = False  # --daemon: detach (python-daemon), for init systems without systemd
    pid_file: Path | None = None
    index_file: Path | None = None  # --index-file: parsed records kept between runs
    user: str | None = None  # --user/--group: drop privileges after binding
    group: str | None = None
    # worker pool (--fork)
    min_spare_workers: int = 2
    max_spare_workers: int = 8
    worker_max_uses: int = 1000  # recycle a worker after this many associations
    worker_timeout: float = 30  # a busy worker silent (no heartbeat) this long is killed
    worker_max_memory_mb: int = 512  # recycle a worker above this private memory
    graceful_timeout: float = 30  # SIGTERM: how long open associations may finish
    # logging
    log_level: str = "warn"  # wlmd.conf's level; -q/-v/-d/-ll on the command line win
    log_format: LogFormat = LogFormat.TEXT
    syslog: bool = False  # log to syslog instead of stderr
    syslog_facility: str = "daemon"
    syslog_socket: str = "/dev/log"
    # access control (+ac)
    hosts_allow: Path = Path("/etc/hosts.allow")
    hosts_deny: Path = Path("/etc/hosts.deny")
    # resource limits (hardening)
    max_identifier_bytes: int = 1 << 20
    max_sequence_depth: int = 8
    max_sequence_items: int = 64
    max_responses: int = 0  # 0 = unlimited
    idle_timeout: float | None = None  # close an association idle between commands this long
    max_associations_per_host: int = 0  # 0 = unlimited
    # TLS (server side)
    tls_key: Path | None = None
    tls_cert: Path | None = None
    tls_ca_file: Path | None = None
    tls_require_peer_cert: bool = False
    tls_profile: TlsProfile = TlsProfile.RFC8996
    # HL7 order intake (a supervised MLLP child; off unless hl7_listen is set)
    hl7_listen: str | None = None  # [address:]port
    hl7_mapping: Path | None = None  # TOML mapping file (default: the IHE mapping)
    hl7_journal: Path | None = None  # journal directory (default: hl7-journal beside -dfp)
    hl7_tls: bool = False  # MLLP over TLS with the --tls-* key and certificate
    hl7_allow_senders: str | None = None  # comma-separated addresses/networks; None = any
    hl7_allow_applications: str | None = None  # comma-separated MSH-3[^MSH-4]; None = any
    hl7_max_message_bytes: int = 1 << 20
    hl7_max_rate: float = 0  # messages per second and connection; 0 = unlimited
    hl7_max_connections: int = 16
    # MPPS (--mpps): off by default, so that a wlmscpfs command line behaves as before
    mpps: bool = False
    mpps_path: Path | None = None  # one sub-directory per called AE
    # the [mpps_policy.<AE>] tables of wlmd.conf
    mpps_policy: MppsPolicies = field(default_factory=MppsPolicies)
    # HTTP: DICOMweb worklist search, entry API, metrics, status page (off unless http_listen)
    http_listen: str | None = None  # [address:]port
    http_tokens: Path | None = None  # bearer token file: NAME read|write sha256:HEX per line
    http_tls: bool = False  # HTTPS with the --tls-* key, certificate and CA
    http_client_cert_scope: str | None = None  # read|write for verified TLS clients
    http_max_body: int = 1 << 20  # bytes of one request body
    http_rate: float = 50.0  # requests per second and client address (bursts of twice that)
    http_max_connections: int = 64
    http_workers: int = 0  # HTTP child processes on the one socket; 0: one per CPU (up to 8)
    # per-peer policy: wlmd.conf's [[policy]] tables (issue #17); None: as wlmscpfs
    policy: PolicySet | None = None
