#!/usr/bin/env bash
# `make run`: the router on ROUTER_PORT (8080) with its admin API on ROUTER_ADMIN_PORT (8081),
# the three example workers claiming their events, one signed test event of each type sent
# through it, and what each worker did with them. Ctrl-C stops everything, and the demo's
# queues and exchanges (a namespace of its own, demo-<pid>) are deleted from the broker.
# The demo signs with a key and opens the admin API with a token made for this run (random),
# unless ROUTER_SIGNING_KEYS / ROUTER_ADMIN_TOKEN are set. To log in to the console, the token
# is in .demo/admin-token (only you may read it), deleted when the demo stops.
set -euo pipefail
bin=${VENV:-.venv}/bin
random_hex() { "$bin/python" -c 'import secrets; print(secrets.token_hex(32))'; }
export ROUTER_SIGNING_KEYS=${ROUTER_SIGNING_KEYS:-$(random_hex)}
export ROUTER_ADMIN_TOKEN=${ROUTER_ADMIN_TOKEN:-$(random_hex)}
export ROUTER_PORT=${ROUTER_PORT:-8080}
export ROUTER_ADMIN_PORT=${ROUTER_ADMIN_PORT:-8081}
export ROUTER_INTERNAL_PORT=${ROUTER_INTERNAL_PORT:-8082}
export ROUTER_DATABASE_URL=${ROUTER_DATABASE_URL:-sqlite:///.demo/claims.db}
export ROUTER_ADMIN_URL=http://127.0.0.1:$ROUTER_ADMIN_PORT
export ROUTER_LOG_FORMAT=console
export ROUTER_NAMESPACE=${ROUTER_NAMESPACE:-demo-$$}
base=http://127.0.0.1:$ROUTER_PORT
metrics_port=${DEMO_METRICS_PORT:-9101}
receiver_port=${DEMO_RECEIVER_PORT:-9199}
mkdir -p .demo
(umask 077 && printf '%s\n' "$ROUTER_ADMIN_TOKEN" > .demo/admin-token)
# The console's overview shows rates, nodes and alarms from a local management API.
if [ -z "${ROUTER_RABBITMQ_MANAGEMENT_URL:-}" ] && [ -z "${ROUTER_AMQP_URL:-}" ] \
    && (exec 3<>/dev/tcp/127.0.0.1/15672) 2>/dev/null; then
  export ROUTER_RABBITMQ_MANAGEMENT_URL=http://guest:guest@127.0.0.1:15672
fi

pids=()
stopped=
stop() {
  [ -z "$stopped" ] || return 0
  stopped=1
  rm -f .demo/admin-token
  kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true
  case $ROUTER_NAMESPACE in demo-*)
    PYTHONPATH=. "$bin/python" scripts/demo-cleanup.py "$ROUTER_NAMESPACE" \
      sms-audit email-engagement attribute-forwarder ||
      echo "could not delete the demo's queues ($ROUTER_NAMESPACE.*) from the broker" >&2
  esac
}
trap stop EXIT
trap 'stop; exit 0' INT TERM

"$bin/attentive-router" serve & pids+=($!)
until "$bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
    "http://127.0.0.1:$ROUTER_INTERNAL_PORT/readyz" 2>/dev/null; do
  kill -0 "${pids[0]}" 2>/dev/null || { echo "the router exited; see its log above" >&2; exit 1; }
  sleep 0.2
done

"$bin/python" scripts/demo-receiver.py "$receiver_port" & pids+=($!)
SMS_AUDIT_DB=.demo/sms-audit.db "$bin/attentive-router" worker consumers.sms_audit:worker & pids+=($!)
WORKER_METRICS_PORT=$metrics_port "$bin/attentive-router" worker consumers.email_engagement:worker & pids+=($!)
ATTRIBUTE_FORWARDER_URL=http://127.0.0.1:$receiver_port/attributes \
  "$bin/attentive-router" worker consumers.attribute_forwarder:worker & pids+=($!)

for _ in $(seq 1 100); do
  [ "$("$bin/attentive-router" claims list --json | "$bin/python" -c \
      'import json,sys; print(len({c["app"] for c in json.load(sys.stdin)["claims"]}))')" -ge 3 ] && break
  sleep 0.2
done
sleep 1
echo
echo "== the three example workers claimed their events (one application per type per company)"
"$bin/attentive-router" claims list
echo
echo "== a fourth application asks for sms.subscribed: refused, sms-audit holds sms.*"
"$bin/attentive-router" claims add growth sms.subscribed || true
echo
echo "== sending one signed test event of each type to $base/webhooks/attentive"
"$bin/attentive-router" send-test --all --url "$base/webhooks/attentive"
sleep 2
echo
echo "== sms-audit's log (python -m consumers.sms_audit query --db .demo/sms-audit.db)"
"$bin/python" -m consumers.sms_audit query --db .demo/sms-audit.db | tail -n 6
echo
echo "== email-engagement's counters (http://127.0.0.1:$metrics_port/metrics)"
"$bin/python" -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())" \
  "http://127.0.0.1:$metrics_port/metrics" | grep '^attentive_email_engagement_total' || true
echo
echo "== queue depths: every event was handled"
"$bin/attentive-router" queues --app sms-audit --app email-engagement --app attribute-forwarder
echo
echo "Router on $base, admin API on $ROUTER_ADMIN_URL, workers running. Ctrl-C to stop."
echo "The console: $ROUTER_ADMIN_URL/console/ (log in with the token in .demo/admin-token)"
wait "${pids[0]}"
