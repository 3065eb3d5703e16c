# Network impairments between the Linux host and dpu-emu (busybox ash), in one boot. Needs
# checks.sh and host_action.sh sourced; the host side is tests/interop/test_impairments_vm.py.
#
# (a) delay: netem on the guest's NIC (`tc qdisc add dev <nic> root netem delay IMP_DELAY_MS`):
#   imp-netem        netem installed; ping to the host before/after (rtt min, ms) in the detail
#   imp-delay-connect  nvme connect -k IMP_KATO_S (keep-alive timeout)
#   imp-delay-fio    a small fio verify job passes
#   imp-delay-keepalive  idle IMP_HOLD_S s (several keep-alive periods): same controller, live,
#                    no reset/reconnect/keep-alive message in dmesg since the connect
#   imp-delay-disconnect, then netem removed
# (b) loss: host action "loss-on" (nftables, IMP_LOSS_PERCENT % random drop on the host's
#   loopback for this target's port only), then the same connect / fio / keep-alive / disconnect
#   checks as imp-loss-*, then host action "loss-off" (answers "dropped=<packets>"): imp-loss-off.
# Detail formats the host parses:
#   imp-netem: "rtt_before_ms=<n|none> rtt_after_ms=<n|none> qdisc=<tc output>"
#   imp-loss-off: the host's answer ("dropped=<n> ...")
#
# Parameters: IMP_DELAY_MS (50) IMP_KATO_S (5) IMP_HOLD_S (20) IMP_FIO_MIB (4) IMP_FIO_BS (16k)
#             IMP_FIO_IODEPTH (8) IMP_FIO_RUNTIME_S (150) IMP_PINGS (3)

: "${IMP_DELAY_MS:=50}" "${IMP_KATO_S:=5}" "${IMP_HOLD_S:=20}" "${IMP_FIO_MIB:=4}" "${IMP_FIO_BS:=16k}"
: "${IMP_FIO_IODEPTH:=8}" "${IMP_FIO_RUNTIME_S:=150}" "${IMP_PINGS:=3}"

TC=/usr/sbin/tc   # busybox ash runs its own (limited) tc applet before PATH
IMP_DMESG_MARK=0
IMP_DMESG_PATTERN='reset|reconnect|keep-alive|keep alive|timeout|failed|error'

# imp_nic: the virtio-net interface (as guest/init.sh finds it).
imp_nic() {
    for _d in /sys/class/net/*; do
        case "$(readlink "$_d/device/driver")" in
            */virtio_net) echo "${_d##*/}"; return 0 ;;
        esac
    done
    return 1
}

# imp_rtt: the smallest ping rtt (ms, integer) to the target address, or "none".
imp_rtt() {
    _r=$(ping -c "$IMP_PINGS" -W 2 "$TARGET_ADDR" 2>/dev/null |
        awk -F'[/ =]+' '/min\/avg\/max/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) {printf "%d\n", $i; exit}}')
    echo "${_r:-none}"
}

# imp_connect NAME: nvme connect with the keep-alive timeout; marks dmesg.
imp_connect() {
    IMP_DMESG_MARK=$(dmesg | wc -l)
    connect_as "$1" -k "$IMP_KATO_S"
}

imp_fio() {   # NAME
    _t0=$(date +%s)
    if run "$1" fio --name="$1" --filename="$DEV" --ioengine=libaio --direct=1 --rw=randwrite \
        --bs="$IMP_FIO_BS" --iodepth="$IMP_FIO_IODEPTH" --numjobs=1 --size="${IMP_FIO_MIB}m" \
        --verify=crc32c --verify_fatal=1 --do_verify=1 --runtime="$IMP_FIO_RUNTIME_S" --thread; then
        check_pass "$1" "${IMP_FIO_MIB}MiB bs=$IMP_FIO_BS qd=$IMP_FIO_IODEPTH verified in $(($(date +%s) - _t0))s; $(grep -m 1 -E 'WRITE:' "$(out "$1")" | sed 's/^ *//')"
    else
        check_fail "$1" "fio verify failed after $(($(date +%s) - _t0))s" "$(out "$1")"
    fi
}

