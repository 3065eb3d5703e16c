"""QoS over REST: named policies (CRUD, validation, references), a namespace's limits
changed live under load from nvmeof.host, tenant QoS enforced, persistence, telemetry in
/v1/stats, /v1/qos and /metrics agreeing with what the host counted."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from nvmeof.host import HostController, connect

from .conftest import HOSTNQN_A, LOOPBACK, SUBNQN, ApiDevice, run
from .test_resources import problem

MIB = 1 << 20
BLOCK = 512
QUEUE_DEPTH = 8
MEASURE_S = 2.0
RATE_TOLERANCE = 0.15
METRICS_TOLERANCE = 0.01
SLOW_IOPS = 200
FAST_IOPS = 600
NS_PATH = f"/v1/subsystems/{SUBNQN}/namespaces"


def provision(api: ApiDevice, **ns: Any) -> None:
    resp = api.client.post("/v1/subsystems", json={"nqn": SUBNQN, "hosts": [HOSTNQN_A]})
    assert resp.status_code == 201, resp.text
    resp = api.client.post(NS_PATH, json={"size_bytes": MIB, **ns})
    assert resp.status_code == 201, resp.text


def test_policy_crud_and_errors(api: ApiDevice) -> None:
    c = api.client
    assert c.get("/v1/qos/policies").json() == []
    resp = c.post("/v1/qos/policies", json={"name": "gold", "rw_ios_per_sec": 5000, "rw_mbytes_per_sec": 100,
                                            "weight": 4})
    assert resp.status_code == 201, resp.text
    gold = resp.json()
    assert gold == {"name": "gold", "rw_ios_per_sec": 5000, "rw_mbytes_per_sec": 100, "r_mbytes_per_sec": 0,
                    "w_mbytes_per_sec": 0, "weight": 4, "burst_ms": 0, "used_by": []}
    assert c.get("/v1/qos/policies/gold").json() == gold
    assert c.get("/v1/qos/policies").json() == [gold]
    problem(c.post("/v1/qos/policies", json={"name": "gold"}), 409)
    problem(c.post("/v1/qos/policies", json={"name": "neg", "rw_ios_per_sec": -1}), 422)
    problem(c.post("/v1/qos/policies", json={"name": "w0", "weight": 0}), 422)
    problem(c.post("/v1/qos/policies", json={"name": "x", "iops": 5}), 422)
    problem(c.post("/v1/qos/policies", json={"name": "Bad Name"}), 422)
    problem(c.get("/v1/qos/policies/none"), 404)
    problem(c.patch("/v1/qos/policies/none", json={"weight": 2}), 404)
    problem(c.delete("/v1/qos/policies/none"), 404)
    updated = c.patch("/v1/qos/policies/gold", json={"rw_ios_per_sec": 0, "rw_mbytes_per_sec": None}).json()
    assert updated["rw_ios_per_sec"] == 0 and updated["rw_mbytes_per_sec"] == 0 and updated["weight"] == 4
    assert api.device.qos.policies["gold"].weight == 4

    provision(api, qos="gold")
    assert c.get(f"{NS_PATH}/1").json()["qos"] == "gold"
    assert c.get("/v1/qos/policies/gold").json()["used_by"] == [f"namespace {SUBNQN}/1"]
    problem(c.delete("/v1/qos/policies/gold"), 409)
    problem(c.post(NS_PATH, json={"size_bytes": MIB, "qos": "missing"}), 400)
    problem(c.patch(f"{NS_PATH}/1", json={"qos": "missing"}), 400)
    problem(c.patch(f"{NS_PATH}/1", json={"qos": {"weight": -1}}), 422)
    problem(c.patch(f"{NS_PATH}/9", json={"qos": None}), 404)
    inline = c.patch(f"{NS_PATH}/1", json={"qos": {"rw_ios_per_sec": 300}}).json()
    assert inline["qos"] == {"rw_ios_per_sec": 300}
    assert api.device.qos.namespaces[(SUBNQN, 1)].policy.rw_ios_per_sec == 300
    assert c.patch(f"{NS_PATH}/1", json={"qos": None}).json()["qos"] is None
    assert api.device.qos.namespaces[(SUBNQN, 1)].policy.unlimited
    assert c.delete("/v1/qos/policies/gold").status_code == 204
    assert c.get("/v1/qos/policies").json() == []


def test_tenant_qos_is_enforced_and_saved(make_api: Any, tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    api = make_api(config_path=path, data_dir=tmp_path)
    provision(api)
    c = api.client
    problem(c.post("/v1/tenants", json={"name": "blue", "hosts": [HOSTNQN_A], "qos": "bronze"}), 400)
    assert c.post("/v1/qos/policies", json={"name": "bronze", "rw_ios_per_sec": 2000}).status_code == 201
    created = c.post("/v1/tenants", json={"name": "blue", "hosts": [HOSTNQN_A], "qos": "bronze",
                                          "namespaces": [{"subsystem": SUBNQN, "nsid": 1}]})
    assert created.status_code == 201, created.text
    assert c.post(NS_PATH, json={"size_bytes": MIB}).status_code == 201  # nsid 2: not blue's
    assert c.post("/v1/tenants", json={"name": "red"}).status_code == 201
    with api.client_with(created.json()["token"]) as as_blue:
        seen = as_blue.get("/v1/qos").json()
        assert [t["tenant"] for t in seen["tenants"]] == ["blue"] and seen["scheduler"] is None
        assert [n["nsid"] for n in seen["namespaces"]] == [1]
        assert [n["nsid"] for n in as_blue.get("/v1/stats").json()["qos"]["namespaces"]] == [1]
        problem(as_blue.get("/v1/qos/policies"), 403)
        problem(as_blue.post("/v1/qos/policies", json={"name": "mine"}), 403)
    assert api.device.qos.group_for_host(HOSTNQN_A).policy.rw_ios_per_sec == 2000
    assert c.patch("/v1/qos/policies/bronze", json={"rw_ios_per_sec": 1500}).status_code == 200
    assert api.device.qos.tenants["blue"].policy.rw_ios_per_sec == 1500  # live, no reconnect
    assert c.get("/v1/qos/policies/bronze").json()["used_by"] == ["tenant blue"]
    saved = path.read_text()
    assert '"bronze"' in saved and "1500" in saved
    api.stop()

    from dpu_emu import config as cfgmod
    again = make_api(cfgmod.load_config(path), config_path=path, data_dir=tmp_path)
    assert again.device.qos.tenants["blue"].policy.rw_ios_per_sec == 1500
    assert again.client.get("/v1/qos/policies/bronze").json()["used_by"] == ["tenant blue"]
    assert again.client.get("/v1/config").text == saved


async def _reads_for(ctrl: HostController, seconds: float) -> tuple[int, float]:
    """QD ``QUEUE_DEPTH`` 4 KiB reads for ``seconds``: (commands completed, elapsed s)."""
    done = 0
    start = time.monotonic()
    deadline = start + seconds

    async def worker(slot: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await ctrl.read(1, slot * 8, 8)
            done += 1

    await asyncio.gather(*(worker(i) for i in range(QUEUE_DEPTH)))
    return done, time.monotonic() - start


def _metric(text: str, name: str, **labels: object) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.rindex("}") + 1]))
        if all(found.get(k) == str(v) for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} with {labels}")


def test_namespace_limit_applies_live_and_metrics_agree(api: ApiDevice) -> None:
    provision(api, qos={"rw_ios_per_sec": SLOW_IOPS})

    async def body() -> tuple[float, float, int]:
        async with await connect(LOOPBACK, api.io_port, SUBNQN, hostnqn=HOSTNQN_A,
                                 queue_size=QUEUE_DEPTH * 2) as ctrl:
            slow, slow_s = await _reads_for(ctrl, MEASURE_S)
            resp = await asyncio.to_thread(api.client.patch, f"{NS_PATH}/1",
                                           json={"qos": {"rw_ios_per_sec": FAST_IOPS}})
            assert resp.status_code == 200, resp.text
            fast, fast_s = await _reads_for(ctrl, MEASURE_S)
            return slow / slow_s, fast / fast_s, slow + fast

    slow_rate, fast_rate, total = run(body())
    assert abs(slow_rate - SLOW_IOPS) <= RATE_TOLERANCE * SLOW_IOPS, slow_rate
    assert abs(fast_rate - FAST_IOPS) <= RATE_TOLERANCE * FAST_IOPS, fast_rate

    text = api.client.get("/metrics").text
    labels = {"level": "namespace", "subsystem": SUBNQN, "nsid": 1, "direction": "read"}
    assert abs(_metric(text, "dpu_emu_qos_ops_total", **labels) - total) <= METRICS_TOLERANCE * total
    assert abs(_metric(text, "dpu_emu_qos_bytes_total", **labels) - total * 8 * BLOCK) \
        <= METRICS_TOLERANCE * total * 8 * BLOCK
    assert _metric(text, "dpu_emu_qos_throttled_ios_total", level="namespace", nsid=1) > 0
    assert "dpu_emu_qos_latency_seconds{" in text and "dpu_emu_qos_queue_depth{" in text

    group = next(g for g in api.client.get("/v1/stats").json()["qos"]["namespaces"] if g["nsid"] == 1)
    assert group["ops"]["read"] == total and group["bytes"]["read"] == total * 8 * BLOCK
    assert group["policy"]["rw_ios_per_sec"] == FAST_IOPS
    assert group["throttled_seconds"] > 0 and group["latency"]["p99_us"] >= group["latency"]["p50_us"] > 0
    assert group["queue_depth"] == 0
    assert api.client.get("/v1/qos").json()["namespaces"][0]["ops"]["read"] == total


def test_policy_change_reaches_its_namespaces_live(api: ApiDevice) -> None:
    assert api.client.post("/v1/qos/policies", json={"name": "slow", "rw_ios_per_sec": SLOW_IOPS}).status_code \
        == 201
    provision(api, qos="slow")

    async def body() -> tuple[float, float]:
        async with await connect(LOOPBACK, api.io_port, SUBNQN, hostnqn=HOSTNQN_A,
                                 queue_size=QUEUE_DEPTH * 2) as ctrl:
            slow, slow_s = await _reads_for(ctrl, MEASURE_S)
            resp = await asyncio.to_thread(api.client.patch, "/v1/qos/policies/slow",
                                           json={"rw_ios_per_sec": FAST_IOPS})
            assert resp.status_code == 200, resp.text
            fast, fast_s = await _reads_for(ctrl, MEASURE_S)
            return slow / slow_s, fast / fast_s

    slow_rate, fast_rate = run(body())
    assert abs(slow_rate - SLOW_IOPS) <= RATE_TOLERANCE * SLOW_IOPS, slow_rate
    assert abs(fast_rate - FAST_IOPS) <= RATE_TOLERANCE * FAST_IOPS, fast_rate


def test_tenant_policy_limits_its_hosts_live(api: ApiDevice) -> None:
    """A tenant's policy limits its host across namespaces; a policy change applies at once."""
    assert api.client.post("/v1/qos/policies", json={"name": "tenant-cap", "rw_ios_per_sec": SLOW_IOPS}) \
        .status_code == 201
    provision(api)
    assert api.client.post("/v1/tenants", json={"name": "blue", "hosts": [HOSTNQN_A], "qos": "tenant-cap",
                                                "namespaces": [{"subsystem": SUBNQN, "nsid": 1}]}).status_code == 201

    async def body() -> tuple[float, float]:
        async with await connect(LOOPBACK, api.io_port, SUBNQN, hostnqn=HOSTNQN_A,
                                 queue_size=QUEUE_DEPTH * 2) as ctrl:
            slow, slow_s = await _reads_for(ctrl, MEASURE_S)
            resp = await asyncio.to_thread(api.client.patch, "/v1/qos/policies/tenant-cap",
                                           json={"rw_ios_per_sec": FAST_IOPS})
            assert resp.status_code == 200, resp.text
            fast, fast_s = await _reads_for(ctrl, MEASURE_S)
            return slow / slow_s, fast / fast_s

    slow_rate, fast_rate = run(body())
    assert abs(slow_rate - SLOW_IOPS) <= RATE_TOLERANCE * SLOW_IOPS, slow_rate
    assert abs(fast_rate - FAST_IOPS) <= RATE_TOLERANCE * FAST_IOPS, fast_rate
    tenants = api.client.get("/v1/qos").json()["tenants"]
    assert [t["tenant"] for t in tenants] == ["blue"] and tenants[0]["throttled_ios"] > 0
