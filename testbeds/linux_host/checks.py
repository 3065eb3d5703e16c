"""Host side of guest/lib/checks.sh: compose the guest script, parse its CHECK lines."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Final

from . import config

GUEST_LIB: Final[str] = f"/{config.GUEST_RUN_DIR}/lib"

EXPECTED_CHECKS: Final[tuple[str, ...]] = (
    "discover", "connect", "list", "id-ctrl", "id-ns", "smart-log", "error-log", "get-feature-7",
    "dd-verify", "fio-verify", "blkdiscard", "write-zeroes", "flush", "disconnect",
    "connect-digest", "io-digest", "disconnect-digest",
    "connect-queues", "io-queues-count", "io-queues", "disconnect-queues",
)
"""Every check run_all_checks reports, in order."""

LIFECYCLE_CHECKS: Final[tuple[str, ...]] = (
    "life-connect", "life-write", "life-kv-store", "keepalive-idle", "target-stop-detect",
    "reconnect-attempts", "target-restart-reconnect", "data-intact", "life-kv-intact",
    "io-after-reconnect", "freeze-detect", "thaw-reconnect", "life-disconnect",
)
"""Every check run_lifecycle_checks (guest/lib/lifecycle.sh) reports, in order; it needs the
host actions "stop-target", "start-target", "freeze-target" and "thaw-target"
(testbeds.linux_host.host_actions)."""

KV_CHECKS: Final[tuple[str, ...]] = (
    "kv-connect", "kv-generic-device", "kv-no-block-device", "kv-store", "kv-retrieve",
    "kv-retrieve-partial", "kv-exist", "kv-exist-absent", "kv-store-no-overwrite",
    "kv-store-must-exist", "kv-store-short-key", "kv-list", "kv-list-from-key",
    "kv-invalid-key-size", "kv-delete", "kv-exist-after-delete", "kv-retrieve-after-delete",
    "kv-disconnect",
)
"""Every check run_kv_checks (guest/lib/kv_checks.sh) reports, in order."""

REST_CHECKS: Final[tuple[str, ...]] = (
    "rest-connect", "rest-ns-added", "rest-ns-removed", "rest-disconnect", "rest-acl-refused",
    "rest-tenant-b-masked", "rest-tenant-a-masked",
)
"""Every check run_rest_checks (guest/lib/rest_checks.sh) reports, in order; it needs the host
actions "add-namespace" and "remove-namespace" (tests/interop/test_rest_live.py)."""

IMPAIR_CHECKS: Final[tuple[str, ...]] = (
    "imp-netem", "imp-delay-connect", "imp-delay-fio", "imp-delay-keepalive", "imp-delay-disconnect",
    "imp-loss-on", "imp-loss-connect", "imp-loss-fio", "imp-loss-keepalive", "imp-loss-disconnect",
    "imp-loss-off",
)
"""Every check run_impair_checks (guest/lib/impair_checks.sh) reports, in order; it needs the
host actions "loss-on" and "loss-off" (tests/interop/test_impairments_vm.py)."""

FAULT_CHECKS: Final[tuple[str, ...]] = (
    "flt-connect", "flt-status", "flt-delay", "flt-digest", "flt-drop", "flt-disconnect",
)
"""Every check run_fault_checks (guest/lib/fault_checks.sh) reports, in order; it needs the host
actions "fault-status", "fault-delay", "fault-digest" and "fault-drop" (tests/interop/test_faults_vm.py)."""

ANA_SWITCHES: Final[int] = 4
ANA_CHECKS: Final[tuple[str, ...]] = (
    "ana-multipath", "ana-connect-a", "ana-connect-b", "ana-one-namespace", "ana-list-subsys",
    *(f"ana-switch-{n}" for n in range(1, ANA_SWITCHES + 1)),
    "ana-fio", "ana-log-1", "ana-disconnect", "ana-log-2", "ana-log-300",
)
"""Every check run_ana_checks (guest/lib/ana_checks.sh) reports, in order; it needs the host
actions "prefer-a" and "prefer-b" (tests/interop/test_ana_vm.py)."""

SELFTEST_NQN: Final[str] = "nqn.2026-11.io.dpu-emu:linux-selftest"
SELFTEST_SERIAL: Final[str] = "LNXSELF0001"
SELFTEST_MODEL: Final[str] = "Linux"
SELFTEST_ADDRESS: Final[str] = "127.0.0.1"
SELFTEST_IO_PORT: Final[int] = 4420
SELFTEST_DISCOVERY_PORT: Final[int] = 8009
SELFTEST_NS_MIB: Final[int] = 256
LBA_BYTES: Final[int] = 512
SETUP_FAILED_STATUS: Final[int] = 10

_CHECK_LINE = re.compile(r"^CHECK (\S+) (PASS|FAIL)(?: (.*))?$")
_DONE_LINE = re.compile(r"^CHECKS-DONE total=(\d+) failed=(\d+)$")
_CONTEXT_PREFIX: Final[str] = "  | "


@dataclass(frozen=True)
class TargetParams:
    """Where the guest finds the NVMe/TCP target and what it expects of it."""

    address: str
    io_port: int
    discovery_port: int
    subnqn: str
    expect_model: str | None = None
    expect_serial: str | None = None
    expect_lba_bytes: int | None = None
    expect_discovery_trsvcid: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
    """More checks.sh variables (DD_MIB, FIO_SIZE_MIB, CMD_TIMEOUT_S ...)."""

    def shell_assignments(self) -> str:
        values: dict[str, object | None] = {
            "TARGET_ADDR": self.address, "TARGET_PORT": self.io_port,
            "DISCOVERY_PORT": self.discovery_port, "SUBNQN": self.subnqn,
            "EXPECT_MODEL": self.expect_model, "EXPECT_SERIAL": self.expect_serial,
            "EXPECT_LBA_BYTES": self.expect_lba_bytes,
            "EXPECT_DISC_TRSVCID": self.expect_discovery_trsvcid, **self.extra,
        }
        for name in values:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise ValueError(f"bad checks.sh variable name {name!r}")
        return "\n".join(
            f"{name}={shlex.quote(str(value))}" for name, value in values.items() if value is not None
        )


def checks_script(
    target: TargetParams, *, setup: str = "", libraries: tuple[str, ...] = (),
    entry: str = "run_all_checks",
) -> str:
    """A guest script: checks.sh and `libraries` (guest/lib file names) sourced, optional setup
    shell code, the target's parameters, then `entry` (default: every check of checks.sh)."""
    for name in libraries:
        if not (config.GUEST_LIB_DIR / name).is_file():
            raise ValueError(f"no guest library {name!r} in {config.GUEST_LIB_DIR}")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", entry):
        raise ValueError(f"bad entry function {entry!r}")
    return "\n".join([
        f". {GUEST_LIB}/checks.sh",
        *(f". {GUEST_LIB}/{name}" for name in libraries),
        setup,
        target.shell_assignments(),
        entry,
        "",
    ])


