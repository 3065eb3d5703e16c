"""Injected faults against the real Linux NVMe/TCP host, in ONE boot with host actions.

dpu-emu runs with its REST API on a free port. The guest (guest/lib/fault_checks.sh) connects
with data digests (nvme connect -G) and, for each fault, asks the host to add it over REST
(POST /v1/faults, count 1, I/O queue reads of namespace 1 only), then shows the kernel's
behaviour: `nvme read` prints the injected status (LBA Out of Range); a read takes at least the
injected delay; a corrupted C2HData digest is logged ("data digest error") and the read retried
with the right data; a dropped I/O connection is recovered ("Successfully reconnected") and the
reads complete. Afterwards the host checks each fault was injected exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import httpx
import pytest

from nvmeof.wire.constants import GenericStatus, NvmOpcode, StatusCodeType
from testbeds.linux_host import config as vm_config
from testbeds.linux_host import vm
from testbeds.linux_host.checks import FAULT_CHECKS, TargetParams, fault_script
from testbeds.linux_host.host_actions import HostActions

from .dpu_emu_proc import DPU_EMU_NQN, DpuEmuProcess, assert_clean_log, default_config, require_dpu_emu
from .rest_session import RestServer, assert_guest_completed, expect, rest_server
from .support import GuestChecks, assert_check, run_checks_in_guest

pytestmark = pytest.mark.interop

GUEST_TIMEOUT_S: Final[float] = 240.0
NAMESPACE_BYTES: Final[int] = 16 * 1024 * 1024
ADMIN_TOKEN: Final[str] = "dpuadm_interop-faults-0123456789abcdef"
DELAY_MS: Final[int] = 1000
DROP_AFTER: Final[int] = 2
DROP_READS: Final[int] = 6
HTTP_CREATED: Final[int] = 201
IO_READS: Final[dict[str, Any]] = {"subsystem": DPU_EMU_NQN, "nsid": 1, "queue": "io", "opcodes": [NvmOpcode.READ]}
FAULTS: Final[dict[str, dict[str, Any]]] = {
    "fault-status": {"type": "status", "count": 1, "match": IO_READS,
                     "params": {"sct": StatusCodeType.GENERIC, "sc": GenericStatus.LBA_OUT_OF_RANGE, "dnr": True}},
    "fault-delay": {"type": "delay", "count": 1, "match": IO_READS, "params": {"delay_ms": DELAY_MS}},
    "fault-digest": {"type": "corrupt_c2h_digest", "count": 1, "match": IO_READS},
    "fault-drop": {"type": "drop_connection", "count": 1, "match": IO_READS,
                   "params": {"after_commands": DROP_AFTER}},
}


@dataclass
class FaultRun:
    checks: GuestChecks
    actions: HostActions
    fault_ids: dict[str, str]


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    require_dpu_emu()
    work = tmp_path_factory.mktemp("dpu-emu-faults")
    config = default_config()
    subsystem = config["subsystems"][0]
    assert subsystem["nqn"] == DPU_EMU_NQN
    subsystem["namespaces"] = [{"nsid": 1, "size_bytes": NAMESPACE_BYTES, "block_size": 512,
                                "backend": {"kind": "ram"}}]
    with rest_server(DpuEmuProcess(work / "serve.log", config=config, rest_token=ADMIN_TOKEN), ADMIN_TOKEN) as srv:
        yield srv


def _adder(client: httpx.Client, name: str, ids: dict[str, str]) -> Callable[[], str]:
    def add() -> str:
        resp = expect(client.post("/v1/faults", json=FAULTS[name]), HTTP_CREATED)
        ids[name] = resp.json()["id"]
        return f"{ids[name]} {FAULTS[name]['type']}"
    return add


@pytest.fixture(scope="module")
def fault_run(fault_server: RestServer, linux_host_image: vm.ImagePaths) -> FaultRun:
    server, client = fault_server.process, fault_server.client
    ids: dict[str, str] = {}
    actions = HostActions({name: _adder(client, name, ids) for name in FAULTS})
    target = TargetParams(
        address=vm_config.HOST_ADDRESS_FROM_GUEST, io_port=server.io_port,
        discovery_port=server.discovery_port, subnqn=DPU_EMU_NQN,
        extra={"FLT_DELAY_MS": str(DELAY_MS), "FLT_DROP_READS": str(DROP_READS),
               "FLT_STATUS_TEXT": "LBA Out of Range"},
    )
    checks = run_checks_in_guest(fault_script(target), timeout=GUEST_TIMEOUT_S, on_line=actions)
    print(f"[interop] host actions:\n{actions.summary()}")
    return FaultRun(checks, actions, ids)


@pytest.mark.parametrize("check", FAULT_CHECKS)
def test_check(fault_run: FaultRun, fault_server: RestServer, check: str) -> None:
    assert_check(fault_run.checks, check, more=f"dpu-emu log: {fault_server.process.log_path}")


def test_guest_completed_all_checks(fault_run: FaultRun) -> None:
    assert_guest_completed(fault_run.checks, FAULT_CHECKS)


def test_host_actions_ran_once_each(fault_run: FaultRun) -> None:
    result, _ = fault_run.checks
    assert not result.handler_errors, result.handler_errors
    assert not fault_run.actions.ignored, fault_run.actions.ignored
    assert [(r.name, r.status) for r in fault_run.actions.records] == [(name, 0) for name in FAULTS], (
        fault_run.actions.summary()
    )


def test_each_fault_was_injected_exactly_once(fault_run: FaultRun, fault_server: RestServer) -> None:
    faults = {f["id"]: f for f in fault_server.client.get("/v1/faults").json()}
    for name, fault_id in fault_run.fault_ids.items():
        fault = faults[fault_id]
        print(f"[interop] {name}: {fault['type']} matched {fault['matched']} injected {fault['injected']}")
        assert (fault["injected"], fault["exhausted"]) == (1, True), (name, fault)
    assert len(fault_run.fault_ids) == len(FAULTS)
    drop = faults[fault_run.fault_ids["fault-drop"]]
    assert drop["matched"] >= DROP_AFTER + 1


def test_dpu_emu_log_is_clean(fault_run: FaultRun, fault_server: RestServer) -> None:
    server = fault_server.process
    print(server.stop())
    assert server.last_exit == 0, server.log_tail()
    assert_clean_log(server)
