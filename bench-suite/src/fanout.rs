//! The fan-out scenario: one publisher, N subscribers of one topic, a fixed publish rate.
//!
//! Each subscriber is its own connection (`pool`: N sessions of one logical stream), or its own
//! stream on one connection (`shared`, for transports that multiplex: h2, h2ws, quic, h3).
//! Every subscriber subscribes and waits for the server's answer before the publisher starts,
//! so every subscriber is owed every message. The publisher, a session of its own, sends
//! message `k` at `start + k / rate` (open loop) stamped with that *intended* time on the shared
//! monotonic clock (client and subscribers live in this process), so a publisher held back by
//! the server (policy `block`) shows as latency rather than hiding it.
//!
//! Measured: the latency of every delivery from the intended send time; per message the
//! slowest subscriber's latency (the time by which everyone had it); deliveries per second;
//! and per subscriber what it missed, whether anything came twice or out of order, and whether
//! it was cut off. A scenario may stall `stalled` subscribers (they stop reading until the
//! publisher is done, or for `stall_ms`) to show what the policy does to a slow subscriber and
//! to everyone else.
//!
//! [`fold`] is the pure part: from every subscriber's record to the figures.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use wirelab_core::codec::{self, Kind, SlowPolicy, Subscribe};
use wirelab_core::{clock, Channel, Client, ClientConfig, Mode, Sharing, TransportId};

use crate::stats::{self, HistData};
use crate::transports::Variant;

/// Sessions opened at once.
const OPEN_AT_ONCE: usize = 64;
/// How long one subscriber may take to connect and have its subscription answered.
const SUBSCRIBE_BOUND: Duration = Duration::from_secs(30);
/// After the publisher is done, how long subscribers may take to receive what is owed.
pub const DRAIN: Duration = Duration::from_secs(10);

/// The transports whose servers push subscriptions (the `fanout` scenario runs on these, in
/// their duplex mode): every one whose server answers `Action::Subscribe` / `Action::Publish`
/// (through `service::serve_messages`, or one `service::spawn_subscription` arm).
pub const PUSH: &[&str] = &["tcp", "ws", "h2", "h2ws", "quic", "h3", "sse", "wt"];

/// Whether `v` can carry the fan-out scenario: a push transport, in its duplex mode.
pub fn can_push(v: &Variant) -> bool {
    v.mode == Mode::Duplex && PUSH.contains(&v.id.as_str())
}

/// Whether the transport multiplexes streams on one connection, so subscribers can also be
/// streams of one connection (`shared`); the others are measured one connection each.
pub fn multiplexes(id: TransportId) -> bool {
    let d = crate::transports::descriptor(id);
    !d.sharings.contains(&Sharing::Pool)
}

/// One fan-out run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Subscribers.
    pub subscribers: usize,
    /// `true`: all subscribers are streams of one connection; `false`: one connection each.
    pub shared: bool,
    /// Messages published per second.
    pub rate: f64,
    /// Messages published.
    pub messages: u64,
    /// Size of each message (at least [`codec::PUBLISH_MIN_LEN`]).
    pub size: usize,
    /// What the server does with a subscriber whose queue is full.
    pub policy: SlowPolicy,
    /// Messages the server queues per (healthy) subscriber.
    pub queue: u32,
    /// Subscribers (the last ones) that stop reading.
    pub stalled: usize,
    /// Their queue.
    pub stalled_queue: u32,
    /// How long they stop reading; `None`: until the publisher is done.
    pub stall: Option<Duration>,
}

/// What one subscriber saw.
#[derive(Debug, Clone, Default)]
pub struct SubRecord {
    /// `(sequence, latency from the intended send time in ns)` of each delivery, in arrival
    /// order.
    pub got: Vec<(u64, u64)>,
    /// Whether it was stalled on purpose.
    pub stalled: bool,
    /// Whether its connection (or stream) ended before it had the last message.
    pub cut: bool,
    /// Why it ended early, if it did.
    pub error: Option<String>,
    /// When its last delivery arrived ([`clock::now_ns`]), 0 if none did.
    pub last_at_ns: u64,
}

