# Injected faults seen by the Linux host (busybox ash), in one boot. Needs checks.sh (reporting,
# connect_as, find_ctrl ...) and host_action.sh sourced, and a host serving the actions
# "fault-status", "fault-delay", "fault-digest" and "fault-drop" (tests/interop/test_faults_vm.py):
# each adds one fault of count 1 over dpu-emu's REST API (/v1/faults) while this host is connected
# with data digests on (nvme connect -G).
#
#   flt-status   `nvme read` (a passthrough command: the kernel does not retry it) fails and
#                prints the injected status (FLT_STATUS_TEXT); the next read succeeds
#   flt-delay    an O_DIRECT read of the block device takes at least FLT_DELAY_MS, against a
#                baseline read measured just before
#   flt-digest   the kernel logs "data digest error" for the corrupted C2HData PDU, retries the
#                read and returns the right data
#   flt-drop     the target closes the I/O queue's connection at a command: the kernel logs the
#                error recovery and "Successfully reconnected", and the reads complete with the
#                right data
#
# Parameters (besides checks.sh's TARGET_ADDR, TARGET_PORT, SUBNQN, NSID):
#   FLT_STATUS_TEXT ("LBA Out of Range")  what nvme-cli prints for the injected status
#   FLT_DELAY_MS (1000)                   the injected delay
#   FLT_DROP_READS (6)                    reads issued across the drop
#   FLT_RECONNECT_DELAY_S (1)             nvme connect --reconnect-delay
# Reports: flt-connect flt-status flt-delay flt-digest flt-drop flt-disconnect

: "${FLT_STATUS_TEXT:=LBA Out of Range}" "${FLT_DELAY_MS:=1000}" "${FLT_DROP_READS:=6}"
: "${FLT_RECONNECT_DELAY_S:=1}"
FLT_BLOCK=4096
FLT_DIGEST_MSG="data digest error"
FLT_RECONNECTED_MSG="Successfully reconnected"
FLT_SETTLE_S=30

flt_dmesg_lines() { dmesg | wc -l; }
# flt_dmesg_after N: the nvme lines of dmesg after its first N lines.
flt_dmesg_after() { dmesg | tail -n "+$(($1 + 1))" | grep -i 'nvme'; }

# flt_read_ms BLOCK_INDEX OUTPUT: one O_DIRECT 4 KiB read of DEV; prints its milliseconds.
flt_read_ms() {
    _t0=$(uptime_ms)
    timeout -s KILL "$CMD_TIMEOUT_S" dd if="$DEV" of="$2" bs=$FLT_BLOCK skip="$1" count=1 iflag=direct 2> /dev/null ||
        return 1
    echo $(( $(uptime_ms) - _t0 ))
}

# flt_pattern BLOCK_INDEX: writes a random 4 KiB block there (O_DIRECT); keeps it as $CHECK_WORK/flt-BLOCK.
flt_pattern() {
    dd if=/dev/urandom of="$CHECK_WORK/flt-$1" bs=$FLT_BLOCK count=1 2> /dev/null &&
        timeout -s KILL "$CMD_TIMEOUT_S" dd if="$CHECK_WORK/flt-$1" of="$DEV" bs=$FLT_BLOCK seek="$1" count=1 \
            oflag=direct conv=fsync 2> /dev/null
}

flt_action() {   # CHECK ACTION: asks the host to add the fault; fails CHECK when it could not
    if host_action "$2"; then return 0; fi
    check_fail "$1" "host action $2 failed: $HOST_ACTION_DETAIL"; return 1
}

check_flt_status() {
    flt_action flt-status fault-status || return
    run flt-status nvme read "$DEV" --start-block=0 --block-count=0 --data-size=512 --data="$CHECK_WORK/flt-status.bin"
    _rc=$?
    run flt-status-again nvme read "$DEV" --start-block=0 --block-count=0 --data-size=512 \
        --data="$CHECK_WORK/flt-status.bin"
    _rc2=$?
    _said=$(_oneline < "$(out flt-status)" | cut -c1-160)
    if [ "$_rc" -eq 0 ]; then check_fail flt-status "nvme read succeeded: $_said" "$(out flt-status)"
    elif ! grep -q -i "$FLT_STATUS_TEXT" "$(out flt-status)"; then
        check_fail flt-status "exit $_rc without '$FLT_STATUS_TEXT': $_said" "$(out flt-status)"
    elif [ "$_rc2" -ne 0 ]; then check_fail flt-status "the read after the fault failed too" "$(out flt-status-again)"
    else check_pass flt-status "exit $_rc: $_said; next read exit 0; host: $HOST_ACTION_DETAIL"
    fi
}

