#!/usr/bin/env bash
# The download grid (after Liu et al., "Performance Comparison of HTTP/3 and HTTP/2", 2024: a
# 10 Mbit/s bottleneck, 0-50 ms of delay, 0-12% loss, cubic and BBR): a 1 MiB download over h2
# and h3 through the link emulator, on one stream of an open connection (a server stream of
# 16 x 64 KiB) and on 8 streams of it at once (2 x 64 KiB each), for each congestion control
# (TCP's set with --cc in both namespaces, QUIC's with --quic-cc on both sides), RTT and loss
# rate. One `wirelab run` per cell; a summary of download times (1 MiB / goodput: median
# [interval] over the repetitions; with 8 streams also when the first stream was done) per
# cell, shape and variant, and h3 duplex against h2 duplex. Needs root, like `wirelab run
# --link`.
#
# Usage: scripts/download-grid.sh [OUT]   (default results/download-grid-<UTC date>-<time>)
# Environment (defaults in brackets):
#   WIRELAB  the binary [target/release/wirelab]
#   CCS      congestion controls, each set for TCP and QUIC alike ["cubic bbr"]
#   RTTS     round-trip times, ms ["40"]
#   LOSSES   loss per direction, % ["0 3 8 12"]
#   RATE     bottleneck, Mbit/s [10]; QUEUE drop-tail queue, ms at the rate [100]
#   SHAPES   streams the 1 MiB is spread over: 1 and/or 8 ["1 8"]
#   REPS     measured repetitions per cell [3]; each cell also runs 1 warm-up
#   SUMMARY_ONLY=1  only write OUT/summary.md again from OUT's results
# Writes OUT/<cc>_rtt<R>_loss<L>/ (JSON, report.md) and OUT/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/download-grid-$(date -u +%Y%m%d-%H%M%S)}
bin=${WIRELAB:-target/release/wirelab}
[ -x "$bin" ] || { echo "download-grid: no $bin (cargo build --release -p wirelab, or set WIRELAB)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "download-grid: needs root (the link emulator)" >&2; exit 2; }
ccs=${CCS:-cubic bbr} rtts=${RTTS:-40} losses=${LOSSES:-0 3 8 12}
rate=${RATE:-10} queue=${QUEUE:-100} reps=${REPS:-3}
scenario=""
for k in ${SHAPES:-1 8}; do
  case $k in
    1) f=scripts/download-grid/stream_64KiB.toml ;;
    8) f=scripts/download-grid/stream_64KiB_c8_shared.toml ;;
    *) echo "download-grid: SHAPES takes 1 and 8, not '$k'" >&2; exit 2 ;;
  esac
  scenario=${scenario:+$scenario,}$f
done
[ -n "$scenario" ] || { echo "download-grid: SHAPES is empty" >&2; exit 2; }
mkdir -p "$out"
# SUMMARY_ONLY=1: write the summary of an earlier OUT again, running nothing.
if [ "${SUMMARY_ONLY:-0}" = 1 ]; then ccs="" ; fi
cells=0; for _ in $ccs; do for _ in $rtts; do for _ in $losses; do cells=$((cells + 1)); done; done; done
n=0 rc=0
for cc in $ccs; do
  for rtt in $rtts; do
    for loss in $losses; do
      n=$((n + 1)); cell=${cc}_rtt${rtt}_loss${loss}
      link="rtt=${rtt}ms,loss=${loss}%,rate=${rate}mbit,queue=${queue}ms,seed=1"
      echo "download-grid: cell $n of $cells: $cell ($link)" >&2
      "$bin" run --link "$link" --cc "$cc" --quic-cc "$cc" --scenario "$scenario" \
        --transports h2,h3 --reps "$reps" --warmup 1 --out "$out/$cell" > "$out/$cell.log" 2>&1 \
        || { echo "download-grid: $cell failed (see $out/$cell.log)" >&2; rc=1; }
    done
  done
done
python3 - "$out" "$rate" "$queue" > "$out/summary.md" <<'PY'
import json, pathlib, sys
out, rate, queue = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print(f"# Download grid\n\n1 MiB over one connection: on 1 stream (16 x 64 KiB) or on 8 streams at "
      f"once (2 x 64 KiB each), {rate} Mbit/s bottleneck, {queue} ms drop-tail queue. Download "
      f"time, s: median [interval] over the repetitions (1 MiB / goodput; with 8 streams the last "
      f"stream's end, and `first` the median of when the first stream was done). h3 ÷ h2: the "
      f"duplex medians' ratio (below 1: h3 faster).\n")
def order(d):  # <cc>_rtt<R>_loss<L>: by controller, then RTT and loss as numbers
    cc, rtt, loss = d.name.rsplit("_", 2)
    return (cc, float(rtt[3:]), float(loss[4:]))
def time_s(r):
    g = r.get("summary", {}).get("goodput_mib_s")
    if not g:
        return None
    mib = r["reps"][0]["payload_bytes"] / (1 << 20) if r.get("reps") else 1.0
    inv = lambda v: mib / v if v > 0 else float("inf")
    return (inv(g["median"]), inv(g["hi"]), inv(g["lo"]))
rows = []
for d in sorted((p for p in out.iterdir() if p.is_dir() and p.name.count("_") >= 2), key=order):
    shapes = {}
    for f in d.glob("*/*.json"):
        r = json.loads(f.read_text())
        t = time_s(r)
        if t is None:
            continue
        streams = r["scenario"].get("streams", 1)
        first = r.get("summary", {}).get("first_stream_done_ms")
        shapes.setdefault(streams, {})[r["variant"]["label"]] = (t, first["median"] / 1000 if first else None)
    for streams in sorted(shapes):
        rows.append((d.name, streams, shapes[streams]))
labels = ["h2 rr", "h2 duplex", "h3 rr", "h3 duplex"]
print("| cell | streams | " + " | ".join(labels) + " | h3 ÷ h2 (duplex) |")
print("|---|---:|" + "---|" * (len(labels) + 1))
for name, streams, res in rows:
    def cell(l):
        if l not in res:
            return "–"
        (m, lo, hi), first = res[l]
        s = f"{m:.2f} [{lo:.2f}, {hi:.2f}]"
        return s + (f" first {first:.2f}" if first is not None else "")
    ratio = (f"{res['h3 duplex'][0][0] / res['h2 duplex'][0][0]:.2f}"
             if "h3 duplex" in res and "h2 duplex" in res else "–")
    print(f"| {name} | {streams} | " + " | ".join(cell(l) for l in labels) + f" | {ratio} |")
PY
echo "download-grid: summary in $out/summary.md" >&2
exit "$rc"
