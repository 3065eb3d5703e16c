"""Fault injection for initiator testing (``/v1/faults``, ``dpu-emu fault``): see :mod:`.engine`."""

from .engine import FaultService, FaultType, FaultView, QueueKind

__all__ = ["FaultService", "FaultType", "FaultView", "QueueKind"]
