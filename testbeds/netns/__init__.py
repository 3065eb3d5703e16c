"""Network testbed: pyroute2-built namespaces, veth paths and impairments (see topology.py)."""

from .cleanup import remove_stale
from .impair import (
    ImpairmentError,
    LossRule,
    add_loss,
    clear_qdisc,
    packet_loss,
    remove_loss,
    set_htb,
    set_link,
    set_tbf,
)
from .topology import EMU_ROLE, NetnsUnavailable, Path, Topology, unavailable_reason

__all__ = [
    "EMU_ROLE", "ImpairmentError", "LossRule", "NetnsUnavailable", "Path", "Topology", "add_loss",
    "clear_qdisc", "packet_loss", "remove_loss", "remove_stale", "set_htb", "set_link", "set_tbf",
    "unavailable_reason",
]
