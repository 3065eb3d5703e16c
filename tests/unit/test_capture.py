"""The pcap writer of per-listener capture: libpcap classic records with synthetic IP/TCP
headers whose sequence numbers follow each direction's bytes; bounded; decoded here with
offsets from the libpcap file format, RFC 791, RFC 8200 and RFC 9293 (not our encoder)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nvmeof.target.capture import ListenerCapture

IP_MAX_PACKET = 65535
SYN, ACK, FIN, PSH = 0x02, 0x10, 0x01, 0x08


def records(path: Path) -> tuple[int, list[bytes]]:
    data = path.read_bytes()
    magic, major, minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack_from("<IHHiIII", data, 0)
    assert (magic, major, minor) == (0xA1B2C3D4, 2, 4)
    out, pos = [], 24
    while pos < len(data):
        _sec, _usec, incl, orig = struct.unpack_from("<IIII", data, pos)
        assert incl == orig
        out.append(data[pos + 16:pos + 16 + incl])
        pos += 16 + incl
    assert pos == len(data)
    return linktype, out


def tcp_of(packet: bytes) -> tuple[int, int, int, int, int, bytes]:
    """-> (sport, dport, seq, ack, flags, payload) of an IPv4 or IPv6 packet."""
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0xF) * 4
        (total,) = struct.unpack_from("!H", packet, 2)
        assert total == len(packet) <= IP_MAX_PACKET and packet[9] == 6
        tcp = packet[ihl:]
    else:
        assert version == 6 and packet[6] == 6
        (payload_len,) = struct.unpack_from("!H", packet, 4)
        assert payload_len == len(packet) - 40 <= IP_MAX_PACKET
        tcp = packet[40:]
    sport, dport, seq, ack, offset, flags = struct.unpack_from("!HHIIBB", tcp, 0)
    return sport, dport, seq, ack, flags, tcp[(offset >> 4) * 4:]


@pytest.mark.parametrize("client,server", [(("127.0.0.2", 40000), ("127.0.0.1", 4420)),
                                           (("::1", 40000), ("::1", 4420)),
                                           (("127.0.0.2", 40000), ("::", 4420))])
def test_stream_handshake_data_and_fin(tmp_path: Path, client: tuple[str, int], server: tuple[str, int]) -> None:
    cap = ListenerCapture(str(tmp_path / "c.pcap"), name="c.pcap")
    stream = cap.stream(client, server)
    assert stream is not None
    big = bytes(range(256)) * 800  # 204800 bytes: split into IP-sized segments
    stream.received(b"hello")
    stream.sent([b"wor", memoryview(b"ld")])
    stream.received(big)
    stream.closed()
    status = cap.stop()
    linktype, packets = records(tmp_path / "c.pcap")
    assert linktype == 101 and status.packets == len(packets)
    segs = [tcp_of(p) for p in packets]
    assert [s[4] for s in segs[:3]] == [SYN, SYN | ACK, ACK]
    c_isn, s_isn = segs[0][2], segs[1][2]
    assert segs[1][3] == c_isn + 1 and segs[2][3] == s_isn + 1
    to_server = b"".join(s[5] for s in segs if s[1] == 4420)
    to_client = b"".join(s[5] for s in segs if s[0] == 4420)
    assert to_server == b"hello" + big and to_client == b"world"
    c_next = c_isn + 1
    for sport, _dport, seq, _ack, _flags, payload in segs[3:]:
        if sport == 40000 and payload:
            assert seq == c_next
            c_next += len(payload)
    assert max(len(p) for p in packets) <= IP_MAX_PACKET + 40
    assert [s[4] & FIN for s in segs[-3:]] == [FIN, FIN, 0]


def test_capture_stops_at_its_bound(tmp_path: Path) -> None:
    cap = ListenerCapture(str(tmp_path / "b.pcap"), name="b.pcap", max_bytes=4096)
    stream = cap.stream(("127.0.0.1", 1), ("127.0.0.1", 2))
    assert stream is not None
    for _ in range(100):
        stream.received(bytes(500))
    status = cap.status()
    assert status.truncated and not status.active and status.stopped_reason == "limit reached"
    assert (tmp_path / "b.pcap").stat().st_size == status.bytes <= 4096
    assert cap.stream(("127.0.0.1", 3), ("127.0.0.1", 2)) is None
    assert len(records(tmp_path / "b.pcap")[1]) == status.packets


def test_capture_refuses_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "link.pcap").symlink_to(victim)
    with pytest.raises(OSError):
        ListenerCapture(str(tmp_path / "link.pcap"), name="link.pcap")
    assert victim.read_text() == "keep"
