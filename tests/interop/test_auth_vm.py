"""DH-HMAC-CHAP judged by the real Linux host (kernel 6.12 nvme-auth, nvme-cli 2.3), in ONE boot.

Before the boot the test provisions over REST a subsystem whose only host entry (the guest's
host NQN) requires authentication: a host secret, a controller secret, hash SHA-256 and group
ffdhe2048.  The guest (guest/lib/auth_checks.sh) is refused without a secret and with a wrong
one, connects with the right secret (unidirectional) and with both secrets (bidirectional) and
moves data each time, rejects a controller that proves a wrong controller secret, then asks the
host to re-provision the entry (SHA-384 + NULL group, SHA-512 + ffdhe3072, SHA-512 + ffdhe8192)
over REST and connects again each time.  dpu-emu's log names the hash and group of every
authenticated queue and never holds a secret.  The ffdhe8192 connect uses a 60 s KATO: under TCG
the guest's 8192-bit DH outlasts the default 5 s, and the target, like nvmet, runs the keep-alive
timer from the Connect (the default KATO ended that exchange after 5 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import httpx
import pytest

from nvmeof.auth import DhchapKey
from testbeds.linux_host import config as vm_config
from testbeds.linux_host import vm
from testbeds.linux_host.checks import AUTH_CHECKS, TargetParams, auth_script
from testbeds.linux_host.host_actions import HostActions

from .dpu_emu_proc import DpuEmuProcess, assert_clean_log, default_config, require_dpu_emu
from .rest_session import RestServer, assert_guest_completed, called, rest_server
from .support import GuestChecks, assert_check, run_checks_in_guest

pytestmark = pytest.mark.interop

GUEST_TIMEOUT_S: Final[float] = 420.0
NAMESPACE_BYTES: Final[int] = 16 * 1024 * 1024
ADMIN_TOKEN: Final[str] = "dpuadm_interop-auth-0123456789abcdef"
AUTH_NQN: Final[str] = "nqn.2026-11.io.dpu-emu:auth"
AUTH_HOSTID: Final[str] = "a5a5a5a5-0000-4000-8000-0000000000a5"
AUTH_HOSTNQN: Final[str] = f"nqn.2014-08.org.nvmexpress:uuid:{AUTH_HOSTID}"
HOST_KEY: Final = DhchapKey(bytes(range(0x10, 0x30)), 1)
CTRL_KEY: Final = DhchapKey(bytes(range(0x40, 0x70)), 2)
WRONG_KEY: Final = DhchapKey(bytes(range(0x80, 0xA0)), 1)
WRONG_CTRL_KEY: Final = DhchapKey(bytes(range(0xA0, 0xD0)), 2)
HOSTS_PATH: Final[str] = f"/v1/subsystems/{AUTH_NQN}/hosts"
HTTP_OK, HTTP_CREATED = 200, 201
# (action, hashes, dhgroups); the first row is the provisioning before the boot
PROFILES: Final = (("initial", ["sha256"], ["ffdhe2048"]), ("use-sha384-null", ["sha384"], ["null"]),
                   ("use-sha512-ffdhe3072", ["sha512"], ["ffdhe3072"]),
                   ("use-sha512-ffdhe8192", ["sha512"], ["ffdhe8192"]))


def _use(client: httpx.Client, hashes: list[str], groups: list[str]) -> str:
    return called(client.patch(f"{HOSTS_PATH}/{AUTH_HOSTNQN}/dhchap",
                               json={"dhchap_hashes": hashes, "dhchap_dhgroups": groups}), HTTP_OK)


def provision(client: httpx.Client) -> None:
    _, hashes, groups = PROFILES[0]
    called(client.post("/v1/subsystems", json={"nqn": AUTH_NQN, "allow_any_host": False}), HTTP_CREATED)
    called(client.post(f"/v1/subsystems/{AUTH_NQN}/namespaces", json={"size_bytes": NAMESPACE_BYTES}),
           HTTP_CREATED)
    called(client.post(HOSTS_PATH, json={"nqn": AUTH_HOSTNQN, "dhchap_key": HOST_KEY.format(),
                                         "dhchap_ctrl_key": CTRL_KEY.format(), "dhchap_hashes": hashes,
                                         "dhchap_dhgroups": groups}), HTTP_CREATED)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    require_dpu_emu()
    work = tmp_path_factory.mktemp("dpu-emu-auth")
    with rest_server(DpuEmuProcess(work / "serve.log", config=default_config(), rest_token=ADMIN_TOKEN),
                     ADMIN_TOKEN) as srv:
        provision(srv.client)
        yield srv


@pytest.fixture(scope="module")
def auth_run(auth_server: RestServer, linux_host_image: vm.ImagePaths) -> tuple[GuestChecks, HostActions]:
    server, client = auth_server.process, auth_server.client
    actions = HostActions({name: (lambda h=hashes, g=groups: _use(client, h, g))
                           for name, hashes, groups in PROFILES[1:]})
    target = TargetParams(
        address=vm_config.HOST_ADDRESS_FROM_GUEST, io_port=server.io_port,
        discovery_port=server.discovery_port, subnqn=AUTH_NQN,
        extra={"AUTH_HOSTNQN": AUTH_HOSTNQN, "AUTH_HOSTID": AUTH_HOSTID, "AUTH_KEY": HOST_KEY.format(),
               "AUTH_CTRL_KEY": CTRL_KEY.format(), "WRONG_KEY": WRONG_KEY.format(),
               "WRONG_CTRL_KEY": WRONG_CTRL_KEY.format()},
    )
    checks = run_checks_in_guest(auth_script(target), timeout=GUEST_TIMEOUT_S, on_line=actions)
    print(f"[interop] host actions:\n{actions.summary()}")
    return checks, actions


@pytest.mark.parametrize("check", AUTH_CHECKS)
def test_check(auth_run: tuple[GuestChecks, HostActions], auth_server: RestServer, check: str) -> None:
    assert_check(auth_run[0], check, more=f"dpu-emu log: {auth_server.process.log_path}")


def test_guest_completed_all_checks(auth_run: tuple[GuestChecks, HostActions]) -> None:
    assert_guest_completed(auth_run[0], AUTH_CHECKS)


def test_host_actions_ran_once_each(auth_run: tuple[GuestChecks, HostActions]) -> None:
    (result, _), actions = auth_run
    assert not result.handler_errors, result.handler_errors
    assert not actions.ignored, actions.ignored
    assert [(r.name, r.status) for r in actions.records] == [(name, 0) for name, _, _ in PROFILES[1:]], (
        actions.summary()
    )


def test_negotiated_profiles_and_no_secret_in_log(auth_run: tuple[GuestChecks, HostActions],
                                                  auth_server: RestServer) -> None:
    """The controller's log names each profile the kernel negotiated; no secret is ever logged."""
    text = auth_server.process.log_path.read_text(errors="replace")
    for _, hashes, groups in PROFILES:
        assert f"authenticated (hmac({hashes[0]}), {groups[0]})" in text, (hashes, groups)
    assert "host response mismatch" in text  # the wrong host secret
    assert "rejected the controller" in text  # the wrong controller secret (AUTH_Failure2 from the kernel)
    for key in (HOST_KEY, CTRL_KEY, WRONG_KEY, WRONG_CTRL_KEY):
        assert key.format() not in text and key.format().split(":")[2] not in text and key.key.hex() not in text


def test_dpu_emu_log_is_clean(auth_run: tuple[GuestChecks, HostActions], auth_server: RestServer) -> None:
    server = auth_server.process
    print(server.stop())
    assert server.last_exit == 0, server.log_tail()
    assert_clean_log(server)
