#!/usr/bin/env python3
"""Reads quinn's trace log of one `wirelab hol` run of a QUIC variant and says why its stalled
messages waited: the frame-level view that quinn 0.11's qlog lacks.

Usage:
    RUST_LOG=quinn_proto=trace wirelab hol --only quic --rtt 20 --loss 1 --random-only \
        --streams 32 --out DIR 2> trace.log
    python3 scripts/hol-trace.py trace.log [--theta-ms T] [--rtt-ms R]

It needs one QUIC connection in the log (one variant, one repetition). Each line of quinn's
trace names its thread: `wl-server` lines are the server's, the others the client's. From them:

- `wrote N bytes stream=…`: when the application handed a message to a stream;
- `send{pn=…}` … `STREAM id=… off=… len=…`: which packet carried which stream's bytes;
- `got stream frame id=… offset=… len=…`: when the peer received them;
- `packets lost: [...]`, `PTO fired`, `blocked by congestion control`, `blocked by pacing`.

Every message (stream s, number k: bytes k*L to (k+1)*L of the stream, request and echo alike)
gets its path through both directions split into parts:

    send wait   written by the application, not yet in a packet (congestion window, pacing)
    repair      in a packet, not yet all received (the packet was lost: retransmission)
    order       received, waiting for an earlier message of the same stream (its repair)
    server      delivered to the server, its echo not yet written

A message *stalls* as the HOL index counts it (`bench-suite/src/holindex.rs`): when its whole
path takes longer than the run's fastest path plus theta (RTT/2, at least 5 ms, as `wirelab hol`
uses). A stall is the stream's own when its own bytes were lost or an
earlier message of its stream was (repair, order), and *coupled* when neither was: then it
waited for the connection (send wait) or for something else. The report counts each.
"""

import argparse
import collections
import json
import re
import sys
from datetime import datetime

ANSI = re.compile(r"\x1b\[[0-9;]*m")
HEAD = re.compile(r"^(\S+)\s+TRACE\s+(\S+)\s+(.*)$")
SPAN_SEND = re.compile(r"send\{space=Data pn=(\d+)\}")
STREAM_ID = r"(client|server) (bi|uni)directional stream (\d+)"
SENT = re.compile(r"STREAM id=" + STREAM_ID + r" off=(\d+) len=(\d+)")
GOT = re.compile(r"got stream frame id=" + STREAM_ID + r" offset=(\d+) len=(\d+)")
WROTE = re.compile(r"wrote (\d+) bytes stream=" + STREAM_ID)
LOST = re.compile(r"packets lost: \[([0-9, ]*)\]")


def ts(s):
    # 2026-12-01T05:00:00.123456Z -> seconds
    s = s.rstrip("Z")
    return datetime.fromisoformat(s).timestamp()


class Ranges:
    """Received byte ranges of one stream: when each message was complete, and in order."""

    def __init__(self):
        self.frames = []  # (t, off, end)

    def complete_at(self, lo, hi, from_zero=False):
        """Earliest time at which [lo, hi) (or [0, hi)) is all received."""
        start = 0 if from_zero else lo
        need = [(start, hi)]
        for t, a, b in self.frames:
            nxt = []
            for x, y in need:
                if b <= x or a >= y:
                    nxt.append((x, y))
                    continue
                if a > x:
                    nxt.append((x, a))
                if b < y:
                    nxt.append((b, y))
            need = nxt
            if not need:
                return t
        return None


def parse(path):
    side_of = lambda thread: "server" if thread.startswith("wl-server") else "client"
    writes = collections.defaultdict(list)  # (side, stream) -> [(t, nbytes)]
    sent = collections.defaultdict(list)  # (side, stream) -> [(t, pn, off, end)]
    got = collections.defaultdict(Ranges)  # (receiver side, stream) -> Ranges
    lost = collections.defaultdict(list)  # side -> [(t, [pn])]
    events = collections.defaultdict(list)  # (side, kind) -> [t]
    pkt_streams = collections.defaultdict(set)  # (side, pn) -> {stream}
    first_initial = {}  # side -> time its first Initial packet was built (aligns the qlog)
    with open(path, errors="replace") as f:
        for line in f:
            line = ANSI.sub("", line)
            m = HEAD.match(line)
            if not m:
                continue
            t, side, rest = ts(m.group(1)), side_of(m.group(2)), m.group(3)
            if "send{space=Initial pn=0}" in rest:
                first_initial.setdefault(side, t)
            if (w := WROTE.search(rest)) and w.group(2) == "client" and w.group(3) == "bi":
                writes[(side, int(w.group(4)))].append((t, int(w.group(1))))
            elif (s := SENT.search(rest)) and s.group(1) == "client" and s.group(2) == "bi":
                p = SPAN_SEND.search(rest)
                pn = int(p.group(1)) if p else -1
                sid, off, n = int(s.group(3)), int(s.group(4)), int(s.group(5))
                sent[(side, sid)].append((t, pn, off, off + n))
                pkt_streams[(side, pn)].add(sid)
            elif (g := GOT.search(rest)) and g.group(1) == "client" and g.group(2) == "bi":
                sid, off, n = int(g.group(3)), int(g.group(4)), int(g.group(5))
                got[(side, sid)].frames.append((t, off, off + n))
            elif l := LOST.search(rest):
                pns = [int(x) for x in l.group(1).replace(" ", "").split(",") if x]
                lost[side].append((t, pns))
            elif "PTO fired" in rest:
                events[(side, "pto")].append(t)
            elif "blocked by congestion control" in rest:
                events[(side, "cwnd")].append(t)
            elif "blocked by pacing" in rest:
                events[(side, "pacing")].append(t)
    events["first_initial"] = first_initial
    return writes, sent, got, lost, events, pkt_streams


