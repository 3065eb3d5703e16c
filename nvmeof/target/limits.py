"""Limits that protect the target process from its peers (sans-IO, no sockets here).

Theory of operation
-------------------
Every limit is named in :class:`~nvmeof.controller.model.TargetConfig`; this module holds
the arithmetic and the small state machines the asyncio edge (``server.py``) and the
transport (``controller_side.py``) apply:

- **PDU length** (:func:`max_plen`): the largest PLEN a PDU type may carry given the
  advertised limits (CapsuleCmd: 72 + in-capsule size; H2CData: 24 + MAXH2CDATA; plus
  header/data digests and the largest PDO padding).  The framing rejects anything longer
  from its 8-byte common header, before buffering the body, with C2HTermReq FES 05h Data
  Transfer Limit Exceeded and FEI = offset of PLEN.
- **R2Ts per connection** and **memory per connection** (:class:`ConnectionBudget`): bytes
  held for one connection (receive buffer + H2C data being collected + read data owed +
  unsent output).  Above the budget the connection stops taking PDUs (backpressure, never
  an error) and the edge stops reading the socket; a command that needs an R2T waits, in
  order, until the budget and an R2T slot allow it.
- **Connections per listener** (:class:`ListenerGate`): beyond the cap a new TCP connection
  is closed at once and counted; one log line per burst of refusals.
- **ICReq deadline**: ``icreq_timeout_s`` (the edge arms a timer per connection).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..transport.framing import MAX_PDO_PADDING
from ..wire.constants import CH_SIZE, DIGEST_SIZE, PduType
from ..wire.pdu import HLEN

REFUSAL_BURST_GAP_S = 10.0  # a refusal after this much quiet starts a new burst (logged again)


def max_pdu_data(pdu_type: int, *, in_capsule_size: int, maxh2cdata: int) -> int:
    """Largest data field one PDU of ``pdu_type`` may carry from the host."""
    if pdu_type == PduType.CAPSULE_CMD:
        return in_capsule_size
    if pdu_type == PduType.H2C_DATA:
        return maxh2cdata
    return 0


def max_plen(pdu_type: int, *, in_capsule_size: int, maxh2cdata: int, hdgst: bool, ddgst: bool) -> int:
    """Largest PLEN accepted for ``pdu_type`` with the negotiated digests."""
    data = max_pdu_data(pdu_type, in_capsule_size=in_capsule_size, maxh2cdata=maxh2cdata)
    plen = HLEN.get(pdu_type, CH_SIZE) + (DIGEST_SIZE if hdgst else 0)
    if data:
        plen += MAX_PDO_PADDING + data + (DIGEST_SIZE if ddgst else 0)
    return plen


@dataclass
class ConnectionBudget:
    """Bytes one connection may hold; ``limit`` 0 means unlimited."""

    limit: int
    max_r2t: int

    def over(self, used: int) -> bool:
        return bool(self.limit) and used > self.limit

    def may_start_transfer(self, used: int, length: int, active: int) -> bool:
        """Whether an R2T for ``length`` bytes may be sent now (one transfer always may)."""
        if active >= self.max_r2t:
            return False
        return active == 0 or not self.limit or used + length <= self.limit


class ListenerGate:
    """Connections per listener: ``acquire`` on accept (False = refuse), ``release`` on close.

    ``refused`` counts every refusal; ``on_refusal`` gets (refusals in this burst, limit) once
    at the start of each burst (the first refusal after ``REFUSAL_BURST_GAP_S`` of quiet).
    """

    def __init__(self, limit: int, clock: Callable[[], float],
                 on_refusal: Callable[[int, int], None] | None = None) -> None:
        self.limit = limit
        self.clock = clock
        self.on_refusal = on_refusal
        self.active = 0
        self.refused = 0
        self.bursts = 0
        self._last_refusal: float | None = None

    def acquire(self) -> bool:
        if not self.limit or self.active < self.limit:
            self.active += 1
            return True
        self.refused += 1
        now = self.clock()
        if self._last_refusal is None or now - self._last_refusal >= REFUSAL_BURST_GAP_S:
            self.bursts += 1
            if self.on_refusal is not None:
                self.on_refusal(self.refused, self.limit)
        self._last_refusal = now
        return False

    def release(self) -> None:
        if self.active:
            self.active -= 1