def lifecycle_script(target: TargetParams) -> str:
    """Keep-alive, target stop/restart and reconnect checks (LIFECYCLE_CHECKS); run it with
    on_line=HostActions({"stop-target": ..., "start-target": ..., "freeze-target": ...,
    "thaw-target": ...})."""
    return checks_script(
        target, libraries=("host_action.sh", "kv_checks.sh", "lifecycle.sh"),
        entry="run_lifecycle_checks",
    )


def kv_script(target: TargetParams) -> str:
    """NVMe-KV checks through /dev/ngXnY and nvme io-passthru (KV_CHECKS)."""
    return checks_script(target, libraries=("kv_checks.sh",), entry="run_kv_checks")


def rest_script(target: TargetParams) -> str:
    """Live REST changes seen by the kernel host (REST_CHECKS); run it with
    on_line=HostActions({"add-namespace": ..., "remove-namespace": ...})."""
    return checks_script(target, libraries=("host_action.sh", "rest_checks.sh"), entry="run_rest_checks")


def ana_script(target: TargetParams) -> str:
    """Native NVMe multipath over two listeners and the ANA log (ANA_CHECKS); run it with
    on_line=HostActions({"prefer-a": ..., "prefer-b": ...})."""
    return checks_script(target, libraries=("host_action.sh", "ana_checks.sh"), entry="run_ana_checks")


def impair_script(target: TargetParams) -> str:
    """netem delay in the guest, then host-side nftables loss (IMPAIR_CHECKS); run it with
    on_line=HostActions({"loss-on": ..., "loss-off": ...})."""
    return checks_script(target, libraries=("host_action.sh", "impair_checks.sh"), entry="run_impair_checks")


