# NVMe/TCP host-side interop checks for the dpu-emu Linux-host testbed (busybox ash).
# Source it, set the parameters, call run_all_checks. Each check prints exactly one line
#   CHECK <name> PASS|FAIL <detail>
# (a failing check prints the command output first, as "  | ..." lines), and the run ends with
#   CHECKS-DONE total=<n> failed=<m>
# run_all_checks returns 0 only if every check passed.
#
# Parameters (shell variables):
#   TARGET_ADDR       address of the I/O and discovery ports (127.0.0.1, or 10.0.2.2 = the host)
#   TARGET_PORT       I/O port                       (default 4420)
#   DISCOVERY_PORT    discovery port                 (default 8009)
#   SUBNQN            subsystem NQN to discover and connect to
#   NSID              namespace to exercise          (default 1)
#   EXPECT_MODEL / EXPECT_SERIAL / EXPECT_LBA_BYTES   optional: compared with id-ctrl / the disk
#   EXPECT_DISC_TRSVCID   optional: trsvcid the discovery log entry for SUBNQN must carry
#   DD_MIB (16) FIO_JOBS (4) FIO_SIZE_MIB (4, per job) FIO_IODEPTH (32) FIO_RUNTIME_S (90)
#   FIO_TIME_BASED (0; 1 = run the verify job for exactly FIO_RUNTIME_S: write/verify passes
#                   over each job's FIO_SIZE_MIB until the time is up)
#   DIGEST_IO_MIB (4) QUEUES_REQUESTED (4) CMD_TIMEOUT_S (120) DEVICE_WAIT_S (30)
#   CONNECT_OPTS      options added to every nvme connect (default "-l 10": a lost target fails
#                     the I/O after 10 s instead of the default 600 s of reconnect attempts)

: "${TARGET_PORT:=4420}" "${DISCOVERY_PORT:=8009}" "${NSID:=1}"
: "${DD_MIB:=16}" "${FIO_JOBS:=4}" "${FIO_SIZE_MIB:=4}" "${FIO_IODEPTH:=32}" "${FIO_RUNTIME_S:=90}"
: "${FIO_TIME_BASED:=0}"
: "${DIGEST_IO_MIB:=4}" "${QUEUES_REQUESTED:=4}" "${CMD_TIMEOUT_S:=120}" "${DEVICE_WAIT_S:=30}"
: "${CONNECT_OPTS=-l 10}"

CHECK_TOTAL=0
CHECK_FAILED=0
CHECK_WORK=/tmp/checks
CHECK_OUTPUT_LINES=40
MIB=1048576
WRITE_ZEROES_OFFSET_MIB=2
WRITE_ZEROES_BYTES=4096
DISCARD_BYTES=$MIB
mkdir -p "$CHECK_WORK"

# --- reporting --------------------------------------------------------------------------------

_oneline() { tr '\n\t' '  ' | tr -s ' ' | cut -c1-300; }

check_pass() {   # NAME [DETAIL]
    CHECK_TOTAL=$((CHECK_TOTAL + 1))
    echo "CHECK $1 PASS $(echo "${2:-ok}" | _oneline)"
}

check_fail() {   # NAME DETAIL [OUTPUT_FILE]
    CHECK_TOTAL=$((CHECK_TOTAL + 1))
    CHECK_FAILED=$((CHECK_FAILED + 1))
    if [ -n "$3" ] && [ -f "$3" ]; then
        tail -n "$CHECK_OUTPUT_LINES" "$3" | sed 's/^/  | /'
    fi
    echo "CHECK $1 FAIL $(echo "${2:-failed}" | _oneline)"
}

# run NAME CMD...: runs CMD with a deadline, output to $CHECK_WORK/NAME.out; returns its status.
run() {
    _name=$1; shift
    timeout -s KILL "$CMD_TIMEOUT_S" "$@" > "$CHECK_WORK/$_name.out" 2>&1
}

