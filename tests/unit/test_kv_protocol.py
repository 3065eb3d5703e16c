"""NVMe-KV wire facts (KV command set spec 1.0, as xNVMe and SPDK lay it out): key
placement, List data format, KV Identify offsets, status codes."""

from __future__ import annotations

import struct

import pytest

from nvmeof import errors
from nvmeof.controller import identify as idf
from nvmeof.controller import kv
from nvmeof.wire.constants import KvOpcode, KvStatus
from nvmeof.wire.queue_entry import SQE


def sqe_with_key(cdw2: int, cdw3: int, cdw14: int, cdw15: int) -> tuple:
    return SQE.struct.unpack(SQE.pack(opcode=KvOpcode.STORE, cdw2=cdw2, cdw3=cdw3, cdw14=cdw14, cdw15=cdw15))


def test_sixteen_byte_key_uses_both_halves_little_endian_per_dword() -> None:
    key = bytes(range(16))
    assert kv.key_to_dwords(key) == (0x03020100, 0x07060504, 0x0B0A0908, 0x0F0E0D0C)
    assert kv.key_from_sqe(sqe_with_key(0x03020100, 0x07060504, 0x0B0A0908, 0x0F0E0D0C), 16) == key


def test_one_byte_key_is_the_low_byte_of_cdw2() -> None:
    assert kv.key_to_dwords(b"\xab") == (0xAB, 0, 0, 0)
    assert kv.key_from_sqe(sqe_with_key(0xDDCCBBAB, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), 1) == b"\xab"


def test_nine_byte_key_spills_into_cdw14() -> None:
    key = b"ABCDEFGHI"
    assert kv.key_to_dwords(key) == (0x44434241, 0x48474645, 0x49, 0)


def test_key_longer_than_sixteen_bytes_is_refused_by_the_host_encoder() -> None:
    with pytest.raises(ValueError):
        kv.key_to_dwords(bytes(17))


def test_list_buffer_format() -> None:
    """u32 number of keys, then per key: u16 length, key bytes, zero pad to a dword."""
    expected = (struct.pack("<I", 2)
                + struct.pack("<H", 1) + b"a" + b"\0"
                + struct.pack("<H", 5) + b"hello" + b"\0")
    assert kv.pack_list([b"a", b"hello"], 64) == expected
    assert kv.unpack_list(expected) == [b"a", b"hello"]


def test_list_stops_before_an_entry_that_does_not_fit() -> None:
    keys = [b"k1", b"k2", b"k3"]
    data = kv.pack_list(keys, 4 + 4 + 4 + 3)  # room for two 4-byte entries and 3 spare bytes
    assert kv.unpack_list(data) == [b"k1", b"k2"]
    assert kv.pack_list(keys, 3) == b""  # not even the count fits


def test_kv_identify_namespace_offsets() -> None:
    layout = idf.ID_NS_KV
    assert layout.size == 4096
    expected = {"nsze": 0, "nuse": 16, "nsfeat": 24, "nkvf": 25, "nmic": 26, "novg": 32, "anagrpid": 36,
                "nguid": 48, "eui64": 64, "kvf0_kvkml": 72, "kvf0_kvvml": 76, "kvf0_mnks": 80}
    assert {name: layout.offset_of(name) for name in expected} == expected
    assert idf.KV_FORMAT.size == 16
    assert idf.ID_CTRL_KV.offset_of("ver") == 0


def test_kv_opcodes_and_status_codes_are_the_specs() -> None:
    assert {op.name: op.value for op in KvOpcode} == {
        "STORE": 0x01, "RETRIEVE": 0x02, "LIST": 0x06, "DELETE": 0x10, "EXIST": 0x14}
    assert {s.name: s.value for s in KvStatus} == {
        "CAPACITY_EXCEEDED": 0x81, "NAMESPACE_NOT_READY": 0x82, "RESERVATION_CONFLICT": 0x83,
        "FORMAT_IN_PROGRESS": 0x84, "INVALID_VALUE_SIZE": 0x85, "INVALID_KEY_SIZE": 0x86,
        "KEY_DOES_NOT_EXIST": 0x87, "UNRECOVERED_ERROR": 0x88, "KEY_EXISTS": 0x89}


@pytest.mark.parametrize(("cls", "sc"), [
    (errors.KvCapacityExceeded, 0x81), (errors.KvInvalidValueSize, 0x85), (errors.KvInvalidKeySize, 0x86),
    (errors.KvKeyDoesNotExist, 0x87), (errors.KvUnrecoveredError, 0x88), (errors.KvKeyExists, 0x89)])
def test_kv_status_round_trips_to_its_error_class(cls: type[errors.NvmeStatus], sc: int) -> None:
    status = cls().status
    assert (status >> 1) & 0xFF == sc and (status >> 9) & 0x7 == 0
    assert type(errors.status_error(status, kv=True)) is cls
    # the same SCT 0 code in the NVM command set means something else (or nothing)
    assert type(errors.status_error(status)) is not cls
