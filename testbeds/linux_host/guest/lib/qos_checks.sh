# QoS bandwidth limit seen by the Linux host's fio (busybox ash). Needs checks.sh and
# host_action.sh sourced. The host side is tests/interop/test_qos_fio.py.
#
# One namespace (NSID), unlimited at first:
#   qos-connect     nvme connect, the namespace's block device appears
#   qos-unlimited   fio sequential read, direct I/O, QOS_MEASURE_S s: what this guest reaches
#   qos-set-limit   host_action set-qos-limit: the host reads qos-unlimited's bw_kib, sets the
#                   namespace's r/w_mbytes_per_sec to about a third of it (REST, live) and answers
#                   "limit_kib=<n>"
#   qos-limited     the same fio job for QOS_RUNTIME_S s against the now limited namespace
#   qos-disconnect
# Detail format the host parses (qos-unlimited, qos-limited):
#   "bw_kib=<KiB/s> io_kib=<KiB> runtime_ms=<ms> bs=<bs> iodepth=<n>"
# (bw_kib = io_kib * 1000 / runtime_ms over the measured window, after a QOS_RAMP_S ramp).
#
# Parameters: QOS_MEASURE_S (8) QOS_RUNTIME_S (15) QOS_RAMP_S (2) QOS_BS (128k) QOS_IODEPTH (8)

: "${QOS_MEASURE_S:=8}" "${QOS_RUNTIME_S:=15}" "${QOS_RAMP_S:=2}" "${QOS_BS:=128k}" "${QOS_IODEPTH:=8}"

# qos_fio NAME SECONDS: sequential direct reads of $DEV; on success prints the detail line.
qos_fio() {
    run "$1" fio --name="$1" --filename="$DEV" --ioengine=libaio --direct=1 --rw=read \
        --bs="$QOS_BS" --iodepth="$QOS_IODEPTH" --numjobs=1 --time_based --runtime="$2" \
        --ramp_time="$QOS_RAMP_S" --output-format=terse --terse-version=3 || return 1
    # terse v3: 6 read io KiB, 7 read bw KiB/s, 9 read runtime ms
    awk -F';' -v bs="$QOS_BS" -v qd="$QOS_IODEPTH" '$1 == "3" && $9 > 0 {
        printf "bw_kib=%d io_kib=%d runtime_ms=%d bs=%s iodepth=%d\n", $6 * 1000 / $9, $6, $9, bs, qd; found = 1; exit
    } END { exit !found }' "$(out "$1")"
}

run_qos_checks() {
    if [ -z "$TARGET_ADDR" ] || [ -z "$SUBNQN" ]; then
        echo "qos_checks.sh: TARGET_ADDR and SUBNQN must be set"; return 2
    fi
    echo "qos checks: target $TARGET_ADDR:$TARGET_PORT subnqn $SUBNQN nsid $NSID"
    if connect_as qos-connect; then
        if _d=$(qos_fio qos-unlimited "$QOS_MEASURE_S"); then
            check_pass qos-unlimited "$_d"
            if host_action set-qos-limit; then
                check_pass qos-set-limit "$HOST_ACTION_DETAIL"
                if _d=$(qos_fio qos-limited "$QOS_RUNTIME_S"); then check_pass qos-limited "$_d"
                else check_fail qos-limited "fio failed" "$(out qos-limited)"
                fi
            else
                check_fail qos-set-limit "host action failed: $HOST_ACTION_DETAIL"
                skip_dependents "no limit set" qos-limited
            fi
        else
            check_fail qos-unlimited "fio failed" "$(out qos-unlimited)"
            skip_dependents "no unlimited measurement" qos-set-limit qos-limited
        fi
        check_disconnect qos-disconnect
    else
        skip_dependents "connect failed" qos-unlimited qos-set-limit qos-limited qos-disconnect
    fi
    echo "CHECKS-DONE total=$CHECK_TOTAL failed=$CHECK_FAILED"
    [ "$CHECK_FAILED" -eq 0 ]
}
