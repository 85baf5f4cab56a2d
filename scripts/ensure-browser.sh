#!/usr/bin/env bash
# Debian's Chromium, which the console's browser tests drive through Playwright (tests/browser.py
# launches /usr/bin/chromium itself: Playwright's own browser download cannot be used here).
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "/usr/bin/chromium is missing (Debian: apt-get install chromium); the console's browser tests are skipped." >&2
  exit 0
fi
echo "installing chromium..." >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
