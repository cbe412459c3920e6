"""``wlmd``: parse the wlmscpfs command line, check the environment, then serve.

Start-up failures that wlmscpfs reports (missing data path, unusable request file directory)
give the same message and exit status 1; wlmd's own checks (access rules, listeners, privilege
drop) fail the same way, before any association is accepted.
"""

from __future__ import annotations

import contextlib
import gc
import grp
import logging
import os
import pwd
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from setproctitle import setproctitle

from wlmd.cmdline.console import CommandLineExit
from wlmd.config.commandline import ParsedCommandLine, parse_command_line
from wlmd.config.logs import LogConfigError, configure_logging, log_always
from wlmd.config.settings import Settings
from wlmd.daemon import systemd
from wlmd.daemon.hooks import ServerHooks
from wlmd.daemon.listeners import (
    ListenerError,
    adopt_listeners,
    bind_endpoint,
    bind_listeners,
)
from wlmd.daemon.loading import BackgroundLoad
from wlmd.daemon.pool import ChildProcesses, release_free_memory
from wlmd.daemon.preflight import preflight
from wlmd.daemon.services import Service
from wlmd.daemon.single import SingleProcessServer
from wlmd.daemon.supervisor import Supervisor
from wlmd.mpps.service import MppsService, mpps_directory_problem
from wlmd.security.access import AccessPolicy, AccessRuleError, check_rules
from wlmd.security.tls import TlsError, server_context
from wlmd.worklist.preload import ChildProcesses as LoadProcesses
from wlmd.worklist.preload import InThisProcess, parse_into_index_file
from wlmd.worklist.service import WorklistService
from wlmd.worklist.store import DataSourceError, WorklistStore

LOGGER = logging.getLogger(__name__)
EXIT_OK = 0
EXIT_FAILURE = 1


