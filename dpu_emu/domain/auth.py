"""Bearer tokens: generation, hashing, and the administrator's token file.

Tokens are 256-bit random strings; only their SHA-256 is kept in memory or on disk
(plain SHA-256 suffices for secrets of that entropy), and comparisons are constant-time.
The administrator's token is read from ``DPU_EMU_ADMIN_TOKEN`` or from a file; when
neither exists a token is generated and written to the file with mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ADMIN_TOKEN_ENV = "DPU_EMU_ADMIN_TOKEN"
TOKEN_BYTES = 32
TOKEN_FILE_MODE = 0o600
TOKEN_DIR_MODE = 0o700
ADMIN_TOKEN_PREFIX = "dpuadm_"
TENANT_TOKEN_PREFIX = "dputen_"
MIN_TOKEN_LENGTH = 16
STATE_DIR_ENV = "XDG_STATE_HOME"


def default_admin_token_file() -> Path:
    base = os.environ.get(STATE_DIR_ENV) or str(Path.home() / ".local" / "state")
    return Path(base) / "dpu-emu" / "admin-token"


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class AdminToken:
    digest: str
    source: str  # "environment", "file" or "generated"
    path: Path | None
    generated: str | None = None  # the plaintext, only when just generated (to print once)


def load_admin_token(path: Path | None = None, environ: dict[str, str] | None = None) -> AdminToken:
    """The administrator's token: from the environment, else the file, else a new one
    written to the file (0600).  Raises ``ValueError`` for an empty or short token and
    ``OSError`` when the file cannot be read or written."""
    env = os.environ if environ is None else environ
    value = env.get(ADMIN_TOKEN_ENV)
    if value is not None:
        return AdminToken(hash_token(_checked(value.strip(), ADMIN_TOKEN_ENV)), "environment", None)
    path = path or default_admin_token_file()
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = new_token(ADMIN_TOKEN_PREFIX)
        path.parent.mkdir(parents=True, exist_ok=True, mode=TOKEN_DIR_MODE)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, TOKEN_FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
        return AdminToken(hash_token(token), "generated", path, generated=token)
    return AdminToken(hash_token(_checked(text, str(path))), "file", path)


def _checked(token: str, where: str) -> str:
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"admin token from {where} is shorter than {MIN_TOKEN_LENGTH} characters")
    return token