/// The figures of one run (pure result of [`fold`]).
#[derive(Debug, Clone)]
pub struct Figures {
    /// Per message, the slowest healthy subscriber's latency (ns), over the messages every
    /// healthy subscriber that was not cut off received.
    pub slowest: Histogram<u64>,
    /// Every delivery's latency (ns), healthy subscribers.
    pub delivery: Histogram<u64>,
    /// Every delivery's latency (ns), stalled subscribers.
    pub stalled_delivery: Histogram<u64>,
    /// Deliveries received, all subscribers.
    pub deliveries: u64,
    /// Deliveries owed: messages × subscribers.
    pub owed: u64,
    /// Owed deliveries that never came (dropped, cut off, or still missing at the deadline),
    /// healthy subscribers.
    pub missed: u64,
    /// The same for stalled subscribers.
    pub stalled_missed: u64,
    /// Deliveries that came twice or out of order (must be 0).
    pub disordered: u64,
    /// Subscribers whose connection or stream ended early.
    pub cut: u64,
    /// Of those, stalled ones.
    pub stalled_cut: u64,
    /// Messages every healthy subscriber received.
    pub complete: u64,
    /// Latest delivery latency over everything (ns): with the publish span, the run's length.
    pub last_ns: u64,
}

/// From every subscriber's record to the figures, for `messages` published.
pub fn fold(messages: u64, subs: &[SubRecord]) -> Result<Figures> {
    let n = usize::try_from(messages).context("message count")?;
    let mut slowest_per: Vec<Option<u64>> = vec![Some(0); n];
    let mut f = Figures {
        slowest: stats::histogram(),
        delivery: stats::histogram(),
        stalled_delivery: stats::histogram(),
        deliveries: 0,
        owed: messages * subs.len() as u64,
        missed: 0,
        stalled_missed: 0,
        disordered: 0,
        cut: 0,
        stalled_cut: 0,
        complete: 0,
        last_ns: 0,
    };
    for s in subs {
        let mut next = 0u64;
        let mut seen: Vec<Option<u64>> = vec![None; n];
        for &(seq, ns) in &s.got {
            f.deliveries += 1;
            f.last_ns = f.last_ns.max(ns);
            if seq < next || seq >= messages {
                f.disordered += 1;
                continue;
            }
            next = seq + 1;
            seen[seq as usize] = Some(ns);
            let h = if s.stalled {
                &mut f.stalled_delivery
            } else {
                &mut f.delivery
            };
            h.record(ns.max(1))?;
        }
        let missing = seen.iter().filter(|x| x.is_none()).count() as u64;
        if s.stalled {
            f.stalled_missed += missing;
            f.stalled_cut += u64::from(s.cut);
        } else {
            f.missed += missing;
            for (i, slot) in slowest_per.iter_mut().enumerate() {
                *slot = match (seen[i], *slot) {
                    (Some(ns), Some(cur)) => Some(cur.max(ns)),
                    _ => None,
                };
            }
        }
        f.cut += u64::from(s.cut);
    }
    if subs.iter().any(|s| !s.stalled) {
        for v in slowest_per.into_iter().flatten() {
            f.slowest.record(v.max(1))?;
            f.complete += 1;
        }
    }
    Ok(f)
}

/// Topics are fresh per run, so a late delivery of an earlier run cannot be counted.
static TOPIC: AtomicU32 = AtomicU32::new(1);

/// What [`run`] measured.
#[derive(Debug)]
pub struct Run {
    /// The figures.
    pub figures: Figures,
    /// Publisher send lateness (actual minus intended), ns.
    pub lateness: Histogram<u64>,
    /// From the first intended send to the last delivery.
    pub elapsed: Duration,
    /// Subscribers' records (for tests).
    pub subs: Vec<SubRecord>,
}

async fn subscribe<Ch: Channel>(ch: &mut Ch, req: Subscribe) -> Result<()> {
    ch.send(req.encode(ch.id(), 0, clock::now_ns()))
        .await
        .context("sending the subscription")?;
    loop {
        let m = ch
            .recv()
            .await
            .context("waiting for the subscription's answer")?;
        let h = codec::peek_header(&m)?;
        if h.kind == Kind::Subscribe {
            return Ok(());
        }
    }
}

