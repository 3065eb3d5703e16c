"""Prometheus text exposition (format 0.0.4) of a statistics snapshot."""

from __future__ import annotations

from dpu_emu.domain.controllers import StatsSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
US_PER_S = 1e6
NS_PER_S = 1e9


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def render(snapshot: StatsSnapshot) -> str:
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
    return "\n".join(lines) + "\n"
