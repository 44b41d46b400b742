#!/usr/bin/env bash
# Checks the deployment files with no Docker engine and no cluster: Prometheus config, alert
# rules and their unit tests (promtool), the compose file as Compose reads it (docker-compose,
# interpolated from .env.example, with and without the sync profile), the dashboard (well-formed
# JSON, and every panel query parses as PromQL), and the Kubernetes manifests (kustomize build,
# then validated against the Kubernetes API schemas). Needs promtool, docker-compose, jq,
# kubectl and python3 (.ci/run installs what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== prometheus"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

echo "== docker-compose"
docker-compose --env-file .env.example config -q
docker-compose --env-file .env.example --profile sync config -q

echo "== grafana dashboard"
dashboard=deploy/grafana/dashboards/intake.json
jq empty "$dashboard"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Each panel query becomes a recording rule, so promtool parses it as PromQL (Grafana's
# variables replaced by what they stand for).
{
  printf 'groups:\n  - name: dashboard-queries\n    rules:\n'
  jq -r '[.panels[] | select(.type != "row") | .targets[].expr] | to_entries[]
         | "      - record: dashboard_query_\(.key)\n        expr: \(.value | @json)"' "$dashboard" \
    | sed -e 's/\$__rate_interval/1m/g' -e 's/\$prefix/intake/g'
} > "$tmp/dashboard-queries.yml"
promtool check rules "$tmp/dashboard-queries.yml"

echo "== kubernetes"
kubectl kustomize deploy/k8s > "$tmp/k8s.yaml"
venv=${INTAKE_CHECK_VENV:-${TMPDIR:-/tmp}/intake-check-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0'
fi
# --strict rejects unknown fields; the KEDA kinds have no built-in schema (a warning) and are
# checked by tests/tests/deploy_files.rs instead.
"$venv/bin/kubernetes-validate" --strict --quiet "$tmp/k8s.yaml" deploy/k8s/secret.example.yaml
echo "deploy checks passed"
