#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this and nothing else):
#   1. install what the tests need when missing (brokers, deploy tools; cached outside the repo),
#   2. formatting, lints and the unused-dependency check (cargo machete),
#   3. smoke runs of the benchmark (every configuration still answers 200), of each fuzz target,
#      and a short fault soak (lost = 0, no duplicate on JetStream),
#   4. the ecosystem checks (the official AsyncAPI parser, the consumer examples with stock SDKs
#      against real brokers, the official Lark SDK's long-connection client against fake-lark)
#      and the offline deploy checks (Helm chart, compose file, alert rules, Dockerfile),
#   5. every Rust test (unit, black-box HTTP, real NATS / tansu / Redis), with nextest.
# Second runs on the same machine skip every install and reuse target/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "tools"
if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
if ! cargo machete --version >/dev/null 2>&1; then
    cargo install cargo-machete --locked
fi
bash scripts/ensure-tools.sh
bash scripts/ensure-deploy-tools.sh >/dev/null
bash scripts/ensure-ecosystem-tools.sh >/dev/null

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo machete (no unused dependency in any crate)"
cargo machete

step "build"
cargo build --quiet --workspace --bins --examples
cargo nextest run --workspace --no-run --cargo-quiet

step "benchmark smoke (bench/run.sh --smoke: every configuration answers 200)"
bash bench/run.sh --smoke

step "fuzz smoke (scripts/fuzz.sh --smoke: a few seconds per target)"
bash scripts/fuzz.sh --smoke

step "fault soak, short (scripts/soak.sh --short: lost must be 0)"
bash scripts/soak.sh --short

step "ecosystem checks (official AsyncAPI parser, consumer examples, official Lark SDK client)"
LARK_BRIDGE_BIN="$PWD/target/debug/lark-bridge" FAKE_LARK_BIN="$PWD/target/debug/fake-lark" \
    bash scripts/check-ecosystem.sh

step "deploy checks"
LARK_BRIDGE_BIN="$PWD/target/debug/lark-bridge" bash scripts/check-deploy.sh

step "tests"
cargo nextest run --workspace --no-fail-fast