/// Waits until the publisher is done (the watch holds its end), then `extra` more.
async fn until_done_plus(done: &mut watch::Receiver<Option<Instant>>, extra: Duration) {
    let at = loop {
        if let Some(at) = *done.borrow_and_update() {
            break at;
        }
        if done.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::time::sleep_until(at + extra).await;
}

async fn receive<Ch: Channel>(
    mut ch: Ch,
    messages: u64,
    stall: Option<Option<Duration>>,
    mut done: watch::Receiver<Option<Instant>>,
) -> (Ch, SubRecord) {
    let mut rec = SubRecord {
        stalled: stall.is_some(),
        got: Vec::with_capacity(messages as usize),
        ..SubRecord::default()
    };
    if let Some(stall) = stall {
        let mut d = done.clone();
        match stall {
            Some(t) => {
                tokio::select! {
                    _ = tokio::time::sleep(t) => {}
                    _ = until_done_plus(&mut d, Duration::ZERO) => {}
                }
            }
            None => until_done_plus(&mut d, Duration::ZERO).await,
        }
    }
    loop {
        let m = tokio::select! {
            m = ch.recv() => m,
            _ = until_done_plus(&mut done, DRAIN) => {
                rec.error = Some("deadline: messages still missing".into());
                break;
            }
        };
        let at = clock::now_ns();
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                rec.cut = true;
                rec.error = Some(e.to_string());
                break;
            }
        };
        let Ok(h) = codec::peek_header(&m) else {
            rec.error = Some("not a wirelab message".into());
            break;
        };
        if h.kind != Kind::Deliver {
            continue;
        }
        rec.got.push((h.seq, at.saturating_sub(h.sent_ns)));
        rec.last_at_ns = at;
        if h.seq + 1 >= messages {
            break;
        }
    }
    (ch, rec)
}

