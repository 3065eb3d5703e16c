"""DHHC-1 secrets and the key transform, against nvme-cli 2.3 (``nvme gen-dhchap-key`` /
``nvme check-dhchap-key``) as the independent oracle."""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
import zlib

import pytest

from nvmeof.auth import DhchapKey, SecretError
from nvmeof.auth.secret import TRANSFORM_NONE

NQN = "nqn.2014-08.org.nvmexpress:uuid:test"
# `nvme gen-dhchap-key --secret=<bytes 0..n-1 in hex> -l n --hmac=h --nqn=NQN` (nvme-cli 2.3):
# with h != 0 nvme-cli prints the key already transformed, HMAC_h(secret, NQN || "NVMe-over-Fabrics")
NVME_CLI_KEYS = [
    (0, 32, "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:"),
    (1, 32, "DHHC-1:01:WulleCBkG4oCs0iIC3Cit9gBDCLWiZ9PNXuhqytWkBIZkvGy:"),
    (2, 48, "DHHC-1:02:JzC2BNNCN092uBY9oK1bbG/xrkLudbjqzPRjAtH00YqVJN1+2TpCZUPYxrwS09Qxpo/5Jw==:"),
    (3, 64, "DHHC-1:03:d9FmVEvkZD5WUqUkzVMj3JFzwudZt1EtUNK4zK6+E9Dd42mroGA4ub4Yju0aNPtAr2w0xZFyCxz8d1Q12rImDko3x34=:"),
]
NVME = shutil.which("nvme")


@pytest.mark.parametrize(("transform", "length", "text"), NVME_CLI_KEYS)
def test_nvme_cli_keys_parse_and_transform(transform: int, length: int, text: str) -> None:
    key = DhchapKey.parse(text)
    assert key.transform == transform
    assert len(key.key) == length
    assert key.format() == text  # same base64 and CRC as nvme-cli
    raw = DhchapKey(bytes(range(length)), transform)
    expected = raw.key if transform == TRANSFORM_NONE else raw.transformed(NQN)
    assert key.key == expected


def test_transform_none_is_identity() -> None:
    key = DhchapKey(bytes(range(32)))
    assert key.transformed(NQN) == bytes(range(32))


def _encode(key: bytes, crc: int | None = None, prefix: str = "DHHC-1:01:") -> str:
    crc = zlib.crc32(key) if crc is None else crc
    return prefix + base64.b64encode(key + struct.pack("<I", crc)).decode() + ":"


@pytest.mark.parametrize("text", [
    "",
    "DHHC-2:01:AAAA:",
    "DHHC-1:1:" + base64.b64encode(bytes(36)).decode() + ":",
    "DHHC-1:04:" + base64.b64encode(bytes(32) + struct.pack("<I", zlib.crc32(bytes(32)))).decode() + ":",
    _encode(bytes(32), crc=1),  # CRC mismatch
    _encode(bytes(31)),  # bad length
    _encode(bytes(40)),
    "DHHC-1:01:not*base64!:",
    "DHHC-1:01:" + base64.b64encode(bytes(36)).decode() + ":extra",
])
def test_malformed_secrets_refused_without_echo(text: str) -> None:
    with pytest.raises(SecretError) as info:
        DhchapKey.parse(text)
    payload = text.split(":")[2] if text.count(":") >= 2 else ""
    if len(payload) > 8:
        assert payload not in str(info.value)


def test_trailing_colon_optional_and_repr_hides_key() -> None:
    text = NVME_CLI_KEYS[1][2]
    key = DhchapKey.parse(text.rstrip(":"))
    assert key == DhchapKey.parse(text)
    secret_b64 = text.split(":")[2]
    for shown in (repr(key), str(key)):
        assert secret_b64 not in shown and key.key.hex() not in shown


@pytest.mark.skipif(NVME is None, reason="nvme-cli not installed")
@pytest.mark.parametrize(("length", "transform"), [(32, 0), (32, 1), (48, 2), (64, 3)])
def test_generated_keys_pass_nvme_check(length: int, transform: int) -> None:
    text = DhchapKey.generate(length, transform).format()
    out = subprocess.run([NVME, "check-dhchap-key", f"--key={text}"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"length {length}" in out.stdout


@pytest.mark.skipif(NVME is None, reason="nvme-cli not installed")
def test_nvme_generated_key_parses() -> None:
    out = subprocess.run([NVME, "gen-dhchap-key", "--hmac=2", "-l", "48", f"--nqn={NQN}"], capture_output=True,
                         text=True, timeout=30, check=True)
    key = DhchapKey.parse(out.stdout.strip())
    assert (key.transform, len(key.key)) == (2, 48)
