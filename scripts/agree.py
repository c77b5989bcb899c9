#!/usr/bin/env python3
"""Do repeated runs of one set agree? `scripts/agree.py RUN_DIR RUN_DIR [RUN_DIR ...]`

For every scenario whose report shows a "p50 ÷ floor" ratio (echo, open, setup) and every
transport measured against a floor (ws, h1, h2... against tcp; h3, wt against quic), the ratio
of the medians in each run and its interval: [lo ÷ floor's hi, hi ÷ floor's lo] from the two
medians' 95% intervals (conservative: the ratio's own interval is narrower). The runs agree on
a ratio when their intervals have a common point. Prints a Markdown table, one row per ratio,
and a last line with how many agree; exits 1 when any does not (2 on bad input).
"""
import json
import pathlib
import sys

HEADLINE = {"echo", "open", "setup"}


def load(run):
    out = {}
    for f in pathlib.Path(run).glob("*/*.json"):
        r = json.loads(f.read_text())
        if r.get("scenario", {}).get("kind") not in HEADLINE:
            continue
        p50 = r.get("summary", {}).get("p50_us")
        if p50:
            out[(r["scenario"]["name"], r["variant"]["label"])] = (r["variant"].get("floor"), p50)
    return out


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    runs = []
    for d in argv[1:]:
        if not pathlib.Path(d).is_dir():
            print(f"agree: {d} is not a directory of results", file=sys.stderr)
            return 2
        runs.append(load(d))
        if not runs[-1]:
            print(f"agree: {d} holds no echo, open or setup results", file=sys.stderr)
            return 2
    keys = sorted(set.intersection(*(set(r) for r in runs)))
    print("| scenario | transport | floor | " + " | ".join(f"run {i + 1}" for i in range(len(runs)))
          + " | agree |")
    print("|---|---|---|" + "---:|" * len(runs) + "---|")
    agree = total = 0
    for scenario, label in keys:
        floor = runs[0][(scenario, label)][0]
        if not floor or any((scenario, floor) not in r for r in runs):
            continue
        cells, lows, highs = [], [], []
        for r in runs:
            v = r[(scenario, label)][1]
            f = r[(scenario, floor)][1]
            lo = v["lo"] / f["hi"] if f["hi"] > 0 else 0.0
            hi = v["hi"] / f["lo"] if f["lo"] > 0 else float("inf")
            cells.append(f"{v['median'] / f['median']:.2f} [{lo:.2f}–{hi:.2f}]")
            lows.append(lo)
            highs.append(hi)
        ok = max(lows) <= min(highs)
        total += 1
        agree += ok
        print(f"| {scenario} | {label} | {floor} | " + " | ".join(cells) + f" | {'yes' if ok else '**no**'} |")
    print(f"\n{agree} of {total} ratios agree across {len(runs)} runs.")
    return 0 if agree == total else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
