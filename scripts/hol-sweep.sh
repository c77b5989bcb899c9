#!/usr/bin/env bash
# The head-of-line sweep: `wirelab hol` over cells beyond the default grid (RTT, loss rate and
# model, message size, stream count, messages per RTT), several seeds per cell, several cells at
# once. Each cell is its own `wirelab hol` process with its own link emulator (anonymous network
# namespaces, so they do not collide) and `--cpu free`; run as many at once as the machine has
# cores to spare (each is mostly waiting on the link's timers, but its forwarder wants a core
# when packets are due). Needs root, like `wirelab hol`.
#
# Usage: scripts/hol-sweep.sh CELLS_FILE [OUT]
#   CELLS_FILE  one cell per line: NAME ARGS... (ARGS as `wirelab hol` takes them; # comments)
#   OUT         results directory (default results/hol-sweep-<UTC date>-<time>)
# Environment:
#   WIRELAB     the binary (default: target/release/wirelab, else wirelab on PATH)
#   JOBS        cells at once (default: half the CPUs, at least 1)
#   REPS        seeds per cell (default 5)
#   VARIANTS    the --only list (default: tcp shared,tcp pool,ws shared,h2 duplex,quic,h3 duplex,wt)
#   CELL_LIMIT  seconds a cell may run before it is stopped (default 900)
# Writes OUT/NAME/ (JSON, report.md, charts) and OUT/NAME.log per cell, and OUT/summary.md (with
# python3): per cell and transport, the HOL index's median and interval over the seeds, p99 and
# stalls. Exits non-zero if a cell failed or ran out of time.
set -euo pipefail
cells=${1:?usage: scripts/hol-sweep.sh CELLS_FILE [OUT]}
[ -r "$cells" ] || { echo "hol-sweep: cannot read $cells" >&2; exit 2; }
out=${2:-results/hol-sweep-$(date -u +%Y%m%d-%H%M%S)}
bin=${WIRELAB:-}
if [ -z "$bin" ]; then
    if [ -x target/release/wirelab ]; then bin=target/release/wirelab; else bin=$(command -v wirelab || true); fi
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "hol-sweep: no wirelab binary (build it: cargo build --release, or set WIRELAB)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "hol-sweep: needs root (the link emulator: namespaces, TUN devices)" >&2; exit 2; }
ncpu=$(nproc)
jobs=${JOBS:-$(( ncpu / 2 > 0 ? ncpu / 2 : 1 ))}
reps=${REPS:-5}
variants=${VARIANTS:-tcp shared,tcp pool,ws shared,h2 duplex,quic,h3 duplex,wt}
limit=${CELL_LIMIT:-900}
mkdir -p "$out"
grep -v '^\s*\(#\|$\)' "$cells" > "$out/cells.txt"

# Each `wirelab hol` adds its congestion control to the host-wide allowed list while it sets up
# its namespaces and puts the list back right after; two doing that at once race (one restores
# the list while the other still needs it). So the sweep allows every congestion control its
# cells use (cubic unless a cell says --cc) for its whole run, and puts the list back at exit.
key=net.ipv4.tcp_allowed_congestion_control
allowed_before=$(sysctl -n "$key")
allowed=$allowed_before
for cc in cubic $(grep -o -- '--cc [A-Za-z0-9_]*' "$out/cells.txt" | awk '{print $2}'); do
    case " $allowed " in *" $cc "*) ;; *) allowed="$allowed $cc" ;; esac
done
if [ "$allowed" != "$allowed_before" ]; then
    trap 'sysctl -qw "$key=$allowed_before"' EXIT
    sysctl -qw "$key=$allowed" 2>/dev/null \
        || echo "hol-sweep: could not allow '$allowed' (each cell will say why)" >&2
fi
total=$(wc -l < "$out/cells.txt")
echo "hol-sweep: $total cells, $jobs at once, $reps seeds each, variants: $variants -> $out" >&2

run_cell() { # run_cell LINE
    local name args rc start
    name=${1%% *}; args=${1#"$name"}
    start=$(date +%s)
    # shellcheck disable=SC2086
    timeout "$limit" "$bin" hol --cpu free --reps "$reps" --only "$variants" --out "$out/$name" $args \
        > "$out/$name.log" 2>&1 && rc=0 || rc=$?
    echo "hol-sweep: $name done in $(( $(date +%s) - start )) s (exit $rc)" >&2
    return "$rc"
}
export -f run_cell
export bin out reps variants limit
rc=0
tr '\n' '\0' < "$out/cells.txt" | xargs -0 -P "$jobs" -I{} bash -c 'run_cell "$1"' _ {} || rc=$?

summarize() { # every cell's JSON: the HOL index's median and interval over the seeds, p99, stalls
    python3 - "$out" "$("$bin" --version)" "$reps" <<'PY'
import json, pathlib, sys
out, version, reps = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print(f"# HOL sweep\n\n{version}, {reps} seeds per cell, `--cpu free`.\n")
print("HOL index: median [interval] (n seeds with a stall; the interval's confidence level); "
      "p99 ms: median over the seeds; stalls: median count per run. 0: a loss stalls only its "
      "own stream, 1: every stream (docs/src/hol.md). lost %: datagram variants only, echoes "
      "that never came back, median [interval] over the seeds.\n")
for line in (out / "cells.txt").read_text().splitlines():
    name, _, args = line.partition(" ")
    print(f"## {name}: `{args.strip()}`\n")
    files = sorted((out / name).glob("*/*.json"))
    if not files:
        print(f"(no results: see {name}.log)\n")
        continue
    print("| cell | transport | HOL index | n | level | p99 ms | stalls | lost % |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for f in files:
        r = json.loads(f.read_text())
        s = r.get("summary") or {}
        if "p99_ms" not in s:
            print(f"| {f.parent.name} | {r['variant']} | (no valid run) | 0 | - | - | - | - |")
            continue
        # No stall in any seed (no loss, or none that delayed anything): no index.
        h = s.get("hol_index") or {}
        idx = f"{h['median']:.2f} [{h['lo']:.2f}, {h['hi']:.2f}]" if h.get("n") else "-"
        lvl = f"{h['level']:.0%}" if h.get("n") else "-"
        d = s.get("datagram_loss_pct")
        lost = f"{d['median']:.1f} [{d['lo']:.1f}, {d['hi']:.1f}]" if d else "-"
        print(f"| {f.parent.name} | {r['variant']} | {idx} | {h.get('n', 0)} | {lvl} "
              f"| {s['p99_ms']['median']:.1f} | {s.get('stalls', {}).get('median', 0):g} | {lost} |")
    print()
PY
}
if command -v python3 >/dev/null; then summarize > "$out/summary.md"; else echo "hol-sweep: no python3: no summary.md (each cell's report.md is there)" >&2; fi
echo "hol-sweep: summary in $out/summary.md (exit $rc)" >&2
exit "$rc"
