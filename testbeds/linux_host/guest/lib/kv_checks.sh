# NVMe-KV (command set CSI 01h) checks from the Linux host (busybox ash): the kernel exposes a KV
# namespace only as the generic char device /dev/ngXnY; the commands go through
# `nvme io-passthru` (nvme-cli 2.3). Needs checks.sh sourced (reporting, run, out, skip_dependents).
#
# Command layout (NVMe KV command set; nvmeof facts section 3): key bytes 0-7 in CDW2-CDW3, 8-15 in
# CDW14-CDW15 (little-endian per dword: key byte 0 = low byte of CDW2); CDW11 = key length |
# options << 8; CDW10 = value size (Store) or host buffer size (Retrieve, List).
# Opcodes: Store 0x01 (write), Retrieve 0x02 (read), List 0x06 (read), Delete 0x10, Exist 0x14.
# Store options (CDW11 bits 15:8): 0x01 only if the key exists, 0x02 only if it does not.
# Statuses: 0x86 Invalid Key Size, 0x87 KV Key Does Not Exist, 0x89 Key Exists.
#
# Parameters (besides TARGET_ADDR, TARGET_PORT, SUBNQN):
#   KV_NSID (2)  KV_VALUE_BYTES (4096)  KV_BUF_BYTES (4096)
#   KV_KEY (16 bytes)  KV_KEY2 (short)  KV_ABSENT_KEY    printable ASCII keys
#   KV_EXPECT_KEYS (2)  number of keys List must return (the namespace starts empty)
# Reports: kv-connect kv-generic-device kv-no-block-device kv-store kv-retrieve
#   kv-retrieve-partial kv-exist kv-exist-absent kv-store-no-overwrite kv-store-must-exist
#   kv-store-short-key kv-list kv-list-from-key kv-invalid-key-size kv-delete
#   kv-exist-after-delete kv-retrieve-after-delete kv-disconnect
# Detail formats the host parses: kv-list / kv-list-from-key "count=<n> keys=<hex>,<hex>...";
#   status failures "status=0x<sct/sc> dnr=<0|1>".

: "${KV_NSID:=2}" "${KV_VALUE_BYTES:=4096}" "${KV_BUF_BYTES:=4096}" "${KV_EXPECT_KEYS:=2}"
: "${KV_KEY:=dpu-emu-kv-key-1}" "${KV_KEY2:=short}" "${KV_ABSENT_KEY:=no-such-key}"

KV_OP_STORE=0x01
KV_OP_RETRIEVE=0x02
KV_OP_LIST=0x06
KV_OP_DELETE=0x10
KV_OP_EXIST=0x14
KV_SC_INVALID_KEY_SIZE=0x86
KV_SC_KEY_NOT_EXIST=0x87
KV_SC_KEY_EXISTS=0x89
KV_STORE_MUST_EXIST=1
KV_STORE_MUST_NOT_EXIST=2
KV_PARTIAL_BYTES=1024
KV_KEY_MAX=16
KV_DEV=
KV_BLOCK_NAME=
KV_WORK=$CHECK_WORK/kv

