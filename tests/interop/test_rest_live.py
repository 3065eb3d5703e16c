"""Live REST changes against the real Linux NVMe/TCP host, in ONE boot with host actions.

dpu-emu runs with its REST API on a free port (administrator token from DPU_EMU_ADMIN_TOKEN).
Before the boot the test provisions over REST: a subsystem that admits only another host
(allow_any_host false), and a subsystem with two namespaces shared by two tenants, each tenant
granted one of them for its own host NQN. The guest (guest/lib/rest_checks.sh):
connects to the default subsystem; asks the host to add namespace 2 over REST and sees its block
device appear in `nvme list` with the same controller (the kernel rescans on the Namespace
Attribute Changed event, no reconnect); asks the host to remove it and sees it vanish; fails to
connect to the locked subsystem; connects to the shared subsystem as tenant B's host and lists
only B's namespace, then as tenant A's host and lists only A's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import httpx
import pytest

from testbeds.linux_host import config as vm_config
from testbeds.linux_host import vm
from testbeds.linux_host.checks import REST_CHECKS, TargetParams, rest_script
from testbeds.linux_host.host_actions import HostActions

from .dpu_emu_proc import DPU_EMU_NQN, DpuEmuProcess, assert_clean_log, default_config, require_dpu_emu
from .rest_session import RestServer, assert_guest_completed, called, rest_server
from .support import GuestChecks, assert_check, run_checks_in_guest

pytestmark = pytest.mark.interop

GUEST_TIMEOUT_S: Final[float] = 240.0
NAMESPACE_BYTES: Final[int] = 64 * 1024 * 1024
ADD_NSID: Final[int] = 2
ADMIN_TOKEN: Final[str] = "dpuadm_interop-rest-live-0123456789abcdef"
LOCKED_NQN: Final[str] = "nqn.2026-11.io.dpu-emu:locked"
TENANT_NQN: Final[str] = "nqn.2026-11.io.dpu-emu:shared"
OTHER_HOST: Final[str] = "nqn.2014-08.org.nvmexpress:uuid:99999999-9999-4999-8999-999999999999"
HOSTID_A: Final[str] = "a0a0a0a0-1111-4111-8111-111111111111"
HOSTID_B: Final[str] = "b0b0b0b0-2222-4222-8222-222222222222"
HOSTNQN_A: Final[str] = f"nqn.2014-08.org.nvmexpress:uuid:{HOSTID_A}"
HOSTNQN_B: Final[str] = f"nqn.2014-08.org.nvmexpress:uuid:{HOSTID_B}"
TENANT_A_NSID: Final[int] = 1
TENANT_B_NSID: Final[int] = 2
HTTP_CREATED: Final[int] = 201
HTTP_NO_CONTENT: Final[int] = 204


def provision(client: httpx.Client) -> None:
    """The locked subsystem and the two tenants of the shared one, over REST."""
    called(client.post("/v1/subsystems", json={"nqn": LOCKED_NQN, "allow_any_host": False,
                                                "hosts": [OTHER_HOST]}), HTTP_CREATED)
    called(client.post(f"/v1/subsystems/{LOCKED_NQN}/namespaces", json={"size_bytes": NAMESPACE_BYTES}),
           HTTP_CREATED)
    called(client.post("/v1/subsystems", json={"nqn": TENANT_NQN, "allow_any_host": True}), HTTP_CREATED)
    for nsid in (TENANT_A_NSID, TENANT_B_NSID):
        called(client.post(f"/v1/subsystems/{TENANT_NQN}/namespaces",
                           json={"nsid": nsid, "size_bytes": NAMESPACE_BYTES}), HTTP_CREATED)
    for name, host, nsid in (("tenant-a", HOSTNQN_A, TENANT_A_NSID), ("tenant-b", HOSTNQN_B, TENANT_B_NSID)):
        called(client.post("/v1/tenants", json={"name": name, "hosts": [host],
                                                "namespaces": [{"subsystem": TENANT_NQN, "nsid": nsid}]}),
               HTTP_CREATED)


@pytest.fixture(scope="module")
def rest_live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    require_dpu_emu()
    work = tmp_path_factory.mktemp("dpu-emu-rest-live")
    config = default_config()
    subsystem = config["subsystems"][0]
    assert subsystem["nqn"] == DPU_EMU_NQN
    subsystem["namespaces"] = [{"nsid": 1, "size_bytes": NAMESPACE_BYTES, "block_size": 512,
                                "backend": {"kind": "ram"}}]
    with rest_server(DpuEmuProcess(work / "serve.log", config=config, rest_token=ADMIN_TOKEN), ADMIN_TOKEN) as srv:
        provision(srv.client)
        yield srv


@pytest.fixture(scope="module")
def rest_run(rest_live_server: RestServer, linux_host_image: vm.ImagePaths) -> tuple[GuestChecks, HostActions]:
    server, client = rest_live_server.process, rest_live_server.client
    ns_path = f"/v1/subsystems/{DPU_EMU_NQN}/namespaces"
    actions = HostActions({
        "add-namespace": lambda: called(client.post(ns_path, json={"nsid": ADD_NSID,
                                                                   "size_bytes": NAMESPACE_BYTES}), HTTP_CREATED),
        "remove-namespace": lambda: called(client.delete(f"{ns_path}/{ADD_NSID}"), HTTP_NO_CONTENT),
    })
    target = TargetParams(
        address=vm_config.HOST_ADDRESS_FROM_GUEST, io_port=server.io_port,
        discovery_port=server.discovery_port, subnqn=DPU_EMU_NQN,
        extra={"ADD_NSID": str(ADD_NSID), "LOCKED_NQN": LOCKED_NQN, "TENANT_NQN": TENANT_NQN,
               "HOSTNQN_A": HOSTNQN_A, "HOSTID_A": HOSTID_A, "TENANT_A_NSID": str(TENANT_A_NSID),
               "HOSTNQN_B": HOSTNQN_B, "HOSTID_B": HOSTID_B, "TENANT_B_NSID": str(TENANT_B_NSID)},
    )
    checks = run_checks_in_guest(rest_script(target), timeout=GUEST_TIMEOUT_S, on_line=actions)
    print(f"[interop] host actions:\n{actions.summary()}")
    return checks, actions


@pytest.mark.parametrize("check", REST_CHECKS)
def test_check(rest_run: tuple[GuestChecks, HostActions], rest_live_server: RestServer, check: str) -> None:
    assert_check(rest_run[0], check, more=f"dpu-emu log: {rest_live_server.process.log_path}")


def test_guest_completed_all_checks(rest_run: tuple[GuestChecks, HostActions]) -> None:
    assert_guest_completed(rest_run[0], REST_CHECKS)


def test_host_actions_ran_once_each(rest_run: tuple[GuestChecks, HostActions]) -> None:
    (result, _), actions = rest_run
    assert not result.handler_errors, result.handler_errors
    assert not actions.ignored, actions.ignored
    assert [(r.name, r.status) for r in actions.records] == [("add-namespace", 0), ("remove-namespace", 0)], (
        actions.summary()
    )


def test_rest_state_after_the_boot(rest_run: tuple[GuestChecks, HostActions], rest_live_server: RestServer) -> None:
    """The removed namespace is gone from the model; the guest's controllers are closed."""
    client = rest_live_server.client
    assert [n["nsid"] for n in client.get(f"/v1/subsystems/{DPU_EMU_NQN}/namespaces").json()] == [1]
    stats = client.get("/v1/stats").json()
    assert any(n["read"]["ops"] > 0 for n in stats["namespaces"] if n["subsystem"] == DPU_EMU_NQN)


def test_dpu_emu_log_is_clean(rest_run: tuple[GuestChecks, HostActions], rest_live_server: RestServer) -> None:
    server = rest_live_server.process
    print(server.stop())
    assert server.last_exit == 0, server.log_tail()
    assert_clean_log(server)
