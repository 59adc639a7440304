#!/usr/bin/env bash
# Soak with faults (issue 10): proves "every 200 we give Lark is in the broker, once".
#
# Two bridge replicas (real processes) share a Redis dedup store and publish to NATS JetStream
# (or Kafka/tansu). `lark-load` (the fake-lark crate's load generator) drives distinct events at a steady rate through a
# round-robin HTTP front (examples/lb.rs: per request, skipping a dead replica) and replays
# every non-200 like Lark, with shortened delays. Meanwhile a fault schedule kills (SIGKILL)
# and restarts, in turn, the broker, the dedup store, one replica, and that replica again with
# requests in flight (broker frozen). At the end examples/soak_check.rs reads the whole
# stream/topic back and the script prints: sent, 200s, 503s, events in the broker, lost (a 200
# whose id is not in the broker — must be 0), duplicates (must be 0 on JetStream; counted on
# Kafka), and the latencies. RELIABILITY.md records runs.
#
# Usage: scripts/soak.sh [--minutes M] [--sink nats|kafka] [--short] [--rate R] [--keep]
#   --minutes M   load for M minutes (default 3)
#   --sink S      nats (default) or kafka
#   --short       CI version: 25 s of load, one fault of each kind, under 60 s in all
#                 (uses the debug build the test command already made, unless
#                 SOAK_PROFILE=release)
#   --rate R      new events per second (default 100; retries come on top)
#   --bad-share F share of events (0–1, default 0.05) without a helpdesk_id: verified but
#                 refused by the normalizer, so they must end up as dead letters (issue 17)
#   --keep        keep the work directory (logs, acked ids, reports)
#
# tansu stores in memory only (no persistent engine in the build we use), so with the Kafka
# sink the broker fault is a freeze (SIGSTOP for the outage, then SIGCONT) instead of a kill.
# Exit status: 0 when nothing acknowledged was lost (and, on JetStream, nothing duplicated).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MINUTES=3
SINK=nats
SHORT=0
RATE=100
BAD_SHARE=0.05
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES="$2"; shift 2 ;;
        --sink) SINK="$2"; shift 2 ;;
        --short) SHORT=1; shift ;;
        --rate) RATE="$2"; shift 2 ;;
        --bad-share) BAD_SHARE="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "soak: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$SINK" in nats | kafka) ;; *) echo "soak: --sink must be nats or kafka" >&2; exit 2 ;; esac

if [ "$SHORT" -eq 1 ]; then
    LOAD_SECS=25
    FAULT_EVERY=3   # a fault starts every FAULT_EVERY s ...
    OUTAGE=2        # ... and lasts OUTAGE s
    PROFILE="${SOAK_PROFILE:-debug}"
else
    LOAD_SECS=$((MINUTES * 60))
    FAULT_EVERY=15
    OUTAGE=4
    PROFILE="${SOAK_PROFILE:-release}"
fi
# Lark retries after 15 s, 5 min, 1 h, 6 h; ours are shorter but, like Lark's, long enough in
# sum (12.6 s) to outlast an outage plus the dedup lease (5 s) of a killed replica.
RETRY_MS="200,400,800,1600,3200,6400"
CONCURRENCY=256
KEY="soak-encrypt-key"
TOKEN="soak-token"

log() { printf 'soak: %s\n' "$*" >&2; }

# ---------------------------------------------------------------- build and tools

CACHE="${LARK_BRIDGE_CACHE:-$HOME/.cache/lark-bridge}"
bash scripts/ensure-tools.sh >/dev/null
export PATH="$CACHE/bin:$PATH"
log "building ($PROFILE)"
if [ "$PROFILE" = release ]; then
    cargo build --quiet --release --workspace --bin lark-bridge --bin lark-load --example lb --example soak_check
    TARGET=target/release
else
    cargo build --quiet --workspace --bin lark-bridge --bin lark-load --example lb --example soak_check
    TARGET=target/debug
fi
BIN="$PWD/$TARGET/lark-bridge"
LOAD="$PWD/$TARGET/lark-load"
LB="$PWD/$TARGET/examples/lb"
CHECK="$PWD/$TARGET/examples/soak_check"

WORK="$(mktemp -d -t lark-bridge-soak.XXXXXX)"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------- processes

