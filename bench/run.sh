#!/usr/bin/env bash
# The benchmark of issue 8, in one run on one machine (BENCHMARKS.md has the results):
#   baseline   examples/baseline — axum reads the body and answers 200: the machine's ceiling
#              for HTTP alone, measured in the same run so every other row is a ratio to it;
#   stdout     the bridge, stdout sink (to /dev/null), memory dedup;
#   nats       the bridge → NATS JetStream (each request awaits its PubAck), memory dedup;
#   nats_redis the bridge → NATS JetStream, Redis dedup;
#   kafka      the bridge → Kafka (tansu, in-memory storage), memory dedup.
# For each: peak req/s and p99 with `lark-load` (the fake-lark crate's load generator; closed
# loop, --concurrency workers,
# one keep-alive connection each, bodies signed and encrypted before the clock starts), then p99
# at half that peak (`lark-load --rate`). Brokers are started on free loopback ports for their
# configuration and killed after it; everything this script starts is killed on exit.
#
# Usage: bench/run.sh [--smoke] [--duration S] [--warmup S] [--concurrency C]
#                     [--only baseline,stdout,nats,nats_redis,kafka] [--wait-quiet S]
#                     [--out DIR] [--keep] [--allocs] [--perf]
#   --smoke       about a second per measurement on the debug build (BENCH_PROFILE=release to
#                 override); exits non-zero only when a configuration does not answer 200 —
#                 slow numbers never fail it. For scripts/test.sh.
#   --wait-quiet  first wait up to S seconds for a moment with no rustc running (shared machine).
#   --out DIR     also write results.json and results.md there.
#   --allocs      count the bridge's heap allocations (LARK_BRIDGE_BENCH_COUNT_ALLOCATIONS=1)
#                 and report them per request; the counting costs CPU, so its CPU figures are
#                 not the ones to compare: run it as a separate pass.
#   --perf        record each bridge with `perf record -e cpu-clock -g` and write its top
#                 symbols (self time) to NAME.perf.txt in --out (or the work dir, with --keep);
#                 perf costs CPU too: a separate pass.
#   BENCH_LOG_LEVEL=L  the bridge's log level (default info, the shipped default), e.g. warn to
#                 see what the per-request line costs.
#   --before BIN  measure each bridge row twice in a row: first with that lark-bridge binary
#                 (e.g. a release build of an older commit), then with this tree's — "today and
#                 new" side by side from one run, each pair minutes apart at most.
#   BENCH_BRIDGE=PATH  measure that lark-bridge binary instead of this tree's (an A/B against
#                 another commit's release build, in the same quiet minutes).
# Needs: cargo, python3, curl; nats-server/tansu from scripts/ensure-tools.sh; redis-server.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SMOKE=0
DURATION=10
WARMUP=2
CONCURRENCY=64
ONLY="baseline,stdout,nats,nats_redis,kafka"
WAIT_QUIET=0
OUT=""
KEEP=0
ALLOCS=0
PERF=0
BEFORE=""
ROW_TAG=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --duration) DURATION="$2"; shift ;;
        --warmup) WARMUP="$2"; shift ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --only) ONLY="$2"; shift ;;
        --wait-quiet) WAIT_QUIET="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --keep) KEEP=1 ;;
        --allocs) ALLOCS=1 ;;
        --before) BEFORE="$2"; shift ;;
        --perf) PERF=1 ;;
        -h | --help) sed -n '2,38p' "$0"; exit 0 ;;
        *) echo "bench: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$SMOKE" -eq 1 ]; then
    DURATION=1
    WARMUP=0
    CONCURRENCY=8
    PROFILE="${BENCH_PROFILE:-debug}"
else
    PROFILE="${BENCH_PROFILE:-release}"
fi

KEY="bench-encrypt-key"
TOKEN="bench-verification-token"
CACHE_BIN="${LARK_BRIDGE_CACHE:-$HOME/.cache/lark-bridge}/bin"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lark-bench.XXXXXX")"
PIDS=()

