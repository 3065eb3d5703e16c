"""Prometheus text exposition (format 0.0.4) of a statistics snapshot."""

from __future__ import annotations

from typing import Any

from dpu_emu.domain.controllers import StatsSnapshot, TransportStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
US_PER_S = 1e6
NS_PER_S = 1e9


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


QOS_QUANTILES = (("0.5", "p50_us"), ("0.99", "p99_us"), ("0.999", "p999_us"))


def _qos_groups(qos: dict[str, Any]) -> list[tuple[dict[str, object], dict[str, Any]]]:
    """(labels, group snapshot) for every QoS group: namespaces then tenants."""
    out: list[tuple[dict[str, object], dict[str, Any]]] = []
    for g in qos.get("namespaces", []):
        out.append(({"level": "namespace", "subsystem": g["subsystem"], "nsid": g["nsid"]}, g))
    for g in qos.get("tenants", []):
        out.append(({"level": "tenant", "tenant": g["tenant"]}, g))
    return out


def render_qos(qos: dict[str, Any], lines: list[str]) -> None:
    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    groups = _qos_groups(qos)
    family("dpu_emu_qos_ops_total", "counter", "commands completed through a QoS group, per direction")
    for labels, g in groups:
        for direction, value in sorted(g["ops"].items()):
            lines.append(f"dpu_emu_qos_ops_total{_labels(**labels, direction=direction)} {value}")
    family("dpu_emu_qos_bytes_total", "counter", "bytes moved through a QoS group, per direction")
    for labels, g in groups:
        for direction, value in sorted(g["bytes"].items()):
            lines.append(f"dpu_emu_qos_bytes_total{_labels(**labels, direction=direction)} {value}")
    family("dpu_emu_qos_latency_seconds", "summary", "command latency through a QoS group (queueing included)")
    for labels, g in groups:
        lat = g["latency"]
        for quantile, key in QOS_QUANTILES:
            lines.append(f"dpu_emu_qos_latency_seconds{_labels(**labels, quantile=quantile)} "
                         f"{lat[key] / US_PER_S:.9f}")
        lines.append(f"dpu_emu_qos_latency_seconds_sum{_labels(**labels)} "
                     f"{lat['mean_us'] * lat['count'] / US_PER_S:.9f}")
        lines.append(f"dpu_emu_qos_latency_seconds_count{_labels(**labels)} {lat['count']}")
    family("dpu_emu_qos_throttled_ios_total", "counter", "commands that waited for a QoS group's tokens")
    for labels, g in groups:
        lines.append(f"dpu_emu_qos_throttled_ios_total{_labels(**labels)} {g['throttled_ios']}")
    family("dpu_emu_qos_throttled_seconds_total", "counter", "summed time commands waited for tokens")
    for labels, g in groups:
        lines.append(f"dpu_emu_qos_throttled_seconds_total{_labels(**labels)} {g['throttled_seconds']:.6f}")
    family("dpu_emu_qos_queue_depth", "gauge", "commands waiting in a QoS group now")
    for labels, g in groups:
        lines.append(f"dpu_emu_qos_queue_depth{_labels(**labels)} {g['queue_depth']}")
    family("dpu_emu_qos_inflight", "gauge", "commands of a QoS group in the backend now")
    for labels, g in groups:
        lines.append(f"dpu_emu_qos_inflight{_labels(**labels)} {g['inflight']}")


def render_transport(transport: TransportStats, lines: list[str]) -> None:
    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family("dpu_emu_transport_connections", "gauge", "NVMe/TCP connections open now")
    lines.append(f"dpu_emu_transport_connections {transport.connections}")
    family("dpu_emu_transport_refused_connections_total", "counter",
           "connections closed at once over a listener's max_connections_per_listener")
    for portid, refused in transport.refused_connections.items():
        lines.append(f"dpu_emu_transport_refused_connections_total{_labels(listener=portid)} {refused}")
    family("dpu_emu_transport_icreq_timeouts_total", "counter", "connections closed for sending no ICReq in time")
    lines.append(f"dpu_emu_transport_icreq_timeouts_total {transport.icreq_timeouts}")
    family("dpu_emu_transport_backpressure_pauses_total", "counter",
           "times a connection's reading paused over its max_connection_memory")
    lines.append(f"dpu_emu_transport_backpressure_pauses_total {transport.backpressure_pauses}")


