#!/usr/bin/env bash
# Validates the deployment files offline: renders the kustomize base and overlays and the Helm chart
# (default values, everything enabled, everything disabled, more nodes than seeds), checks every
# rendered object against the Kubernetes schemas (kubernetes-validate --strict), the node identity /
# seed / hardening invariants (deploy_check.py), that scaling the chart keeps the seeds, the Prometheus
# config, rules and rule tests (promtool), the Grafana dashboard's queries and provisioning, and the
# compose file when it exists. Installs what it needs (quietly, only when missing). Exits 0 only when
# every check passes; the last line reads `validate: N passed, M failed, K skipped`.
#
#   bash deploy/scripts/validate.sh
#
# Tools: kubectl (its built-in kustomize) renders the overlays; helm renders the chart, or where no helm
# binary exists, Helm's own Go engine from the PyPI package helm-python-sdk (deploy/scripts/helmtool.py).
set -euo pipefail
cd "$(dirname "$0")/../.."

K8S_VERSION=1.32.0
PIP_PACKAGES=("kubernetes-validate==1.37.0" "helm-python-sdk==0.2.2")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

passed=0
failed=0
skipped=0
failures=()

# check NAME COMMAND...: runs one check, its output indented, and counts it.
check() {
  local name=$1
  shift
  local log="$OUT/log"
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "ok    $name"
    if [ -n "${VERBOSE:-}" ]; then sed 's/^/      /' "$log"; fi
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAIL  $name"
    sed 's/^/      /' "$log" | tail -n 40
  fi
}

skip() {
  skipped=$((skipped + 1))
  echo "skip  $1"
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}

# ---- tools ------------------------------------------------------------------------------------------
echo "== tools"
# quietly COMMAND...: runs an install step, printing its output only when it fails.
quietly() {
  if ! "$@" >"$OUT/install.log" 2>&1; then
    cat "$OUT/install.log" >&2
    echo "validate: could not install what the checks need ($*)" >&2
    exit 1
  fi
}
if ! python3 -c 'import kubernetes_validate, helm_python' >/dev/null 2>&1; then
  quietly python3 -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
fi
if ! command -v promtool >/dev/null 2>&1; then
  quietly as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  quietly as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi
if command -v helm >/dev/null 2>&1; then
  HELM_ENGINE="helm $(helm version --short 2>/dev/null)"
  helm_lint() { helm lint --strict --kube-version "v$K8S_VERSION" "$@"; }
  helm_template() { helm template demo "$1" --namespace playground --kube-version "v$K8S_VERSION" "${@:2}"; }
else
  HELM_ENGINE=$(python3 deploy/scripts/helmtool.py version)
  helm_lint() { python3 deploy/scripts/helmtool.py lint --kube-version "v$K8S_VERSION" "$@"; }
  helm_template() { python3 deploy/scripts/helmtool.py template "$1" --name demo --namespace playground "${@:2}"; }
fi
echo "   kustomize: $(command -v kubectl >/dev/null 2>&1 && kubectl version --client 2>/dev/null | grep -i kustomize || echo 'kubectl missing')"
echo "   helm:      $HELM_ENGINE"
echo "   promtool:  $(promtool --version 2>&1 | head -n 1)"
echo "   schemas:   kubernetes-validate $(python3 -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))'), Kubernetes $K8S_VERSION, strict"

