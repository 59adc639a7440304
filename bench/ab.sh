#!/usr/bin/env bash
# A/B of two lark-bridge binaries in the same minutes (issue 19): both run side by side with the
# same settings (stdout sink to /dev/null, memory dedup, info JSON logs to a file — the defaults
# of bench/run.sh's stdout row), and the load generator drives them in turn, A then B, for
# --rounds rounds of --duration seconds each. This host's speed drifts by ±30 % from one minute
# to the next; a pair of adjacent bursts sees the same host, so the figure to read is the median
# over rounds of B's server CPU per request divided by A's.
#
# Usage: bench/ab.sh A_BINARY B_BINARY [--rounds N] [--duration S] [--concurrency C]
#                    [--rate R] [-- LARK_BRIDGE__X=Y ...]
#   --rate R   open loop at R req/s instead of a closed loop at full speed (the same work for
#              both, whatever their peak).
#   Settings after `--` go to both bridges (e.g. LARK_BRIDGE__LOG__LEVEL=warn).
# Needs: a release build (cargo build --release --bins), python3, curl.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

[ $# -ge 2 ] || { sed -n '2,16p' "$0"; exit 2; }
A="$1"; B="$2"; shift 2
ROUNDS=6; DURATION=4; CONCURRENCY=64; RATE=""; EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --rate) RATE="$2"; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "ab: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
LOAD="$ROOT/target/release/lark-load"
[ -x "$LOAD" ] || { echo "ab: build first: cargo build --release --bins" >&2; exit 2; }
KEY="bench-encrypt-key"; TOKEN="bench-verification-token"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lark-ab.XXXXXX")"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ="$(getconf CLK_TCK)"

start() { # NAME BINARY → sets PID_<NAME>, URL_<NAME>
    local name="$1" bin="$2" port admin i
    port="$(free_port)"; admin="$(free_port)"
    env LARK_BRIDGE__SERVER__LISTEN="127.0.0.1:$port" LARK_BRIDGE__ADMIN__LISTEN="127.0.0.1:$admin" \
        LARK_BRIDGE__LARK__ENCRYPT_KEY="$KEY" LARK_BRIDGE__LARK__VERIFICATION_TOKEN="$TOKEN" \
        LARK_BRIDGE__LOG__FORMAT=json LARK_BRIDGE__LOG__LEVEL=info \
        LARK_BRIDGE__SINK__KIND=stdout LARK_BRIDGE__DEDUP__BACKEND=memory \
        "${EXTRA[@]}" "$bin" >/dev/null 2>"$WORK/$name.log" &
    local pid=$!
    PIDS+=("$pid")
    for i in $(seq 1 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" = 200 ] && break
        sleep 0.05
    done
    printf -v "PID_$name" '%s' "$pid"
    printf -v "URL_$name" '%s' "http://127.0.0.1:$port/webhook/event"
}
start A "$A"
start B "$B"

burst() { # NAME ROUND → one line: name round req/s server_us generator_us
    local name="$1" round="$2" pidvar="PID_$1" urlvar="URL_$1" s0 s1 out="$WORK/$1.$2.json" args=()
    [ -n "$RATE" ] && args=(--rate "$RATE")
    "$LOAD" --url "${!urlvar}" --encrypt-key "$KEY" --token "$TOKEN" --json --timeout-ms 3000 \
        --duration "${DURATION}s" --concurrency "$CONCURRENCY" --pool $((30000 * DURATION)) "${args[@]}" >"$out" &
    local sim=$!
    while kill -0 "$sim" 2>/dev/null &&
        [ "$(find "/proc/$sim/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" -lt $((CONCURRENCY + 3)) ]; do
        sleep 0.02
    done
    s0="$(cpu_ticks "${!pidvar}")"
    wait "$sim"
    s1="$(cpu_ticks "${!pidvar}")"
    python3 - "$name" "$round" "$out" "$((s1 - s0))" "$HZ" <<'EOF'
import json, sys
name, rnd, path, ticks, hz = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
d = json.load(open(path))
n = max(d["requests"], 1)
bad = sum(v for k, v in d["status"].items() if k != "200")
print(name, rnd, round(d["requests_per_sec"]), round(ticks / hz * 1e6 / n, 2),
      round((d.get("generator_cpu_seconds") or 0) * 1e6 / n, 2), bad)
EOF
}

echo "# name round req/s server_us_per_req generator_us_per_req non_200" | tee "$WORK/rounds.txt"
for r in $(seq 1 "$ROUNDS"); do
    # Alternate which goes first, so neither always gets the warmer minute.
    if [ $((r % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
    for n in $order; do burst "$n" "$r" | tee -a "$WORK/rounds.txt"; done
done
python3 - "$WORK/rounds.txt" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if not l.startswith("#")]
by = {}
for name, rnd, rps, srv, gen, bad in rows:
    by.setdefault(rnd, {})[name] = (float(rps), float(srv), float(gen))
ratios = [v["B"][1] / v["A"][1] for v in by.values() if "A" in v and "B" in v]
norm = [(v["B"][1] / v["B"][2]) / (v["A"][1] / v["A"][2]) for v in by.values()
        if "A" in v and "B" in v and v["A"][2] and v["B"][2]]
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"server CPU per request, B / A: median {med(ratios):.3f} (rounds: "
      + ", ".join(f"{r:.2f}" for r in ratios) + ")")
print(f"the same, each divided by its generator's CPU per request: median {med(norm):.3f}")
for n in "AB":
    srv = [v[n][1] for v in by.values() if n in v]
    print(f"{n}: server µs/request median {med(srv):.1f} (min {min(srv):.1f}, max {max(srv):.1f})")
EOF
