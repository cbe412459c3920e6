"""``findscu``: DCMTK's findscu command line, output and exit codes on top of pynetdicom.

Exit codes follow DCMTK 3.6.7: 0 when the association ran (even if a query failed), 1 for a
bad command line or unusable local files, 2 when no association could be established.
"""

from __future__ import annotations

import logging
import os
import platform
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pynetdicom
from pydicom import Dataset, dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from wlmd.cmdline.console import EXIT_USAGE, UsageError, error_text, render_header
from wlmd.cmdline.tokens import CommandLine, arguments_message
from wlmd.cmdline.values import read_port
from wlmd.config.settings import TlsProfile
from wlmd.findscu.client import LOG, Client, Peer, Plan, QueryBuilder, QueryFailed
from wlmd.findscu.keys import BadKeyPath, apply_key, parse_key
from wlmd.findscu.logs import level_from, log_always, setup_logging
from wlmd.findscu.options import PROGRAM, parse, read_int, render_help
from wlmd.findscu.output import Extract
from wlmd.findscu.sink import ResponseSink
from wlmd.security import tls

MODELS = {
    "--worklist": "1.2.840.10008.5.1.4.31",
    "--patient": "1.2.840.10008.5.1.4.1.2.1.1",
    "--study": "1.2.840.10008.5.1.4.1.2.2.1",
    "--psonly": "1.2.840.10008.5.1.4.1.2.3.1",
}
_UNCOMPRESSED = [ExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian]
PROPOSALS = {
    "--propose-uncompr": _UNCOMPRESSED,
    "--propose-little": _UNCOMPRESSED,
    "--propose-big": [ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian],
    "--propose-deflated": [DeflatedExplicitVRLittleEndian, *_UNCOMPRESSED],
    "--propose-implicit": [ImplicitVRLittleEndian],
}
_PROFILES = {
    "--profile-8996": TlsProfile.RFC8996, "--profile-8996-mod": TlsProfile.RFC8996_MOD,
    "--profile-bcp195-nd": TlsProfile.BCP195_ND, "--profile-bcp195": TlsProfile.BCP195,
    "--profile-bcp195-ex": TlsProfile.BCP195_EX, "--profile-aes": TlsProfile.AES,
}
_UNSUPPORTED_PROFILES = {  # accepted on the command line as DCMTK does, then refused
    "--profile-basic": tls.UNSUPPORTED_PROFILES["basic"],
    "--profile-null": tls.UNSUPPORTED_PROFILES["null"],
}


class FatalError(Exception):
    """Logged at FATAL (``F: ...``) and exits 1, as DCMTK does for unusable local resources."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``findscu`` console script."""
    args = sys.argv[1:] if argv is None else argv
    try:
        cmd = parse(args)
        return _run(cmd)
    except UsageError as exc:
        sys.stderr.write(error_text(PROGRAM, str(exc)))
        return EXIT_USAGE
    except FatalError as exc:
        LOG.critical("%s", exc)
        return EXIT_USAGE


def _run(cmd: CommandLine) -> int:
    if (not cmd.options and not cmd.params) or cmd.has("--help"):
        print(render_help(), end="")
        return 0
    if cmd.has("--version"):
        print(_version_text(), end="")
        return 0
    setup_logging(cmd)
    if cmd.has("--arguments"):
        log_always(arguments_message(sys.argv[0], cmd.expanded))
    if cmd.has("--list-ciphers"):
        print("Supported TLS ciphersuites are:")
        print("".join(f"  {name}\n" for name in tls.list_ciphers()), end="")
        return 0
    config = _config(cmd)
    sink = ResponseSink(config.extract, config.output_dir, config.xml_single,
                        config.limit, show=config.show_responses)
    client = Client(config.peer, sink.handle, on_associated=sink.start)
    try:
        return client.run(config.plan)
    finally:
        sink.finish()


@dataclass(frozen=True)
class Config:
    """Everything a run needs, checked the way DCMTK checks its command line."""

    peer: Peer
    plan: Plan
    extract: Extract
    output_dir: Path
    xml_single: Path | None
    limit: int | None
    show_responses: bool


