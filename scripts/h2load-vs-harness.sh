#!/usr/bin/env bash
# Is the harness the bottleneck? Our h2 client and h2load (nghttp2) against the same wirelab h2
# server in the same run: one connection, 8 requests in flight, POST /echo with a 64-byte service
# message, alternating 3 times. Prints each run's requests/s and the median ratio.
# Usage: bash scripts/h2load-vs-harness.sh [--h2c]   (needs h2load: apt-get install nghttp2-client)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 1; }
mode=tls; [ "${1:-}" = "--h2c" ] && mode=h2c
cargo build --release -q -p wirelab
bin=target/release/wirelab
dir=$(mktemp -d); trap 'kill $srv 2>/dev/null || true; rm -rf "$dir"' EXIT
python3 - "$dir/body.bin" <<'PY'
import struct, sys
# The service's 32-byte header (magic, version 1, kind Echo, stream, seq, sent_ns, len, reserved), 32 payload bytes.
open(sys.argv[1], "wb").write(struct.pack(">2sBBIQQII", b"WL", 1, 0, 0, 0, 0, 64, 0) + bytes(32))
PY
if [ $mode = tls ]; then
  $bin serve -t h2 --listen 127.0.0.1:0 --cert-out "$dir/cert.pem" > "$dir/serve.log" & srv=$!
  scheme=https; client_tls=(--ca "$dir/cert.pem")
else
  $bin serve -t h2 --h2c --listen 127.0.0.1:0 > "$dir/serve.log" & srv=$!
  scheme=http; client_tls=(--h2c)
fi
for _ in $(seq 100); do grep -q "listening on" "$dir/serve.log" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o "listening on [a-z]*://[0-9.:]*" "$dir/serve.log" | head -1 | sed 's|.*://||')
[ -n "$addr" ] || { echo "server did not start" >&2; cat "$dir/serve.log" >&2; exit 1; }
n=100000
ratios=()
for i in 1 2 3; do
  h=$(h2load -n $n -c 1 -m 8 -d "$dir/body.bin" "$scheme://$addr/echo" | awk '/^finished in/ {gsub(",","",$4); print $4}')
  w=$($bin client -t h2 -c "$addr" "${client_tls[@]}" --mode rr -k 8 --count $((n / 8)) --warmup 100 --stream-count 0 \
      | grep -o "[0-9.]* msg/s" | head -1 | cut -d' ' -f1)
  r=$(python3 -c "print(f'{$w / $h:.2f}')")
  ratios+=("$r")
  echo "run $i ($mode): h2load $h req/s, wirelab client $w msg/s, ratio $r"
done
printf '%s\n' "${ratios[@]}" | sort -n | sed -n 2p | xargs -I{} echo "median ratio (wirelab / h2load): {}"
