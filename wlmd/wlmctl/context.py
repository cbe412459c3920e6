"""What every subcommand works with: the worklist root and the settings read from wlmd.conf.

``--config FILE`` (default: /etc/wlmd/wlmd.conf when it exists) is read by wlmd's own loader,
so ``data_files_path``, ``file_reject``, ``no_fail`` and ``sequence_expansion`` are the
server's; ``-dfp`` wins over the file. wlmctl's own ``[expire]`` table is read here.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from wlmd.config.file import DEFAULT_CONFIG_FILE, ConfigError, load_config
from wlmd.config.settings import Settings
from wlmd.worklist.store import is_safe_ae
from wlmd.worklist.writer import WorklistWriter

EXPIRE_KEYS = {"older_than": int, "status": list, "archive": str}


class WlmctlError(Exception):
    """A request wlmctl refuses; the message is printed as one line and nothing changed."""


@dataclass(frozen=True)
class ExpirePolicy:
    """What ``wlmctl expire`` removes when its options do not say (wlmd.conf ``[expire]``)."""

    older_than: int = 0  # days; 0: no expiry by age
    status: tuple[str, ...] = ()
    archive: Path | None = None


@dataclass(frozen=True)
class Context:
    """The worklist root, the server's settings and the expire policy."""

    settings: Settings
    expire: ExpirePolicy = field(default_factory=ExpirePolicy)

    @property
    def root(self) -> Path:
        return self.settings.data_files_path

    def writer(self, *, create_ae: bool = False) -> WorklistWriter:
        return WorklistWriter(self.root, create_ae=create_ae)

    def ae_directory(self, ae: str) -> Path:
        """``<root>/<AE>``, refused unless it is a safe AE title with a directory."""
        if not is_safe_ae(ae):
            raise WlmctlError(f"not a usable called AE title: {ae!r}")
        path = self.root / ae
        if not path.is_dir():
            raise WlmctlError(f"no worklist directory for called AE {ae!r} under {self.root}")
        return path

    def ae_titles(self) -> list[str]:
        """Every AE directory under the root, sorted."""
        try:
            return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_safe_ae(p.name))
        except OSError as error:
            raise WlmctlError(f"cannot read the worklist directory {self.root}: "
                              f"{error.strerror}") from None


def load_context(config: Path | None, data_files_path: Path | None,
                 default_config: Path = DEFAULT_CONFIG_FILE) -> Context:
    """The context for ``--config`` and ``-dfp`` as given on the command line."""
    path = config if config is not None else (default_config if default_config.exists()
                                              else None)
    values: dict[str, object] = {}
    expire = ExpirePolicy()
    if path is not None:
        try:
            values = load_config(path)
        except ConfigError as error:
            raise WlmctlError(str(error)) from None
        expire = _expire_policy(path)
    values.pop("port", None)
    if data_files_path is not None:
        values["data_files_path"] = data_files_path
    return Context(Settings(port=104, **values), expire)  # type: ignore[arg-type]


def _expire_policy(path: Path) -> ExpirePolicy:
    """The ``[expire]`` table of wlmd.conf (wlmd's loader has checked the rest)."""
    section = tomllib.loads(path.read_text(encoding="utf-8")).get("expire", {})
    for key, value in section.items():
        kind = EXPIRE_KEYS.get(key)
        if kind is None:
            raise WlmctlError(f"{path}: [expire]: unknown setting {key!r}")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise WlmctlError(f"{path}: [expire]: {key}: expected {kind.__name__}")
    older_than = section.get("older_than", 0)
    if older_than < 0:
        raise WlmctlError(f"{path}: [expire]: older_than: must not be negative")
    archive = section.get("archive")
    return ExpirePolicy(older_than, tuple(str(s).upper() for s in section.get("status", ())),
                        Path(archive) if archive else None)
