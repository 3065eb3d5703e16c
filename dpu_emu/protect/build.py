"""Builders the composition root (``dpu_emu.device``) calls, and the config keys they read.

Configuration (additions to the device's JSON)::

    "pipeline":  {"engine": "process" | "inline", "workers": 1}     # device level, optional
    "keys_file": "/var/lib/dpu-emu/keys.json"                       # device level, optional
    "subsystems": [{"namespaces": [
        {"nsid": 1, "size_bytes": ..., "backend": {"kind": "file", "path": "/data/ns1.img"},
         "integrity": true,                   # CRC32C per block (tags in "<path>.crc")
         "key": "key-3f9c0a1b2c4d",           # AES-256-XTS with this data key (implies integrity)
         "integrity_path": "/meta/ns1.crc"},  # optional: where the tags live (file backends)
        {"nsid": 2, "command_set": "kv", ..., "key": "key-3f9c0a1b2c4d"}   # KV: see protect.kv
    ]}]

The master key that unwraps the keys file comes from the environment
(``DPU_EMU_MASTER_KEY_FILE`` or ``DPU_EMU_MASTER_KEY``), never from the configuration.

Lifecycle for the device: :func:`build_engine` in ``__init__`` (before namespaces are
built: keys can be registered before the engine starts), :func:`start_engine` in
``start()`` before the listeners, ``await engine.aclose()`` in ``stop()`` after the server
closed and the namespaces were flushed and closed.  :func:`namespace_backend` returns the
backend for any NVM namespace; a protected one also has ``flush()``/``close()`` covering
its tags, so the device can track it where it tracks stores.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from ..config import ConfigError
from ..datapath import BlockNamespaceBackend
from ..keys import KeyManager, KeyStoreError
from ..pipeline import Engine, InlineEngine, ProcessEngine
from ..storage.block import BlockStore, FileBlockStore
from .backend import ProtectedBlockBackend
from .crc_table import CrcTable, CrcTableError, FileCrcTable, RamCrcTable, sidecar_path
from .intent import INTENT_SUFFIX, LandingIntent

log = logging.getLogger("dpu_emu.protect")

PIPELINE_KEY: Final = "pipeline"
KEYS_FILE_KEY: Final = "keys_file"
INTEGRITY_KEY: Final = "integrity"
DATA_KEY_KEY: Final = "key"
INTEGRITY_PATH_KEY: Final = "integrity_path"
PIPELINE_FIELDS: Final = frozenset({"engine", "workers"})
MAX_WORKERS: Final = 64
PLAIN_BINDING: Final = b"crc32c"
XTS_BINDING_PREFIX: Final = b"aes-256-xts:"


class EngineKind(StrEnum):
    PROCESS = "process"
    INLINE = "inline"


class ProtectionError(ValueError):
    """A protected namespace cannot start (unknown key, wrong master key, foreign tag table)."""


# -- configuration ----------------------------------------------------------------------

def validate_pipeline_config(cfg: Mapping[str, Any]) -> None:
    """Check the device-level ``pipeline`` and ``keys_file`` keys (shape only)."""
    pipeline = cfg.get(PIPELINE_KEY)
    if pipeline is not None:
        if not isinstance(pipeline, dict):
            raise ConfigError(f"{PIPELINE_KEY}: expected an object")
        unknown = set(pipeline) - PIPELINE_FIELDS
        if unknown:
            raise ConfigError(f"{PIPELINE_KEY}: unknown keys {sorted(unknown)}")
        kind = pipeline.get("engine", EngineKind.PROCESS.value)
        if kind not in {k.value for k in EngineKind}:
            raise ConfigError(f"{PIPELINE_KEY}.engine: 'process' or 'inline'")
        workers = pipeline.get("workers")
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool)
                                    or not 1 <= workers <= MAX_WORKERS):
            raise ConfigError(f"{PIPELINE_KEY}.workers: an integer in 1..{MAX_WORKERS}")
    keys_file = cfg.get(KEYS_FILE_KEY)
    if keys_file is not None and not isinstance(keys_file, str):
        raise ConfigError(f"{KEYS_FILE_KEY}: expected a path string")


def validate_namespace_protection(ns_cfg: Mapping[str, Any], where: str) -> None:
    """Check a namespace's ``integrity`` / ``key`` / ``integrity_path`` keys (shape only)."""
    integrity = ns_cfg.get(INTEGRITY_KEY)
    key = ns_cfg.get(DATA_KEY_KEY)
    path = ns_cfg.get(INTEGRITY_PATH_KEY)
    if integrity is None and key is None and path is None:
        return
    if ns_cfg.get("command_set", "nvm") != "nvm":
        if path is not None:
            raise ConfigError(f"{where}.{INTEGRITY_PATH_KEY}: KV namespaces keep no integrity table")
        if key is None:
            raise ConfigError(f"{where}.{INTEGRITY_KEY}: integrity alone is supported on NVM namespaces only; "
                              f"a KV namespace gets value integrity with a '{DATA_KEY_KEY}' (encryption)")
    if integrity is not None and not isinstance(integrity, bool):
        raise ConfigError(f"{where}.{INTEGRITY_KEY}: true or false")
    if key is not None:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}.{DATA_KEY_KEY}: the id of a data key")
        if integrity is False:
            raise ConfigError(f"{where}.{DATA_KEY_KEY}: an encrypted namespace always has integrity tags")
    if path is not None:
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{where}.{INTEGRITY_PATH_KEY}: a file path")
        if ns_cfg.get("backend", {}).get("kind") != "file":
            raise ConfigError(f"{where}.{INTEGRITY_PATH_KEY}: only file-backed namespaces keep tags in a file")


