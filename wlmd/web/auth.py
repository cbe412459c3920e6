"""Who may use the HTTP API: bearer tokens with a scope, checked against a file of hashes.

The token file (``http_tokens`` in wlmd.conf) holds one line per token:
``NAME SCOPE sha256:HEX`` where SCOPE is ``read`` or ``write`` (write includes read). Tokens
are 32 random bytes, so a plain SHA-256 is as safe as a slow password hash would be, and lets
every request be checked in microseconds; the file never holds a usable token.
``new_token()`` makes a token and its line (``wlmctl http-token`` prints them).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("read", "write")


class TokenFileError(ValueError):
    """The token file cannot be read or has a malformed line (reported as FILE:LINE)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the token's name and what it may do."""

    name: str
    scope: str

    def may(self, scope: str) -> bool:
        return self.scope == "write" or scope == "read"


class TokenStore:
    """The hashed tokens of one file, looked up in constant time per entry."""

    def __init__(self, entries: dict[str, Principal]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise TokenFileError(f"{path}: {error.strerror}") from None
        entries: dict[str, Principal] = {}
        for number, line in enumerate(lines, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            fields = text.split()
            if (len(fields) != 3 or fields[1] not in SCOPES
                    or not fields[2].startswith("sha256:") or len(fields[2]) != 71):
                raise TokenFileError(f"{path}:{number}: expected 'NAME read|write sha256:HEX'")
            entries[fields[2][7:].lower()] = Principal(fields[0], fields[1])
        return cls(entries)

    def authenticate(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        for known, principal in self._entries.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None


def new_token(name: str, scope: str) -> tuple[str, str]:
    """A fresh token and the token-file line that admits it."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if not name or any(ch.isspace() for ch in name) or "#" in name:
        raise ValueError("a token name is one word without '#'")
    token = secrets.token_urlsafe(32)
    return token, f"{name} {scope} sha256:{hashlib.sha256(token.encode()).hexdigest()}"
