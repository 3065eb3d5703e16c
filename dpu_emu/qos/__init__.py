"""Quality of service for the device: SPDK-style rate limits per namespace and per tenant,
and weighted fair sharing of a saturated device.

Theory of operation (details in each module):

* :mod:`.bucket` - a token bucket per limit, refilled every timeslice (1 ms), fixed-point
  so any rate is exact; an I/O starts while credit is positive and may leave a debt.
* :mod:`.policy` - :class:`QosPolicy`: ``rw_ios_per_sec``, ``rw_mbytes_per_sec``,
  ``r_mbytes_per_sec``, ``w_mbytes_per_sec`` (0 = unlimited, MiB), ``weight``, ``burst_ms``.
* :mod:`.group` - :class:`QosGroup`: the buckets of one namespace or one tenant, live
  :meth:`~QosGroup.update`, telemetry.
* :mod:`.scheduler` - :class:`QosScheduler`: one per device; FIFO waiting per flow with a
  single loop timer at the next refill, then deficit round robin into a device budget.
* :mod:`.backend` - :class:`QosBackend`: the controller's backend port around any
  namespace backend; abort, close.
* :mod:`.registry` - :class:`QosRegistry`: builds all of it from the configuration.
"""

from .backend import QosBackend, command_cost, tenant_classifier
from .bucket import DEFAULT_TIMESLICE_US, TokenBucket
from .group import NAMESPACE, TENANT, QosGroup
from .policy import UNLIMITED, QosPolicy, QosPolicyError
from .registry import QosRegistry, validate_qos_config
from .scheduler import QosScheduler
from .telemetry import GroupStats, LatencyHistogram

__all__ = [
    "DEFAULT_TIMESLICE_US", "NAMESPACE", "TENANT", "UNLIMITED", "GroupStats", "LatencyHistogram", "QosBackend",
    "QosGroup", "QosPolicy", "QosPolicyError", "QosRegistry", "QosScheduler", "TokenBucket", "command_cost",
    "tenant_classifier", "validate_qos_config",
]
