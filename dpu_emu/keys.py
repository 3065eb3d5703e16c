"""Data encryption keys: generated or imported, kept on disk only wrapped by a master key.

Theory of operation
-------------------
* The *master key* (key-encryption key, 32 bytes) never touches the key file.  It comes
  from the file named by ``DPU_EMU_MASTER_KEY_FILE`` (32 raw bytes, or 64 hex digits, or
  base64 of 32 bytes) or from ``DPU_EMU_MASTER_KEY`` (hex or base64); setting both is an
  error, so nobody wonders which one won.
* A *data key* is a 64-byte AES-256-XTS key whose halves differ (IEEE 1619; checked with
  :func:`dpu_emu.pipeline.check_xts_key`, generated with
  :func:`dpu_emu.pipeline.generate_xts_key`).  It is stored only as its RFC 3394 AES key
  wrap under the master key (72 bytes, base64 in JSON).
* A key is known by an *id* (chosen by the caller or generated) and a *fingerprint*: the
  first 8 bytes of SHA-256 of the **wrapped** key, in hex.  The fingerprint identifies a
  key under this master key without saying anything about the key itself.
* The key file (JSON) is written atomically: a temporary file created with mode 0600 in
  the same directory, ``fsync``, ``rename``, ``fsync`` of the directory.
* Unwrapping happens only when a namespace needs the key (:meth:`KeyManager.register`
  hands it straight to a pipeline engine).  A wrong master key or a tampered entry fails
  the RFC 3394 integrity check: :class:`KeyUnwrapError`, and that namespace does not start.

Key material never appears in a log line, a repr, an exception message or a value that
this module returns, except through the explicitly named :meth:`SecretKey.reveal`.  Python
cannot wipe immutable ``bytes``; :class:`SecretKey` keeps a ``bytearray`` it zeroes on
:meth:`SecretKey.wipe`, which is the best a Python process can do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from .pipeline import Engine, check_xts_key, generate_xts_key

log = logging.getLogger("dpu_emu.keys")

MASTER_KEY_ENV: Final = "DPU_EMU_MASTER_KEY"
MASTER_KEY_FILE_ENV: Final = "DPU_EMU_MASTER_KEY_FILE"
MASTER_KEY_BYTES: Final = 32                 # AES-256 key-encryption key
FINGERPRINT_BYTES: Final = 8
KEY_FILE_VERSION: Final = 1
KEY_FILE_MODE: Final = 0o600
ALGORITHM: Final = "AES-256-XTS"
WRAPPING: Final = "AES-KW (RFC 3394)"
GENERATED_ID_BYTES: Final = 6
KEY_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX_MASTER_LENGTH: Final = 2 * MASTER_KEY_BYTES


class KeyStoreError(Exception):
    """Base of every key management failure (messages never carry key material)."""


class MasterKeyError(KeyStoreError):
    """No master key, or one that is not 32 bytes of hex, base64 or raw data."""


class KeyFileError(KeyStoreError):
    """The key file cannot be read, is malformed, or an entry's fingerprint does not match."""


class UnknownKeyError(KeyStoreError):
    """No key with that id."""


class DuplicateKeyError(KeyStoreError):
    """A key with that id (or that very key material) already exists."""


class KeyUnwrapError(KeyStoreError):
    """The wrapped key failed the RFC 3394 integrity check: wrong master key or tampered file."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What may be shown about a key: never its material."""

    id: str
    fingerprint: str
    created: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "fingerprint": self.fingerprint, "created": self.created}


class SecretKey:
    """Unwrapped key material with a redacted repr; :meth:`reveal` is the only way out."""

    __slots__ = ("id", "fingerprint", "_material")

    def __init__(self, key_id: str, fingerprint: str, material: bytes | bytearray) -> None:
        self.id = key_id
        self.fingerprint = fingerprint
        self._material = bytearray(material)

    def reveal(self) -> bytes:
        """The raw key (hand it to an engine, never to a log)."""
        if not self._material:
            raise KeyStoreError(f"key {self.id} was wiped")
        return bytes(self._material)

    def wipe(self) -> None:
        """Zero and drop the material held by this object (best effort in Python)."""
        for index in range(len(self._material)):
            self._material[index] = 0
        self._material = bytearray()

    def __enter__(self) -> SecretKey:
        return self

    def __exit__(self, *exc: object) -> None:
        self.wipe()

    def __repr__(self) -> str:
        return f"<SecretKey {self.id} fingerprint={self.fingerprint} material=<redacted>>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretKey cannot be pickled")


def fingerprint_of(wrapped: bytes) -> str:
    """Hex of the first 8 bytes of SHA-256 over the *wrapped* key."""
    return hashlib.sha256(wrapped).digest()[:FINGERPRINT_BYTES].hex()


