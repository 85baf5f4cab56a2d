#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432, starting the local cluster when it is installed.
set -euo pipefail
pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && exit 0
if ! command -v pg_ctlcluster >/dev/null; then
  echo "PostgreSQL is not running on 127.0.0.1:5432 and no local cluster is installed." >&2
  exit 1
fi
echo "PostgreSQL is not answering; starting the local cluster..." >&2
pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
  sleep 1
done
echo "PostgreSQL did not come up within 30 s." >&2
exit 1
