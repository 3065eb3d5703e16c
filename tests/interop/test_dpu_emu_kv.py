"""NVMe-KV from the real Linux host: dpu-emu's default config, namespace 2 (CSI 01h), in ONE boot.

The kernel must expose the KV namespace only as the generic char device /dev/ngXnY (no block
device; it logs "block device for nsid 2 not supported (csi 1)"); the guest drives it with
`nvme io-passthru` (guest/lib/kv_checks.sh): Store a 4 KiB random value under a 16-byte key
(key bytes in CDW2/CDW3/CDW14/CDW15), Retrieve it and compare bytes (also into a 1 KiB buffer:
the value's start, DW0 = the whole size), Exist on a present key (success) and an absent one
(status 0x87), Store options "must not exist" on a present key (0x89) and "must exist" on an
absent one (0x87), List (u32 count + keys), Store with key length 17 (status 0x86), Delete then
Exist / Retrieve (0x87). The host parses the List buffer summary the
guest reports and compares it with the keys it chose. dpu-emu's log has no ERROR or Traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

import pytest

from testbeds.linux_host import config as vm_config
from testbeds.linux_host import vm
from testbeds.linux_host.checks import KV_CHECKS, TargetParams, kv_script

from .dpu_emu_proc import DPU_EMU_NQN, DpuEmuProcess, assert_clean_log, default_config, require_dpu_emu
from .support import GuestChecks, assert_check, run_checks_in_guest

pytestmark = pytest.mark.interop

GUEST_TIMEOUT_S: Final[float] = 240.0
KV_NSID: Final[int] = 2
KV_CSI: Final[str] = "kv"
KEY: Final[str] = "dpu-emu-kv-key-1"
SHORT_KEY: Final[str] = "short"
ABSENT_KEY: Final[str] = "no-such-key"
VALUE_BYTES: Final[int] = 4096
STATUS_INVALID_KEY_SIZE: Final[int] = 0x86
STATUS_KEY_DOES_NOT_EXIST: Final[int] = 0x87
STATUS_KEY_EXISTS: Final[int] = 0x89
_LIST = re.compile(r"^count=(\d+) keys=([0-9a-f,]*)$")
_STATUS = re.compile(r"status=(0x[0-9a-f]+) dnr=([01])")


@pytest.fixture(scope="module")
def kv_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DpuEmuProcess]:
    require_dpu_emu()
    namespaces = default_config()["subsystems"][0]["namespaces"]
    kv = [ns for ns in namespaces if ns["nsid"] == KV_NSID]
    if not kv or kv[0].get("command_set") != KV_CSI:
        pytest.fail(f"the default config has no KV namespace {KV_NSID}: {namespaces}", pytrace=False)
    server = DpuEmuProcess(tmp_path_factory.mktemp("dpu-emu-kv") / "serve.log")  # default config
    try:
        print(f"\n[interop] {server.start()}; log {server.log_path}")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def kv_run(kv_server: DpuEmuProcess, linux_host_image: vm.ImagePaths) -> GuestChecks:
    target = TargetParams(
        address=vm_config.HOST_ADDRESS_FROM_GUEST, io_port=kv_server.io_port,
        discovery_port=kv_server.discovery_port, subnqn=DPU_EMU_NQN,
        extra={"KV_NSID": str(KV_NSID), "KV_KEY": KEY, "KV_KEY2": SHORT_KEY,
               "KV_ABSENT_KEY": ABSENT_KEY, "KV_VALUE_BYTES": str(VALUE_BYTES),
               "KV_EXPECT_KEYS": "2"},
    )
    return run_checks_in_guest(kv_script(target), timeout=GUEST_TIMEOUT_S)


def _detail(run: GuestChecks, name: str) -> str:
    assert_check(run, name)
    return run[1].results[name].detail


def _listed(run: GuestChecks, name: str) -> tuple[int, list[bytes]]:
    detail = _detail(run, name)
    match = _LIST.match(detail)
    assert match, f"{name}: unexpected detail {detail!r}"
    keys = [bytes.fromhex(k) for k in match.group(2).split(",") if k]
    return int(match.group(1)), keys


@pytest.mark.parametrize("check", KV_CHECKS)
def test_check(kv_run: GuestChecks, kv_server: DpuEmuProcess, check: str) -> None:
    assert_check(kv_run, check, more=f"dpu-emu log: {kv_server.log_path}")


def test_guest_completed_all_checks(kv_run: GuestChecks) -> None:
    result, report = kv_run
    assert report.complete, f"no CHECKS-DONE line; console log: {result.log_path}"
    assert sorted(report.results) == sorted(KV_CHECKS)
    assert result.exit_status == 0, f"guest script exit {result.exit_status}: {report.summary()}"


def test_kernel_refuses_a_block_device_for_the_kv_namespace(kv_run: GuestChecks) -> None:
    detail = _detail(kv_run, "kv-no-block-device")
    assert f"block device for nsid {KV_NSID} not supported (csi 1)" in detail, detail


def test_list_returns_the_stored_keys(kv_run: GuestChecks) -> None:
    """Host-side parse of the List buffer: u32 count, then (u16 length, key, pad to 4) entries."""
    count, keys = _listed(kv_run, "kv-list")
    assert count == len(keys) == 2
    assert sorted(keys) == sorted([KEY.encode(), SHORT_KEY.encode()])
    count_from, keys_from = _listed(kv_run, "kv-list-from-key")
    assert count_from == len(keys_from) >= 1 and KEY.encode() in keys_from


@pytest.mark.parametrize(
    ("check", "status"),
    [
        ("kv-exist-absent", STATUS_KEY_DOES_NOT_EXIST),
        ("kv-store-no-overwrite", STATUS_KEY_EXISTS),
        ("kv-store-must-exist", STATUS_KEY_DOES_NOT_EXIST),
        ("kv-invalid-key-size", STATUS_INVALID_KEY_SIZE),
        ("kv-exist-after-delete", STATUS_KEY_DOES_NOT_EXIST),
        ("kv-retrieve-after-delete", STATUS_KEY_DOES_NOT_EXIST),
    ],
)
def test_kv_error_status(kv_run: GuestChecks, check: str, status: int) -> None:
    match = _STATUS.search(_detail(kv_run, check))
    assert match, _detail(kv_run, check)
    assert int(match.group(1), 16) == status


def test_dpu_emu_log_is_clean(kv_run: GuestChecks, kv_server: DpuEmuProcess) -> None:
    print(kv_server.stop())
    assert kv_server.last_exit == 0, kv_server.log_tail()
    assert_clean_log(kv_server)
