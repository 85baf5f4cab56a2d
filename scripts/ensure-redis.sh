#!/usr/bin/env bash
# Makes sure Redis answers on 127.0.0.1:6379 (the shared idempotency store's tests use it),
# starting a local redis-server when one is installed.
set -euo pipefail
answers() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
answers && exit 0
if ! command -v redis-server >/dev/null; then
  echo "Redis is not running on 127.0.0.1:6379 and redis-server is not installed." >&2
  exit 1
fi
echo "Redis is not answering; starting a local redis-server..." >&2
mkdir -p /var/lib/redis /var/log/redis
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
  --dir /var/lib/redis --logfile /var/log/redis/ci.log
for _ in $(seq 1 30); do answers && exit 0; sleep 1; done
echo "redis-server did not come up within 30 s." >&2
exit 1
