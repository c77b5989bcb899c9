//! Fan-out over every push transport (`wirelab::fanout::PUSH`), through the harness's own
//! fan-out run against the real servers on loopback:
//!
//! - policy `block`: every subscriber gets every message exactly once, in order (one
//!   connection each, and as streams of one connection where the transport multiplexes);
//! - policy `drop`: a subscriber that stops reading misses messages (the server dropped the
//!   oldest for it), still gets the newest, in order, and the others miss nothing;
//! - policy `disconnect`: a subscriber that stops reading is cut off, the others miss nothing.
//!
//! Every wait is bounded; the stalled subscriber is released by the publisher's end (an
//! event), not by a timer.

use std::time::Duration;

use wirelab::fanout::{self, Spec, SubRecord};
use wirelab::transports;
use wirelab_core::codec::SlowPolicy;
use wirelab_core::fanout::HubStats;
use wirelab_core::{CancellationToken, ClientConfig, Mode, TransportId};

const BOUND: Duration = Duration::from_secs(120);

struct Lab {
    id: TransportId,
    cfg: ClientConfig,
    hub: wirelab_core::fanout::Hub,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<wirelab_core::Result<()>>,
}

async fn start(id: TransportId) -> Lab {
    let d = transports::descriptor(id);
    let mut scfg = wirelab_test_support::local();
    let mut client_tls = None;
    if d.tls.by_default() {
        let t = wirelab_test_support::test_tls(d.alpn);
        scfg.tls = Some(t.server);
        client_tls = Some(t.client);
    }
    let hub = scfg.fanout.clone();
    let stop = CancellationToken::new();
    let (addr, task) =
        transports::start_server(id, scfg, stop.clone(), &tokio::runtime::Handle::current())
            .await
            .expect("server starts");
    let mut cfg = ClientConfig::new(addr);
    cfg.tls = client_tls;
    cfg.mode = Mode::Duplex;
    Lab {
        id,
        cfg,
        hub,
        stop,
        task,
    }
}

