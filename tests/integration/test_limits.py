"""Limits that protect the process, over real sockets on 127.0.0.1 against an in-process
device: connections per listener, the ICReq deadline, a malformed (oversized) PDU closing
only its own connection, and memory per connection under a host that never reads."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

import nvmeof.host
from dpu_emu import config as cfgmod

from .conftest import RunningDevice

MIB = 1 << 20
KIB = 1 << 10
IO_TIMEOUT_S = 10.0
ICREQ_TIMEOUT_S = 0.3
C2H_TERM_REQ, ICRESP = 0x03, 0x01
FES_DATA_TRANSFER_LIMIT_EXCEEDED, FEI_PLEN = 0x05, 4
ICREQ = struct.pack("<BBBBIHBBI", 0x00, 0, 128, 0, 128, 0, 0, 0, 0).ljust(128, b"\0")  # spec 1.4 layout
BLOCK = 512


def _cfg(**transport: Any) -> dict[str, Any]:
    cfg = cfgmod.default_config()
    cfg["transport"].update(transport)
    return cfg


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
    sock.settimeout(IO_TIMEOUT_S)
    return sock


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _established(port: int) -> socket.socket:
    sock = _raw(port)
    sock.sendall(ICREQ)
    assert _recv_exact(sock, 128)[0] == ICRESP
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1 << 16) == b""
    except ConnectionResetError:
        return True


async def _roundtrip(ctrl: Any, slba: int) -> None:
    data = bytes(range(256)) * 16
    await ctrl.write(1, slba, data)
    assert await ctrl.read(1, slba, len(data) // BLOCK) == data


def test_connections_per_listener(make_device: Callable[..., RunningDevice]) -> None:
    dev = make_device(_cfg(max_connections_per_listener=3))
    portid = next(pid for pid, (_, port) in dev.device.bound.items() if port == dev.io_port)

    async def scenario() -> None:
        async with await nvmeof.host.connect("127.0.0.1", dev.io_port, dev.subnqn, nr_io_queues=1) as ctrl:
            third = await asyncio.to_thread(_established, dev.io_port)  # admin + I/O + this = 3
            refused = [await asyncio.to_thread(_raw, dev.io_port) for _ in range(4)]
            for sock in refused:  # closed at once, before any PDU
                assert await asyncio.to_thread(_closed_by_peer, sock)
                sock.close()
            await _roundtrip(ctrl, 0)  # the existing connections are unaffected
            third.close()
            for _ in range(100):  # the freed slot is usable again
                if dev.call_soon(lambda: dev.device.server.gates[portid].active) < 3:
                    break
                await asyncio.sleep(0.02)
            again = await asyncio.to_thread(_established, dev.io_port)
            again.close()
            await _roundtrip(ctrl, 8)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    gate = dev.device.server.gates[portid]
    assert gate.refused == 4 and gate.bursts == 1


def test_icreq_deadline(make_device: Callable[..., RunningDevice]) -> None:
    dev = make_device(_cfg(icreq_timeout_s=ICREQ_TIMEOUT_S))
    silent = _raw(dev.io_port)
    partial = _raw(dev.io_port)
    partial.sendall(ICREQ[:64])  # half an ICReq is no ICReq
    prompt = _established(dev.io_port)
    start = time.monotonic()
    assert _closed_by_peer(silent) and _closed_by_peer(partial)
    assert time.monotonic() - start < IO_TIMEOUT_S
    prompt.settimeout(4 * ICREQ_TIMEOUT_S)
    with pytest.raises(TimeoutError):  # an established connection is not subject to the deadline
        prompt.recv(1)
    for sock in (silent, partial, prompt):
        sock.close()
    assert dev.device.server.icreq_timeouts == 2


def test_oversized_pdu_gets_termreq_and_only_its_connection_closes(make_device: Callable[..., RunningDevice]) -> None:
    dev = make_device(None)

    async def scenario() -> None:
        async with await nvmeof.host.connect("127.0.0.1", dev.io_port, dev.subnqn, nr_io_queues=1) as ctrl:
            bad = await asyncio.to_thread(_established, dev.io_port)
            # a CapsuleCmd claiming 1 GiB: only its common header is sent
            header = struct.pack("<BBBBI", 0x04, 0, 72, 72, 1 << 30)
            await asyncio.to_thread(bad.sendall, header)
            term = await asyncio.to_thread(_recv_exact, bad, 24)
            pdu_type, _flags, hlen, _pdo, plen = struct.unpack_from("<BBBBI", term)
            fes, fei = struct.unpack_from("<HI", term, 8)
            assert (pdu_type, hlen, fes, fei) == (C2H_TERM_REQ, 24, FES_DATA_TRANSFER_LIMIT_EXCEEDED, FEI_PLEN)
            assert await asyncio.to_thread(_recv_exact, bad, plen - 24) == header
            assert await asyncio.to_thread(_closed_by_peer, bad)
            bad.close()
            await _roundtrip(ctrl, 16)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def _peak_memory(dev: RunningDevice) -> int:
    """The largest memory any I/O-queue connection holds now (its socket backlog read fresh)."""
    def sample() -> int:
        peak = 0
        for proto in dev.device.server.sessions:
            conn = proto.session.conn
            if conn.qid and proto.transport is not None:
                used = conn.memory_used() - conn.backlog + proto.transport.get_write_buffer_size()
                peak = max(peak, used)
        return peak
    return int(dev.call_soon(sample))


def _never_reading_host(dev: RunningDevice, commands: int, size: int) -> tuple[int, int]:
    """A host queues ``commands`` reads of ``size`` bytes and does not read its socket for a
    while; -> (target memory for that connection once settled, pauses).  Then it reads, and
    every command must complete (backpressure, not an error)."""
    async def scenario() -> int:
        async with await nvmeof.host.connect("127.0.0.1", dev.io_port, dev.subnqn, nr_io_queues=1,
                                             queue_size=commands + 1) as ctrl:
            await ctrl.write(1, 0, bytes(size))
            queue = ctrl.io_queues[0]
            assert queue.transport is not None
            queue.transport.pause_reading()
            tasks = [asyncio.create_task(ctrl.read(1, 0, size // BLOCK, timeout=60)) for _ in range(commands)]
            peak = 0
            for _ in range(20):  # until the target stops growing (bounded in count)
                await asyncio.sleep(0.1)
                now = await asyncio.to_thread(_peak_memory, dev)
                if now == peak and now:
                    break
                peak = max(peak, now)
            queue.transport.resume_reading()
            results = await asyncio.gather(*tasks)
            assert all(len(r) == size for r in results)
            return peak

    peak = asyncio.run(asyncio.wait_for(scenario(), 120))
    return peak, dev.device.server.budget_pauses


def test_memory_per_connection_bounded_when_the_host_never_reads(
        make_device: Callable[..., RunningDevice]) -> None:
    commands, size, budget = 100, 256 * KIB, 2 * MIB
    bounded = make_device(_cfg(max_connection_memory=budget))
    peak, pauses = _never_reading_host(bounded, commands, size)
    print(f"\nbudget {budget}: peak {peak} bytes held, {pauses} pauses; requested {commands * size}")
    assert pauses >= 1
    assert peak <= budget + size  # at most one command beyond the budget
    unbounded = make_device(_cfg(max_connection_memory=0))
    free_peak, _ = _never_reading_host(unbounded, commands, size)
    print(f"no budget: peak {free_peak} bytes held")
    assert free_peak > 4 * peak  # the bound comes from the limit, not from the test
