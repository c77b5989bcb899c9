//! Resumable server streams: offsets, an epoch, a bounded replay buffer, and an explicit answer
//! when a resume cannot be honoured. The same protocol on every transport that serves the
//! contract through [`crate::service::serve_messages`].
//!
//! The bookkeeping is pure and unit-tested without sockets or clocks: [`ReplayBuffer`] (the
//! server's window), [`decide`] (the server's verdict on a [`Resume`]), [`Dedup`] (the client's
//! view of what it already processed) and [`backoff`] (the client's reconnection delay). The
//! server's [`Registry`] ties them to tokio: one producer task per stream that keeps producing
//! while no connection is attached, and one attachment per connection that replays from the
//! asked offset and then follows live.
//!
//! A server restart loses its registry (it lives in the process), and the new process has a new
//! epoch, so a client that resumes against it is told [`ResumeStatus::EpochChanged`]: an
//! explicit failure, never a silent gap.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::codec::{self, Kind, Resume, ResumeAnswer, ResumeStatus, StreamRequest};

/// Messages a server keeps per resumable stream (its replay window), at most.
pub const WINDOW: usize = 1024;
/// Bytes a server keeps per resumable stream, at most: a stream of large messages keeps fewer
/// than [`WINDOW`] of them ([`Limits::window_for`]).
pub const WINDOW_BYTES: usize = 1 << 20;
/// Bytes a server keeps for all its resumable streams together, at most.
pub const SERVER_BYTES: usize = 64 << 20;
/// Resumable streams a server keeps at once; the oldest is forgotten beyond this.
pub const MAX_STREAMS: usize = 1024;

/// How much a server's [`Registry`] keeps: its memory for replay is bounded by
/// `min(server_bytes, streams * stream_bytes)` whatever clients ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages kept per stream.
    pub messages: usize,
    /// Bytes kept per stream (at least one message is always kept).
    pub stream_bytes: usize,
    /// Bytes reserved for all streams together: a new stream that does not fit makes the
    /// server forget its oldest streams (a client resuming one of them is told
    /// [`ResumeStatus::Unknown`]).
    pub server_bytes: usize,
    /// Streams kept at once.
    pub streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            messages: WINDOW,
            stream_bytes: WINDOW_BYTES,
            server_bytes: SERVER_BYTES,
            streams: MAX_STREAMS,
        }
    }
}

impl Limits {
    /// The replay window, in messages, of a stream of `size`-byte messages (pure): what a
    /// client can count on to come back after a break.
    pub fn window_for(&self, size: usize) -> usize {
        let size = size.max(codec::HEADER_LEN);
        self.messages.min(self.stream_bytes / size).max(1)
    }

    /// The bytes a stream of `count` messages of `size` bytes reserves (pure).
    fn reservation(&self, count: u32, size: usize) -> usize {
        let size = size.max(codec::HEADER_LEN);
        let kept = self.window_for(size).min(count as usize).max(1);
        kept.saturating_mul(size)
    }
}

/// The last `cap` messages, and at most `cap_bytes` bytes, of a stream, by offset.
#[derive(Debug, Clone)]
pub struct ReplayBuffer {
    cap: usize,
    cap_bytes: usize,
    bytes: usize,
    /// Offset of `items[0]`.
    oldest: u64,
    items: VecDeque<Bytes>,
}

impl ReplayBuffer {
    /// An empty buffer keeping at most `cap` messages (at least 1) with no byte bound.
    pub fn new(cap: usize) -> Self {
        Self::bounded(cap, usize::MAX)
    }

    /// An empty buffer keeping at most `cap` messages and `cap_bytes` bytes; the newest
    /// message is always kept, whatever its size.
    pub fn bounded(cap: usize, cap_bytes: usize) -> Self {
        Self {
            cap: cap.max(1),
            cap_bytes,
            bytes: 0,
            oldest: 0,
            items: VecDeque::new(),
        }
    }

    /// Appends the next message; returns its offset. The oldest are dropped beyond the caps.
    pub fn push(&mut self, msg: Bytes) -> u64 {
        let offset = self.next();
        self.bytes += msg.len();
        self.items.push_back(msg);
        while self.items.len() > self.cap || (self.bytes > self.cap_bytes && self.items.len() > 1) {
            if let Some(old) = self.items.pop_front() {
                self.bytes -= old.len();
                self.oldest += 1;
            }
        }
        offset
    }

    /// The bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops every kept message (the offsets stay where they are).
    fn clear(&mut self) {
        self.oldest = self.next();
        self.items.clear();
        self.bytes = 0;
    }

