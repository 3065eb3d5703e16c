"""The device's own per-listener capture (REST-controlled) is a pcap tshark decodes: the
synthetic TCP stream reassembles, NVMe/TCP PDUs and commands decode, and header and data
digests verify (no malformed packets, no expert errors)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

import nvmeof.host
from control_api.frontend import RestFrontend
from dpu_emu.frontends import FrontendOptions
from testbeds.inprocess import RunningDevice

from .conftest import ephemeral_config

pytestmark = pytest.mark.tshark

TOKEN = "dpuadm_capture-test-0123456789abcdef"
BLOCK = 512
DIGEST_GOOD = "1"  # proto_checksum status: 0 bad, 1 good, 2 unverified
SESSION_TIMEOUT_S = 60.0
# ICReq, ICResp, CapsuleCmd, CapsuleResp, H2CData, C2HData, R2T
PDU_TYPES = {0, 1, 4, 5, 6, 7, 9}
NVME_IDENTIFY, NVME_WRITE, NVME_READ = 0x06, 0x01, 0x02


def _tshark_path() -> str:
    path = shutil.which("tshark")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("tshark is required in CI (.ci/run installs tshark)")
        pytest.skip("tshark not installed")
    return path


def _tshark(pcap: Path, ports: list[int], *extra: str) -> str:
    decode_as = [arg for p in ports for arg in ("-d", f"tcp.port=={p},nvme-tcp")]
    cmd = [_tshark_path(), "-n", "-r", str(pcap), "-o", "nvme-tcp.check_hdgst:TRUE",
           "-o", "nvme-tcp.check_ddgst:TRUE", *decode_as, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


async def _session(io_port: int, subnqn: str) -> None:
    await nvmeof.host.discover("127.0.0.1", io_port)
    async with await nvmeof.host.connect("127.0.0.1", io_port, subnqn, hdgst=True, ddgst=True,
                                         nr_io_queues=1) as ctrl:
        await ctrl.identify_controller()
        small = os.urandom(4096)  # in-capsule
        large = os.urandom(256 * 1024)  # R2T + H2CData
        await ctrl.write(1, 0, small)
        await ctrl.write(1, 64, large)
        assert await ctrl.read(1, 0, len(small) // BLOCK) == small
        assert await ctrl.read(1, 64, len(large) // BLOCK) == large


def test_capture_over_rest_decodes_in_tshark(tmp_path: Path) -> None:
    _tshark_path()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    rest = RestFrontend(FrontendOptions(address="127.0.0.1", port=0, admin_token_file=token_file))
    dev = RunningDevice(ephemeral_config(), frontends=[rest], data_dir=tmp_path)
    try:
        io_port = dev.io_port
        portid = next(pid for pid, (_, port) in dev.device.bound.items() if port == io_port)
        url = f"/v1/listeners/{portid}/capture"
        with httpx.Client(base_url=f"http://127.0.0.1:{rest.port}",
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
            assert client.post(url, json={"file": "session.pcap"}).status_code == 201
            asyncio.run(asyncio.wait_for(_session(io_port, dev.subnqn), SESSION_TIMEOUT_S))
            final = client.delete(url).json()
    finally:
        dev.stop()
    assert final["truncated"] is False and final["connections"] >= 3  # discovery, admin, I/O queue
    pcap = tmp_path / "captures" / "session.pcap"
    fields = _tshark(pcap, [io_port], "-Y", "nvme-tcp", "-T", "fields", "-e", "nvme-tcp.type")
    seen = {int(t) for line in fields.split() for t in line.split(",") if t}
    assert PDU_TYPES <= seen, f"PDU types seen: {sorted(seen)}"
    opcodes = _tshark(pcap, [io_port], "-Y", "nvme.cmd.opc", "-T", "fields", "-e", "nvme.cmd.opc")
    ops = {int(v, 0) for line in opcodes.split() for v in line.split(",") if v}
    assert {NVME_IDENTIFY, NVME_WRITE, NVME_READ} <= ops, f"opcodes seen: {sorted(ops)}"
    statuses = _tshark(pcap, [io_port], "-Y", "nvme-tcp.hdgst || nvme-tcp.ddgst", "-T", "fields",
                       "-e", "nvme-tcp.hdgst.status", "-e", "nvme-tcp.ddgst.status")
    values = [v for line in statuses.splitlines() for col in line.split("\t") for v in col.split(",") if v]
    assert values, "no digests were verified"
    assert set(values) == {DIGEST_GOOD}, f"digest statuses {sorted(set(values))}"
    problems = _tshark(pcap, [io_port], "-Y", "_ws.malformed || _ws.expert.severity >= 0x600000",
                       "-T", "fields", "-e", "frame.number", "-e", "_ws.expert.message")
    assert problems.strip() == "", f"tshark reports problems:\n{problems[:4000]}"
