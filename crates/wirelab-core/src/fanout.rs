//! Fan-out: one publisher's messages broadcast to every subscriber of a topic, shared by every
//! transport's server (each transport only hands a subscription's messages to its own writer).
//!
//! - [`Registry`] (pure): which subscribers a topic has, with a cheap snapshot per publish.
//! - [`Bounded`] (pure): a subscriber's bounded queue and what [`SlowPolicy`] does when it is
//!   full.
//! - [`Hub`]: the two joined for the server's tasks; one per server, held by
//!   [`crate::ServerConfig::fanout`]. [`Hub::publish`] encodes a delivery once per distinct
//!   subscriber stream id and hands every subscriber a clone of the same [`Bytes`] (a reference
//!   count, not a copy).
//! - [`drive_subscription`]: a transport's forwarding task: the answer to the subscribe, then
//!   every delivery, through the transport's sink.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::codec::{self, SlowPolicy, Subscribe};

/// The largest per-subscriber queue a subscription may ask for.
pub const MAX_QUEUE: u32 = 1 << 16;

/// What [`Bounded::offer`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued; the queue had room.
    Queued,
    /// Queued after dropping the oldest queued message ([`SlowPolicy::DropOldest`]).
    DroppedOldest,
    /// Not queued: the queue is full and the publisher must wait ([`SlowPolicy::Block`]).
    Full,
    /// Not queued: the subscriber is cut off, now or earlier ([`SlowPolicy::Disconnect`], or
    /// it went away).
    Closed,
}

/// A subscriber's bounded queue and its policy (pure: no clock, no I/O).
#[derive(Debug)]
pub struct Bounded<T> {
    queue: VecDeque<T>,
    cap: usize,
    policy: SlowPolicy,
    closed: bool,
    disconnected: bool,
}

impl<T> Bounded<T> {
    /// An empty queue of at most `cap` (at least 1) messages.
    pub fn new(cap: usize, policy: SlowPolicy) -> Self {
        Self {
            queue: VecDeque::new(),
            cap: cap.max(1),
            policy,
            closed: false,
            disconnected: false,
        }
    }

    /// Offers one message; what happened depends on the room left and the policy.
    pub fn offer(&mut self, msg: T) -> Offer {
        if self.closed {
            return Offer::Closed;
        }
        if self.queue.len() < self.cap {
            self.queue.push_back(msg);
            return Offer::Queued;
        }
        match self.policy {
            SlowPolicy::Block => Offer::Full,
            SlowPolicy::DropOldest => {
                self.queue.pop_front();
                self.queue.push_back(msg);
                Offer::DroppedOldest
            }
            SlowPolicy::Disconnect => {
                self.closed = true;
                self.disconnected = true;
                self.queue.clear();
                Offer::Closed
            }
        }
    }

    /// Takes the oldest message.
    pub fn pop(&mut self) -> Option<T> {
        self.queue.pop_front()
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the subscriber was cut off by [`SlowPolicy::Disconnect`].
    pub fn disconnected(&self) -> bool {
        self.disconnected
    }

    /// Whether it takes no more messages (cut off, or gone).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Marks it gone: later offers are [`Offer::Closed`].
    pub fn close(&mut self) {
        self.closed = true;
    }
}

/// Which subscribers each topic has (pure bookkeeping). `T` is the subscriber's handle.
#[derive(Debug)]
pub struct Registry<T> {
    topics: HashMap<u32, Topic<T>>,
    next_id: u64,
}

#[derive(Debug)]
struct Topic<T> {
    subs: Vec<(u64, u32, T)>,
    /// Rebuilt on the first publish after a change, shared by every publish until the next.
    snapshot: Option<Arc<[(u32, T)]>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self {
            topics: HashMap::new(),
            next_id: 0,
        }
    }
}