impl Lab {
    async fn run(&self, spec: &Spec) -> (fanout::Run, HubStats) {
        let before = self.hub.stats();
        let r = wirelab_test_support::within(
            &format!("{} fan-out {:?}", self.id, spec.policy),
            BOUND,
            async { wirelab::with_client!(self.id, C => fanout::run::<C>(&self.cfg, spec).await) },
        )
        .await
        .unwrap_or_else(|e| panic!("{}: fan-out failed: {e:#}", self.id));
        let after = self.hub.stats();
        let d = HubStats {
            published: after.published - before.published,
            queued: after.queued - before.queued,
            encoded: after.encoded - before.encoded,
            dropped: after.dropped - before.dropped,
            disconnected: after.disconnected - before.disconnected,
            blocked: after.blocked - before.blocked,
        };
        (r, d)
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

fn seqs(r: &SubRecord) -> Vec<u64> {
    r.got.iter().map(|g| g.0).collect()
}

fn all_in_order(id: TransportId, what: &str, subs: &[SubRecord], messages: u64) {
    let want: Vec<u64> = (0..messages).collect();
    for (i, s) in subs.iter().enumerate() {
        assert_eq!(
            seqs(s),
            want,
            "{id} {what}: subscriber {i} (error: {:?})",
            s.error
        );
        assert!(!s.cut, "{id} {what}: subscriber {i} was cut off");
    }
}

fn strictly_increasing(r: &SubRecord) -> bool {
    r.got.windows(2).all(|w| w[0].0 < w[1].0)
}

fn block_spec(n: usize, shared: bool) -> Spec {
    Spec {
        subscribers: n,
        shared,
        rate: 1000.0,
        messages: 100,
        size: 64,
        policy: SlowPolicy::Block,
        queue: 1024,
        stalled: 0,
        stalled_queue: 1024,
        stall: None,
    }
}

/// Large messages, and many: what the client and server queues (tcp: 256 messages each), the
/// flow-control windows and the kernel buffer for a subscriber that does not read (up to about
/// 550 messages) must be far less than what is published (1000 messages, 64 MiB).
fn stall_spec(policy: SlowPolicy) -> Spec {
    Spec {
        subscribers: 2,
        shared: false,
        rate: 2000.0,
        messages: 1000,
        size: 64 << 10,
        policy,
        queue: wirelab_core::fanout::MAX_QUEUE,
        stalled: 1,
        stalled_queue: 4,
        stall: None,
    }
}

async fn every_transport(check: impl AsyncFn(&Lab)) {
    for id in fanout::PUSH {
        let id = transports::parse(id).expect("a listed transport");
        let lab = start(id).await;
        check(&lab).await;
        lab.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_delivers_every_message_once_in_order_over_every_push_transport() {
    let _panics = wirelab_test_support::panics::no_panics();
    every_transport(async |lab: &Lab| {
        let spec = block_spec(4, false);
        let (r, hub) = lab.run(&spec).await;
        all_in_order(lab.id, "one connection each", &r.subs, spec.messages);
        assert_eq!(hub.published, spec.messages, "{}", lab.id);
        assert_eq!(hub.queued, spec.messages * 4, "{}", lab.id);
        // One connection each: every subscriber is stream 0, so one frame per message serves all.
        assert_eq!(
            hub.encoded, spec.messages,
            "{}: one frame per message",
            lab.id
        );
        assert_eq!((hub.dropped, hub.disconnected), (0, 0), "{}", lab.id);
        assert_eq!(r.figures.complete, spec.messages);
        assert_eq!(r.figures.slowest.len(), spec.messages);
        if fanout::multiplexes(lab.id) {
            let spec = block_spec(4, true);
            let (r, hub) = lab.run(&spec).await;
            all_in_order(lab.id, "streams of one connection", &r.subs, spec.messages);
            assert_eq!(hub.queued, spec.messages * 4, "{}", lab.id);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_leaves_gaps_for_the_stalled_subscriber_only() {
    let _panics = wirelab_test_support::panics::no_panics();
    every_transport(async |lab: &Lab| {
        let spec = stall_spec(SlowPolicy::DropOldest);
        let (r, hub) = lab.run(&spec).await;
        all_in_order(lab.id, "drop: healthy", &r.subs[..1], spec.messages);
        let stalled = &r.subs[1];
        assert!(stalled.stalled);
        assert!(
            strictly_increasing(stalled),
            "{}: {:?}",
            lab.id,
            seqs(stalled)
        );
        assert!(
            (stalled.got.len() as u64) < spec.messages,
            "{}: the stalled subscriber missed nothing ({} of {})",
            lab.id,
            stalled.got.len(),
            spec.messages
        );
        assert_eq!(
            stalled.got.last().map(|g| g.0),
            Some(spec.messages - 1),
            "{}: the newest message is never dropped",
            lab.id
        );
        assert!(!stalled.cut, "{}: drop must not cut off", lab.id);
        assert!(hub.dropped > 0, "{}: {hub:?}", lab.id);
        assert_eq!(
            hub.dropped + stalled.got.len() as u64,
            spec.messages,
            "{}: what the stalled one got plus what was dropped is everything",
            lab.id
        );
        assert_eq!(r.figures.stalled_missed, hub.dropped);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_cuts_off_the_stalled_subscriber_only() {
    let _panics = wirelab_test_support::panics::no_panics();
    every_transport(async |lab: &Lab| {
        let spec = stall_spec(SlowPolicy::Disconnect);
        let (r, hub) = lab.run(&spec).await;
        all_in_order(lab.id, "disconnect: healthy", &r.subs[..1], spec.messages);
        let stalled = &r.subs[1];
        assert!(stalled.cut, "{}: not cut off: {:?}", lab.id, stalled.error);
        assert!(strictly_increasing(stalled), "{}", lab.id);
        assert!((stalled.got.len() as u64) < spec.messages, "{}", lab.id);
        assert_eq!(hub.disconnected, 1, "{}: {hub:?}", lab.id);
        assert_eq!(r.figures.stalled_cut, 1);
    })
    .await;
}
