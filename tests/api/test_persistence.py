"""Every change is saved; a restart restores it (export byte-identical, file-backed data
intact); a corrupt file is refused with a clear message; the REST frontend is found
through its entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpu_emu import config as cfgmod
from dpu_emu.device import Device
from dpu_emu.frontends import FrontendOptions, load_frontends
from nvmeof.host import connect

from .conftest import HOSTNQN_A, LOOPBACK, SUBNQN, ApiDevice, run, small_config

MIB = 1 << 20
BLOCK = 512
PATTERN = bytes(range(256)) * 16


def provision_everything(api: ApiDevice) -> None:
    c = api.client
    assert c.post("/v1/subsystems", json={"nqn": SUBNQN, "serial": "SN1", "hosts": [HOSTNQN_A]}).status_code == 201
    assert c.post(f"/v1/subsystems/{SUBNQN}/namespaces",
                  json={"size_bytes": 4 * MIB, "backend": {"kind": "file", "path": "disk.img"}}).status_code == 201
    assert c.post(f"/v1/subsystems/{SUBNQN}/namespaces",
                  json={"command_set": "kv", "capacity_bytes": MIB,
                        "backend": {"kind": "file", "path": "kvdir"}}).status_code == 201
    assert c.post("/v1/qos/policies", json={"name": "gold", "rw_ios_per_sec": 5000, "weight": 4}).status_code == 201
    assert c.patch(f"/v1/subsystems/{SUBNQN}/namespaces/1", json={"qos": {"rw_mbytes_per_sec": 100}}).status_code \
        == 200
    assert c.post("/v1/tenants", json={"name": "blue", "hosts": [HOSTNQN_A], "qos": "gold",
                                       "namespaces": [{"subsystem": SUBNQN, "nsid": 1}]}).status_code == 201
    assert c.post("/v1/listeners", json={"traddr": "127.0.0.1", "trsvcid": 0, "discovery": False}).status_code \
        == 201


def test_restart_restores_identical_export_and_data(make_api, tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    first = make_api(config_path=path, data_dir=tmp_path)
    provision_everything(first)

    async def write() -> None:
        async with await connect(LOOPBACK, first.io_port, SUBNQN, hostnqn=HOSTNQN_A) as ctrl:
            await ctrl.write(1, 16, PATTERN, fua=True)

    run(write())
    exported = first.client.get("/v1/config").text
    assert path.read_text() == exported
    first.stop()

    second = make_api(cfgmod.load_config(path), config_path=path, data_dir=tmp_path)
    assert second.client.get("/v1/config").text == exported
    assert second.device.services.export_text() == exported
    tenant = second.client.get("/v1/tenants/blue").json()
    assert tenant["hosts"] == [HOSTNQN_A] and tenant["qos"] == "gold"
    assert second.device.qos.policies["gold"].rw_ios_per_sec == 5000
    assert second.device.qos.tenants["blue"].policy.weight == 4
    assert second.device.qos.namespaces[(SUBNQN, 1)].policy.rw_mbytes_per_sec == 100

    async def read_back() -> bytes:
        async with await connect(LOOPBACK, second.io_port, SUBNQN, hostnqn=HOSTNQN_A) as ctrl:
            return await ctrl.read(1, 16, len(PATTERN) // BLOCK)

    assert run(read_back()) == PATTERN


def test_config_without_ids_is_completed_deterministically(tmp_path: Path) -> None:
    cfg = cfgmod.with_overrides(cfgmod.default_config(), address=LOOPBACK, port=0, discovery_port=0)
    texts = []
    for _ in range(2):
        device = Device(cfg)
        texts.append(device.services.export_text())
        run(device.stop())
    assert texts[0] == texts[1]
    exported = json.loads(texts[0])
    assert all("uuid" in ns and "nguid" in ns for ns in exported["subsystems"][0]["namespaces"])
    again = Device(exported)
    assert again.services.export_text() == texts[0]
    run(again.stop())


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ('{"ports": [], "subsystems": [{"nqn": "bad-nqn"}]}', "nqn"),
    ('{"ports": [], "subsystems": [{"nqn": "nqn.a:b", "namespaces": [{"nsid": 1, "size_bytes": 1000, '
     '"backend": {"kind": "ram"}}]}]}', "size_bytes"),
    ('{"ports": [], "subsystems": [], "tenants": [{"name": "t", "namespaces": [{"subsystem": "nqn.x:y", '
     '"nsid": 1}]}]}', "nqn.x:y"),
    ('{"ports": "nope", "subsystems": []}', "ports"),
    ("[]", "JSON object"),
])
def test_corrupt_config_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "dpu_emu", "serve", "--config", str(path), "--no-rest"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "configuration refused" in proc.stderr and message in proc.stderr
    assert path.read_text() == content  # never overwritten


def test_rest_frontend_comes_from_entry_point() -> None:
    frontends = load_frontends(FrontendOptions(port=0))
    assert [f.name for f in frontends] == ["rest"]
    assert load_frontends(FrontendOptions(), exclude=frozenset({"rest"})) == []


def test_change_without_config_file_stays_in_memory(make_api) -> None:
    api = make_api(small_config(), config_path=None)
    assert api.client.post("/v1/subsystems", json={"nqn": SUBNQN}).status_code == 201
    assert json.loads(api.client.get("/v1/config").text)["subsystems"][0]["nqn"] == SUBNQN
