"""/v1/faults over REST: create/list/get/delete/clear, counters, validation (4xx problem+json),
administrator only, nothing injected by default, and the CLI (`dpu-emu fault ...`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dpu_emu import cli
from nvmeof.host import connect
from nvmeof.wire.constants import GenericStatus, NvmOpcode

from .conftest import ADMIN_TOKEN, HOSTNQN_A, LOOPBACK, SUBNQN, ApiDevice, run
from .test_resources import problem

MIB = 1 << 20
BLOCK = 512


def _setup_namespace(api: ApiDevice) -> None:
    assert api.client.post("/v1/subsystems", json={"nqn": SUBNQN, "allow_any_host": True}).status_code == 201
    assert api.client.post(f"/v1/subsystems/{SUBNQN}/namespaces", json={"size_bytes": MIB}).status_code == 201


def _add(api: ApiDevice, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.client.post("/v1/faults", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def test_no_faults_by_default_and_io_is_normal(api: ApiDevice) -> None:
    assert api.client.get("/v1/faults").json() == []
    assert api.device.faults.active is False
    _setup_namespace(api)

    async def io() -> bytes:
        async with await connect(LOOPBACK, api.io_port, subnqn=SUBNQN, hostnqn=HOSTNQN_A) as ctrl:
            await ctrl.write(1, 0, b"\x5a" * BLOCK)
            return bytes(await ctrl.read(1, 0, 1))

    assert run(io()) == b"\x5a" * BLOCK


def test_fault_crud_and_counters(api: ApiDevice) -> None:
    c = api.client
    status = _add(api, {"type": "status", "match": {"subsystem": SUBNQN, "nsid": 1, "queue": "io",
                                                    "opcodes": [NvmOpcode.READ]},
                        "count": 2, "params": {"sc": GenericStatus.LBA_OUT_OF_RANGE}})
    assert status["id"].startswith("fault-") and status["type"] == "status"
    assert status["params"] == {"delay_ms": None, "sct": 0, "sc": GenericStatus.LBA_OUT_OF_RANGE, "dnr": False,
                                "after_commands": None}
    assert status["match"]["opcodes"] == [NvmOpcode.READ] and status["match"]["queue"] == "io"
    assert (status["matched"], status["injected"], status["exhausted"]) == (0, 0, False)
    delay = _add(api, {"type": "delay", "params": {"delay_ms": 50}, "probability": 0.5, "seed": 7})
    assert delay["probability"] == 0.5 and delay["seed"] == 7 and delay["match"]["queue"] == "any"
    assert [f["id"] for f in c.get("/v1/faults").json()] == [status["id"], delay["id"]]
    assert c.get(f"/v1/faults/{status['id']}").json() == status
    _setup_namespace(api)

    async def reads() -> list[int]:
        got = []
        async with await connect(LOOPBACK, api.io_port, subnqn=SUBNQN, hostnqn=HOSTNQN_A) as ctrl:
            for _ in range(3):
                try:
                    await ctrl.read(1, 0, 1)
                    got.append(0)
                except Exception as exc:  # noqa: BLE001 - the injected status, checked below
                    got.append(int(getattr(exc, "sc", -1)))
        return got

    assert c.delete(f"/v1/faults/{delay['id']}").status_code == 204
    assert run(reads()) == [GenericStatus.LBA_OUT_OF_RANGE, GenericStatus.LBA_OUT_OF_RANGE, 0]
    after = c.get(f"/v1/faults/{status['id']}").json()
    assert (after["matched"], after["injected"], after["exhausted"]) == (3, 2, True)
    assert c.delete("/v1/faults").status_code == 204
    assert c.get("/v1/faults").json() == [] and api.device.faults.active is False
    problem(c.get(f"/v1/faults/{status['id']}"), 404)
    problem(c.delete(f"/v1/faults/{status['id']}"), 404)


@pytest.mark.parametrize("body", [
    {"type": "explode"},
    {"type": "delay"},                                               # params.delay_ms missing
    {"type": "delay", "params": {"delay_ms": 0}},
    {"type": "delay", "params": {"delay_ms": 60_001}},
    {"type": "status", "params": {"sct": 8, "sc": 1}},
    {"type": "status", "params": {"sc": 256}},
    {"type": "drop_connection", "params": {"after_commands": -1}},
    {"type": "delay", "params": {"delay_ms": 5}, "probability": 1.5},
    {"type": "delay", "params": {"delay_ms": 5}, "probability": 0},
    {"type": "delay", "params": {"delay_ms": 5}, "count": 0},
    {"type": "delay", "params": {"delay_ms": 5}, "match": {"queue": "both"}},
    {"type": "ignore_keep_alive", "match": {"listener": 1}},  # keep-alive faults match no listener
    {"type": "delay", "params": {"delay_ms": 5}, "match": {"opcodes": []}},
    {"type": "refuse_connection", "match": {"host": HOSTNQN_A}},
    {"type": "ignore_keep_alive", "params": {"delay_ms": 5}},
    {"type": "status", "params": {"sc": 1}, "match": {"subsystem": "not-an-nqn"}},
])
def test_schema_violations_are_422(api: ApiDevice, body: dict[str, Any]) -> None:
    problem(api.client.post("/v1/faults", json=body), 422)
    assert api.client.get("/v1/faults").json() == []


@pytest.mark.parametrize("body", [
    {"type": "status", "params": {"sct": 0, "sc": 0}},                # success is not a fault
    {"type": "delay", "params": {"delay_ms": 5}, "seed": 3},          # seed without probability
])
def test_refused_combinations_are_400(api: ApiDevice, body: dict[str, Any]) -> None:
    problem(api.client.post("/v1/faults", json=body), 400)


def test_tenant_token_is_refused_and_no_token_is_401(api: ApiDevice) -> None:
    _setup_namespace(api)
    token = api.client.post("/v1/tenants", json={"name": "blue", "hosts": [HOSTNQN_A],
                                                  "namespaces": [{"subsystem": SUBNQN, "nsid": 1}]}).json()["token"]
    with api.client_with(token) as tenant:
        problem(tenant.post("/v1/faults", json={"type": "refuse_connection"}), 403)
        problem(tenant.get("/v1/faults"), 403)
        problem(tenant.delete("/v1/faults"), 403)
    with api.client_with(None) as anonymous:
        problem(anonymous.get("/v1/faults"), 401)


def test_faults_are_not_saved_in_the_configuration(api: ApiDevice) -> None:
    _add(api, {"type": "refuse_connection", "match": {"listener": 1}, "count": 1})
    assert "fault" not in api.client.get("/v1/config").text


def test_cli_fault_commands(api: ApiDevice, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPU_EMU_TOKEN", ADMIN_TOKEN)
    base = ["--url", api.url, "--json"]

    def dpu(*argv: str) -> tuple[int, Any]:
        code = cli.main(["fault", *argv, *base])
        text = capsys.readouterr().out
        return code, json.loads(text) if text.strip() else None

    code, made = dpu("add", "status", "--sc", "0x80", "--sct", "0", "--dnr", "--opcode", "0x02", "--queue", "io",
                     "--subsystem", SUBNQN, "--nsid", "1", "--count", "3")
    assert code == 0 and made["params"] == {"delay_ms": None, "sct": 0, "sc": 0x80, "dnr": True,
                                            "after_commands": None}
    assert made["match"]["opcodes"] == [2] and made["count"] == 3
    code, delay = dpu("add", "delay", "--delay-ms", "20", "--probability", "0.25", "--seed", "1")
    assert code == 0 and delay["params"]["delay_ms"] == 20
    code, refuse = dpu("add", "refuse_connection", "--listener", "2")
    assert code == 0 and refuse["match"]["listener"] == 2
    assert [f["id"] for f in dpu("list")[1]] == [made["id"], delay["id"], refuse["id"]]
    assert dpu("show", made["id"])[1]["id"] == made["id"]
    assert dpu("rm", made["id"]) == (0, None)
    assert cli.main(["fault", "show", made["id"], *base]) == 1  # 404 -> the API refused
    capsys.readouterr()
    assert cli.main(["fault", "add", "delay", *base]) == 1  # no --delay-ms: the API says 422
    capsys.readouterr()
    assert dpu("clear") == (0, None)
    assert dpu("list") == (0, [])
