# Live REST changes seen by the Linux host (busybox ash), in one boot. Needs checks.sh
# (reporting, connect_as, find_ctrl, find_ns ...) and host_action.sh sourced, and a host serving
# the actions "add-namespace" and "remove-namespace" (tests/interop/test_rest_live.py): the
# host adds / removes namespace ADD_NSID of SUBNQN over dpu-emu's REST API while this host is
# connected; the kernel must pick the change up from the Namespace Attribute Changed event
# (rescan), without reconnecting.
#
# Parameters (besides checks.sh's TARGET_ADDR, TARGET_PORT, SUBNQN, NSID):
#   ADD_NSID (2)            the namespace the host adds and removes
#   RESCAN_WAIT_S (30)      how long to wait for the kernel to see the change
#   LOCKED_NQN              a subsystem that does not admit this host (allow_any_host false)
#   TENANT_NQN              a subsystem shared by two tenants, masked per host
#   HOSTNQN_A HOSTID_A TENANT_A_NSID   tenant A's host NQN / host ID and its only namespace
#   HOSTNQN_B HOSTID_B TENANT_B_NSID   tenant B's
# Reports: rest-connect rest-ns-added rest-ns-removed rest-disconnect rest-acl-refused
#          rest-tenant-b-masked rest-tenant-a-masked

: "${ADD_NSID:=2}" "${RESCAN_WAIT_S:=30}" "${TENANT_A_NSID:=1}" "${TENANT_B_NSID:=2}"

# ns_name NSID: the block device name of namespace NSID of SUBNQN (empty if none).
# shellcheck disable=SC2030,SC2031  # the subshell keeps NSID for the caller
ns_name() { (NSID=$1; find_ns); }

# ns_present NSID: the block device of namespace NSID of SUBNQN exists.
ns_present() { _n=$(ns_name "$1"); [ -n "$_n" ] && [ -b "/dev/$_n" ]; }

# wait_ns NSID present|absent: polls up to RESCAN_WAIT_S; prints the milliseconds it took.
wait_ns() {
    _t0=$(uptime_ms); _end=$(( _t0 + RESCAN_WAIT_S * 1000 ))
    while [ "$(uptime_ms)" -lt "$_end" ]; do
        if ns_present "$1"; then [ "$2" = present ] && break
        else [ "$2" = absent ] && break
        fi
        sleep 1
    done
    echo $(( $(uptime_ms) - _t0 ))
}

# same_controller CTRL: still the controller we connected (no reconnect happened).
same_controller() { [ "$(find_ctrl)" = "$1" ] && [ "$(cat "/sys/class/nvme/$1/state" 2>/dev/null)" = live ]; }

# shellcheck disable=SC2031  # NSID is the caller's (ns_name changes only its subshell's)
check_ns_change() {   # CHECK ACTION NSID present|absent
    _ctrl=$CTRL; _cntlid=$(cat "/sys/class/nvme/$CTRL/cntlid" 2>/dev/null)
    if ! host_action "$2"; then check_fail "$1" "host action $2 failed: $HOST_ACTION_DETAIL"; return 1; fi
    _took=$(wait_ns "$3" "$4")
    run "$1" nvme list
    _listed=$(grep -c "^/dev/nvme" "$(out "$1")")
    dmesg | grep -i nvme | tail -n 5 >> "$(out "$1")"
    _detail="nsid $3 $4 after ${_took}ms; ctrl $_ctrl cntlid $_cntlid; nvme list: $_listed device(s); host: $HOST_ACTION_DETAIL"
    if [ "$4" = present ] && ! ns_present "$3"; then check_fail "$1" "not seen: $_detail" "$(out "$1")"; return 1
    elif [ "$4" = absent ] && ns_present "$3"; then check_fail "$1" "still there: $_detail" "$(out "$1")"; return 1
    elif ! ns_present "$NSID"; then check_fail "$1" "namespace $NSID vanished: $_detail" "$(out "$1")"; return 1
    elif ! same_controller "$_ctrl" || [ "$(cat "/sys/class/nvme/$_ctrl/cntlid")" != "$_cntlid" ]; then
        check_fail "$1" "the controller changed (reconnect?): $_detail" "$(out "$1")"; return 1
    elif [ "$4" = present ] && ! grep -q "^/dev/$(ns_name "$3") " "$(out "$1")"; then
        check_fail "$1" "block device present but not in nvme list: $_detail" "$(out "$1")"; return 1
    fi
    check_pass "$1" "$_detail"
}

