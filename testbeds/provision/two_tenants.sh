#!/usr/bin/env bash
# Provision a running dpu-emu for two tenants over its REST API, with curl only.
#
#   one subsystem (hosts listed explicitly), one 1 GiB RAM namespace per tenant,
#   tenant "blue" (host A sees NSID 1 only) and tenant "red" (host B sees NSID 2 only).
#
# Environment:
#   DPU_EMU_URL          REST API (default http://127.0.0.1:8080)
#   DPU_EMU_ADMIN_TOKEN  administrator token (default: read from DPU_EMU_ADMIN_TOKEN_FILE,
#                        or ~/.local/state/dpu-emu/admin-token)
#   SUBNQN, HOST_A, HOST_B, OUT_DIR (where the tenants' tokens are written, mode 0600)
# Exit status: 0 when every call succeeded; curl's non-zero status otherwise.
set -euo pipefail

URL="${DPU_EMU_URL:-http://127.0.0.1:8080}"
TOKEN_FILE="${DPU_EMU_ADMIN_TOKEN_FILE:-${XDG_STATE_HOME:-$HOME/.local/state}/dpu-emu/admin-token}"
TOKEN="${DPU_EMU_ADMIN_TOKEN:-$(cat "$TOKEN_FILE")}"
SUBNQN="${SUBNQN:-nqn.2026-11.io.dpu-emu:two-tenants}"
HOST_A="${HOST_A:-nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-00000000000a}"
HOST_B="${HOST_B:-nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-00000000000b}"
OUT_DIR="${OUT_DIR:-.}"
SIZE=$((1 << 30))

api() {  # api METHOD PATH [JSON]
    local args=(-fsS -X "$1" -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json")
    [[ $# -ge 3 ]] && args+=(-d "$3")
    curl "${args[@]}" "$URL$2"
    echo
}

api POST /v1/subsystems "{\"nqn\": \"$SUBNQN\", \"allow_any_host\": false, \"hosts\": [\"$HOST_A\", \"$HOST_B\"]}"
api POST "/v1/subsystems/$SUBNQN/namespaces" "{\"nsid\": 1, \"size_bytes\": $SIZE}"
api POST "/v1/subsystems/$SUBNQN/namespaces" "{\"nsid\": 2, \"size_bytes\": $SIZE}"

umask 077
for tenant in blue:"$HOST_A":1 red:"$HOST_B":2; do
    name="${tenant%%:*}"; rest="${tenant#*:}"; nsid="${rest##*:}"; host="${rest%:*}"
    reply="$(api POST /v1/tenants \
        "{\"name\": \"$name\", \"hosts\": [\"$host\"], \"namespaces\": [{\"subsystem\": \"$SUBNQN\", \"nsid\": $nsid}]}")"
    printf '%s\n' "$reply" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p' > "$OUT_DIR/$name.token"
    echo "tenant $name: host $host sees $SUBNQN nsid $nsid; token in $OUT_DIR/$name.token"
done

api GET /v1/tenants
