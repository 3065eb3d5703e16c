"""Small traffic probes between namespaces (run on threads that `Topology.executor` placed there).

Bounded in bytes, datagrams and time: they measure relative effects (a rate-limited path vs an
unlimited one, a lossy path vs a clean one), never absolute figures.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import Future
from typing import Final

from .topology import EMU_ROLE, Topology

CHUNK_BYTES: Final[int] = 64 * 1024
CONNECT_TIMEOUT_S: Final[float] = 3.0
SOCKET_TIMEOUT_S: Final[float] = 5.0
LISTEN_BACKLOG: Final[int] = 4
UDP_PAYLOAD: Final[bytes] = b"dpu-emu-probe"
UDP_DRAIN_S: Final[float] = 0.5
UDP_RCVBUF_BYTES: Final[int] = 16 * 1024 * 1024
SO_RCVBUFFORCE: Final[int] = 33
"""<asm-generic/socket.h>; Python's socket module does not name it."""
RETRY_INTERVAL_S: Final[float] = 0.2


def tcp_connects(topo: Topology, client: str, address: str, port: int) -> bool:
    """True when a TCP connection from `client` to a listener in the emulator namespace succeeds."""
    listener = topo.call(EMU_ROLE, _listen_tcp, address, port)
    try:
        with topo.thread_pool(EMU_ROLE) as pool:
            accepted: Future[bytes] = pool.submit(_accept_read, listener)
            sent = topo.call(client, _send_hello, address, port)
            if not sent:
                _wake(listener)
                return False
            return accepted.result(timeout=SOCKET_TIMEOUT_S) == UDP_PAYLOAD
    except OSError:
        return False
    finally:
        listener.close()


def wait_tcp(topo: Topology, client: str, address: str, port: int, *, timeout: float) -> bool:
    """Polls `tcp_connects` until it succeeds (a link brought up needs a moment for its carrier)."""
    deadline = time.monotonic() + timeout
    while True:
        if tcp_connects(topo, client, address, port):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(RETRY_INTERVAL_S)


def _wake(listener: socket.socket) -> None:
    """Makes a thread blocked in accept() return at once (shutdown wakes it on Linux)."""
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _listen_tcp(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(LISTEN_BACKLOG)
    sock.settimeout(SOCKET_TIMEOUT_S)
    return sock


def _accept_read(listener: socket.socket) -> bytes:
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(SOCKET_TIMEOUT_S)
        return conn.recv(len(UDP_PAYLOAD))


def _send_hello(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT_S) as sock:
            sock.sendall(UDP_PAYLOAD)
        return True
    except OSError:
        return False


def tcp_throughput(topo: Topology, client: str, address: str, port: int, *, max_bytes: int,
                   max_seconds: float) -> float:
    """Bytes/s sent from `client` to a sink in the emulator namespace (stops at either bound)."""
    listener = topo.call(EMU_ROLE, _listen_tcp, address, port)
    try:
        with topo.thread_pool(EMU_ROLE) as pool:
            sink: Future[int] = pool.submit(_sink, listener, max_seconds)
            sent, seconds = topo.call(client, _source, address, port, max_bytes, max_seconds)
            sink.result(timeout=max_seconds + SOCKET_TIMEOUT_S)
        return sent / seconds
    finally:
        listener.close()


def _sink(listener: socket.socket, max_seconds: float) -> int:
    conn, _ = listener.accept()
    total = 0
    deadline = time.monotonic() + max_seconds + SOCKET_TIMEOUT_S
    with conn:
        conn.settimeout(SOCKET_TIMEOUT_S)
        while time.monotonic() < deadline:
            data = conn.recv(CHUNK_BYTES)
            if not data:
                break
            total += len(data)
    return total


def _source(address: str, port: int, max_bytes: int, max_seconds: float) -> tuple[int, float]:
    chunk = bytes(CHUNK_BYTES)
    sent = 0
    with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT_S) as sock:
        sock.settimeout(SOCKET_TIMEOUT_S)
        started = time.monotonic()
        while sent < max_bytes and time.monotonic() - started < max_seconds:
            try:
                sent += sock.send(chunk)
            except TimeoutError:
                break
        elapsed = time.monotonic() - started
    return sent, max(elapsed, 1e-6)


def udp_delivery(topo: Topology, client: str, address: str, port: int, *, count: int) -> int:
    """How many of `count` datagrams from `client` reach a receiver in the emulator namespace."""
    receiver = topo.call(EMU_ROLE, _bind_udp, address, port)
    try:
        topo.call(client, _send_udp, address, port, count)
        return topo.call(EMU_ROLE, _drain_udp, receiver, count)
    finally:
        receiver.close()


def _bind_udp(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # root may exceed net.core.rmem_max: every datagram must fit until it is drained
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, UDP_RCVBUF_BYTES)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF_BYTES)
    sock.bind((address, port))
    return sock


def _send_udp(address: str, port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            sock.sendto(UDP_PAYLOAD, (address, port))
            time.sleep(0)  # let the receiver keep up; the socket buffer is large anyway


def _drain_udp(sock: socket.socket, count: int) -> int:
    received = 0
    sock.settimeout(UDP_DRAIN_S)
    while received < count:
        try:
            sock.recv(len(UDP_PAYLOAD))
        except TimeoutError:
            break
        received += 1
    return received