def is_protected(ns_cfg: Mapping[str, Any]) -> bool:
    return bool(ns_cfg.get(INTEGRITY_KEY)) or ns_cfg.get(DATA_KEY_KEY) is not None


def uses_keys(cfg: Mapping[str, Any]) -> bool:
    """True if any namespace of the configuration names a data key."""
    return any(ns.get(DATA_KEY_KEY) is not None for sub in cfg.get("subsystems", [])
               for ns in sub.get("namespaces", []) or [])


# -- engine and keys ----------------------------------------------------------------------

def build_engine(pipeline_cfg: Mapping[str, Any] | None = None) -> Engine:
    """An engine from the ``pipeline`` object (default: process engine, default workers).

    A :class:`ProcessEngine` must still be started (:func:`start_engine`) on the event
    loop; keys may be registered before that.
    """
    pipeline = dict(pipeline_cfg or {})
    kind = EngineKind(pipeline.get("engine", EngineKind.PROCESS.value))
    if kind is EngineKind.INLINE:
        return InlineEngine()
    return ProcessEngine(pipeline.get("workers"))


async def start_engine(engine: Engine) -> None:
    """Start the worker processes of a process engine (no-op for the inline engine)."""
    if isinstance(engine, ProcessEngine) and engine.segment_name is None:
        await engine.start()


def open_key_manager(keys_file: str | os.PathLike[str] | None,
                     environ: Mapping[str, str] | None = None) -> KeyManager | None:
    """The device's key manager (None without a ``keys_file``); master key from the environment."""
    if keys_file is None:
        return None
    return KeyManager.from_environment(keys_file, environ)


# -- namespaces ---------------------------------------------------------------------------

