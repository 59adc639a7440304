#!/usr/bin/env bash
# The official Lark Python SDK's long-connection client (PyPI lark-oapi, lark.ws.Client) against
# fake-lark: it must receive fake-lark's events, then, after fake-lark is killed and started
# again on the same port, reconnect by itself and receive the next events
# (scripts/ecosystem/lark_oapi_reconnect.py). This is what proves fake-lark answers discovery as
# Lark does: the SDK adopts the whole ClientConfig and uses every field when it reconnects.
# lark-oapi is installed into the tool cache's venv when missing.
# Last line: `lark-oapi: PASS` or `lark-oapi: FAIL (reason)`.
#
#   FAKE_LARK_BIN   the fake-lark command (default ${CARGO_TARGET_DIR:-target}/debug/fake-lark
#                   when it exists, else "$LARK_BRIDGE_BIN fake-lark")
#   LARK_BRIDGE_BIN the bridge binary for that fallback (default .../debug/lark-bridge)
#   LARK_OAPI_COUNT events per connection (default 3)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"

if [[ -n "${FAKE_LARK_BIN:-}" ]]; then
    FAKE="$FAKE_LARK_BIN"
elif [[ -x "$TARGET_DIR/debug/fake-lark" ]]; then
    FAKE="$TARGET_DIR/debug/fake-lark"
else
    FAKE="${LARK_BRIDGE_BIN:-$TARGET_DIR/debug/lark-bridge} fake-lark"
fi
read -r -a fake_words <<<"$FAKE"
if [[ ! -x "${fake_words[0]}" ]]; then
    echo "lark-oapi: FAIL (no fake-lark at ${fake_words[0]}: cargo build, or set FAKE_LARK_BIN)"
    exit 1
fi

if ! tools="$(bash scripts/ensure-ecosystem-tools.sh lark-oapi)"; then
    echo "lark-oapi: FAIL (could not install lark-oapi)"
    exit 1
fi
PYTHON="$(sed -n 's/^PYTHON=//p' <<<"$tools")"

# The SDK's own log goes to stderr: shown on failure (or with VERBOSE=1).
LOG="$(mktemp -t lark-oapi-check.XXXXXX)"
trap 'rm -f "$LOG"' EXIT
# The harness bounds each phase itself; this is the backstop.
timeout 150 "$PYTHON" scripts/ecosystem/lark_oapi_reconnect.py \
    --fake-lark "$FAKE" --count "${LARK_OAPI_COUNT:-3}" --timeout 30 2>"$LOG"
rc=$?
if [[ $rc -ne 0 || -n "${VERBOSE:-}" ]]; then
    echo "  --- lark-oapi's log (last lines)"
    tail -n 25 "$LOG" | sed 's/^/      /'
fi
if [[ $rc -eq 124 ]]; then
    echo "lark-oapi: FAIL (timed out)"
fi
exit $rc