check_flt_delay() {
    flt_pattern 8 || { check_fail flt-delay "could not write the test block"; return; }
    _base=$(flt_read_ms 8 "$CHECK_WORK/flt-delay.base") || { check_fail flt-delay "baseline read failed"; return; }
    flt_action flt-delay fault-delay || return
    _late=$(flt_read_ms 8 "$CHECK_WORK/flt-delay.late") || { check_fail flt-delay "delayed read failed"; return; }
    _detail="baseline ${_base} ms, with the fault ${_late} ms (delay ${FLT_DELAY_MS} ms); host: $HOST_ACTION_DETAIL"
    if [ "$_late" -lt "$FLT_DELAY_MS" ]; then check_fail flt-delay "too fast: $_detail"
    elif ! cmp -s "$CHECK_WORK/flt-8" "$CHECK_WORK/flt-delay.late"; then check_fail flt-delay "wrong data: $_detail"
    else check_pass flt-delay "$_detail"
    fi
}

check_flt_digest() {
    flt_pattern 16 || { check_fail flt-digest "could not write the test block"; return; }
    _lines=$(flt_dmesg_lines)
    flt_action flt-digest fault-digest || return
    _ms=$(flt_read_ms 16 "$CHECK_WORK/flt-digest.read") || { check_fail flt-digest "the read failed"; return; }
    flt_dmesg_after "$_lines" > "$(out flt-digest)"
    _msg=$(grep -m 1 -i "$FLT_DIGEST_MSG" "$(out flt-digest)" | sed 's/^\[[^]]*\] *//')
    if [ -z "$_msg" ]; then check_fail flt-digest "no '$FLT_DIGEST_MSG' in dmesg" "$(out flt-digest)"
    elif ! cmp -s "$CHECK_WORK/flt-16" "$CHECK_WORK/flt-digest.read"; then
        check_fail flt-digest "the retried read returned wrong data ($_msg)" "$(out flt-digest)"
    else check_pass flt-digest "kernel: '$_msg'; read retried, data correct in ${_ms} ms"
    fi
}

check_flt_drop() {
    _i=0
    while [ "$_i" -lt "$FLT_DROP_READS" ]; do flt_pattern $((32 + _i)) || break; _i=$((_i + 1)); done
    [ "$_i" -eq "$FLT_DROP_READS" ] || { check_fail flt-drop "could not write the test blocks"; return; }
    _lines=$(flt_dmesg_lines)
    flt_action flt-drop fault-drop || return
    _i=0; _bad=0; _drop_t0=$(uptime_ms)   # (flt_read_ms sets _t0)
    while [ "$_i" -lt "$FLT_DROP_READS" ]; do
        flt_read_ms $((32 + _i)) "$CHECK_WORK/flt-drop.read" > /dev/null &&
            cmp -s "$CHECK_WORK/flt-$((32 + _i))" "$CHECK_WORK/flt-drop.read" || _bad=$((_bad + 1))
        _i=$((_i + 1))
    done
    _took=$(( $(uptime_ms) - _drop_t0 ))
    _j=0
    while ! flt_dmesg_after "$_lines" | grep -q "$FLT_RECONNECTED_MSG" && [ "$_j" -lt "$FLT_SETTLE_S" ]; do
        sleep 1; _j=$((_j + 1))
    done
    flt_dmesg_after "$_lines" > "$(out flt-drop)"
    _state=$(cat "/sys/class/nvme/$CTRL/state" 2>/dev/null)
    _rec=$(grep -m 1 "$FLT_RECONNECTED_MSG" "$(out flt-drop)" | sed 's/^\[[^]]*\] *//')
    _first=$(grep -m 1 -i -E 'error recovery|reset|closed|failed' "$(out flt-drop)" | sed 's/^\[[^]]*\] *//')
    _detail="$FLT_DROP_READS reads in ${_took} ms, $_bad bad; ctrl $CTRL $_state; kernel: '$_first' ... '$_rec'"
    if [ -z "$_rec" ]; then check_fail flt-drop "no reconnect logged: $_detail" "$(out flt-drop)"
    elif [ "$_bad" -ne 0 ]; then check_fail flt-drop "reads failed: $_detail" "$(out flt-drop)"
    elif [ "$_state" != live ]; then check_fail flt-drop "controller not live: $_detail" "$(out flt-drop)"
    else check_pass flt-drop "$_detail"
    fi
}

run_fault_checks() {
    if [ -z "$TARGET_ADDR" ] || [ -z "$SUBNQN" ]; then
        echo "fault_checks.sh: TARGET_ADDR and SUBNQN must be set"; return 2
    fi
    echo "faults: target $TARGET_ADDR:$TARGET_PORT subnqn $SUBNQN"
    if connect_as flt-connect -G --reconnect-delay="$FLT_RECONNECT_DELAY_S"; then
        check_flt_status
        check_flt_delay
        check_flt_digest
        check_flt_drop
        check_disconnect flt-disconnect
    else
        skip_dependents "connect failed" flt-status flt-delay flt-digest flt-drop flt-disconnect
    fi
    echo "CHECKS-DONE total=$CHECK_TOTAL failed=$CHECK_FAILED"
    [ "$CHECK_FAILED" -eq 0 ]
}
