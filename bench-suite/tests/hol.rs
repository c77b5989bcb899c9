//! The HOL index on known answers, through the real link emulator (issue #6): K TCP
//! connections ≈ 0, one TCP connection carrying K streams ≈ 1, K QUIC streams ≈ 0; and K
//! flows of WebTransport datagrams: a loss is counted, never waited for.
//!
//! Each case: 8 streams, 2 messages per RTT per stream, RTT 100 ms (a debug build's client
//! noise stays far below the 50 ms stall threshold), 2% random loss per direction, 1200
//! messages (7.5 s). Tolerances, from the runs in docs/src/hol.md: release build, seeds 1-3,
//! RTT 20 and 100 ms: tcp pool −0.04 to 0.06, quic 0.02 to 0.07, tcp shared 0.87 to 0.96;
//! this debug test, seed 1: 0.02, 0.05, 0.96. The bounds |index| < 0.2 and index > 0.8 leave
//! room for the VM's scheduling noise without letting one answer pass for the other.
//!
//! Needs root (namespaces, TUN devices): without it each test says so and skips, unless
//! `WIRELAB_REQUIRE_ROOT=1` (CI) makes that a failure. The cases share the two cores with
//! a real-time forwarder, so they run one at a time.

use std::sync::{Arc, Mutex};

use wirelab::hol::{self, Cell, HolPlan, HolRep, HolVariant, LossKind};
use wirelab::runner::{Certs, VariantServer};
use wirelab::topology::Topology;
use wirelab::transports;
use wirelab_core::{Mode, Sharing};
use wirelab_link::{Link, LinkConfig, LinkOptions};

static SERIAL: Mutex<()> = Mutex::new(());

#[track_caller]
fn root() -> bool {
    wirelab_test_support::root("the HOL validation (namespaces and TUN devices)")
}

/// Runs one cell on one variant through a fresh link; returns the repetition.
fn run(id: &str, tls_on: bool, sharing: Sharing, datagrams: bool, seed: u64) -> HolRep {
    let id = transports::parse(id).unwrap();
    let link = Arc::new(Link::start(&LinkOptions::default(), LinkConfig::default()).unwrap());
    let cpus = wirelab::topology::Pinning::resolve(Some(wirelab::topology::Cpus::Free)).unwrap();
    let topo = Topology::start(Some(link), Some(1), cpus).unwrap();
    let hv = HolVariant {
        variant: transports::Variant {
            id,
            tls: tls_on,
            mode: Mode::Duplex,
        },
        sharing,
        datagrams,
    };
    let plan = HolPlan {
        variants: vec![hv.clone()],
        cells: vec![],
        streams: 8,
        per_rtt: 2.0,
        messages: 1200,
        size: 64,
        burst: 4.0,
        reps: 1,
        seed,
        out: std::env::temp_dir(),
    };
    let cell = Cell {
        rtt_ms: 100,
        loss: 0.02,
        kind: LossKind::Random,
    };
    let link = topo.link().unwrap().clone();
    let servers = topo.servers();
    let rep = topo.block_on(async {
        let certs = Certs::new().unwrap();
        let server = VariantServer::start(&hv.variant, &certs, &servers)
            .await
            .unwrap();
        let rep = hol::one_run(&plan, &hv, &cell, 0, Some(&*link), &server)
            .await
            .unwrap();
        server.stop().await;
        rep
    });
    drop(link);
    drop(topo);
    eprintln!(
        "{} (seed {seed}): HOL index {:?} over {} stalls, p99 {:.1} ms, losses up/down {}/{}, link valid: {:?}",
        hv.label(),
        rep.hol_index,
        rep.stalls,
        rep.p99_ms,
        rep.link.up[1],
        rep.link.down[1],
        rep.link.invalid
    );
    rep
}

/// The HOL index of a valid run. A run the emulator itself marks invalid (it fell behind: the
/// VM was busy) measured nothing, so it is run again, at most twice more; a valid run is
/// judged whatever its index, and three invalid runs fail.
fn index(id: &str, tls_on: bool, sharing: Sharing) -> f64 {
    let mut why = Vec::new();
    for attempt in 1..=3 {
        let rep = run(id, tls_on, sharing, false, 1);
        if let Some(w) = &rep.link.invalid {
            eprintln!("attempt {attempt}: the emulator fell behind ({w}); running again");
            why.push(w.clone());
            continue;
        }
        assert!(rep.stalls >= 10, "too few stalls to judge: {}", rep.stalls);
        return rep.hol_index.expect("stalls give an index");
    }
    panic!("the emulator fell behind in all 3 attempts: {why:?}");
}

#[test]
fn k_tcp_connections_score_near_zero() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root() {
        return;
    }
    let i = index("tcp", false, Sharing::Pool);
    assert!(i.abs() < 0.2, "{i}");
}

#[test]
fn one_tcp_connection_carrying_k_streams_scores_near_one() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root() {
        return;
    }
    let i = index("tcp", false, Sharing::Shared);
    assert!(i > 0.8, "{i}");
}

#[test]
fn k_quic_streams_score_near_zero() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root() {
        return;
    }
    let i = index("quic", true, Sharing::Shared);
    assert!(i.abs() < 0.2, "{i}");
}

/// Datagrams are never retransmitted: at 2% random loss per direction about 1 − 0.98² ≈ 4% of
/// the echoes never come back (1200 of them: the bounds are the binomial's ± 3.5 s.e. and
/// more), and those that do come back were not held up by a loss: no stream waited beyond the
/// stall threshold in more than a few cases (a debug build's scheduling noise), so the index,
/// where there is one, is not that of a shared stream.
#[test]
fn k_wt_datagram_flows_lose_messages_but_never_wait_for_them() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root() {
        return;
    }
    let mut why = Vec::new();
    for attempt in 1..=3 {
        let rep = run("wt", true, Sharing::Shared, true, 1);
        if let Some(w) = &rep.link.invalid {
            eprintln!("attempt {attempt}: the emulator fell behind ({w}); running again");
            why.push(w.clone());
            continue;
        }
        let d = rep.datagrams.expect("a datagram run tallies its datagrams");
        assert_eq!(d.sent, 1200);
        let received: usize = rep.records.iter().map(Vec::len).sum();
        assert_eq!(
            received as u64, d.received,
            "one record per echo that came back"
        );
        assert!(
            rep.records.iter().all(|r| !r.is_empty()),
            "every tag carried echoes"
        );
        let lost = rep.datagram_loss_pct().unwrap();
        assert!((1.5..=7.0).contains(&lost), "lost {lost}%");
        assert!(
            rep.link.up[1] + rep.link.down[1] > 0,
            "the link dropped packets"
        );
        assert!(rep.stalls <= 12, "{} stalls: datagrams waited", rep.stalls);
        if let Some(i) = rep.hol_index {
            assert!(i < 0.5, "{i}");
        }
        return;
    }
    panic!("the emulator fell behind in all 3 attempts: {why:?}");
}
