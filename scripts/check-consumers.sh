#!/usr/bin/env bash
# Runs the consumer examples (examples/consumers/) against what the real bridge publishes to
# real brokers, in both content modes:
#   for mode in structured binary:
#     a fresh nats-server (JetStream) and tansu (Kafka protocol) on free loopback ports,
#     one bridge per broker (sink.mode = mode), `lark-bridge simulate --count N` into each,
#     then every consumer for that broker, which must print exactly the N event ids that
#     simulate got 200 for (one `ticket id=...` line each) and exit 0:
#       python-kafka  examples/consumers/python/kafka_consumer.py (cloudevents + confluent-kafka)
#       node-kafka    examples/consumers/node/kafka-consumer.mjs  (cloudevents + kafkajs)
#       python-nats   examples/consumers/python/nats_consumer.py  (cloudevents + nats-py)
#       rust-kafka    examples/consumers/rust/kafka_consumer.rs   (lark-protocol + rdkafka)
#       rust-nats     examples/consumers/rust/nats_consumer.rs    (lark-protocol + async-nats)
# Prints one PASS/FAIL line per run and `consumers: N passed, N failed` last; exits non-zero on
# any failure. Every wait is bounded; every process it started is killed on exit.
#
#   LARK_BRIDGE_BIN   the bridge binary (default ${CARGO_TARGET_DIR:-target}/debug/lark-bridge)
#   RUST_EXAMPLES_DIR the built Rust examples (default: examples/ beside the bridge binary, as
#                     `cargo build --workspace --bins --examples` leaves them)
#   CONSUMERS_COUNT   events per run (default 5)
#   KEEP=1            keep the work directory (logs, consumer output)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="${LARK_BRIDGE_BIN:-$TARGET_DIR/debug/lark-bridge}"
[[ "$BIN" == /* ]] || BIN="$ROOT/$BIN"
RUST_EXAMPLES="${RUST_EXAMPLES_DIR:-$(dirname "$BIN")/examples}"
[[ "$RUST_EXAMPLES" == /* ]] || RUST_EXAMPLES="$ROOT/$RUST_EXAMPLES"
COUNT="${CONSUMERS_COUNT:-5}"
KEY="consumers-encrypt-key"
CACHE="${LARK_BRIDGE_CACHE:-$HOME/.cache/lark-bridge}"
CONSUMER_TIMEOUT=45   # seconds a consumer may take for COUNT events (tansu group joins take ~3 s)

log() { printf 'consumers: %s\n' "$*" >&2; }
passed=0
failed=0
fail_setup() {
    echo "FAIL $*"
    echo "consumers: $passed passed, $((failed + 1)) failed"
    exit 1
}

[[ -x "$BIN" ]] || fail_setup "no lark-bridge binary at $BIN (cargo build, or set LARK_BRIDGE_BIN)"
for example in kafka_consumer nats_consumer; do
    [[ -x "$RUST_EXAMPLES/$example" ]] ||
        fail_setup "no Rust example $example in $RUST_EXAMPLES (cargo build --examples, or set RUST_EXAMPLES_DIR)"
done
bash scripts/ensure-tools.sh >/dev/null || fail_setup "installing nats-server and tansu (scripts/ensure-tools.sh)"
tools="$(bash scripts/ensure-ecosystem-tools.sh consumers)" || fail_setup "installing the consumers' packages (scripts/ensure-ecosystem-tools.sh consumers)"
PYTHON="$(sed -n 's/^PYTHON=//p' <<<"$tools")"
NATS_SERVER="$CACHE/bin/nats-server"
TANSU="$CACHE/bin/tansu"
command -v node >/dev/null || fail_setup "node not found"

WORK="$(mktemp -d -t lark-bridge-consumers.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        # SIGKILL whatever did not stop within 5 s.
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    PIDS=()
    if [[ "${KEEP:-}" == 1 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_port() {
    local port="$1" pid="$2" what="$3"
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { log "$what exited"; return 1; }
        sleep 0.1
    done
    log "$what did not open port $port within 10 s"
    return 1
}

wait_ready() {
    local port="$1" pid="$2" what="$3"
    for _ in $(seq 1 150); do
        if curl -sf -m 2 -o /dev/null "http://127.0.0.1:$port/readyz"; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { log "$what exited"; return 1; }
        sleep 0.2
    done
    log "$what not ready within 30 s: $(curl -s -m 2 "http://127.0.0.1:$port/readyz")"
    return 1
}

show_log() { [[ -f "$1" ]] && tail -n 15 "$1" | sed 's/^/    /'; }

# start_brokers DIR: a fresh nats-server and tansu; sets NATS_PORT and KAFKA_PORT.
start_brokers() {
    local dir="$1"
    mkdir -p "$dir/nats"
    NATS_PORT="$(free_port)"
    "$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$dir/nats" >"$dir/nats.log" 2>&1 &
    PIDS+=($!)
    wait_port "$NATS_PORT" $! nats-server || { show_log "$dir/nats.log"; return 1; }
    KAFKA_PORT="$(free_port)"
    "$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine memory://tansu/ >"$dir/tansu.log" 2>&1 &
    PIDS+=($!)
    wait_port "$KAFKA_PORT" $! tansu || { show_log "$dir/tansu.log"; return 1; }
}

# start_bridge DIR SINK MODE: a bridge publishing to SINK in MODE; sets WEB_PORT.
start_bridge() {
    local dir="$1" sink="$2" mode="$3" admin
    WEB_PORT="$(free_port)"
    admin="$(free_port)"
    env -i PATH="$PATH" HOME="$HOME" \
        LARK_BRIDGE__SERVER__LISTEN="127.0.0.1:$WEB_PORT" \
        LARK_BRIDGE__ADMIN__LISTEN="127.0.0.1:$admin" \
        LARK_BRIDGE__LARK__ENCRYPT_KEY="$KEY" \
        LARK_BRIDGE__LOG__FORMAT=json \
        LARK_BRIDGE__SINK__KIND="$sink" \
        LARK_BRIDGE__SINK__MODE="$mode" \
        LARK_BRIDGE__SINK__NATS__URL="nats://127.0.0.1:$NATS_PORT" \
        LARK_BRIDGE__SINK__KAFKA__BROKERS="127.0.0.1:$KAFKA_PORT" \
        LARK_BRIDGE__SINK__KAFKA__CREATE_TOPICS=true \
        LARK_BRIDGE__SINK__KAFKA__TOPIC_PARTITIONS=3 \
        "$BIN" >"$dir/bridge-$sink.log" 2>&1 &
    PIDS+=($!)
    wait_ready "$admin" $! "bridge ($sink, $mode)" || { show_log "$dir/bridge-$sink.log"; return 1; }
}

# simulate DIR SINK: COUNT events into the bridge on WEB_PORT; the ids answered 200 go to
# DIR/sent-SINK.ids.
simulate() {
    local dir="$1" sink="$2"
    if ! timeout 60 "$BIN" simulate --url "http://127.0.0.1:$WEB_PORT/webhook/event" \
        --encrypt-key "$KEY" --count "$COUNT" >"$dir/simulate-$sink.out" 2>&1; then
        log "simulate into the $sink bridge failed"
        show_log "$dir/simulate-$sink.out"
        return 1
    fi
    awk '$2 == 200 { print $1 }' "$dir/simulate-$sink.out" | sort >"$dir/sent-$sink.ids"
    [[ "$(wc -l <"$dir/sent-$sink.ids")" -eq "$COUNT" ]] || { log "simulate: not $COUNT answers 200"; show_log "$dir/simulate-$sink.out"; return 1; }
}

# run_consumer DIR SINK NAME CMD...: CMD must exit 0 having printed exactly the ids sent.
run_consumer() {
    local dir="$1" sink="$2" name="$3" mode="$4"
    shift 4
    local out="$dir/$name.out" rc problem=""
    timeout "$((CONSUMER_TIMEOUT + 15))" "$@" >"$out" 2>"$dir/$name.err"
    rc=$?
    sed -n 's/^ticket id=\([^ ]*\) .*/\1/p' "$out" | sort >"$dir/$name.ids"
    if [[ $rc -ne 0 ]]; then
        problem="exit status $rc"
    elif ! cmp -s "$dir/$name.ids" "$dir/sent-$sink.ids"; then
        problem="ids differ from the $COUNT sent"
    elif grep -v '^ticket id=[^ ]* type=com\.larksuite\.helpdesk\.ticket\.created\.v1 ticket_id=[^ ]* helpdesk_id=[^ ]*$' "$out" | grep -q .; then
        problem="unexpected output lines"
    fi
    if [[ -z "$problem" ]]; then
        passed=$((passed + 1))
        echo "PASS $name ($mode): $COUNT tickets, ids match"
        [[ -z "${VERBOSE:-}" ]] || sed 's/^/    /' "$out"
    else
        failed=$((failed + 1))
        echo "FAIL $name ($mode): $problem"
        echo "    sent:     $(tr '\n' ' ' <"$dir/sent-$sink.ids")"
        echo "    received: $(tr '\n' ' ' <"$dir/$name.ids")"
        tail -n 15 "$out" "$dir/$name.err" | sed 's/^/    /'
    fi
}

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    PIDS=()
}

