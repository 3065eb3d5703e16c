# Connection lifecycle checks (busybox ash): keep-alive while idle, the target stopped under a
# connected host, restarted on the same ports, the kernel reconnecting on its own with the data
# intact; then the target frozen (it keeps its sockets but answers nothing) so that only the
# keep-alive timeout can tell, and thawed. Needs checks.sh (reporting, connect_as, verify_io ...),
# host_action.sh and kv_checks.sh sourced, and a host serving the actions "stop-target",
# "start-target", "freeze-target" and "thaw-target" (tests/interop/test_dpu_emu_lifecycle.py). Block namespace NSID and KV namespace KV_NSID of
# SUBNQN must be persistent (file-backed) across the restart.
#
# Parameters (besides checks.sh's TARGET_ADDR, TARGET_PORT, SUBNQN, NSID):
#   KATO_S (5)             keep-alive timeout asked at connect (nvme connect -k)
#   IDLE_S (16)            idle time with the controller connected (> 3 x KATO_S)
#   CTRL_LOSS_TMO_S (60) RECONNECT_DELAY_S (2)   nvme connect --ctrl-loss-tmo / --reconnect-delay
#   LIFE_MIB (4)           random data written before the stop and read back after the restart
#   DETECT_WAIT_S (15)     how long to look for the host noticing the stopped target
#   RECONNECT_WAIT_S (60)  how long to wait for the controller to be live again
#   OUTAGE_WAIT_S (15)     how long to wait for a failed reconnect attempt before the restart
#   FREEZE_DETECT_S (2 x KATO_S)  limit for noticing a frozen target: up to KATO_S/2 until the
#                          host's next Keep Alive, then KATO_S until that command times out
# Reports: life-connect life-write life-kv-store keepalive-idle target-stop-detect
#          reconnect-attempts target-restart-reconnect data-intact life-kv-intact
#          io-after-reconnect freeze-detect thaw-reconnect life-disconnect

: "${KATO_S:=5}" "${IDLE_S:=16}" "${CTRL_LOSS_TMO_S:=60}" "${RECONNECT_DELAY_S:=2}"
: "${LIFE_MIB:=4}" "${DETECT_WAIT_S:=15}" "${RECONNECT_WAIT_S:=60}" "${OUTAGE_WAIT_S:=15}"
: "${FREEZE_DETECT_S:=$((2 * KATO_S))}"

LIFE_DETECT_PATTERN='keep-alive|keep alive|starting error recovery|Reconnecting in|resetting controller|I/O tag|timeout'
LIFE_FAILED_ATTEMPT_PATTERN='Failed reconnect attempt|failed to connect'
LIFE_KV_KEY=life-kv-key
LIFE_SHA=

ctrl_state() { cat "/sys/class/nvme/$CTRL/state" 2>/dev/null; }

# nvme_dmesg_after N: the nvme lines of dmesg after its first N lines.
nvme_dmesg_after() { dmesg | tail -n "+$(($1 + 1))" | grep -i 'nvme'; }

dmesg_lines() { dmesg | wc -l; }

# dmesg_ms LINE: the kernel timestamp of a dmesg line ("[   12.345678] ...") in milliseconds.
dmesg_ms() { echo "$1" | sed -n 's/^\[ *\([0-9]*\)\.\([0-9][0-9][0-9]\).*/\1\2/p' | sed 's/^0*\([0-9]\)/\1/'; }

sha_of_range() {   # OFFSET_MIB MIB -> first 16 hex of the sha256 of that range read with O_DIRECT
    timeout -s KILL "$CMD_TIMEOUT_S" dd if="$DEV" bs="$MIB" skip="$1" count="$2" iflag=direct 2>/dev/null |
        sha256sum | cut -c1-16
}