class StartupError(Exception):
    """A condition that stops wlmd before it serves; the message is logged as an error."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wlmd`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        parsed = parse_command_line(args)
    except CommandLineExit as exc:
        return exc.emit()
    try:
        configure_logging(parsed.settings, parsed.log_level, parsed.log_config)
    except LogConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if (message := parsed.arguments_message()) is not None:
        log_always(message)
    if parsed.check_config:
        return check_config(parsed.settings)
    try:
        return serve(parsed, args)
    except StartupError as exc:
        LOGGER.error("%s", exc)
        return EXIT_FAILURE


def check_config(settings: Settings) -> int:
    """``--check-config``: the options and config are parsed; now access rules, TLS files and
    what start-up would meet on this machine (data path, index file, port, account)."""
    problems = check_rules(settings.hosts_allow, settings.hosts_deny,
                           host_lookup=settings.host_lookup)
    for problem in problems:
        print(problem, file=sys.stderr)
    failed = any(problem.fatal for problem in problems)
    try:
        load_tls_context(settings)
        if settings.hl7_listen or settings.http_listen:
            # the mapping file, allow-lists, journal; the token file and HTTPS settings
            build_services(settings, {"hl7": [], "http": []}, PreloadedService())
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        failed = True
    findings = preflight(settings)
    for finding in findings:
        print(finding, file=sys.stderr)
    if failed or any(finding.fatal for finding in findings):
        return EXIT_FAILURE
    print("configuration OK")
    _suggest_ip_allow_list(settings)
    return EXIT_OK


def _suggest_ip_allow_list(settings: Settings) -> None:
    """With +ac rules that are plain addresses, the systemd drop-in saying the same."""
    if not settings.access_control:
        return
    with contextlib.suppress(AccessRuleError):
        policy = AccessPolicy.load(settings.hosts_allow, settings.hosts_deny,
                                   host_lookup=settings.host_lookup)
        networks = policy.address_allow_list()
        if networks:
            print("The access rules are plain addresses: the kernel can drop other peers "
                  "before wlmd sees them (systemctl edit wlmd.service):\n[Service]\n"
                  f"IPAddressDeny=any\nIPAddressAllow=localhost {' '.join(networks)}")


def serve(parsed: ParsedCommandLine, args: list[str]) -> int:
    """Check the data sources, bind, drop privileges and run the chosen server."""
    settings = parsed.settings
    check_data_sources(settings)
    policy = load_access_policy(settings)
    tls_context = load_tls_context(settings)
    listeners = open_listeners(settings)
    service_sockets = open_service_sockets(settings)
    drop_privileges(settings)
    worklist = PreloadedService()
    metrics_directory = None
    if "http" in service_sockets and not settings.single_process:
        from wlmd.web.metrics import enable_multiprocess  # only with HTTP: see build_services
        metrics_directory = enable_multiprocess()
    services = build_services(settings, service_sockets, worklist, metrics_directory)
    if settings.daemon:
        detach(settings, [*listeners, *(s for sockets in service_sockets.values()
                                        for s in sockets)])
    running = RunningConfiguration(args, parsed, tls_context)
    background_load = worklist.background_load(settings)
    if background_load is None:
        worklist(settings)
    hooks = ServerHooks(notify=systemd.notify, watchdog_interval=systemd.watchdog_interval(),
                        reload=running.reload, reopen_logs=running.reopen_logs,
                        tls_context=running.tls_context, background_load=background_load)
    if settings.single_process:
        return SingleProcessServer(settings, listeners, worklist, policy, hooks,
                                   services).run()

    def reload() -> tuple[Settings, AccessPolicy | None]:
        fresh, fresh_policy = running.reload()
        worklist(fresh)  # the next generation of workers shares the reloaded worklist too
        return fresh, fresh_policy

    hooks.reload = reload
    if metrics_directory is None:
        return Supervisor(settings, listeners, worklist, policy, hooks, services).run()
    from wlmd.web.metrics import ServerMetrics, remove_directory
    supervisor = Supervisor(settings, listeners, worklist, policy, hooks, services,
                            ServerMetrics())
    try:
        return supervisor.run()
    finally:
        remove_directory(metrics_directory)


class PreloadedService:
    """The application factory: one WorklistService per settings, loaded where it is built.

    Built in the supervisor before it forks, every worker inherits the parsed worklist
    copy-on-write instead of parsing its own; ``gc.freeze()`` keeps the collector from
    touching (and so copying) those objects in the workers. With a background load
    (``background_load``), it gives a service that reads the files for each query
    (``worklist/scan.py``) until the load is done.
    """

    def __init__(self) -> None:
        self._service: WorklistService | None = None
        self._settings: Settings | None = None
        self._scanning: WorklistService | None = None  # served while the load runs
        self._mpps: MppsService | None = None
        self._built_in = os.getpid()

    @property
    def mpps(self) -> MppsService | None:
        """The MPPS service of the loaded settings (None: --mpps is off)."""
        return self._mpps

    def __call__(self, settings: Settings) -> WorklistService:
        # ``is`` first: a worker is handed the very settings it was forked with, and comparing
        # every field would write to each value's memory page, shared with the supervisor
        if self._scanning is not None and settings is self._settings:
            return self._scanning
        if self._service is None or (settings is not self._settings
                                     and settings != self._settings):
            self.load(settings, ChildProcesses())
        assert self._service is not None
        if self._mpps is not None and (settings.single_process or os.getpid() != self._built_in):
            self._mpps.start_agent()  # in the serving process: a worker, or the single process
        return self._service

    def background_load(self, settings: Settings) -> BackgroundLoad | None:
        """The load of ``settings``' worklist for the supervisor to run while it serves, or
        None if it must be loaded first (then the first call loads it).

        Only with an index file, where a child can leave its parsing for the supervisor to
        load, and without MPPS, whose links to worklist entries need the loaded records.
        """
        if settings.single_process or settings.mpps or settings.index_file is None:
            return None
        self._settings = settings
        self._scanning = WorklistService(settings, worklist_store(settings), scanning=True)
        return _WorklistLoad(self, settings)

    def load(self, settings: Settings, children: LoadProcesses) -> None:
        """Build the service of ``settings`` and preload its worklist, parsing in
        ``children``'s processes."""
        store = worklist_store(settings)
        self._mpps = MppsService(settings, entries=store) if settings.mpps else None
        service = WorklistService(settings, store, procedure_steps=self._mpps)
        self._built_in = os.getpid()
        gc.disable()  # collections while 100,000 records are made cost more than the making
        try:
            service.preload(children)
        finally:
            gc.freeze()  # before enable: the records never pass through a collection
            gc.enable()
        release_free_memory()
        self._service, self._settings, self._scanning = service, settings, None


