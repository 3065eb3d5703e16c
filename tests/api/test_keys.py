"""Data keys over REST: generate/import/list/get/delete, refusals, write-only material
(never in a response, the saved configuration or a log line), and an encrypted namespace
created over REST doing I/O from nvmeof.host."""

from __future__ import annotations

import base64
import logging
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from dpu_emu.keys import MASTER_KEY_ENV
from nvmeof.host import connect

from .conftest import HOSTNQN_A, LOOPBACK, SUBNQN, ApiDevice, run, small_config
from .test_resources import problem

MIB = 1 << 20
BLOCK = 512
XTS_KEY_BYTES = 64
MASTER = bytes(range(32))
NS_PATH = f"/v1/subsystems/{SUBNQN}/namespaces"


def xts_key() -> bytes:
    while True:
        raw = secrets.token_bytes(XTS_KEY_BYTES)
        if raw[:32] != raw[32:]:
            return raw


@pytest.fixture
def keyed_api(make_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ApiDevice:
    monkeypatch.setenv(MASTER_KEY_ENV, MASTER.hex())
    cfg = small_config()
    cfg["keys_file"] = str(tmp_path / "keys.json")
    api: ApiDevice = make_api(cfg, config_path=tmp_path / "device.json", data_dir=tmp_path)
    return api


def test_without_key_management_the_routes_say_so(api: ApiDevice) -> None:
    for resp in (api.client.get("/v1/keys"), api.client.post("/v1/keys", json={}),
                 api.client.get("/v1/keys/k1"), api.client.delete("/v1/keys/k1")):
        assert "key management not configured" in problem(resp, 409)["detail"]


def test_key_crud_and_errors(keyed_api: ApiDevice) -> None:
    c = keyed_api.client
    assert c.get("/v1/keys").json() == []
    made = c.post("/v1/keys", json={"id": "gen-1"})
    assert made.status_code == 201, made.text
    assert set(made.json()) == {"id", "fingerprint", "created", "used_by"}
    imported = c.post("/v1/keys", json={"material": base64.b64encode(xts_key()).decode()}).json()
    assert imported["id"].startswith("key-") and len(imported["fingerprint"]) == 16
    assert [k["id"] for k in c.get("/v1/keys").json()] == sorted(["gen-1", imported["id"]])
    assert c.get("/v1/keys/gen-1").json() == made.json()
    problem(c.post("/v1/keys", json={"id": "gen-1"}), 409)
    problem(c.post("/v1/keys", json={"material": "not base64!"}), 400)
    problem(c.post("/v1/keys", json={"material": base64.b64encode(bytes(32)).decode()}), 400)  # length
    problem(c.post("/v1/keys", json={"material": base64.b64encode(bytes(64)).decode()}), 400)  # equal halves
    problem(c.post("/v1/keys", json={"material": "QQ==", "extra": 1}), 422)
    problem(c.get("/v1/keys/none"), 404)
    problem(c.delete("/v1/keys/none"), 404)
    assert c.delete("/v1/keys/gen-1").status_code == 204
    problem(c.get("/v1/keys/gen-1"), 404)


def test_material_is_write_only_and_encrypted_namespace_does_io(keyed_api: ApiDevice, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    material = xts_key()
    forms = [base64.b64encode(material).decode(), material.hex(), material.hex().upper(),
             base64.urlsafe_b64encode(material).decode()]
    bodies: list[str] = []

    def keep(resp: httpx.Response) -> httpx.Response:
        bodies.append(resp.text)
        return resp

    c = keyed_api.client
    problem(keep(c.post("/v1/keys", json={"id": "bad", "material": forms[0] + "A"})), 400)
    created = keep(c.post("/v1/keys", json={"id": "tenant-key", "material": forms[0]}))
    assert created.status_code == 201, created.text
    problem(keep(c.post("/v1/keys", json={"id": "again", "material": forms[0]})), 409)  # same material
    assert keep(c.post("/v1/subsystems", json={"nqn": SUBNQN, "hosts": [HOSTNQN_A]})).status_code == 201
    problem(keep(c.post(NS_PATH, json={"size_bytes": MIB, "key": "nope"})), 400)
    ns = keep(c.post(NS_PATH, json={"size_bytes": MIB, "key": "tenant-key"}))
    assert ns.status_code == 201, ns.text
    assert ns.json()["integrity"] is True and ns.json()["key"] == "tenant-key"
    assert keep(c.get("/v1/keys/tenant-key")).json()["used_by"] == [f"namespace {SUBNQN}/1"]
    problem(keep(c.delete("/v1/keys/tenant-key")), 409)

    pattern = secrets.token_bytes(16 * BLOCK)

    async def io() -> bytes:
        async with await connect(LOOPBACK, keyed_api.io_port, SUBNQN, hostnqn=HOSTNQN_A) as ctrl:
            await ctrl.write(1, 32, pattern, fua=True)
            return await ctrl.read(1, 32, 16)

    assert run(io()) == pattern
    for path in ("/v1/keys", "/v1/config", "/v1/stats", "/metrics", NS_PATH, "/openapi.json"):
        keep(c.get(path))
    saved = (tmp_path / "device.json").read_text()
    key_file = (tmp_path / "keys.json").read_text()
    assert '"key": "tenant-key"' in saved
    for form in forms:
        for where, text in (("a response", "\n".join(bodies)), ("the saved configuration", saved),
                            ("the key file", key_file), ("the log", caplog.text)):
            assert form not in text, f"key material found in {where}"
            assert form[:24] not in text, f"part of the key material found in {where}"


def test_integrity_only_namespace_over_rest(api: ApiDevice) -> None:
    c = api.client
    assert c.post("/v1/subsystems", json={"nqn": SUBNQN, "hosts": [HOSTNQN_A]}).status_code == 201
    ns = c.post(NS_PATH, json={"size_bytes": MIB, "integrity": True})
    assert ns.status_code == 201, ns.text
    assert ns.json()["integrity"] is True and ns.json()["key"] is None
    problem(c.post(NS_PATH, json={"size_bytes": MIB, "key": "k1"}), 400)  # no key manager on this device
    problem(c.post(NS_PATH, json={"command_set": "kv", "capacity_bytes": MIB, "integrity": "yes"}), 422)
    pattern = secrets.token_bytes(8 * BLOCK)

    async def io() -> bytes:
        async with await connect(LOOPBACK, api.io_port, SUBNQN, hostnqn=HOSTNQN_A) as ctrl:
            await ctrl.write(1, 0, pattern)
            return await ctrl.read(1, 0, 8)

    assert run(io()) == pattern
    assert '"integrity": true' in c.get("/v1/config").text
