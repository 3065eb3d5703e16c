"""Wireshark agrees: a real loopback capture of a session decoded by Debian's tshark with
header and data digest checks on shows nvme-tcp PDUs, no malformed packets and no
expert warnings (bad digests are expert errors in packet-nvme-tcp.c)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import nvmeof.host

pytestmark = pytest.mark.tshark

CAPTURE_START_TIMEOUT_S = 10.0
BLOCK = 512
DIGEST_GOOD = "1"  # proto_checksum status: 0 bad, 1 good, 2 unverified


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required in CI (.ci/run installs tshark)")
        pytest.skip(f"{tool} not installed")
    return path


def _start_capture(pcap: Path, ports: list[int]) -> subprocess.Popen[bytes]:
    dumpcap = _need("dumpcap")
    bpf = " or ".join(f"tcp port {p}" for p in ports)
    proc = subprocess.Popen([dumpcap, "-q", "-i", "lo", "-f", bpf, "-w", str(pcap)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + CAPTURE_START_TIMEOUT_S
    while time.monotonic() < deadline:  # dumpcap creates the file once it captures
        if pcap.exists() and pcap.stat().st_size > 0:
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"dumpcap exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("dumpcap did not start capturing")


def _stop_capture(proc: subprocess.Popen[bytes]) -> None:
    time.sleep(0.5)  # let the last packets reach the ring
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)


async def _session(io_port: int, discovery_port: int, subnqn: str) -> None:
    await nvmeof.host.discover("127.0.0.1", discovery_port)
    for hdgst, ddgst in ((False, False), (True, True)):
        async with await nvmeof.host.connect("127.0.0.1", io_port, subnqn, hdgst=hdgst, ddgst=ddgst,
                                             nr_io_queues=2) as ctrl:
            small = os.urandom(4096)  # in-capsule
            large = os.urandom(512 * 1024)  # R2T + several H2CData
            await ctrl.write(1, 0, small)
            await ctrl.write(1, 64, large)
            assert await ctrl.read(1, 0, len(small) // BLOCK) == small
            assert await ctrl.read(1, 64, len(large) // BLOCK) == large  # several C2HData
            await ctrl.flush(1)
            await ctrl.get_log_page(0x02, 512)


def _tshark(pcap: Path, ports: list[int], *extra: str) -> str:
    tshark = _need("tshark")
    decode_as = [arg for p in ports for arg in ("-d", f"tcp.port=={p},nvme-tcp")]
    cmd = [tshark, "-n", "-r", str(pcap), "-o", "nvme-tcp.check_hdgst:TRUE", "-o", "nvme-tcp.check_ddgst:TRUE",
           *decode_as, *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


def test_tshark_decodes_a_session_without_errors(device, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _need("tshark")
    pcap = tmp_path / "session.pcapng"
    ports = [device.io_port, device.discovery_port]
    proc = _start_capture(pcap, ports)
    try:
        asyncio.run(_session(device.io_port, device.discovery_port, device.subnqn))
    finally:
        _stop_capture(proc)
    pdu_types = _tshark(pcap, ports, "-Y", "nvme-tcp", "-T", "fields", "-e", "nvme-tcp.type")
    seen = {int(t) for line in pdu_types.split() for t in line.split(",") if t}
    # ICReq, ICResp, CapsuleCmd, CapsuleResp, H2CData, C2HData, R2T all decoded
    assert {0, 1, 4, 5, 6, 7, 9} <= seen, f"PDU types seen: {sorted(seen)}"
    statuses = _tshark(pcap, ports, "-Y", "nvme-tcp.hdgst || nvme-tcp.ddgst", "-T", "fields",
                       "-e", "nvme-tcp.hdgst.status", "-e", "nvme-tcp.ddgst.status")
    values = [v for line in statuses.splitlines() for col in line.split("\t") for v in col.split(",") if v]
    assert values, "no digests were verified"
    assert set(values) == {DIGEST_GOOD}, f"digest statuses {sorted(set(values))}"
    problems = _tshark(pcap, ports, "-Y", "_ws.malformed || (_ws.expert.severity >= 0x600000 && !tcp.analysis.flags)",
                       "-T", "fields", "-e", "frame.number", "-e", "_ws.expert.message")
    assert problems.strip() == "", f"tshark reports problems:\n{problems[:4000]}"