def fault_script(target: TargetParams) -> str:
    """Injected faults seen by the kernel host (FAULT_CHECKS); run it with on_line=HostActions(
    {"fault-status": ..., "fault-delay": ..., "fault-digest": ..., "fault-drop": ...})."""
    return checks_script(target, libraries=("host_action.sh", "fault_checks.sh"), entry="run_fault_checks")


def selftest_target() -> TargetParams:
    return TargetParams(
        address=SELFTEST_ADDRESS, io_port=SELFTEST_IO_PORT,
        discovery_port=SELFTEST_DISCOVERY_PORT, subnqn=SELFTEST_NQN,
        expect_model=SELFTEST_MODEL, expect_serial=SELFTEST_SERIAL, expect_lba_bytes=LBA_BYTES,
        expect_discovery_trsvcid=SELFTEST_DISCOVERY_PORT,
    )


def selftest_script() -> str:
    """Sets up the guest kernel's nvmet target on loopback, then runs every check against it."""
    args = " ".join(shlex.quote(str(a)) for a in (
        SELFTEST_NQN, SELFTEST_ADDRESS, SELFTEST_IO_PORT, SELFTEST_DISCOVERY_PORT,
        SELFTEST_NS_MIB, SELFTEST_SERIAL,
    ))
    setup = f". {GUEST_LIB}/nvmet.sh\nnvmet_setup {args} || exit {SETUP_FAILED_STATUS}"
    return checks_script(selftest_target(), setup=setup)


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str
    context: tuple[str, ...]
    """Command output the guest printed before a failing check (without the "  | " prefix)."""

    def describe(self) -> str:
        state = "PASS" if self.passed else "FAIL"
        lines = [f"{self.name}: {state} {self.detail}", *(f"    {c}" for c in self.context)]
        return "\n".join(lines)


@dataclass(frozen=True)
class CheckReport:
    results: dict[str, CheckResult]
    done_total: int | None
    done_failed: int | None

    @property
    def complete(self) -> bool:
        return self.done_total is not None

    def failed(self) -> list[CheckResult]:
        return [r for r in self.results.values() if not r.passed]

    def summary(self) -> str:
        return "\n".join(r.describe() for r in self.results.values())


def parse_checks(output: str) -> CheckReport:
    """Strictly parses CHECK / CHECKS-DONE lines; a repeated check name is an error."""
    results: dict[str, CheckResult] = {}
    context: list[str] = []
    total = failed = None
    for raw in output.splitlines():
        line = raw.rstrip("\r")
        if line.startswith(_CONTEXT_PREFIX):
            context.append(line[len(_CONTEXT_PREFIX):])
            continue
        match = _CHECK_LINE.match(line)
        if match:
            name, state, detail = match.group(1), match.group(2), (match.group(3) or "").strip()
            if name in results:
                raise ValueError(f"check {name!r} reported twice")
            results[name] = CheckResult(name, state == "PASS", detail, tuple(context))
            context = []
            continue
        done = _DONE_LINE.match(line)
        if done:
            total, failed = int(done.group(1)), int(done.group(2))
    return CheckReport(results, total, failed)


AUTH_CHECKS: Final[tuple[str, ...]] = (
    "auth-no-secret", "auth-wrong-secret", "auth-uni", "auth-uni-io", "auth-bi", "auth-bi-io", "auth-wrong-ctrl",
    "auth-sha384-null", "auth-sha512-ffdhe3072", "auth-sha512-ffdhe8192",
)
"""Every check run_auth_checks (guest/lib/auth_checks.sh) reports, in order; it needs the host
actions "use-sha384-null", "use-sha512-ffdhe3072" and "use-sha512-ffdhe8192" (tests/interop/test_auth_vm.py)."""


def auth_script(target: TargetParams) -> str:
    """DH-HMAC-CHAP judged by the kernel host (AUTH_CHECKS); run it with
    on_line=HostActions({"use-sha384-null": ..., "use-sha512-ffdhe3072": ..., "use-sha512-ffdhe8192": ...})."""
    return checks_script(target, libraries=("host_action.sh", "auth_checks.sh"), entry="run_auth_checks")
