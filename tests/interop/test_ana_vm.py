"""ANA multipath against the real Linux host (native NVMe multipath), in ONE boot with host actions.

dpu-emu runs with its REST API; before the boot the test adds a second I/O listener (B) over
REST, and two more subsystems: one with 2 namespaces in ANA groups 1 and 2 (group 2
non-optimized on listener A), one with 300 small RAM namespaces spread over groups 1..3 (group 2
non-optimized, group 3 inaccessible on listener A). The guest (guest/lib/ana_checks.sh) connects
to the default subsystem through both listeners and must get one multipath block device with
two paths, `nvme list-subsys` showing both paths' ANA states; a fio verify job runs while the
guest asks the host ANA_SWITCHES times to switch the optimized path over REST (PUT
/v1/subsystems/{nqn}/ana/1/listeners/{portid}); then `nvme ana-log` must decode the right
groups, states and NSIDs for the subsystems with 1, 2 and 300 namespaces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import httpx
import pytest

from testbeds.linux_host import config as vm_config
from testbeds.linux_host import vm
from testbeds.linux_host.checks import ANA_CHECKS, ANA_SWITCHES, TargetParams, ana_script
from testbeds.linux_host.host_actions import HostActions

from .dpu_emu_proc import LOOPBACK, DpuEmuProcess, assert_clean_log, default_config, free_port, require_dpu_emu
from .rest_session import RestServer, assert_guest_completed, expect, rest_server
from .support import GuestChecks, assert_check, run_checks_in_guest

pytestmark = pytest.mark.interop

GUEST_TIMEOUT_S: Final[float] = 420.0
HTTP_TIMEOUT_S: Final[float] = 30.0
MIB: Final[int] = 1 << 20
NAMESPACE_BYTES: Final[int] = 16 * MIB
SMALL_NAMESPACE_BYTES: Final[int] = 1 * MIB
ADMIN_TOKEN: Final[str] = "dpuadm_interop-ana-0123456789abcdef"
MP_NQN: Final[str] = "nqn.2026-11.io.dpu-emu:ana-multipath"
ANA2_NQN: Final[str] = "nqn.2026-11.io.dpu-emu:ana-two"
ANA300_NQN: Final[str] = "nqn.2026-11.io.dpu-emu:ana-300"
NS300: Final[int] = 300
GROUPS300: Final[int] = 3
PORT_A: Final[int] = 1  # the default configuration's I/O listener
FIO_RUNTIME_S: Final[int] = 30  # the four switches take about 10 s of it under TCG
HTTP_OK: Final[int] = 200
HTTP_CREATED: Final[int] = 201
KERNEL_STATE: Final[dict[str, str]] = {"optimized": "optimized", "non_optimized": "non-optimized",
                                       "inaccessible": "inaccessible"}


@dataclass(frozen=True)
class AnaServer:
    rest: RestServer
    port_b: int
    portid_b: int

    @property
    def process(self) -> DpuEmuProcess:
        return self.rest.process

    @property
    def client(self) -> httpx.Client:
        return self.rest.client


def set_state(client: httpx.Client, nqn: str, grpid: int, portid: int, state: str) -> str:
    expect(client.put(f"/v1/subsystems/{nqn}/ana/{grpid}/listeners/{portid}", json={"state": state}), HTTP_OK)
    return f"{nqn} group {grpid} listener {portid} {state}"


def group300(nsid: int) -> int:
    return (nsid - 1) % GROUPS300 + 1


def summary(groups: list[tuple[int, str, list[int]]]) -> str:
    """What ana_checks.sh's ana_summary prints for these (grpid, kernel state, nsids)."""
    return " ".join(f"{g}={state}:{len(ns)}:{min(ns)}:{max(ns)}:{sum(ns)}" for g, state, ns in groups)


STATES300: Final[dict[int, str]] = {1: "optimized", 2: "non_optimized", 3: "inaccessible"}
EXPECT_ANA1: Final[str] = summary([(1, "optimized", [1])])
EXPECT_ANA2: Final[str] = summary([(1, "optimized", [1]), (2, "non-optimized", [2])])
EXPECT_ANA300: Final[str] = summary([
    (g, KERNEL_STATE[STATES300[g]], [n for n in range(1, NS300 + 1) if group300(n) == g])
    for g in range(1, GROUPS300 + 1)])


