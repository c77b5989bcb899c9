//! Client workloads, generic over the transport: closed-loop echo, open-loop echo at a fixed
//! rate, setup to the first echo, and server-stream goodput. `wirelab client` uses [`run`];
//! the harness uses the others.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Barrier};
use wirelab_core::codec::{self, Kind, StreamRequest};
use wirelab_core::{clock, Channel, Client, ClientConfig};

use crate::probe::{self, Cost, Probe};
use crate::stats;

/// What `wirelab client` does.
#[derive(Debug, Clone)]
pub struct Work {
    /// Message size in bytes.
    pub size: usize,
    /// Measured echoes per logical stream.
    pub count: u64,
    /// Unmeasured echoes per logical stream before measuring.
    pub warmup: u64,
    /// A server stream to request on stream 0 after the echoes, and check.
    pub stream: Option<StreamRequest>,
}

/// What `wirelab client` saw.
#[derive(Debug)]
pub struct Outcome {
    /// Time to open the session (connections and handshakes).
    pub setup: Duration,
    /// Echo round-trip times, ns.
    pub rtt: Histogram<u64>,
    /// Wall time of the measured echo phase.
    pub elapsed: Duration,
    /// Server stream: messages received and one-way delays (ns, same-host clock).
    pub stream: Option<(u64, Histogram<u64>)>,
    /// Whether the session resumed with 0-RTT early data (see [`Client::early_data`]).
    pub early_data: Option<bool>,
}

