"""Controllers (live associations) and the statistics of namespaces and controllers."""

from __future__ import annotations

import time
from dataclasses import dataclass

from nvmeof.controller.controller import Controller
from nvmeof.wire.constants import DISCOVERY_NQN

from .errors import NotFound
from .state import ADMIN, Scope, State, require_admin
from .stats import HISTOGRAM_BUCKETS, DirectionStats, Histogram, summarize

DISCOVERY_ID = "discovery"
ID_SEPARATOR = "."
RELEASE_REASON = "deleted through the management API"


@dataclass(frozen=True)
class ControllerView:
    id: str
    subsystem: str
    subsystem_id: str
    cntlid: int
    hostnqn: str
    hostid: str
    queues: list[int]
    io_queues: int
    kato_ms: int
    connected_since: float  # Unix time
    local_address: str
    local_port: int | None


@dataclass(frozen=True)
class NamespaceStats:
    subsystem: str
    subsystem_id: str
    nsid: int
    errors: int
    read: DirectionStats
    write: DirectionStats
    other: DirectionStats
    latency_buckets_us: dict[str, list[int]]  # direction -> per-bucket counts (bucket i: < 2**i us)
    latency_sum_ns: dict[str, int]


@dataclass(frozen=True)
class ControllerStats:
    id: str
    subsystem: str
    cntlid: int
    hostnqn: str
    read_ops: int
    write_ops: int
    bytes_read: int
    bytes_written: int
    errors: int


@dataclass(frozen=True)
class TransportStats:
    """What the transport limits did (nvmeof.target.limits); device-wide, administrators only."""

    connections: int  # TCP connections open now
    refused_connections: dict[int, int]  # listener port id -> refused over max_connections_per_listener
    icreq_timeouts: int  # closed for sending no ICReq within icreq_timeout_s
    backpressure_pauses: int  # times reading paused over max_connection_memory


@dataclass(frozen=True)
class StatsSnapshot:
    namespaces: list[NamespaceStats]
    controllers: list[ControllerStats]
    histogram_bucket_bounds_us: list[int]
    transport: TransportStats | None = None


class ControllerService:
    def __init__(self, state: State) -> None:
        self.state = state

    def _entries(self, scope: Scope, include_discovery: bool) -> list[tuple[str, Controller]]:
        state = self.state
        tenant = state.tenants.get(scope.tenant or "") if not scope.is_admin else None
        out: list[tuple[str, Controller]] = []
        for nqn in sorted(state.subsystems):
            sub_id = state.subsystems[nqn].id
            live = state.target.subsystems.get(nqn)
            for cntlid, ctrl in sorted(live.controllers.items()) if live is not None else ():
                if scope.is_admin or (tenant is not None and ctrl.hostnqn in tenant.hosts):
                    out.append((f"{sub_id}{ID_SEPARATOR}{cntlid}", ctrl))
        if include_discovery and scope.is_admin:
            for cntlid, ctrl in sorted(state.target.discovery_controllers.items()):
                out.append((f"{DISCOVERY_ID}{ID_SEPARATOR}{cntlid}", ctrl))
        return out

    def _view(self, cid: str, ctrl: Controller) -> ControllerView:
        sub = ctrl.subsystem
        nqn = sub.nqn if sub is not None else DISCOVERY_NQN
        rec = self.state.subsystems.get(nqn)
        age = self.state.target.clock() - ctrl.created
        port = ctrl.local_addr[1]
        return ControllerView(
            id=cid, subsystem=nqn, subsystem_id=rec.id if rec is not None else DISCOVERY_ID, cntlid=ctrl.cntlid,
            hostnqn=ctrl.hostnqn, hostid=ctrl.hostid.hex(), queues=sorted(ctrl.queues),
            io_queues=sum(1 for q in ctrl.queues if q), kato_ms=ctrl.kato_ms,
            connected_since=round(time.time() - age, 3), local_address=ctrl.local_addr[0],
            local_port=int(port) if port.isdigit() else None)

    def list(self, scope: Scope = ADMIN, subsystem: str | None = None) -> list[ControllerView]:
        nqn = self.state.subsystem(subsystem).nqn if subsystem is not None else None
        return [self._view(cid, c) for cid, c in self._entries(scope, include_discovery=nqn is None)
                if nqn is None or (c.subsystem is not None and c.subsystem.nqn == nqn)]

    def _find(self, cid: str, scope: Scope) -> Controller:
        for ident, ctrl in self._entries(scope, include_discovery=True):
            if ident == cid:
                return ctrl
        raise NotFound(f"no controller {cid!r}")

    def get(self, cid: str, scope: Scope = ADMIN) -> ControllerView:
        return self._view(cid, self._find(cid, scope))

    def delete(self, cid: str, scope: Scope = ADMIN) -> None:
        """Disconnect: the association ends and every queue of it is closed."""
        require_admin(scope)
        self._find(cid, scope).release(RELEASE_REASON)

    # -- statistics ------------------------------------------------------------------------

    def stats(self, scope: Scope = ADMIN) -> StatsSnapshot:
        state = self.state
        namespaces = []
        for (nqn, nsid), io in sorted(state.stats.items()):
            visible = state.visible_to(scope, nqn)
            if visible is not None and nsid not in visible:
                continue
            per_direction, errors = summarize(io)
            namespaces.append(NamespaceStats(
                subsystem=nqn, subsystem_id=state.subsystems[nqn].id, nsid=nsid, errors=errors,
                read=per_direction["read"], write=per_direction["write"], other=per_direction["other"],
                latency_buckets_us={d: list(h.buckets) for d, h in io.latency.items()},
                latency_sum_ns={d: h.total_ns for d, h in io.latency.items()}))
        controllers = []
        for cid, ctrl in self._entries(scope, include_discovery=False):
            smart = ctrl.smart
            assert ctrl.subsystem is not None
            controllers.append(ControllerStats(
                id=cid, subsystem=ctrl.subsystem.nqn, cntlid=ctrl.cntlid, hostnqn=ctrl.hostnqn,
                read_ops=smart.read_commands, write_ops=smart.write_commands, bytes_read=smart.bytes_read,
                bytes_written=smart.bytes_written, errors=ctrl.error_count))
        bounds = [Histogram.upper_bound_us(i) for i in range(HISTOGRAM_BUCKETS)]
        return StatsSnapshot(namespaces=namespaces, controllers=controllers, histogram_bucket_bounds_us=bounds,
                             transport=self._transport() if scope.is_admin else None)

    def _transport(self) -> TransportStats:
        server = self.state.device.server
        return TransportStats(connections=len(server.sessions),
                              refused_connections={p: g.refused for p, g in sorted(server.gates.items())},
                              icreq_timeouts=server.icreq_timeouts, backpressure_pauses=server.budget_pauses)