log() { printf 'bench: %s\n' "$*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" -eq 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build

log "building ($PROFILE)"
if [ "$PROFILE" = release ]; then
    cargo build --quiet --release --workspace --bin lark-bridge --bin lark-load --examples
    DIR=release
else
    cargo build --quiet --workspace --bin lark-bridge --bin lark-load --example baseline
    DIR=debug
fi
TARGET="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
# BENCH_BRIDGE: another build of the bridge (A/B against an older commit, same run).
BRIDGE="${BENCH_BRIDGE:-$TARGET/$DIR/lark-bridge}"
LOAD="$TARGET/$DIR/lark-load"
BASELINE="$TARGET/$DIR/examples/baseline"

if [ ! -x "$CACHE_BIN/nats-server" ] || [ ! -x "$CACHE_BIN/tansu" ] || ! command -v redis-server >/dev/null; then
    log "brokers missing: scripts/ensure-tools.sh"
    bash scripts/ensure-tools.sh >/dev/null || log "ensure-tools failed: configurations without their broker are skipped"
fi

# ---------------------------------------------------------------- helpers

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # PORT SECONDS
    local i
    for i in $(seq 1 $(($2 * 20))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# start NAME CMD... : run in the background, output in $WORK/NAME.log; sets $STARTED.
start() {
    local name="$1"
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

stop() { # PID
    kill -TERM "$1" 2>/dev/null || return 0
    local i
    for i in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# CPU time in clock ticks (USER_HZ) of a process, and of the whole machine (busy, not idle).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
HZ="$(getconf CLK_TCK)"
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo null; }
rustc_count() { pgrep -c -x rustc 2>/dev/null || true; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }

sim() { # URL OUTFILE ARGS...
    local url="$1" out="$2"
    shift 2
    "$LOAD" --url "$url" --encrypt-key "$KEY" --token "$TOKEN" --json \
        --timeout-ms 3000 "$@" >"$out"
}

# The bridge's allocation counters ("calls bytes"), with --allocs.
allocs() {
    curl -s "$ADMIN_URL/metrics" | awk '/^lark_bridge_bench_allocations_total / { c = $2 }
        /^lark_bridge_bench_allocated_bytes_total / { b = $2 } END { print (c ? c : 0), (b ? b : 0) }'
}

json_get() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$@"; }

# measure NAME URL PID : warm-up, peak, half-peak; appends one JSON line to results.jsonl.
# $BROKER_PIDS (space-separated) are the brokers of this configuration, for the CPU split.
measure() {
    local name="$1" url="$2" pid="$3" rss_idle rss_after rustc0 load0 pool rate s0 s1 b0 b1 m0 m1 t0 t1 p simpid
    rss_idle="$(rss_mib "$pid")"
    rustc0="$(rustc_count)"
    load0="$(loadavg)"
    if [ "$WARMUP" != 0 ]; then
        sim "$url" "$WORK/$name.warm.json" --duration "${WARMUP}s" --concurrency "$CONCURRENCY"
        # Enough pre-built requests for the peak run, from the warm-up's rate (+50 %).
        pool="$(json_get "$WORK/$name.warm.json" "int(d['requests_per_sec'] * $DURATION * 1.5) + 1000")"
    elif [ "$SMOKE" -eq 1 ]; then
        pool=3000
    else
        pool=$((40000 * DURATION))
    fi
    log "$name: peak, ${DURATION}s at concurrency $CONCURRENCY (pool $pool)"
    "$LOAD" --url "$url" --encrypt-key "$KEY" --token "$TOKEN" --json --timeout-ms 3000 \
        --duration "${DURATION}s" --concurrency "$CONCURRENCY" --pool "$pool" >"$WORK/$name.peak.json" &
    simpid=$!
    # lark-load builds its pool first, then opens its connections and starts the clock: sample
    # the CPU counters from then on (the generator's own CPU is measured by lark-load).
    while kill -0 "$simpid" 2>/dev/null &&
        [ "$(find "/proc/$simpid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" -lt $((CONCURRENCY + 3)) ]; do
        sleep 0.02
    done
    local a0="0 0" a1="0 0"
    [ "$ALLOCS" -eq 1 ] && [ "$name" != baseline ] && a0="$(allocs)"
    s0="$(cpu_ticks "$pid")"; b0=0; for p in ${BROKER_PIDS:-}; do b0=$((b0 + $(cpu_ticks "$p"))); done
    m0="$(busy_ticks)"; t0="$(date +%s.%N)"
    wait "$simpid"
    s1="$(cpu_ticks "$pid")"; b1=0; for p in ${BROKER_PIDS:-}; do b1=$((b1 + $(cpu_ticks "$p"))); done
    m1="$(busy_ticks)"; t1="$(date +%s.%N)"
    [ "$ALLOCS" -eq 1 ] && [ "$name" != baseline ] && a1="$(allocs)"
    python3 - "$WORK/$name.peak.json" "$((s1 - s0))" "$((b1 - b0))" "$((m1 - m0))" "$HZ" "$t0" "$t1" $a0 $a1 <<'EOF'
import json, sys
path = sys.argv[1]
server, brokers, busy, hz, t0, t1, c0, y0, c1, y1 = map(float, sys.argv[2:])
d = json.load(open(path))
if c1 > c0:
    # The bridge's allocations in the window (its scrapes of /metrics included: two).
    d["allocations_per_request"] = round((c1 - c0) / max(d["requests"], 1), 1)
    d["allocated_bytes_per_request"] = round((y1 - y0) / max(d["requests"], 1))
n, gen, wall = d["requests"], d.get("generator_cpu_seconds") or 0.0, t1 - t0
server, brokers, busy = server / hz, brokers / hz, busy / hz
# Per request, in µs of CPU; "other" is everything else busy in the window: kernel work not
# charged to a process, and whatever else runs on the machine (compiles, tests).
d["cpu_us_per_request"] = {k: round(v * 1e6 / max(n, 1), 1) for k, v in {
    "server": server, "brokers": brokers, "generator": gen,
    "other": max(busy - server - brokers - gen, 0.0)}.items()}
d["cpu_cores_busy"] = round(busy / wall, 2)
json.dump(d, open(path, "w"))
EOF
    rate="$(json_get "$WORK/$name.peak.json" "round(d['requests_per_sec'] / 2, 1)")"
    log "$name: $(json_get "$WORK/$name.peak.json" "'%.0f req/s, p99 %.2f ms, status %s' % (d['requests_per_sec'], d['latency_ms']['p99'], d['status'])")"
    log "$name: half peak, ${DURATION}s at $rate req/s"
    sim "$url" "$WORK/$name.half.json" --duration "${DURATION}s" --concurrency "$CONCURRENCY" --rate "$rate"
    log "$name: $(json_get "$WORK/$name.half.json" "'p99 %.2f ms (schedule lag p99 %.2f ms), status %s' % (d['latency_ms']['p99'], d['schedule_lag_ms']['p99'], d['status'])")"
    rss_after="$(rss_mib "$pid")"
    python3 - "$name" "$WORK/$name.peak.json" "$WORK/$name.half.json" "$rss_idle" "$rss_after" \
        "$rustc0" "$(rustc_count)" "$load0" "$(loadavg)" >>"$WORK/results.jsonl" <<'EOF'
import json, os, sys
name, peak, half, rss0, rss1, r0, r1, l0, l1 = sys.argv[1:]
num = lambda s: None if s in ("", "null") else float(s)
print(json.dumps({"name": name, "peak": json.load(open(peak)), "half": json.load(open(half)),
                  "rss_idle_mib": num(rss0), "rss_after_mib": num(rss1),
                  "rustc_before": int(r0 or 0), "rustc_after": int(r1 or 0),
                  "load_before": float(l0), "load_after": float(l1), "tag": os.environ.get("ROW_TAG", "")}))
EOF
}

wants() { [[ ",$ONLY," == *",$1,"* ]]; }

start_nats() {
    NATS_PORT="$(free_port)"
    mkdir -p "$WORK/nats-$1"
    start "nats-$1" "$CACHE_BIN/nats-server" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/nats-$1"
    NATS_PID=$STARTED
    wait_port "$NATS_PORT" 10 || { log "nats-server did not start"; return 1; }
}

start_redis() {
    REDIS_PORT="$(free_port)"
    start "redis-$1" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK"
    REDIS_PID=$STARTED
    wait_port "$REDIS_PORT" 10 || { log "redis-server did not start"; return 1; }
}

start_tansu() {
    KAFKA_PORT="$(free_port)"
    start "tansu-$1" "$CACHE_BIN/tansu" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine memory://tansu/
    KAFKA_PID=$STARTED
    wait_port "$KAFKA_PORT" 10 || { log "tansu did not start"; return 1; }
}

# bridge NAME ENV... : start the bridge with these LARK_BRIDGE__* settings, wait for /readyz.
bridge() {
    local name="$1" port admin i
    shift
    PERF_WRAP=()
    if [ "$PERF" -eq 1 ]; then
        PERF_WRAP=(perf record -q -e cpu-clock -F 999 -g -o "$WORK/$name${ROW_TAG:+.$ROW_TAG}.perf.data" --)
    fi
    port="$(free_port)"
    admin="$(free_port)"
    env LARK_BRIDGE__SERVER__LISTEN="127.0.0.1:$port" \
        LARK_BRIDGE__ADMIN__LISTEN="127.0.0.1:$admin" \
        LARK_BRIDGE__LARK__ENCRYPT_KEY="$KEY" \
        LARK_BRIDGE__LARK__VERIFICATION_TOKEN="$TOKEN" \
        LARK_BRIDGE__LOG__FORMAT=json \
        LARK_BRIDGE__LOG__LEVEL="${BENCH_LOG_LEVEL:-info}" \
        LARK_BRIDGE_BENCH_COUNT_ALLOCATIONS="$ALLOCS" \
        "$@" "${PERF_WRAP[@]}" "$BRIDGE" >/dev/null 2>"$WORK/$name.bridge.log" &
    BRIDGE_PID=$!
    PIDS+=("$BRIDGE_PID")
    BRIDGE_URL="http://127.0.0.1:$port/webhook/event"
    ADMIN_URL="http://127.0.0.1:$admin"
    for i in $(seq 1 600); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" = 200 ]; then
            return 0
        fi
        kill -0 "$BRIDGE_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "$name: the bridge did not become ready; its log:"
    tail -n 20 "$WORK/$name.bridge.log" >&2
    return 1
}

FAILED=()
run_config() { # NAME : start what it needs, measure, stop
    local name="$1" ok=0
    BROKER_PIDS=""
    case "$name" in
        baseline)
            local port
            port="$(free_port)"
            start baseline "$BASELINE" "127.0.0.1:$port"
            if wait_port "$port" 10; then
                measure baseline "http://127.0.0.1:$port/webhook/event" "$STARTED" && ok=1
            fi
            stop "$STARTED"
            ;;
        stdout)
            if bridge stdout LARK_BRIDGE__SINK__KIND=stdout LARK_BRIDGE__DEDUP__BACKEND=memory; then
                measure stdout "$BRIDGE_URL" "$BRIDGE_PID" && ok=1
            fi
            stop "$BRIDGE_PID"
            ;;
        nats | nats_redis)
            [ -x "$CACHE_BIN/nats-server" ] || { log "$name: skipped, no nats-server"; return 0; }
            start_nats "$name" || { FAILED+=("$name"); return 0; }
            local dedup=(LARK_BRIDGE__DEDUP__BACKEND=memory)
            if [ "$name" = nats_redis ]; then
                command -v redis-server >/dev/null || { log "$name: skipped, no redis-server"; stop "$NATS_PID"; return 0; }
                start_redis "$name" || { FAILED+=("$name"); stop "$NATS_PID"; return 0; }
                dedup=(LARK_BRIDGE__DEDUP__BACKEND=redis LARK_BRIDGE__DEDUP__REDIS__URL="redis://127.0.0.1:$REDIS_PORT")
            fi
            BROKER_PIDS="$NATS_PID"
            [ "$name" = nats_redis ] && BROKER_PIDS="$NATS_PID $REDIS_PID"
            if bridge "$name" LARK_BRIDGE__SINK__KIND=nats \
                LARK_BRIDGE__SINK__NATS__URL="nats://127.0.0.1:$NATS_PORT" "${dedup[@]}"; then
                measure "$name" "$BRIDGE_URL" "$BRIDGE_PID" && ok=1
            fi
            stop "$BRIDGE_PID"
            [ "$name" = nats_redis ] && stop "$REDIS_PID"
            stop "$NATS_PID"
            ;;
        kafka)
            [ -x "$CACHE_BIN/tansu" ] || { log "kafka: skipped, no tansu"; return 0; }
            start_tansu kafka || { FAILED+=(kafka); return 0; }
            BROKER_PIDS="$KAFKA_PID"
            if bridge kafka LARK_BRIDGE__SINK__KIND=kafka \
                LARK_BRIDGE__SINK__KAFKA__BROKERS="127.0.0.1:$KAFKA_PORT" \
                LARK_BRIDGE__SINK__KAFKA__CREATE_TOPICS=true LARK_BRIDGE__DEDUP__BACKEND=memory; then
                measure kafka "$BRIDGE_URL" "$BRIDGE_PID" && ok=1
            fi
            stop "$BRIDGE_PID"
            stop "$KAFKA_PID"
            ;;
    esac
    [ "$ok" -eq 1 ] || FAILED+=("$name")
    if [ "$PERF" -eq 1 ] && [ -s "$WORK/$name${ROW_TAG:+.$ROW_TAG}.perf.data" ]; then
        local dest="${OUT:-$WORK}"
        mkdir -p "$dest"
        # Self time by symbol: where the bridge's CPU went (kernel work on its behalf included).
        perf report -i "$WORK/$name${ROW_TAG:+.$ROW_TAG}.perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
            grep -E '^ +[0-9]' | head -n 40 |
            sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//; s/  +/  /g' >"$dest/$name${ROW_TAG:+.$ROW_TAG}.perf.txt" || true
        log "$name: perf summary in $dest/$name${ROW_TAG:+.$ROW_TAG}.perf.txt"
    fi
}