# imp_hold NAME: idles IMP_HOLD_S seconds, then the controller must be the same, live, and the
# kernel must not have logged a reset, reconnect or keep-alive failure since the connect.
imp_hold() {
    _ctrl=$CTRL; _cntlid=$(cat "/sys/class/nvme/$CTRL/cntlid" 2>/dev/null)
    sleep "$IMP_HOLD_S"
    dmesg | tail -n +"$((IMP_DMESG_MARK + 1))" | grep -i nvme > "$(out "$1")"
    _state=$(cat "/sys/class/nvme/$_ctrl/state" 2>/dev/null)
    _bad=$(grep -E -i -c "$IMP_DMESG_PATTERN" "$(out "$1")")
    _detail="ctrl $_ctrl cntlid $_cntlid state=$_state after ${IMP_HOLD_S}s idle (kato ${IMP_KATO_S}s); nvme dmesg lines since connect: $(wc -l < "$(out "$1")"), suspicious: $_bad"
    if [ "$(find_ctrl)" != "$_ctrl" ] || [ "$_state" != live ]; then check_fail "$1" "controller lost: $_detail" "$(out "$1")"
    elif [ "$(cat "/sys/class/nvme/$_ctrl/cntlid")" != "$_cntlid" ]; then check_fail "$1" "cntlid changed: $_detail" "$(out "$1")"
    elif [ "$_bad" -ne 0 ]; then check_fail "$1" "kernel reported trouble: $_detail" "$(out "$1")"
    else check_pass "$1" "$_detail"
    fi
}

# imp_round PREFIX: connect, fio verify, keep-alive hold, disconnect (skips the rest on failure).
imp_round() {
    if imp_connect "$1-connect"; then
        imp_fio "$1-fio"
        imp_hold "$1-keepalive"
        check_disconnect "$1-disconnect"
    else
        skip_dependents "connect failed" "$1-fio" "$1-keepalive" "$1-disconnect"
    fi
}

run_impair_checks() {
    if [ -z "$TARGET_ADDR" ] || [ -z "$SUBNQN" ]; then
        echo "impair_checks.sh: TARGET_ADDR and SUBNQN must be set"; return 2
    fi
    echo "impair checks: target $TARGET_ADDR:$TARGET_PORT subnqn $SUBNQN delay ${IMP_DELAY_MS}ms kato ${IMP_KATO_S}s"
    _nic=$(imp_nic)
    modprobe sch_netem > "$(out imp-netem)" 2>&1
    _before=$(imp_rtt)
    if [ -n "$_nic" ] && "$TC" qdisc add dev "$_nic" root netem delay "${IMP_DELAY_MS}ms" >> "$(out imp-netem)" 2>&1; then
        _after=$(imp_rtt)
        check_pass imp-netem "rtt_before_ms=$_before rtt_after_ms=$_after qdisc=$("$TC" qdisc show dev "$_nic" | head -n 1)"
        imp_round imp-delay
        "$TC" qdisc del dev "$_nic" root > /dev/null 2>&1
    else
        check_fail imp-netem "cannot add netem on '$_nic'" "$(out imp-netem)"
        skip_dependents "no netem" imp-delay-connect imp-delay-fio imp-delay-keepalive imp-delay-disconnect
    fi
    if host_action loss-on; then
        check_pass imp-loss-on "$HOST_ACTION_DETAIL"
        imp_round imp-loss
        if host_action loss-off; then check_pass imp-loss-off "$HOST_ACTION_DETAIL"
        else check_fail imp-loss-off "host action failed: $HOST_ACTION_DETAIL"
        fi
    else
        check_fail imp-loss-on "host action failed: $HOST_ACTION_DETAIL"
        skip_dependents "no loss rule" imp-loss-connect imp-loss-fio imp-loss-keepalive imp-loss-disconnect imp-loss-off
    fi
    echo "CHECKS-DONE total=$CHECK_TOTAL failed=$CHECK_FAILED"
    [ "$CHECK_FAILED" -eq 0 ]
}