def _config(cmd: CommandLine) -> Config:
    host, port, files = _params(cmd)
    keys = [values[0] for values in cmd.values("--key")]
    if not files and not keys:
        raise UsageError("either query file or override keys (or both) must be specified")
    extract, xml_single = _extract(cmd)
    limit = _limit(cmd, extract)
    output_dir = Path(cmd.values("--output-directory")[-1][0]) if cmd.has(
        "--output-directory") else Path(".")
    if not output_dir.is_dir():
        raise FatalError("specified output directory does not exist")
    model = MODELS[(cmd.last(*MODELS) or ("--worklist", ()))[0]]
    proposal = (cmd.last(*PROPOSALS) or ("--propose-uncompr", ()))[0]
    level = 6
    if cmd.has("--compression-level"):
        if proposal != "--propose-deflated":
            raise UsageError("--compression-level only allowed with --propose-deflated")
        level = read_int(cmd, "--compression-level", level)
    ssl_context, server_name = _tls(cmd)
    peer = Peer(
        host=host, port=port,
        calling_ae=_last_value(cmd, "--aetitle", "FINDSCU"),
        called_ae=_last_value(cmd, "--call", "ANY-SCP"),
        abstract_syntax=model, transfer_syntaxes=PROPOSALS[proposal],
        max_pdu=read_int(cmd, "--max-pdu", 16384),
        acse_timeout=float(read_int(cmd, "--acse-timeout", 30)),
        dimse_timeout=_timeout(cmd, "--dimse-timeout", None),
        connect_timeout=_timeout(cmd, "--timeout", None),
        socket_timeout=_timeout(cmd, "--socket-timeout", 60) or None,
        ssl_context=ssl_context, server_name=server_name, compression_level=level,
    )
    plan = Plan(
        queries=[_query_builder(path, keys, cmd) for path in files] or
        [_query_builder(None, keys, cmd)],
        repeat=read_int(cmd, "--repeat", 1),
        abort=cmd.has("--abort"),
        cancel_after=read_int(cmd, "--cancel", 0) if cmd.has("--cancel") else None,
    )
    show = _show_responses(cmd, extract)
    return Config(peer, plan, extract, output_dir, xml_single, limit, show)


def _params(cmd: CommandLine) -> tuple[str, int, list[Path]]:
    if len(cmd.params) < 1:
        raise UsageError("Missing parameter peer")
    if len(cmd.params) < 2:
        raise UsageError("Missing parameter port")
    host, port_text, *files = cmd.params
    port = read_port(port_text)
    for name in files:
        if not os.access(name, os.R_OK):
            raise UsageError(f"cannot access file: {name}")
    return host, port, [Path(name) for name in files]


def _last_value(cmd: CommandLine, long: str, default: str) -> str:
    values = cmd.values(long)
    return values[-1][0] if values else default


def _timeout(cmd: CommandLine, long: str, default: float | None) -> float | None:
    return float(read_int(cmd, long, 0)) if cmd.has(long) else default


def _extract(cmd: CommandLine) -> tuple[Extract, Path | None]:
    last = cmd.last("--extract", "--extract-xml", "--extract-xml-single")
    if last is None:
        return Extract.NONE, None
    name, values = last
    if name == "--extract-xml-single":
        return Extract.XML_SINGLE, Path(values[0])
    return (Extract.DICOM if name == "--extract" else Extract.XML), None


def _limit(cmd: CommandLine, extract: Extract) -> int | None:
    if not cmd.has("--limit-output"):
        return None
    if extract == Extract.NONE:
        raise UsageError("--limit-output only allowed with --extract, --extract-xml or"
                              " --extract-xml-single")
    return read_int(cmd, "--limit-output", 0)


def _show_responses(cmd: CommandLine, extract: Extract) -> bool:
    """DCMTK: shown unless hidden, extracted, quiet or logged above INFO; +sr forces them."""
    choice = cmd.last("--show-responses", "--hide-responses")
    if choice is not None:
        return choice[0] == "--show-responses"
    return extract == Extract.NONE and not _explicit_level_above_info(cmd)


def _explicit_level_above_info(cmd: CommandLine) -> bool:
    explicit = cmd.has("--quiet", "--verbose", "--debug", "--log-level")
    return explicit and level_from(cmd) > logging.INFO


def _query_builder(path: Path | None, keys: list[str],
                   cmd: CommandLine) -> QueryBuilder:
    """A callable building one identifier at send time, so key errors come after associating."""
    correct = cmd.last("--enable-correction", "--disable-correction")
    fix_values = correct is not None and correct[0] == "--enable-correction"
    new_vr = (cmd.last("--enable-new-vr", "--disable-new-vr") or ("--enable-new-vr", ()))[0]

    def build() -> tuple[Dataset, str, bool]:
        dataset, ts = _load_query(path) if path else (Dataset(), ExplicitVRLittleEndian)
        if fix_values:
            for _ in dataset.iterall():
                pass  # converting every raw element normalises values (padding stripped)
        for text in keys:
            try:
                apply_key(dataset, parse_key(text))
            except BadKeyPath as exc:
                LOG.error("Bad override key/path: %s", text)
                raise QueryFailed(f"0001:0019 {exc}") from None
        if new_vr == "--disable-new-vr":
            _downgrade_new_vrs(dataset)
        return dataset, ts, path is None

    return build