# ---------------------------------------------------------------- run

if [ "$WAIT_QUIET" -gt 0 ]; then
    # Quiet: no rustc, and under 15 % of one core busy over a second (fuzzers, tests).
    log "waiting up to ${WAIT_QUIET}s for a quiet machine"
    for _ in $(seq 1 "$WAIT_QUIET"); do
        m0="$(busy_ticks)"; sleep 1; m1="$(busy_ticks)"
        if [ "$(rustc_count)" -eq 0 ] && [ $(((m1 - m0) * 100)) -lt $((HZ * 15)) ]; then break; fi
    done
    log "quiet enough (or waited long enough): rustc $(rustc_count), load $(loadavg)"
fi

python3 - "$PROFILE" "$CONCURRENCY" "$DURATION" >"$WORK/machine.json" <<'EOF'
import json, os, platform, sys
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(json.dumps({"cores": os.cpu_count(), "cpu": model, "kernel": platform.release(),
                  "profile": sys.argv[1], "concurrency": int(sys.argv[2]), "duration_s": float(sys.argv[3])}))
EOF
log "machine: $(cat "$WORK/machine.json")"

for name in baseline stdout nats nats_redis kafka; do
    wants "$name" || continue
    if [ -n "$BEFORE" ] && [ "$name" != baseline ]; then
        AFTER="$BRIDGE"
        BRIDGE="$BEFORE"
        export ROW_TAG=before
        run_config "$name" || FAILED+=("$name (before)")
        BRIDGE="$AFTER"
        export ROW_TAG=after
    fi
    run_config "$name" || FAILED+=("$name")