out() { echo "$CHECK_WORK/$1.out"; }

# field FILE KEY: value of a "key : value" line of nvme-cli's normal output, trimmed.
field() { awk -F: -v k="$2" '{g=$1; gsub(/ /, "", g)} g == k {sub(/^[^:]*:[ ]*/, ""); sub(/[ ]+$/, ""); print; exit}' "$1"; }

# --- device discovery -------------------------------------------------------------------------

# find_ctrl: name (nvmeM) of the live TCP controller to SUBNQN at TARGET_ADDR:TARGET_PORT.
find_ctrl() {
    for _c in /sys/class/nvme/nvme*; do
        [ -r "$_c/subsysnqn" ] || continue
        [ "$(cat "$_c/subsysnqn")" = "$SUBNQN" ] || continue
        [ "$(cat "$_c/transport" 2>/dev/null)" = tcp ] || continue
        case "$(cat "$_c/address" 2>/dev/null)," in
            *"traddr=$TARGET_ADDR,trsvcid=$TARGET_PORT,"*) echo "${_c##*/}"; return 0 ;;
        esac
    done
    return 1
}

# find_ns: block device name of namespace NSID of SUBNQN (multipath head, e.g. nvme0n1).
find_ns() {
    for _s in /sys/class/nvme-subsystem/nvme-subsys*; do
        [ -r "$_s/subsysnqn" ] || continue
        [ "$(cat "$_s/subsysnqn")" = "$SUBNQN" ] || continue
        for _b in "$_s"/nvme*n*; do
            [ -r "$_b/nsid" ] && [ "$(cat "$_b/nsid")" = "$NSID" ] && { echo "${_b##*/}"; return 0; }
        done
    done
    for _b in /sys/block/nvme*n*; do   # without native multipath
        [ -r "$_b/device/subsysnqn" ] || continue
        [ "$(cat "$_b/device/subsysnqn")" = "$SUBNQN" ] && [ "$(cat "$_b/nsid")" = "$NSID" ] &&
            { echo "${_b##*/}"; return 0; }
    done
    return 1
}

# wait_for_devices: sets CTRL, DEV (/dev/nvmeXnY), NS_NAME; waits up to DEVICE_WAIT_S.
wait_for_devices() {
    _i=0
    while [ "$_i" -lt "$DEVICE_WAIT_S" ]; do
        CTRL=$(find_ctrl) && NS_NAME=$(find_ns) && [ -b "/dev/$NS_NAME" ] && {
            DEV=/dev/$NS_NAME
            return 0
        }
        sleep 1
        _i=$((_i + 1))
    done
    return 1
}

disconnect_all() { nvme disconnect -n "$SUBNQN" > /dev/null 2>&1; sleep 1; }

# --- checks -----------------------------------------------------------------------------------

check_discover() {
    if ! run discover nvme discover -t tcp -a "$TARGET_ADDR" -s "$DISCOVERY_PORT"; then
        check_fail discover "nvme discover exited non-zero" "$(out discover)"; return
    fi
    _entry=$(awk -v n="$SUBNQN" '/^=====Discovery Log Entry/ {e=""} {e=e" "$0} $1=="subnqn:" && $2==n {print e; exit}' "$(out discover)")
    if [ -z "$_entry" ]; then
        check_fail discover "$SUBNQN not in the discovery log" "$(out discover)"; return
    fi
    _svc=$(echo "$_entry" | sed -n 's/.*trsvcid: *\([^ ]*\).*/\1/p')
    if [ -n "$EXPECT_DISC_TRSVCID" ] && [ "$_svc" != "$EXPECT_DISC_TRSVCID" ]; then
        check_fail discover "entry trsvcid $_svc, expected $EXPECT_DISC_TRSVCID" "$(out discover)"
        return
    fi
    check_pass discover "$(grep -m 1 'Number of Records' "$(out discover)"); subnqn entry trsvcid=$_svc"
}

