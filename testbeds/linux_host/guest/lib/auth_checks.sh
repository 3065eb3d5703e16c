# DH-HMAC-CHAP in-band authentication against the target, judged by the Linux host (busybox ash).
# Needs checks.sh and host_action.sh sourced; SUBNQN is a subsystem whose host entry AUTH_HOSTNQN
# requires authentication (provisioned over REST by tests/interop/test_auth_vm.py), with the host
# actions "use-sha384-null", "use-sha512-ffdhe3072" and "use-sha512-ffdhe8192" re-provisioning the
# allowed hash / DH group.
#
# Parameters (besides checks.sh's TARGET_ADDR, TARGET_PORT, SUBNQN, NSID):
#   AUTH_HOSTNQN AUTH_HOSTID     the host identity the entry is for
#   AUTH_KEY AUTH_CTRL_KEY       the right host / controller DHHC-1 secrets
#   WRONG_KEY WRONG_CTRL_KEY     wrong ones
#   AUTH_IO_MIB (1)              data written and read back after each successful connect
# Reports: auth-no-secret auth-wrong-secret auth-uni auth-uni-io auth-bi auth-bi-io
#          auth-wrong-ctrl auth-sha384-null auth-sha512-ffdhe3072 auth-sha512-ffdhe8192

: "${AUTH_IO_MIB:=1}"

auth_connect() {   # NAME [options]: nvme connect as AUTH_HOSTNQN with one I/O queue
    _n=$1; shift
    disconnect_all
    # shellcheck disable=SC2086  # CONNECT_OPTS is a list of options
    run "$_n" nvme connect -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT" -n "$SUBNQN" -i 1 \
        --hostnqn="$AUTH_HOSTNQN" --hostid="$AUTH_HOSTID" $CONNECT_OPTS "$@"
}

# check_refused NAME [options]: the connect must fail and leave no controller.
check_refused() {
    _n=$1
    if auth_connect "$@"; then
        _c=$(find_ctrl); disconnect_all
        check_fail "$_n" "nvme connect succeeded (ctrl '$_c')" "$(out "$_n")"
    elif find_ctrl > /dev/null; then
        disconnect_all; check_fail "$_n" "a controller exists after the refusal" "$(out "$_n")"
    else
        check_pass "$_n" "refused: $(_oneline < "$(out "$_n")" | cut -c1-100); dmesg: $(dmesg | grep -i 'nvme' | tail -n 1 | cut -c1-120)"
    fi
}

# check_accepted NAME [options]: connect, namespace appears, I/O verified (NAME-io), disconnect.
check_accepted() {
    _n=$1
    if ! auth_connect "$@"; then
        check_fail "$_n" "nvme connect exited non-zero; dmesg: $(dmesg | grep -i nvme | tail -n 2 | _oneline)" "$(out "$_n")"
        skip_dependents "connect failed" "$_n-io"; return 1
    fi
    if ! wait_for_devices; then
        check_fail "$_n" "no namespace within ${DEVICE_WAIT_S}s" "$(out "$_n")"; disconnect_all
        skip_dependents "no namespace" "$_n-io"; return 1
    fi
    _qc=$(cat "/sys/class/nvme/$CTRL/queue_count" 2>/dev/null)
    check_pass "$_n" "ctrl=$CTRL queue_count=$_qc (admin + I/O queues each authenticated)"
    [ "$AUTH_IO" = 1 ] && verify_io "$_n-io" "$AUTH_IO_MIB" 0
    disconnect_all
}

run_auth_checks() {
    if [ -z "$AUTH_HOSTNQN" ] || [ -z "$AUTH_KEY" ] || [ -z "$AUTH_CTRL_KEY" ]; then
        echo "auth_checks.sh: AUTH_HOSTNQN, AUTH_KEY and AUTH_CTRL_KEY must be set"; return 2
    fi
    echo "auth: target $TARGET_ADDR:$TARGET_PORT subnqn $SUBNQN host $AUTH_HOSTNQN"
    check_refused auth-no-secret
    check_refused auth-wrong-secret --dhchap-secret="$WRONG_KEY"
    AUTH_IO=1 check_accepted auth-uni --dhchap-secret="$AUTH_KEY"
    AUTH_IO=1 check_accepted auth-bi --dhchap-secret="$AUTH_KEY" --dhchap-ctrl-secret="$AUTH_CTRL_KEY"
    check_refused auth-wrong-ctrl --dhchap-secret="$AUTH_KEY" --dhchap-ctrl-secret="$WRONG_CTRL_KEY"
    if host_action use-sha384-null; then
        AUTH_IO=0 check_accepted auth-sha384-null --dhchap-secret="$AUTH_KEY" --dhchap-ctrl-secret="$AUTH_CTRL_KEY"
    else
        check_fail auth-sha384-null "host action failed: $HOST_ACTION_DETAIL"
    fi
    if host_action use-sha512-ffdhe3072; then
        AUTH_IO=0 check_accepted auth-sha512-ffdhe3072 --dhchap-secret="$AUTH_KEY" \
            --dhchap-ctrl-secret="$AUTH_CTRL_KEY"
    else
        check_fail auth-sha512-ffdhe3072 "host action failed: $HOST_ACTION_DETAIL"
    fi
    # Under TCG the guest's own 8192-bit DH arithmetic outlasts the default 5 s KATO, which the
    # target (like nvmet) counts from the Connect; a longer KATO lets the exchange finish.
    if host_action use-sha512-ffdhe8192; then
        AUTH_IO=0 check_accepted auth-sha512-ffdhe8192 --keep-alive-tmo=60 --dhchap-secret="$AUTH_KEY" \
            --dhchap-ctrl-secret="$AUTH_CTRL_KEY"
    else
        check_fail auth-sha512-ffdhe8192 "host action failed: $HOST_ACTION_DETAIL"
    fi
    echo "CHECKS-DONE total=$CHECK_TOTAL failed=$CHECK_FAILED"
    [ "$CHECK_FAILED" -eq 0 ]
}
