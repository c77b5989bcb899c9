#!/usr/bin/env bash
# wirelab's test command (the README's second command; CI runs it too).
# Installs the independent Python peers into .venv once, then runs every test in the workspace:
# unit tests, the conformance module for every transport, the bad-input tests, and the peers
# (Autobahn|Testsuite cases via kosoku, Python websockets, curl, h2load, Python h2 + wsproto as an
# RFC 8441 client, hypercorn as an RFC 8441 server, aioquic's HTTP/3 example client and server).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c 'import websockets, h2, wsproto, hypercorn, aioquic, starlette, jinja2' 2>/dev/null \
    || [ ! -x .venv/bin/kosoku ] || [ ! -f .venv/aioquic-examples/http3_client.py ]; then
  echo "== installing the Python peers into .venv (kosoku, websockets, h2, wsproto, hypercorn, aioquic)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'kosoku==0.1.0' 'websockets==17.4' \
    'h2==4.4.1' 'wsproto==1.3.2' 'hypercorn==0.18.0' 'aioquic==1.7.2' 'starlette==1.10.0' 'jinja2==3.1.6'
  # aioquic's example client and server ship only in its sdist.
  rm -rf .venv/aioquic-sdist .venv/aioquic-examples
  .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    'aioquic==1.7.2' -d .venv/aioquic-sdist
  tar xzf .venv/aioquic-sdist/aioquic-1.7.2.tar.gz -C .venv/aioquic-sdist
  mv .venv/aioquic-sdist/aioquic-1.7.2/examples .venv/aioquic-examples
fi
for tool in curl h2load; do
  command -v "$tool" >/dev/null || echo "note: $tool is not installed; its peer test will say SKIPPED (CI installs it: apt-get install curl nghttp2-client)" >&2
done

cargo test --workspace --locked