    /// The offset the next message will get.
    pub fn next(&self) -> u64 {
        self.oldest + self.items.len() as u64
    }

    /// The oldest offset still kept.
    pub fn oldest(&self) -> u64 {
        self.oldest
    }

    /// The message at `offset`: `Ok(None)` if it is not produced yet, `Err(oldest)` if it has
    /// left the window.
    pub fn get(&self, offset: u64) -> Result<Option<Bytes>, u64> {
        if offset < self.oldest {
            return Err(self.oldest);
        }
        Ok(self.items.get((offset - self.oldest) as usize).cloned())
    }
}

/// What the server knows of a stream a [`Resume`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Its oldest kept offset.
    pub oldest: u64,
    /// The offset its next message will get.
    pub next: u64,
}

/// The server's verdict on a resume request (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A new stream (the request's epoch is 0).
    Fresh,
    /// Replay from `from`, then live.
    Replay {
        /// The first offset sent.
        from: u64,
    },
    /// Cannot: say so.
    Refuse(ResumeStatus),
}

/// Decides a [`Resume`] against the server's `epoch` and what it knows of the token (pure).
pub fn decide(server_epoch: u64, req: &Resume, known: Option<Known>) -> Verdict {
    if req.epoch == 0 {
        return Verdict::Fresh;
    }
    if req.epoch != server_epoch {
        return Verdict::Refuse(ResumeStatus::EpochChanged);
    }
    match known {
        None => Verdict::Refuse(ResumeStatus::Unknown),
        Some(k) if req.offset < k.oldest => Verdict::Refuse(ResumeStatus::OutsideWindow),
        // An offset past what was produced is a client error; replay from what exists is
        // not possible either: refuse rather than skip.
        Some(k) if req.offset > k.next => Verdict::Refuse(ResumeStatus::OutsideWindow),
        Some(_) => Verdict::Replay { from: req.offset },
    }
}

/// What a client makes of one received offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next one: process it.
    New,
    /// Already processed (a replay overlapping what arrived before the break): drop it.
    Duplicate,
    /// Offsets `from..offset` never came: a gap (must not happen inside the window).
    Gap {
        /// The first missing offset.
        from: u64,
    },
}

/// The client's record of what it processed: the offset it needs next (pure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dedup {
    next: u64,
}

impl Dedup {
    /// The first offset not yet processed: what a resume presents.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Classifies `offset` and advances past it unless it is a duplicate.
    pub fn accept(&mut self, offset: u64) -> Seen {
        if offset < self.next {
            return Seen::Duplicate;
        }
        let from = self.next;
        self.next = offset + 1;
        if offset == from {
            Seen::New
        } else {
            Seen::Gap { from }
        }
    }
}

/// The delay before reconnection attempt `attempt` (0 first): "full jitter" exponential
/// backoff, uniform in `[0, min(max, base * 2^attempt)]`, with `unit` a uniform draw in
/// `[0, 1)` supplied by the caller (pure).
pub fn backoff(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let cap = base
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    cap.mul_f64(unit.clamp(0.0, 1.0))
}

/// One resumable stream on the server.
#[derive(Debug)]
struct Produced {
    buf: Mutex<ReplayBuffer>,
    /// The next offset, and whether the stream is complete; changes wake attachments.
    progress: watch::Sender<(u64, bool)>,
    plan: StreamRequest,
    /// Bumped by every attachment; an attachment that sees a newer one stops.
    generation: std::sync::atomic::AtomicU64,
    /// Set when the registry forgets this stream to make room: attachments then say
    /// [`ResumeStatus::Unknown`] and stop.
    forgotten: std::sync::atomic::AtomicBool,
    /// Stops this stream's producer (a child of the server's stop).
    cancel: tokio_util::sync::CancellationToken,
    /// The bytes this stream reserved of the server's budget.
    reserved: usize,
}

impl Produced {
    /// Forgets the stream: its producer stops, its window is freed, attachments are woken.
    fn forget(&self) {
        self.forgotten
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel.cancel();
        lock(&self.buf).clear();
        self.progress.send_modify(|_| {});
    }
}

/// A server's resumable streams (one per server; clones share it).
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

#[derive(Debug)]
struct RegistryInner {
    epoch: u64,
    limits: Limits,
    streams: Mutex<Streams>,
}