# connect_as NAME [nvme connect options]: connects and waits for the namespace block device.
connect_as() {
    _check=$1; shift
    disconnect_all
    # shellcheck disable=SC2086  # CONNECT_OPTS is a list of options
    if ! run "$_check" nvme connect -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT" -n "$SUBNQN" \
            $CONNECT_OPTS "$@"; then
        check_fail "$_check" "nvme connect $* exited non-zero" "$(out "$_check")"; return 1
    fi
    if ! wait_for_devices; then
        check_fail "$_check" "no controller/namespace $NSID within ${DEVICE_WAIT_S}s" "$(out "$_check")"
        return 1
    fi
    _qc=$(cat "/sys/class/nvme/$CTRL/queue_count" 2>/dev/null)
    check_pass "$_check" "ctrl=$CTRL dev=$DEV queue_count=$_qc opts='$*'"
}

check_list() {
    if run list nvme list && grep -q "^$DEV " "$(out list)"; then
        check_pass list "$(grep "^$DEV " "$(out list)")"
    else
        check_fail list "$DEV not in nvme list" "$(out list)"
    fi
}

check_id_ctrl() {
    run id-ctrl nvme id-ctrl "/dev/$CTRL" || { check_fail id-ctrl "exit non-zero" "$(out id-ctrl)"; return; }
    _f=$(out id-ctrl)
    _mn=$(field "$_f" mn); _sn=$(field "$_f" sn); _nqn=$(field "$_f" subnqn)
    _detail="mn='$_mn' sn='$_sn' fr='$(field "$_f" fr)' ver=$(field "$_f" ver) subnqn=$_nqn"
    if [ "$_nqn" != "$SUBNQN" ]; then check_fail id-ctrl "subnqn mismatch: $_detail" "$_f"
    elif [ -n "$EXPECT_MODEL" ] && [ "$_mn" != "$EXPECT_MODEL" ]; then
        check_fail id-ctrl "model != '$EXPECT_MODEL': $_detail" "$_f"
    elif [ -n "$EXPECT_SERIAL" ] && [ "$_sn" != "$EXPECT_SERIAL" ]; then
        check_fail id-ctrl "serial != '$EXPECT_SERIAL': $_detail" "$_f"
    else check_pass id-ctrl "$_detail"
    fi
}

check_id_ns() {
    run id-ns nvme id-ns "/dev/$CTRL" -n "$NSID" || { check_fail id-ns "exit non-zero" "$(out id-ns)"; return; }
    _nsze=$(field "$(out id-ns)" nsze)
    _lbs=$(cat "/sys/block/$NS_NAME/queue/logical_block_size")
    _detail="nsze=$_nsze flbas=$(field "$(out id-ns)" flbas) lba_bytes=$_lbs"
    if [ -z "$_nsze" ] || [ "$((_nsze))" -le 0 ]; then check_fail id-ns "bad nsze: $_detail" "$(out id-ns)"
    elif [ -n "$EXPECT_LBA_BYTES" ] && [ "$_lbs" != "$EXPECT_LBA_BYTES" ]; then
        check_fail id-ns "lba size != $EXPECT_LBA_BYTES: $_detail" "$(out id-ns)"
    else check_pass id-ns "$_detail"
    fi
}

# check_admin NAME PATTERN CMD...: passes if CMD exits 0 and its output matches PATTERN
# (case-insensitive).
check_admin() {
    _n=$1; _pat=$2; shift 2
    if run "$_n" "$@" && grep -qi "$_pat" "$(out "$_n")"; then
        check_pass "$_n" "$(grep -i -m 1 "$_pat" "$(out "$_n")")"
    else
        check_fail "$_n" "$* failed or printed no '$_pat'" "$(out "$_n")"
    fi
}