def parse_master_key(value: str | bytes, *, source: str, allow_raw: bool = False) -> bytes:
    """32 bytes from hex, base64 (standard or URL-safe) or, for files, raw bytes.

    The message of the :class:`MasterKeyError` names ``source``, never the value.
    """
    raw = value.encode("ascii", "replace") if isinstance(value, str) else bytes(value)
    if allow_raw and len(raw) == MASTER_KEY_BYTES:
        return raw
    text = raw.strip()
    if len(text) == _HEX_MASTER_LENGTH:
        try:
            return binascii.unhexlify(text)
        except binascii.Error:
            pass
    standard = text.replace(b"-", b"+").replace(b"_", b"/")      # URL-safe alphabet too
    try:
        decoded = base64.b64decode(standard + b"=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == MASTER_KEY_BYTES:
        return decoded
    raise MasterKeyError(f"{source}: the master key must be {MASTER_KEY_BYTES} bytes, given as "
                         f"{_HEX_MASTER_LENGTH} hex digits or base64" + (" or raw bytes" if allow_raw else ""))


def load_master_key(environ: Mapping[str, str] | None = None) -> bytes:
    """The master key from ``DPU_EMU_MASTER_KEY_FILE`` or ``DPU_EMU_MASTER_KEY``."""
    env = os.environ if environ is None else environ
    file_name, value = env.get(MASTER_KEY_FILE_ENV), env.get(MASTER_KEY_ENV)
    if file_name and value:
        raise MasterKeyError(f"set {MASTER_KEY_FILE_ENV} or {MASTER_KEY_ENV}, not both")
    if file_name:
        path = Path(file_name)
        try:
            st = path.stat()
            data = path.read_bytes()
        except OSError as exc:
            raise MasterKeyError(f"{MASTER_KEY_FILE_ENV}: cannot read {path}: {exc.strerror or exc}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("master key file %s is accessible to other users (mode %o); use chmod 600",
                        path, stat.S_IMODE(st.st_mode))
        return parse_master_key(data, source=f"{MASTER_KEY_FILE_ENV} ({path})", allow_raw=True)
    if value:
        return parse_master_key(value, source=MASTER_KEY_ENV)
    raise MasterKeyError(f"no master key: set {MASTER_KEY_FILE_ENV} (a file) or {MASTER_KEY_ENV} "
                         "(hex or base64 of 32 bytes)")


def _check_id(key_id: str) -> str:
    if not isinstance(key_id, str) or not KEY_ID_PATTERN.match(key_id):
        raise ValueError("key id must be 1..64 characters of letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return key_id


@dataclass(slots=True)
class _Entry:
    id: str
    wrapped: bytes
    fingerprint: str
    created: str

    def info(self) -> KeyInfo:
        return KeyInfo(self.id, self.fingerprint, self.created)


class KeyManager:
    """Data keys wrapped under one master key, persisted in ``path`` (None: memory only)."""

    def __init__(self, master_key: bytes, path: str | os.PathLike[str] | None = None) -> None:
        master = bytes(master_key)
        if len(master) != MASTER_KEY_BYTES:
            raise MasterKeyError(f"the master key must be {MASTER_KEY_BYTES} bytes")
        self._master = master
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, _Entry] = {}
        if self.path is not None and self.path.exists():
            self._load(self.path)

    @classmethod
    def from_environment(cls, path: str | os.PathLike[str] | None,
                         environ: Mapping[str, str] | None = None) -> KeyManager:
        """A manager whose master key comes from the environment (see :func:`load_master_key`)."""
        return cls(load_master_key(environ), path)

    # -- queries ---------------------------------------------------------------------

    def list_keys(self) -> list[KeyInfo]:
        """Every key as id + fingerprint (sorted by id)."""
        return [self._entries[k].info() for k in sorted(self._entries)]

    def info(self, key_id: str) -> KeyInfo:
        return self._entry(key_id).info()

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def binding(self, key_id: str) -> bytes:
        """Bytes that tie data written under this key to it (the fingerprint, raw)."""
        return bytes.fromhex(self._entry(key_id).fingerprint)

    # -- changes ---------------------------------------------------------------------

    def create(self, key_id: str | None = None) -> KeyInfo:
        """Generate a fresh random data key; returns its id and fingerprint."""
        return self._add(key_id, generate_xts_key())

    def import_key(self, material: bytes | bytearray | memoryview, key_id: str | None = None) -> KeyInfo:
        """Add a caller's 64-byte AES-256-XTS key (halves must differ)."""
        return self._add(key_id, check_xts_key(material))

    def delete(self, key_id: str) -> KeyInfo:
        """Forget a key (its wrapped copy leaves the key file at once)."""
        entry = self._entry(key_id)
        del self._entries[key_id]
        try:
            self._save()
        except BaseException:
            self._entries[key_id] = entry
            raise
        log.info("deleted data key %s (fingerprint %s)", entry.id, entry.fingerprint)
        return entry.info()

    def _add(self, key_id: str | None, material: bytes) -> KeyInfo:
        if key_id is None:
            key_id = self._new_id()
        _check_id(key_id)
        if key_id in self._entries:
            raise DuplicateKeyError(f"a key with id {key_id!r} already exists")
        wrapped = aes_key_wrap(self._master, material)
        fingerprint = fingerprint_of(wrapped)
        for other in self._entries.values():
            if other.fingerprint == fingerprint and other.wrapped == wrapped:
                raise DuplicateKeyError(f"this key material is already stored as {other.id!r}")
        entry = _Entry(key_id, wrapped, fingerprint, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._entries[key_id] = entry
        try:
            self._save()
        except BaseException:
            del self._entries[key_id]
            raise
        log.info("added data key %s (fingerprint %s)", key_id, fingerprint)
        return entry.info()

    def _new_id(self) -> str:
        while True:
            key_id = f"key-{secrets.token_hex(GENERATED_ID_BYTES)}"
            if key_id not in self._entries:
                return key_id

    # -- use -------------------------------------------------------------------------

    def unwrap(self, key_id: str) -> SecretKey:
        """The data key, unwrapped; :class:`KeyUnwrapError` if the master key is wrong."""
        entry = self._entry(key_id)
        try:
            material = aes_key_unwrap(self._master, entry.wrapped)
        except InvalidUnwrap:
            raise KeyUnwrapError(f"key {key_id!r} (fingerprint {entry.fingerprint}) does not unwrap: wrong master "
                                 "key, or the key file was altered") from None
        try:
            check_xts_key(material)
        except ValueError:
            raise KeyUnwrapError(f"key {key_id!r} unwraps to an invalid AES-256-XTS key") from None
        return SecretKey(entry.id, entry.fingerprint, material)

    def register(self, key_id: str, engine: Engine) -> int:
        """Unwrap a key and register it with a pipeline engine; returns the engine's key id."""
        with self.unwrap(key_id) as secret:
            return engine.register_key(secret.reveal())

    # -- persistence -----------------------------------------------------------------

    def _entry(self, key_id: str) -> _Entry:
        try:
            return self._entries[key_id]
        except KeyError:
            raise UnknownKeyError(f"no data key with id {key_id!r}") from None

    def _load(self, path: Path) -> None:
        try:
            st = path.stat()
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KeyFileError(f"{path}: cannot read the key file: {exc}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("key file %s is accessible to other users (mode %o)", path, stat.S_IMODE(st.st_mode))
        if not isinstance(doc, dict) or doc.get("version") != KEY_FILE_VERSION or not isinstance(doc.get("keys"), list):
            raise KeyFileError(f"{path}: not a version {KEY_FILE_VERSION} dpu-emu key file")
        for index, item in enumerate(doc["keys"]):
            entry = self._parse_entry(path, index, item)
            if entry.id in self._entries:
                raise KeyFileError(f"{path}: duplicate key id {entry.id!r}")
            self._entries[entry.id] = entry

    @staticmethod
    def _parse_entry(path: Path, index: int, item: Any) -> _Entry:
        where = f"{path}: keys[{index}]"
        if not isinstance(item, dict):
            raise KeyFileError(f"{where}: expected an object")
        try:
            key_id = _check_id(item["id"])
            wrapped = base64.b64decode(item["wrapped"], validate=True)
            fingerprint = str(item["fingerprint"])
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise KeyFileError(f"{where}: malformed entry ({type(exc).__name__})") from None
        if fingerprint != fingerprint_of(wrapped):
            raise KeyFileError(f"{where}: fingerprint of key {key_id!r} does not match its wrapped value")
        return _Entry(key_id, wrapped, fingerprint, str(item.get("created", "")))

    def _document(self) -> dict[str, Any]:
        return {
            "version": KEY_FILE_VERSION,
            "algorithm": ALGORITHM,
            "wrapping": WRAPPING,
            "keys": [{"id": e.id, "fingerprint": e.fingerprint, "created": e.created,
                      "wrapped": base64.b64encode(e.wrapped).decode("ascii")}
                     for e in (self._entries[k] for k in sorted(self._entries))],
        }

    def _save(self) -> None:
        if self.path is None:
            return
        write_atomically(self.path, (json.dumps(self._document(), indent=2) + "\n").encode("utf-8"))

    def __repr__(self) -> str:
        return f"<KeyManager {self.path or 'in memory'}: {len(self._entries)} key(s), master key <redacted>>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("KeyManager cannot be pickled")


def write_atomically(path: Path, data: bytes, mode: int = KEY_FILE_MODE) -> None:
    """Temp file (``mode``) in the same directory, fsync, rename, fsync the directory."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
