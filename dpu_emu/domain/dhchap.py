"""DH-HMAC-CHAP per host and subsystem: set, rotate, remove; write-only secrets.

A host entry of a subsystem that holds a DHHC-1 host key *requires* in-band
authentication: its Connect response asks for it and every other command of the queue
fails with Authentication Required until it succeeds (``nvmeof.controller.authcmd``).  An
optional controller key allows bidirectional authentication; ``hashes`` and ``dhgroups``
restrict what may be negotiated (nvmet's per-host ``dhchap_hash`` / ``dhchap_dhgroup``).

Secrets are write-only: views say only whether authentication is on, bidirectional, and
with which hashes and groups.  Nothing here logs a secret or puts one in an error message.

Persistence (top-level ``dhchap`` section of the saved configuration), per entry:

* ``key_file`` / ``ctrl_key_file``: the secret was given as a file (config file or CLI);
  only the path is saved, the file is read again on start.
* ``wrapped_key`` / ``wrapped_ctrl_key``: a secret given inline, wrapped with RFC 3394
  AES key wrap under the device's master key (the one its key manager uses: configured
  ``keys_file`` and ``DPU_EMU_MASTER_KEY[_FILE]``).
* neither: there is no master key, so the secret is kept in memory only.  On the next
  start the entry fails closed: the host still must authenticate but no secret is known,
  so it cannot until an administrator sets one again (a warning says so).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from nvmeof.auth import AuthPolicy, DhchapKey, DhGroupId, HashId, SecretError, dhgroup_by_name, hash_by_name
from nvmeof.auth.policy import DEFAULT_DHGROUPS, DEFAULT_HASHES

from ..keys import KeyStoreError, load_master_key
from .errors import InvalidArgument, NotFound
from .state import ADMIN, Scope, State, require_admin

log = logging.getLogger("dpu_emu.domain.dhchap")
SECTION = "dhchap"
SPEC_KEYS = frozenset({"dhchap_key", "dhchap_ctrl_key", "dhchap_hashes", "dhchap_dhgroups", "dhchap_key_file",
                       "dhchap_ctrl_key_file"})
ENTRY_KEYS = frozenset({"subsystem", "host", "hashes", "dhgroups", "key_file", "ctrl_key_file", "wrapped_key",
                        "wrapped_ctrl_key", "transform", "ctrl_transform"})


@dataclass
class HostDhchap:
    host_key: DhchapKey = field(repr=False)
    ctrl_key: DhchapKey | None = field(default=None, repr=False)
    hashes: tuple[HashId, ...] = DEFAULT_HASHES
    dhgroups: tuple[DhGroupId, ...] = DEFAULT_DHGROUPS
    key_file: str | None = None
    ctrl_key_file: str | None = None

    def policy(self) -> AuthPolicy:
        return AuthPolicy(self.host_key, self.ctrl_key, self.hashes, self.dhgroups)


def view_of(policy: AuthPolicy | None) -> dict[str, Any] | None:
    """What a client may know about a host's authentication (never a secret)."""
    if policy is None:
        return None
    return {"enabled": True, "bidirectional": policy.bidirectional,
            "hashes": [h.digest_name for h in policy.hashes], "dhgroups": [g.label for g in policy.dhgroups]}


def _secret(text: Any, what: str) -> DhchapKey:
    if not isinstance(text, str):
        raise InvalidArgument(f"{what} must be a DHHC-1 string")
    try:
        return DhchapKey.parse(text)
    except SecretError as exc:
        raise InvalidArgument(f"{what}: {exc}") from None


def _secret_file(path: Any, what: str, base: Path | None) -> tuple[DhchapKey, str]:
    if not isinstance(path, str) or not path:
        raise InvalidArgument(f"{what} must be a file path")
    full = Path(path) if base is None else base / path
    try:
        text = full.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{what}: cannot read {path}: {getattr(exc, 'strerror', None) or 'not ASCII'}") \
            from None
    return _secret(text.strip(), f"{what} ({path})"), path


def _names(values: Any, parse: Any, what: str) -> tuple[Any, ...]:
    if not isinstance(values, list) or not values:
        raise InvalidArgument(f"{what} must be a non-empty list")
    try:
        out = tuple(dict.fromkeys(parse(v) for v in values if isinstance(v, str)))
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    if len(out) != len(set(values)) or not all(isinstance(v, str) for v in values):
        raise InvalidArgument(f"{what}: names must be strings without duplicates")
    return out


def _master_key(state: State) -> bytes | None:
    if getattr(state.device, "keys", None) is None:
        return None
    try:
        return load_master_key()
    except KeyStoreError:
        return None


