#!/usr/bin/env bash
# Instructions per echo, counted rather than timed: valgrind's callgrind counts the instructions
# a process executes (user space; the kernel's share is not counted), which does not move with
# the scheduler, the VM's neighbours or the CPU's frequency the way a time does.
#
# For each variant: `wirelab serve -t ID` runs under callgrind; a native `wirelab client` warms
# the connection path up, then callgrind's counters are zeroed, A echoes run, the counters are
# dumped, zeroed, B echoes run, dumped again: the server's instructions per echo are
# (I_B - I_A) / (B - A), which cancels what every session costs once (connect, handshakes,
# close). The client is counted the same way, by running it under callgrind twice (A and B
# echoes). One stream, 64-byte messages, each variant at its default security (as `serve`
# serves it).
#
# usage: scripts/instructions.sh [--check FILE] [--out FILE] [VARIANT...]
#   VARIANT: tcp ws h1 h2 h2:rr h2ws quic h3 h3:rr sse (default: all of these)
#   --out FILE    write the counts as JSON (schema wirelab.instructions/1)
#   --check FILE  compare with a baseline written by --out: fail if any count is over 1.3 x
#                 the baseline's (a regression), print the ratio for each
# Needs valgrind (Debian: apt-get install valgrind) and a release build
# (cargo build --release -p wirelab; built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

A=${WIRELAB_INSTR_A:-200}
B=${WIRELAB_INSTR_B:-1200}
check="" out=""
variants=()
while [ $# -gt 0 ]; do
  case $1 in
    --check) check=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) variants+=("$1"); shift ;;
  esac
done
[ ${#variants[@]} -gt 0 ] || variants=(tcp ws h1 h2 h2:rr h2ws quic h3 h3:rr sse)

command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || {
  echo "error: valgrind is not installed (Debian: apt-get install valgrind); it counts the instructions" >&2
  exit 1
}
bin=target/release/wirelab
[ -x "$bin" ] || cargo build --release --locked -q -p wirelab

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Total instructions (Ir) of a callgrind output file.
total() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

results="$work/results.tsv"
: > "$results"
for v in "${variants[@]}"; do
  id=${v%%:*}
  mode=duplex
  [ "$v" != "$id" ] && mode=${v#*:}
  echo "== $v (A=$A, B=$B echoes)" >&2
  dir="$work/$id-$mode"
  mkdir -p "$dir"
  valgrind --tool=callgrind --callgrind-out-file="$dir/server.%p" \
    "$bin" serve -t "$id" -l 127.0.0.1:0 --cert-out "$dir/cert.pem" > "$dir/serve.out" 2> "$dir/serve.err" &
  server_pid=$!
  for _ in $(seq 300); do grep -q '^serving' "$dir/serve.out" 2>/dev/null && break; sleep 0.1; done
  addr=$(grep -o '127\.0\.0\.1:[0-9]*' "$dir/serve.out" | head -1)
  [ -n "$addr" ] || { echo "error: $v: the server did not start under valgrind:" >&2; tail -5 "$dir/serve.err" >&2; exit 1; }
  client=("$bin" client -t "$id" -c "$addr" --ca "$dir/cert.pem" --mode "$mode" --stream-count 0 --warmup 0)
  "${client[@]}" --count 100 > /dev/null
  callgrind_control -z "$server_pid" > /dev/null 2>&1
  "${client[@]}" --count "$A" > /dev/null
  callgrind_control -d "$server_pid" > /dev/null 2>&1
  callgrind_control -z "$server_pid" > /dev/null 2>&1
  "${client[@]}" --count "$B" > /dev/null
  callgrind_control -d "$server_pid" > /dev/null 2>&1
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
  dumps=($(ls "$dir"/server.*.[0-9]* | sort -t. -k3 -n))
  [ ${#dumps[@]} -ge 2 ] || { echo "error: $v: callgrind wrote ${#dumps[@]} dumps, expected 2" >&2; exit 1; }
  s_a=$(total "${dumps[0]}") s_b=$(total "${dumps[1]}")
  # The client: the same session twice under callgrind, against a native server.
  "$bin" serve -t "$id" -l 127.0.0.1:0 --cert-out "$dir/cert2.pem" > "$dir/serve2.out" 2>&1 &
  server_pid=$!
  for _ in $(seq 300); do grep -q '^serving' "$dir/serve2.out" 2>/dev/null && break; sleep 0.1; done
  addr=$(grep -o '127\.0\.0\.1:[0-9]*' "$dir/serve2.out" | head -1)
  client=("$bin" client -t "$id" -c "$addr" --ca "$dir/cert2.pem" --mode "$mode" --stream-count 0 --warmup 0)
  valgrind --tool=callgrind --callgrind-out-file="$dir/client-a" "${client[@]}" --count "$A" > /dev/null 2>&1
  valgrind --tool=callgrind --callgrind-out-file="$dir/client-b" "${client[@]}" --count "$B" > /dev/null 2>&1
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
  c_a=$(total "$dir/client-a") c_b=$(total "$dir/client-b")
  printf '%s\t%s\t%s\t%s\t%s\n' "$v" "$s_a" "$s_b" "$c_a" "$c_b" >> "$results"
done

python3 - "$results" "$A" "$B" "$out" "$check" <<'PY'
import json, sys
rows, a, b, out, check = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
counts = {}
for line in open(rows):
    v, s_a, s_b, c_a, c_b = line.split("\t")
    server = (int(s_b) - int(s_a)) / (b - a)
    client = (int(c_b) - int(c_a)) / (b - a)
    counts[v] = {"client": round(client), "server": round(server), "total": round(client + server)}
floors = {"tcp": "tcp", "quic": "quic"}
print(f"\nInstructions per 64-byte echo on one stream (callgrind, user space; B-A = {b - a} echoes)\n")
print("| variant | client | server | total | ÷ floor |")
print("|---|---:|---:|---:|---:|")
for v, c in counts.items():
    floor = "quic" if v.startswith("h3") or v == "quic" else "tcp"
    ratio = f"{c['total'] / counts[floor]['total']:.2f}×" if floor in counts and counts[floor]["total"] else "–"
    print(f"| {v} | {c['client']:,} | {c['server']:,} | {c['total']:,} | {ratio} |")
if out:
    json.dump({"schema": "wirelab.instructions/1", "a": a, "b": b, "counts": counts},
              open(out, "w"), indent=1)
    print(f"\nwritten: {out}")
if check:
    base = json.load(open(check))["counts"]
    bad = []
    print(f"\nagainst {check} (fails over 1.3×):")
    for v, c in counts.items():
        if v not in base:
            print(f"- {v}: no baseline")
            continue
        for side in ("client", "server"):
            r = c[side] / max(base[v][side], 1)
            flag = "  REGRESSION" if r > 1.3 else ""
            print(f"- {v} {side}: {c[side]:,} vs {base[v][side]:,} ({r:.2f}×){flag}")
            if r > 1.3:
                bad.append(f"{v} {side}")
    if bad:
        sys.exit(f"instruction counts regressed by more than 30%: {', '.join(bad)}")
PY
