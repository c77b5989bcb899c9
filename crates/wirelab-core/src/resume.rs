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

/// Messages a server keeps per resumable stream (its replay window).
pub const WINDOW: usize = 1024;
/// Resumable streams a server keeps at once; the oldest is forgotten beyond this.
pub const MAX_STREAMS: usize = 1024;

/// The last [`WINDOW`] (or `cap`) messages of a stream, by offset.
#[derive(Debug, Clone)]
pub struct ReplayBuffer {
    cap: usize,
    /// Offset of `items[0]`.
    oldest: u64,
    items: VecDeque<Bytes>,
}

impl ReplayBuffer {
    /// An empty buffer keeping at most `cap` messages (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            oldest: 0,
            items: VecDeque::new(),
        }
    }

    /// Appends the next message; returns its offset. The oldest is dropped beyond the cap.
    pub fn push(&mut self, msg: Bytes) -> u64 {
        let offset = self.next();
        self.items.push_back(msg);
        if self.items.len() > self.cap {
            self.items.pop_front();
            self.oldest += 1;
        }
        offset
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
}

/// A server's resumable streams (one per server; clones share it).
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

#[derive(Debug)]
struct RegistryInner {
    epoch: u64,
    window: usize,
    streams: Mutex<Streams>,
}

/// The streams by token, and the tokens in creation order (the oldest is forgotten first).
type Streams = (HashMap<u64, Arc<Produced>>, VecDeque<u64>);

impl Default for Registry {
    fn default() -> Self {
        Self::new(WINDOW)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// A registry with a fresh epoch (non-zero, different for every process and registry) and
    /// a replay window of `window` messages per stream.
    pub fn new(window: usize) -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded per process from the OS; mix in the time and the pid.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(crate::clock::now_ns());
        h.write_u32(std::process::id());
        Self {
            inner: Arc::new(RegistryInner {
                epoch: h.finish().max(1),
                window: window.max(1),
                streams: Mutex::new((HashMap::new(), VecDeque::new())),
            }),
        }
    }

    /// This server's epoch.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    fn known(&self, token: u64) -> Option<(Arc<Produced>, Known)> {
        let p = lock(&self.inner.streams).0.get(&token).cloned()?;
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
        let p = Arc::new(Produced {
            buf: Mutex::new(ReplayBuffer::new(self.inner.window)),
            progress: watch::channel((0, false)).0,
            plan,
            generation: Default::default(),
        });
        {
            let mut g = lock(&self.inner.streams);
            let (map, order) = &mut *g;
            if map.insert(token, p.clone()).is_none() {
                order.push_back(token);
            }
            while order.len() > MAX_STREAMS {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        let producer = p.clone();
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