def message_times(writes, size):
    """Write time of each message k of a stream: the write that covered byte k*size."""
    out, pos = [], 0
    for t, n in writes:
        end = pos + n
        while len(out) * size < end:
            out.append(t)
        pos = end
    return out


def first_tx(frames, lo, hi):
    """(time, pn) of the packet that first carried all of [lo, hi): the last first-sent piece."""
    need, when, pns = [(lo, hi)], None, []
    for t, pn, a, b in frames:
        nxt, hit = [], False
        for x, y in need:
            if b <= x or a >= y:
                nxt.append((x, y))
                continue
            hit = True
            if a > x:
                nxt.append((x, a))
            if b < y:
                nxt.append((b, y))
        if hit:
            when = t
            pns.append(pn)
        need = nxt
        if not need:
            return when, pns
    return None, pns


def qlog_windows(qdir, t0, win, first_initial):
    """(side, window) -> (smallest congestion window, most bytes in flight), from the qlog
    files of `qdir` (JSON-SEQ, one per connection: `client-…` and `server-…`). quinn's qlog
    times count from the connection's start with no wall-clock reference, so each side's first
    packet sent is aligned with its first Initial packet in the trace."""
    import pathlib

    out = {}
    for f in sorted(pathlib.Path(qdir).glob("*.sqlog")):
        side = "server" if f.name.startswith("server") else "client"
        ref = None
        for rec in f.read_text().split("\x1e"):
            rec = rec.strip()
            if not rec:
                continue
            try:
                e = json.loads(rec)
            except ValueError:
                continue
            if "time" not in e:
                continue
            if ref is None:
                if e.get("name") != "transport:packet_sent" or side not in first_initial:
                    continue
                ref = first_initial[side] - float(e["time"]) / 1e3
            if e.get("name") not in ("recovery:metrics_updated", "metrics_updated"):
                continue
            d = e.get("data", {})
            i = int((ref + float(e["time"]) / 1e3 - t0) // win)
            lo, hi = out.get((side, i), (None, 0))
            if "congestion_window" in d:
                c = int(d["congestion_window"])
                lo = c if lo is None else min(lo, c)
            if "bytes_in_flight" in d:
                hi = max(hi, int(d["bytes_in_flight"]))
            out[(side, i)] = (lo, hi)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--theta-ms", type=float, help="stall threshold over the floor (default: RTT/2, >= 5)")
    ap.add_argument("--json", help="write the per-message table here")
    ap.add_argument(
        "--qlog",
        help="the run's --qlog-dir: adds each side's smallest congestion window and largest "
        "bytes in flight per window of the timeline (from quinn's metrics_updated events)",
    )
    a = ap.parse_args()
    theta = (a.theta_ms if a.theta_ms else max(a.rtt_ms / 2, 5.0)) / 1e3

    writes, sent, got, lost, events, pkt_streams = parse(a.log)
    streams = sorted({s for (side, s) in writes if side == "client"})
    if not streams:
        sys.exit("no client stream writes in the log: was it run with RUST_LOG=quinn_proto=trace?")
    sizes = collections.Counter(n for k, v in writes.items() for _, n in v)
    size = sizes.most_common(1)[0][0]
    lost_pns = {side: {pn for _, pns in v for pn in pns} for side, v in lost.items()}

    rows = []
    for s in streams:
        cw = message_times(writes[("client", s)], size)
        sw = message_times(writes[("server", s)], size)
        for k in range(min(len(cw), len(sw))):
            lo, hi = k * size, (k + 1) * size
            w0 = cw[k]
            s0, pn0 = first_tx(sent[("client", s)], lo, hi)
            a1 = got[("server", s)].complete_at(lo, hi)
            d1 = got[("server", s)].complete_at(lo, hi, from_zero=True)
            w1 = sw[k]
            s1, pn1 = first_tx(sent[("server", s)], lo, hi)
            a2 = got[("client", s)].complete_at(lo, hi)
            d2 = got[("client", s)].complete_at(lo, hi, from_zero=True)
            if None in (s0, a1, d1, s1, a2, d2):
                continue
            own_lost = any(p in lost_pns.get("client", ()) for p in pn0) or any(
                p in lost_pns.get("server", ()) for p in pn1
            )
            rows.append(
                dict(
                    stream=s,
                    k=k,
                    t=w0,
                    total=d2 - w0,
                    send_wait=(s0 - w0) + (s1 - w1),
                    repair=(a1 - s0) + (a2 - s1),
                    order=(d1 - a1) + (d2 - a2),
                    server=w1 - d1,
                    own_lost=own_lost,
                )
            )
    if not rows:
        sys.exit("no message could be followed through both directions")
    t0 = min(r["t"] for r in rows)
    floor = min(r["total"] for r in rows)
    median = sorted(r["total"] for r in rows)[len(rows) // 2]
    stalled = [r for r in rows if r["total"] > floor + theta]

    def cause(r):
        # The excess over a typical message, split by where it was spent.
        if r["own_lost"]:
            return "own bytes lost (repair)"
        if r["order"] > theta / 2:
            return "earlier message of its stream lost (order)"
        if r["send_wait"] > theta / 2:
            return "coupled: waiting to be sent (congestion window or pacing)"
        if r["repair"] > theta / 2:
            return "coupled: in flight long, not lost (queueing or a lost ACK)"
        if r["server"] > theta / 2:
            return "coupled: waiting at the server"
        return "coupled: spread over several parts"

    by = collections.Counter(cause(r) for r in stalled)
    print(f"messages followed: {len(rows)} on {len(streams)} streams, {size} B each")
    print(
        f"path: floor {floor*1e3:.1f} ms, median {median*1e3:.1f} ms; theta {theta*1e3:.1f} ms; "
        f"stalled: {len(stalled)}"
    )
    for side in ("client", "server"):
        ls = lost.get(side, [])
        n = sum(len(p) for _, p in ls)
        multi = [len(pkt_streams.get((side, pn), ())) for _, p in ls for pn in p]
        carried = collections.Counter(multi)
        print(
            f"{side}: packets declared lost {n} in {len(ls)} detections; "
            f"streams per lost packet {dict(sorted(carried.items()))}; "
            f"PTOs {len(events[(side, 'pto')])}; "
            f"congestion-blocked sends {len(events[(side, 'cwnd')])}; "
            f"pacing-blocked {len(events[(side, 'pacing')])}"
        )
    print("stalled messages by cause:")
    for c, n in by.most_common():
        print(f"  {n:5d}  {c}")
    # A timeline in windows of 5 RTTs: where the stalls are, what they waited for, and what
    # the senders logged meanwhile.
    win = 5 * a.rtt_ms / 1e3
    bins = collections.defaultdict(list)
    for r in rows:
        bins[int((r["t"] - t0) / win)].append(r)

    def count(side, kind, i):
        return sum(1 for x in events[(side, kind)] if int((x - t0) / win) == i)

    def losses(side, i):
        return sum(len(p) for x, p in lost.get(side, []) if int((x - t0) / win) == i)

    cw = qlog_windows(a.qlog, t0, win, events["first_initial"]) if a.qlog else {}
    print(
        f"timeline, windows of {win*1e3:.0f} ms: messages sent | stalled (own loss, order, "
        f"coupled) | longest send wait ms | packets declared lost c/s | congestion-blocked c/s"
        + (" | smallest cwnd B c/s | most in flight B c/s" if cw else "")
    )
    for i in sorted(bins):
        v = bins[i]
        st = [r for r in v if r["total"] > floor + theta]
        own = sum(1 for r in st if cause(r).startswith("own"))
        order = sum(1 for r in st if cause(r).startswith("earlier"))
        print(
            f"  {i*win*1e3:7.0f} ms  {len(v):4d} | {len(st):4d} ({own}, {order}, "
            f"{len(st)-own-order}) | {max(r['send_wait'] for r in v)*1e3:5.1f} | "
            f"{losses('client', i)}/{losses('server', i)} | "
            f"{count('client', 'cwnd', i)}/{count('server', 'cwnd', i)}"
            + (
                f" | {cw.get(('client', i), ('-', '-'))[0]}/{cw.get(('server', i), ('-', '-'))[0]}"
                f" | {cw.get(('client', i), ('-', '-'))[1]}/{cw.get(('server', i), ('-', '-'))[1]}"
                if cw
                else ""
            )
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump([dict(r, cause=cause(r)) for r in rows], f)


if __name__ == "__main__":
    main()
