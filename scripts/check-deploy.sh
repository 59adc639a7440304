#!/usr/bin/env bash
# Offline checks of everything under deploy/, helm/, docker-compose.yml and the Dockerfile.
# Prints one PASS/FAIL/SKIP line per check, then `deploy checks: N passed, N failed`, and exits
# non-zero when any check failed. Tools come from scripts/ensure-deploy-tools.sh (cached).
#
#   LARK_BRIDGE_BIN   the built binary for `check-config` (default:
#                     ${CARGO_TARGET_DIR:-target}/debug/lark-bridge; a missing binary fails
#                     that check)
#   CHECK_DEPLOY_ALLOW_MISSING_BIN=1
#                     report that check as SKIP instead when the binary does not exist (for
#                     working on deploy files before the binary is built; never set in CI)
#   K8S_VERSION       Kubernetes version for kubernetes-validate (default 1.32)
#   VERBOSE=1         print every check's output, not only a failing one's
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="${LARK_BRIDGE_BIN:-$TARGET_DIR/debug/lark-bridge}"
[[ "$BIN" == /* ]] || BIN="$PWD/$BIN"
cd "$ROOT"

CHART=helm/lark-bridge
ALL_ON="$CHART/ci/all-on-values.yaml"
ALERTS=deploy/prometheus/alerts.yaml
K8S_VERSION="${K8S_VERSION:-1.32}"

if ! tools="$(scripts/ensure-deploy-tools.sh)"; then
  echo "FAIL installing the deploy tools (scripts/ensure-deploy-tools.sh)"
  echo "deploy checks: 0 passed, 1 failed"
  exit 1
fi
while IFS='=' read -r name path; do
  case "$name" in
    HELM | PROMTOOL | PYTHON | KUBERNETES_VALIDATE | COMPOSE_SCHEMA | CRD_MODELS) printf -v "$name" '%s' "$path" ;;
  esac
done <<<"$tools"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export ROOT WORK CHART ALL_ON ALERTS COMPOSE_SCHEMA CRD_MODELS

passed=0
failed=0
skipped=0

# run_check "description" function [args...]: PASS/FAIL from the function's exit status;
# exit status 77 means SKIP. Output goes to a log, shown for a failure (or with VERBOSE=1).
run_check() {
  local desc="$1"
  shift
  local log="$WORK/check.log" rc
  "$@" >"$log" 2>&1
  rc=$?
  if [[ $rc -eq 0 ]]; then
    passed=$((passed + 1))
    echo "PASS $desc"
  elif [[ $rc -eq 77 ]]; then
    skipped=$((skipped + 1))
    echo "SKIP $desc ($(tail -n1 "$log"))"
  else
    failed=$((failed + 1))
    echo "FAIL $desc"
  fi
  if [[ $rc -ne 0 && $rc -ne 77 || -n "${VERBOSE:-}" ]]; then
    # Helm reports each symlinked file (files/ -> deploy/) at INFO level; that is expected.
    grep -v 'found symbolic link in path' "$log" | tail -n 40 | sed 's/^/    /'
  fi
}

# helm without its INFO lines about files/ symlinks (files/alerts.yaml -> deploy/prometheus/...).
helm_q() {
  local rc
  "$HELM" "$@" 2>"$WORK/helm.stderr"
  rc=$?
  grep -v 'found symbolic link in path' "$WORK/helm.stderr" >&2
  return $rc
}

# render NAME [helm args...]: helm template into $WORK/NAME.yaml (once).
render() {
  local name="$1"
  shift
  [[ -s "$WORK/$name.yaml" ]] && return 0
  helm_q template lark-bridge "$CHART" --namespace helpdesk "$@" >"$WORK/$name.yaml.tmp" &&
    mv "$WORK/$name.yaml.tmp" "$WORK/$name.yaml"
}
# The configurations the bridge must accept: the default and all-on values, the two examples,
# and an existing Secret that holds NATS credentials (they go to the NATS KV store too).
RENDERS=(default all-on nats kafka longconn existing-secret)
render_all() {
  render default &&
    render all-on -f "$ALL_ON" &&
    render nats -f deploy/values-nats.yaml &&
    render kafka -f deploy/values-kafka.yaml &&
    render longconn -f deploy/values-longconn.yaml --set secrets.appSecret=example &&
    render existing-secret -f deploy/values-nats.yaml --set existingSecret=lark-bridge-credentials \
      --set 'existingSecretKeys={encrypt_key,verification_token,nats_password}'
}

# --- chart ---------------------------------------------------------------------------------
check_lint_default() { helm_q lint --strict "$CHART"; }
check_lint_all_on() { helm_q lint --strict "$CHART" -f "$ALL_ON"; }

check_validate() {
  local name="$1"
  shift
  render "$name" "$@" || return 1
  "$KUBERNETES_VALIDATE" --strict -k "$K8S_VERSION" "$WORK/$name.yaml"
}

check_examples() {
  local f
  for f in deploy/values-nats.yaml deploy/values-kafka.yaml deploy/values-longconn.yaml; do
    helm_q lint --strict "$CHART" -f "$f" || return 1
  done
  check_validate nats -f deploy/values-nats.yaml &&
    check_validate kafka -f deploy/values-kafka.yaml &&
    check_validate longconn -f deploy/values-longconn.yaml --set secrets.appSecret=example
}

# Each case must make helm fail, for the reason given (a pattern of its error message).
check_rejects_bad_values() {
  local n=0 out
  expect_failure() {
    local why="$1" pattern="$2" values="$3"
    n=$((n + 1))
    printf '%s\n' "$values" >"$WORK/bad-$n.yaml"
    if out="$(helm_q template lark-bridge "$CHART" -f "$WORK/bad-$n.yaml" 2>&1)"; then
      echo "accepted, but should not be: $why"
      return 1
    fi
    if ! grep -Eq "$pattern" <<<"$out"; then
      echo "rejected, but not for the expected reason ($why): $out"
      return 1
    fi
    echo "rejected as expected: $why"
  }
  expect_failure 'replicaCount of the wrong type' 'schema.*|replicaCount' 'replicaCount: "two"' &&
    expect_failure 'a misspelt top-level key' "additional properties 'replicaCont'" 'replicaCont: 2' &&
    expect_failure 'an unknown config key' "additional properties 'brokerz'" $'config:\n  sink:\n    kafka:\n      brokerz: x' &&
    expect_failure 'an unknown sink kind' 'kind' $'config:\n  sink:\n    kind: rabbitmq' &&
    expect_failure 'a secret in the ConfigMap' "additional properties 'encrypt_key'" $'config:\n  lark:\n    encrypt_key: k' &&
    expect_failure 'a password in Kafka properties' 'propertyName' $'config:\n  sink:\n    kafka:\n      properties:\n        sasl.password: p' &&
    expect_failure 'memory dedup with 2 replicas' 'per pod' $'config:\n  dedup:\n    backend: memory' &&
    expect_failure 'a grace period shorter than the drain' 'terminationGracePeriodSeconds' 'terminationGracePeriodSeconds: 10'
}

check_deployment() {
  render default || return 1
  "$PYTHON" - "$WORK/default.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
dep = by_kind["Deployment"][0]
svc = by_kind["Service"][0]
cm = by_kind["ConfigMap"][0]
spec = dep["spec"]
pod = spec["template"]["spec"]
c = pod["containers"][0]
errors = []
def need(cond, msg):
    if not cond:
        errors.append(msg)
import tomllib
cfg = tomllib.loads(cm["data"]["config.toml"])
grace = cfg["server"].get("shutdown_grace_secs", 20)
need(spec.get("replicas") == 2, "replicas is not 2")
need(spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "maxUnavailable is not 0")
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
need(ports == {"http": 8080, "metrics": 9090}, f"container ports {ports}")
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    g = c[probe]["httpGet"]
    need(g["path"] == path and ports.get(g["port"], g["port"]) == 9090, f"{probe} is not {path} on 9090")
need(pod["terminationGracePeriodSeconds"] > grace, "terminationGracePeriodSeconds <= server.shutdown_grace_secs")
need(c["args"] == ["--config", "/etc/lark-bridge/config.toml"], f"args {c['args']}")
need(any(m["mountPath"] == "/etc/lark-bridge/config.toml" for m in c["volumeMounts"]), "config.toml not mounted")
psc, sc = pod["securityContext"], c["securityContext"]
need(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001, "pod is not runAsNonRoot / uid 10001")
need(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp is not RuntimeDefault")
need(sc.get("readOnlyRootFilesystem") is True, "root filesystem is writable")
need(sc.get("allowPrivilegeEscalation") is False, "privilege escalation allowed")
need(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities not dropped")
need(c.get("resources", {}).get("requests") and c["resources"].get("limits"), "no resources")
need(any(t["topologyKey"] == "kubernetes.io/hostname" for t in pod.get("topologySpreadConstraints", [])),
     "no topology spread by hostname")
need("checksum/config" in spec["template"]["metadata"]["annotations"], "no checksum/config annotation")
labels = spec["template"]["metadata"]["labels"]
need(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "Service selector does not match the pods")
need(cfg["server"]["listen"] == "0.0.0.0:8080" and cfg["admin"]["listen"] == "0.0.0.0:9090", "listen addresses")
print("\n".join(errors) or "Deployment: replicas, rollout, probes, grace, security, spread, checksum OK")
sys.exit(1 if errors else 0)
EOF
}

# Config: TOML parses, no plain secrets, each *_file key names a file the Secret volume mounts.
check_config_wiring() {
  render_all || return 1
  "$PYTHON" - "$WORK" "${RENDERS[@]}" <<'EOF'
import sys, yaml, tomllib, os
work, names = sys.argv[1], sys.argv[2:]
SECRET_KEYS = {"encrypt_key", "verification_token", "app_secret", "password", "token"}
errors = []
for name in names:
    docs = [d for d in yaml.safe_load_all(open(os.path.join(work, name + ".yaml"))) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "config.toml" in d.get("data", {}))
    dep = next(d for d in docs if d["kind"] == "Deployment")
    secrets = [d for d in docs if d["kind"] == "Secret"]
    text = cm["data"]["config.toml"]
    open(os.path.join(work, name + ".toml"), "w").write(text)
    try:
        cfg = tomllib.loads(text)
    except Exception as e:
        errors.append(f"{name}: config.toml is not TOML: {e}")
        continue
    pod = dep["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    files = set()
    for v in pod["volumes"]:
        if "secret" in v:
            for item in v["secret"].get("items", []):
                files.add(f'{mounts[v["name"]]}/{item["path"]}')
            secret_keys = {i["key"] for i in v["secret"].get("items", [])}
            if secrets:
                have = set(secrets[0].get("data", {}))
                if not secret_keys <= have:
                    errors.append(f"{name}: volume items {secret_keys - have} not in the Secret")
    def walk(t, path=""):
        for k, v in t.items():
            p = f"{path}.{k}" if path else k
            if isinstance(v, dict):
                if p != "sink.kafka.properties":
                    walk(v, p)
                else:
                    for pk in v:
                        if "password" in pk.lower() or "secret" in pk.lower():
                            errors.append(f"{name}: secret {p}.{pk} in the ConfigMap")
            elif k in SECRET_KEYS:
                errors.append(f"{name}: plain secret {p} in the ConfigMap")
            elif k.endswith("_file") and v.startswith("/etc/lark-bridge/secrets/") and v not in files:
                errors.append(f"{name}: {p} = {v} is not mounted")
            elif k.endswith("_file"):
                print(f"{name}: {p} -> {v}")
    walk(cfg)
    if name == "existing-secret":
        if secrets:
            errors.append("existing-secret: the chart created a Secret although existingSecret is set")
        for section in ("sink", "dedup"):
            if cfg.get(section, {}).get("nats", {}).get("password_file") != "/etc/lark-bridge/secrets/nats_password":
                errors.append(f"existing-secret: {section}.nats.password_file is not the mounted nats_password")
    lark = cfg.get("lark", {})
    if cfg.get("source", {}).get("kind") == "long_connection":
        # The App Secret authenticates the connection; no Encrypt Key or Token is needed.
        if not lark.get("app_secret_file"):
            errors.append(f"{name}: long_connection without app_secret_file")
    elif not (lark.get("encrypt_key_file") or lark.get("verification_token_file") or lark.get("allow_unverified")):
        errors.append(f"{name}: neither encrypt_key_file nor verification_token_file")
print("\n".join(errors) or "configs parse; secrets only as mounted files")
sys.exit(1 if errors else 0)
EOF
}

check_check_config() {
  if [[ ! -x "$BIN" ]]; then
    if [[ "${CHECK_DEPLOY_ALLOW_MISSING_BIN:-}" == 1 ]]; then
      echo "no binary at $BIN"
      return 77
    fi
    echo "no lark-bridge binary at $BIN: build it (cargo build) or set LARK_BRIDGE_BIN"
    return 1
  fi
  check_config_wiring >/dev/null || { echo "config extraction failed"; return 1; }
  local name ok=0 out
  # run_config ARGS...: check-config must succeed and print the effective config.
  run_config() {
    if ! out="$("$@" 2>&1)"; then
      echo "$out"
      return 1
    fi
    echo "$out" | tail -n 3
    grep -q '^\[sink\]' <<<"$out" || { echo "check-config printed no effective config"; return 1; }
  }
  for name in "${RENDERS[@]}"; do
    echo "== chart render: $name"
    run_config env -i PATH="$PATH" "$BIN" check-config --skip-secret-files --config "$WORK/$name.toml" || ok=1
  done
  # The compose stack configures the bridge through environment variables only.
  local profile
  : >"$WORK/empty.toml"
  for profile in nats kafka; do
    echo "== docker-compose.yml environment, COMPOSE_PROFILES=$profile"
    mapfile -t vars < <("$PYTHON" - "$profile" <<'EOF'
import re, sys, yaml
env = yaml.safe_load(open("docker-compose.yml"))["services"]["lark-bridge"]["environment"]
for k, v in env.items():
    v = re.sub(r"\$\{COMPOSE_PROFILES[^}]*\}", sys.argv[1], str(v))
    print(f"{k}={v}")
EOF
)
    run_config env -i PATH="$PATH" "${vars[@]}" "$BIN" check-config --skip-secret-files --config "$WORK/empty.toml" || ok=1
  done
  return $ok
}

# --- Prometheus Operator resources -------------------------------------------------------
check_monitoring_resources() {
  render all-on -f "$ALL_ON" || return 1
  "$PYTHON" - "$WORK/all-on.yaml" "$WORK/crds.json" <<'EOF' || return 1
import json, re, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {}
for d in docs:
    kinds.setdefault(d["kind"], []).append(d)
errors = []
def need(cond, msg):
    if not cond:
        errors.append(msg)
for k in ("ServiceMonitor", "PrometheusRule"):
    need(len(kinds.get(k, [])) == 1, f"expected one {k} in the all-on render")
if errors:
    print("\n".join(errors)); sys.exit(1)
sm, pr, svc = kinds["ServiceMonitor"][0], kinds["PrometheusRule"][0], kinds["Service"][0]
dep = kinds["Deployment"][0]
for o in (sm, pr):
    need(o["apiVersion"] == "monitoring.coreos.com/v1", f"{o['kind']} apiVersion {o['apiVersion']}")
    need(o["metadata"].get("labels", {}).get("release") == "kube-prometheus-stack", f"{o['kind']} lacks its extra labels")
svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
container = dep["spec"]["template"]["spec"]["containers"][0]
cports = {p["name"]: p["containerPort"] for p in container["ports"]}
need(all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()),
     "ServiceMonitor selector does not match the Service's labels")
need(sm["spec"].get("namespaceSelector", {}).get("matchNames") == [svc["metadata"].get("namespace", "helpdesk")],
     "ServiceMonitor namespaceSelector")
need(sm["spec"]["endpoints"], "ServiceMonitor has no endpoints")
for ep in sm["spec"]["endpoints"]:
    port = svc_ports.get(ep.get("port"))
    need(port is not None, f"endpoint port {ep.get('port')!r} is not a Service port")
    if port:
        need(cports.get(port["targetPort"], port["targetPort"]) == 9090, "metrics endpoint does not reach container port 9090")
    need(ep.get("path", "/metrics") == "/metrics", "endpoint path is not /metrics")
dur = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
groups = pr["spec"].get("groups") or []
need(groups, "PrometheusRule has no groups")
names = set()
for g in groups:
    need(g.get("name") and g["name"] not in names, f"group name {g.get('name')!r} missing or repeated")
    names.add(g.get("name"))
    need(g.get("rules"), f"group {g.get('name')} has no rules")
    for r in g.get("rules", []):
        a = r.get("alert")
        need(isinstance(a, str) and a, f"rule without alert: {r}")
        need(isinstance(r.get("expr"), str) and r["expr"].strip(), f"{a}: no expr")
        need(r.get("labels", {}).get("severity") in ("warning", "critical"), f"{a}: severity label")
        need(r.get("annotations", {}).get("summary"), f"{a}: no summary annotation")
        need("for" not in r or dur.match(r["for"]), f"{a}: bad for {r.get('for')!r}")
json.dump([sm, pr], open(sys.argv[2], "w"))
print("\n".join(errors) or f"ServiceMonitor OK; PrometheusRule: {sum(len(g['rules']) for g in groups)} rules OK")
sys.exit(1 if errors else 0)
EOF
  # The prometheus-operator CRDs' own schemas (kubernetes-validate has none for CRDs).
  node --input-type=module -e '
    import { readFileSync } from "node:fs";
    const [models, file] = process.argv.slice(1);
    const docs = JSON.parse(readFileSync(file, "utf8"));
    let bad = 0;
    for (const doc of docs) {
      const mod = await import(`${models}/monitoring.coreos.com/v1/${doc.kind}.js`);
      try { new mod[doc.kind](doc).validate(); console.log(`${doc.kind}: valid against the CRD schema`); }
      catch (e) { bad = 1; console.log(`${doc.kind}: ${e.message}`); }
    }
    process.exit(bad);
  ' "$CRD_MODELS" "$WORK/crds.json"
}

check_rules_equal() {
  render all-on -f "$ALL_ON" || return 1
  "$PYTHON" - "$WORK/all-on.yaml" "$ALERTS" <<'EOF'
import sys, yaml
pr = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "PrometheusRule")
want = yaml.safe_load(open(sys.argv[2]))["groups"]
if pr["spec"]["groups"] != want:
    print("the chart's PrometheusRule groups differ from", sys.argv[2]); sys.exit(1)
print("PrometheusRule groups == alerts.yaml groups")
EOF
}

# --- Prometheus and Grafana files ----------------------------------------------------------
check_promtool() {
  "$PROMTOOL" check rules "$ALERTS" && "$PROMTOOL" check config deploy/prometheus/prometheus.yml
}

# Unit tests: each alert fires on a synthetic failure and stays quiet on healthy traffic.
# Annotations are stripped from a copy of the rules so the tests compare labels only.
check_alert_tests() {
  "$PYTHON" - "$ALERTS" "$WORK/rules-no-annotations.yaml" <<'EOF' || return 1
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for g in doc["groups"]:
    for r in g["rules"]:
        r.pop("annotations", None)
yaml.safe_dump(doc, open(sys.argv[2], "w"))
EOF
  cat >"$WORK/alerts-test.yaml" <<EOF
rule_files:
  - $WORK/rules-no-annotations.yaml
evaluation_interval: 1m
tests:
  - name: rejects rising
    interval: 1m
    input_series:
      - series: 'lark_bridge_requests_total{job="lark-bridge",instance="a:9090",source="webhook",outcome="published"}'
        values: '0+60x40'
      - series: 'lark_bridge_requests_total{job="lark-bridge",instance="a:9090",source="webhook",outcome="unauthorized"}'
        values: '0+30x40'
    alert_rule_test:
      - {eval_time: 25m, alertname: LarkBridgeRejectsRising, exp_alerts: [{exp_labels: {severity: warning, job: lark-bridge}}]}
      - {eval_time: 25m, alertname: LarkBridgeUnavailable, exp_alerts: []}
  - name: healthy traffic raises nothing
    interval: 1m
    input_series:
      - series: 'lark_bridge_requests_total{job="lark-bridge",instance="a:9090",source="webhook",outcome="published"}'
        values: '0+60x40'
      - series: 'lark_bridge_publish_total{job="lark-bridge",instance="a:9090",sink="nats",result="ok"}'
        values: '0+60x40'
      - series: 'lark_bridge_request_duration_seconds_bucket{job="lark-bridge",instance="a:9090",source="webhook",outcome="published",le="0.5"}'
        values: '0+60x40'
      - series: 'lark_bridge_request_duration_seconds_bucket{job="lark-bridge",instance="a:9090",source="webhook",outcome="published",le="+Inf"}'
        values: '0+60x40'
      - series: 'lark_bridge_sink_up{job="lark-bridge",instance="a:9090",sink="nats"}'
        values: '1x40'
      - series: 'lark_bridge_dedup_store_up{job="lark-bridge",instance="a:9090",backend="nats"}'
        values: '1x40'
      - series: 'lark_bridge_dedup_commit_failures_total{job="lark-bridge",instance="a:9090",backend="nats"}'
        values: '0x40'
      - series: 'lark_bridge_unverified_mode{job="lark-bridge",instance="a:9090"}'
        values: '0x40'
      # A webhook replica exports lark_bridge_longconn_connected 0: no alert for that.
      - series: 'lark_bridge_source_info{job="lark-bridge",instance="a:9090",source="webhook"}'
        values: '1x40'
      - series: 'lark_bridge_longconn_connected{job="lark-bridge",instance="a:9090"}'
        values: '0x40'
      # Pre-created at start, and stays 0 while everything normalizes.
      - series: 'lark_bridge_deadletter_total{job="lark-bridge",instance="a:9090",event_type="helpdesk.ticket.created_v1",reason="missing_helpdesk_id"}'
        values: '0x40'
    alert_rule_test:
      - {eval_time: 25m, alertname: LarkBridgeRejectsRising, exp_alerts: []}
      - {eval_time: 25m, alertname: LarkBridgePublishFailures, exp_alerts: []}
      - {eval_time: 25m, alertname: LarkBridgeUnavailable, exp_alerts: []}
      - {eval_time: 25m, alertname: LarkBridgeLatencyNearBudget, exp_alerts: []}
      - {eval_time: 25m, alertname: LarkBridgeSinkDown, exp_alerts: []}
      - {eval_time: 25m, alertname: LarkBridgeDedupStoreDown, exp_alerts: []}
      - {eval_time: 25m, alertname: LarkBridgeDedupCommitFailures, exp_alerts: []}
      - {eval_time: 25m, alertname: LarkBridgeUnverifiedMode, exp_alerts: []}
      - {eval_time: 25m, alertname: LarkBridgeLongConnectionDown, exp_alerts: []}
      - {eval_time: 25m, alertname: LarkBridgeDeadLetters, exp_alerts: []}
  # One dead letter at 10m on instance a: the alert fires at once, for the job, and clears an
  # hour later. Instance b restarts (a gap, then its pre-created 0 again): no dead letter.
  - name: a dead letter in the last hour
    interval: 1m
    input_series:
      - series: 'lark_bridge_deadletter_total{job="lark-bridge",instance="a:9090",event_type="helpdesk.ticket.created_v1",reason="missing_helpdesk_id"}'
        values: '0x9 1x100'
      - series: 'lark_bridge_deadletter_total{job="lark-bridge",instance="b:9090",event_type="helpdesk.ticket.created_v1",reason="missing_helpdesk_id"}'
        values: '0x30 _x5 0x70'
      - series: 'lark_bridge_requests_total{job="lark-bridge",instance="a:9090",source="webhook",outcome="deadlettered"}'
        values: '0x9 1x100'
    alert_rule_test:
      - {eval_time: 5m, alertname: LarkBridgeDeadLetters, exp_alerts: []}
      - {eval_time: 12m, alertname: LarkBridgeDeadLetters, exp_alerts: [{exp_labels: {severity: warning, job: lark-bridge}}]}
      - {eval_time: 65m, alertname: LarkBridgeDeadLetters, exp_alerts: [{exp_labels: {severity: warning, job: lark-bridge}}]}
      - {eval_time: 75m, alertname: LarkBridgeDeadLetters, exp_alerts: []}
      - {eval_time: 12m, alertname: LarkBridgeRejectsRising, exp_alerts: []}
  - name: publish failures
    interval: 1m
    input_series:
      - series: 'lark_bridge_publish_total{job="lark-bridge",instance="a:9090",sink="kafka",result="ok"}'
        values: '0+60x40'
      - series: 'lark_bridge_publish_total{job="lark-bridge",instance="a:9090",sink="kafka",result="timeout"}'
        values: '0+6x40'
    alert_rule_test:
      - {eval_time: 20m, alertname: LarkBridgePublishFailures, exp_alerts: [{exp_labels: {severity: critical, job: lark-bridge, sink: kafka}}]}
  - name: 503 answers
    interval: 1m
    input_series:
      - series: 'lark_bridge_requests_total{job="lark-bridge",instance="a:9090",source="webhook",outcome="published"}'
        values: '0+60x40'
      - series: 'lark_bridge_requests_total{job="lark-bridge",instance="a:9090",source="webhook",outcome="overloaded"}'
        values: '0+30x40'
    alert_rule_test:
      - {eval_time: 20m, alertname: LarkBridgeUnavailable, exp_alerts: [{exp_labels: {severity: critical, job: lark-bridge}}]}
      - {eval_time: 20m, alertname: LarkBridgeRejectsRising, exp_alerts: []}
  - name: p99 latency above 2 s
    interval: 1m
    input_series:
      - series: 'lark_bridge_request_duration_seconds_bucket{job="lark-bridge",instance="a:9090",source="webhook",outcome="published",le="0.5"}'
        values: '0x40'
      - series: 'lark_bridge_request_duration_seconds_bucket{job="lark-bridge",instance="a:9090",source="webhook",outcome="published",le="2.5"}'
        values: '0+60x40'
      - series: 'lark_bridge_request_duration_seconds_bucket{job="lark-bridge",instance="a:9090",source="webhook",outcome="published",le="+Inf"}'
        values: '0+60x40'
    alert_rule_test:
      - {eval_time: 25m, alertname: LarkBridgeLatencyNearBudget, exp_alerts: [{exp_labels: {severity: warning, job: lark-bridge}}]}
  - name: sink and dedup store down on one instance
    interval: 1m
    input_series:
      - series: 'lark_bridge_sink_up{job="lark-bridge",instance="a:9090",sink="nats"}'
        values: '1 1 0x20'
      - series: 'lark_bridge_sink_up{job="lark-bridge",instance="b:9090",sink="nats"}'
        values: '1x22'
      - series: 'lark_bridge_dedup_store_up{job="lark-bridge",instance="b:9090",backend="redis"}'
        values: '1 1 0x20'
    alert_rule_test:
      - {eval_time: 10m, alertname: LarkBridgeSinkDown, exp_alerts: [{exp_labels: {severity: critical, job: lark-bridge, instance: "a:9090", sink: nats}}]}
      - {eval_time: 10m, alertname: LarkBridgeDedupStoreDown, exp_alerts: [{exp_labels: {severity: critical, job: lark-bridge, instance: "b:9090", backend: redis}}]}
  - name: dedup commit failures and unverified mode
    interval: 1m
    input_series:
      - series: 'lark_bridge_dedup_commit_failures_total{job="lark-bridge",instance="a:9090",backend="redis"}'
        values: '0 0 0 1 1 1 1 1 1 1'
      - series: 'lark_bridge_unverified_mode{job="lark-bridge",instance="a:9090"}'
        values: '1x20'
    alert_rule_test:
      - {eval_time: 6m, alertname: LarkBridgeDedupCommitFailures, exp_alerts: [{exp_labels: {severity: warning, job: lark-bridge, backend: redis}}]}
      - {eval_time: 10m, alertname: LarkBridgeUnverifiedMode, exp_alerts: [{exp_labels: {severity: warning, job: lark-bridge, instance: "a:9090"}}]}
  # lc-a loses its long connection at 2m; lc-b stays connected; wh is a webhook replica, which
  # exports lark_bridge_longconn_connected 0 all along and must never fire.
  - name: long connection down on a long-connection replica only
    interval: 1m
    input_series:
      - series: 'lark_bridge_source_info{job="lark-bridge",instance="lc-a:9090",source="long_connection"}'
        values: '1x20'
      - series: 'lark_bridge_longconn_connected{job="lark-bridge",instance="lc-a:9090"}'
        values: '1 1 0x18'
      - series: 'lark_bridge_source_info{job="lark-bridge",instance="lc-b:9090",source="long_connection"}'
        values: '1x20'
      - series: 'lark_bridge_longconn_connected{job="lark-bridge",instance="lc-b:9090"}'
        values: '1x20'
      - series: 'lark_bridge_source_info{job="lark-bridge",instance="wh:9090",source="webhook"}'
        values: '1x20'
      - series: 'lark_bridge_longconn_connected{job="lark-bridge",instance="wh:9090"}'
        values: '0x20'
    alert_rule_test:
      - {eval_time: 5m, alertname: LarkBridgeLongConnectionDown, exp_alerts: []}
      - {eval_time: 10m, alertname: LarkBridgeLongConnectionDown, exp_alerts: [{exp_labels: {severity: critical, job: lark-bridge, instance: "lc-a:9090"}}]}
  # A long connection that comes back within the 5 minutes raises nothing.
  - name: long connection back within 5 minutes
    interval: 1m
    input_series:
      - series: 'lark_bridge_source_info{job="lark-bridge",instance="lc-a:9090",source="long_connection"}'
        values: '1x20'
      - series: 'lark_bridge_longconn_connected{job="lark-bridge",instance="lc-a:9090"}'
        values: '1 1 0 0 0 1x15'
    alert_rule_test:
      - {eval_time: 10m, alertname: LarkBridgeLongConnectionDown, exp_alerts: []}
EOF
  "$PROMTOOL" test rules "$WORK/alerts-test.yaml"
}

# The dashboard and the alerts may use only the metric names fixed in shared decisions.
check_metric_names() {
  "$PYTHON" - "$ALERTS" deploy/grafana/lark-bridge.json <<'EOF'
import json, re, sys, yaml
FIXED = {
    "lark_bridge_requests_total", "lark_bridge_request_duration_seconds",
    "lark_bridge_verification_failures_total", "lark_bridge_publish_total",
    "lark_bridge_publish_duration_seconds", "lark_bridge_dedup_total",
    "lark_bridge_dedup_store_errors_total", "lark_bridge_dedup_store_duration_seconds",
    "lark_bridge_dedup_commit_failures_total", "lark_bridge_in_flight_requests",
    "lark_bridge_sink_up", "lark_bridge_dedup_store_up", "lark_bridge_build_info",
    "lark_bridge_normalize_warnings_total", "lark_bridge_unverified_mode",
    "lark_bridge_longconn_connected", "lark_bridge_source_info",
    "lark_bridge_deadletter_total", "lark_bridge_dedup_info",
}
HISTOGRAMS = {"lark_bridge_request_duration_seconds", "lark_bridge_publish_duration_seconds",
              "lark_bridge_dedup_store_duration_seconds"}
OUTCOMES = {"published", "duplicate", "challenge", "ignored", "forwarded", "deadlettered", "bad_request", "unauthorized",
            "method_not_allowed", "too_large", "request_timeout", "unavailable", "overloaded"}
errors = []
def check_expr(where, expr):
    for m in set(re.findall(r"\blark_bridge_[a-z0-9_]+", expr)):
        base = re.sub(r"_(bucket|sum|count)$", "", m)
        if m in HISTOGRAMS:
            errors.append(f"{where}: histogram {m} used without _bucket/_sum/_count")
        elif m not in FIXED and not (base in HISTOGRAMS and base != m):
            errors.append(f"{where}: unknown metric {m}")
    for values in re.findall(r'outcome=~?"([^"]+)"', expr):
        for v in values.split("|"):
            if v not in OUTCOMES:
                errors.append(f"{where}: unknown outcome {v}")
    for values in re.findall(r'result=~?"([^"]+)"', expr):
        for v in values.split("|"):
            if v not in {"ok", "error", "timeout", "new", "duplicate", "in_flight"}:
                errors.append(f"{where}: unknown result {v}")
n = 0
for g in yaml.safe_load(open(sys.argv[1]))["groups"]:
    for r in g["rules"]:
        check_expr(r["alert"], r["expr"]); n += 1
dash = json.load(open(sys.argv[2]))
ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    errors.append("dashboard: repeated panel ids")
if dash.get("uid") != "lark-bridge":
    errors.append("dashboard: uid is not lark-bridge")
t = 0
for p in dash["panels"]:
    for tgt in p.get("targets", []):
        check_expr(f"dashboard panel {p['title']!r}", tgt["expr"]); t += 1
used = set(re.findall(r"\blark_bridge_[a-z0-9_]+", json.dumps(dash)))
used = {re.sub(r"_(bucket|sum|count)$", "", m) if re.sub(r"_(bucket|sum|count)$", "", m) in HISTOGRAMS else m for m in used}
for want in ("lark_bridge_requests_total", "lark_bridge_request_duration_seconds", "lark_bridge_verification_failures_total",
             "lark_bridge_publish_total", "lark_bridge_publish_duration_seconds", "lark_bridge_dedup_total",
             "lark_bridge_in_flight_requests", "lark_bridge_sink_up", "lark_bridge_dedup_store_up",
             "lark_bridge_longconn_connected", "lark_bridge_source_info", "lark_bridge_deadletter_total",
             "lark_bridge_dedup_info"):
    if want not in used:
        errors.append(f"dashboard: no panel shows {want}")
print("\n".join(errors) or f"{n} alert expressions and {t} dashboard queries use only the fixed metrics")
sys.exit(1 if errors else 0)
EOF
}

# --- docker-compose.yml ------------------------------------------------------------------
check_compose_schema() {
  "$PYTHON" - docker-compose.yml "$COMPOSE_SCHEMA" <<'EOF'
import json, sys, yaml, jsonschema
doc = yaml.safe_load(open(sys.argv[1]))
schema = json.load(open(sys.argv[2]))
# The schema declares draft 2019-09 (with a malformed $schema URI); say so explicitly.
validator = jsonschema.Draft201909Validator(schema)
errs = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
for e in errs:
    print(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}")
print(f"{len(errs)} schema errors ({schema.get('title')})")
sys.exit(1 if errs else 0)
EOF
}

check_compose_content() {
  "$PYTHON" - docker-compose.yml <<'EOF'
import os, re, sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
s = c["services"]
errors = []
def need(cond, msg):
    if not cond:
        errors.append(msg)
want = {"lark-bridge", "nats", "kafka", "redis", "prometheus", "grafana", "simulate"}
need(set(s) == want, f"services {sorted(s)} != {sorted(want)}")
if errors:
    print("\n".join(errors)); sys.exit(1)
need(s["nats"].get("profiles") == ["nats"], "nats is not in profile nats")
need(s["kafka"].get("profiles") == ["kafka"], "kafka is not in profile kafka")
for name in ("lark-bridge", "redis", "prometheus", "grafana", "simulate"):
    need(not s[name].get("profiles"), f"{name} should run in every profile")
tag = s["nats"]["image"].split(":")[1]
need(tuple(map(int, re.findall(r"\d+", tag)[:2])) >= (2, 10), "nats image older than 2.10")
need("-js" in s["nats"].get("command", []), "nats without JetStream (-js)")
need(s["kafka"]["image"].startswith("apache/kafka:"), "kafka is not apache/kafka")
need("broker,controller" in str(s["kafka"].get("environment", {}).get("KAFKA_PROCESS_ROLES")), "kafka is not KRaft")
env = s["lark-bridge"]["environment"]
need("COMPOSE_PROFILES" in str(env.get("LARK_BRIDGE__SINK__KIND")), "sink kind does not follow COMPOSE_PROFILES")
need(env.get("LARK_BRIDGE__LARK__ENCRYPT_KEY") == "dev-key", "bridge encrypt key is not dev-key")
need(env.get("LARK_BRIDGE__DEDUP__BACKEND") in ("redis", "nats"), "dedup store is not shared")
need(set(map(str, s["lark-bridge"].get("ports", []))) >= {"127.0.0.1:8080:8080", "127.0.0.1:9090:9090"}, "bridge ports")
# A laptop stack publishes on loopback only (dclint no-unbound-port-interfaces).
for name, svc in s.items():
    for p in svc.get("ports", []):
        host_ip = p.get("host_ip") if isinstance(p, dict) else (str(p).rsplit(":", 2)[0] if str(p).count(":") == 2 else None)
        need(host_ip == "127.0.0.1", f"{name}: port {p} is not bound to 127.0.0.1")
cmd = s["simulate"]["command"]
need(cmd[0] == "simulate", "simulate does not run `lark-bridge simulate`")
args = dict(zip(cmd[1::2], cmd[2::2]))
need(args.get("--url") == "http://lark-bridge:8080/webhook/event", "simulate --url")
need(args.get("--encrypt-key") == "dev-key", "simulate --encrypt-key")
need(args.get("--count") == "10", "simulate --count")
need(s["simulate"]["image"] == s["lark-bridge"]["image"], "simulate does not use the bridge image")
need(s["simulate"].get("depends_on", {}).get("lark-bridge", {}).get("condition") == "service_healthy",
     "simulate does not wait for a ready bridge")
for name, svc in s.items():
    for v in svc.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            need(os.path.exists(src), f"{name}: mounts missing {src}")
mounts = " ".join(s["prometheus"].get("volumes", []))
need("deploy/prometheus/alerts.yaml" in mounts and "deploy/prometheus/prometheus.yml" in mounts, "prometheus mounts")
gm = " ".join(s["grafana"].get("volumes", []))
need("deploy/grafana/provisioning" in gm and "deploy/grafana/lark-bridge.json" in gm, "grafana mounts")
prom = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
targets = [t for j in prom["scrape_configs"] for sc in j.get("static_configs", []) for t in sc["targets"]]
need("lark-bridge:9090" in targets, "prometheus does not scrape lark-bridge:9090")
need("alerts.yaml" in prom.get("rule_files", []), "prometheus does not load alerts.yaml")
ds = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yaml"))
need(any(d.get("url") == "http://prometheus:9090" for d in ds["datasources"]), "grafana datasource url")
dp = yaml.safe_load(open("deploy/grafana/provisioning/dashboards/lark-bridge.yaml"))
need(any(p["options"]["path"] in gm for p in dp["providers"]), "dashboard provider path is not where the dashboard is mounted")
print("\n".join(errors) or "services, profiles, quickstart, mounts OK")
sys.exit(1 if errors else 0)
EOF
}

# --- Dockerfile ---------------------------------------------------------------------------
check_dockerfile() {
  local f=Dockerfile ok=0
  local froms user
  froms=$(grep -Ec '^FROM ' "$f")
  [[ $froms -ge 2 ]] || { echo "fewer than two FROM stages"; ok=1; }
  grep -Eq '^FROM rust:1-bookworm AS build' "$f" || { echo "no rust:1-bookworm build stage"; ok=1; }
  [[ "$(grep -E '^FROM ' "$f" | tail -n1)" == "FROM debian:bookworm-slim" ]] || { echo "runtime is not debian:bookworm-slim"; ok=1; }
  user=$(grep -E '^USER ' "$f" | tail -n1 | awk '{print $2}')
  [[ -n "$user" && "${user%%:*}" != root && "${user%%:*}" != 0 ]] || { echo "no non-root USER"; ok=1; }
  [[ "${user%%:*}" == 10001 ]] || { echo "USER is not uid 10001"; ok=1; }
  grep -Eq '^EXPOSE +8080 +9090 *$' "$f" || { echo "no EXPOSE 8080 9090"; ok=1; }
  grep -Eq '^ENTRYPOINT \["lark-bridge"\]' "$f" || { echo "ENTRYPOINT is not [\"lark-bridge\"]"; ok=1; }
  # The dependency layer: manifests copied and built before the sources.
  local deps src
  deps=$(grep -n '^COPY Cargo.toml Cargo.lock' "$f" | cut -d: -f1)
  src=$(grep -n '^COPY \. \.' "$f" | cut -d: -f1)
  [[ -n "$deps" && -n "$src" && $deps -lt $src ]] || { echo "no cached dependency layer"; ok=1; }
  # The runtime stage must carry the shared libraries that Cargo.toml's rdkafka features link.
  local rdkafka runtime
  rdkafka=$(grep -E '^rdkafka *=' Cargo.toml)
  runtime=$(sed -n '/^FROM debian:bookworm-slim/,$p' "$f" | grep -v '^ *#')
  if grep -q '"ssl' <<<"$rdkafka" && ! grep -q 'libssl3' <<<"$runtime"; then
    echo "rdkafka has the ssl feature but the runtime stage lacks libssl3"; ok=1
  fi
  if grep -Eq '"(gssapi|sasl)' <<<"$rdkafka" && ! grep -q 'libsasl2-2' <<<"$runtime"; then
    echo "rdkafka has SASL/GSSAPI but the runtime stage lacks libsasl2-2"; ok=1
  fi
  grep -Eq '^target/?$' .dockerignore && grep -Eq '^\.git/?$' .dockerignore || { echo ".dockerignore lacks target/ or .git"; ok=1; }
  [[ $ok -eq 0 ]] && echo "Dockerfile: $froms stages, USER $user, EXPOSE 8080 9090"
  return $ok
}

check_notes() {
  local out
  out="$(helm_q install lark-bridge "$CHART" -f "$ALL_ON" --namespace helpdesk --dry-run=client)" || return 1
  grep -q 'https://lark-bridge.example.com/webhook/event' <<<"$out" || { echo "NOTES lack the request URL"; return 1; }
  out="$(helm_q install lark-bridge "$CHART" --namespace helpdesk --dry-run=client)" || return 1
  grep -q 'WARNING: neither secrets.encryptKey' <<<"$out" || { echo "NOTES do not warn about missing secrets"; return 1; }
  echo "NOTES give https://lark-bridge.example.com/webhook/event and warn without secrets"
}

run_check "helm lint --strict (default values)" check_lint_default
run_check "helm lint --strict (ci/all-on-values.yaml)" check_lint_all_on
run_check "default render valid for Kubernetes $K8S_VERSION (kubernetes-validate --strict)" check_validate default
run_check "all-on render valid for Kubernetes $K8S_VERSION (kubernetes-validate --strict)" check_validate all-on -f "$ALL_ON"
run_check "deploy/values-{nats,kafka,longconn}.yaml: lint and valid render" check_examples
run_check "values.schema.json and chart guards reject bad values" check_rejects_bad_values
run_check "Deployment: replicas, rollout, probes, grace period, security, spread" check_deployment
run_check "ServiceMonitor and PrometheusRule structure and CRD schemas (all-on)" check_monitoring_resources
run_check "chart PrometheusRule groups equal $ALERTS" check_rules_equal
run_check "promtool check rules/config (deploy/prometheus)" check_promtool
run_check "promtool test rules: every alert fires on its failure, none on healthy traffic" check_alert_tests
run_check "alerts and dashboard use only the fixed metric names" check_metric_names
run_check "docker-compose.yml valid against the Compose Specification schema" check_compose_schema
run_check "docker-compose.yml: fixed services, profiles, quickstart wiring" check_compose_content
run_check "chart config.toml parses; secrets only as mounted *_file" check_config_wiring
run_check "lark-bridge check-config accepts chart and compose configs ($BIN)" check_check_config
run_check "Dockerfile: multi-stage, non-root USER, EXPOSE 8080 9090" check_dockerfile
run_check "NOTES.txt gives the Lark request URL" check_notes

if [[ $skipped -gt 0 ]]; then
  echo "deploy checks: $passed passed, $failed failed, $skipped skipped"
else
  echo "deploy checks: $passed passed, $failed failed"
fi
[[ $failed -eq 0 ]]