/// Runs one fan-out with transport client `C` against the server `cfg` names.
pub async fn run<C: Client>(cfg: &ClientConfig, spec: &Spec) -> Result<Run> {
    anyhow::ensure!(
        spec.subscribers > 0,
        "fan-out needs at least one subscriber"
    );
    anyhow::ensure!(spec.rate > 0.0, "fan-out needs a rate above 0");
    let topic = TOPIC.fetch_add(1, Ordering::Relaxed);
    let req = |stalled: bool| Subscribe {
        topic,
        policy: spec.policy,
        queue: if stalled {
            spec.stalled_queue
        } else {
            spec.queue
        },
    };
    let n = spec.subscribers;
    let mut sessions: Vec<C> = Vec::new();
    let mut channels: Vec<C::Channel> = Vec::with_capacity(n);
    if spec.shared {
        let mut c = cfg.clone();
        c.streams = u32::try_from(n).context("subscribers")?;
        c.sharing = Sharing::Shared;
        let mut s = tokio::time::timeout(SUBSCRIBE_BOUND, C::connect(&c))
            .await
            .context("connecting the subscribers' session: timed out")?
            .context("connecting the subscribers' session")?;
        channels = s.channels();
        sessions.push(s);
    } else {
        let mut c = cfg.clone();
        c.streams = 1;
        c.sharing = Sharing::Shared;
        let opened: Vec<Result<(C, C::Channel)>> = stream::iter(0..n)
            .map(|i| {
                let c = c.clone();
                async move {
                    let mut s = tokio::time::timeout(SUBSCRIBE_BOUND, C::connect(&c))
                        .await
                        .with_context(|| format!("subscriber {i}: connect timed out"))?
                        .with_context(|| format!("subscriber {i}: connect"))?;
                    let ch = s
                        .channels()
                        .pop()
                        .with_context(|| format!("subscriber {i}: no channel"))?;
                    Ok((s, ch))
                }
            })
            .buffered(OPEN_AT_ONCE)
            .collect()
            .await;
        for r in opened {
            let (s, ch) = r?;
            sessions.push(s);
            channels.push(ch);
        }
    }
    let stalled_from = n.saturating_sub(spec.stalled);
    let subscribed: Vec<Result<C::Channel>> = stream::iter(channels.into_iter().enumerate())
        .map(|(i, mut ch)| {
            let r = req(i >= stalled_from);
            async move {
                tokio::time::timeout(SUBSCRIBE_BOUND, subscribe(&mut ch, r))
                    .await
                    .with_context(|| format!("subscriber {i}: subscribe timed out"))?
                    .with_context(|| format!("subscriber {i}"))?;
                Ok(ch)
            }
        })
        .buffered(OPEN_AT_ONCE)
        .collect()
        .await;
    let (done_tx, done_rx) = watch::channel(None);
    let mut tasks = Vec::with_capacity(n);
    for (i, ch) in subscribed.into_iter().enumerate() {
        let ch = ch?;
        let stall = (i >= stalled_from).then_some(spec.stall);
        tasks.push(tokio::spawn(receive(
            ch,
            spec.messages,
            stall,
            done_rx.clone(),
        )));
    }

    // The publisher: a session of its own, open loop from intended send times.
    let mut pc = cfg.clone();
    pc.streams = 1;
    pc.sharing = Sharing::Shared;
    let mut publisher = C::connect(&pc).await.context("connecting the publisher")?;
    let mut pch = publisher
        .channels()
        .pop()
        .context("the publisher has no channel")?;
    let mut lateness = stats::histogram();
    let interval_ns = 1e9 / spec.rate;
    // A dedicated thread releases message k at start + k / rate with high-resolution sleeps
    // (tokio's timer has 1 ms granularity, which would add up to 1 ms to every latency), as
    // the open-loop generator does.
    let (tick_tx, mut ticks) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    let messages = spec.messages;
    let start = std::time::Instant::now();
    let start_ns = clock::now_ns();
    let ticker = std::thread::Builder::new()
        .name("wl-ticker".into())
        .spawn(move || {
            for k in 0..messages {
                let offset = (k as f64 * interval_ns) as u64;
                let due = start + Duration::from_nanos(offset);
                let now = std::time::Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if tick_tx.send((k, start_ns + offset)).is_err() {
                    return;
                }
            }
        })
        .context("starting the ticker thread")?;
    let mut publish_error = None;
    while let Some((k, intended)) = ticks.recv().await {
        let msg = codec::publish(pch.id(), k, intended, topic, spec.size)?;
        lateness.record(clock::now_ns().saturating_sub(intended).max(1))?;
        if let Err(e) = pch.send(msg).await {
            publish_error = Some(format!("publishing message {k}: {e}"));
            break;
        }
    }
    drop(ticks);
    let _ = ticker.join();
    let _ = done_tx.send(Some(Instant::now()));
    let mut subs = Vec::with_capacity(n);
    let mut chans = Vec::with_capacity(n);
    for t in tasks {
        let (ch, rec) = t.await.context("a subscriber task failed")?;
        chans.push(ch);
        subs.push(rec);
    }
    if let Some(e) = publish_error {
        anyhow::bail!(e);
    }
    drop(pch);
    drop(chans);
    let _ = tokio::time::timeout(Duration::from_secs(5), publisher.close()).await;
    stream::iter(sessions)
        .for_each_concurrent(OPEN_AT_ONCE, |s| async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.close()).await;
        })
        .await;
    let figures = fold(spec.messages, &subs)?;
    let last_at = subs.iter().map(|s| s.last_at_ns).max().unwrap_or(0);
    let elapsed = Duration::from_nanos(last_at.saturating_sub(start_ns));
    Ok(Run {
        figures,
        lateness,
        elapsed,
        subs,
    })
}

/// The [`Spec`] a fan-out scenario describes.
pub fn spec_of(s: &crate::scenario::Scenario) -> Result<Spec> {
    let policy = s.slow_policy().map_err(anyhow::Error::msg)?;
    let queue = if s.queue == 0 {
        crate::scenario::DEFAULT_QUEUE
    } else {
        s.queue
    };
    let queue = u32::try_from(queue).context("queue")?;
    Ok(Spec {
        subscribers: usize::try_from(s.subscribers).context("subscribers")?,
        shared: s.sharing == crate::scenario::SharingName::Shared,
        rate: s.rate,
        messages: ((s.rate * s.duration_ms as f64 / 1000.0).round() as u64).max(1),
        size: s.size_bytes(),
        policy,
        queue,
        stalled: usize::try_from(s.stalled).context("stalled")?,
        stalled_queue: queue,
        stall: (s.stall_ms > 0).then(|| Duration::from_millis(s.stall_ms)),
    })
}

