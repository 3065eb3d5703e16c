"""Data keys over the management API: generate or import, list, show, delete.

The device's :class:`dpu_emu.keys.KeyManager` keeps every key wrapped under the master key
in its own file; this service only adds the model's rules.  Key material is write-only:
an imported key comes in once (base64) and no view, log line, error message or saved
configuration ever holds it; a key is shown as its id, fingerprint and creation time.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from ..keys import DuplicateKeyError, KeyInfo, KeyManager, KeyStoreError, UnknownKeyError
from .errors import AlreadyExists, Conflict, InvalidArgument, NotFound, PersistError, Unavailable
from .state import ADMIN, Scope, State, require_admin

NOT_CONFIGURED = ("key management not configured: the device needs a keys_file and a master key "
                  "(DPU_EMU_MASTER_KEY or DPU_EMU_MASTER_KEY_FILE)")
KEY_FIELD = "key"
MATERIAL_FIELD = "material"


@dataclass(frozen=True)
class KeyView:
    id: str
    fingerprint: str
    created: str
    used_by: list[str]


class KeyService:
    def __init__(self, state: State) -> None:
        self.state = state

    def _manager(self) -> KeyManager:
        manager: KeyManager | None = getattr(self.state.device, "keys", None)
        if manager is None:
            raise Unavailable(NOT_CONFIGURED)
        return manager

    def users(self, key_id: str) -> list[str]:
        return [f"namespace {sub.nqn}/{nsid}" for sub in sorted(self.state.subsystems.values(), key=lambda s: s.nqn)
                for nsid, rec in sorted(sub.namespaces.items()) if rec.extra.get(KEY_FIELD) == key_id]

    def _view(self, info: KeyInfo) -> KeyView:
        return KeyView(id=info.id, fingerprint=info.fingerprint, created=info.created, used_by=self.users(info.id))

    def create(self, spec: dict[str, Any], scope: Scope = ADMIN) -> KeyView:
        """Generate a key, or import ``material`` (base64 of the 64-byte AES-256-XTS key)."""
        require_admin(scope)
        manager = self._manager()
        key_id = spec.get("id")
        encoded = spec.get(MATERIAL_FIELD)
        try:
            if encoded is None:
                info = manager.create(key_id)
            else:
                try:
                    material = base64.b64decode(encoded, validate=True)
                except (binascii.Error, ValueError):
                    raise InvalidArgument("material must be base64 (of a 64-byte AES-256-XTS key)") from None
                info = manager.import_key(material, key_id)
        except DuplicateKeyError as exc:
            raise AlreadyExists(str(exc)) from None
        except OSError as exc:
            raise PersistError(f"the key file could not be written: {exc.strerror}") from None
        except (KeyStoreError, ValueError) as exc:
            raise InvalidArgument(str(exc)) from None
        return self._view(info)

    def list(self, scope: Scope = ADMIN) -> list[KeyView]:
        require_admin(scope)
        return [self._view(info) for info in self._manager().list_keys()]

    def get(self, key_id: str, scope: Scope = ADMIN) -> KeyView:
        require_admin(scope)
        try:
            return self._view(self._manager().info(key_id))
        except (UnknownKeyError, KeyError):
            raise NotFound(f"no key {key_id!r}") from None

    def delete(self, key_id: str, scope: Scope = ADMIN) -> None:
        """Refused while a namespace uses the key (its data would be unreadable)."""
        require_admin(scope)
        self.get(key_id, scope)
        users = self.users(key_id)
        if users:
            raise Conflict(f"key {key_id!r} is in use by {', '.join(users)}")
        try:
            self._manager().delete(key_id)
        except OSError as exc:
            raise PersistError(f"the key file could not be written: {exc.strerror}") from None