/// The streams by token, the tokens in creation order (the oldest is forgotten first), and
/// the bytes they reserved.
#[derive(Debug, Default)]
struct Streams {
    map: HashMap<u64, Arc<Produced>>,
    order: VecDeque<u64>,
    reserved: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Self::with_limits(Limits::default())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// A registry with a fresh epoch (non-zero, different for every process and registry) and
    /// a replay window of `window` messages per stream (the other [`Limits`] as default).
    pub fn new(window: usize) -> Self {
        Self::with_limits(Limits {
            messages: window,
            ..Limits::default()
        })
    }

    /// A registry with a fresh epoch and these limits.
    pub fn with_limits(limits: Limits) -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded per process from the OS; mix in the time and the pid.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(crate::clock::now_ns());
        h.write_u32(std::process::id());
        Self {
            inner: Arc::new(RegistryInner {
                epoch: h.finish().max(1),
                limits: Limits {
                    messages: limits.messages.max(1),
                    streams: limits.streams.max(1),
                    ..limits
                },
                streams: Mutex::new(Streams::default()),
            }),
        }
    }

    /// This server's epoch.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// What this registry keeps.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The bytes its streams reserved (at most [`Limits::server_bytes`], unless one stream's
    /// window alone is larger) and the bytes their windows hold now.
    pub fn usage(&self) -> (usize, usize) {
        let g = lock(&self.inner.streams);
        let held = g.map.values().map(|p| lock(&p.buf).bytes()).sum();
        (g.reserved, held)
    }

    fn known(&self, token: u64) -> Option<(Arc<Produced>, Known)> {
        let p = lock(&self.inner.streams).map.get(&token).cloned()?;
        let k = {
            let b = lock(&p.buf);
            Known {
                oldest: b.oldest(),
                next: b.next(),
            }
        };
        Some((p, k))
    }

    /// Starts producing a new stream for `token` (replacing any earlier one of that token):
    /// `plan.count` messages, one every `plan.interval_ms`, into the replay buffer, whether a
    /// connection is attached or not. The producer stops at `stop`.
    fn create(
        &self,
        token: u64,
        plan: StreamRequest,
        stop: tokio_util::sync::CancellationToken,
    ) -> Arc<Produced> {
        let limits = self.inner.limits;
        let size = (plan.size as usize).max(codec::HEADER_LEN);
        let p = Arc::new(Produced {
            buf: Mutex::new(ReplayBuffer::bounded(
                limits.window_for(size),
                limits.stream_bytes,
            )),
            progress: watch::channel((0, false)).0,
            plan,
            generation: Default::default(),
            forgotten: Default::default(),
            cancel: stop.child_token(),
            reserved: limits.reservation(plan.count, size),
        });
        let mut dropped = Vec::new();
        {
            let mut g = lock(&self.inner.streams);
            let g = &mut *g;
            if let Some(old) = g.map.remove(&token) {
                g.order.retain(|t| *t != token);
                g.reserved -= old.reserved;
                dropped.push(old);
            }
            // Make room: forget the oldest streams until this one fits.
            while !g.order.is_empty()
                && (g.order.len() + 1 > limits.streams
                    || g.reserved + p.reserved > limits.server_bytes)
            {
                if let Some(old) = g.order.pop_front().and_then(|t| g.map.remove(&t)) {
                    g.reserved -= old.reserved;
                    dropped.push(old);
                }
            }
            g.map.insert(token, p.clone());
            g.order.push_back(token);
            g.reserved += p.reserved;
        }
        for old in dropped {
            old.forget();
        }
        let producer = p.clone();
        let stop = p.cancel.clone();
        tokio::spawn(async move {
            let interval = Duration::from_millis(u64::from(plan.interval_ms));
            let start = tokio::time::Instant::now();
            for seq in 0..plan.count {
                if !interval.is_zero() && seq > 0 {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep_until(start + interval * seq) => {}
                    }
                } else if stop.is_cancelled() {
                    return;
                } else if seq % 64 == 63 {
                    // An unpaced stream must not hold a runtime worker for its whole length.
                    tokio::task::yield_now().await;
                }
                let msg = codec::encode(
                    0,
                    u64::from(seq),
                    crate::clock::now_ns(),
                    Kind::StreamData,
                    plan.size as usize,
                )
                .unwrap_or_default();
                let next = lock(&producer.buf).push(msg) + 1;
                producer
                    .progress
                    .send_replace((next, seq + 1 == plan.count));
            }
            if plan.count == 0 {
                producer.progress.send_replace((0, true));
            }
        });
        p
    }

    /// Answers `req` (received on logical stream `id`) and, unless refused, sends the stream
    /// through `sink` from the asked offset: replayed messages first, then live ones as they
    /// are produced, then the end marker. Returns when the stream is complete, the sink fails,
    /// a newer attachment of the same token took over, or the attachment fell out of the window
    /// (it is then told so). `stop` ends the stream's producer when this server shuts down.
    pub async fn attach<F, Fut, E>(
        &self,
        id: u32,
        req: Resume,
        stop: tokio_util::sync::CancellationToken,
        mut sink: F,
    ) -> Result<(), E>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        let epoch = self.epoch();
        let known = self.known(req.token);
        let verdict = decide(epoch, &req, known.as_ref().map(|(_, k)| *k));
        let answer = |status, from, oldest| {
            ResumeAnswer {
                epoch,
                from,
                oldest,
                status,
            }
            .encode(id, crate::clock::now_ns())
        };
        let (p, mut at) = match verdict {
            Verdict::Refuse(status) => {
                let oldest = known.map_or(0, |(_, k)| k.oldest);
                return sink(answer(status, req.offset, oldest)).await;
            }
            Verdict::Fresh => (self.create(req.token, req.stream, stop), 0),
            Verdict::Replay { from } => match known {
                Some((p, _)) => (p, from),
                None => return sink(answer(ResumeStatus::Unknown, req.offset, 0)).await,
            },
        };
        let me = p
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let oldest = lock(&p.buf).oldest();
        sink(answer(ResumeStatus::Ok, at, oldest)).await?;
        let mut progress = p.progress.subscribe();
        let stamp = |m: Bytes| -> Bytes {
            // The producer encodes for logical stream 0; this connection may use another id.
            if id == 0 {
                return m;
            }
            let mut v = m.to_vec();
            v[4..8].copy_from_slice(&id.to_be_bytes());
            Bytes::from(v)
        };
        loop {
            if p.generation.load(std::sync::atomic::Ordering::SeqCst) != me {
                return Ok(());
            }
            if p.forgotten.load(std::sync::atomic::Ordering::SeqCst) {
                // Forgotten to make room for newer streams: say so rather than stall.
                return sink(answer(ResumeStatus::Unknown, at, 0)).await;
            }
            let got = lock(&p.buf).get(at);
            match got {
                Ok(Some(m)) => {
                    sink(stamp(m)).await?;
                    at += 1;
                }
                Ok(None) => {
                    let (next, done) = *progress.borrow_and_update();
                    if done && at >= next {
                        let end = codec::encode(
                            id,
                            u64::from(p.plan.count),
                            crate::clock::now_ns(),
                            Kind::StreamEnd,
                            codec::HEADER_LEN,
                        )
                        .unwrap_or_default();
                        return sink(end).await;
                    }
                    if at < next {
                        continue;
                    }
                    if progress.changed().await.is_err() {
                        return Ok(());
                    }
                }
                Err(oldest) => {
                    // This reader fell behind the window while attached.
                    return sink(answer(ResumeStatus::OutsideWindow, at, oldest)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u64) -> Bytes {
        Bytes::from(i.to_be_bytes().to_vec())
    }

    #[test]
    fn the_buffer_keeps_the_last_cap_messages() {
        let mut b = ReplayBuffer::new(3);
        for i in 0..5 {
            assert_eq!(b.push(msg(i)), i);
        }
        assert_eq!((b.oldest(), b.next()), (2, 5));
        assert_eq!(b.get(1), Err(2));
        assert_eq!(b.get(2), Ok(Some(msg(2))));
        assert_eq!(b.get(4), Ok(Some(msg(4))));
        assert_eq!(b.get(5), Ok(None));
    }

    #[test]
    fn the_buffer_keeps_at_most_cap_bytes_but_always_the_newest() {
        let mut b = ReplayBuffer::bounded(100, 20);
        for i in 0..5 {
            b.push(msg(i));
        }
        // 8-byte messages, 20 bytes: the last two.
        assert_eq!((b.oldest(), b.next(), b.bytes()), (3, 5, 16));
        b.push(Bytes::from(vec![0u8; 64]));
        assert_eq!((b.oldest(), b.next(), b.bytes()), (5, 6, 64));
        let l = Limits {
            messages: 1024,
            stream_bytes: 64 * 1024,
            ..Limits::default()
        };
        assert_eq!(l.window_for(64), 1024);
        assert_eq!(l.window_for(1024), 64);
        assert_eq!(l.window_for(1 << 20), 1);
        assert_eq!(l.window_for(0), 1024, "a message is never under the header");
        assert_eq!(l.reservation(10, 64), 640);
        assert_eq!(l.reservation(u32::MAX, 1024), 64 * 1024);
    }

    /// However many large streams clients ask for, the server's replay memory stays inside its
    /// budget; the streams forgotten to make room answer `Unknown`, explicitly.
    #[tokio::test]
    async fn the_server_budget_forgets_the_oldest_streams_explicitly() {
        let stop = tokio_util::sync::CancellationToken::new();
        let limits = Limits {
            messages: 1024,
            stream_bytes: 8 * 1024,
            server_bytes: 20 * 1024,
            streams: 1024,
        };
        let reg = Registry::with_limits(limits);
        let plan = StreamRequest {
            count: 100,
            size: 1024,
            interval_ms: 0,
        };
        let mut made = Vec::new();
        for token in 1..=5u64 {
            let p = reg.create(token, plan, stop.clone());
            p.progress
                .subscribe()
                .wait_for(|(_, done)| *done)
                .await
                .unwrap();
            made.push(p);
            let (reserved, held) = reg.usage();
            assert!(reserved <= limits.server_bytes, "{reserved}");
            assert!(held <= reserved, "{held} > {reserved}");
        }
        // 8 KiB each in 20 KiB: the two newest are kept, the three oldest forgotten and freed.
        assert_eq!(reg.usage(), (16 * 1024, 16 * 1024));
        for (i, p) in made.iter().enumerate() {
            let forgotten = p.forgotten.load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!(forgotten, i < 3, "stream {}", i + 1);
        }
        for (token, status) in [(1, ResumeStatus::Unknown), (5, ResumeStatus::Ok)] {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let send = |m| {
                let tx = tx.clone();
                async move { tx.send(m).map_err(|_| ()) }
            };
            let req = Resume {
                token,
                epoch: reg.epoch(),
                offset: 95,
                stream: plan,
            };
            reg.attach(0, req, stop.clone(), send).await.unwrap();
            let m = rx.try_recv().unwrap();
            assert_eq!(ResumeAnswer::decode(&m).unwrap().status, status);
        }

        // An attachment whose stream is forgotten while it waits is told so, not left waiting.
        let slow = StreamRequest {
            count: 1000,
            size: 1024,
            interval_ms: 3_600_000,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let send = move |m| {
            let tx = tx.clone();
            async move { tx.send(m).map_err(|_| ()) }
        };
        let fresh = Resume {
            token: 50,
            epoch: 0,
            offset: 0,
            stream: slow,
        };
        let r = reg.clone();
        let s = stop.clone();
        let attached = tokio::spawn(async move { r.attach(0, fresh, s, send).await });
        // The answer and the first message arrive; then three newer streams push it out.
        let mut kinds = Vec::new();
        while kinds.len() < 2 {
            let m = rx.recv().await.unwrap();
            kinds.push(codec::decode(&m, 1 << 20).unwrap().kind);
        }
        for token in 60..63 {
            reg.create(token, plan, stop.clone());
        }
        tokio::time::timeout(Duration::from_secs(10), attached)
            .await
            .expect("the attachment ends")
            .unwrap()
            .unwrap();
        let last = rx.recv().await.unwrap();
        assert_eq!(
            ResumeAnswer::decode(&last).unwrap().status,
            ResumeStatus::Unknown
        );
        assert_eq!(kinds, vec![Kind::ResumeAnswer, Kind::StreamData]);
    }

    #[test]
    fn verdicts() {
        let req = |epoch, offset| Resume {
            token: 1,
            epoch,
            offset,
            stream: StreamRequest {
                count: 10,
                size: 64,
                interval_ms: 0,
            },
        };
        let k = Some(Known {
            oldest: 100,
            next: 200,
        });
        assert_eq!(decide(7, &req(0, 0), None), Verdict::Fresh);
        assert_eq!(
            decide(7, &req(6, 150), k),
            Verdict::Refuse(ResumeStatus::EpochChanged)
        );
        assert_eq!(
            decide(7, &req(7, 150), None),
            Verdict::Refuse(ResumeStatus::Unknown)
        );
        assert_eq!(
            decide(7, &req(7, 99), k),
            Verdict::Refuse(ResumeStatus::OutsideWindow)
        );
        assert_eq!(decide(7, &req(7, 100), k), Verdict::Replay { from: 100 });
        assert_eq!(decide(7, &req(7, 200), k), Verdict::Replay { from: 200 });
        assert_eq!(
            decide(7, &req(7, 201), k),
            Verdict::Refuse(ResumeStatus::OutsideWindow)
        );
    }

    #[test]
    fn dedup_drops_replayed_duplicates_and_reports_gaps() {
        let mut d = Dedup::default();
        assert_eq!(d.accept(0), Seen::New);
        assert_eq!(d.accept(1), Seen::New);
        assert_eq!(d.next(), 2);
        assert_eq!(d.accept(1), Seen::Duplicate);
        assert_eq!(d.accept(0), Seen::Duplicate);
        assert_eq!(d.accept(2), Seen::New);
        assert_eq!(d.accept(5), Seen::Gap { from: 3 });
        assert_eq!(d.next(), 6);
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let base = Duration::from_millis(10);
        let max = Duration::from_secs(1);
        assert_eq!(backoff(0, base, max, 0.0), Duration::ZERO);
        assert_eq!(backoff(0, base, max, 0.5), Duration::from_millis(5));
        assert_eq!(backoff(3, base, max, 0.5), Duration::from_millis(40));
        assert_eq!(backoff(10, base, max, 1.0), max);
        assert_eq!(backoff(200, base, max, 1.0), max);
        assert_eq!(backoff(2, base, max, 7.0), Duration::from_millis(40));
    }

    async fn collect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> Vec<(Kind, u64)> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            let h = codec::decode(&m, 1 << 20).unwrap();
            out.push((h.kind, h.seq));
        }
        out
    }

    /// A fresh stream is answered, then sent whole; a stream produced while no connection is
    /// attached is replayed from the asked offset; outside the window, under another epoch,
    /// or for an unknown token, the answer says so and nothing follows.
    #[tokio::test]
    async fn attach_replays_from_the_offset_and_refuses_explicitly() {
        let stop = tokio_util::sync::CancellationToken::new();
        let plan = StreamRequest {
            count: 6,
            size: 40,
            interval_ms: 0,
        };
        let fresh = Resume {
            token: 9,
            epoch: 0,
            offset: 0,
            stream: plan,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let send = |m| {
            let tx = tx.clone();
            async move { tx.send(m).map_err(|_| ()) }
        };
        let roomy = Registry::new(16);
        roomy.attach(0, fresh, stop.clone(), send).await.unwrap();
        let got = collect(&mut rx).await;
        assert_eq!(got[0].0, Kind::ResumeAnswer);
        let data: Vec<u64> = got
            .iter()
            .filter(|(k, _)| *k == Kind::StreamData)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(data, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(got.last().unwrap(), &(Kind::StreamEnd, 6));

        // Produced with nobody attached, into a window of 4: offsets 2..6 are kept.
        let reg = Registry::new(4);
        let p = reg.create(9, plan, stop.clone());
        p.progress
            .subscribe()
            .wait_for(|(_, done)| *done)
            .await
            .unwrap();
        // Resume from 3: offsets 3, 4, 5 are still in the window of 4 (2..6).
        let again = Resume {
            epoch: reg.epoch(),
            offset: 3,
            ..fresh
        };
        reg.attach(5, again, stop.clone(), send).await.unwrap();
        let got = collect(&mut rx).await;
        assert_eq!(
            got,
            vec![
                (Kind::ResumeAnswer, 0),
                (Kind::StreamData, 3),
                (Kind::StreamData, 4),
                (Kind::StreamData, 5),
                (Kind::StreamEnd, 6)
            ]
        );
        // Offset 1 has left the window; another epoch is refused; the answers say which.
        for (req, status) in [
            (
                Resume {
                    epoch: reg.epoch(),
                    offset: 1,
                    ..fresh
                },
                ResumeStatus::OutsideWindow,
            ),
            (
                Resume {
                    epoch: reg.epoch() ^ 1,
                    offset: 3,
                    ..fresh
                },
                ResumeStatus::EpochChanged,
            ),
            (
                Resume {
                    token: 77,
                    epoch: reg.epoch(),
                    offset: 0,
                    ..fresh
                },
                ResumeStatus::Unknown,
            ),
        ] {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let send = |m| {
                let tx = tx.clone();
                async move { tx.send(m).map_err(|_| ()) }
            };
            reg.attach(0, req, stop.clone(), send).await.unwrap();
            let m = rx.try_recv().unwrap();
            assert_eq!(ResumeAnswer::decode(&m).unwrap().status, status);
            assert!(rx.try_recv().is_err(), "nothing follows a refusal");
        }
    }
}
