# ANA multipath seen by the Linux host (busybox ash), in one boot. Needs checks.sh (reporting,
# run, find_ctrl, find_ns ...) and host_action.sh sourced, and a host serving the actions
# "prefer-b" (group 1 of SUBNQN: listener A inaccessible, B optimized) and "prefer-a" (A optimized,
# B non-optimized) over dpu-emu's REST API (tests/interop/test_ana_vm.py).
#
# Parameters (besides checks.sh's TARGET_ADDR, TARGET_PORT = listener A, SUBNQN, NSID):
#   PORT_B                  the second I/O listener of SUBNQN
#   SWITCHES (4)            host actions switching the optimized path while fio runs
#   FIO_RUNTIME_S (40)      the verify job's time; it must outlast the switches
#   STATE_WAIT_S (30)       how long the kernel may take to show a new ANA state
#   ANA2_NQN EXPECT_ANA2    a subsystem with 2 namespaces and the summary its ANA log must give
#   ANA300_NQN EXPECT_ANA300 and one with 300 namespaces (NS300 = 300)
#   EXPECT_ANA1             the summary of SUBNQN's ANA log through listener A at the end
# An ANA log summary is "grpid=state:count:first:last:sum ..." per descriptor, in log order, with
# "!" appended when NNSIDS differs from the NSIDs listed or they are not ascending.
# Reports: ana-multipath ana-connect-a ana-connect-b ana-one-namespace ana-list-subsys
#          ana-switch-1 .. ana-switch-SWITCHES ana-fio ana-log-1 ana-disconnect ana-log-2
#          ana-log-300

# shellcheck disable=SC2031  # TARGET_PORT is changed only in ctrl_on's subshell, on purpose
: "${SWITCHES:=4}" "${FIO_RUNTIME_S:=40}" "${STATE_WAIT_S:=30}" "${NS300:=300}"

# ana_summary FILE: the summary of `nvme ana-log` normal output.
ana_summary() {
    awk '
        function flush() {
            if (g != "") printf "%s=%s:%d:%s:%s:%d%s ", g, st, c, first, last, sum, (c == nn && asc ? "" : "!")
        }
        { line = $0; gsub(/[ \t]/, "", line); n = split(line, kv, ":"); k = kv[1]; v = kv[2] }
        k == "grpid" { flush(); g = v; c = 0; first = ""; last = ""; sum = 0; asc = 1; nn = -1; st = "?" }
        k == "nnsids" && g != "" { nn = v + 0 }
        k == "state" && g != "" { st = v }
        k == "nsid" && g != "" {
            if (last != "" && v + 0 <= last + 0) asc = 0
            if (first == "") first = v
            last = v; sum += v; c++
        }
        END { flush() }
    ' "$1" | sed 's/ $//'
}

# ctrl_on PORT: the controller of SUBNQN through TARGET_ADDR:PORT.
# shellcheck disable=SC2030  # the subshell keeps TARGET_PORT for the caller
ctrl_on() { (TARGET_PORT=$1; find_ctrl); }

# count_paths CTRL: how many namespace paths (nvmeXcYnZ) controller CTRL has.
count_paths() {
    _n=0
    for _p in /sys/class/nvme/"$1"/nvme*c*n*; do [ -e "$_p" ] && _n=$((_n + 1)); done
    echo "$_n"
}

# count_heads: how many multipath block devices (/dev/nvmeXnY) exist.
count_heads() {
    _n=0
    for _d in /dev/nvme*n*; do
        case "${_d#/dev/}" in *c*|*p*|*-*) ;; *) [ -b "$_d" ] && _n=$((_n + 1)) ;; esac
    done
    echo "$_n"
}

# path_state CTRL: the kernel's ANA state of namespace NSID through controller CTRL.
path_state() {
    for _p in /sys/class/nvme/"$1"/nvme*c*n*; do
        [ "$(cat "$_p/nsid" 2>/dev/null)" = "$NSID" ] && { cat "$_p/ana_state"; return 0; }
    done
    echo none
}

# subsys_line PORT FILE: the path line of `nvme list-subsys` for TARGET_ADDR:PORT.
subsys_line() { grep "traddr=$TARGET_ADDR,trsvcid=$1[, ]" "$2" | head -n 1 | sed 's/^ *//'; }

