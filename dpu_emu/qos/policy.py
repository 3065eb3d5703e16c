"""QoS policies: SPDK's four limits (``bdev_set_qos_limit`` names) plus a DRR weight.

A policy is a value: limits are per second, 0 means unlimited, every non-zero limit applies
at once, and "MB" means MiB (SPDK: ``value * 1024 * 1024`` bytes).  Unlike SPDK, limits are
not rounded (SPDK rounds IOPS up to a multiple of 1000 and bytes to 1 MiB/s).

``weight`` is this group's share of a saturated device (deficit round robin, see
:mod:`dpu_emu.qos.scheduler`); ``burst_ms`` widens the burst from one timeslice's quota to
``limit * burst_ms``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

MIB = 1 << 20
DEFAULT_WEIGHT = 1.0
MAX_WEIGHT = 1000.0
LIMIT_KEYS = ("rw_ios_per_sec", "rw_mbytes_per_sec", "r_mbytes_per_sec", "w_mbytes_per_sec")
POLICY_KEYS = frozenset((*LIMIT_KEYS, "weight", "burst_ms"))


class QosPolicyError(ValueError):
    """A policy field is invalid; the message names it."""


@dataclass(frozen=True)
class QosPolicy:
    """Limits for one QoS group (namespace or tenant).  0 = unlimited."""

    rw_ios_per_sec: float = 0
    rw_mbytes_per_sec: float = 0
    r_mbytes_per_sec: float = 0
    w_mbytes_per_sec: float = 0
    weight: float = DEFAULT_WEIGHT
    burst_ms: float = 0  # 0 = one timeslice's quota (SPDK)

    def __post_init__(self) -> None:
        for name in (*LIMIT_KEYS, "burst_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise QosPolicyError(f"{name} must be a number >= 0 (0 = unlimited), got {value!r}")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or not 0 < w <= MAX_WEIGHT:
            raise QosPolicyError(f"weight must be a number in (0, {MAX_WEIGHT:g}], got {w!r}")

    @classmethod
    def from_dict(cls, spec: dict[str, Any], where: str = "qos") -> QosPolicy:
        """Build from a config/REST dict; unknown keys are an error naming ``where``."""
        if not isinstance(spec, dict):
            raise QosPolicyError(f"{where}: must be an object, got {type(spec).__name__}")
        unknown = set(spec) - POLICY_KEYS
        if unknown:
            raise QosPolicyError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(POLICY_KEYS)}")
        try:
            return cls(**spec)
        except QosPolicyError as exc:
            raise QosPolicyError(f"{where}.{exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def unlimited(self) -> bool:
        return not any(getattr(self, k) for k in LIMIT_KEYS)

    def bytes_per_sec(self, key: str) -> float:
        """A ``*_mbytes_per_sec`` limit in bytes per second (MiB)."""
        return getattr(self, key) * MIB

    def replace(self, **changes: Any) -> QosPolicy:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return QosPolicy(**values)


UNLIMITED = QosPolicy()
