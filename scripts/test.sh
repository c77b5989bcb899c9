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

# Every test binary runs even when one fails (--no-fail-fast); the summary below lists what
# failed and what was skipped, and why. A test that cannot run here (no root, a peer not
# installed) records itself in the skip log; with WIRELAB_REQUIRE_ROOT=1 / WIRELAB_REQUIRE_PEERS=1
# (CI) such a test fails instead.
mkdir -p target
log=target/test-output.log
export WIRELAB_SKIP_LOG="$PWD/target/test-skips.log"
: > "$WIRELAB_SKIP_LOG"
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
python3 - "$log" "$WIRELAB_SKIP_LOG" "$status" <<'PY'
import re, sys
log, skips, status = open(sys.argv[1], errors="replace").read(), sys.argv[2], int(sys.argv[3])
passed = failed = ignored = binaries = 0
for m in re.finditer(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", log, re.M):
    binaries += 1
    passed, failed, ignored = passed + int(m[1]), failed + int(m[2]), ignored + int(m[3])
failing = sorted(set(re.findall(r"^test (\S+) \.\.\. FAILED", log, re.M)))
broken = re.findall(r"^error: (?:test failed|could not compile|failed to run).*$", log, re.M)
skipped = [l.split("\t") for l in open(skips).read().splitlines() if l.strip()]
print("\n== test summary")
print(f"{binaries} test binaries ran")
for name in failing:
    print(f"FAILED  {name}")
for line in broken:
    print(f"ERROR   {line}")
for name, need, why in skipped:
    print(f"SKIPPED {name} [{need}]: {why}")
for name, why in re.findall(r"^test (\S+) \.\.\. ignored(?:, (.*))?$", log, re.M):
    print(f"IGNORED {name}: {why or 'marked #[ignore]'}")
# A skipped test returns early and libtest counts it as passed: count it once, as skipped.
print(f"summary: {passed - len(skipped)} passed, {failed} failed, {len(skipped)} skipped")
if status != 0 and not failing and not broken:
    print(f"cargo test exited with status {status}")
PY
exit "$status"