life_connect() {
    CONNECT_OPTS='' connect_as life-connect -k "$KATO_S" --ctrl-loss-tmo="$CTRL_LOSS_TMO_S" \
        --reconnect-delay="$RECONNECT_DELAY_S" || return 1
    _sys=/sys/class/nvme/$CTRL
    echo "life: kato=$(cat "$_sys/kato" 2>/dev/null) ctrl_loss_tmo=$(cat "$_sys/ctrl_loss_tmo" 2>/dev/null)" \
        "reconnect_delay=$(cat "$_sys/reconnect_delay" 2>/dev/null)"
}

check_life_write() {
    _w=$CHECK_WORK/life
    {
        dd if=/dev/urandom of="$_w.pattern" bs="$MIB" count="$LIFE_MIB" &&
        timeout -s KILL "$CMD_TIMEOUT_S" dd if="$_w.pattern" of="$DEV" bs="$MIB" count="$LIFE_MIB" oflag=direct conv=fsync
    } > "$(out life-write)" 2>&1 || { check_fail life-write "dd failed" "$(out life-write)"; return 1; }
    LIFE_SHA=$(sha256sum < "$_w.pattern" | cut -c1-16)
    rm -f "$_w.pattern"
    _back=$(sha_of_range 0 "$LIFE_MIB")
    if [ "$_back" = "$LIFE_SHA" ]; then check_pass life-write "${LIFE_MIB} MiB at 0 sha256=$LIFE_SHA..."
    else check_fail life-write "read back $_back, wrote $LIFE_SHA"; return 1
    fi
}

check_keepalive_idle() {
    _kato=$(cat "/sys/class/nvme/$CTRL/kato" 2>/dev/null)
    _base=$(dmesg_lines)
    _t0=$(uptime_ms)
    sleep "$IDLE_S"
    _idle=$(( ($(uptime_ms) - _t0) / 1000 ))
    _state=$(ctrl_state)
    nvme_dmesg_after "$_base" > "$(out keepalive-idle)"
    run keepalive-idle-list nvme list
    _listed=$(grep -c "^$DEV " "$(out keepalive-idle-list)")
    _read=$(sha_of_range 0 "$LIFE_MIB")
    _detail="idle ${_idle}s with kato=${_kato}s: state=$_state, nvme list shows $DEV: $_listed, read back sha256=$_read..."
    if [ "$_kato" != "$KATO_S" ]; then check_fail keepalive-idle "controller kato '$_kato' != $KATO_S: $_detail"
    elif [ "$_idle" -lt $((3 * KATO_S)) ]; then check_fail keepalive-idle "idle only ${_idle}s: $_detail"
    elif [ "$_state" != live ] || [ "$_listed" -lt 1 ]; then
        check_fail keepalive-idle "controller not live after idling: $_detail" "$(out keepalive-idle)"
    elif [ -s "$(out keepalive-idle)" ]; then
        check_fail keepalive-idle "kernel logged nvme events while idle: $_detail" "$(out keepalive-idle)"
    elif [ "$_read" != "$LIFE_SHA" ]; then check_fail keepalive-idle "read after idle differs: $_detail"
    else check_pass keepalive-idle "$_detail"
    fi
}

# detect_after CHECK ACTION LIMIT_S: asks the host for ACTION, then looks for the kernel host's
# first nvme event; the delay is measured from just before the request to that line's kernel
# timestamp and must be at most LIMIT_S.
detect_after() {
    _check=$1; _base=$(dmesg_lines)
    _t0=$(uptime_ms)
    if ! host_action "$2"; then
        check_fail "$_check" "host action $2 failed: $HOST_ACTION_DETAIL"; return 1
    fi
    _end=$(( _t0 + ($3 + DETECT_WAIT_S) * 1000 )); _first=
    while [ "$(uptime_ms)" -lt "$_end" ]; do
        _first=$(nvme_dmesg_after "$_base" | grep -E -i -m 1 "$LIFE_DETECT_PATTERN")
        [ -n "$_first" ] && break
        sleep 1
    done
    sleep 1
    nvme_dmesg_after "$_base" > "$(out "$_check")"
    _state=$(ctrl_state)
    if [ -z "$_first" ]; then
        check_fail "$_check" "no nvme event within $(($3 + DETECT_WAIT_S))s after $2 (state=$_state; host: $HOST_ACTION_DETAIL)" \
            "$(out "$_check")"
        return 1
    fi
    _delay=$(( $(dmesg_ms "$_first") - _t0 ))
    _ka=$(grep -i -m 1 'keep.alive' "$(out "$_check")" | cut -c16-)
    _detail="noticed after ${_delay}ms (limit ${3}s, kato ${KATO_S}s): '$(echo "$_first" | cut -c16-)'; keep-alive line: '${_ka:-none}'; state=$_state; host: $HOST_ACTION_DETAIL"
    if [ "$_delay" -le $(($3 * 1000)) ]; then check_pass "$_check" "$_detail"
    else check_fail "$_check" "too late: $_detail" "$(out "$_check")"
    fi
}