/// One repetition of fan-out scenario `s` on variant `v`, against the server `cfg` names;
/// `hub` is the server's hub when it runs in this process (its counters are recorded).
pub async fn one_rep(
    s: &crate::scenario::Scenario,
    v: &Variant,
    mut cfg: ClientConfig,
    hub: Option<&wirelab_core::fanout::Hub>,
) -> Result<crate::results::Rep> {
    let spec = spec_of(s)?;
    cfg.mode = v.mode;
    cfg.wire = None;
    raise_nofile(fds_per_subscriber(v.id) * spec.subscribers as u64 + 1024)?;
    let before = hub.map(wirelab_core::fanout::Hub::stats);
    let r = crate::with_client!(v.id, C => run::<C>(&cfg, &spec).await)?;
    let server = match (hub, before) {
        (Some(h), Some(b)) => Some(ServerCounts::between(b, h.stats())),
        _ => None,
    };
    Ok(rep_of(
        &spec,
        &r.figures,
        Some(&r.lateness),
        r.elapsed,
        server,
    ))
}

/// One repetition's record from a fan-out run's figures: the Rust client's, or a browser's
/// (which has no publisher schedule to keep, so no `lateness`).
pub fn rep_of(
    spec: &Spec,
    figures: &Figures,
    lateness: Option<&Histogram<u64>>,
    elapsed: Duration,
    server: Option<ServerCounts>,
) -> crate::results::Rep {
    crate::results::Rep {
        messages: figures.deliveries,
        elapsed_s: elapsed.as_secs_f64(),
        payload_bytes: figures.deliveries * spec.size as u64,
        latency: (!figures.slowest.is_empty()).then(|| HistData::from_histogram(&figures.slowest)),
        lateness: lateness.map(HistData::from_histogram),
        offered_per_s: Some(spec.rate),
        // Under `block` a late publisher is the policy at work, and it is in the latency.
        behind: lateness.and_then(|l| {
            crate::workload::generator_verdict(
                l,
                l.len(),
                spec.messages,
                crate::runner::LATENESS_BUDGET,
            )
            .map(|w| format!("publisher: {w}"))
        }),
        fanout: Some(FanoutRep {
            subscribers: spec.subscribers as u64,
            stalled: spec.stalled as u64,
            published: spec.messages,
            owed: figures.owed,
            deliveries: figures.deliveries,
            missed: figures.missed,
            stalled_missed: figures.stalled_missed,
            disordered: figures.disordered,
            cut: figures.cut,
            stalled_cut: figures.stalled_cut,
            delivery: Some(HistData::from_histogram(&figures.delivery)),
            stalled_delivery: (!figures.stalled_delivery.is_empty())
                .then(|| HistData::from_histogram(&figures.stalled_delivery)),
            server,
        }),
        ..crate::results::Rep::default()
    }
}

/// Descriptors one subscriber costs this process (client and in-process server together):
/// a connection's two ends; sse's event stream and the connection its POSTs use.
fn fds_per_subscriber(id: TransportId) -> u64 {
    if id.as_str() == "sse" {
        4
    } else {
        2
    }
}

/// Raises the soft open-file limit to `need`, and the hard one too where the process may (root);
/// otherwise fails saying how.
fn raise_nofile(need: u64) -> Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current.unwrap_or(u64::MAX) >= need {
        return Ok(());
    }
    let max = l.maximum.unwrap_or(u64::MAX);
    if max < need {
        let mut raised = l;
        raised.current = Some(need);
        raised.maximum = Some(need);
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return Ok(());
        }
        anyhow::bail!(
            "this fan-out needs {need} open files, and the hard limit is {max}: raise it \
             (e.g. `ulimit -Hn {need}` as root, or LimitNOFILE in a service unit)"
        );
    }
    l.current = Some(need);
    setrlimit(Resource::Nofile, l).context("raising the open-file limit")?;
    Ok(())
}