def open_crc_table(store: BlockStore, *, path: str | os.PathLike[str] | None = None,
                   binding: bytes = PLAIN_BINDING) -> CrcTable:
    """The tag table of a store: ``<data path>.crc`` (or ``path``) for a file store, RAM otherwise.

    Refuses (:class:`ProtectionError`) to start a fresh table beside a data file that already
    holds data: every written block would read as an integrity error.
    """
    if not isinstance(store, FileBlockStore):
        if path is not None:
            raise ProtectionError("a RAM namespace keeps its integrity tags in memory (no integrity_path)")
        return RamCrcTable(store.num_blocks)
    table_path = os.fspath(path) if path is not None else sidecar_path(store.path)
    try:
        table = FileCrcTable(table_path, store.num_blocks, store.block_size, binding=binding)
    except CrcTableError as exc:
        raise ProtectionError(str(exc)) from None
    if table.created and store.allocated_bytes > 0:
        table.close()
        os.unlink(table_path)
        raise ProtectionError(f"{store.path} already holds data but has no integrity table ({table_path}); "
                              "protection can only be enabled on an empty namespace")
    return table


def protected_block_backend(store: BlockStore, engine: Engine, *, key_id: int | None = None,
                            crc_table: CrcTable | None = None, crc_path: str | os.PathLike[str] | None = None,
                            binding: bytes = PLAIN_BINDING, owns_key: bool = False,
                            name: str = "") -> ProtectedBlockBackend:
    """A protected backend over ``store``; opens its tag table unless one is given.

    ``key_id`` is an engine key id (``engine.register_key``); with ``owns_key`` the backend
    unregisters it when closed.
    """
    table = crc_table if crc_table is not None else open_crc_table(store, path=crc_path, binding=binding)
    intent: LandingIntent | None = None
    try:
        if isinstance(table, FileCrcTable):  # data + tags survive a kill between the two writes
            intent = LandingIntent(table.path + INTENT_SUFFIX)
        return ProtectedBlockBackend(store, table, engine, key_id, name=name, owns_key=owns_key, intent=intent)
    except BaseException:
        if intent is not None:
            intent.close()
        if crc_table is None:
            table.close()
        raise


def namespace_backend(store: BlockStore, ns_cfg: Mapping[str, Any], *, engine: Engine | None,
                      keys: KeyManager | None, name: str = "") -> BlockNamespaceBackend | ProtectedBlockBackend:
    """The backend of an NVM namespace as its configuration asks: plain, CRC32C, or encrypted.

    Raises :class:`ProtectionError` when a protected namespace cannot start: no engine, no
    key manager, unknown key, wrong master key (the key does not unwrap), or a tag table
    that belongs to other data or another key; and when an unprotected file namespace has
    a tag table beside it (its data was written protected, perhaps encrypted: served
    plain it would be wrong data).  The store stays open (the caller owns it).
    """
    label = name or f"namespace {ns_cfg.get('nsid')}"
    if not is_protected(ns_cfg):
        if isinstance(store, FileBlockStore) and os.path.exists(sidecar_path(store.path)):
            raise ProtectionError(f"{label}: {store.path} has an integrity table ({sidecar_path(store.path)}): "
                                  "it was written protected (maybe encrypted) and would read back as wrong data "
                                  "without its 'integrity'/'key' settings")
        return BlockNamespaceBackend(store)
    if engine is None:
        raise ProtectionError(f"{label}: integrity/encryption needs the offload pipeline")
    key_name = ns_cfg.get(DATA_KEY_KEY)
    key_id: int | None = None
    binding = PLAIN_BINDING
    if key_name is not None:
        if keys is None:
            raise ProtectionError(f"{label}: names key {key_name!r} but the device has no '{KEYS_FILE_KEY}'")
        try:
            binding = XTS_BINDING_PREFIX + keys.binding(key_name)
            key_id = keys.register(key_name, engine)
        except KeyStoreError as exc:
            raise ProtectionError(f"{label}: {exc}") from None
    try:
        backend = protected_block_backend(store, engine, key_id=key_id, crc_path=ns_cfg.get(INTEGRITY_PATH_KEY),
                                          binding=binding, owns_key=key_id is not None, name=label)
    except BaseException:
        if key_id is not None:
            engine.unregister_key(key_id)
        raise
    log.info("%s: %s", label, "AES-256-XTS + CRC32C" if key_id is not None else "CRC32C integrity")
    return backend