# The host stops the target (SIGTERM: dpu-emu closes its connections); noticed within KATO_S.
check_stop_detect() { detect_after target-stop-detect stop-target "$KATO_S"; }

# The host freezes the target (SIGSTOP): only the keep-alive timeout can tell.
check_freeze_detect() { detect_after freeze-detect freeze-target "$FREEZE_DETECT_S"; }

# wait_live CHECK WHAT VERIFY: waits up to RECONNECT_WAIT_S for the controller to be live again,
# and for its namespace's block device; reports CHECK. VERIFY=1: the data written by life-write
# must read back too (else it is only reported).
wait_live() {
    _t0=$(uptime_ms); _end=$(( _t0 + RECONNECT_WAIT_S * 1000 ))
    while [ "$(ctrl_state)" != live ] && [ "$(uptime_ms)" -lt "$_end" ]; do sleep 1; done
    _took=$(( $(uptime_ms) - _t0 ))
    _state=$(ctrl_state)
    nvme_dmesg_after "$_base" > "$(out "$1")"
    run list-subsys nvme list-subsys
    _ok=$(grep -i -m 1 'Successfully reconnected' "$(out "$1")" | cut -c16-)
    if [ "$_state" = live ] && grep -q " live" "$(out list-subsys)" && wait_for_devices; then
        _back=$(sha_of_range 0 "$LIFE_MIB")
        _detail="live ${_took}ms after $2: '$_ok'; ctrl=$CTRL dev=$DEV; data sha256=$_back...; host: $HOST_ACTION_DETAIL"
        if [ "$_back" = "$LIFE_SHA" ] || [ "$3" != 1 ]; then check_pass "$1" "$_detail"
        else check_fail "$1" "data differs (wrote $LIFE_SHA...): $_detail" "$(out "$1")"; return 1
        fi
    else
        cat "$(out list-subsys)" >> "$(out "$1")"
        check_fail "$1" "state=$_state ${_took}ms after $2" "$(out "$1")"
        return 1
    fi
}

check_thaw_reconnect() {
    _base=$(dmesg_lines)
    if ! host_action thaw-target; then
        check_fail thaw-reconnect "host could not thaw the target: $HOST_ACTION_DETAIL"; return 1
    fi
    wait_live thaw-reconnect "the thaw" 1
}

# While the target is down the kernel keeps trying (every RECONNECT_DELAY_S): wait for one
# failed attempt, so that the reconnect after the restart is the kernel's own retry loop.
check_reconnect_attempts() {
    _end=$(( $(uptime_ms) + OUTAGE_WAIT_S * 1000 )); _failed=
    while [ "$(uptime_ms)" -lt "$_end" ]; do
        _failed=$(dmesg | grep -E -m 1 "$LIFE_FAILED_ATTEMPT_PATTERN")
        [ -n "$_failed" ] && break
        sleep 1
    done
    _state=$(ctrl_state)
    if [ -n "$_failed" ] && [ "$_state" != live ] && [ "$_state" != deleting ] && [ "$_state" != dead ]; then
        check_pass reconnect-attempts "'$(echo "$_failed" | cut -c16-)'; state=$_state"
    else
        dmesg | grep -i nvme | tail -n 20 > "$(out reconnect-attempts)"
        check_fail reconnect-attempts "no failed reconnect attempt within ${OUTAGE_WAIT_S}s (state=$_state)" \
            "$(out reconnect-attempts)"
    fi
}