impl<T: Clone> Registry<T> {
    /// Adds a subscriber on logical stream `stream` to `topic`; returns its id.
    pub fn subscribe(&mut self, topic: u32, stream: u32, handle: T) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let t = self.topics.entry(topic).or_insert_with(|| Topic {
            subs: Vec::new(),
            snapshot: None,
        });
        t.subs.push((id, stream, handle));
        t.snapshot = None;
        id
    }

    /// Removes subscriber `id` from `topic` (nothing if it is not there); a topic left empty
    /// is forgotten.
    pub fn unsubscribe(&mut self, topic: u32, id: u64) {
        if let Some(t) = self.topics.get_mut(&topic) {
            if let Some(i) = t.subs.iter().position(|s| s.0 == id) {
                t.subs.swap_remove(i);
                t.snapshot = None;
            }
            if t.subs.is_empty() {
                self.topics.remove(&topic);
            }
        }
    }

    /// The subscribers of `topic` as `(stream, handle)`, sorted by stream id so a publish can
    /// encode once per run of equal ids; empty if it has none.
    pub fn snapshot(&mut self, topic: u32) -> Arc<[(u32, T)]> {
        let Some(t) = self.topics.get_mut(&topic) else {
            return Arc::from(Vec::new());
        };
        t.snapshot
            .get_or_insert_with(|| {
                let mut v: Vec<(u32, T)> = t.subs.iter().map(|s| (s.1, s.2.clone())).collect();
                v.sort_by_key(|s| s.0);
                Arc::from(v)
            })
            .clone()
    }

    /// Subscribers of `topic`.
    pub fn count(&self, topic: u32) -> usize {
        self.topics.get(&topic).map_or(0, |t| t.subs.len())
    }
}

/// What a hub has done since it was made (for reports and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Messages published.
    pub published: u64,
    /// Deliveries queued for subscribers.
    pub queued: u64,
    /// Deliveries encoded (one per distinct subscriber stream id per publish).
    pub encoded: u64,
    /// Queued deliveries dropped by [`SlowPolicy::DropOldest`].
    pub dropped: u64,
    /// Subscribers cut off by [`SlowPolicy::Disconnect`].
    pub disconnected: u64,
    /// Publishes that waited for a full queue ([`SlowPolicy::Block`]).
    pub blocked: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    queued: AtomicU64,
    encoded: AtomicU64,
    dropped: AtomicU64,
    disconnected: AtomicU64,
    blocked: AtomicU64,
}

/// One subscriber's queue as the hub and its forwarding task share it.
#[derive(Debug)]
struct Slot {
    q: Mutex<Bounded<Bytes>>,
    /// A message was queued, or the subscriber was cut off (one consumer).
    data: Notify,
    /// Room was made, or the subscriber went away (publishers waiting under `Block`).
    space: Notify,
}

/// The broadcast hub of one server: topics, their subscribers' queues, counters. Cloning it
/// clones a handle to the same hub.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug, Default)]
struct HubInner {
    reg: Mutex<Registry<Arc<Slot>>>,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves bookkeeping that is still consistent enough to
    // serve: never propagate the poison.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    /// A new, empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a subscriber on logical stream `stream`; from now on every publish on the
    /// topic reaches its queue. Dropping the [`Subscription`] unsubscribes.
    pub fn subscribe(&self, stream: u32, req: Subscribe) -> Subscription {
        let slot = Arc::new(Slot {
            q: Mutex::new(Bounded::new(req.queue as usize, req.policy)),
            data: Notify::new(),
            space: Notify::new(),
        });
        let id = lock(&self.inner.reg).subscribe(req.topic, stream, slot.clone());
        Subscription {
            hub: self.clone(),
            topic: req.topic,
            id,
            slot,
        }
    }

    /// Subscribers of `topic` now.
    pub fn subscribers(&self, topic: u32) -> usize {
        lock(&self.inner.reg).count(topic)
    }

    /// Broadcasts the [`codec::Kind::Publish`] message `msg` to every subscriber of `topic`.
    /// Under [`SlowPolicy::Block`] it waits for room in a full queue (the publisher's reading
    /// stops meanwhile: backpressure to the publisher); the other policies never wait.
    pub async fn publish(&self, topic: u32, msg: &Bytes) {
        let c = &self.inner.counters;
        c.published.fetch_add(1, Ordering::Relaxed);
        let subs = lock(&self.inner.reg).snapshot(topic);
        let mut frame: Option<(u32, Bytes)> = None;
        for (stream, slot) in subs.iter() {
            let delivery = match &frame {
                Some((s, b)) if s == stream => b.clone(),
                _ => {
                    let b = codec::deliver(msg, *stream);
                    c.encoded.fetch_add(1, Ordering::Relaxed);
                    frame = Some((*stream, b.clone()));
                    b
                }
            };
            let mut waited = false;
            loop {
                let space = slot.space.notified();
                tokio::pin!(space);
                space.as_mut().enable();
                let offer = lock(&slot.q).offer(delivery.clone());
                match offer {
                    Offer::Queued | Offer::DroppedOldest => {
                        if offer == Offer::DroppedOldest {
                            c.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        c.queued.fetch_add(1, Ordering::Relaxed);
                        slot.data.notify_one();
                        break;
                    }
                    Offer::Closed => {
                        if lock(&slot.q).disconnected() && !waited {
                            // Wake the forwarder so it ends the connection (once is enough;
                            // counted when the queue was cut, below).
                            slot.data.notify_one();
                        }
                        break;
                    }
                    Offer::Full => {
                        if !waited {
                            c.blocked.fetch_add(1, Ordering::Relaxed);
                            waited = true;
                        }
                        space.await;
                    }
                }
            }
        }
    }

    /// What the hub has done so far.
    pub fn stats(&self) -> HubStats {
        let c = &self.inner.counters;
        HubStats {
            published: c.published.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            encoded: c.encoded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            disconnected: c.disconnected.load(Ordering::Relaxed),
            blocked: c.blocked.load(Ordering::Relaxed),
        }
    }
}

/// One registered subscriber's end of its queue. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    hub: Hub,
    topic: u32,
    id: u64,
    slot: Arc<Slot>,
}

