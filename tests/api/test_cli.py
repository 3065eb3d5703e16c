"""``dpu-emu <resource> ...`` subcommands against a live REST API: output, --json and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from .conftest import ADMIN_TOKEN, HOSTNQN_A, SUBNQN, ApiDevice

EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def cli(api_url: str, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DPU_EMU_URL=api_url, DPU_EMU_TOKEN=token)
    return subprocess.run([sys.executable, "-m", "dpu_emu", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def cli_json(api: ApiDevice, *args: str) -> Any:
    proc = cli(api.url, *args, "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    return json.loads(proc.stdout)


def test_cli_round_trip(api: ApiDevice) -> None:
    sub = cli_json(api, "subsystem", "add", SUBNQN, "--serial", "CLI1", "--host", HOSTNQN_A)
    assert sub["serial"] == "CLI1" and sub["hosts"] == [HOSTNQN_A]
    ns = cli_json(api, "namespace", "add", SUBNQN, "--size", "4M")
    assert ns["nsid"] == 1 and ns["size_bytes"] == 4 << 20
    kv = cli_json(api, "namespace", "add", SUBNQN, "--kv", "--capacity", "1M", "--mode", "cache")
    assert kv["command_set"] == "kv" and kv["capacity_bytes"] == 1 << 20
    assert [n["nsid"] for n in cli_json(api, "namespace", "list", SUBNQN)] == [1, 2]
    assert cli_json(api, "host", "list", SUBNQN)[0]["nqn"] == HOSTNQN_A
    tenant = cli_json(api, "tenant", "add", "blue", "--host", HOSTNQN_A, "--namespace", f"{SUBNQN}:1")
    assert tenant["token"] and tenant["namespaces"][0]["nsid"] == 1
    listener = cli_json(api, "listener", "add", "--address", "127.0.0.1", "--port", "0", "--io-only")
    assert listener["io"] and not listener["discovery"]
    stats = cli_json(api, "stats")
    assert {(n["subsystem"], n["nsid"]) for n in stats["namespaces"]} == {(SUBNQN, 1), (SUBNQN, 2)}
    human = cli(api.url, "subsystem", "list")
    assert human.returncode == EXIT_OK and f"nqn={SUBNQN}" in human.stdout
    for args in (("tenant", "remove", "blue"), ("listener", "remove", str(listener["id"])),
                 ("host", "remove", SUBNQN, HOSTNQN_A), ("namespace", "remove", SUBNQN, "2"),
                 ("subsystem", "remove", SUBNQN)):
        proc = cli(api.url, *args)
        assert proc.returncode == EXIT_OK and proc.stdout.strip() == "ok", proc.stderr
    assert cli_json(api, "subsystem", "list") == []


def test_cli_exit_codes(api: ApiDevice) -> None:
    missing = cli(api.url, "subsystem", "show", "nope")
    assert missing.returncode == EXIT_API and "HTTP 404" in missing.stderr
    as_json = cli(api.url, "subsystem", "show", "nope", "--json")
    assert as_json.returncode == EXIT_API and json.loads(as_json.stderr)["status"] == 404
    bad_token = cli(api.url, "stats", token="not-the-token-at-all")
    assert bad_token.returncode == EXIT_API and "HTTP 401" in bad_token.stderr
    assert cli(api.url, "namespace", "add").returncode == EXIT_USAGE
    assert cli("http://127.0.0.1:1", "stats").returncode == EXIT_UNREACHABLE


SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "testbeds", "provision", "two_tenants.sh")


def test_two_tenants_script(api: ApiDevice, tmp_path: Any) -> None:
    subnqn = "nqn.2026-11.io.dpu-emu:two-tenants"
    env = dict(os.environ, DPU_EMU_URL=api.url, DPU_EMU_ADMIN_TOKEN=ADMIN_TOKEN, OUT_DIR=str(tmp_path))
    proc = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [t["name"] for t in api.client.get("/v1/tenants").json()] == ["blue", "red"]
    for name, nsid in (("blue", 1), ("red", 2)):
        token = (tmp_path / f"{name}.token").read_text().strip()
        assert token and token not in proc.stdout
        assert (tmp_path / f"{name}.token").stat().st_mode & 0o077 == 0
        with api.client_with(token) as client:
            assert [n["nsid"] for n in client.get(f"/v1/subsystems/{subnqn}/namespaces").json()] == [nsid]


def test_cli_qos_and_keys(make_api: Any, tmp_path: Any, monkeypatch: Any) -> None:
    import base64
    import secrets

    from dpu_emu.keys import MASTER_KEY_ENV

    from .conftest import small_config

    monkeypatch.setenv(MASTER_KEY_ENV, bytes(range(32)).hex())
    cfg = small_config()
    cfg["keys_file"] = str(tmp_path / "keys.json")
    api: ApiDevice = make_api(cfg, config_path=tmp_path / "device.json", data_dir=tmp_path)
    gold = cli_json(api, "qos", "add", "gold", "--rw-ios", "5000", "--weight", "4")
    assert gold["rw_ios_per_sec"] == 5000 and gold["weight"] == 4
    assert cli_json(api, "qos", "set", "gold", "--rw-mbytes", "100")["rw_mbytes_per_sec"] == 100
    assert [p["name"] for p in cli_json(api, "qos", "list")] == ["gold"]
    assert cli(api.url, "qos", "add", "gold").returncode == EXIT_API  # exists
    assert cli(api.url, "qos", "set", "gold").returncode == EXIT_USAGE  # nothing to change
    cli_json(api, "subsystem", "add", SUBNQN, "--host", HOSTNQN_A)
    assert cli_json(api, "namespace", "add", SUBNQN, "--size", "1M", "--qos", "gold")["qos"] == "gold"
    limited = cli_json(api, "qos", "namespace", SUBNQN, "1", "--rw-ios", "300")
    assert limited["qos"] == {"rw_ios_per_sec": 300}
    assert cli_json(api, "qos", "namespace", SUBNQN, "1", "--unlimited")["qos"] is None
    assert cli(api.url, "qos", "namespace", SUBNQN, "1", "--unlimited", "--policy", "gold").returncode == EXIT_USAGE
    assert cli_json(api, "qos", "stats")["namespaces"][0]["nsid"] == 1
    assert cli(api.url, "qos", "remove", "gold").stdout.strip() == "ok"

    material = secrets.token_bytes(64)
    (tmp_path / "key.bin").write_bytes(material)
    imported = cli(api.url, "key", "add", "--id", "k1", "--material-file", str(tmp_path / "key.bin"), "--json")
    assert imported.returncode == EXIT_OK, imported.stderr
    assert base64.b64encode(material).decode() not in imported.stdout + imported.stderr
    assert json.loads(imported.stdout)["id"] == "k1"
    assert cli_json(api, "key", "add")["id"].startswith("key-")
    assert len(cli_json(api, "key", "list")) == 2
    ns = cli_json(api, "namespace", "add", SUBNQN, "--size", "1M", "--key", "k1")
    assert ns["key"] == "k1" and ns["integrity"]
    assert cli(api.url, "key", "remove", "k1").returncode == EXIT_API  # in use
    assert cli(api.url, "key", "add", "--material-file", str(tmp_path / "missing")).returncode == EXIT_USAGE
    assert cli_json(api, "key", "show", "k1")["used_by"] == [f"namespace {SUBNQN}/2"]
