"""DH-HMAC-CHAP over REST: host entries with write-only secrets (never in a response, the
saved configuration or a log line), validation, set/rotate/remove, persistence (wrapped
under the master key, key files, fail-closed without a master key), and nvmeof.host
connecting with and without the right secret."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from dpu_emu.keys import MASTER_KEY_ENV
from nvmeof.auth import AuthenticationFailed, DhchapKey
from nvmeof.host import connect
from nvmeof.host.auth import AuthenticationRequiredError

from .conftest import HOSTNQN_A, HOSTNQN_B, LOOPBACK, SUBNQN, ApiDevice, run, small_config
from .test_resources import problem

HOSTS = f"/v1/subsystems/{SUBNQN}/hosts"
MASTER = bytes(range(32))
KEY = DhchapKey(bytes(range(32)), 1)
CTRL_KEY = DhchapKey(bytes(range(100, 132)), 1)
KEY2 = DhchapKey(bytes(range(50, 98)), 2)


def _secrets() -> list[str]:
    """Every way a secret could leak: DHHC-1 text, its base64 payload, raw bytes in hex."""
    out = []
    for k in (KEY, CTRL_KEY, KEY2):
        text = k.format()
        out += [text, text.split(":")[2], k.key.hex()]
    return out


def assert_no_secret(text: str) -> None:
    for s in _secrets():
        assert s not in text


@pytest.fixture
def sub_api(api: ApiDevice) -> ApiDevice:
    assert api.client.post("/v1/subsystems", json={"nqn": SUBNQN, "allow_any_host": False}).status_code == 201
    ns = api.client.post(f"/v1/subsystems/{SUBNQN}/namespaces",
                         json={"nsid": 1, "size_bytes": 1 << 20, "backend": {"kind": "ram"}})
    assert ns.status_code == 201, ns.text
    return api


def _connect(api: ApiDevice, hostnqn: str = HOSTNQN_A, **kw: Any) -> Any:
    async def body() -> bytes:
        async with await connect(LOOPBACK, api.io_port, SUBNQN, hostnqn=hostnqn, **kw) as ctrl:
            await ctrl.write(1, 0, b"\xa5" * 512)
            return bytes(await ctrl.read(1, 0, 1))
    return run(body())


def test_write_only_everywhere(sub_api: ApiDevice, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = sub_api.client
    made = c.post(HOSTS, json={"nqn": HOSTNQN_A, "dhchap_key": KEY.format(), "dhchap_ctrl_key": CTRL_KEY.format(),
                               "dhchap_hashes": ["sha384", "sha256"], "dhchap_dhgroups": ["ffdhe2048", "null"]})
    assert made.status_code == 201, made.text
    assert made.json()["dhchap"] == {"enabled": True, "bidirectional": True, "hashes": ["sha384", "sha256"],
                                     "dhgroups": ["ffdhe2048", "null"]}
    assert _connect(sub_api, dhchap_secret=KEY.format(), dhchap_ctrl_secret=CTRL_KEY.format()) == b"\xa5" * 512
    rotated = c.put(f"{HOSTS}/{HOSTNQN_A}/dhchap", json={"dhchap_key": KEY2.format()})
    assert rotated.status_code == 200 and rotated.json()["bidirectional"] is False
    responses = [made, rotated, c.get(HOSTS), c.get(f"{HOSTS}/{HOSTNQN_A}"), c.get(f"{HOSTS}/{HOSTNQN_A}/dhchap"),
                 c.get("/v1/config"), c.get(f"/v1/subsystems/{SUBNQN}")]
    for resp in responses:
        assert resp.status_code == 200 or resp.status_code == 201
        assert_no_secret(resp.text)
    assert_no_secret((tmp_path / "device.json").read_text())
    assert "DH-HMAC-CHAP set for host" in caplog.text and "authenticated" in caplog.text  # the logs were seen
    assert_no_secret(caplog.text)


def test_validation_problems_do_not_echo(sub_api: ApiDevice) -> None:
    c = sub_api.client
    good = KEY.format()
    bad_crc = good[:12] + ("A" if good[12] != "A" else "B") + good[13:]
    for body, status in [
        ({"nqn": HOSTNQN_A, "dhchap_key": bad_crc}, 400),
        ({"nqn": HOSTNQN_A, "dhchap_key": "DHHC-1:07:" + good.split(":")[2] + ":"}, 400),
        ({"nqn": HOSTNQN_A, "dhchap_key": "secret"}, 422),
        ({"nqn": HOSTNQN_A, "dhchap_key": good, "dhchap_hashes": ["md5"]}, 400),
        ({"nqn": HOSTNQN_A, "dhchap_key": good, "dhchap_dhgroups": ["ffdhe1024"]}, 400),
        ({"nqn": HOSTNQN_A, "dhchap_ctrl_key": good}, 400),  # a controller key needs a host key
        ({"nqn": HOSTNQN_A, "dhchap_key": good, "dhchap_ctrl_key": good}, 400),
    ]:
        body_text = problem(c.post(HOSTS, json=body), status)
        assert bad_crc not in json.dumps(body_text) and good.split(":")[2] not in json.dumps(body_text)
    assert c.get(HOSTS).json() == []  # nothing was added by a refused request
    assert problem(c.put(f"{HOSTS}/{HOSTNQN_B}/dhchap", json={"dhchap_key": good}), 404)
    assert problem(c.put(f"{HOSTS}/{HOSTNQN_B}/dhchap", json={}), 422)


def test_required_refuses_wrong_and_missing_secret_then_remove(sub_api: ApiDevice) -> None:
    c = sub_api.client
    assert c.post(HOSTS, json={"nqn": HOSTNQN_A, "dhchap_key": KEY.format()}).status_code == 201
    assert c.post(HOSTS, json={"nqn": HOSTNQN_B}).status_code == 201
    problem(c.post(HOSTS, json={"nqn": HOSTNQN_A, "dhchap_key": KEY2.format()}), 409)  # key left unchanged
    problem(c.post(HOSTS, json={"nqn": HOSTNQN_B, "dhchap_key": KEY2.format()}), 409)
    assert "dhchap" not in c.get(f"{HOSTS}/{HOSTNQN_B}").json()
    with pytest.raises(AuthenticationRequiredError):
        _connect(sub_api)
    with pytest.raises(AuthenticationFailed):
        _connect(sub_api, dhchap_secret=KEY2.format())
    assert _connect(sub_api, dhchap_secret=KEY.format())
    assert _connect(sub_api, HOSTNQN_B)  # a host entry without a key needs no authentication
    patched = c.patch(f"{HOSTS}/{HOSTNQN_A}/dhchap", json={"dhchap_dhgroups": ["ffdhe3072"]})
    assert patched.json()["dhgroups"] == ["ffdhe3072"]
    assert _connect(sub_api, dhchap_secret=KEY.format())
    assert c.delete(f"{HOSTS}/{HOSTNQN_A}/dhchap").status_code == 204
    assert "dhchap" not in c.get(f"{HOSTS}/{HOSTNQN_A}").json()
    assert _connect(sub_api)
    assert problem(c.delete(f"{HOSTS}/{HOSTNQN_A}/dhchap"), 404)


def test_persisted_wrapped_under_master_key(make_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, MASTER.hex())
    cfg = small_config()
    cfg["keys_file"] = str(tmp_path / "keys.json")
    path = tmp_path / "device.json"
    api = make_api(cfg, config_path=path, data_dir=tmp_path)
    api.client.post("/v1/subsystems", json={"nqn": SUBNQN, "allow_any_host": False})
    api.client.post(f"/v1/subsystems/{SUBNQN}/namespaces", json={"nsid": 1, "size_bytes": 1 << 20,
                                                                  "backend": {"kind": "ram"}})
    api.client.post(HOSTS, json={"nqn": HOSTNQN_A, "dhchap_key": KEY.format(), "dhchap_ctrl_key": CTRL_KEY.format()})
    saved = json.loads(path.read_text())
    assert_no_secret(path.read_text())
    entry = saved["dhchap"][0]
    assert {"wrapped_key", "wrapped_ctrl_key"} <= set(entry)
    api.stop()
    again = make_api(saved, config_path=path, data_dir=tmp_path)
    assert _connect(again, dhchap_secret=KEY.format(), dhchap_ctrl_secret=CTRL_KEY.format())


def test_without_master_key_fails_closed(make_api: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "device.json"
    api = make_api(config_path=path, data_dir=tmp_path)
    api.client.post("/v1/subsystems", json={"nqn": SUBNQN, "allow_any_host": False})
    api.client.post(f"/v1/subsystems/{SUBNQN}/namespaces", json={"nsid": 1, "size_bytes": 1 << 20,
                                                                  "backend": {"kind": "ram"}})
    api.client.post(HOSTS, json={"nqn": HOSTNQN_A, "dhchap_key": KEY.format()})
    saved = json.loads(path.read_text())
    assert_no_secret(path.read_text())
    api.stop()
    again = make_api(saved, config_path=path, data_dir=tmp_path)
    assert "no usable DH-HMAC-CHAP secret" in caplog.text
    with pytest.raises(AuthenticationFailed):  # still required, and the old secret is gone
        _connect(again, dhchap_secret=KEY.format())
    with pytest.raises(AuthenticationRequiredError):
        _connect(again)


def test_config_file_key_files(make_api: Any, tmp_path: Path) -> None:
    (tmp_path / "host.key").write_text(KEY.format() + "\n")
    (tmp_path / "ctrl.key").write_text(CTRL_KEY.format() + "\n")
    cfg = small_config()
    cfg["subsystems"] = [{"nqn": SUBNQN, "allow_any_host": False, "hosts": [HOSTNQN_A],
                          "namespaces": [{"nsid": 1, "size_bytes": 1 << 20, "backend": {"kind": "ram"}}]}]
    cfg["dhchap"] = [{"subsystem": SUBNQN, "host": HOSTNQN_A, "key_file": "host.key", "ctrl_key_file": "ctrl.key",
                      "hashes": ["sha256"], "dhgroups": ["ffdhe2048"]}]
    path = tmp_path / "device.json"
    api = make_api(cfg, config_path=path, data_dir=tmp_path)
    assert _connect(api, dhchap_secret=KEY.format(), dhchap_ctrl_secret=CTRL_KEY.format())
    api.client.post(HOSTS, json={"nqn": HOSTNQN_B})  # any change saves the file
    saved = path.read_text()
    assert_no_secret(saved)
    assert json.loads(saved)["dhchap"][0]["key_file"] == "host.key"


def test_cli_host_add_with_key_files(sub_api: ApiDevice, tmp_path: Path) -> None:
    from .test_cli import EXIT_OK, EXIT_USAGE, cli, cli_json

    (tmp_path / "h.key").write_text(KEY.format() + "\n")
    (tmp_path / "c.key").write_text(CTRL_KEY.format() + "\n")
    made = cli_json(sub_api, "host", "add", SUBNQN, HOSTNQN_A, "--dhchap-key-file", str(tmp_path / "h.key"),
                    "--dhchap-ctrl-key-file", str(tmp_path / "c.key"), "--dhchap-hash", "sha256")
    assert made["dhchap"] == {"enabled": True, "bidirectional": True, "hashes": ["sha256"],
                              "dhgroups": ["null", "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192"]}
    assert _connect(sub_api, dhchap_secret=KEY.format(), dhchap_ctrl_secret=CTRL_KEY.format())
    shown = cli(sub_api.url, "host", "dhchap", SUBNQN, HOSTNQN_A, "--json")
    assert shown.returncode == EXIT_OK and json.loads(shown.stdout)["bidirectional"] is True
    assert_no_secret(shown.stdout + shown.stderr)
    missing = cli(sub_api.url, "host", "dhchap", SUBNQN, HOSTNQN_A, "--dhchap-key-file", str(tmp_path / "nope"))
    assert missing.returncode == EXIT_USAGE
    removed = cli(sub_api.url, "host", "dhchap", SUBNQN, HOSTNQN_A, "--remove")
    assert removed.returncode == EXIT_OK, removed.stderr
    assert _connect(sub_api)


@pytest.mark.parametrize(("entry", "message"), [
    ({"subsystem": SUBNQN, "host": HOSTNQN_B, "key_file": "host.key"}, "not in the allow list"),
    ({"subsystem": SUBNQN, "host": HOSTNQN_A, "key_file": "missing.key"}, "cannot read"),
    ({"subsystem": SUBNQN, "host": HOSTNQN_A, "key_file": "bad.key"}, "CRC mismatch"),
    ({"subsystem": SUBNQN, "host": HOSTNQN_A, "key": "inline"}, "an object with keys"),
])
def test_bad_config_section_refused(make_api: Any, tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    from dpu_emu.config import ConfigError

    (tmp_path / "host.key").write_text(KEY.format())
    good = KEY.format()
    (tmp_path / "bad.key").write_text(good[:12] + ("A" if good[12] != "A" else "B") + good[13:])
    cfg = small_config()
    cfg["subsystems"] = [{"nqn": SUBNQN, "allow_any_host": False, "hosts": [HOSTNQN_A], "namespaces": []}]
    cfg["dhchap"] = [entry]
    with pytest.raises(ConfigError) as info:
        make_api(cfg, data_dir=tmp_path)
    assert message in str(info.value)
    assert_no_secret(str(info.value))
