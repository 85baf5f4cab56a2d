#!/usr/bin/env bash
# Debian tools the tests and `make bench` use: wrk and hey drive the ingress (the sustained-load
# test, make bench); promtool (package prometheus) checks and unit-tests deploy/prometheus/.
set -euo pipefail
command -v wrk >/dev/null && command -v hey >/dev/null && command -v promtool >/dev/null && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "wrk, hey or promtool is missing (Debian: apt-get install wrk hey prometheus); the sustained-load test is skipped, the alert-rule test fails and make bench cannot run." >&2
  exit 0
fi
echo "installing wrk, hey and promtool..." >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk hey prometheus >/dev/null