impl Subscription {
    /// The next delivery, in publish order; `None` once the subscriber is cut off
    /// ([`SlowPolicy::Disconnect`]). Cancel-safe.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            {
                let mut q = lock(&self.slot.q);
                if let Some(m) = q.pop() {
                    drop(q);
                    self.slot.space.notify_waiters();
                    return Some(m);
                }
                if q.disconnected() {
                    return None;
                }
            }
            self.slot.data.notified().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let cut = {
            let mut q = lock(&self.slot.q);
            let cut = q.disconnected();
            q.close();
            cut
        };
        if cut {
            self.hub
                .inner
                .counters
                .disconnected
                .fetch_add(1, Ordering::Relaxed);
        }
        lock(&self.hub.inner.reg).unsubscribe(self.topic, self.id);
        // A publisher waiting for this queue's room stops waiting.
        self.slot.space.notify_waiters();
    }
}

/// How a subscription's forwarding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubEnd {
    /// The subscriber was cut off for falling behind: the transport must now close its
    /// connection or stream.
    Disconnected,
    /// The transport's sink failed (the peer went away).
    SinkClosed,
}

/// A transport's forwarding task for one subscription: sends `ack` (the subscribe message,
/// answered once registered), then every delivery through `sink`, until the subscriber is cut
/// off or the sink fails. The transport closes the connection (or stream) on
/// [`SubEnd::Disconnected`].
pub async fn drive_subscription<F, Fut, E>(mut sub: Subscription, ack: Bytes, mut sink: F) -> SubEnd
where
    F: FnMut(Bytes) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    if sink(ack).await.is_err() {
        return SubEnd::SinkClosed;
    }
    while let Some(m) = sub.next().await {
        if sink(m).await.is_err() {
            return SubEnd::SinkClosed;
        }
    }
    SubEnd::Disconnected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Kind, HEADER_LEN};

    #[test]
    fn bounded_policies() {
        let mut b = Bounded::new(2, SlowPolicy::Block);
        assert_eq!(b.offer(1), Offer::Queued);
        assert_eq!(b.offer(2), Offer::Queued);
        assert_eq!(b.offer(3), Offer::Full);
        assert_eq!(b.pop(), Some(1));
        assert_eq!(b.offer(3), Offer::Queued);
        assert_eq!((b.pop(), b.pop(), b.pop()), (Some(2), Some(3), None));

        let mut d = Bounded::new(2, SlowPolicy::DropOldest);
        for i in 1..=5 {
            d.offer(i);
        }
        assert_eq!((d.len(), d.pop(), d.pop()), (2, Some(4), Some(5)));
        assert_eq!(d.offer(6), Offer::Queued);

        let mut x = Bounded::new(1, SlowPolicy::Disconnect);
        assert_eq!(x.offer(1), Offer::Queued);
        assert!(!x.disconnected());
        assert_eq!(x.offer(2), Offer::Closed);
        assert!(x.disconnected() && x.is_closed() && x.is_empty());
        assert_eq!(x.offer(3), Offer::Closed);

        let mut g = Bounded::new(0, SlowPolicy::Block);
        assert_eq!(g.offer(1), Offer::Queued);
        g.close();
        assert_eq!(g.offer(2), Offer::Closed);
        assert!(!g.disconnected());
    }

    #[test]
    fn registry_bookkeeping_and_snapshots() {
        let mut r: Registry<char> = Registry::default();
        assert!(r.snapshot(1).is_empty());
        let a = r.subscribe(1, 5, 'a');
        let b = r.subscribe(1, 0, 'b');
        let _c = r.subscribe(2, 0, 'c');
        let s1 = r.snapshot(1);
        assert_eq!(&s1[..], &[(0, 'b'), (5, 'a')]);
        // Unchanged: the same snapshot is shared.
        assert!(Arc::ptr_eq(&s1, &r.snapshot(1)));
        r.unsubscribe(1, a);
        assert_eq!(&r.snapshot(1)[..], &[(0, 'b')]);
        r.unsubscribe(1, a);
        r.unsubscribe(1, b);
        assert_eq!(r.count(1), 0);
        assert_eq!(r.count(2), 1);
        assert!(!r.topics.contains_key(&1), "an empty topic is forgotten");
    }

    fn sub(topic: u32, policy: SlowPolicy, queue: u32) -> Subscribe {
        Subscribe {
            topic,
            policy,
            queue,
        }
    }

    #[tokio::test]
    async fn one_frame_per_stream_id_shared_by_every_subscriber() {
        let hub = Hub::new();
        let mut subs: Vec<_> = (0..5)
            .map(|_| hub.subscribe(0, sub(7, SlowPolicy::Block, 8)))
            .collect();
        let mut other = hub.subscribe(3, sub(7, SlowPolicy::Block, 8));
        let msg = codec::publish(0, 1, 99, 7, 64).unwrap();
        hub.publish(7, &msg).await;
        hub.publish(8, &msg).await; // nobody listens
        let got: Vec<Bytes> = futures_util::future::join_all(subs.iter_mut().map(|s| s.next()))
            .await
            .into_iter()
            .map(Option::unwrap)
            .collect();
        // The same buffer, not a copy per subscriber.
        for g in &got[1..] {
            assert_eq!(g.as_ptr(), got[0].as_ptr());
        }
        let h = codec::decode(&got[0], 1000).unwrap();
        assert_eq!(
            (h.kind, h.stream, h.seq, h.sent_ns),
            (Kind::Deliver, 0, 1, 99)
        );
        let o = other.next().await.unwrap();
        assert_eq!(codec::decode(&o, 1000).unwrap().stream, 3);
        assert_eq!(o[HEADER_LEN..], msg[HEADER_LEN..]);
        let st = hub.stats();
        assert_eq!((st.published, st.queued, st.encoded), (2, 6, 2));
        assert_eq!(hub.subscribers(7), 6);
        drop(subs);
        assert_eq!(hub.subscribers(7), 1);
    }

    #[tokio::test]
    async fn block_waits_for_the_slow_subscriber() {
        let hub = Hub::new();
        let mut s = hub.subscribe(0, sub(1, SlowPolicy::Block, 1));
        let m0 = codec::publish(0, 0, 0, 1, 40).unwrap();
        let m1 = codec::publish(0, 1, 0, 1, 40).unwrap();
        hub.publish(1, &m0).await;
        let second = hub.publish(1, &m1);
        tokio::pin!(second);
        // The queue is full: the second publish cannot finish before the subscriber reads.
        assert!(futures_util::FutureExt::now_or_never(second.as_mut()).is_none());
        assert_eq!(codec::decode(&s.next().await.unwrap(), 99).unwrap().seq, 0);
        second.await;
        assert_eq!(codec::decode(&s.next().await.unwrap(), 99).unwrap().seq, 1);
        assert_eq!(hub.stats().blocked, 1);
        // A blocked publisher is released when the subscriber goes away.
        hub.publish(1, &codec::publish(0, 2, 0, 1, 40).unwrap())
            .await;
        let h3 = hub.clone();
        let third = tokio::spawn(async move {
            h3.publish(1, &codec::publish(0, 3, 0, 1, 40).unwrap())
                .await
        });
        tokio::task::yield_now().await;
        drop(s);
        third.await.unwrap();
    }

    #[tokio::test]
    async fn drop_oldest_and_disconnect() {
        let hub = Hub::new();
        let mut d = hub.subscribe(0, sub(1, SlowPolicy::DropOldest, 2));
        let x = hub.subscribe(0, sub(1, SlowPolicy::Disconnect, 2));
        for seq in 0..5 {
            hub.publish(1, &codec::publish(0, seq, 0, 1, 40).unwrap())
                .await;
        }
        let seqs: Vec<u64> = [d.next().await, d.next().await]
            .into_iter()
            .map(|m| codec::decode(&m.unwrap(), 99).unwrap().seq)
            .collect();
        assert_eq!(seqs, [3, 4]);
        let st = hub.stats();
        assert_eq!(st.dropped, 3);
        let end = drive_subscription(x, Bytes::from_static(b"ack"), |_m| async {
            Ok::<(), ()>(())
        })
        .await;
        assert_eq!(end, SubEnd::Disconnected);
        assert_eq!(hub.stats().disconnected, 1);
        assert_eq!(hub.subscribers(1), 1);
    }
}