done

# ---------------------------------------------------------------- report

status=0
python3 - "$WORK" "$SMOKE" "${OUT:-}" <<'EOF' || status=$?
import json, os, sys
work, smoke, out = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
machine = json.load(open(f"{work}/machine.json"))
rows = [json.loads(l) for l in open(f"{work}/results.jsonl")] if os.path.exists(f"{work}/results.jsonl") else []
base = next((r for r in rows if r["name"] == "baseline"), None)
labels = {"baseline": "baseline (axum, read body, 200)", "stdout": "bridge → stdout, memory dedup",
          "nats": "bridge → NATS JetStream, memory dedup", "nats_redis": "bridge → NATS JetStream, Redis dedup",
          "kafka": "bridge → Kafka (tansu), memory dedup"}
targets = {"stdout": 0.7, "nats": 0.5, "nats_redis": 0.4}
lines = [f"{machine['cores']} cores, {machine['cpu']}, Linux {machine['kernel']}; {machine['profile']} build; "
         f"concurrency {machine['concurrency']}, {machine['duration_s']:g} s per measurement",
         "", "| configuration | req/s | ratio | target | p99 ms at peak | p99 ms at half peak | non-200 | CPU µs/req: server, brokers, generator, other | allocations/req (bytes) | RSS idle → after MiB | rustc before/after |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
bad = []
for r in rows:
    p, h = r["peak"], r["half"]
    ratio = p["requests_per_sec"] / base["peak"]["requests_per_sec"] if base else float("nan")
    non200 = sum(v for k, v in p["status"].items() if k != "200") + sum(v for k, v in h["status"].items() if k != "200")
    c = p.get("cpu_us_per_request")
    cpu = (f"{c['server']:.0f}, {c['brokers']:.0f}, {c['generator']:.0f}, {c['other']:.0f} "
           f"({p['cpu_cores_busy']} cores busy)") if c else ""
    allocs = (f"{p['allocations_per_request']:g} ({p['allocated_bytes_per_request']:,})"
              if "allocations_per_request" in p else "")
    t = targets.get(r["name"])
    # A debug build's numbers say nothing about the targets.
    tgt = f"≥ {t}" + (" ✓" if ratio >= t else " ✗") if t and not smoke else ""
    label = labels.get(r["name"], r["name"]) + (f" — {r['tag']}" if r.get("tag") else "")
    lines.append(f"| {label} | {p['requests_per_sec']:.0f} | {ratio:.2f} | {tgt} | "
                 f"{p['latency_ms']['p99']:.2f} | {h['latency_ms']['p99']:.2f}{'' if smoke else ' ✓' if h['latency_ms']['p99'] < 10 else ' ✗'} | {non200} | "
                 f"{cpu} | {allocs} | {r['rss_idle_mib']} → {r['rss_after_mib']} | {r['rustc_before']}/{r['rustc_after']} |")
    ok = p["status"].get("200", 0)
    # Breakage, not slowness: no 200 at all, or more than 1 % of answers something else.
    if ok == 0 or (p["requests"] - ok) * 100 > p["requests"]:
        bad.append(r["name"])
text = "\n".join(lines)
print(text)
if out:
    os.makedirs(out, exist_ok=True)
    json.dump({"machine": machine, "results": rows}, open(f"{out}/results.json", "w"), indent=2)
    open(f"{out}/results.md", "w").write(text + "\n")
if bad:
    print("not answering 200: " + ", ".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
if [ "${#FAILED[@]}" -gt 0 ]; then
    log "failed: ${FAILED[*]}"
    exit 1
fi
exit $status
