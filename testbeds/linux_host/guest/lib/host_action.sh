# Ask the host to do something during this boot (busybox ash); the host side is
# testbeds/linux_host/host_actions.py (run_guest(..., on_line=HostActions({...}))).
#
#   host_action NAME [TIMEOUT_S]
# prints "@@HOST-ACTION nonce=<NONCE> id=<n> name=NAME@@" on the console, then reads
# /dev/console (the host writes to qemu's serial input) until "@@HOST-DONE id=<n> status=<s>
# detail=<text>@@" comes, at most TIMEOUT_S (default HOST_ACTION_TIMEOUT_S = 60) seconds.
# Returns the host's status (0 = done), 124 when no answer came; sets HOST_ACTION_DETAIL.
#
#   uptime_ms: the guest's uptime in milliseconds (the clock of dmesg's timestamps).

: "${HOST_ACTION_TIMEOUT_S:=60}"
HOST_ACTION_SEQ=0
HOST_ACTION_DETAIL=
HOST_ACTION_POLL_S=2
# shellcheck source=/dev/null
[ -n "$NONCE" ] || . /guest/params   # NONCE: this boot's nonce, checked by the host

uptime_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

host_action() {
    HOST_ACTION_SEQ=$((HOST_ACTION_SEQ + 1))
    _ha_id=$HOST_ACTION_SEQ
    HOST_ACTION_DETAIL="no answer from the host"
    _ha_end=$(( $(uptime_ms) + ${2:-$HOST_ACTION_TIMEOUT_S} * 1000 ))
    echo "@@HOST-ACTION nonce=$NONCE id=$_ha_id name=$1@@" > /dev/console
    while [ "$(uptime_ms)" -lt "$_ha_end" ]; do
        # shellcheck disable=SC3045  # busybox ash has read -t
        IFS= read -r -t "$HOST_ACTION_POLL_S" _ha_line < /dev/console || continue
        case "$_ha_line" in
            *"@@HOST-DONE id=$_ha_id status="*)
                _ha_rest=${_ha_line#*"@@HOST-DONE id=$_ha_id status="}
                _ha_status=${_ha_rest%% *}
                _ha_detail=${_ha_rest#* detail=}
                # shellcheck disable=SC2034  # read by the callers
                HOST_ACTION_DETAIL=${_ha_detail%@@*}
                case "$_ha_status" in
                    ''|*[!0-9]*) return 1 ;;
                esac
                return "$_ha_status" ;;
        esac
    done
    return 124
}
