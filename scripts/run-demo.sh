#!/usr/bin/env bash
# `make run`: the router on ROUTER_PORT (8080) with its admin API on ROUTER_ADMIN_PORT (8081),
# three applications claiming their events, one signed test event of each type sent through
# it, and where they landed. Ctrl-C stops the router.
set -euo pipefail
bin=${VENV:-.venv}/bin
export ROUTER_SIGNING_KEYS=${ROUTER_SIGNING_KEYS:-dev-signing-key}
export ROUTER_ADMIN_TOKEN=${ROUTER_ADMIN_TOKEN:-dev-admin-token}
export ROUTER_PORT=${ROUTER_PORT:-8080}
export ROUTER_ADMIN_PORT=${ROUTER_ADMIN_PORT:-8081}
export ROUTER_DATABASE_URL=${ROUTER_DATABASE_URL:-sqlite:///.demo/claims.db}
base=http://127.0.0.1:$ROUTER_PORT
export ROUTER_ADMIN_URL=http://127.0.0.1:$ROUTER_ADMIN_PORT

"$bin/attentive-router" serve --log-format console &
router=$!
stop() { kill $router 2>/dev/null; wait $router 2>/dev/null || true; }
trap stop EXIT
trap 'stop; exit 0' INT TERM

for _ in $(seq 1 100); do
  "$bin/python" - "$base/readyz" <<'PY' && break
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except Exception:
    sys.exit(1)
PY
  kill -0 $router 2>/dev/null || { echo "the router exited; see its log above" >&2; exit 1; }
  sleep 0.2
done

apps=(--app sms-audit --app email-engagement --app attribute-forwarder)
echo
echo "== three applications claim their events (one application per event type per company)"
"$bin/attentive-router" claims add sms-audit 'sms.*'
"$bin/attentive-router" claims add email-engagement 'email.*' >/dev/null
"$bin/attentive-router" claims add attribute-forwarder custom_attribute.set >/dev/null
"$bin/attentive-router" claims list
echo
echo "== a fourth application asks for sms.subscribed: refused, sms-audit holds sms.*"
"$bin/attentive-router" claims add growth sms.subscribed || true
echo
echo "== queue depths before"
"$bin/attentive-router" queues "${apps[@]}"
echo
echo "== sending one signed test event of each type to $base/webhooks/attentive"
"$bin/attentive-router" send-test --all --url "$base/webhooks/attentive"
echo
echo "== queue depths after: each event is in its owner's queue"
"$bin/attentive-router" queues "${apps[@]}"
echo
echo "The router listens on $base, its admin API on $ROUTER_ADMIN_URL. Ctrl-C to stop."
wait $router
