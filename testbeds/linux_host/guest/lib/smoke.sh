# Smoke checks of the guest environment itself (busybox ash), used by
# `python -m testbeds.linux_host shell-check`. Needs checks.sh sourced first (check_pass/fail).

SMOKE_TOOLS="nvme fio blkdiscard modprobe ip dd sha256sum timeout"
SMOKE_MODULES="nvme_tcp nvme_fabrics nvmet_tcp nvmet virtio_net configfs"
SMOKE_GUEST_IP=10.0.2.15/24

_smoke_syntax() {
    for _lib in /guest/lib/*.sh /init; do
        if sh -n "$_lib" 2> "$CHECK_WORK/syntax.out"; then check_pass "syntax:${_lib##*/}"
        else check_fail "syntax:${_lib##*/}" "busybox sh -n failed" "$CHECK_WORK/syntax.out"; fi
    done
}

_smoke_tools() {
    for _tool in $SMOKE_TOOLS; do
        if command -v "$_tool" > /dev/null; then check_pass "tool:$_tool" "$(command -v "$_tool")"
        else check_fail "tool:$_tool" "not in PATH"; fi
    done
    if nvme version > "$CHECK_WORK/tools.out" 2>&1 && fio --version >> "$CHECK_WORK/tools.out" 2>&1; then
        check_pass tools-run "$(cat "$CHECK_WORK/tools.out")"
    else
        check_fail tools-run "nvme/fio do not start" "$CHECK_WORK/tools.out"
    fi
}

_smoke_modules() {
    for _mod in $SMOKE_MODULES; do
        if grep -q "^$_mod " /proc/modules; then check_pass "module:$_mod"
        else check_fail "module:$_mod" "not loaded"; fi
    done
    if modprobe null_blk nr_devices=0 && modprobe crc32c_generic; then check_pass module:on-demand
    else check_fail module:on-demand "null_blk / crc32c_generic do not load"; fi
    _mp=$(cat /proc/sys/kernel/modprobe)
    if [ "$_mp" = /sbin/modprobe ]; then check_pass modprobe-path "$_mp"
    else check_fail modprobe-path "$_mp"; fi
    if grep -q " /sys/kernel/config configfs" /proc/mounts; then check_pass configfs-mounted
    else check_fail configfs-mounted "not mounted"; fi
}

_smoke_network() {
    if ip -4 addr show | grep -q "inet $SMOKE_GUEST_IP"; then
        check_pass guest-ip "$(ip -4 addr show | grep "inet $SMOKE_GUEST_IP")"
    else
        check_fail guest-ip "no $SMOKE_GUEST_IP: $(ip -4 addr show)"
    fi
    if ip route | grep -q '^default'; then check_fail no-default-route "$(ip route)"
    else check_pass no-default-route "$(ip route)"; fi
    if [ -s /etc/nvme/hostnqn ] && [ -s /etc/nvme/hostid ]; then
        check_pass hostnqn "$(cat /etc/nvme/hostnqn) hostid $(cat /etc/nvme/hostid)"
    else
        check_fail hostnqn "/etc/nvme/hostnqn or hostid missing"
    fi
}

run_smoke_checks() {
    _smoke_syntax; _smoke_tools; _smoke_modules; _smoke_network
    echo "CHECKS-DONE total=$CHECK_TOTAL failed=$CHECK_FAILED"
    [ "$CHECK_FAILED" -eq 0 ]
}