declare -A PID=()
cleanup() {
    local name
    for name in "${!PID[@]}"; do
        { kill -CONT "${PID[$name]}"; kill -9 "${PID[$name]}"; wait "${PID[$name]}"; } 2>/dev/null || true
    done
    if [ "$KEEP" -eq 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_port() {
    local port="$1" what="$2" i
    for i in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    log "$what did not open port $port"; return 1
}

wait_ready() {
    local port="$1" what="$2" i
    for i in $(seq 1 300); do
        if curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; then return 0; fi
        sleep 0.1
    done
    log "$what never became ready"; curl -s "http://127.0.0.1:$port/readyz" >&2 || true; return 1
}

REDIS_PORT="$(free_port)"
start_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$WORK" >>"$WORK/redis.log" 2>&1 &
    PID[redis]=$!
    wait_port "$REDIS_PORT" redis
}

BROKER_PORT="$(free_port)"
mkdir -p "$WORK/nats"
start_broker() {
    if [ "$SINK" = nats ]; then
        nats-server -a 127.0.0.1 -p "$BROKER_PORT" -js -sd "$WORK/nats" >>"$WORK/broker.log" 2>&1 &
    else
        tansu broker --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
            --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
            --storage-engine memory://tansu/ >>"$WORK/broker.log" 2>&1 &
    fi
    PID[broker]=$!
    wait_port "$BROKER_PORT" "$SINK broker"
}

declare -A WEB=() ADMIN=()
for r in a b; do WEB[$r]="$(free_port)"; ADMIN[$r]="$(free_port)"; done
start_replica() {
    local r="$1"
    env -i PATH="$PATH" HOME="$HOME" \
        LARK_BRIDGE__SERVER__LISTEN="127.0.0.1:${WEB[$r]}" \
        LARK_BRIDGE__ADMIN__LISTEN="127.0.0.1:${ADMIN[$r]}" \
        LARK_BRIDGE__LARK__ENCRYPT_KEY="$KEY" \
        LARK_BRIDGE__LARK__VERIFICATION_TOKEN="$TOKEN" \
        LARK_BRIDGE__DEDUP__BACKEND=redis \
        LARK_BRIDGE__DEDUP__REDIS__URL="redis://127.0.0.1:$REDIS_PORT" \
        LARK_BRIDGE__SINK__KIND="$SINK" \
        LARK_BRIDGE__SINK__NATS__URL="nats://127.0.0.1:$BROKER_PORT" \
        LARK_BRIDGE__SINK__KAFKA__BROKERS="127.0.0.1:$BROKER_PORT" \
        LARK_BRIDGE__SINK__KAFKA__CREATE_TOPICS=true \
        LARK_BRIDGE__SINK__KAFKA__TOPIC_PARTITIONS=3 \
        LARK_BRIDGE__LOG__FORMAT=json \
        LARK_BRIDGE__LOG__LEVEL=warn \
        "$BIN" run >>"$WORK/replica-$r.log" 2>&1 &
    PID[replica_$r]=$!
}

log "work directory $WORK"
start_redis
start_broker
start_replica a
start_replica b
wait_ready "${ADMIN[a]}" "replica a"
wait_ready "${ADMIN[b]}" "replica b"
LB_PORT="$(free_port)"
"$LB" "127.0.0.1:$LB_PORT" "http://127.0.0.1:${WEB[a]}" "http://127.0.0.1:${WEB[b]}" >"$WORK/lb.log" 2>&1 &
PID[lb]=$!
wait_port "$LB_PORT" lb

# ---------------------------------------------------------------- load and faults

log "load: ${RATE} events/s for ${LOAD_SECS} s through 2 replicas, sink $SINK, dedup redis"
"$LOAD" --url "http://127.0.0.1:$LB_PORT/webhook/event" \
    --encrypt-key "$KEY" --token "$TOKEN" \
    --rate "$RATE" --duration "${LOAD_SECS}s" --concurrency "$CONCURRENCY" \
    --retry-ms "$RETRY_MS" --timeout-ms 3000 --unnormalizable-share "$BAD_SHARE" \
    --acked-ids-file "$WORK/acked.txt" --json >"$WORK/simulate.json" 2>"$WORK/simulate.err" &
PID[simulate]=$!
SIM=${PID[simulate]}

T0=$SECONDS
note() { printf '%4ds  %s\n' "$((SECONDS - T0))" "$*" | tee -a "$WORK/faults.txt" >&2; }
fault() {
    case "$1" in
        broker)
            if [ "$SINK" = nats ]; then
                note "kill -9 nats-server"; { kill -9 "${PID[broker]}"; wait "${PID[broker]}"; } 2>/dev/null || true
                sleep "$OUTAGE"; start_broker; note "nats-server restarted"
            else
                note "freeze tansu (SIGSTOP)"; kill -STOP "${PID[broker]}"
                sleep "$OUTAGE"; kill -CONT "${PID[broker]}"; note "tansu resumed (SIGCONT)"
            fi ;;
        store)
            note "kill -9 redis-server"; { kill -9 "${PID[redis]}"; wait "${PID[redis]}"; } 2>/dev/null || true
            sleep "$OUTAGE"; start_redis; note "redis-server restarted (empty: no persistence)" ;;
        replica)
            note "kill -9 replica a"; { kill -9 "${PID[replica_a]}"; wait "${PID[replica_a]}"; } 2>/dev/null || true
            sleep "$OUTAGE"; start_replica a; wait_ready "${ADMIN[a]}" "replica a"; note "replica a restarted" ;;
        inflight)
            # The worst moment to die: requests held inside replica a waiting for the broker's
            # ack (broker frozen). Their events may reach the broker without a 200; the retries
            # (to replica b, after a's dedup lease expires) must not publish them twice.
            kill -STOP "${PID[broker]}"
            sleep 0.5
            held="$(in_flight a)"
            note "broker frozen; kill -9 replica a with $held requests in flight"
            { kill -9 "${PID[replica_a]}"; wait "${PID[replica_a]}"; } 2>/dev/null || true
            sleep 0.5; kill -CONT "${PID[broker]}"; note "broker resumed"
            sleep "$OUTAGE"; start_replica a; wait_ready "${ADMIN[a]}" "replica a"; note "replica a restarted" ;;
    esac
}
in_flight() {
    curl -s "http://127.0.0.1:${ADMIN[$1]}/metrics" | sed -n 's/^lark_bridge_in_flight_requests \([0-9]*\).*/\1/p'
}
KINDS=(broker store replica inflight)
n=0
sleep "$FAULT_EVERY"
# Faults only while the load runs, leaving the last FAULT_EVERY s of it fault-free.
while [ $((SECONDS - T0 + OUTAGE + FAULT_EVERY)) -le "$LOAD_SECS" ] && kill -0 "$SIM" 2>/dev/null; do
    fault "${KINDS[$((n % ${#KINDS[@]}))]}"
    n=$((n + 1))
    sleep "$FAULT_EVERY"
