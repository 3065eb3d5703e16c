"""REST for ANA (multipath): GET /v1/subsystems/{nqn}/ana, PUT .../ana/{grpid}/listeners/{portid},
the namespaces' ``ana_group``, validation (problem+json), 404s, persistence, and the ANA
change event reaching a connected host."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from nvmeof.host import connect
from nvmeof.wire.constants import AEC_ANA_CHANGE, AdminOpcode, FeatureId, LogPage

from .conftest import LOOPBACK, SUBNQN, ApiDevice, run, small_config

MIB = 1 << 20
IO_PORT_A, DISCOVERY_ONLY, IO_PORT_B = 1, 2, 3
PROBLEM = "application/problem+json"
AER_TIMEOUT_S = 10.0


def two_io_listeners() -> dict[str, Any]:
    cfg = small_config()
    cfg["ports"].append({"portid": IO_PORT_B, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": LOOPBACK,
                                                       "trsvcid": "0"}, "discovery": False, "io": True})
    return cfg


def provision(api: ApiDevice) -> None:
    assert api.client.post("/v1/subsystems", json={"nqn": SUBNQN, "allow_any_host": True}).status_code == 201
    ns = f"/v1/subsystems/{SUBNQN}/namespaces"
    resp = api.client.post(ns, json={"size_bytes": MIB})
    assert resp.status_code == 201 and resp.json()["ana_group"] == 1
    resp = api.client.post(ns, json={"size_bytes": MIB, "ana_group": 2})
    assert resp.status_code == 201 and resp.json()["ana_group"] == 2


def test_groups_default_optimized_on_every_io_listener(make_api: Any, tmp_path: Path) -> None:
    api = make_api(two_io_listeners(), config_path=tmp_path / "device.json")
    provision(api)
    resp = api.client.get(f"/v1/subsystems/{SUBNQN}/ana")
    assert resp.status_code == 200
    body = resp.json()
    assert body["anatt_s"] > 0
    both = [{"listener": IO_PORT_A, "state": "optimized"}, {"listener": IO_PORT_B, "state": "optimized"}]
    assert body["groups"] == [{"grpid": 1, "namespaces": [1], "states": both},
                              {"grpid": 2, "namespaces": [2], "states": both}]


def test_set_state_per_listener_persists_and_reloads(make_api: Any, tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    api = make_api(two_io_listeners(), config_path=path)
    provision(api)
    resp = api.client.put(f"/v1/subsystems/{SUBNQN}/ana/2/listeners/{IO_PORT_A}", json={"state": "inaccessible"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"grpid": 2, "namespaces": [2], "states": [
        {"listener": IO_PORT_A, "state": "inaccessible"}, {"listener": IO_PORT_B, "state": "optimized"}]}
    resp = api.client.put(f"/v1/subsystems/{SUBNQN}/ana/1/listeners/{IO_PORT_B}", json={"state": "non_optimized"})
    assert resp.json()["states"][1] == {"listener": IO_PORT_B, "state": "non_optimized"}
    saved = json.loads(path.read_text())
    sub = next(s for s in saved["subsystems"] if s["nqn"] == SUBNQN)
    assert sub["ana"] == {"states": [{"group": 1, "listener": IO_PORT_B, "state": "non_optimized"},
                                     {"group": 2, "listener": IO_PORT_A, "state": "inaccessible"}]}
    assert [ns.get("ana_group", 1) for ns in sub["namespaces"]] == [1, 2]
    api.stop()
    again = make_api(saved, config_path=path)
    groups = again.client.get(f"/v1/subsystems/{SUBNQN}/ana").json()["groups"]
    assert groups[0]["states"][1]["state"] == "non_optimized"
    assert groups[1]["states"][0]["state"] == "inaccessible"


def test_namespace_moves_to_another_group(make_api: Any, tmp_path: Path) -> None:
    api = make_api(two_io_listeners())
    provision(api)
    resp = api.client.patch(f"/v1/subsystems/{SUBNQN}/namespaces/1", json={"ana_group": 7})
    assert resp.status_code == 200 and resp.json()["ana_group"] == 7
    groups = api.client.get(f"/v1/subsystems/{SUBNQN}/ana").json()["groups"]
    assert [(g["grpid"], g["namespaces"]) for g in groups] == [(1, []), (2, [2]), (7, [1])]


def test_validation_and_not_found(make_api: Any) -> None:
    api = make_api(two_io_listeners())
    provision(api)
    base = f"/v1/subsystems/{SUBNQN}/ana"
    cases = [
        (f"{base}/1/listeners/{IO_PORT_A}", {"state": "sideways"}, 422),
        (f"{base}/1/listeners/{IO_PORT_A}", {"state": "optimized", "extra": 1}, 422),
        (f"{base}/1/listeners/{IO_PORT_A}", {}, 422),
        (f"{base}/0/listeners/{IO_PORT_A}", {"state": "optimized"}, 422),
        (f"{base}/129/listeners/{IO_PORT_A}", {"state": "optimized"}, 422),
        (f"{base}/1/listeners/0", {"state": "optimized"}, 422),
        (f"{base}/1/listeners/99", {"state": "optimized"}, 404),
        (f"{base}/1/listeners/{DISCOVERY_ONLY}", {"state": "optimized"}, 404),
        ("/v1/subsystems/nqn.2026-11.io.dpu-emu:nope/ana/1/listeners/1", {"state": "optimized"}, 404),
    ]
    for url, body, status in cases:
        resp = api.client.put(url, json=body)
        assert resp.status_code == status, (url, body, resp.text)
        assert resp.headers["content-type"].startswith(PROBLEM)
    assert api.client.get("/v1/subsystems/nqn.2026-11.io.dpu-emu:nope/ana").status_code == 404
    ns = f"/v1/subsystems/{SUBNQN}/namespaces"
    assert api.client.post(ns, json={"size_bytes": MIB, "ana_group": 0}).status_code == 422
    assert api.client.post(ns, json={"size_bytes": MIB, "ana_group": 129}).status_code == 422
    assert api.client.patch(f"{ns}/1", json={"ana_group": "two"}).status_code == 422
    assert api.client.patch(f"{ns}/9", json={"ana_group": 2}).status_code == 404
    assert api.client_with(None).get(base).status_code == 401


def test_state_change_raises_ana_change_event_on_a_connected_host(make_api: Any) -> None:
    api = make_api(two_io_listeners())
    provision(api)

    async def body() -> int:
        ctrl = await connect(LOOPBACK, api.io_port, SUBNQN)
        try:
            await ctrl.set_features(FeatureId.ASYNC_EVENT_CONFIG, AEC_ANA_CHANGE)
            aer = asyncio.create_task(ctrl.admin_raw(AdminOpcode.ASYNC_EVENT_REQUEST, timeout=AER_TIMEOUT_S))
            await asyncio.sleep(0.05)
            resp = await asyncio.to_thread(api.client.put, f"/v1/subsystems/{SUBNQN}/ana/1/listeners/{IO_PORT_B}",
                                           json={"state": "non_optimized"})
            assert resp.status_code == 200
            dw0 = (await aer).dw0
            page = await ctrl.get_log_page(LogPage.ANA, 16 + 2 * 36)
            assert page[8] == 2  # NGRPS
            return dw0
        finally:
            await ctrl.close()

    assert run(body()) == 0x2 | 0x03 << 8 | 0x0C << 16


def test_cli_ana_show_and_set(make_api: Any) -> None:
    from .test_cli import EXIT_API, EXIT_OK, EXIT_USAGE, cli

    api = make_api(two_io_listeners())
    provision(api)
    proc = cli(api.url, "ana", "set", SUBNQN, "--group", "2", "--listener", str(IO_PORT_B), "persistent_loss",
               "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    assert json.loads(proc.stdout)["states"][1] == {"listener": IO_PORT_B, "state": "persistent_loss"}
    shown = cli(api.url, "ana", "show", SUBNQN, "--json")
    assert shown.returncode == EXIT_OK
    assert [g["grpid"] for g in json.loads(shown.stdout)["groups"]] == [1, 2]
    human = cli(api.url, "ana", "show", SUBNQN)
    assert human.returncode == EXIT_OK and "persistent_loss" in human.stdout
    assert cli(api.url, "ana", "set", SUBNQN, "--listener", "99", "optimized").returncode == EXIT_API
    assert cli(api.url, "ana", "set", SUBNQN, "--listener", "1", "sideways").returncode == EXIT_USAGE


def test_change_is_saved_as_the_state_it_returns_to_and_removed_listeners_are_ignored(
        make_api: Any, tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    api = make_api(two_io_listeners(), config_path=path)
    provision(api)
    base = f"/v1/subsystems/{SUBNQN}/ana"
    assert api.client.put(f"{base}/1/listeners/{IO_PORT_A}", json={"state": "non_optimized"}).status_code == 200
    assert api.client.put(f"{base}/1/listeners/{IO_PORT_A}", json={"state": "change"}).status_code == 200
    assert api.client.put(f"{base}/2/listeners/{IO_PORT_B}", json={"state": "inaccessible"}).status_code == 200
    assert api.client.get(base).json()["groups"][0]["states"][0]["state"] == "change"
    sub = next(s for s in json.loads(path.read_text())["subsystems"] if s["nqn"] == SUBNQN)
    assert sub["ana"]["states"] == [{"group": 1, "listener": IO_PORT_A, "state": "non_optimized"},
                                    {"group": 2, "listener": IO_PORT_B, "state": "inaccessible"}]
    assert api.client.delete(f"/v1/listeners/{IO_PORT_B}").status_code == 204
    saved = json.loads(path.read_text())
    api.stop()
    again = make_api(saved, config_path=path)
    groups = again.client.get(base).json()["groups"]
    assert groups[0]["states"] == [{"listener": IO_PORT_A, "state": "non_optimized"}]
    assert groups[1]["states"] == [{"listener": IO_PORT_A, "state": "optimized"}]
