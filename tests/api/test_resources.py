"""Every resource: create / read / list / update / delete, and each error case, over
real HTTP against a running device."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import HOSTNQN_A, HOSTNQN_B, SUBNQN, ApiDevice

PROBLEM = "application/problem+json"
MIB = 1 << 20


def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status and body["title"]
    return body


def make_subsystem(api: ApiDevice, **extra: Any) -> dict[str, Any]:
    resp = api.client.post("/v1/subsystems", json={"nqn": SUBNQN, **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_subsystem_crud(api: ApiDevice) -> None:
    sub = make_subsystem(api, serial="SN42", model="emu-model", max_namespaces=8, hosts=[HOSTNQN_A])
    assert sub["nqn"] == SUBNQN and sub["id"].startswith("ss-") and sub["allow_any_host"] is False
    assert sub["hosts"] == [HOSTNQN_A] and sub["namespaces"] == [] and sub["max_namespaces"] == 8
    assert api.client.get(f"/v1/subsystems/{SUBNQN}").json() == sub
    assert api.client.get(f"/v1/subsystems/{sub['id']}").json() == sub  # by id or by NQN
    assert [s["nqn"] for s in api.client.get("/v1/subsystems").json()] == [SUBNQN]
    resp = api.client.patch(f"/v1/subsystems/{sub['id']}", json={"serial": "SN43", "allow_any_host": True})
    assert resp.status_code == 200 and resp.json()["serial"] == "SN43" and resp.json()["allow_any_host"]
    assert api.client.delete(f"/v1/subsystems/{SUBNQN}").status_code == 204
    problem(api.client.get(f"/v1/subsystems/{SUBNQN}"), 404)
    assert api.client.get("/v1/subsystems").json() == []


def test_subsystem_errors(api: ApiDevice) -> None:
    make_subsystem(api, id="mine")
    problem(api.client.post("/v1/subsystems", json={"nqn": SUBNQN}), 409)  # duplicate NQN
    problem(api.client.post("/v1/subsystems", json={"nqn": "nqn.2026-11.io.x:other", "id": "mine"}), 409)
    problem(api.client.post("/v1/subsystems", json={"nqn": "iqn.2026-11.io.x:bad"}), 422)  # not "nqn."
    problem(api.client.post("/v1/subsystems", json={"nqn": "nqn." + "x" * 220}), 422)  # > 223 bytes
    problem(api.client.post("/v1/subsystems", json={"nqn": "nqn.2014-08.org.nvmexpress.discovery"}), 400)
    problem(api.client.post("/v1/subsystems", json={"nqn": "nqn.a:b", "bogus": 1}), 422)
    problem(api.client.post("/v1/subsystems", content=b"{not json", headers={"content-type": "application/json"}),
            422)
    problem(api.client.patch("/v1/subsystems/nope", json={"serial": "x"}), 404)
    problem(api.client.delete("/v1/subsystems/nope"), 404)
    problem(api.client.get("/v1/nothing-here"), 404)


def test_namespace_crud_nvm_and_kv(api: ApiDevice) -> None:
    make_subsystem(api, max_namespaces=4)
    base = f"/v1/subsystems/{SUBNQN}/namespaces"
    ns = api.client.post(base, json={"size_bytes": 8 * MIB, "block_size": 4096}).json()
    assert ns["nsid"] == 1 and ns["size_bytes"] == 8 * MIB and ns["block_size"] == 4096  # allocated NSID
    assert len(ns["uuid"]) == 36 and len(ns["nguid"]) == 32
    given = {"nsid": 3, "command_set": "kv", "capacity_bytes": 4 * MIB, "max_value_size": 4096, "mode": "cache",
             "ttl_s": 60, "uuid": "12345678-1234-4234-8234-123456789abc", "nguid": "ab" * 16}
    kv = api.client.post(base, json=given)
    assert kv.status_code == 201, kv.text
    kv_body = kv.json()
    assert kv_body["uuid"] == given["uuid"] and kv_body["nguid"] == "ab" * 16 and kv_body["mode"] == "cache"
    assert kv_body["used_bytes"] == 0 and kv_body["size_bytes"] is None
    assert api.client.post(base, json={"size_bytes": MIB}).json()["nsid"] == 2  # lowest free
    assert [n["nsid"] for n in api.client.get(base).json()] == [1, 2, 3]
    assert api.client.get(f"{base}/3").json() == kv_body
    assert api.client.get(f"/v1/subsystems/{SUBNQN}").json()["namespaces"] == [1, 2, 3]
    assert api.client.delete(f"{base}/2").status_code == 204
    problem(api.client.get(f"{base}/2"), 404)
    problem(api.client.delete(f"{base}/2"), 404)


@pytest.mark.parametrize(("body", "status"), [
    ({"size_bytes": 1000}, 400),  # not a multiple of 512
    ({"size_bytes": 8192, "block_size": 1000}, 400),  # not a power of two
    ({"size_bytes": 4096, "nsid": 5}, 400),  # above max_namespaces (4)
    ({"nsid": 0, "size_bytes": 4096}, 422),  # NSID starts at 1
    ({}, 400),  # NVM without a size
    ({"command_set": "kv"}, 400),  # KV without a capacity
    ({"command_set": "kv", "capacity_bytes": 4096, "size_bytes": 4096}, 400),
    ({"command_set": "kv", "capacity_bytes": 4096, "ttl_s": 5}, 400),  # ttl needs cache mode
    ({"command_set": "zns", "size_bytes": 4096}, 422),
    ({"size_bytes": 4096, "backend": {"kind": "file"}}, 400),  # no path
    ({"size_bytes": 4096, "backend": {"kind": "ram", "path": "x"}}, 400),
    ({"size_bytes": 4096, "backend": {"kind": "file", "path": "../../escape.img"}}, 400),  # outside data dir
    ({"size_bytes": 4096, "uuid": "not-a-uuid"}, 400),
    ({"size_bytes": 4096, "nguid": "00" * 16}, 400),
])
def test_namespace_errors(api: ApiDevice, body: dict[str, Any], status: int) -> None:
    make_subsystem(api, max_namespaces=4)
    problem(api.client.post(f"/v1/subsystems/{SUBNQN}/namespaces", json=body), status)


def test_namespace_conflicts(api: ApiDevice) -> None:
    make_subsystem(api, max_namespaces=2)
    base = f"/v1/subsystems/{SUBNQN}/namespaces"
    assert api.client.post(base, json={"nsid": 1, "size_bytes": 4096,
                                       "backend": {"kind": "file", "path": "a.img"}}).status_code == 201
    problem(api.client.post(base, json={"nsid": 1, "size_bytes": 4096}), 409)  # NSID taken
    problem(api.client.post(base, json={"size_bytes": 4096, "backend": {"kind": "file", "path": "a.img"}}), 409)
    assert api.client.post(base, json={"size_bytes": 4096}).status_code == 201
    problem(api.client.post(base, json={"size_bytes": 4096}), 409)  # all NSIDs in use
    problem(api.client.patch(f"/v1/subsystems/{SUBNQN}", json={"max_namespaces": 1}), 409)
    problem(api.client.post("/v1/subsystems/nope/namespaces", json={"size_bytes": 4096}), 404)


def test_host_crud_and_errors(api: ApiDevice) -> None:
    make_subsystem(api)
    base = f"/v1/subsystems/{SUBNQN}/hosts"
    resp = api.client.post(base, json={"nqn": HOSTNQN_A})
    assert resp.status_code == 201
    assert resp.json() == {"nqn": HOSTNQN_A, "subsystem": SUBNQN, "subsystem_id": resp.json()["subsystem_id"],
                           "tenant": None, "connected_controllers": 0}
    problem(api.client.post(base, json={"nqn": HOSTNQN_A}), 409)
    problem(api.client.post(base, json={"nqn": "host-without-nqn-prefix"}), 422)
    assert api.client.post(base, json={"nqn": HOSTNQN_B}).status_code == 201
    assert [h["nqn"] for h in api.client.get(base).json()] == sorted([HOSTNQN_A, HOSTNQN_B])
    assert api.client.get(f"{base}/{HOSTNQN_B}").json()["nqn"] == HOSTNQN_B
    assert api.client.delete(f"{base}/{HOSTNQN_A}").status_code == 204
    problem(api.client.get(f"{base}/{HOSTNQN_A}"), 404)
    problem(api.client.delete(f"{base}/{HOSTNQN_A}"), 404)
    assert api.client.get(f"/v1/subsystems/{SUBNQN}").json()["hosts"] == [HOSTNQN_B]


def test_listener_crud_and_errors(api: ApiDevice) -> None:
    initial = api.client.get("/v1/listeners").json()
    assert [lst["id"] for lst in initial] == [1, 2] and all(lst["listening"] for lst in initial)
    resp = api.client.post("/v1/listeners", json={"traddr": "127.0.0.1", "trsvcid": 0, "discovery": False})
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["id"] == 3 and created["listening"] and created["bound_port"] > 0 and not created["discovery"]
    assert api.client.get("/v1/listeners/3").json() == created
    updated = api.client.patch("/v1/listeners/3", json={"discovery": True}).json()
    assert updated["discovery"] and updated["io"]
    problem(api.client.patch("/v1/listeners/3", json={"discovery": False, "io": False}), 400)
    taken = created["bound_port"]
    problem(api.client.post("/v1/listeners", json={"id": 3, "traddr": "127.0.0.1", "trsvcid": 0}), 409)
    fixed = api.client.post("/v1/listeners", json={"traddr": "127.0.0.1", "trsvcid": taken})
    problem(fixed, 409)  # the port is in use (by listener 3): the real bind fails
    problem(api.client.post("/v1/listeners", json={"traddr": "not-an-ip", "trsvcid": 4420}), 400)
    problem(api.client.post("/v1/listeners", json={"traddr": "127.0.0.1", "trsvcid": 70000}), 422)
    problem(api.client.post("/v1/listeners", json={"traddr": "127.0.0.1", "trsvcid": 1, "trtype": "rdma"}), 422)
    assert api.client.delete("/v1/listeners/3").status_code == 204
    problem(api.client.get("/v1/listeners/3"), 404)
    problem(api.client.delete("/v1/listeners/3"), 404)


def test_unique_listener_address(api: ApiDevice) -> None:
    port = api.client.post("/v1/listeners", json={"traddr": "127.0.0.1", "trsvcid": 0}).json()["bound_port"]
    api.client.delete("/v1/listeners/3")
    assert api.client.post("/v1/listeners", json={"id": 10, "traddr": "127.0.0.1", "trsvcid": port}).status_code \
        == 201
    problem(api.client.post("/v1/listeners", json={"id": 11, "traddr": "127.0.0.1", "trsvcid": port}), 409)


def test_tenant_crud_and_errors(api: ApiDevice) -> None:
    make_subsystem(api)
    api.client.post(f"/v1/subsystems/{SUBNQN}/namespaces", json={"size_bytes": MIB})
    problem(api.client.post("/v1/tenants", json={"name": "blue", "qos": "gold"}), 400)  # no such policy
    assert api.client.post("/v1/qos/policies", json={"name": "gold", "rw_ios_per_sec": 1000}).status_code == 201
    resp = api.client.post("/v1/tenants", json={"name": "blue", "hosts": [HOSTNQN_A],
                                                "namespaces": [{"subsystem": SUBNQN, "nsid": 1}], "qos": "gold"})
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["token"].startswith("dputen_")
    public = {k: v for k, v in created.items() if k != "token"}
    assert public["namespaces"][0]["nsid"] == 1 and public["qos"] == "gold"
    assert api.client.get("/v1/tenants/blue").json() == public  # the token is never shown again
    assert api.client.get("/v1/tenants").json() == [public]
    problem(api.client.post("/v1/tenants", json={"name": "blue"}), 409)
    problem(api.client.post("/v1/tenants", json={"name": "red", "hosts": [HOSTNQN_A]}), 409)  # host taken
    problem(api.client.post("/v1/tenants", json={"name": "red", "namespaces": [{"subsystem": SUBNQN,
                                                                                 "nsid": 9}]}), 400)
    problem(api.client.post("/v1/tenants", json={"name": "Bad Name"}), 422)
    problem(api.client.delete("/v1/qos/policies/gold"), 409)  # the tenant follows it
    problem(api.client.patch("/v1/tenants/blue", json={"qos": "silver"}), 400)
    updated = api.client.patch("/v1/tenants/blue", json={"hosts": [HOSTNQN_B], "qos": None}).json()
    assert updated["hosts"] == [HOSTNQN_B] and updated["qos"] is None and updated["namespaces"]
    token = api.client.post("/v1/tenants/blue/token").json()["token"]
    assert token != created["token"]
    assert api.client.delete("/v1/tenants/blue").status_code == 204
    problem(api.client.get("/v1/tenants/blue"), 404)
    problem(api.client.patch("/v1/tenants/blue", json={"qos": "x"}), 404)


def test_deleting_a_namespace_drops_tenant_grants(api: ApiDevice) -> None:
    make_subsystem(api)
    api.client.post(f"/v1/subsystems/{SUBNQN}/namespaces", json={"size_bytes": MIB})
    api.client.post("/v1/tenants", json={"name": "blue", "namespaces": [{"subsystem": SUBNQN, "nsid": 1}]})
    api.client.delete(f"/v1/subsystems/{SUBNQN}/namespaces/1")
    assert api.client.get("/v1/tenants/blue").json()["namespaces"] == []


def test_controllers_and_stats_empty(api: ApiDevice) -> None:
    assert api.client.get("/v1/controllers").json() == []
    problem(api.client.get("/v1/controllers/ss-x.1"), 404)
    problem(api.client.delete("/v1/controllers/ss-x.1"), 404)
    stats = api.client.get("/v1/stats").json()
    assert stats["namespaces"] == [] and stats["controllers"] == []
    assert stats["qos"]["namespaces"] == [] and stats["qos"]["tenants"] == []
    metrics = api.client.get("/metrics")
    assert metrics.status_code == 200 and "# TYPE dpu_emu_namespace_ops_total counter" in metrics.text


def test_openapi_and_docs(api: ApiDevice) -> None:
    spec = api.client_with(None).get("/openapi.json").json()
    for path in ("/v1/subsystems", "/v1/subsystems/{subsystem}/namespaces", "/v1/subsystems/{subsystem}/hosts",
                 "/v1/listeners", "/v1/tenants", "/v1/controllers", "/v1/stats", "/metrics"):
        assert path in spec["paths"]
    assert {"SubsystemCreate", "SubsystemUpdate", "SubsystemPublic", "Problem"} <= set(spec["components"]["schemas"])
    assert api.client_with(None).get("/docs").status_code == 200