# check_states NAME STATE_A STATE_B: waits until sysfs shows them, then nvme list-subsys must too.
check_states() {
    _end=$(( $(uptime_ms) + STATE_WAIT_S * 1000 )); _t0=$(uptime_ms)
    while [ "$(uptime_ms)" -lt "$_end" ]; do
        [ "$(path_state "$CTRL_A")" = "$2" ] && [ "$(path_state "$CTRL_B")" = "$3" ] && break
        sleep 1
    done
    _took=$(( $(uptime_ms) - _t0 ))
    run "$1" nvme list-subsys "$DEV"
    _la=$(subsys_line "$TARGET_PORT" "$(out "$1")"); _lb=$(subsys_line "$PORT_B" "$(out "$1")")
    _detail="sysfs A=$(path_state "$CTRL_A") B=$(path_state "$CTRL_B") after ${_took}ms; list-subsys: [$_la] [$_lb]"
    if [ "$(path_state "$CTRL_A")" != "$2" ] || [ "$(path_state "$CTRL_B")" != "$3" ]; then
        check_fail "$1" "expected A=$2 B=$3: $_detail" "$(out "$1")"; return 1
    elif [ "$(echo "$_la" | awk '{print $NF}')" != "$2" ] || [ "$(echo "$_lb" | awk '{print $NF}')" != "$3" ]; then
        check_fail "$1" "nvme list-subsys does not show A=$2 B=$3: $_detail" "$(out "$1")"; return 1
    fi
    check_pass "$1" "$_detail"
}

connect_port() {   # NAME PORT NQN
    # shellcheck disable=SC2086  # CONNECT_OPTS is a list of options
    run "$1" nvme connect -t tcp -a "$TARGET_ADDR" -s "$2" -n "$3" $CONNECT_OPTS
}

check_multipath_param() {
    _mp=$(cat /sys/module/nvme_core/parameters/multipath 2>/dev/null)
    if [ "$_mp" = Y ]; then check_pass ana-multipath "nvme_core multipath=$_mp"
    else check_fail ana-multipath "nvme_core multipath=${_mp:-absent}"
    fi
}

check_connect_paths() {
    disconnect_all
    if ! connect_port ana-connect-a "$TARGET_PORT" "$SUBNQN" || ! wait_for_devices; then
        check_fail ana-connect-a "no controller/namespace through $TARGET_ADDR:$TARGET_PORT" "$(out ana-connect-a)"
        skip_dependents "path A did not come up" ana-connect-b
        return 1
    fi
    CTRL_A=$CTRL
    check_pass ana-connect-a "ctrl=$CTRL_A dev=$DEV cntlid=$(cat "/sys/class/nvme/$CTRL_A/cntlid")"
    _i=0
    connect_port ana-connect-b "$PORT_B" "$SUBNQN"
    while ! CTRL_B=$(ctrl_on "$PORT_B") && [ "$_i" -lt "$DEVICE_WAIT_S" ]; do sleep 1; _i=$((_i + 1)); done
    if [ -z "$CTRL_B" ]; then
        check_fail ana-connect-b "no controller through $TARGET_ADDR:$PORT_B" "$(out ana-connect-b)"; return 1
    fi
    check_pass ana-connect-b "ctrl=$CTRL_B cntlid=$(cat "/sys/class/nvme/$CTRL_B/cntlid") subsystem $(basename "$(readlink -f "/sys/class/nvme/$CTRL_B/subsystem" 2>/dev/null)")"
    sleep 2
    _heads=$(count_heads); _pa=$(count_paths "$CTRL_A"); _pb=$(count_paths "$CTRL_B")
    _detail="head $DEV ($(find_ns)); block devices: $_heads; paths: $CTRL_A=$_pa $CTRL_B=$_pb"
    if [ "$_heads" -eq 1 ] && [ "$_pa" -eq 1 ] && [ "$_pb" -eq 1 ] && [ "/dev/$(find_ns)" = "$DEV" ]; then
        check_pass ana-one-namespace "$_detail"
    else
        ls -l /dev/nvme* /sys/class/nvme/*/ > "$(out ana-one-namespace)" 2>&1
        check_fail ana-one-namespace "$_detail" "$(out ana-one-namespace)"
    fi
}

# fio verify job on the multipath device while the host switches the optimized path.
check_fio_switching() {
    _f=$(out ana-fio)
    fio --name=ana --filename="$DEV" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k --iodepth=8 \
        --size=8m --verify=crc32c --verify_fatal=1 --verify_backlog=256 --do_verify=1 \
        --time_based --runtime="$FIO_RUNTIME_S" > "$_f" 2>&1 &
    _fio=$!
    _alive=0
    _n=1
    while [ "$_n" -le "$SWITCHES" ]; do
        if [ $((_n % 2)) -eq 1 ]; then _act=prefer-b; _sa=inaccessible; _sb=optimized
        else _act=prefer-a; _sa=optimized; _sb=non-optimized
        fi
        if host_action "$_act"; then check_states "ana-switch-$_n" "$_sa" "$_sb"
        else check_fail "ana-switch-$_n" "host action $_act failed: $HOST_ACTION_DETAIL"
        fi
        kill -0 "$_fio" 2>/dev/null && _alive=$((_alive + 1))
        _n=$((_n + 1))
    done
    wait "$_fio"; _rc=$?
    _w=$(grep -m 1 -E 'WRITE:' "$_f" | sed 's/^ *//'); _r=$(grep -m 1 -E 'READ:' "$_f" | sed 's/^ *//')
    _detail="fio exit $_rc, running during $_alive/$SWITCHES switches; $_w; verify $_r"
    if [ "$_rc" -ne 0 ] || grep -qi 'verify.*fail\|bad magic\|crc32c mismatch' "$_f"; then
        check_fail ana-fio "$_detail" "$_f"
    elif [ "$_alive" -lt "$SWITCHES" ]; then
        check_fail ana-fio "fio ended before the switches did: $_detail" "$_f"
    else
        check_pass ana-fio "$_detail"
    fi
}

