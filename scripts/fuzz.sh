#!/usr/bin/env bash
# Fuzz the code that reads untrusted bytes (issue 10) with cargo-fuzz / libFuzzer:
#   verify     Verifier::verify over arbitrary bodies and headers, with and without keys
#   decrypt    lark::crypto::decrypt_json over arbitrary base64, ciphertext and keys
#   signature  lark::signature::verify against an independent reading of the rule
#   normalize  envelope detection + normalize::{ticket_created, raw} of arbitrary JSON
#   frame      the long connection's frame decoder, replies and fragment reassembly (issue 15)
#   client_config  ClientConfig from pongs and discovery answers, and every duration derived
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   each target for SECONDS (default 60)
#        scripts/fuzz.sh --smoke                 a few seconds each (CI; < 2 min when warm)
#
# cargo-fuzz needs nightly features: we use the stable toolchain with RUSTC_BOOTSTRAP=1, and
# install cargo-fuzz into the cache when missing. Built without a sanitizer (the targets are
# safe Rust; libFuzzer's coverage guidance and panics are what matter) but with debug
# assertions, so integer overflow panics too. The corpus lives in the cache and grows from run
# to run; each run is seeded afresh from the test vectors (tests/fixtures/lark-push.json,
# tests/golden/*.json) and from past crashes (fuzz/seeds/TARGET/). A crash leaves its input in
# fuzz/artifacts/TARGET/ and fails the run: turn it into a regression test (and a seed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_EACH=60
TARGETS=()
for a in "$@"; do
    case "$a" in
        --smoke) SECONDS_EACH=5 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        [0-9]*) SECONDS_EACH="$a" ;;
        *) TARGETS+=("$a") ;;
    esac
done
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(verify decrypt signature normalize frame client_config)

CACHE="${LARK_BRIDGE_CACHE:-$HOME/.cache/lark-bridge}"
FUZZ_ROOT="$CACHE/cargo-fuzz"
CORPUS_ROOT="$CACHE/fuzz/corpus"
SEEDS_ROOT="$CACHE/fuzz/seeds"
log() { printf 'fuzz: %s\n' "$*" >&2; }

export RUSTC_BOOTSTRAP=1
export PATH="$FUZZ_ROOT/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz into $FUZZ_ROOT"
    CARGO_TARGET_DIR="$CACHE/cargo-fuzz-target" \
        cargo install cargo-fuzz --locked --root "$FUZZ_ROOT" >&2
    rm -rf "$CACHE/cargo-fuzz-target"
fi

# -s none: no sanitizer; -a: debug assertions (overflow checks). Same flags for build and run,
# so `run` reuses the build.
# The build cache lives outside the checkout so a fresh clone (CI) reuses it.
FLAGS=(-s none -a --target-dir "$CACHE/fuzz-target")
log "building the fuzz targets"
cargo fuzz build "${FLAGS[@]}" >&2

# Seeds: the protocol's known-answer vectors and the golden events, in each target's format.
rm -rf "$SEEDS_ROOT"
python3 - "$SEEDS_ROOT" <<'EOF'
import hashlib, json, os, pathlib, sys
root = pathlib.Path(sys.argv[1])
vec = json.load(open("tests/fixtures/lark-push.json"))
golden = [p.read_bytes() for p in sorted(pathlib.Path("tests/golden").glob("*.json"))]
plains = golden + [v["plaintext"].encode() for v in vec["decrypt"]]
seeds = {t: [] for t in ("verify", "decrypt", "signature", "normalize", "frame", "client_config")}
# verify: FLAGS TS \n NONCE \n SIG \n BODY (flags: 1 keys, 2 tokens, 4 valid signature,
# 8 given signature, 12 timestamp only, 16 encrypt the body, 32 skew check).
for p in plains:
    for flags in (0x00, 0x02, 0x17, 0x37, 0x13, 0x03):
        seeds["verify"].append(bytes([flags]) + b"1608725989\n0123456789abcdef\n\n" + p)
for s in vec["signature"]:
    line = "\n".join([s["timestamp"], s["nonce"], s["signature"]]).encode() + b"\n" + s["body"].encode()
    seeds["verify"].append(bytes([0x0B]) + line)
    seeds["signature"].append("\n".join([s["timestamp"], s["nonce"], s["signature"], s["encrypt_key"]]).encode() + b"\n" + s["body"].encode())