done
note "fault schedule done ($n faults); waiting for the generator's retries"
set +e
wait "$SIM"
SIM_RC=$?
set -e
unset 'PID[simulate]'
[ "$SIM_RC" -eq 0 ] || { log "simulate failed ($SIM_RC):"; cat "$WORK/simulate.err" >&2; exit 1; }
note "generator done"

# ---------------------------------------------------------------- read back and judge

for r in a b; do curl -s "http://127.0.0.1:${ADMIN[$r]}/metrics" >"$WORK/metrics-$r.txt" || true; done

if [ "$SINK" = nats ]; then
    "$CHECK" nats "nats://127.0.0.1:$BROKER_PORT" LARK_HELPDESK "$WORK/acked.txt" >"$WORK/check.json"
else
    "$CHECK" kafka "127.0.0.1:$BROKER_PORT" lark.helpdesk.ticket.created.v1,lark.deadletter.v1 3 "$WORK/acked.txt" >"$WORK/check.json"
fi

python3 - "$WORK/simulate.json" "$WORK/check.json" "$SINK" "$LOAD_SECS" "$n" "$PROFILE" "$WORK" <<'EOF'
import json, re, sys
sim = json.load(open(sys.argv[1]))
chk = json.load(open(sys.argv[2]))
sink, secs, faults, profile = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
st = sim["status"]
other = {k: v for k, v in st.items() if k not in ("200", "502", "503", "error")}
rows = [
    ("sink / dedup", f"{sink} / redis, 2 replicas ({profile} build)"),
    ("load", f"{secs} s at {sim.get('target_rate') or '-'} events/s, {faults} faults"),
    ("events sent (distinct)", sim["events"]),
    ("requests sent (with retries)", sim["requests"]),
    ("200s", st.get("200", 0)),
    ("503s", st.get("503", 0)),
    ("502s (replica died mid-request)", st.get("502", 0)),
    ("transport errors / timeouts", st.get("error", 0)),
    ("other statuses", other or 0),
    ("events acknowledged (200)", sim["acked_events"]),
    ("events never acknowledged (gave up)", sim["events"] - sim["acked_events"]),
    ("events in the broker", chk["in_broker"]),
    ("LOST (200 but not in the broker)", chk["lost"]),
    ("duplicates in the broker", chk["duplicates"]),
    ("latency ms p50 / p99 / max", "{:.1f} / {:.1f} / {:.1f}".format(sim["latency_ms"]["p50"], sim["latency_ms"]["p99"], sim["latency_ms"]["max"])),
]
def outcomes(path):
    out = {}
    try:
        for line in open(path):
            m = re.match(r'lark_bridge_requests_total\{(.*)\} (\S+)', line)
            if m and 'source="webhook"' in m.group(1):
                o = re.search(r'outcome="([a-z_]+)"', m.group(1)).group(1)
                if float(m.group(2)):
                    out[o] = int(float(m.group(2)))
    except OSError:
        pass
    return out
work = sys.argv[7]
rows.append(("replica a outcomes (since its last start)", outcomes(f"{work}/metrics-a.txt")))
rows.append(("replica b outcomes", outcomes(f"{work}/metrics-b.txt")))
w = max(len(r[0]) for r in rows)
print()
for k, v in rows:
    print(f"  {k:<{w}}  {v}")
if chk["lost"]:
    print("  lost ids (first 10):", chk["lost_ids"])
if chk["duplicates"]:
    print("  duplicated ids (first 10):", chk["duplicate_ids"])
ok = chk["lost"] == 0 and sim["acked_events"] > 0 and not other
if sink == "nats":
    ok = ok and chk["duplicates"] == 0
print()
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
