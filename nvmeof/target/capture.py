"""Per-listener packet capture: the bytes each connection receives and sends, as a pcap.

Theory of operation
-------------------
The edge hands every received read and every batch of sent pieces of a connection to
its :class:`TcpStream`; the stream wraps them in synthetic IPv4/IPv6 + TCP headers
(libpcap classic format, LINKTYPE_RAW) with consistent per-direction sequence and
acknowledgement numbers, after a synthetic SYN / SYN-ACK / ACK, and FINs when the
connection ends, so Wireshark reassembles the TCP stream and decodes NVMe/TCP.  Payloads
larger than one IP packet may carry are split.  Records go through one buffered file
(written with large writes, not one syscall per packet); the file is bounded in bytes
and packets: when the next packet would cross a bound, capture stops and says so.  A
connection that started before the capture begins with a synthetic handshake at that
point (mid-stream: the first PDU may be cut).  Capture off costs the edge one ``None``
test per read and per write.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps
PCAP_VERSION = (2, 4)
LINKTYPE_RAW = 101  # the packet starts with an IPv4 or IPv6 header
SNAPLEN = 262144
PCAP_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
IPV6_HEADER = struct.Struct("!IHBB16s16s")
TCP_HEADER = struct.Struct("!HHIIBBHHH")
IP_MAX_PACKET = 65535
MAX_SEGMENT = IP_MAX_PACKET - IPV4_HEADER.size - TCP_HEADER.size  # 65495 payload bytes per packet
IPV4_VERSION_IHL = 0x45
IPV4_DONT_FRAGMENT = 0x4000
IPV6_VERSION_WORD = 6 << 28
IPPROTO_TCP = 6
TTL = 64
TCP_DATA_OFFSET = (TCP_HEADER.size // 4) << 4
TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x08, 0x10
TCP_WINDOW = 65535
DEFAULT_MAX_BYTES = 256 << 20
DEFAULT_MAX_PACKETS = 1_000_000
WRITE_BUFFER = 1 << 20
FILE_MODE = 0o640


def _checksum16(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text.split("%")[0])  # drop an IPv6 zone ("fe80::1%eth0")
    except ValueError:  # not an IP socket: an unspecified address keeps the file decodable
        return ipaddress.IPv4Address(0)


def _as_v6(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    return addr if isinstance(addr, ipaddress.IPv6Address) else ipaddress.IPv6Address(f"::ffff:{addr}")


@dataclass
class CaptureStatus:
    file: str
    active: bool
    packets: int
    bytes: int
    truncated: bool
    max_bytes: int
    max_packets: int
    connections: int
    started_at: float
    stopped_reason: str | None


class ListenerCapture:
    """One pcap file fed by every connection of one listener."""

    def __init__(self, path: str, *, name: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_packets: int = DEFAULT_MAX_PACKETS, clock: Callable[[], float] = time.time) -> None:
        if max_bytes < PCAP_HEADER.size + RECORD_HEADER.size or max_packets < 1:
            raise ValueError("max_bytes must leave room for a packet and max_packets be positive")
        # O_NOFOLLOW: a symlink planted at the name is refused, never followed
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        self._file = os.fdopen(fd, "wb", buffering=WRITE_BUFFER)
        self.name = name
        self.max_bytes = max_bytes
        self.max_packets = max_packets
        self.clock = clock
        self.started_at = clock()
        self.packets = 0
        self.bytes = PCAP_HEADER.size
        self.truncated = False
        self.active = True
        self.stopped_reason: str | None = None
        self.connections = 0
        self._isn = itertools.count(0x1000_0000, 0x0100_0000)
        self._file.write(PCAP_HEADER.pack(PCAP_MAGIC, *PCAP_VERSION, 0, 0, SNAPLEN, LINKTYPE_RAW))

    def status(self) -> CaptureStatus:
        return CaptureStatus(file=self.name, active=self.active, packets=self.packets, bytes=self.bytes,
                             truncated=self.truncated, max_bytes=self.max_bytes, max_packets=self.max_packets,
                             connections=self.connections, started_at=self.started_at,
                             stopped_reason=self.stopped_reason)

    def stream(self, client: tuple[str, int], server: tuple[str, int]) -> TcpStream | None:
        """A capture for one connection (``client`` = the host), or None once stopped."""
        if not self.active:
            return None
        self.connections += 1
        return TcpStream(self, client, server, next(self._isn), next(self._isn))

    def write(self, packet: bytes, payload: bytes | memoryview = b"") -> bool:
        size = len(packet) + len(payload)
        record = RECORD_HEADER.size + size
        if not self.active:
            return False
        if self.packets + 1 > self.max_packets or self.bytes + record > self.max_bytes:
            self.truncated = True
            self.stop("limit reached")
            return False
        now = self.clock()
        sec = int(now)
        self._file.write(RECORD_HEADER.pack(sec, int((now - sec) * 1_000_000), size, size))
        self._file.write(packet)
        if payload:
            self._file.write(payload)
        self.packets += 1
        self.bytes += record
        return True

    def stop(self, reason: str = "stopped") -> CaptureStatus:
        """Flush and close the file (idempotent)."""
        if self.active:
            self.active = False
            self.stopped_reason = reason
            self._file.close()
        return self.status()


class TcpStream:
    """One connection's two directions as TCP segments in ``capture``."""

    __slots__ = ("capture", "_client", "_server", "_c_seq", "_s_seq", "_v6", "_ip_id")

    def __init__(self, capture: ListenerCapture, client: tuple[str, int], server: tuple[str, int],
                 client_isn: int, server_isn: int) -> None:
        self.capture = capture
        c_addr, s_addr = _address(client[0]), _address(server[0])
        self._v6 = c_addr.version == 6 or s_addr.version == 6
        if self._v6:  # one IPv4 end on an IPv6 socket: both as IPv4-mapped IPv6
            c_addr, s_addr = _as_v6(c_addr), _as_v6(s_addr)
        self._client = (c_addr.packed, int(client[1]))
        self._server = (s_addr.packed, int(server[1]))
        self._ip_id = zlib.crc32(self._client[0] + self._server[0]) & 0xFFFF
        self._c_seq = client_isn
        self._s_seq = server_isn
        self._segment(True, TCP_SYN, b"")
        self._c_seq += 1
        self._segment(False, TCP_SYN | TCP_ACK, b"")
        self._s_seq += 1
        self._segment(True, TCP_ACK, b"")

    def received(self, data: bytes | memoryview) -> None:
        """Bytes the target received from the host."""
        self._data(True, data)

    def sent(self, pieces: Iterable[bytes | memoryview]) -> None:
        """Bytes the target sent to the host (one write's pieces)."""
        self._data(False, b"".join(pieces))

    def closed(self) -> None:
        self._segment(True, TCP_FIN | TCP_ACK, b"")
        self._c_seq += 1
        self._segment(False, TCP_FIN | TCP_ACK, b"")
        self._s_seq += 1
        self._segment(True, TCP_ACK, b"")

    def _data(self, from_client: bool, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for offset in range(0, len(view), MAX_SEGMENT):
            chunk = view[offset:offset + MAX_SEGMENT]
            if not self._segment(from_client, TCP_PSH | TCP_ACK, chunk):
                return
            if from_client:
                self._c_seq = (self._c_seq + len(chunk)) & 0xFFFFFFFF
            else:
                self._s_seq = (self._s_seq + len(chunk)) & 0xFFFFFFFF

    def _segment(self, from_client: bool, flags: int, payload: bytes | memoryview) -> bool:
        src, dst = (self._client, self._server) if from_client else (self._server, self._client)
        seq, ack = (self._c_seq, self._s_seq) if from_client else (self._s_seq, self._c_seq)
        if not flags & TCP_ACK:
            ack = 0
        tcp = TCP_HEADER.pack(src[1], dst[1], seq, ack, TCP_DATA_OFFSET, flags, TCP_WINDOW, 0, 0)
        length = len(tcp) + len(payload)
        if self._v6:
            ip = IPV6_HEADER.pack(IPV6_VERSION_WORD, length, IPPROTO_TCP, TTL, src[0], dst[0])
        else:
            self._ip_id = (self._ip_id + 1) & 0xFFFF
            fields = [IPV4_VERSION_IHL, 0, IPV4_HEADER.size + length, self._ip_id, IPV4_DONT_FRAGMENT, TTL,
                      IPPROTO_TCP, 0, src[0], dst[0]]
            fields[7] = _checksum16(IPV4_HEADER.pack(*fields))
            ip = IPV4_HEADER.pack(*fields)
        return self.capture.write(ip + tcp, payload)
