#!/usr/bin/env bash
# `make run`: the ingress on ROUTER_PORT (8080), one signed test event of each type sent through
# it, and where they landed. Ctrl-C stops the router.
set -euo pipefail
bin=${VENV:-.venv}/bin
export ROUTER_SIGNING_KEYS=${ROUTER_SIGNING_KEYS:-dev-signing-key}
export ROUTER_PORT=${ROUTER_PORT:-8080}
base=http://127.0.0.1:$ROUTER_PORT

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

echo
echo "== sending one signed test event of each type to $base/webhooks/attentive"
"$bin/attentive-router" send-test --all --url "$base/webhooks/attentive"
echo
echo "== where they landed (no application has claimed a type yet, so: attentive.unrouted)"
"$bin/attentive-router" queues
echo
echo "The router is listening on $base (signing key: \$ROUTER_SIGNING_KEYS). Ctrl-C to stop."
wait $router
