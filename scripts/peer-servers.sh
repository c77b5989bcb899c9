#!/usr/bin/env bash
# Our WebSocket server beside one people actually run, in one run, driven by the same client:
# Node's `ws` package (npm) as a plain echo server. (For h2, scripts/h2load-vs-harness.sh
# measures our client against h2load on our server.)
# `wirelab client -t ws` sends 64-byte echo messages on K streams of one WebSocket
# (K = 1, then 8); Node echoes each message back unchanged, as our server does. Rounds
# alternate between the two servers (3 rounds) so that drift on a shared machine hits both.
# Prints p50 and msg/s per round and the medians.
#
# usage: bash scripts/peer-servers.sh [--count N] [--cpu split|free]   (needs node and npm;
#        installs `ws` into target/peer-node/ on first use). --cpu split (the default, as
#        `wirelab run`): both servers on the second CPU, the client on the first (taskset);
#        free: wherever the scheduler puts them.
set -euo pipefail
cd "$(dirname "$0")/.."
count=20000 cpu=split
while [ $# -gt 0 ]; do
  case $1 in
    --count) count=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    *) echo "error: unknown argument $1 (usage: --count N --cpu split|free)" >&2; exit 2 ;;
  esac
done
command -v node >/dev/null && command -v npm >/dev/null || {
  echo "error: node and npm are needed (Debian: apt-get install nodejs npm)" >&2; exit 1; }
[ -x target/release/wirelab ] || cargo build --release --locked -q -p wirelab
bin=target/release/wirelab
peer=target/peer-node
if [ ! -d "$peer/node_modules/ws" ]; then
  mkdir -p "$peer"
  (cd "$peer" && npm init -y > /dev/null && npm install --silent --no-audit --no-fund ws@8 > /dev/null)
fi
cat > "$peer/echo.js" <<'JS'
// A plain echo server on Node's `ws`: every message back as it came (binary as binary).
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, path: '/ws', perMessageDeflate: false });
wss.on('listening', () => console.log(`listening on 127.0.0.1:${wss.address().port}`));
wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
JS
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
# Like `wirelab run --cpu split`: both servers on the second CPU, the client on the first, so
# neither server's figure depends on where the scheduler happens to put it (util-linux taskset).
server_cpu=() client_cpu=()
if [ "$cpu" = split ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  cpus=($(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0))[:2])'))
  client_cpu=(taskset -c "${cpus[0]}") server_cpu=(taskset -c "${cpus[1]}")
  echo "client on CPU ${cpus[0]}, servers on CPU ${cpus[1]}"
fi
"${server_cpu[@]}" node "$peer/echo.js" > "$dir/node.log" 2>&1 & pids+=($!)
"${server_cpu[@]}" $bin serve -t ws --listen 127.0.0.1:0 > "$dir/ours.log" 2>&1 & pids+=($!)
addr_of() {
  for _ in $(seq 100); do
    a=$(grep -o '127\.0\.0\.1:[0-9]*' "$1" 2>/dev/null | head -1) && [ -n "$a" ] && { echo "$a"; return; }
    sleep 0.1
  done
  echo "error: a server did not start: $(cat "$1")" >&2; exit 1
}
node_addr=$(addr_of "$dir/node.log")
ours_addr=$(addr_of "$dir/ours.log")
echo "node $(node --version), ws $(node -p "require('./$peer/node_modules/ws/package.json').version"); wirelab $($bin --version | cut -d' ' -f2)"
printf '%s\n' "| round | K | server | p50 µs | msg/s |" "|---:|---:|---|---:|---:|" > "$dir/table"
for k in 1 8; do
  for round in 1 2 3; do
    for who in ours node; do
      addr=$ours_addr; [ $who = node ] && addr=$node_addr
      out=$("${client_cpu[@]}" $bin client -t ws -c "$addr" -k $k --count $((count / k)) --warmup 200 --stream-count 0)
      p50=$(echo "$out" | grep -o 'p50 [0-9.]* us' | head -1 | cut -d' ' -f2)
      rate=$(echo "$out" | grep -o '([0-9.]* msg/s)' | head -1 | tr -d '(' | cut -d' ' -f1)
      echo "| $round | $k | $who | $p50 | $rate |" >> "$dir/table"
    done
  done
done
cat "$dir/table"
python3 - "$dir/table" <<'PY'
import statistics, sys
rows = [l.strip("|\n").split("|") for l in open(sys.argv[1]).readlines()[2:]]
print()
for k in ("1", "8"):
    ours = [r for r in rows if r[1].strip() == k and r[2].strip() == "ours"]
    node = [r for r in rows if r[1].strip() == k and r[2].strip() == "node"]
    med = lambda rs, i: statistics.median(float(r[i]) for r in rs)
    print(f"K={k}: median p50 ours {med(ours, 3):.1f} µs vs node {med(node, 3):.1f} µs; "
          f"median rate ours {med(ours, 4):.0f} vs node {med(node, 4):.0f} msg/s "
          f"(ours/node {med(ours, 4) / med(node, 4):.2f}x)")
PY
