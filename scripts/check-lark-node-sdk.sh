#!/usr/bin/env bash
# The helpdesk API as the official Lark SDK for Node makes it, and as the bridge makes it, against
# one fake-lark that checks the app and helpdesk credentials as Lark does (issue 14):
#   1. the SDK (@larksuiteoapi/node-sdk: tenant token, helpdesk.event.subscribe, ticket.get,
#      helpdesk.event.unsubscribe; scripts/ecosystem/lark_node_helpdesk.mjs) must get code 0 for
#      every call and read the ticket's customized fields out of the fake's answer;
#   2. `lark-bridge subscribe` must get code 0 too;
#   3. fake-lark's record of the calls (its `api {...}` lines) must show both subscribe calls
#      answered 200 with the same events, and the same helpdesk authorization up to the
#      "Bearer " prefix the Node SDK adds (the documented value, which the bridge and the Go SDK
#      send, is the bare base64; fake-lark accepts both).
# @larksuiteoapi/node-sdk is installed into the tool cache when missing.
# Last line: `lark-node-sdk: PASS` or `lark-node-sdk: FAIL (reason)`.
#
#   LARK_BRIDGE_BIN  the bridge binary (default ${CARGO_TARGET_DIR:-target}/debug/lark-bridge)
#   FAKE_LARK_BIN    the fake-lark binary (default .../debug/fake-lark)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BRIDGE="${LARK_BRIDGE_BIN:-$TARGET_DIR/debug/lark-bridge}"
FAKE="${FAKE_LARK_BIN:-$TARGET_DIR/debug/fake-lark}"
fail() { echo "lark-node-sdk: FAIL ($*)"; exit 1; }
[[ -x "$BRIDGE" ]] || fail "no bridge at $BRIDGE: cargo build, or set LARK_BRIDGE_BIN"
[[ -x "$FAKE" ]] || fail "no fake-lark at $FAKE: cargo build, or set FAKE_LARK_BIN"
command -v node >/dev/null 2>&1 || fail "node not found"
tools="$(bash scripts/ensure-ecosystem-tools.sh lark-node)" || fail "could not install @larksuiteoapi/node-sdk"
NODE_MODULES="$(sed -n 's/^LARK_NODE_MODULES=//p' <<<"$tools")"

APP_ID=cli_node_sdk_check
APP_SECRET=node-sdk-check-app-secret
HELPDESK_ID=7090000000000000042
HELPDESK_TOKEN=node-sdk-check-helpdesk-token
TICKET_ID=6626871355780366331

WORK="$(mktemp -d -t lark-node-sdk.XXXXXX)"
FAKE_PID=""
cleanup() {
    [[ -n "$FAKE_PID" ]] && kill "$FAKE_PID" 2>/dev/null && wait "$FAKE_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# A free port, then fake-lark on it; its first line says it listens.
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$FAKE" --listen "127.0.0.1:$PORT" --count 0 \
    --app-id "$APP_ID" --app-secret "$APP_SECRET" \
    --api-helpdesk-id "$HELPDESK_ID" --api-helpdesk-token "$HELPDESK_TOKEN" \
    >"$WORK/fake.out" 2>"$WORK/fake.err" &
FAKE_PID=$!
for _ in $(seq 1 100); do
    grep -q "fake Lark listening" "$WORK/fake.out" 2>/dev/null && break
    kill -0 "$FAKE_PID" 2>/dev/null || fail "fake-lark exited: $(tail -3 "$WORK/fake.err")"
    sleep 0.1
done
grep -q "fake Lark listening" "$WORK/fake.out" || fail "fake-lark did not start"
DOMAIN="http://127.0.0.1:$PORT"

# 1. The official SDK.
if ! NODE_PATH="$NODE_MODULES" timeout 60 node scripts/ecosystem/lark_node_helpdesk.mjs \
    "$DOMAIN" "$APP_ID" "$APP_SECRET" "$HELPDESK_ID" "$HELPDESK_TOKEN" "$TICKET_ID" >"$WORK/sdk.out" 2>&1; then
    sed 's/^/    /' "$WORK/sdk.out"
    fail "the Node SDK's calls were refused or misread"
fi
sed 's/^/  /' "$WORK/sdk.out"
sdk_calls="$(grep -c '^api ' "$WORK/fake.out")"

# 2. The bridge.
if ! env -i PATH="$PATH" HOME="$HOME" \
    LARK_BRIDGE__LARK__DOMAIN="$DOMAIN" LARK_BRIDGE__LARK__ALLOW_UNVERIFIED=true \
    LARK_BRIDGE__LARK__APP_ID="$APP_ID" LARK_BRIDGE__LARK__APP_SECRET="$APP_SECRET" \
    LARK_BRIDGE__LARK__HELPDESK_ID="$HELPDESK_ID" LARK_BRIDGE__LARK__HELPDESK_TOKEN="$HELPDESK_TOKEN" \
    timeout 60 "$BRIDGE" subscribe >"$WORK/bridge.out" 2>&1; then
    sed 's/^/    /' "$WORK/bridge.out"
    fail "lark-bridge subscribe failed"
fi
sed 's/^/  bridge: /' "$WORK/bridge.out"

# 3. The two clients' calls, as the fake recorded them.
for _ in $(seq 1 50); do
    [[ "$(grep -c '^api ' "$WORK/fake.out")" -ge $((sdk_calls + 2)) ]] && break
    sleep 0.1
done
python3 - "$WORK/fake.out" "$sdk_calls" "$HELPDESK_ID" "$HELPDESK_TOKEN" <<'PY' || fail "the bridge's calls differ from the SDK's"
import base64, json, sys
path, sdk_n, hid, htok = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
calls = [json.loads(l[4:]) for l in open(path) if l.startswith("api ")]
sdk, bridge = calls[:sdk_n], calls[sdk_n:]
def one(cs, api):
    found = [c for c in cs if c["api"] == api]
    assert found, f"no {api} call in {[c['api'] for c in cs]}"
    return found[0]
s, b = one(sdk, "subscribe"), one(bridge, "subscribe")
assert s["status"] == 200 and b["status"] == 200, (s["status"], b["status"])
assert s["body"] == b["body"], f"bodies differ:\n  sdk    {s['body']}\n  bridge {b['body']}"
want = base64.b64encode(f"{hid}:{htok}".encode()).decode()
strip = lambda v: (v or "").removeprefix("Bearer ")
assert strip(s["helpdesk_authorization"]) == want, s["helpdesk_authorization"]
assert b["helpdesk_authorization"] == want, b["helpdesk_authorization"]
assert (s["authorization"] or "").startswith("Bearer t-") and (b["authorization"] or "").startswith("Bearer t-")
assert all(c["status"] == 200 for c in calls), [(c["api"], c["status"]) for c in calls]
print(f"  same subscribe body ({len(b['body']['events'])} events) and helpdesk authorization "
      f"(SDK: {'Bearer-prefixed' if s['helpdesk_authorization'].startswith('Bearer ') else 'bare'}; bridge: bare)")
PY
echo "lark-node-sdk: PASS"