check_restart_reconnect() {
    _base=$(dmesg_lines)
    if ! host_action start-target; then
        check_fail target-restart-reconnect "host could not restart the target: $HOST_ACTION_DETAIL"; return 1
    fi
    wait_live target-restart-reconnect "the restart" 0   # data: check_data_intact
}

check_data_intact() {
    _back=$(sha_of_range 0 "$LIFE_MIB")
    if [ -n "$LIFE_SHA" ] && [ "$_back" = "$LIFE_SHA" ]; then
        check_pass data-intact "${LIFE_MIB} MiB written before the restart read back sha256=$_back..."
    else
        check_fail data-intact "read back sha256=$_back... after the restart, wrote $LIFE_SHA..."
    fi
}

# A value stored on the file-backed KV namespace before the stop must be there after the restart
# (through the generic device the kernel set up again on reconnect).
check_life_kv_store() {
    if ! find_kv_dev; then check_fail life-kv-store "no /dev/ngXnY for KV nsid $KV_NSID"; return; fi
    head -c "$KV_VALUE_BYTES" /dev/urandom > "$KV_WORK.value"
    kv_cmd life-kv-store "$KV_OP_STORE" "$LIFE_KV_KEY" "${#LIFE_KV_KEY}" --cdw10="$KV_VALUE_BYTES" \
        --data-len="$KV_VALUE_BYTES" --write --input-file="$KV_WORK.value"
    expect_success $? life-kv-store "store $KV_VALUE_BYTES bytes under '$LIFE_KV_KEY' on $KV_DEV"
}

check_life_kv_intact() {
    if ! find_kv_dev; then check_fail life-kv-intact "no /dev/ngXnY for KV nsid $KV_NSID after the restart"; return; fi
    check_kv_retrieve life-kv-intact "$LIFE_KV_KEY"
}

run_lifecycle_checks() {
    if [ -z "$TARGET_ADDR" ] || [ -z "$SUBNQN" ]; then
        echo "lifecycle.sh: TARGET_ADDR and SUBNQN must be set"; return 2
    fi
    echo "lifecycle: target $TARGET_ADDR:$TARGET_PORT subnqn $SUBNQN kato ${KATO_S}s idle ${IDLE_S}s"
    if ! life_connect; then
        skip_dependents "connect failed" life-write life-kv-store keepalive-idle target-stop-detect \
            reconnect-attempts target-restart-reconnect data-intact life-kv-intact \
            io-after-reconnect freeze-detect thaw-reconnect life-disconnect
    elif ! check_life_write; then
        skip_dependents "the first write failed" life-kv-store keepalive-idle target-stop-detect \
            reconnect-attempts target-restart-reconnect data-intact life-kv-intact \
            io-after-reconnect freeze-detect thaw-reconnect life-disconnect
        disconnect_all
    else
        check_life_kv_store
        check_keepalive_idle
        check_stop_detect   # the restart is tried even when the stop was noticed late
        check_reconnect_attempts
        if check_restart_reconnect; then
            check_data_intact
            check_life_kv_intact
            verify_io io-after-reconnect 1 "$((LIFE_MIB + 1))"
            check_freeze_detect   # thawed even when the freeze was noticed late
            if check_thaw_reconnect; then check_disconnect life-disconnect
            else skip_dependents "the controller did not come back after the thaw" life-disconnect
                disconnect_all
            fi
        else
            skip_dependents "the controller did not come back" data-intact life-kv-intact \
                io-after-reconnect freeze-detect thaw-reconnect life-disconnect
            disconnect_all
        fi
    fi
    echo "CHECKS-DONE total=$CHECK_TOTAL failed=$CHECK_FAILED"
    [ "$CHECK_FAILED" -eq 0 ]
}