# verify_io NAME MIB OFFSET_MIB: random data written and read back with O_DIRECT, sha256 equal.
verify_io() {
    _n=$1; _mib=$2; _off=$3; _w=$CHECK_WORK/$_n
    {
        dd if=/dev/urandom of="$_w.pattern" bs=$MIB count="$_mib" &&
        _t0=$(date +%s) &&
        timeout -s KILL "$CMD_TIMEOUT_S" dd if="$_w.pattern" of="$DEV" bs=$MIB seek="$_off" count="$_mib" oflag=direct conv=fsync &&
        timeout -s KILL "$CMD_TIMEOUT_S" dd if="$DEV" of="$_w.readback" bs=$MIB skip="$_off" count="$_mib" iflag=direct &&
        _t1=$(date +%s)
    } > "$_w.out" 2>&1 || { check_fail "$_n" "dd failed" "$_w.out"; rm -f "$_w".*back "$_w.pattern"; return; }
    _a=$(sha256sum < "$_w.pattern" | cut -c1-16); _b=$(sha256sum < "$_w.readback" | cut -c1-16)
    rm -f "$_w.pattern" "$_w.readback"
    if [ "$_a" = "$_b" ]; then check_pass "$_n" "${_mib} MiB at ${_off} MiB sha256=$_a... in $((_t1 - _t0))s"
    else check_fail "$_n" "checksum mismatch: wrote $_a read $_b" "$_w.out"
    fi
}

check_fio() {
    _off=$((DD_MIB + 1))
    _tb=; _mode="runtime<=${FIO_RUNTIME_S}s"
    [ "$FIO_TIME_BASED" = 1 ] && { _tb=--time_based; _mode="time_based runtime=${FIO_RUNTIME_S}s"; }
    _t0=$(date +%s)
    # shellcheck disable=SC2086  # _tb is empty or one option
    if run fio-verify fio --name=verify --filename="$DEV" --ioengine=libaio --direct=1 \
        --rw=randwrite --bs=4k --iodepth="$FIO_IODEPTH" --numjobs="$FIO_JOBS" \
        --size="${FIO_SIZE_MIB}m" --offset="${_off}m" --offset_increment="${FIO_SIZE_MIB}m" \
        --verify=crc32c --verify_fatal=1 --do_verify=1 --runtime="$FIO_RUNTIME_S" $_tb \
        --group_reporting --thread; then
        _r=$(grep -m 1 -E '^ *READ:' "$(out fio-verify)" | sed 's/^ *//')
        check_pass fio-verify "$_mode took $(($(date +%s) - _t0))s jobs=$FIO_JOBS iodepth=$FIO_IODEPTH size=${FIO_SIZE_MIB}MiB/job; $(grep -m 1 -E 'WRITE:|write:' "$(out fio-verify)"); verify $_r"
    else
        check_fail fio-verify "fio exited non-zero" "$(out fio-verify)"
    fi
}

check_blkdiscard() {
    if run blkdiscard blkdiscard -o 0 -l "$DISCARD_BYTES" "$DEV"; then
        check_pass blkdiscard "discarded $DISCARD_BYTES bytes at 0"
    else
        check_fail blkdiscard "blkdiscard exited non-zero" "$(out blkdiscard)"
    fi
}

check_write_zeroes() {
    _lbs=$(cat "/sys/block/$NS_NAME/queue/logical_block_size")
    _slba=$((WRITE_ZEROES_OFFSET_MIB * MIB / _lbs)); _nlb=$((WRITE_ZEROES_BYTES / _lbs))
    _w=$CHECK_WORK/wz
    head -c "$WRITE_ZEROES_BYTES" /dev/zero > "$_w.zero"
    {
        dd if=/dev/urandom of="$DEV" bs="$WRITE_ZEROES_BYTES" count=1 seek=$((_slba * _lbs / WRITE_ZEROES_BYTES)) oflag=direct &&
        nvme write-zeroes "$DEV" -n "$NSID" -s "$_slba" -c $((_nlb - 1)) &&
        dd if="$DEV" of="$_w.read" bs="$WRITE_ZEROES_BYTES" count=1 skip=$((_slba * _lbs / WRITE_ZEROES_BYTES)) iflag=direct
    } > "$(out write-zeroes)" 2>&1 || { check_fail write-zeroes "command failed" "$(out write-zeroes)"; return; }
    if cmp -s "$_w.read" "$_w.zero"; then check_pass write-zeroes "slba=$_slba nlb=$_nlb reads back as zeroes"
    else check_fail write-zeroes "slba=$_slba nlb=$_nlb: data is not zero after write-zeroes" "$(out write-zeroes)"
    fi
}

