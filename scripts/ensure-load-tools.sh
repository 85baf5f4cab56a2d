#!/usr/bin/env bash
# The sustained-load test and `make bench` drive the ingress with wrk and hey (Debian packages).
set -euo pipefail
command -v wrk >/dev/null && command -v hey >/dev/null && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "wrk and hey are missing (Debian: apt-get install wrk hey); the sustained-load test will be skipped and make bench cannot run." >&2
  exit 0
fi
echo "installing wrk and hey (load generators)..." >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk hey >/dev/null
