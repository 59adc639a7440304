#!/usr/bin/env bash
# Installs the third-party tools the ecosystem checks run (scripts/check-ecosystem.sh), each only
# when missing, from package registries, into ${LARK_BRIDGE_CACHE:-$HOME/.cache/lark-bridge}:
#   asyncapi   npm  @asyncapi/parser (the official AsyncAPI parser)         -> npm/asyncapi
#   consumers  PyPI cloudevents, confluent-kafka, nats-py                   -> venv (shared with
#              scripts/ensure-tools.sh)
#              npm  examples/consumers/node/package-lock.json (kafkajs, cloudevents)
#                                                                          -> npm/consumers-node,
#              linked as examples/consumers/node/node_modules (gitignored)
#   lark-oapi  PyPI lark-oapi (the official Lark SDK: lark.ws.Client)       -> venv
#   lark-node  npm  @larksuiteoapi/node-sdk (the official Lark SDK for Node, whose client
#              carries the helpdesk authorization)                         -> npm/lark-node
#
# Usage: scripts/ensure-ecosystem-tools.sh [asyncapi] [consumers] [lark-oapi] [lark-node]
#        (default: all)
# A second run only checks stamps and imports (well under a second per group).
# Progress goes to stderr; stdout gets NAME=PATH lines:
#   PYTHON=...               the venv's python (consumers, lark-oapi)
#   ASYNCAPI_PARSER=...      node_modules directory that holds @asyncapi/parser
#   CONSUMERS_NODE_MODULES=... node_modules of the Node consumer example
#   LARK_NODE_MODULES=...    node_modules directory that holds @larksuiteoapi/node-sdk
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LARK_BRIDGE_CACHE:-$HOME/.cache/lark-bridge}"
VENV="$CACHE/venv"
NPM_DIR="$CACHE/npm"

# Pinned so every machine runs what these checks were written against.
ASYNCAPI_NPM_PKGS=("@asyncapi/parser@3.6.6")
LARK_NODE_NPM_PKGS=("@larksuiteoapi/node-sdk@1.74.0")
CONSUMER_PY_PKGS=(cloudevents==2.2.0 confluent-kafka==2.16.1 nats-py==2.16.0)
CONSUMER_PY_MODULES=(cloudevents confluent_kafka nats)
LARK_PY_PKGS=(lark-oapi==1.7.5)
LARK_PY_MODULES=(lark_oapi)
NODE_EXAMPLE="$ROOT/examples/consumers/node"

log() { printf 'ensure-ecosystem-tools: %s\n' "$*" >&2; }
die() { printf 'ensure-ecosystem-tools: ERROR: %s\n' "$*" >&2; exit 1; }

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(asyncapi consumers lark-oapi lark-node)
for g in "${groups[@]}"; do
    case "$g" in asyncapi | consumers | lark-oapi | lark-node) ;; *) die "unknown group $g (asyncapi, consumers, lark-oapi, lark-node)" ;; esac
done

mkdir -p "$CACHE" "$NPM_DIR"
# Two runs at once (a developer and CI) must not install over each other. Not ensure-tools.sh's
# lock: that script may run while this one holds ours.
exec 8>"$CACHE/.ecosystem.lock"
flock 8

# ---------------------------------------------------------------- python

ensure_venv() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 not found"
    log "creating $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        # Debian splits venv/ensurepip into python3-venv.
        rm -rf "$VENV"
        command -v apt-get >/dev/null 2>&1 || die "python3 -m venv failed and there is no apt-get"
        apt-get install -y -qq python3-venv >&2 || { apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2; } \
            || die "apt-get install python3-venv failed"
        python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed"
    fi
}

# py_group NAME "PKGS..." "MODULES...": install PKGS unless the stamp says they are there and
# every module is importable (found, not imported: lark_oapi takes seconds to import).
py_group() {
    local name="$1" pkgs="$2" modules="$3" stamp
    ensure_venv
    stamp="$VENV/.ecosystem-$name"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$pkgs" ] &&
        "$VENV/bin/python" -c 'import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in sys.argv[1:]))' $modules 2>/dev/null; then
        return 0
    fi
    log "pip install $pkgs (into $VENV)"
    # shellcheck disable=SC2086 # word splitting intended: a list of pinned packages
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $pkgs >&2 \
        || die "pip install $pkgs failed"
    printf '%s\n' "$pkgs" >"$stamp"
}