def render(snapshot: StatsSnapshot, qos: dict[str, Any] | None = None) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family("dpu_emu_namespace_ops_total", "counter", "I/O commands completed per namespace and direction")
    for ns in snapshot.namespaces:
        for direction in ("read", "write", "other"):
            ops = getattr(ns, direction).ops
            lines.append(f"dpu_emu_namespace_ops_total"
                         f"{_labels(subsystem=ns.subsystem, nsid=ns.nsid, direction=direction)} {ops}")
    family("dpu_emu_namespace_bytes_total", "counter", "user data bytes moved per namespace and direction")
    for ns in snapshot.namespaces:
        for direction in ("read", "write"):
            lines.append(f"dpu_emu_namespace_bytes_total"
                         f"{_labels(subsystem=ns.subsystem, nsid=ns.nsid, direction=direction)} "
                         f"{getattr(ns, direction).bytes or 0}")
    family("dpu_emu_namespace_errors_total", "counter", "I/O commands completed with an error status")
    for ns in snapshot.namespaces:
        lines.append(f"dpu_emu_namespace_errors_total{_labels(subsystem=ns.subsystem, nsid=ns.nsid)} {ns.errors}")
    family("dpu_emu_namespace_latency_seconds", "histogram", "I/O command latency in the device")
    bounds = snapshot.histogram_bucket_bounds_us
    for ns in snapshot.namespaces:
        for direction, buckets in ns.latency_buckets_us.items():
            base = dict(subsystem=ns.subsystem, nsid=ns.nsid, direction=direction)
            cumulative = 0
            for bound, count in zip(bounds[:-1], buckets[:-1], strict=True):
                cumulative += count
                lines.append(f"dpu_emu_namespace_latency_seconds_bucket"
                             f"{_labels(**base, le=f'{bound / US_PER_S:g}')} {cumulative}")
            total = sum(buckets)
            lines.append(f"dpu_emu_namespace_latency_seconds_bucket{_labels(**base, le='+Inf')} {total}")
            lines.append(f"dpu_emu_namespace_latency_seconds_sum{_labels(**base)} "
                         f"{ns.latency_sum_ns[direction] / NS_PER_S:.9f}")
            lines.append(f"dpu_emu_namespace_latency_seconds_count{_labels(**base)} {total}")
    family("dpu_emu_controller_ops_total", "counter", "read and write commands per controller")
    for c in snapshot.controllers:
        for direction, value in (("read", c.read_ops), ("write", c.write_ops)):
            lines.append(f"dpu_emu_controller_ops_total"
                         f"{_labels(subsystem=c.subsystem, cntlid=c.cntlid, hostnqn=c.hostnqn, direction=direction)}"
                         f" {value}")
    family("dpu_emu_controller_bytes_total", "counter", "bytes read and written per controller")
    for c in snapshot.controllers:
        for direction, value in (("read", c.bytes_read), ("write", c.bytes_written)):
            lines.append(f"dpu_emu_controller_bytes_total"
                         f"{_labels(subsystem=c.subsystem, cntlid=c.cntlid, hostnqn=c.hostnqn, direction=direction)}"
                         f" {value}")
    family("dpu_emu_controller_errors_total", "counter", "commands completed with an error per controller")
    for c in snapshot.controllers:
        lines.append(f"dpu_emu_controller_errors_total"
                     f"{_labels(subsystem=c.subsystem, cntlid=c.cntlid, hostnqn=c.hostnqn)} {c.errors}")
    family("dpu_emu_controllers", "gauge", "live controllers (associations)")
    lines.append(f"dpu_emu_controllers {len(snapshot.controllers)}")
    if snapshot.transport is not None:
        render_transport(snapshot.transport, lines)
    if qos is not None:
        render_qos(qos, lines)
    return "\n".join(lines) + "\n"