def _load_query(path: Path) -> tuple[Dataset, str]:
    try:
        file = dcmread(path, force=True)
    except Exception as exc:
        raise QueryFailed(f"0001:0008 bad DICOM file: {path}: {exc}") from None
    meta = getattr(file, "file_meta", None)
    ts = str(meta.TransferSyntaxUID) if meta and "TransferSyntaxUID" in meta else (
        ImplicitVRLittleEndian if file.original_encoding[0] else ExplicitVRLittleEndian)
    dataset = Dataset()
    dataset.update(file)
    implicit, little = file.original_encoding
    dataset.set_original_encoding(implicit, little, character_encoding=None)
    return dataset, ts


def _downgrade_new_vrs(dataset: Dataset) -> None:
    """``-u``: UN and UT are sent as OB, as DCMTK does when new VRs are disabled."""
    for element in dataset.iterall():
        if element.VR in {"UN", "UT"}:
            value = element.value
            element.VR = "OB"
            element.value = value.encode("latin-1") if isinstance(value, str) else value


def _tls(cmd: CommandLine) -> tuple[ssl.SSLContext | None, str | None]:
    mode = cmd.last("--disable-tls", "--enable-tls", "--anonymous-tls")
    for option in ("--std-passwd", "--use-passwd", "--null-passwd"):
        if cmd.has(option) and (mode is None or mode[0] != "--enable-tls"):
            raise UsageError(f"{option} only allowed with --enable-tls")
    if mode is None or mode[0] == "--disable-tls":
        return None, None
    if cmd.has("--seed"):
        seed = Path(cmd.values("--seed")[-1][0])
        tls.seed_random(seed)
        if cmd.has("--write-seed"):
            tls.write_seed(seed)
    if cmd.has("--write-seed-file"):
        if not cmd.has("--seed"):
            raise UsageError("--write-seed-file only allowed with --seed")
        tls.write_seed(Path(cmd.values("--write-seed-file")[-1][0]))
    key, cert = (Path(mode[1][0]), Path(mode[1][1])) if mode[0] == "--enable-tls" else (None,
                                                                                        None)
    password_opt = cmd.last("--use-passwd", "--null-passwd")
    password = None if password_opt is None else (
        password_opt[1][0] if password_opt[0] == "--use-passwd" else "")
    crl_mode = cmd.last("--enable-crl-vfy", "--enable-crl-all")
    peer_opt = cmd.last("--require-peer-cert", "--ignore-peer-cert")
    profile = (cmd.last(*_PROFILES, *_UNSUPPORTED_PROFILES) or ("--profile-8996",))[0]
    if profile in _UNSUPPORTED_PROFILES:
        raise FatalError(_UNSUPPORTED_PROFILES[profile])
    options = tls.TlsOptions(
        key_file=key, cert_file=cert, password=password,
        der=(cmd.last("--pem-keys", "--der-keys") or ("--pem-keys",))[0] == "--der-keys",
        ca_files=[Path(v[0]) for v in cmd.values("--add-cert-file")],
        ca_dirs=[Path(v[0]) for v in cmd.values("--add-cert-dir")],
        crl_files=[Path(v[0]) for v in cmd.values("--add-crl-file")],
        crl_check={"--enable-crl-vfy": "leaf", "--enable-crl-all": "chain"}.get(
            crl_mode[0] if crl_mode else "", ""),
        profile=_PROFILES[profile],
        ciphers=[v[0] for v in cmd.values("--cipher")],
        verify_peer=peer_opt is None or peer_opt[0] == "--require-peer-cert",
    )
    try:
        context = tls.make_ssl_context(options, server_side=False)
    except tls.TlsError as exc:
        raise FatalError(str(exc)) from None
    sni = cmd.last("--no-sni", "--request-sni")
    return context, (sni[1][0] if sni and sni[0] == "--request-sni" else None)


def _version_text() -> str:
    return (f"{render_header(PROGRAM)}\nHost type: {platform.system()} {platform.machine()}\n"
            f"Build options: Python {platform.python_version()}, pydicom {pydicom.__version__},"
            f" pynetdicom {pynetdicom.__version__}\n\nExternal libraries used:\n"
            f"- {ssl.OPENSSL_VERSION}\n")

