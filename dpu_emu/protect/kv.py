"""Encrypted NVMe-KV namespaces: values in AES-256-XTS through the offload pipeline, keys sealed at rest.

Configuration: a KV namespace with ``"key": "<data key id>"`` (and, as for NVM namespaces,
a device-level ``keys_file`` plus the master key in the environment).

Construction (all derived from the namespace's 64-byte AES-256-XTS data key ``DK`` and the
namespace *identity* ``NSID`` = the 16-byte namespace UUID the device advertises, which is
stable across restarts: pin ``"uuid"`` in the configuration to move a namespace)::

    tweak_secret = HKDF-SHA-256(ikm=DK, salt=none, info=TWEAK_INFO,    length=32)
    key_seal_key = HKDF-SHA-256(ikm=DK, salt=none, info=KEY_SEAL_INFO, length=64)
    tweak(key)   = first 16 bytes of HMAC-SHA-256(tweak_secret, u8 len(NSID) || NSID || key)

* **Values.**  The plaintext payload is a 16-byte header followed by the value::

      0 magic b"KVX1"   4 u32 value length   8 u32 reserved (0)
      12 u32 CRC32C over header bytes 0..11 and the value

  so every payload is >= 16 bytes (XTS needs one AES block; no other padding) and
  the true length travels inside the ciphertext.  The payload is encrypted with
  AES-256-XTS under ``DK`` as data units of :data:`VALUE_UNIT` bytes (a last piece
  shorter than 16 bytes joins the unit before it); unit ``i`` uses the tweak
  ``(int.from_bytes(tweak(key), "little") + i) mod 2**128``.  A payload of up to
  ``VALUE_UNIT + 15`` bytes is therefore exactly one XTS data unit with ``tweak(key)``.
  The tweak is unique per (namespace, key) and cannot be steered by a tenant: it is a
  keyed MAC under a secret only the device holds, so another namespace's tweak for the
  same key (or any chosen collision) is out of reach.
  Retrieve decrypts, then checks the magic, the length and the CRC32C: a value moved to
  another key or namespace, a wrong key, or corruption the log's own record CRC did not
  catch completes with KV Unrecovered Error (88h), never with wrong data.  DW0 of Retrieve
  and the result of Exist are the true value length.  Each stored value takes 16 more
  bytes than its length of the namespace's capacity (the header).
* **Keys at rest.**  A file-backed namespace writes each NVMe-KV key sealed with
  deterministic AES-SIV (RFC 5297, ``key_seal_key``, associated data ``NSID``) over the
  key padded ISO/IEC 7816-4 style to 17 bytes (``key || 0x80 || 0x00...``): 33 bytes on
  disk for every key, so neither a key nor its length is written.  Deterministic, so a
  key has one sealed form (overwrites and tombstones find it); it reveals only whether two
  records carry the same key, which the log's structure reveals anyway.  (AES-SIV rather
  than one AES-ECB block: a 16-byte key leaves no room in one block for its length, and
  SIV also authenticates, so opening a log under the wrong data key fails loudly.)  The
  in-memory index holds plaintext keys, so List answers in plaintext byte order.
* **Memory-backed namespaces** encrypt values the same way (one code path, the same
  checks); their keys live only in process memory and are not sealed.

Completions arrive through the engine's callback; ``done`` is called exactly once on every
path.  A dead worker, a worker error or a closed engine complete with Internal Error (not
DNR: a retry reaches the restarted worker); a job the engine refuses with Internal Error
(DNR).  Commands for the same key that are in flight together may land in either order
(NVMe leaves their order undefined).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from crc32c import crc32c
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nvmeof import errors
from nvmeof.controller import kv as kvproto
from nvmeof.controller.backend import Done, IoCommand
from nvmeof.wire.constants import KvOpcode

from ..datapath import KvNamespaceBackend, kv_status
from ..keys import KeyManager, KeyStoreError
from ..pipeline import Completion, Engine, Job, PipelineError, Stage, Status
from ..pipeline.xts import TWEAK_LIMIT, XTS_MIN_UNIT, XTS_TWEAK_BYTES
from ..storage import kv as kvs
from ..storage.kv_file import FileKvStore, open_kv_store
from .backend import INTERNAL_ERROR, INTERNAL_ERROR_DNR

log = logging.getLogger("dpu_emu.protect.kv")

TWEAK_INFO: Final = b"dpu-emu/kv/value-tweak/v1"
KEY_SEAL_INFO: Final = b"dpu-emu/kv/key-seal/v1"
TWEAK_SECRET_BYTES: Final = 32
KEY_SEAL_KEY_BYTES: Final = 64                    # AES-SIV with AES-256 (two 256-bit keys)
SIV_BYTES: Final = 16
KEY_PAD_MARK: Final = 0x80
PADDED_KEY_BYTES: Final = kvs.MAX_KEY_SIZE + 1    # room for the pad mark after a 16-byte key
SEALED_KEY_BYTES: Final = SIV_BYTES + PADDED_KEY_BYTES
VALUE_MAGIC: Final = b"KVX1"
_VALUE_HEADER: Final = struct.Struct("<4sII")     # magic, length, reserved
_CRC: Final = struct.Struct("<I")
VALUE_HEADER_BYTES: Final = 16
VALUE_UNIT: Final = 512 * 1024
"""XTS data unit of a value payload: fits the process engine's 1 MiB slots with room to spare."""
ENCRYPT_CHAIN: Final = (Stage.ENCRYPT,)
DECRYPT_CHAIN: Final = (Stage.DECRYPT,)
UNRECOVERED: Final = errors.KvUnrecoveredError().status