# decrypt: N KEYS B64 (N = length of KEYS)
for v in vec["decrypt"] + vec["decrypt_fails"]:
    k = v["encrypt_key"].encode()
    seeds["decrypt"].append(bytes([len(k)]) + k + v["encrypt"].encode())
    seeds["decrypt"].append(bytes([len(k) + 6]) + b"other," + k + v["encrypt"].encode())
# normalize: the plaintext itself, and the event object alone
for p in plains:
    seeds["normalize"].append(p)
    try:
        ev = json.loads(p).get("event")
        if ev is not None:
            seeds["normalize"].append(json.dumps(ev).encode())
    except (ValueError, AttributeError):
        pass
# frame: the known-answer frames of lark-longconn.md §5 (an event reply, a ping) and a fragment.
seeds["frame"].append(bytes.fromhex(
    "0807100918f681801020012a0d0a047479706512056576656e742a130a0a6d6573736167655f696412056d73675f31"
    "2a080a0373756d1201312a080a037365711201302a100a0874726163655f6964120474725f312a0b0a0662697a5f72"
    "7412013332003a0042277b22636f6465223a3230302c2268656164657273223a6e756c6c2c2264617461223a6e756c"
    "6c7d4a00"))
seeds["frame"].append(bytes.fromhex("0800100018f681801020002a0c0a0474797065120470696e6732003a004a00"))
def pb_str(tag, s):
    return bytes([tag << 3 | 2, len(s)]) + s
hdr = lambda k, v: pb_str(5, pb_str(1, k) + pb_str(2, v))
seeds["frame"].append(b"\x08\x01\x10\x02\x18\x03\x20\x01" + hdr(b"type", b"event") + hdr(b"message_id", b"m\n\x1b[31m")
                      + hdr(b"sum", b"2") + hdr(b"seq", b"1") + pb_str(8, b"{}"))
# client_config: FAILURES UNIT JSON, with Lark's values and the hostile ones of issue 15.
for j in (b'{"ReconnectCount":-1,"ReconnectInterval":120,"ReconnectNonce":30,"PingInterval":120}',
          b'{"PingInterval":9223372036854775807,"ReconnectInterval":0,"ReconnectNonce":0}',
          b'{"PingInterval":4e18,"ReconnectCount":"3","ReconnectInterval":-1e300}', b'{}'):
    seeds["client_config"].append(b"\x03\x80" + j)
# Past crashes, kept in the repository (fuzz/seeds/TARGET/), so each run re-checks them first.
for t in seeds:
    for p in sorted(pathlib.Path("fuzz/seeds", t).glob("*")):
        seeds[t].append(p.read_bytes())
for t, items in seeds.items():
    d = root / t
    d.mkdir(parents=True, exist_ok=True)
    for item in items:
        (d / hashlib.sha1(item).hexdigest()).write_bytes(item)
EOF

declare -A EXECS=() STATUS=() CORPUS=()
failed=0
for t in "${TARGETS[@]}"; do
    mkdir -p "$CORPUS_ROOT/$t" "fuzz/artifacts/$t"
    log "$t: ${SECONDS_EACH}s"
    out="$(mktemp)"
    set +e
    # The first corpus directory receives new inputs; the seeds are read only.
    cargo fuzz run "${FLAGS[@]}" "$t" "$CORPUS_ROOT/$t" "$SEEDS_ROOT/$t" -- \
        -max_total_time="$SECONDS_EACH" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$out" 2>&1
    rc=$?
    set -e
    EXECS[$t]="$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)"
    CORPUS[$t]="$(find "$CORPUS_ROOT/$t" -type f | wc -l)"
    if [ "$rc" -eq 0 ]; then
        STATUS[$t]=ok
    else
        STATUS[$t]="CRASH (rc $rc)"
        failed=1
        grep -E "panicked|ERROR|SUMMARY|Test unit written|artifact" "$out" | head -20 >&2 || tail -30 "$out" >&2
    fi
    rm -f "$out"
done

printf '\n%-10s %8s %12s %8s  %s\n' target seconds execs corpus result
for t in "${TARGETS[@]}"; do
    printf '%-10s %8s %12s %8s  %s\n' "$t" "$SECONDS_EACH" "${EXECS[$t]:-?}" "${CORPUS[$t]}" "${STATUS[$t]}"
done
exit "$failed"