class DhchapService:
    def __init__(self, state: State) -> None:
        self.state = state
        self.entries: dict[tuple[str, str], HostDhchap] = {}
        state.exporters[SECTION] = self.export

    # -- queries -------------------------------------------------------------------------

    def _entry_host(self, ref: str, hostnqn: str) -> str:
        rec = self.state.subsystem(ref)
        if hostnqn not in rec.hosts:
            raise NotFound(f"host {hostnqn!r} is not in the allow list of {rec.nqn}")
        return rec.nqn

    def get(self, ref: str, hostnqn: str, scope: Scope = ADMIN) -> dict[str, Any]:
        require_admin(scope)
        nqn = self._entry_host(ref, hostnqn)
        return view_of(self.state.live(nqn).host_auth.get(hostnqn)) or {"enabled": False, "bidirectional": False,
                                                                          "hashes": [], "dhgroups": []}

    # -- changes -------------------------------------------------------------------------

    def build(self, spec: dict[str, Any], current: HostDhchap | None = None) -> HostDhchap:
        """Validate a request (inline secrets or secret files) into an entry; raises InvalidArgument."""
        unknown = set(spec) - SPEC_KEYS
        if unknown:
            raise InvalidArgument(f"unknown DH-HMAC-CHAP settings {sorted(unknown)}")
        base = self.state.data_dir
        entry = HostDhchap(current.host_key, current.ctrl_key, current.hashes, current.dhgroups, current.key_file,
                           current.ctrl_key_file) if current is not None else None
        if spec.get("dhchap_key") is not None and spec.get("dhchap_key_file") is not None:
            raise InvalidArgument("give dhchap_key or dhchap_key_file, not both")
        if spec.get("dhchap_key") is not None:
            key, key_file = _secret(spec["dhchap_key"], "dhchap_key"), None
        elif spec.get("dhchap_key_file") is not None:
            key, key_file = _secret_file(spec["dhchap_key_file"], "dhchap_key_file", base)
        elif entry is not None:
            key, key_file = entry.host_key, entry.key_file
        else:
            raise InvalidArgument("a DH-HMAC-CHAP host key (dhchap_key) is required")
        ctrl_key, ctrl_file = (entry.ctrl_key, entry.ctrl_key_file) if entry is not None else (None, None)
        if "dhchap_ctrl_key" in spec or "dhchap_ctrl_key_file" in spec:
            ctrl_key, ctrl_file = None, None  # explicitly null: back to unidirectional
            if spec.get("dhchap_ctrl_key") is not None:
                ctrl_key = _secret(spec["dhchap_ctrl_key"], "dhchap_ctrl_key")
            elif spec.get("dhchap_ctrl_key_file") is not None:
                ctrl_key, ctrl_file = _secret_file(spec["dhchap_ctrl_key_file"], "dhchap_ctrl_key_file", base)
        if ctrl_key is not None and ctrl_key.key == key.key:
            raise InvalidArgument("the controller key must differ from the host key")
        hashes = _names(spec["dhchap_hashes"], hash_by_name, "dhchap_hashes") if spec.get("dhchap_hashes") \
            else (entry.hashes if entry is not None else DEFAULT_HASHES)
        groups = _names(spec["dhchap_dhgroups"], dhgroup_by_name, "dhchap_dhgroups") if spec.get("dhchap_dhgroups") \
            else (entry.dhgroups if entry is not None else DEFAULT_DHGROUPS)
        return HostDhchap(key, ctrl_key, hashes, groups, key_file, ctrl_file)

    def _install(self, nqn: str, hostnqn: str, entry: HostDhchap | None) -> None:
        live = self.state.live(nqn)
        if entry is None:
            self.entries.pop((nqn, hostnqn), None)
            live.host_auth.pop(hostnqn, None)
        else:
            self.entries[(nqn, hostnqn)] = entry
            live.host_auth[hostnqn] = entry.policy()

    def set(self, ref: str, hostnqn: str, spec: dict[str, Any], scope: Scope = ADMIN, *,
            replace: bool = True, commit: bool = True) -> dict[str, Any]:
        """Set (``replace``) or update DH-HMAC-CHAP for a host; new connections use it at
        once, queues already authenticated stay up (as with nvmet)."""
        require_admin(scope)
        nqn = self._entry_host(ref, hostnqn)
        current = None if replace else self.entries.get((nqn, hostnqn))
        if not replace and current is None:
            raise NotFound(f"host {hostnqn!r} on {nqn} has no DH-HMAC-CHAP settings to update")
        self._install(nqn, hostnqn, self.build(spec, current))
        log.info("DH-HMAC-CHAP %s for host %s on %s", "set" if replace else "updated", hostnqn, nqn)
        if commit:
            self.state.commit()
        return self.get(nqn, hostnqn, scope)

    def remove(self, ref: str, hostnqn: str, scope: Scope = ADMIN) -> None:
        require_admin(scope)
        nqn = self._entry_host(ref, hostnqn)
        if (nqn, hostnqn) not in self.entries:
            raise NotFound(f"host {hostnqn!r} on {nqn} does not use DH-HMAC-CHAP")
        self._install(nqn, hostnqn, None)
        log.info("DH-HMAC-CHAP removed for host %s on %s", hostnqn, nqn)
        self.state.commit()

    def add_host(self, hosts: Any, ref: str, hostnqn: str, spec: dict[str, Any], scope: Scope = ADMIN) -> Any:
        """Add a host to the allow list with DH-HMAC-CHAP in one step (the secret is checked
        before the host is added, so a bad secret never leaves an unauthenticated entry)."""
        require_admin(scope)
        entry = self.build(spec) if any(spec.get(k) is not None for k in SPEC_KEYS) else None
        rec = self.state.subsystem(ref)
        if entry is None or hostnqn in rec.hosts:
            return hosts.add(ref, hostnqn, scope)  # an existing host: AlreadyExists, its settings untouched
        nqn = rec.nqn
        # install the requirement first: the host is never admitted without it, even for an instant
        self.entries[(nqn, hostnqn)] = entry
        self.state.live(nqn).host_auth[hostnqn] = entry.policy()
        try:
            return hosts.add(ref, hostnqn, scope)
        except BaseException:
            if hostnqn not in self.state.subsystem(ref).hosts:
                self._install(nqn, hostnqn, None)
            raise

    # -- persistence -----------------------------------------------------------------------

    def _prune(self) -> None:
        for (nqn, hostnqn) in list(self.entries):
            rec = self.state.subsystems.get(nqn)
            if rec is None or hostnqn not in rec.hosts:
                del self.entries[(nqn, hostnqn)]
                if rec is not None:
                    self.state.live(nqn).host_auth.pop(hostnqn, None)

    def export(self) -> list[dict[str, Any]] | None:
        self._prune()
        if not self.entries:
            return None
        master = _master_key(self.state)
        out = []
        for (nqn, hostnqn), e in sorted(self.entries.items()):
            item: dict[str, Any] = {"subsystem": nqn, "host": hostnqn, "hashes": [h.digest_name for h in e.hashes],
                                    "dhgroups": [g.label for g in e.dhgroups]}
            for name, key, path in (("key", e.host_key, e.key_file), ("ctrl_key", e.ctrl_key, e.ctrl_key_file)):
                if key is None:
                    continue
                if path is not None:
                    item[f"{name}_file"] = path
                elif master is not None:
                    item[f"wrapped_{name}"] = base64.b64encode(aes_key_wrap(master, key.key)).decode("ascii")
                    item["transform" if name == "key" else "ctrl_transform"] = key.transform
            out.append(item)
        return out

    def load(self, section: Any) -> None:
        """Entries of a saved configuration (or a hand-written one using key files)."""
        if section is None:
            return
        if not isinstance(section, list):
            raise InvalidArgument("dhchap must be a list of host entries")
        master = _master_key(self.state)
        for i, item in enumerate(section):
            where = f"dhchap[{i}]"
            if not isinstance(item, dict) or set(item) - ENTRY_KEYS:
                raise InvalidArgument(f"{where}: an object with keys {sorted(ENTRY_KEYS)}")
            nqn = self._entry_host(str(item.get("subsystem")), str(item.get("host")))
            spec: dict[str, Any] = {"dhchap_hashes": item.get("hashes"), "dhchap_dhgroups": item.get("dhgroups")}
            for name in ("key", "ctrl_key"):
                if item.get(f"{name}_file") is not None:
                    spec[f"dhchap_{name}_file"] = item[f"{name}_file"]
                elif item.get(f"wrapped_{name}") is not None:
                    key = self._unwrap(master, item, name, where)
                    spec[f"dhchap_{name}"] = key.format() if key is not None else None
            if spec.get("dhchap_key") is None and spec.get("dhchap_key_file") is None:
                log.warning("%s: no usable DH-HMAC-CHAP secret for host %s on %s; the host must authenticate "
                            "but cannot until a secret is set again", where, item.get("host"), nqn)
                spec["dhchap_key"] = DhchapKey(os.urandom(32)).format()  # fail closed: nobody knows it
            self._install(nqn, str(item["host"]), self.build({k: v for k, v in spec.items() if v is not None}))

    @staticmethod
    def _unwrap(master: bytes | None, item: dict[str, Any], name: str, where: str) -> DhchapKey | None:
        if master is None:
            return None
        try:
            raw = aes_key_unwrap(master, base64.b64decode(item[f"wrapped_{name}"], validate=True))
            return DhchapKey(raw, int(item.get("transform" if name == "key" else "ctrl_transform", 0)))
        except (InvalidUnwrap, binascii.Error, ValueError):
            log.warning("%s: the wrapped %s does not unwrap under this master key", where, name)
            return None