# ---------------------------------------------------------------- npm

command_npm() { command -v npm >/dev/null 2>&1 || die "npm not found (Debian: apt-get install npm; or nodejs >= 18)"; }

# npm_group NAME MARKER PKG...: PKG installed into $NPM_DIR/NAME unless MARKER (a file under
# its node_modules) exists for exactly these packages.
npm_group() {
    local name="$1" marker="$2"
    shift 2
    local dir="$NPM_DIR/$name" want="$*"
    if [ -f "$dir/node_modules/$marker" ] && [ "$(cat "$dir/.pkgs" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    command_npm
    log "npm install $want (into $dir)"
    rm -rf "$dir"
    mkdir -p "$dir"
    printf '{ "name": "lark-bridge-%s-tools", "private": true }\n' "$name" >"$dir/package.json"
    npm install --silent --no-audit --no-fund --prefix "$dir" "$@" >&2 \
        || die "npm install $want failed"
    printf '%s\n' "$want" >"$dir/.pkgs"
}

ensure_asyncapi() {
    npm_group asyncapi @asyncapi/parser/package.json "${ASYNCAPI_NPM_PKGS[@]}"
}

# The Node example's dependencies, exactly as its package-lock.json pins them (npm ci), in the
# cache; the example finds them through a node_modules symlink next to it.
ensure_consumers_node() {
    local dir="$NPM_DIR/consumers-node" want
    [ -f "$NODE_EXAMPLE/package-lock.json" ] || die "no $NODE_EXAMPLE/package-lock.json"
    want="$(sha256sum "$NODE_EXAMPLE/package-lock.json" | cut -d' ' -f1)"
    if ! { [ -d "$dir/node_modules" ] && [ "$(cat "$dir/.lock-sha256" 2>/dev/null)" = "$want" ]; }; then
        command_npm
        log "npm ci for examples/consumers/node (into $dir)"
        rm -rf "$dir"
        mkdir -p "$dir"
        cp "$NODE_EXAMPLE/package.json" "$NODE_EXAMPLE/package-lock.json" "$dir/"
        (cd "$dir" && npm ci --silent --no-audit --no-fund >&2) || die "npm ci in $dir failed"
        printf '%s\n' "$want" >"$dir/.lock-sha256"
    fi
    local link="$NODE_EXAMPLE/node_modules"
    if [ "$(readlink "$link" 2>/dev/null)" != "$dir/node_modules" ]; then
        if [ -e "$link" ] && [ ! -L "$link" ]; then
            log "keeping the real $link (npm install in the example); not linking the cache"
            return 0
        fi
        ln -sfn "$dir/node_modules" "$link"
    fi
}

out=()
for g in "${groups[@]}"; do
    case "$g" in
        asyncapi)
            ensure_asyncapi
            out+=("ASYNCAPI_PARSER=$NPM_DIR/asyncapi/node_modules")
            ;;
        consumers)
            py_group consumers "${CONSUMER_PY_PKGS[*]}" "${CONSUMER_PY_MODULES[*]}"
            ensure_consumers_node
            out+=("PYTHON=$VENV/bin/python" "CONSUMERS_NODE_MODULES=$NODE_EXAMPLE/node_modules")
            ;;
        lark-oapi)
            py_group lark-oapi "${LARK_PY_PKGS[*]}" "${LARK_PY_MODULES[*]}"
            out+=("PYTHON=$VENV/bin/python")
            ;;
        lark-node)
            npm_group lark-node @larksuiteoapi/node-sdk/package.json "${LARK_NODE_NPM_PKGS[@]}"
            out+=("LARK_NODE_MODULES=$NPM_DIR/lark-node/node_modules")
            ;;
    esac
done
printf '%s\n' "${out[@]}" | awk '!seen[$0]++'