check_ana_log() {   # NAME CTRL EXPECTED
    if ! run "$1" nvme ana-log "/dev/$2"; then
        check_fail "$1" "nvme ana-log /dev/$2 exited non-zero" "$(out "$1")"; return 1
    fi
    _sum=$(ana_summary "$(out "$1")")
    _hdr="$(grep -m 1 ngrps "$(out "$1")" | tr -d ' \t')"
    if [ "$_sum" = "$3" ]; then check_pass "$1" "/dev/$2 $_hdr: $_sum"
    else check_fail "$1" "/dev/$2 $_hdr: got [$_sum] expected [$3]" "$(out "$1")"
    fi
}

# check_subsystem_log NAME NQN EXPECTED PATHS: connect NQN through listener A, wait for PATHS
# namespace paths, compare its ANA log summary, disconnect.
check_subsystem_log() {
    _keep=$SUBNQN; SUBNQN=$2
    if ! connect_port "$1-connect" "$TARGET_PORT" "$2"; then
        check_fail "$1" "nvme connect to $2 exited non-zero" "$(out "$1-connect")"; SUBNQN=$_keep; return
    fi
    _i=0; _c=; _np=0
    while [ "$_i" -lt "$((DEVICE_WAIT_S * 3))" ]; do
        _c=$(find_ctrl) && _np=$(count_paths "$_c")
        [ -n "$_c" ] && [ "$_np" -ge "$4" ] && break
        sleep 1; _i=$((_i + 1))
    done
    if [ -z "$_c" ] || [ "$_np" -ne "$4" ]; then
        dmesg | grep -i 'nvme\|ana' | tail -n 20 > "$(out "$1")"
        check_fail "$1" "ctrl '$_c': $_np of $4 namespace paths after ${_i}s" "$(out "$1")"
    elif dmesg | grep -qi 'ANA log page size\|Invalid MNAN\|disabling ANA\|ANA group'; then
        dmesg | grep -i 'ana' | tail -n 20 > "$(out "$1")"
        check_fail "$1" "the kernel complained about ANA" "$(out "$1")"
    else
        check_ana_log "$1" "$_c" "$3"
    fi
    run "$1-disconnect" nvme disconnect -n "$2"
    sleep 1
    SUBNQN=$_keep
}

run_ana_checks() {
    if [ -z "$TARGET_ADDR" ] || [ -z "$SUBNQN" ] || [ -z "$PORT_B" ] || [ -z "$ANA2_NQN" ] || [ -z "$ANA300_NQN" ]; then
        echo "ana_checks.sh: TARGET_ADDR, SUBNQN, PORT_B, ANA2_NQN and ANA300_NQN must be set"; return 2
    fi
    echo "ana: target $TARGET_ADDR ports $TARGET_PORT/$PORT_B subnqn $SUBNQN"
    check_multipath_param
    if check_connect_paths; then
        check_states ana-list-subsys optimized optimized
        check_fio_switching
        check_ana_log ana-log-1 "$CTRL_A" "$EXPECT_ANA1"
        check_disconnect ana-disconnect
    else
        _skip="ana-one-namespace ana-list-subsys"
        _n=1; while [ "$_n" -le "$SWITCHES" ]; do _skip="$_skip ana-switch-$_n"; _n=$((_n + 1)); done
        # shellcheck disable=SC2086  # a list of check names
        skip_dependents "the two paths did not come up" $_skip ana-fio ana-log-1 ana-disconnect
        disconnect_all
    fi
    check_subsystem_log ana-log-2 "$ANA2_NQN" "$EXPECT_ANA2" 2
    check_subsystem_log ana-log-300 "$ANA300_NQN" "$EXPECT_ANA300" "$NS300"
    echo "CHECKS-DONE total=$CHECK_TOTAL failed=$CHECK_FAILED"
    [ "$CHECK_FAILED" -eq 0 ]
}