def worklist_store(settings: Settings) -> WorklistStore:
    """The worklist store of ``settings``."""
    return WorklistStore(settings.data_files_path, file_reject=settings.file_reject)


class _WorklistLoad:
    """The worklist's ``BackgroundLoad``: the parsing into the index file in a child, then
    the records loaded from it in the supervisor (as a restart loads them)."""

    def __init__(self, factory: PreloadedService, settings: Settings) -> None:
        self._factory = factory
        self._settings = settings

    def in_child(self) -> int:
        setproctitle("wlmd: loading the worklist")
        settings = self._settings
        assert settings.index_file is not None
        parse_into_index_file(worklist_store(settings), ChildProcesses(),
                              settings.index_file)
        return 0

    def in_thread(self) -> None:
        self._factory.load(self._settings, InThisProcess())


class RunningConfiguration:
    """The command line and config file as last read: SIGHUP re-reads, SIGUSR1 reapplies logs."""

    def __init__(self, args: list[str], parsed: ParsedCommandLine,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self._args = args
        self._parsed = parsed
        self._tls_context = tls_context

    def tls_context(self) -> ssl.SSLContext | None:
        """The server TLS context of the running configuration (None: plain TCP)."""
        return self._tls_context

    def reload(self) -> tuple[Settings, AccessPolicy | None]:
        """Re-read options, config file, access rules and logging; raise to keep the old."""
        try:
            fresh = parse_command_line(self._args)
        except CommandLineExit as exc:
            raise StartupError(exc.stderr.strip() or "invalid configuration") from exc
        policy = load_access_policy(fresh.settings)
        tls_context = load_tls_context(fresh.settings)
        configure_logging(fresh.settings, fresh.log_level, fresh.log_config)
        self._parsed = fresh
        self._tls_context = tls_context
        return fresh.settings, policy

    def reopen_logs(self) -> None:
        """Close and reopen log files and syslog sockets (after rotation)."""
        parsed = self._parsed
        configure_logging(parsed.settings, parsed.log_level, parsed.log_config)


def check_data_sources(settings: Settings) -> None:
    """The checks wlmscpfs makes at start-up, with its messages."""
    try:
        worklist_store(settings).check_root()
    except DataSourceError as exc:
        raise StartupError("Cannot connect to data source.") from exc
    if settings.mpps and (problem := mpps_directory_problem(settings.mpps_path)) is not None:
        raise StartupError(problem)
    path = settings.request_file_path
    if path is not None and not (path.is_dir() and os.access(path, os.W_OK | os.X_OK)):
        raise StartupError(f"Request file directory ({path}) does not exist or is not writable")


def load_access_policy(settings: Settings) -> AccessPolicy | None:
    """The hosts.allow/hosts.deny rules when ``+ac`` asks for them."""
    if not settings.access_control:
        return None
    try:
        return AccessPolicy.load(settings.hosts_allow, settings.hosts_deny,
                                 host_lookup=settings.host_lookup)
    except AccessRuleError as exc:
        raise StartupError(str(exc)) from exc


def load_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """``--tls-*``: build the server context once, so a bad key or certificate stops start-up."""
    try:
        return server_context(settings)
    except TlsError as exc:
        raise StartupError(f"TLS: {exc}") from exc


def open_listeners(settings: Settings) -> list[socket.socket]:
    """Sockets passed by systemd socket activation, else the ones the options ask for."""
    try:
        inherited = systemd.listen_fds()
        return adopt_listeners(inherited) if inherited else bind_listeners(settings)
    except (ListenerError, ValueError) as exc:
        raise StartupError(str(exc)) from exc


def open_service_sockets(settings: Settings) -> dict[str, list[socket.socket]]:
    """The listeners of the services that are switched on, bound before privileges are dropped
    (a port below 1024 needs root). A changed address needs a restart, as for DICOM."""
    sockets: dict[str, list[socket.socket]] = {}
    endpoints = {"hl7": settings.hl7_listen, "http": settings.http_listen}
    for name, endpoint in endpoints.items():
        if not endpoint:
            continue
        try:
            sockets[name] = [bind_endpoint(endpoint, settings.listen_address)]
        except ListenerError as exc:
            raise StartupError(f"{name.upper()}: {exc}") from exc
    return sockets


def build_services(settings: Settings, sockets: dict[str, list[socket.socket]],
                   worklist: PreloadedService,
                   metrics_directory: Path | None = None) -> list[Service]:
    """The services for the bound sockets, configured (files checked) as the running user.

    Each service's modules are imported only when it is switched on: the HTTP server's alone
    (Starlette, uvicorn, prometheus_client) took a fifth of a second of every start.
    """
    services: list[Service] = []
    if "hl7" in sockets and settings.hl7_listen:
        from wlmd.hl7.server import Hl7ConfigError, Hl7Service
        try:
            services.append(Hl7Service(sockets["hl7"], settings))
        except Hl7ConfigError as exc:
            raise StartupError(f"HL7: {exc}") from exc
    if "http" in sockets and settings.http_listen:
        from wlmd.web.server import HttpConfigError, HttpService
        try:
            services.append(HttpService(sockets["http"], settings, worklist,
                                        load_access_policy, metrics_directory))
        except HttpConfigError as exc:
            raise StartupError(f"HTTP: {exc}") from exc
    return services


def drop_privileges(settings: Settings) -> None:
    """``--user``/``--group``: give up root once the (possibly privileged) port is bound."""
    if settings.group is None and settings.user is None:
        return
    try:
        if settings.group is not None:
            gid = grp.getgrnam(settings.group).gr_gid
            os.setgroups([gid])
            os.setgid(gid)
        if settings.user is not None:
            entry = pwd.getpwnam(settings.user)
            if settings.group is None:
                os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
                os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
    except (KeyError, PermissionError) as exc:
        raise StartupError(f"cannot switch to user {settings.user!r} group "
                           f"{settings.group!r}: {exc}") from exc
    LOGGER.info("running as uid %d gid %d", os.getuid(), os.getgid())


def detach(settings: Settings, listeners: Sequence[socket.socket]) -> None:
    """``--daemon``: the classic double fork for init systems without systemd."""
    import daemon  # python-daemon; imported here as only --daemon needs it
    import daemon.pidfile

    context = daemon.DaemonContext(
        files_preserve=[*listeners, *_log_handler_streams()],
        pidfile=(daemon.pidfile.TimeoutPIDLockFile(str(settings.pid_file))
                 if settings.pid_file else None),
        working_directory=os.getcwd(),
        umask=0o022,
    )
    context.open()


def _log_handler_streams() -> list[object]:
    """Files and sockets the log handlers write to, which must survive detaching."""
    kept: list[object] = []
    for handler in logging.getLogger().handlers:
        for attribute in ("stream", "socket"):
            target = getattr(handler, attribute, None)
            if target is not None:
                kept.append(target)
    return kept