impl Outcome {
    /// Measured echoes per second.
    pub fn messages_per_sec(&self) -> f64 {
        self.rtt.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn echo_loop<C: Channel>(
    mut ch: C,
    size: usize,
    warmup: u64,
    count: u64,
    barrier: Arc<(Barrier, Barrier)>,
) -> Result<(C, Histogram<u64>)> {
    let id = ch.id();
    let mut hist = stats::histogram();
    for seq in 0..warmup + count {
        if seq == warmup {
            // Warm-up done; the driver reads its counters, then releases everyone at once.
            barrier.0.wait().await;
            barrier.1.wait().await;
        }
        let t0 = clock::now_ns();
        let msg = codec::encode(id, seq, t0, Kind::Echo, size)?;
        let back = ch
            .echo(msg.clone())
            .await
            .with_context(|| format!("echo {seq} on stream {id}"))?;
        let rtt = clock::now_ns().saturating_sub(t0);
        if back != msg {
            bail!(
                "stream {id}: echo {seq} came back different ({} bytes)",
                back.len()
            );
        }
        if seq >= warmup {
            hist.record(rtt.max(1))?;
        }
    }
    if count == 0 {
        barrier.0.wait().await;
        barrier.1.wait().await;
    }
    Ok((ch, hist))
}

/// Runs a priming session (one echo) so the TLS config holds a session ticket for 0-RTT.
pub async fn prime<C: Client>(cfg: &ClientConfig) -> Result<()> {
    let c = prime_open::<C>(cfg).await?;
    c.close().await.context("closing the priming session")?;
    Ok(())
}

/// [`prime`] without the close: returns the session, whose tickets have arrived.
pub async fn prime_open<C: Client>(cfg: &ClientConfig) -> Result<C> {
    let mut prime = cfg.clone();
    prime.streams = 1;
    prime.zero_rtt = false;
    prime.wire = None;
    let mut c = C::connect(&prime)
        .await
        .context("priming session for 0-RTT")?;
    let mut chans = c.channels();
    if let Some(ch) = chans.first_mut() {
        let msg = codec::encode(0, 0, clock::now_ns(), Kind::Echo, codec::HEADER_LEN)?;
        ch.echo(msg).await.context("priming echo")?;
    }
    drop(chans);
    Ok(c)
}

async fn check_zero_rtt<C: Client>(cfg: &ClientConfig, client: &mut C) -> Result<Option<bool>> {
    let early_data = client.early_data().await;
    if cfg.zero_rtt && early_data != Some(true) {
        bail!("0-RTT was asked for but not used (early data: {early_data:?})");
    }
    Ok(early_data)
}

/// Opens a session, runs closed-loop echoes on every stream at once, checks a server stream,
/// closes.
///
/// With 0-RTT asked for, a priming session (one echo) runs first so the TLS config holds a
/// session ticket; the measured session then resumes with early data.
pub async fn run<C: Client>(cfg: &ClientConfig, work: &Work) -> Result<Outcome> {
    if cfg.zero_rtt {
        prime::<C>(cfg).await?;
    }
    let t0 = Instant::now();
    let mut client = C::connect(cfg).await.context("connecting")?;
    let setup = t0.elapsed();
    let (rtt, elapsed, mut chans, _) =
        echo_phase(client.channels(), work.size, work.warmup, work.count, None).await?;
    let stream = match (work.stream, chans.first_mut()) {
        (Some(req), Some(ch)) => Some(check_stream(ch, req).await?),
        _ => None,
    };
    drop(chans);
    let early_data = check_zero_rtt(cfg, &mut client).await?;
    client.close().await.context("closing the session")?;
    Ok(Outcome {
        setup,
        rtt,
        elapsed,
        stream,
        early_data,
    })
}

/// Runs the echo loops on every channel; returns the merged RTTs, the wall time of the
/// measured part (all streams meet at a barrier after their warm-up) and, with a probe, its
/// cost.
async fn echo_phase<Ch: Channel>(
    channels: Vec<Ch>,
    size: usize,
    warmup: u64,
    count: u64,
    probe: Option<&Probe>,
) -> Result<(Histogram<u64>, Duration, Vec<Ch>, Option<Cost>)> {
    let n = channels.len() + 1;
    let barrier = Arc::new((Barrier::new(n), Barrier::new(n)));
    let tasks: Vec<_> = channels
        .into_iter()
        .map(|ch| tokio::spawn(echo_loop(ch, size, warmup, count, barrier.clone())))
        .collect();
    // Every stream has finished its warm-up (nothing in flight) when the first barrier opens;
    // the counters are read before the second releases the measured phase.
    barrier.0.wait().await;
    let measuring = probe::measure(probe);
    let start = Instant::now();
    barrier.1.wait().await;
    let mut rtt = stats::histogram();
    let mut chans = Vec::new();
    let mut first_err = None;
    for t in tasks {
        match t.await.map_err(|e| anyhow!("echo task failed: {e}")) {
            Ok(Ok((ch, h))) => {
                rtt.add(&h)?;
                chans.push(ch);
            }
            Ok(Err(e)) | Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let elapsed = start.elapsed();
    let cost = measuring.finish();
    Ok((rtt, elapsed, chans, cost))
}

async fn check_stream<C: Channel>(ch: &mut C, req: StreamRequest) -> Result<(u64, Histogram<u64>)> {
    let got = ch.server_stream(req).await.context("server stream")?;
    if got.len() != req.count as usize {
        bail!(
            "server stream: {} of {} messages arrived",
            got.len(),
            req.count
        );
    }
    let mut owd = stats::histogram();
    for (i, r) in got.iter().enumerate() {
        let h = codec::decode(&r.msg, usize::MAX)?;
        if h.seq != i as u64 || h.kind != Kind::StreamData || h.len != req.size {
            bail!("server stream: message {i} is out of order or malformed: {h:?}");
        }
        if h.stream != ch.id() {
            bail!(
                "server stream: message {i} is stamped for stream {}",
                h.stream
            );
        }
        owd.record(r.at_ns.saturating_sub(h.sent_ns).max(1))?;
    }
    Ok((got.len() as u64, owd))
}

/// One closed-loop measurement: each stream sends, waits for its echo, sends the next.
#[derive(Debug)]
pub struct ClosedLoop {
    /// Round-trip times of the measured echoes, ns.
    pub rtt: Histogram<u64>,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// CPU and socket bytes during the measured phase.
    pub cost: Option<Cost>,
}

/// Closed-loop echo: `warmup` then `count` echoes per stream on a fresh session.
pub async fn closed_loop<C: Client>(
    cfg: &ClientConfig,
    size: usize,
    warmup: u64,
    count: u64,
    probe: Option<&Probe>,
) -> Result<ClosedLoop> {
    let mut client = C::connect(cfg).await.context("connecting")?;
    let (rtt, elapsed, chans, cost) =
        echo_phase(client.channels(), size, warmup, count, probe).await?;
    drop(chans);
    client.close().await.context("closing the session")?;
    Ok(ClosedLoop { rtt, elapsed, cost })
}

/// The schedule of an open-loop run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Messages per second over all streams.
    pub rate: f64,
    /// How long messages are sent for.
    pub duration: Duration,
    /// Message size.
    pub size: usize,
    /// Send lateness (actual minus intended send time) at the 99th percentile above which the
    /// generator reports that it could not keep the rate.
    pub lateness_budget: Duration,
}

impl Schedule {
    /// Messages in the schedule.
    pub fn messages(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64()).round() as u64
    }
}

/// One open-loop measurement.
#[derive(Debug)]
pub struct OpenLoop {
    /// Latency from the *intended* send time to the echo: no coordinated omission.
    pub corrected: Histogram<u64>,
    /// Latency from the actual send to the echo (what a closed-loop client would see).
    pub service: Histogram<u64>,
    /// Actual minus intended send time.
    pub lateness: Histogram<u64>,
    /// Messages sent and answered.
    pub messages: u64,
    /// From the first intended send to the last echo.
    pub elapsed: Duration,
    /// `None` when the generator kept its schedule; otherwise why it did not.
    pub behind: Option<String>,
    /// CPU and socket bytes during the run.
    pub cost: Option<Cost>,
    /// Every message, per stream in send order: (intended send time, latency from it), ns.
    pub records: Vec<Vec<(u64, u64)>>,
}

#[derive(Debug, Clone, Copy)]
struct Tick {
    seq: u64,
    intended_ns: u64,
}

struct OpenHists {
    corrected: Histogram<u64>,
    service: Histogram<u64>,
    lateness: Histogram<u64>,
    sent: u64,
    records: Vec<(u64, u64)>,
}

/// One stream of an open-loop run: sends on every tick, without waiting for earlier echoes,
/// and matches echoes (answered in order) to their intended and actual send times.
async fn open_stream<C: Channel>(
    mut ch: C,
    mut ticks: mpsc::UnboundedReceiver<Tick>,
    size: usize,
) -> Result<(C, OpenHists)> {
    let id = ch.id();
    let mut h = OpenHists {
        corrected: stats::histogram(),
        service: stats::histogram(),
        lateness: stats::histogram(),
        sent: 0,
        records: Vec::new(),
    };
    let mut pending: VecDeque<(u64, u64, u64)> = VecDeque::new();
    let mut ticking = true;
    loop {
        tokio::select! {
            biased;
            r = ch.recv(), if !pending.is_empty() => {
                let msg = r.with_context(|| format!("open-loop echo on stream {id}"))?;
                let at = clock::now_ns();
                let (seq, intended, sent) = pending.pop_front().expect("checked non-empty");
                let hd = codec::decode(&msg, usize::MAX)?;
                if hd.seq != seq || hd.stream != id || msg.len() != size {
                    bail!("stream {id}: expected echo {seq}, got {hd:?}");
                }
                h.corrected.record(at.saturating_sub(intended).max(1))?;
                h.records.push((intended, at.saturating_sub(intended)));
                h.service.record(at.saturating_sub(sent).max(1))?;
            }
            t = ticks.recv(), if ticking => match t {
                Some(t) => {
                    let now = clock::now_ns();
                    h.lateness.record(now.saturating_sub(t.intended_ns).max(1))?;
                    let msg = codec::encode(id, t.seq, now, Kind::Echo, size)?;
                    ch.send(msg).await.with_context(|| format!("open-loop send on stream {id}"))?;
                    pending.push_back((t.seq, t.intended_ns, now));
                    h.sent += 1;
                }
                None => ticking = false,
            },
            else => break,
        }
    }
    Ok((ch, h))
}

/// Open-loop echo at a fixed rate on a fresh session.
///
/// A dedicated thread (`wl-ticker`, high-resolution sleeps, not the runtime's 1 ms timer)
/// releases message `n` at `start + n / rate` to stream `n mod K`; the stream sends it at once,
/// however many echoes are outstanding. Latency is measured from the intended send time, so a
/// stall shows in every message scheduled during it (no coordinated omission). The generator
/// says it fell behind when its 99th-percentile send lateness exceeds the budget.
pub async fn open_loop<C: Client>(
    cfg: &ClientConfig,
    sched: Schedule,
    probe: Option<&Probe>,
) -> Result<OpenLoop> {
    if !(sched.rate.is_finite() && sched.rate > 0.0) {
        bail!("open-loop rate must be positive, not {}", sched.rate);
    }
    let mut client = C::connect(cfg).await.context("connecting")?;
    let channels = client.channels();
    let k = channels.len() as u64;
    let total = sched.messages();
    let mut txs = Vec::new();
    let mut tasks = Vec::new();
    for ch in channels {
        let (tx, rx) = mpsc::unbounded_channel();
        txs.push(tx);
        tasks.push(tokio::spawn(open_stream(ch, rx, sched.size)));
    }
    let interval_ns = 1e9 / sched.rate;
    let measuring = probe::measure(probe);
    let start = Instant::now();
    let start_ns = clock::now_ns();
    let ticker = std::thread::Builder::new()
        .name("wl-ticker".into())
        .spawn(move || {
            for n in 0..total {
                let offset = (n as f64 * interval_ns) as u64;
                let due = start + Duration::from_nanos(offset);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let tick = Tick {
                    seq: n / k,
                    intended_ns: start_ns + offset,
                };
                if txs[(n % k) as usize].send(tick).is_err() {
                    return;
                }
            }
        })
        .context("starting the ticker thread")?;
    let drain = sched.duration + Duration::from_secs(10) + cfg.timeouts.handshake;
    let mut hists = Vec::new();
    let mut first_err = None;
    for t in tasks {
        match tokio::time::timeout(drain, t).await {
            Ok(Ok(Ok((ch, h)))) => {
                drop(ch);
                hists.push(h);
            }
            Ok(Ok(Err(e))) => {
                first_err.get_or_insert(e);
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(anyhow!("open-loop stream task failed: {e}"));
            }
            Err(_) => {
                first_err.get_or_insert(anyhow!(
                    "open-loop echoes still missing {} s after the schedule ended",
                    drain.as_secs()
                ));
            }
        }
    }
    let elapsed = start.elapsed();
    let _ = tokio::task::spawn_blocking(move || ticker.join()).await;
    if let Some(e) = first_err {
        return Err(e);
    }
    let cost = measuring.finish();
    client.close().await.context("closing the session")?;
    let mut out = OpenLoop {
        corrected: stats::histogram(),
        service: stats::histogram(),
        lateness: stats::histogram(),
        messages: 0,
        elapsed,
        behind: None,
        cost,
        records: Vec::new(),
    };
    for h in &mut hists {
        out.corrected.add(&h.corrected)?;
        out.service.add(&h.service)?;
        out.lateness.add(&h.lateness)?;
        out.messages += h.sent;
        out.records.push(std::mem::take(&mut h.records));
    }
    out.behind = generator_verdict(&out.lateness, out.messages, total, sched.lateness_budget);
    Ok(out)
}

/// Whether the generator kept its schedule: every scheduled message sent, and the 99th
/// percentile of send lateness within `budget`.
pub fn generator_verdict(
    lateness: &Histogram<u64>,
    sent: u64,
    scheduled: u64,
    budget: Duration,
) -> Option<String> {
    let p99 = Duration::from_nanos(lateness.value_at_quantile(0.99));
    if sent < scheduled {
        Some(format!(
            "the generator sent {sent} of {scheduled} scheduled messages"
        ))
    } else if p99 > budget {
        Some(format!(
            "the generator could not keep the rate: p99 send lateness {:.2} ms over the {:.2} ms budget",
            p99.as_secs_f64() * 1e3,
            budget.as_secs_f64() * 1e3
        ))
    } else {
        None
    }
}

/// Setup: from nothing to the first echo on a fresh session (connect, TLS, protocol handshakes
/// or upgrade, one echo). Returns the time and the open session.
pub async fn setup_open<C: Client>(cfg: &ClientConfig, size: usize) -> Result<(Duration, C)> {
    let t0 = Instant::now();
    let mut client = C::connect(cfg).await.context("connecting")?;
    let mut chans = client.channels();
    let ch = chans
        .first_mut()
        .ok_or_else(|| anyhow!("session has no stream"))?;
    let msg = codec::encode(ch.id(), 0, clock::now_ns(), Kind::Echo, size)?;
    let back = ch.echo(msg.clone()).await.context("first echo")?;
    let took = t0.elapsed();
    if back != msg {
        bail!("first echo came back different");
    }
    drop(chans);
    check_zero_rtt(cfg, &mut client).await?;
    Ok((took, client))
}

/// [`setup_open`], then a graceful close that is not timed.
pub async fn setup_once<C: Client>(cfg: &ClientConfig, size: usize) -> Result<Duration> {
    let (took, client) = setup_open::<C>(cfg, size).await?;
    client.close().await.context("closing the session")?;
    Ok(took)
}

/// Setup measured `n` times in a row. With 0-RTT asked for, an untimed priming session runs
/// before each measured one: a session that closes right after its first echo may close
/// before the server's new session tickets arrive, so resumed sessions cannot be relied on to
/// refill the ticket store.
///
/// Sessions close in the background while the next one is measured (a QUIC endpoint waits
/// out its draining period, about three probe timeouts, mostly idle); all closes are awaited
/// before this returns.
pub async fn setup_many<C: Client>(
    cfg: &ClientConfig,
    size: usize,
    n: u32,
) -> Result<Histogram<u64>> {
    let mut h = stats::histogram();
    let mut closing = Vec::new();
    for i in 0..n {
        if cfg.zero_rtt {
            let p = prime_open::<C>(cfg).await?;
            closing.push(tokio::spawn(p.close()));
        }
        let (d, client) = setup_open::<C>(cfg, size)
            .await
            .with_context(|| format!("setup {i}"))?;
        closing.push(tokio::spawn(client.close()));
        h.record((d.as_nanos() as u64).max(1))?;
    }
    for c in closing {
        c.await
            .context("close task")?
            .context("closing a session")?;
    }
    Ok(h)
}

/// Server-stream goodput: each of the session's streams asks for `count` messages of `size`
/// bytes, all at once, sent as fast as the transport takes them.
#[derive(Debug)]
pub struct StreamRun {
    /// Messages received, over all streams.
    pub messages: u64,
    /// Payload bytes received, over all streams.
    pub bytes: u64,
    /// From the requests to the last message of the last stream.
    pub elapsed: Duration,
    /// Per stream, from the requests to its last message (in the session's stream order).
    pub per_stream: Vec<Duration>,
    /// CPU and socket bytes during the streams.
    pub cost: Option<Cost>,
}

/// Runs one server stream on each of a fresh session's streams (`cfg.streams` of them, on one
/// connection or a pool as `cfg.sharing` says), all started together, and checks every
/// message: a download of `streams × count × size` bytes.
pub async fn stream_goodput<C: Client>(
    cfg: &ClientConfig,
    size: usize,
    count: u32,
    probe: Option<&Probe>,
) -> Result<StreamRun> {
    let mut client = C::connect(cfg).await.context("connecting")?;
    let mut chans = client.channels();
    if chans.is_empty() {
        bail!("session has no stream");
    }
    let req = StreamRequest {
        count,
        size: u32::try_from(size).context("message size")?,
        interval_ms: 0,
    };
    let measuring = probe::measure(probe);
    let t0 = Instant::now();
    let each = futures_util::future::try_join_all(chans.iter_mut().map(|ch| async move {
        let (n, _) = check_stream(ch, req).await?;
        anyhow::Ok((n, t0.elapsed()))
    }))
    .await?;
    let elapsed = t0.elapsed();
    let cost = measuring.finish();
    drop(chans);
    client.close().await.context("closing the session")?;
    let messages = each.iter().map(|(n, _)| n).sum::<u64>();
    Ok(StreamRun {
        messages,
        bytes: messages * size as u64,
        elapsed,
        per_stream: each.into_iter().map(|(_, t)| t).collect(),
        cost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_names_what_went_wrong() {
        let mut h = stats::histogram();
        for _ in 0..1000 {
            h.record(50_000).unwrap(); // 50 us late
        }
        let ms = Duration::from_millis(1);
        assert_eq!(generator_verdict(&h, 1000, 1000, ms), None);
        assert!(generator_verdict(&h, 990, 1000, ms)
            .unwrap()
            .contains("990 of 1000"));
        for _ in 0..100 {
            h.record(5_000_000).unwrap(); // 5 ms late: > 1% of the sends
        }
        assert!(generator_verdict(&h, 1100, 1100, ms)
            .unwrap()
            .contains("could not keep the rate"));
    }
}

/// One datagram-echo measurement (see [`datagram_echo`]).
#[derive(Debug)]
pub struct DatagramEcho {
    /// What became of the datagrams.
    pub tally: wirelab_wt::datagram::Tally,
    /// Round trip of each echo that came back, ns (each datagram is sent once: nothing here
    /// was retransmitted).
    pub rtt: Histogram<u64>,
    /// Per stream tag (`cfg.streams` of them; datagram `n` carries tag `n % streams`), each
    /// echo that came back as (intended send time, latency from it), ns on the harness clock,
    /// in arrival order: what the HOL experiment reads.
    pub records: Vec<Vec<(u64, u64)>>,
    /// From the first send to the last (the schedule, without the wait for stragglers).
    pub elapsed: Duration,
    /// `None` when the generator kept its schedule; otherwise why it did not.
    pub behind: Option<String>,
    /// CPU and socket bytes during the run.
    pub cost: Option<Cost>,
}

/// How long [`datagram_echo`] waits after the last send for echoes still on their way; what
/// has not come back by then is counted lost.
pub const DATAGRAM_STRAGGLE: Duration = Duration::from_secs(1);

/// Datagram echo at a fixed rate on one session of `id` (only `wt` carries datagrams): each
/// datagram is a service message (its sequence number and send time in the header) sent once
/// at its scheduled time; the server sends it back. With `cfg.streams` K above 1, datagram `n`
/// is tagged as stream `n % K` (K logical flows on one session, for the HOL experiment). Echoes are counted as they come (loss,
/// reordering, duplicates: [`wirelab_wt::datagram::Tracker`]) until all are back or
/// [`DATAGRAM_STRAGGLE`] after the last send; a lost datagram never holds the workload up.
pub async fn datagram_echo(
    id: wirelab_core::TransportId,
    cfg: &ClientConfig,
    sched: Schedule,
    probe: Option<&Probe>,
) -> Result<DatagramEcho> {
    use wirelab_core::Transport;
    use wirelab_wt::datagram::Tracker;
    if id != <wirelab_wt::Wt as Transport>::DESCRIPTOR.id {
        bail!("datagram echo: {id} has no datagrams (wt has)");
    }
    if !(sched.rate.is_finite() && sched.rate > 0.0) {
        bail!("datagram rate must be positive, not {}", sched.rate);
    }
    let client = wirelab_wt::WtClient::connect(cfg)
        .await
        .context("connecting")?;
    let d = client.datagrams().context("the session has no datagrams")?;
    let max = d
        .max_size()
        .context("the server does not accept datagrams")?;
    if sched.size > max {
        bail!(
            "{} B datagrams do not fit: at most {max} B on this path",
            sched.size
        );
    }
    let total = sched.messages();
    let tags = u64::from(cfg.streams.max(1));
    let interval_ns = 1e9 / sched.rate;
    // The schedule's origin on both clocks: tokio's for pacing, the harness's for the records.
    let start = tokio::time::Instant::now();
    let start_ns = clock::now_ns();
    let (deadline_tx, mut deadline_rx) = tokio::sync::oneshot::channel::<tokio::time::Instant>();
    let rx = d.clone();
    let receiver = tokio::spawn(async move {
        let mut tracker = Tracker::new(total);
        let mut rtt = stats::histogram();
        let mut records = vec![Vec::new(); tags as usize];
        let mut deadline: Option<tokio::time::Instant> = None;
        while !tracker.complete() {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(m) => {
                        let now = clock::now_ns();
                        // Not a message of ours (or mangled): counted as unknown, not as an echo.
                        let Ok(h) = codec::peek_header(&m) else {
                            tracker.record(u64::MAX);
                            continue;
                        };
                        if tracker.record(h.seq) {
                            let _ = rtt.record(now.saturating_sub(h.sent_ns).max(1));
                            let intended = start_ns + (h.seq as f64 * interval_ns) as u64;
                            records[(h.seq % tags) as usize]
                                .push((intended, now.saturating_sub(intended)));
                        }
                    }
                    Err(_) => break,
                },
                dl = &mut deadline_rx, if deadline.is_none() => match dl {
                    Ok(dl) => deadline = Some(dl),
                    Err(_) => break,
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if deadline.is_some() => break,
            }
        }
        (tracker.tally(), rtt, records)
    });
    let measuring = probe::measure(probe);
    let mut lateness = stats::histogram();
    let mut send_error = None;
    for n in 0..total {
        let due = start + Duration::from_nanos((n as f64 * interval_ns) as u64);
        tokio::time::sleep_until(due).await;
        let late = tokio::time::Instant::now().saturating_duration_since(due);
        let _ = lateness.record((late.as_nanos() as u64).max(1));
        let tag = u32::try_from(n % tags).expect("tags come from a u32");
        let m = codec::encode(tag, n, clock::now_ns(), Kind::Echo, sched.size)?;
        // A datagram the stack cannot take now is simply lost; a session that is gone ends
        // the run.
        if let Err(e) = d.send(&m) {
            send_error = Some(e);
            break;
        }
    }
    let elapsed = start.elapsed();
    let _ = deadline_tx.send(tokio::time::Instant::now() + DATAGRAM_STRAGGLE);
    let (tally, rtt, records) = receiver
        .await
        .map_err(|e| anyhow!("datagram receiver failed: {e}"))?;
    let cost = measuring.finish();
    if let Some(e) = send_error {
        return Err(anyhow!(e)).context("sending datagrams");
    }
    let sent = lateness.len();
    let behind = generator_verdict(&lateness, sent, total, sched.lateness_budget);
    client.close().await.context("closing the session")?;
    Ok(DatagramEcho {
        tally,
        rtt,
        records,
        elapsed,
        behind,
        cost,
    })
}