assert _VALUE_HEADER.size + _CRC.size == VALUE_HEADER_BYTES


# -- derivations ----------------------------------------------------------------------------

def _hkdf(data_key: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(data_key)


def value_tweak(tweak_secret: bytes, identity: bytes, key: bytes) -> bytes:
    """The 16-byte XTS tweak of ``key``'s value in the namespace ``identity``."""
    mac = hmac.new(tweak_secret, bytes([len(identity)]) + identity + key, hashlib.sha256)
    return mac.digest()[:XTS_TWEAK_BYTES]


class SealedKeyCodec:
    """Deterministic AES-SIV sealing of NVMe-KV keys for the log (a ``kv_file.KeyCodec``)."""

    disk_key_size = SEALED_KEY_BYTES

    def __init__(self, seal_key: bytes, identity: bytes) -> None:
        self._siv = AESSIV(seal_key)
        self._ad = [identity]

    def encode(self, key: bytes) -> bytes:
        if not kvs.MIN_KEY_SIZE <= len(key) <= kvs.MAX_KEY_SIZE:
            raise ValueError(f"key length {len(key)} outside {kvs.MIN_KEY_SIZE}..{kvs.MAX_KEY_SIZE}")
        padded = key + bytes([KEY_PAD_MARK]) + bytes(PADDED_KEY_BYTES - 1 - len(key))
        return self._siv.encrypt(padded, self._ad)

    def decode(self, stored: bytes) -> bytes:
        if len(stored) != SEALED_KEY_BYTES:
            raise ValueError("sealed key of the wrong length")
        try:
            padded = self._siv.decrypt(stored, self._ad)
        except InvalidTag:
            raise ValueError("sealed key does not authenticate") from None
        body = padded.rstrip(b"\0")
        if not body or body[-1] != KEY_PAD_MARK or not kvs.MIN_KEY_SIZE <= len(body) - 1 <= kvs.MAX_KEY_SIZE:
            raise ValueError("sealed key has bad padding")
        return body[:-1]


@dataclass(frozen=True, slots=True)
class KvSecrets:
    """What an encrypted KV namespace derives from its data key (never logged)."""

    identity: bytes
    tweak_secret: bytes
    key_codec: SealedKeyCodec

    @classmethod
    def derive(cls, data_key: bytes, identity: bytes) -> KvSecrets:
        return cls(identity, _hkdf(data_key, TWEAK_INFO, TWEAK_SECRET_BYTES),
                   SealedKeyCodec(_hkdf(data_key, KEY_SEAL_INFO, KEY_SEAL_KEY_BYTES), identity))

    def tweak(self, key: bytes) -> bytes:
        return value_tweak(self.tweak_secret, self.identity, key)

    def __repr__(self) -> str:
        return f"KvSecrets(identity={self.identity.hex()}, secrets=<redacted>)"


# -- value payloads -------------------------------------------------------------------------

def seal_payload(value: bytes | bytearray | memoryview) -> bytes:
    """Header + value: the plaintext that gets encrypted."""
    head = _VALUE_HEADER.pack(VALUE_MAGIC, len(value), 0)
    return head + _CRC.pack(crc32c(value, crc32c(head))) + bytes(value)


def open_payload(payload: bytes | memoryview) -> memoryview:
    """The value inside a decrypted payload; ``ValueError`` unless header and CRC32C check out."""
    view = memoryview(payload)
    if len(view) < VALUE_HEADER_BYTES:
        raise ValueError("payload shorter than its header")
    magic, length, reserved = _VALUE_HEADER.unpack_from(view, 0)
    (crc,) = _CRC.unpack_from(view, _VALUE_HEADER.size)
    if magic != VALUE_MAGIC or reserved or length != len(view) - VALUE_HEADER_BYTES:
        raise ValueError("bad value header (wrong key, moved or corrupt value)")
    value = view[VALUE_HEADER_BYTES:]
    if crc32c(value, crc32c(view[:_VALUE_HEADER.size])) != crc:
        raise ValueError("value fails its CRC32C after decryption")
    return value


def value_units(length: int) -> list[tuple[int, int]]:
    """The XTS data units ``[start, end)`` of a payload of ``length`` (>= 16) bytes."""
    bounds = [[start, min(start + VALUE_UNIT, length)] for start in range(0, length, VALUE_UNIT)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < XTS_MIN_UNIT:
        last = bounds.pop()
        bounds[-1][1] = last[1]
    return [(lo, hi) for lo, hi in bounds]


# -- the backend --------------------------------------------------------------------------

class _Once:
    """Calls ``done`` once; a second call is a bug, logged and dropped."""

    __slots__ = ("done", "called")

    def __init__(self, done: Done) -> None:
        self.done = done
        self.called = False

    def __call__(self, status: int, dw0: int, data: Any) -> None:
        if self.called:
            log.error("KV command completed twice (status %#x ignored)", status)
            return
        self.called = True
        self.done(status, dw0, data)


class ProtectedKvBackend:
    """NVMe-KV commands onto ``store`` with values encrypted through ``engine`` (``key_id``).

    Delete and List need no crypto and go to a plain :class:`KvNamespaceBackend`.
    """

    def __init__(self, store: kvs.KvStore[Any], engine: Engine, key_id: int, secrets: KvSecrets, *,
                 max_value_size: int, name: str = "", owns_key: bool = False) -> None:
        if not engine.has_key(key_id):
            raise ValueError(f"engine has no key {key_id}")
        self.store = store
        self.engine = engine
        self.key_id = key_id
        self.max_value_size = max_value_size
        self.name = name or repr(store)
        self.pipeline_errors = 0
        self.integrity_errors = 0
        self._secrets = secrets
        self._plain = KvNamespaceBackend(store)
        self._owns_key = owns_key

    def execute(self, cmd: IoCommand, done: Done) -> None:
        once = _Once(done)
        try:
            if cmd.opcode == KvOpcode.STORE:
                self._store(cmd, once)
            elif cmd.opcode == KvOpcode.RETRIEVE:
                self._retrieve(cmd, once)
            elif cmd.opcode == KvOpcode.EXIST:
                once(0, max(0, self.store.exists(cmd.key) - VALUE_HEADER_BYTES), None)
            else:
                self._plain.execute(cmd, once)
        except kvs.KvError as exc:
            if isinstance(exc, kvs.KvIoError):
                log.error("%s: %s", self.name, exc)
            if not once.called:
                once(kv_status(exc), 0, None)
        except Exception:
            log.exception("%s: KV opcode %#x failed", self.name, cmd.opcode)
            if not once.called:
                once(INTERNAL_ERROR, 0, None)

    def flush(self) -> None:
        self.store.flush()

    def close(self) -> None:
        """Close the store (no flush: call :meth:`flush` first); drop an owned engine key."""
        try:
            self.store.close()
        finally:
            if self._owns_key:
                self._owns_key = False
                try:
                    self.engine.unregister_key(self.key_id)
                except KeyError:
                    pass

    # -- Store / Retrieve ------------------------------------------------------------

    def _store(self, cmd: IoCommand, done: _Once) -> None:
        key, value = cmd.key, cmd.data or b""
        must_exist = bool(cmd.options & kvproto.STORE_MUST_EXIST)
        must_not_exist = bool(cmd.options & kvproto.STORE_MUST_NOT_EXIST)
        if must_exist and must_not_exist:
            done(errors.InvalidField("both Store options").status, 0, None)
            return
        if not kvs.MIN_KEY_SIZE <= len(key) <= self.store.max_key_size:
            raise kvs.KvInvalidKeySize(f"key length {len(key)} outside 1..{self.store.max_key_size}")
        if len(value) > self.max_value_size:
            raise kvs.KvInvalidValueSize(f"value of {len(value)} bytes exceeds {self.max_value_size}")

        def encrypted(status: int, ciphertext: bytes | None) -> None:
            if status:
                done(status, 0, None)
                return
            try:
                self.store.store(key, ciphertext or b"", must_exist=must_exist, must_not_exist=must_not_exist)
            except kvs.KvError as exc:
                if isinstance(exc, kvs.KvIoError):
                    log.error("%s: %s", self.name, exc)
                done(kv_status(exc), 0, None)
                return
            except Exception:
                log.exception("%s: Store failed", self.name)
                done(INTERNAL_ERROR, 0, None)
                return
            done(0, 0, None)
        self._run(ENCRYPT_CHAIN, bytes(key), seal_payload(value), encrypted)

    def _retrieve(self, cmd: IoCommand, done: _Once) -> None:
        key = bytes(cmd.key)
        ciphertext = self.store.retrieve(key)
        buffer = cmd.read_length

        def decrypted(status: int, payload: bytes | None) -> None:
            if status:
                done(status, 0, None)
                return
            try:
                value = open_payload(payload or b"")
            except ValueError as exc:
                self.integrity_errors += 1
                log.warning("%s: value of key %s: %s", self.name, key.hex(), exc)
                done(UNRECOVERED, 0, None)
                return
            done(0, len(value), value[:buffer] if buffer else None)
        if len(ciphertext) < VALUE_HEADER_BYTES:
            self.integrity_errors += 1
            log.warning("%s: value of key %s is too short to be ours", self.name, key.hex())
            done(UNRECOVERED, 0, None)
            return
        self._run(DECRYPT_CHAIN, key, ciphertext, decrypted)

    def _run(self, chain: tuple[Stage, ...], key: bytes, payload: bytes,
             finish: Callable[[int, bytes | None], None]) -> None:
        """Run ``chain`` over every data unit of ``payload``; ``finish(status, result)`` once."""
        base = int.from_bytes(self._secrets.tweak(key), "little")
        units = value_units(len(payload))
        if len(units) == 1:
            def single(completion: Completion) -> None:
                status = self._status(completion)
                finish(status, None if status else bytes(completion.data or b""))
            refused = self._submit(Job.value(chain, tweak=base, key_id=self.key_id), payload, single)
            if refused:
                finish(refused, None)
            return
        out = bytearray(len(payload))
        state = {"pending": 1, "status": 0}      # 1: the submitting loop itself

        def arrive(status: int) -> None:
            if status and not state["status"]:
                state["status"] = status
            state["pending"] -= 1
            if state["pending"] == 0:
                finish(state["status"], None if state["status"] else bytes(out))
        view = memoryview(payload)
        for index, (lo, hi) in enumerate(units):
            state["pending"] += 1

            def piece(completion: Completion, lo: int = lo, hi: int = hi) -> None:
                status = self._status(completion)
                if not status:
                    out[lo:hi] = completion.data or b""
                arrive(status)
            job = Job.value(chain, tweak=(base + index) % TWEAK_LIMIT, key_id=self.key_id)
            refused = self._submit(job, view[lo:hi], piece)
            if refused:
                arrive(refused)
                break
        arrive(0)

    def _submit(self, job: Job, payload: bytes | memoryview, on_done: Callable[[Completion], None]) -> int:
        try:
            self.engine.submit_cb(job, payload, on_done)
        except (ValueError, RuntimeError, PipelineError) as exc:
            self.pipeline_errors += 1
            log.error("%s: pipeline refused a KV job: %s", self.name, exc)
            return INTERNAL_ERROR_DNR
        return 0

    def _status(self, completion: Completion) -> int:
        status = completion.status
        if status == Status.OK:
            return 0
        if status == Status.INTEGRITY_ERROR:
            self.integrity_errors += 1
            return UNRECOVERED
        self.pipeline_errors += 1
        log.error("%s: pipeline %s on a KV value: %s", self.name, status.name,
                  completion.message.strip().splitlines()[-1] if completion.message else "")
        return INTERNAL_ERROR_DNR if status == Status.INVALID_JOB else INTERNAL_ERROR

    def __repr__(self) -> str:
        return f"ProtectedKvBackend({self.name}, AES-256-XTS, engine={type(self.engine).__name__})"


# -- building -----------------------------------------------------------------------------

@dataclass(slots=True)
class KvNamespaceParts:
    """What the device needs from a KV namespace: the backend, the store, what to flush and
    close when the namespace goes away, and the value size to advertise."""

    backend: KvNamespaceBackend | ProtectedKvBackend
    store: kvs.KvStore[Any]
    closable: kvs.KvStore[Any] | ProtectedKvBackend
    max_value_size: int


def open_protected_kv_store(kind: str, *, capacity_bytes: int, path: str | os.PathLike[str] | None,
                            key_codec: SealedKeyCodec, max_value_size: int, **limits: Any) -> kvs.KvStore[Any]:
    """The store of an encrypted namespace: sealed keys on file, room for the value header."""
    inner_max = max_value_size + VALUE_HEADER_BYTES
    if kind == "file":
        if path is None:
            raise ValueError("a file KV store needs a directory path")
        return FileKvStore(path, capacity_bytes, max_value_size=inner_max, key_codec=key_codec, **limits)
    return open_kv_store(kind, capacity_bytes=capacity_bytes, path=path, max_value_size=inner_max, **limits)


def kv_namespace(ns_cfg: Mapping[str, Any], *, engine: Engine | None, keys: KeyManager | None,
                 identity: bytes, name: str = "", max_key_size: int = kvs.MAX_KEY_SIZE,
                 default_max_value_size: int = kvs.DEFAULT_MAX_VALUE_SIZE) -> KvNamespaceParts:
    """Open a KV namespace's store and backend as its configuration asks (plain or encrypted).

    Raises ``ProtectionError`` when an encrypted namespace cannot start: no engine, no key
    manager, unknown key, wrong master key, or a log written under another key/namespace
    or in plaintext.  ``identity`` is the namespace's 16-byte UUID.
    """
    from .build import DATA_KEY_KEY, KEYS_FILE_KEY, ProtectionError  # build imports this module

    label = name or f"namespace {ns_cfg.get('nsid')}"
    backend_cfg = ns_cfg["backend"]
    max_value = int(ns_cfg.get("max_value_size", default_max_value_size))
    limits: dict[str, Any] = dict(max_key_size=int(ns_cfg.get("max_key_size", max_key_size)),
                                  max_keys=ns_cfg.get("max_keys"), mode=kvs.KvMode(ns_cfg.get("mode", "strict")),
                                  ttl_s=ns_cfg.get("ttl_s"))
    key_name = ns_cfg.get(DATA_KEY_KEY)
    if key_name is None:
        store = open_kv_store(backend_cfg["kind"], path=backend_cfg.get("path"),
                              capacity_bytes=ns_cfg["capacity_bytes"], max_value_size=max_value, **limits)
        return KvNamespaceParts(KvNamespaceBackend(store), store, store, max_value)
    if engine is None:
        raise ProtectionError(f"{label}: encryption needs the offload pipeline")
    if keys is None:
        raise ProtectionError(f"{label}: names key {key_name!r} but the device has no '{KEYS_FILE_KEY}'")
    try:
        with keys.unwrap(key_name) as secret:
            derived = KvSecrets.derive(secret.reveal(), identity)
        key_id = keys.register(key_name, engine)
    except KeyStoreError as exc:
        raise ProtectionError(f"{label}: {exc}") from None
    try:
        store = open_protected_kv_store(backend_cfg["kind"], capacity_bytes=ns_cfg["capacity_bytes"],
                                        path=backend_cfg.get("path"), key_codec=derived.key_codec,
                                        max_value_size=max_value, **limits)
    except kvs.KvStoreCorrupt as exc:
        engine.unregister_key(key_id)
        raise ProtectionError(f"{label}: {exc}") from None
    except BaseException:
        engine.unregister_key(key_id)
        raise
    backend = ProtectedKvBackend(store, engine, key_id, derived, max_value_size=max_value, name=label,
                                 owns_key=True)
    log.info("%s: KV values AES-256-XTS, keys sealed (AES-SIV)", label)
    return KvNamespaceParts(backend, store, backend, max_value)