check_disconnect() {   # NAME
    if ! run "$1" nvme disconnect -n "$SUBNQN"; then
        check_fail "$1" "nvme disconnect exited non-zero" "$(out "$1")"; return
    fi
    _i=0
    while find_ctrl > /dev/null && [ "$_i" -lt "$DEVICE_WAIT_S" ]; do sleep 1; _i=$((_i + 1)); done
    if find_ctrl > /dev/null; then check_fail "$1" "controller still present" "$(out "$1")"
    else check_pass "$1" "$(head -n 1 "$(out "$1")")"
    fi
}

check_queues() {
    _want=$QUEUES_REQUESTED
    _cpus=$(grep -c ^processor /proc/cpuinfo)
    [ "$_cpus" -lt "$_want" ] && _want=$_cpus   # the host caps I/O queues at the online CPUs
    _io=$(( $(cat "/sys/class/nvme/$CTRL/queue_count") - 1 ))
    if [ "$_io" -eq "$_want" ]; then check_pass io-queues-count "io_queues=$_io (asked $QUEUES_REQUESTED, cpus $_cpus)"
    else check_fail io-queues-count "io_queues=$_io, expected $_want (asked $QUEUES_REQUESTED, cpus $_cpus)"
    fi
}

skip_dependents() {   # REASON NAME...
    _why=$1; shift
    for _n in "$@"; do check_fail "$_n" "not run: $_why"; done
}

run_all_checks() {
    if [ -z "$TARGET_ADDR" ] || [ -z "$SUBNQN" ]; then
        echo "checks.sh: TARGET_ADDR and SUBNQN must be set"; return 2
    fi
    echo "checks: target $TARGET_ADDR:$TARGET_PORT discovery :$DISCOVERY_PORT subnqn $SUBNQN"
    check_discover
    if connect_as connect; then
        check_list; check_id_ctrl; check_id_ns
        check_admin smart-log critical_warning nvme smart-log "/dev/$CTRL"
        check_admin error-log "Error Log" nvme error-log "/dev/$CTRL"
        check_admin get-feature-7 "Current value" nvme get-feature "/dev/$CTRL" -f 7
        verify_io dd-verify "$DD_MIB" 0
        check_fio; check_blkdiscard; check_write_zeroes
        check_admin flush success nvme flush "$DEV" -n "$NSID"
        check_disconnect disconnect
    else
        skip_dependents "connect failed" list id-ctrl id-ns smart-log error-log get-feature-7 \
            dd-verify fio-verify blkdiscard write-zeroes flush disconnect
    fi
    if connect_as connect-digest -g -G; then
        verify_io io-digest "$DIGEST_IO_MIB" 0
        check_disconnect disconnect-digest
    else
        skip_dependents "connect -g -G failed" io-digest disconnect-digest
    fi
    if connect_as connect-queues -i "$QUEUES_REQUESTED"; then
        check_queues
        verify_io io-queues "$DIGEST_IO_MIB" 0
        check_disconnect disconnect-queues
    else
        skip_dependents "connect -i failed" io-queues-count io-queues disconnect-queues
    fi
    echo "CHECKS-DONE total=$CHECK_TOTAL failed=$CHECK_FAILED"
    [ "$CHECK_FAILED" -eq 0 ]
}
