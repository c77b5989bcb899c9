#!/usr/bin/env bash
# wirelab's test command (the README's second command; CI runs it too).
# Installs the independent Python peers into .venv once, then runs every test in the workspace:
# unit tests, the conformance module for every transport, the bad-input tests, and the peers
# (Autobahn|Testsuite cases via kosoku, Python websockets, curl).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c 'import websockets' 2>/dev/null || [ ! -x .venv/bin/kosoku ]; then
  echo "== installing the Python peers into .venv (kosoku, websockets)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'kosoku==0.1.0' 'websockets==17.4'
fi
command -v curl >/dev/null || echo "note: curl is not installed; the curl peer test will say SKIPPED (CI installs it)" >&2

cargo test --workspace --locked
