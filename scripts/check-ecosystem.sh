#!/usr/bin/env bash
# The project as its users run it, with tools nobody on the project wrote (issue 16):
#   1. asyncapi   the official AsyncAPI parser validates schemas/asyncapi.yaml
#                 (scripts/check-asyncapi.sh)
#   2. consumers  the consumer examples (CloudEvents SDKs over confluent-kafka, kafkajs, nats-py;
#                 lark-protocol's typed events over rdkafka and async-nats) read what the bridge
#                 publishes to real brokers, both content modes
#                 (scripts/check-consumers.sh)
#   3. lark-oapi  the official Lark SDK's long-connection client against fake-lark, across a
#                 restart of fake-lark (scripts/check-lark-oapi.sh)
#   4. lark-node-sdk  the official Lark SDK for Node makes the helpdesk API calls (token,
#                 subscribe, ticket detail, unsubscribe) against fake-lark's open API, and the
#                 bridge's own subscribe call must match it (scripts/check-lark-node-sdk.sh)
# Every tool is installed into ${LARK_BRIDGE_CACHE:-$HOME/.cache/lark-bridge} when missing
# (scripts/ensure-ecosystem-tools.sh); a second run installs nothing.
# Last line: `ecosystem: N passed, N failed`; exits non-zero when any check failed.
#
#   LARK_BRIDGE_BIN   the bridge binary (default ${CARGO_TARGET_DIR:-target}/debug/lark-bridge)
#   FAKE_LARK_BIN     the fake-lark command (default .../debug/fake-lark, else
#                     "$LARK_BRIDGE_BIN fake-lark")
#   VERBOSE=1         more output from each check
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

passed=0
failed=0
results=()
run() {
    local name="$1" script="$2" start rc
    printf '\n--- %s (%s)\n' "$name" "$script"
    start=$SECONDS
    bash "$script"
    rc=$?
    if [[ $rc -eq 0 ]]; then
        passed=$((passed + 1))
        results+=("PASS $name ($((SECONDS - start)) s)")
    else
        failed=$((failed + 1))
        results+=("FAIL $name ($((SECONDS - start)) s, exit status $rc)")
    fi
}

run asyncapi scripts/check-asyncapi.sh
run consumers scripts/check-consumers.sh
run lark-oapi scripts/check-lark-oapi.sh
run lark-node-sdk scripts/check-lark-node-sdk.sh

printf '\n'
printf '%s\n' "${results[@]}"
echo "ecosystem: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