check_acl_refused() {
    _keep=$SUBNQN; SUBNQN=$LOCKED_NQN
    # shellcheck disable=SC2086  # CONNECT_OPTS is a list of options
    if run rest-acl-refused nvme connect -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT" -n "$LOCKED_NQN" $CONNECT_OPTS; then
        _ctrl=$(find_ctrl); disconnect_all
        check_fail rest-acl-refused "nvme connect to $LOCKED_NQN succeeded (ctrl '$_ctrl')" "$(out rest-acl-refused)"
    elif find_ctrl > /dev/null; then
        disconnect_all
        check_fail rest-acl-refused "a controller to $LOCKED_NQN exists after the refusal" "$(out rest-acl-refused)"
    else
        check_pass rest-acl-refused "refused: $(_oneline < "$(out rest-acl-refused)" | cut -c1-120)"
    fi
    SUBNQN=$_keep
}

# check_tenant CHECK HOSTNQN HOSTID OWN_NSID OTHER_NSID: connect to TENANT_NQN as HOSTNQN; the
# controller must list only OWN_NSID (not the other tenant's OTHER_NSID).
check_tenant() {
    _keep=$SUBNQN; SUBNQN=$TENANT_NQN
    disconnect_all
    # shellcheck disable=SC2086  # CONNECT_OPTS is a list of options
    if ! run "$1" nvme connect -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT" -n "$TENANT_NQN" \
            --hostnqn="$2" --hostid="$3" $CONNECT_OPTS; then
        check_fail "$1" "nvme connect as $2 exited non-zero" "$(out "$1")"; SUBNQN=$_keep; return
    fi
    _i=0
    while ! ns_present "$4" && [ "$_i" -lt "$DEVICE_WAIT_S" ]; do sleep 1; _i=$((_i + 1)); done
    _ctrl=$(find_ctrl)
    run "$1-list-ns" nvme list-ns "/dev/$_ctrl"
    _ids=$(sed -n 's/.*\]:0x\([0-9a-fA-F]*\).*/\1/p' "$(out "$1-list-ns")" | tr '\n' ' ')
    _host=$(cat "/sys/class/nvme/$_ctrl/hostnqn" 2>/dev/null)
    _detail="ctrl $_ctrl hostnqn $_host: list-ns [ $_ids] own $4 other $5; own block device: $(ns_present "$4" && echo yes || echo no)"
    if [ "$_host" != "$2" ]; then check_fail "$1" "wrong host NQN: $_detail" "$(out "$1-list-ns")"
    elif [ "$(echo "$_ids" | tr -d ' ')" != "$(printf '%x' "$4")" ]; then
        check_fail "$1" "expected only nsid $4: $_detail" "$(out "$1-list-ns")"
    elif ns_present "$5"; then check_fail "$1" "the other tenant's namespace has a block device: $_detail"
    elif ! ns_present "$4"; then check_fail "$1" "own namespace missing: $_detail"
    else check_pass "$1" "$_detail"
    fi
    run "$1-disconnect" nvme disconnect -n "$TENANT_NQN"
    sleep 1
    SUBNQN=$_keep
}

run_rest_checks() {
    if [ -z "$TARGET_ADDR" ] || [ -z "$SUBNQN" ] || [ -z "$LOCKED_NQN" ] || [ -z "$TENANT_NQN" ]; then
        echo "rest_checks.sh: TARGET_ADDR, SUBNQN, LOCKED_NQN and TENANT_NQN must be set"; return 2
    fi
    echo "rest: target $TARGET_ADDR:$TARGET_PORT subnqn $SUBNQN add nsid $ADD_NSID"
    if connect_as rest-connect; then
        if check_ns_change rest-ns-added add-namespace "$ADD_NSID" present; then
            check_ns_change rest-ns-removed remove-namespace "$ADD_NSID" absent
        else
            skip_dependents "the added namespace was not seen" rest-ns-removed
        fi
        check_disconnect rest-disconnect
    else
        skip_dependents "connect failed" rest-ns-added rest-ns-removed rest-disconnect
    fi
    check_acl_refused
    check_tenant rest-tenant-b-masked "$HOSTNQN_B" "$HOSTID_B" "$TENANT_B_NSID" "$TENANT_A_NSID"
    check_tenant rest-tenant-a-masked "$HOSTNQN_A" "$HOSTID_A" "$TENANT_A_NSID" "$TENANT_B_NSID"
    echo "CHECKS-DONE total=$CHECK_TOTAL failed=$CHECK_FAILED"
    [ "$CHECK_FAILED" -eq 0 ]
}