/// Fan-out figures of one repetition, as result files keep them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FanoutRep {
    /// Subscribers.
    pub subscribers: u64,
    /// Of those, stalled on purpose.
    pub stalled: u64,
    /// Messages published.
    pub published: u64,
    /// Deliveries owed (messages × subscribers).
    pub owed: u64,
    /// Deliveries received.
    pub deliveries: u64,
    /// Owed deliveries healthy subscribers never got.
    pub missed: u64,
    /// Owed deliveries stalled subscribers never got.
    pub stalled_missed: u64,
    /// Deliveries that came twice or out of order.
    pub disordered: u64,
    /// Subscribers cut off (connection or stream ended early).
    pub cut: u64,
    /// Of those, stalled ones.
    pub stalled_cut: u64,
    /// Every delivery's latency to healthy subscribers, ns.
    pub delivery: Option<HistData>,
    /// Every delivery's latency to stalled subscribers, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_delivery: Option<HistData>,
    /// The server hub's counters for the repetition (in-process servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerCounts>,
}

/// What the server's hub counted during one repetition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCounts {
    /// Deliveries queued.
    pub queued: u64,
    /// Frames encoded (one per distinct subscriber stream id per publish).
    pub encoded: u64,
    /// Deliveries dropped (drop-oldest).
    pub dropped: u64,
    /// Subscribers cut off (disconnect).
    pub disconnected: u64,
    /// Publishes that waited for a full queue (block).
    pub blocked: u64,
}

impl ServerCounts {
    /// The difference `after - before` of two hub snapshots.
    pub fn between(
        before: wirelab_core::fanout::HubStats,
        after: wirelab_core::fanout::HubStats,
    ) -> Self {
        Self {
            queued: after.queued - before.queued.min(after.queued),
            encoded: after.encoded - before.encoded.min(after.encoded),
            dropped: after.dropped - before.dropped.min(after.dropped),
            disconnected: after.disconnected - before.disconnected.min(after.disconnected),
            blocked: after.blocked - before.blocked.min(after.blocked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(got: &[(u64, u64)], stalled: bool, cut: bool) -> SubRecord {
        SubRecord {
            got: got.to_vec(),
            stalled,
            cut,
            error: None,
            last_at_ns: 0,
        }
    }

    #[test]
    fn slowest_subscriber_per_message() {
        let subs = [
            rec(&[(0, 10_000), (1, 20_000), (2, 30_000)], false, false),
            rec(&[(0, 15_000), (1, 5_000), (2, 40_000)], false, false),
        ];
        let f = fold(3, &subs).unwrap();
        assert_eq!((f.deliveries, f.owed, f.missed, f.disordered), (6, 6, 0, 0));
        assert_eq!(f.complete, 3);
        // Slowest per message: 15, 20, 40 µs.
        assert_eq!(f.slowest.len(), 3);
        assert!((f.slowest.max() as i64 - 40_000).abs() < 100);
        assert!((f.slowest.min() as i64 - 15_000).abs() < 100);
        assert_eq!(f.delivery.len(), 6);
    }

    #[test]
    fn gaps_duplicates_and_stalled_subscribers() {
        let subs = [
            // A gap (1 missing) and a duplicate of 2.
            rec(&[(0, 1), (2, 1), (2, 1), (3, 1)], false, false),
            rec(&[(0, 1), (1, 1), (2, 1), (3, 1)], false, false),
            // Stalled, cut off after message 0.
            rec(&[(0, 9_000_000)], true, true),
        ];
        let f = fold(4, &subs).unwrap();
        assert_eq!(f.missed, 1);
        assert_eq!(f.disordered, 1);
        assert_eq!((f.stalled_missed, f.stalled_cut, f.cut), (3, 1, 1));
        // Message 1 did not reach every healthy subscriber: 3 complete.
        assert_eq!(f.complete, 3);
        assert_eq!(f.stalled_delivery.len(), 1);
        // The stalled subscriber's latency is not in the slowest-healthy figure.
        assert!(f.slowest.max() < 1000);
    }

    #[test]
    fn server_counts_are_differences() {
        let a = wirelab_core::fanout::HubStats {
            queued: 5,
            dropped: 1,
            ..Default::default()
        };
        let b = wirelab_core::fanout::HubStats {
            queued: 15,
            dropped: 4,
            ..Default::default()
        };
        let d = ServerCounts::between(a, b);
        assert_eq!((d.queued, d.dropped), (10, 3));
    }
}