schema_check() { kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$1"; }
# to_file FILE COMMAND...: runs the command with its standard output into FILE.
to_file() {
  local file=$1
  shift
  "$@" >"$file"
}

# ---- kustomize --------------------------------------------------------------------------------------
echo "== kustomize (deploy/k8s)"
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  dir=${dir%/}
  name=${dir#deploy/k8s/}
  file="$OUT/kustomize-${name//\//-}.yaml"
  if ! command -v kubectl >/dev/null 2>&1; then
    check "kustomize build $name (kubectl is required for its kustomize)" false
    continue
  fi
  check "kustomize build $name" to_file "$file" kubectl kustomize "$dir"
  if [ -s "$file" ]; then
    check "schemas: $name" schema_check "$file"
    check "identity, seeds, hardening: $name" python3 deploy/scripts/deploy_check.py manifests "$file"
  fi
done

# ---- helm -------------------------------------------------------------------------------------------
echo "== helm (deploy/helm/playground)"
chart=deploy/helm/playground
for variant in default all-enabled minimal; do
  args=()
  if [ "$variant" != default ]; then args=(-f "$chart/ci/$variant-values.yaml"); fi
  file="$OUT/helm-$variant.yaml"
  check "helm lint --strict ($variant values)" helm_lint "$chart" "${args[@]}"
  check "helm template ($variant values)" to_file "$file" helm_template "$chart" "${args[@]}"
  if [ -s "$file" ]; then
    check "schemas: helm $variant" schema_check "$file"
    check "identity, seeds, hardening: helm $variant" python3 deploy/scripts/deploy_check.py manifests "$file"
  fi
done
# Scaling: the seeds are the first node.seedCount pods whatever node.replicas is, so raising it changes
# neither the ConfigMap nor the pod template (no rolling restart), and fewer pods than seeds is refused.
printf 'node:\n  replicas: 5\n' >"$OUT/scaled-values.yaml"
printf 'node:\n  replicas: 2\n' >"$OUT/too-few-values.yaml"
# fails_with TEXT COMMAND...: the command fails, saying TEXT.
fails_with() {
  local text=$1 out
  shift
  if out=$("$@" 2>&1); then
    echo "succeeded, but should have failed with: $text"
    return 1
  fi
  echo "$out"
  grep -qF -- "$text" <<<"$out"
}
check "helm template (node.replicas 5 > node.seedCount 3)" \
  to_file "$OUT/helm-scaled.yaml" helm_template "$chart" -f "$OUT/scaled-values.yaml"
check "schemas: helm scaled" schema_check "$OUT/helm-scaled.yaml"
check "scaling keeps the seed list and the pods' config checksum" sh -c "
  grep -q '^  replicas: 5\$' '$OUT/helm-scaled.yaml' &&
  a=\$(grep -E '^  seeds:|checksum/config:' '$OUT/helm-default.yaml') && [ -n \"\$a\" ] &&
  [ \"\$a\" = \"\$(grep -E '^  seeds:|checksum/config:' '$OUT/helm-scaled.yaml')\" ]"
check "helm template refuses node.replicas below node.seedCount" \
  fails_with "must be at least node.seedCount" helm_template "$chart" -f "$OUT/too-few-values.yaml"
check "ServiceMonitor rendered only when enabled" sh -c "
  grep -q '^kind: ServiceMonitor' '$OUT/helm-all-enabled.yaml' &&
  ! grep -q '^kind: ServiceMonitor' '$OUT/helm-default.yaml' &&
  python3 deploy/scripts/deploy_check.py servicemonitor '$OUT/helm-all-enabled.yaml'"
check "ingress TLS rendered when enabled" sh -c "grep -q 'secretName: playground-api-tls' '$OUT/helm-all-enabled.yaml'"

# ---- prometheus -------------------------------------------------------------------------------------
echo "== prometheus (deploy/prometheus)"
check "promtool check rules rules.yml" promtool check rules deploy/prometheus/rules.yml
check "promtool test rules rules.test.yml" promtool test rules deploy/prometheus/rules.test.yml
check "promtool check config prometheus.yml (compose)" promtool check config deploy/prometheus/prometheus.yml
if promtool check config deploy/prometheus/prometheus-k8s.yml >"$OUT/k8s-sd.log" 2>&1; then
  check "promtool check config prometheus-k8s.yml" true
elif grep -q 'kubernetes_sd_configs not found' "$OUT/k8s-sd.log"; then
  # Debian's promtool is built without Kubernetes discovery: check everything else of the file.
  cp deploy/prometheus/rules.yml "$OUT/rules.yml"
  check "promtool check config prometheus-k8s.yml (this promtool lacks kubernetes_sd: checked without it)" \
    sh -c "python3 deploy/scripts/deploy_check.py strip-k8s-sd deploy/prometheus/prometheus-k8s.yml '$OUT/prometheus-k8s.yml' && promtool check config '$OUT/prometheus-k8s.yml'"
else
  check "promtool check config prometheus-k8s.yml" sh -c "cat '$OUT/k8s-sd.log'; false"
fi

# ---- grafana ----------------------------------------------------------------------------------------
echo "== grafana (deploy/grafana)"
check "dashboard JSON parses; its PromQL parses (promtool)" sh -c "
  python3 deploy/scripts/deploy_check.py dashboard-rules '$OUT/dashboard-rules.yml' deploy/grafana/dashboards/*.json &&
  promtool check rules '$OUT/dashboard-rules.yml'"
check "grafana provisioning matches the dashboards" python3 deploy/scripts/deploy_check.py grafana

# ---- compose ----------------------------------------------------------------------------------------
echo "== compose (deploy/docker-compose.yaml)"
if [ ! -f deploy/docker-compose.yaml ]; then
  skip "docker-compose config: deploy/docker-compose.yaml does not exist yet"
elif command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1; then
  # The real secrets file is never committed: without one, check with the committed example.
  if [ -z "${PLAYGROUND_SECRETS_FILE:-}" ] && [ ! -f deploy/secrets.env ]; then
    export PLAYGROUND_SECRETS_FILE=./secrets.env.example
  fi
  if command -v docker-compose >/dev/null 2>&1; then
    check "docker-compose config -q (secrets: ${PLAYGROUND_SECRETS_FILE:-./secrets.env})" \
      docker-compose -f deploy/docker-compose.yaml config -q
  else
    check "docker compose config -q (secrets: ${PLAYGROUND_SECRETS_FILE:-./secrets.env})" \
      docker compose -f deploy/docker-compose.yaml config -q
  fi
else
  skip "docker-compose config: no docker-compose or docker compose here"
fi

echo
if [ "$failed" -gt 0 ]; then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "validate: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