PY_DIR="$ROOT/examples/consumers/python"
NODE_DIR="$ROOT/examples/consumers/node"
TOPIC=lark.helpdesk.ticket.created.v1
for mode in structured binary; do
    dir="$WORK/$mode"
    mkdir -p "$dir"
    if ! { start_brokers "$dir" &&
        start_bridge "$dir" nats "$mode" && simulate "$dir" nats &&
        start_bridge "$dir" kafka "$mode" && simulate "$dir" kafka; }; then
        failed=$((failed + 1))
        echo "FAIL setup ($mode): brokers, bridges or simulate"
        stop_all
        continue
    fi
    run_consumer "$dir" kafka python-kafka "$mode" \
        "$PYTHON" "$PY_DIR/kafka_consumer.py" --brokers "127.0.0.1:$KAFKA_PORT" --topic "$TOPIC" \
        --group "example-python-$mode" --count "$COUNT" --timeout "$CONSUMER_TIMEOUT"
    run_consumer "$dir" kafka node-kafka "$mode" \
        node "$NODE_DIR/kafka-consumer.mjs" --brokers "127.0.0.1:$KAFKA_PORT" --topic "$TOPIC" \
        --group "example-node-$mode" --count "$COUNT" --timeout "$CONSUMER_TIMEOUT"
    run_consumer "$dir" nats python-nats "$mode" \
        "$PYTHON" "$PY_DIR/nats_consumer.py" --url "nats://127.0.0.1:$NATS_PORT" \
        --durable "example-python-$mode" --count "$COUNT" --timeout "$CONSUMER_TIMEOUT"
    run_consumer "$dir" kafka rust-kafka "$mode" \
        "$RUST_EXAMPLES/kafka_consumer" --brokers "127.0.0.1:$KAFKA_PORT" --topic "$TOPIC" \
        --group "example-rust-$mode" --count "$COUNT" --timeout "$CONSUMER_TIMEOUT"
    run_consumer "$dir" nats rust-nats "$mode" \
        "$RUST_EXAMPLES/nats_consumer" --url "nats://127.0.0.1:$NATS_PORT" \
        --durable "example-rust-$mode" --count "$COUNT" --timeout "$CONSUMER_TIMEOUT"
    stop_all
done

echo "consumers: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