def provision(client: httpx.Client, port_b: int) -> int:
    """Listener B, the three subsystems and their ANA states; returns listener B's port id."""
    portid_b = expect(client.post("/v1/listeners", json={"traddr": LOOPBACK, "trsvcid": port_b,
                                                          "discovery": False, "io": True}), HTTP_CREATED).json()["id"]
    for nqn in (MP_NQN, ANA2_NQN, ANA300_NQN):
        expect(client.post("/v1/subsystems", json={"nqn": nqn, "allow_any_host": True}), HTTP_CREATED)
    expect(client.post(f"/v1/subsystems/{MP_NQN}/namespaces", json={"size_bytes": NAMESPACE_BYTES}), HTTP_CREATED)
    for grpid in (1, 2):
        expect(client.post(f"/v1/subsystems/{ANA2_NQN}/namespaces",
                           json={"size_bytes": SMALL_NAMESPACE_BYTES, "ana_group": grpid}), HTTP_CREATED)
    set_state(client, ANA2_NQN, 2, PORT_A, "non_optimized")
    for nsid in range(1, NS300 + 1):
        expect(client.post(f"/v1/subsystems/{ANA300_NQN}/namespaces",
                           json={"nsid": nsid, "size_bytes": SMALL_NAMESPACE_BYTES, "ana_group": group300(nsid)}),
               HTTP_CREATED)
    for grpid, state in STATES300.items():
        set_state(client, ANA300_NQN, grpid, PORT_A, state)
    return int(portid_b)


@pytest.fixture(scope="module")
def ana_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnaServer]:
    require_dpu_emu()
    work = tmp_path_factory.mktemp("dpu-emu-ana")
    server = DpuEmuProcess(work / "serve.log", config=default_config(), rest_token=ADMIN_TOKEN)
    port_b = free_port(exclude=(server.io_port, server.discovery_port, server.rest_port or 0))
    with rest_server(server, ADMIN_TOKEN, timeout=HTTP_TIMEOUT_S) as srv:
        yield AnaServer(srv, port_b, provision(srv.client, port_b))


@pytest.fixture(scope="module")
def ana_run(ana_server: AnaServer, linux_host_image: vm.ImagePaths) -> tuple[GuestChecks, HostActions]:
    client, b = ana_server.client, ana_server.portid_b

    def prefer(first: int, second: int, demoted: str) -> str:
        """The optimized path first (never no usable path), then demote the other one."""
        return "; ".join([set_state(client, MP_NQN, 1, first, "optimized"),
                          set_state(client, MP_NQN, 1, second, demoted)])

    actions = HostActions({
        "prefer-b": lambda: prefer(b, PORT_A, "inaccessible"),
        "prefer-a": lambda: prefer(PORT_A, b, "non_optimized"),
    })
    target = TargetParams(
        address=vm_config.HOST_ADDRESS_FROM_GUEST, io_port=ana_server.process.io_port,
        discovery_port=ana_server.process.discovery_port, subnqn=MP_NQN,
        extra={"PORT_B": str(ana_server.port_b), "SWITCHES": str(ANA_SWITCHES), "FIO_RUNTIME_S": str(FIO_RUNTIME_S),
               "ANA2_NQN": ANA2_NQN, "ANA300_NQN": ANA300_NQN, "NS300": str(NS300),
               "EXPECT_ANA1": EXPECT_ANA1, "EXPECT_ANA2": EXPECT_ANA2, "EXPECT_ANA300": EXPECT_ANA300},
    )
    checks = run_checks_in_guest(ana_script(target), timeout=GUEST_TIMEOUT_S, on_line=actions)
    print(f"[interop] host actions:\n{actions.summary()}")
    return checks, actions


@pytest.mark.parametrize("check", ANA_CHECKS)
def test_check(ana_run: tuple[GuestChecks, HostActions], ana_server: AnaServer, check: str) -> None:
    assert_check(ana_run[0], check, more=f"dpu-emu log: {ana_server.process.log_path}")


def test_guest_completed_all_checks(ana_run: tuple[GuestChecks, HostActions]) -> None:
    assert_guest_completed(ana_run[0], ANA_CHECKS)


def test_host_actions_switched_the_path(ana_run: tuple[GuestChecks, HostActions]) -> None:
    (result, _), actions = ana_run
    assert not result.handler_errors, result.handler_errors
    assert not actions.ignored, actions.ignored
    expected = [("prefer-b" if n % 2 else "prefer-a", 0) for n in range(1, ANA_SWITCHES + 1)]
    assert [(r.name, r.status) for r in actions.records] == expected, actions.summary()


def test_rest_shows_the_final_states(ana_run: tuple[GuestChecks, HostActions], ana_server: AnaServer) -> None:
    body = ana_server.client.get(f"/v1/subsystems/{MP_NQN}/ana").json()
    states = {s["listener"]: s["state"] for s in body["groups"][0]["states"]}
    assert states == {PORT_A: "optimized", ana_server.portid_b: "non_optimized"}


def test_dpu_emu_log_is_clean(ana_run: tuple[GuestChecks, HostActions], ana_server: AnaServer) -> None:
    server = ana_server.process
    print(server.stop())
    assert server.last_exit == 0, server.log_tail()
    assert_clean_log(server)
