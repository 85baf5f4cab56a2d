#!/usr/bin/env bash
# The AsyncAPI project's own parser (@asyncapi/parser, from npm), which the contract tests run on
# the document the router generates: installed into tests/asyncapi/ from its committed lock file.
# Node.js is a test tool only: the router installs and runs without it.
set -euo pipefail
cd "$(dirname "$0")/../tests/asyncapi"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "node or npm is missing (Debian: apt-get install nodejs npm); the AsyncAPI parser test is skipped." >&2
    exit 0
  fi
  echo "installing nodejs and npm..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
# installed, and from this lock file: nothing to do
[ node_modules/.package-lock.json -nt package-lock.json ] && [ -d node_modules/@asyncapi/parser ] && exit 0
echo "installing the AsyncAPI parser (npm ci in tests/asyncapi)..." >&2
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
