"""/v1/listeners/{id}/capture: start, status, stop; bounded; names only, never paths."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

import nvmeof.host

from .conftest import ApiDevice

PROBLEM = "application/problem+json"
PCAP_MAGIC_LE = bytes.fromhex("d4c3b2a1")  # libpcap classic, microseconds, little-endian
LINKTYPE_RAW = 101
PORT = 1


def _discover(api: ApiDevice) -> None:
    port = api.device.bound[PORT][1]
    asyncio.run(asyncio.wait_for(nvmeof.host.discover("127.0.0.1", port), 30))


def test_capture_flow(api: ApiDevice, tmp_path: Path) -> None:
    url = f"/v1/listeners/{PORT}/capture"
    idle = api.client.get(url)
    assert idle.status_code == 200 and idle.json()["active"] is False and idle.json()["file"] is None
    started = api.client.post(url, json={"file": "flow.pcap"})
    assert started.status_code == 201, started.text
    assert started.json()["active"] is True and started.json()["file"] == "flow.pcap"
    again = api.client.post(url, json={"file": "other.pcap"})
    assert again.status_code == 409 and again.headers["content-type"].startswith(PROBLEM)
    _discover(api)
    live = api.client.get(url).json()
    assert live["active"] is True and live["connections"] >= 1 and live["packets"] > 3
    stopped = api.client.delete(url)
    assert stopped.status_code == 200
    final = stopped.json()
    assert final["active"] is False and final["truncated"] is False and final["stopped_reason"] == "stopped"
    pcap = tmp_path / "captures" / "flow.pcap"
    data = pcap.read_bytes()
    assert len(data) == final["bytes"]
    assert data[:4] == PCAP_MAGIC_LE and struct.unpack_from("<I", data, 20)[0] == LINKTYPE_RAW
    assert api.client.get(url).json() == final  # the last capture's status stays readable
    assert api.client.post(url, json={"file": "flow.pcap"}).status_code == 201  # a name may be reused
    assert api.client.delete(url).status_code == 200


def test_capture_stops_at_its_bound(api: ApiDevice) -> None:
    url = f"/v1/listeners/{PORT}/capture"
    assert api.client.post(url, json={"file": "small.pcap", "max_packets": 5}).status_code == 201
    _discover(api)
    status = api.client.get(url).json()
    assert status["packets"] == 5 and status["truncated"] is True and status["active"] is False
    assert status["stopped_reason"] == "limit reached"
    assert api.client.delete(url).json()["packets"] == 5


@pytest.mark.parametrize("body", [
    {"file": "../escape.pcap"}, {"file": "a/b.pcap"}, {"file": "/etc/passwd"}, {"file": ""},
    {"file": ".hidden"}, {"file": "x" * 129}, {"file": "ok.pcap", "max_bytes": 10},
    {"file": "ok.pcap", "max_packets": 0}, {"file": "ok.pcap", "path": "/tmp/x"}, {},
])
def test_capture_refuses_bad_input(api: ApiDevice, body: dict, tmp_path: Path) -> None:
    resp = api.client.post(f"/v1/listeners/{PORT}/capture", json=body)
    assert resp.status_code == 422 and resp.headers["content-type"].startswith(PROBLEM), resp.text
    assert not (tmp_path / "escape.pcap").exists()


def test_capture_dotdot_inside_a_name_is_refused(api: ApiDevice) -> None:
    resp = api.client.post(f"/v1/listeners/{PORT}/capture", json={"file": "a..b"})
    assert resp.status_code == 400 and resp.headers["content-type"].startswith(PROBLEM)


def test_capture_does_not_follow_a_planted_symlink(api: ApiDevice, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / "evil.pcap").symlink_to(victim)
    resp = api.client.post(f"/v1/listeners/{PORT}/capture", json={"file": "evil.pcap"})
    assert resp.status_code == 409 and resp.headers["content-type"].startswith(PROBLEM)
    assert victim.read_text() == "keep me"


def test_capture_unknown_listener_and_nothing_to_stop(api: ApiDevice) -> None:
    assert api.client.post("/v1/listeners/99/capture", json={"file": "x.pcap"}).status_code == 404
    assert api.client.get("/v1/listeners/99/capture").status_code == 404
    assert api.client.delete(f"/v1/listeners/{PORT}/capture").status_code == 404


def test_capture_needs_a_capture_directory(make_api: Callable[..., ApiDevice]) -> None:
    dev = make_api()  # no --data-dir, no capture.dir
    resp = dev.client.post(f"/v1/listeners/{PORT}/capture", json={"file": "x.pcap"})
    assert resp.status_code == 409 and "capture directory" in resp.json()["detail"]


def test_capture_is_admin_only(api: ApiDevice) -> None:
    assert api.client_with(None).get(f"/v1/listeners/{PORT}/capture").status_code == 401


def test_capture_cli(api: ApiDevice, tmp_path: Path) -> None:
    from .test_cli import EXIT_API, EXIT_OK, cli, cli_json

    started = cli_json(api, "capture", "start", str(PORT), "cli.pcap", "--max-bytes", "1M")
    assert started["active"] is True and started["max_bytes"] == 1 << 20
    _discover(api)
    assert cli_json(api, "capture", "status", str(PORT))["packets"] > 0
    final = cli_json(api, "capture", "stop", str(PORT))
    assert final["active"] is False and (tmp_path / "captures" / "cli.pcap").stat().st_size == final["bytes"]
    refused = cli(api.url, "capture", "start", str(PORT), "../up.pcap")
    assert refused.returncode == EXIT_API and "HTTP 422" in refused.stderr
    assert cli(api.url, "capture", "status", str(PORT)).returncode == EXIT_OK