# find_kv_dev: sets KV_DEV=/dev/ngXnY and KV_BLOCK_NAME=nvmeXnY (the hidden disk of the same
# namespace) for namespace KV_NSID of SUBNQN; the generic device shares the disk's XnY.
find_kv_dev() {
    for _b in /sys/class/nvme-subsystem/nvme-subsys*/nvme*n* /sys/block/nvme*n*; do
        [ "$(cat "$_b/nsid" 2>/dev/null)" = "$KV_NSID" ] || continue
        case "${_b##*/}" in *c*n*) continue ;; esac   # a per-path disk of a multipath head
        _nqn=$(cat "${_b%/*}/subsysnqn" 2>/dev/null || cat "$_b/device/subsysnqn" 2>/dev/null)
        [ "$_nqn" = "$SUBNQN" ] || continue
        KV_BLOCK_NAME=${_b##*/}
        KV_DEV=/dev/ng${KV_BLOCK_NAME#nvme}
        [ -c "$KV_DEV" ] && return 0
    done
    return 1
}

# key_dwords KEY: "CDW2 CDW3 CDW14 CDW15" as 0x-hex words of the key, zero-padded to 16 bytes.
key_dwords() {
    { printf '%s' "$1"; head -c "$KV_KEY_MAX" /dev/zero; } | head -c "$KV_KEY_MAX" | od -An -tx4 -v |
        awk '{for (i = 1; i <= NF; i++) printf "0x%s ", $i} END {print ""}'
}

key_hex() { printf '%s' "$1" | od -An -tx1 -v | tr -d ' \n'; }

# kv_cmd NAME OPCODE KEY KEY_LENGTH MORE_OPTIONS...: io-passthru on KV_DEV, output in $(out NAME).
kv_cmd() {
    _n=$1; _op=$2; _key=$3; _kl=$4; shift 4
    # shellcheck disable=SC2046  # key_dwords prints four separate words
    set -- $(key_dwords "$_key") "$@"
    _c2=$1; _c3=$2; _c14=$3; _c15=$4; shift 4
    run "$_n" nvme io-passthru "$KV_DEV" --opcode="$_op" --namespace-id="$KV_NSID" \
        --cdw2="$_c2" --cdw3="$_c3" --cdw14="$_c14" --cdw15="$_c15" --cdw11="$_kl" "$@"
}

# status_of FILE: "0x<sc> <dnr>" from nvme-cli's "NVMe status: ...(0x4087)" line (SCT/SC = low
# 11 bits), empty if there is none.
status_of() {
    _raw=$(sed -n 's/.*NVMe status:.*(\(0x[0-9a-fA-F]*\)).*/\1/p' "$1" | head -n 1)
    [ -n "$_raw" ] || return 1
    printf '0x%x %d\n' $((_raw & 0x7ff)) $(((_raw >> 14) & 1))
}

# result_of FILE: the completion DW0 nvme-cli printed ("... is Success and result: 0x0000000b").
result_of() { sed -n 's/.*result: *\(0x[0-9a-fA-F]*\).*/\1/p' "$1" | head -n 1; }

# expect_status CHECK EXPECTED_SC DESCRIPTION: the last kv_cmd CHECK must fail with that status.
expect_status() {
    _got=$(status_of "$(out "$1")")
    _sc=${_got% *}; _dnr=${_got#* }
    if [ -n "$_got" ] && [ "$((_sc))" -eq "$(($2))" ]; then check_pass "$1" "$3: status=$_sc dnr=$_dnr"
    else check_fail "$1" "$3: expected status $2, got '${_got:-none}'" "$(out "$1")"
    fi
}

# expect_success STATUS CHECK DESCRIPTION: the kv_cmd CHECK that exited STATUS must have succeeded.
expect_success() {
    if [ "$1" -eq 0 ]; then check_pass "$2" "$3: result=$(result_of "$(out "$2")")"
    else check_fail "$2" "$3: $(status_of "$(out "$2")" || echo 'no status')" "$(out "$2")"
    fi
}

# list_parse FILE: "count=<n> keys=<hex>,..." from a List data buffer: u32 count, then per key
# u16 length + key bytes, padded to a multiple of 4 bytes.
list_parse() {
    od -An -tu1 -v "$1" | awk '
        { for (i = 1; i <= NF; i++) b[n++] = $i }
        END {
            c = b[0] + b[1] * 256 + b[2] * 65536 + b[3] * 16777216; p = 4; keys = ""
            for (k = 0; k < c && p + 2 <= n; k++) {
                kl = b[p] + b[p + 1] * 256; h = ""
                for (j = 0; j < kl; j++) h = h sprintf("%02x", b[p + 2 + j])
                keys = keys (k ? "," : "") h; p += int((2 + kl + 3) / 4) * 4
            }
            printf "count=%d keys=%s\n", c, keys
        }'
}

kv_connect() {
    disconnect_all
    # shellcheck disable=SC2086  # CONNECT_OPTS is a list of options
    if ! run kv-connect nvme connect -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT" -n "$SUBNQN" $CONNECT_OPTS; then
        check_fail kv-connect "nvme connect exited non-zero" "$(out kv-connect)"; return 1
    fi
    _i=0
    while ! find_kv_dev && [ "$_i" -lt "$DEVICE_WAIT_S" ]; do sleep 1; _i=$((_i + 1)); done
    CTRL=$(find_ctrl)
    if [ -z "$CTRL" ]; then check_fail kv-connect "no controller for $SUBNQN" "$(out kv-connect)"; return 1; fi
    check_pass kv-connect "ctrl=$CTRL"
    if [ -c "$KV_DEV" ]; then
        check_pass kv-generic-device "nsid $KV_NSID is $KV_DEV ($(cat "/sys/class/nvme-generic/${KV_DEV#/dev/}/dev" 2>/dev/null))"
    else
        ls -l /dev/ng* /dev/nvme* > "$(out kv-generic-device)" 2>&1
        check_fail kv-generic-device "no /dev/ngXnY for nsid $KV_NSID within ${DEVICE_WAIT_S}s" "$(out kv-generic-device)"
        return 1
    fi
}

check_kv_no_block_device() {
    _line=$(dmesg | grep -m 1 "block device for nsid $KV_NSID not supported")
    _sys=/sys/block/$KV_BLOCK_NAME
    _detail="disk $KV_BLOCK_NAME hidden=$(cat "$_sys/hidden" 2>/dev/null) size=$(cat "$_sys/size" 2>/dev/null); dmesg: '$(echo "$_line" | cut -c16-)'"
    ls -l /dev/nvme* > "$(out kv-no-block-device)" 2>&1
    if [ -b "/dev/$KV_BLOCK_NAME" ]; then check_fail kv-no-block-device "/dev/$KV_BLOCK_NAME is a block device: $_detail" "$(out kv-no-block-device)"
    elif [ -z "$_line" ]; then check_fail kv-no-block-device "kernel did not say the block device is unsupported: $_detail"
    else check_pass kv-no-block-device "$_detail"
    fi
}

check_kv_retrieve() {   # CHECK KEY: retrieve into a buffer and compare with the stored value
    kv_cmd "$1" "$KV_OP_RETRIEVE" "$2" "${#2}" --cdw10="$KV_BUF_BYTES" --data-len="$KV_BUF_BYTES" \
        --read --input-file="$KV_WORK.retrieved" || {
        check_fail "$1" "retrieve failed: $(status_of "$(out "$1")" || echo 'no status')" "$(out "$1")"; return; }
    _dw0=$(result_of "$(out "$1")")
    head -c "$KV_VALUE_BYTES" "$KV_WORK.retrieved" > "$KV_WORK.value-back"
    if ! cmp -s "$KV_WORK.value" "$KV_WORK.value-back"; then
        check_fail "$1" "retrieved bytes differ from the stored value (result=$_dw0)" "$(out "$1")"
    elif [ "$((_dw0))" -ne "$KV_VALUE_BYTES" ]; then
        check_fail "$1" "value matches but completion DW0 $_dw0 != value size $KV_VALUE_BYTES" "$(out "$1")"
    else
        check_pass "$1" "$KV_VALUE_BYTES bytes equal (sha256 $(sha256sum < "$KV_WORK.value" | cut -c1-16)...), result=$_dw0"
    fi
}

# A Retrieve into a buffer smaller than the value: the buffer gets the value's first bytes and
# completion DW0 still carries the whole value size (so the host can tell it was truncated).
check_kv_retrieve_partial() {
    kv_cmd kv-retrieve-partial "$KV_OP_RETRIEVE" "$KV_KEY" "${#KV_KEY}" --cdw10="$KV_PARTIAL_BYTES" \
        --data-len="$KV_PARTIAL_BYTES" --read --input-file="$KV_WORK.partial" || {
        check_fail kv-retrieve-partial "retrieve failed: $(status_of "$(out kv-retrieve-partial)" || echo 'no status')" \
            "$(out kv-retrieve-partial)"; return; }
    _dw0=$(result_of "$(out kv-retrieve-partial)")
    head -c "$KV_PARTIAL_BYTES" "$KV_WORK.value" > "$KV_WORK.value-head"
    if ! cmp -s "$KV_WORK.value-head" "$KV_WORK.partial"; then
        check_fail kv-retrieve-partial "the $KV_PARTIAL_BYTES bytes differ from the value's start (result=$_dw0)" \
            "$(out kv-retrieve-partial)"
    elif [ "$((_dw0))" -ne "$KV_VALUE_BYTES" ]; then
        check_fail kv-retrieve-partial "completion DW0 $_dw0, expected the value size $KV_VALUE_BYTES" \
            "$(out kv-retrieve-partial)"
    else
        check_pass kv-retrieve-partial "$KV_PARTIAL_BYTES-byte buffer holds the value's start, result=$_dw0"
    fi
}

check_kv_list() {   # CHECK KEY_OR_EMPTY: List from the first key (KL 0) or from KEY
    if [ -n "$2" ]; then _from=$2; _kl=${#2}; else _from=""; _kl=0; fi
    kv_cmd "$1" "$KV_OP_LIST" "$_from" "$_kl" --cdw10="$KV_BUF_BYTES" --data-len="$KV_BUF_BYTES" \
        --read --input-file="$KV_WORK.list" || {
        check_fail "$1" "list failed: $(status_of "$(out "$1")" || echo 'no status')" "$(out "$1")"; return; }
    _parsed=$(list_parse "$KV_WORK.list")
    od -An -tx1 -v "$KV_WORK.list" | head -n 4 >> "$(out "$1")"
    _count=${_parsed#count=}; _count=${_count%% *}
    _want=$(key_hex "${2:-$KV_KEY}")
    case ",${_parsed#* keys=}," in
        *",$_want,"*) _has=1 ;;
        *) _has=0 ;;
    esac
    if [ "$_has" -ne 1 ]; then check_fail "$1" "key $_want not listed: $_parsed" "$(out "$1")"
    elif [ -z "$2" ] && [ "$_count" -ne "$KV_EXPECT_KEYS" ]; then
        check_fail "$1" "expected $KV_EXPECT_KEYS keys: $_parsed" "$(out "$1")"
    else check_pass "$1" "$_parsed"
    fi
}

run_kv_checks() {
    if [ -z "$TARGET_ADDR" ] || [ -z "$SUBNQN" ]; then
        echo "kv_checks.sh: TARGET_ADDR and SUBNQN must be set"; return 2
    fi
    echo "kv: target $TARGET_ADDR:$TARGET_PORT subnqn $SUBNQN nsid $KV_NSID"
    if ! kv_connect; then
        skip_dependents "no KV generic device" kv-no-block-device kv-store kv-retrieve \
            kv-retrieve-partial kv-exist kv-exist-absent kv-store-no-overwrite kv-store-must-exist \
            kv-store-short-key kv-list kv-list-from-key kv-invalid-key-size kv-delete \
            kv-exist-after-delete kv-retrieve-after-delete kv-disconnect
        disconnect_all
        echo "CHECKS-DONE total=$CHECK_TOTAL failed=$CHECK_FAILED"
        return 1
    fi
    check_kv_no_block_device
    head -c "$KV_VALUE_BYTES" /dev/urandom > "$KV_WORK.value"
    printf 'value of the short key' > "$KV_WORK.value2"
    kv_cmd kv-store "$KV_OP_STORE" "$KV_KEY" "${#KV_KEY}" --cdw10="$KV_VALUE_BYTES" \
        --data-len="$KV_VALUE_BYTES" --write --input-file="$KV_WORK.value"
    expect_success $? kv-store "store $KV_VALUE_BYTES bytes under '$KV_KEY' (${#KV_KEY}-byte key)"
    check_kv_retrieve kv-retrieve "$KV_KEY"
    check_kv_retrieve_partial
    kv_cmd kv-exist "$KV_OP_EXIST" "$KV_KEY" "${#KV_KEY}"
    expect_success $? kv-exist "exist '$KV_KEY'"
    kv_cmd kv-exist-absent "$KV_OP_EXIST" "$KV_ABSENT_KEY" "${#KV_ABSENT_KEY}"
    expect_status kv-exist-absent "$KV_SC_KEY_NOT_EXIST" "exist '$KV_ABSENT_KEY'"
    kv_cmd kv-store-no-overwrite "$KV_OP_STORE" "$KV_KEY" $((${#KV_KEY} | KV_STORE_MUST_NOT_EXIST << 8)) \
        --cdw10=22 --data-len=22 --write --input-file="$KV_WORK.value2"
    expect_status kv-store-no-overwrite "$KV_SC_KEY_EXISTS" "store option 'must not exist' on '$KV_KEY'"
    kv_cmd kv-store-must-exist "$KV_OP_STORE" "$KV_ABSENT_KEY" $((${#KV_ABSENT_KEY} | KV_STORE_MUST_EXIST << 8)) \
        --cdw10=22 --data-len=22 --write --input-file="$KV_WORK.value2"
    expect_status kv-store-must-exist "$KV_SC_KEY_NOT_EXIST" "store option 'must exist' on '$KV_ABSENT_KEY'"
    kv_cmd kv-store-short-key "$KV_OP_STORE" "$KV_KEY2" "${#KV_KEY2}" --cdw10=22 --data-len=22 \
        --write --input-file="$KV_WORK.value2"
    expect_success $? kv-store-short-key "store 22 bytes under '$KV_KEY2' (${#KV_KEY2}-byte key)"
    check_kv_list kv-list ""
    check_kv_list kv-list-from-key "$KV_KEY"
    kv_cmd kv-invalid-key-size "$KV_OP_STORE" "$KV_KEY" $((KV_KEY_MAX + 1)) --cdw10=22 --data-len=22 \
        --write --input-file="$KV_WORK.value2"
    expect_status kv-invalid-key-size "$KV_SC_INVALID_KEY_SIZE" "store with key length $((KV_KEY_MAX + 1))"
    kv_cmd kv-delete "$KV_OP_DELETE" "$KV_KEY" "${#KV_KEY}"
    expect_success $? kv-delete "delete '$KV_KEY'"
    kv_cmd kv-exist-after-delete "$KV_OP_EXIST" "$KV_KEY" "${#KV_KEY}"
    expect_status kv-exist-after-delete "$KV_SC_KEY_NOT_EXIST" "exist '$KV_KEY' after delete"
    kv_cmd kv-retrieve-after-delete "$KV_OP_RETRIEVE" "$KV_KEY" "${#KV_KEY}" --cdw10="$KV_BUF_BYTES" \
        --data-len="$KV_BUF_BYTES" --read --input-file="$KV_WORK.gone"
    expect_status kv-retrieve-after-delete "$KV_SC_KEY_NOT_EXIST" "retrieve '$KV_KEY' after delete"
    check_disconnect kv-disconnect
    echo "CHECKS-DONE total=$CHECK_TOTAL failed=$CHECK_FAILED"
    [ "$CHECK_FAILED" -eq 0 ]
}
