//! Trust tests for the harness: the open-loop generator keeps its rate or says it could not,
//! coordinated omission is visible when a server stalls once, and costs are counted at the
//! socket. (Histogram merging and the confidence interval are checked on known samples in
//! `stats`' unit tests.)

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use wirelab::probe::Probe;
use wirelab::stats::summarize;
use wirelab::workload::{self, Schedule};
use wirelab_core::codec::StreamRequest;
use wirelab_core::wire::WireCounters;
use wirelab_core::{net, Channel, Client, ClientConfig, Received, Result};

// ---- an in-memory transport whose sends can be made slow --------------------------------

/// How long every send takes in the fake transport (0 = instant).
static SEND_DELAY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct FakeChannel {
    tx: mpsc::UnboundedSender<Bytes>,
    rx: mpsc::UnboundedReceiver<Bytes>,
    delay: Duration,
}

impl Channel for FakeChannel {
    fn id(&self) -> u32 {
        0
    }
    async fn send(&mut self, msg: Bytes) -> Result<()> {
        if !self.delay.is_zero() {
            // A simulated slow transport: the fault under test, not synchronisation.
            tokio::time::sleep(self.delay).await;
        }
        let _ = self.tx.send(msg);
        Ok(())
    }
    async fn recv(&mut self) -> Result<Bytes> {
        self.rx
            .recv()
            .await
            .ok_or_else(|| wirelab_core::Error::Protocol("closed".into()))
    }
    async fn server_stream(&mut self, _req: StreamRequest) -> Result<Vec<Received>> {
        Ok(Vec::new())
    }
}

struct FakeClient(Option<FakeChannel>);

impl Client for FakeClient {
    type Channel = FakeChannel;
    async fn connect(_cfg: &ClientConfig) -> Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let delay = Duration::from_millis(SEND_DELAY_MS.load(std::sync::atomic::Ordering::SeqCst));
        Ok(Self(Some(FakeChannel { tx, rx, delay })))
    }
    fn channels(&mut self) -> Vec<FakeChannel> {
        self.0.take().into_iter().collect()
    }
    async fn close(self) -> Result<()> {
        Ok(())
    }
}

fn fake_cfg() -> ClientConfig {
    ClientConfig::new(SocketAddr::from(([127, 0, 0, 1], 9)))
}

/// Both fake-transport cases in one test: they share SEND_DELAY_MS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_generator_keeps_its_rate_or_says_it_could_not() {
    // Keeps: 200 messages/s for 0.5 s over an instant transport.
    SEND_DELAY_MS.store(0, std::sync::atomic::Ordering::SeqCst);
    let sched = Schedule {
        rate: 200.0,
        duration: Duration::from_millis(500),
        size: 64,
        // Generous: this checks the bookkeeping, not this machine's timer precision.
        lateness_budget: Duration::from_millis(100),
    };
    let r = workload::open_loop::<FakeClient>(&fake_cfg(), sched, None)
        .await
        .unwrap();
    assert_eq!(r.messages, 100);
    assert_eq!(r.corrected.len(), 100);
    assert_eq!(
        r.behind, None,
        "an instant transport at 200/s must be kept up with"
    );
    // The schedule spans 0.5 s: the run cannot be shorter than its last intended send.
    assert!(r.elapsed >= Duration::from_millis(495), "{:?}", r.elapsed);

    // Cannot keep up: every send takes 5 ms, the schedule asks for one per ms.
    SEND_DELAY_MS.store(5, std::sync::atomic::Ordering::SeqCst);
    let sched = Schedule {
        rate: 1000.0,
        duration: Duration::from_millis(200),
        size: 64,
        lateness_budget: Duration::from_millis(1),
    };
    let r = workload::open_loop::<FakeClient>(&fake_cfg(), sched, None)
        .await
        .unwrap();
    let why = r.behind.expect("the generator must say it fell behind");
    assert!(why.contains("could not keep the rate"), "{why}");
    // Its latency is still measured from the intended send times: the last message was due
    // at 0.2 s and sent after about 1 s, so the corrected tail is far above the service one.
    let corrected = summarize(&r.corrected);
    let service = summarize(&r.service);
    assert!(corrected.max_us > 500_000.0, "{corrected:?}");
    assert!(
        service.p99_us < corrected.p99_us / 10.0,
        "{service:?} vs {corrected:?}"
    );
}

// ---- a real TCP echo server (the tcp floor's framing) that stalls once ------------------

/// Echoes length-prefixed messages; on message `stall_at` of each connection it waits
/// `stall` before answering (the fault under test).
async fn stalling_server(stall_at: u64, stall: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            sock.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut io = Framed::new(sock, net::length_prefixed(1 << 20));
                let mut n = 0u64;
                while let Some(Ok(msg)) = io.next().await {
                    if n == stall_at {
                        tokio::time::sleep(stall).await;
                    }
                    n += 1;
                    if io.send(msg.freeze()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200ms_stall_shows_in_open_loop_p99_and_hides_in_closed_loop_p99() {
    let stall = Duration::from_millis(200);
    // Closed loop, 1000 echoes: the stall delays one echo (and the sender with it).
    let addr = stalling_server(300, stall).await;
    let cfg = ClientConfig::new(addr);
    let closed = workload::closed_loop::<wirelab_tcp::TcpClient>(&cfg, 64, 0, 1000, None)
        .await
        .unwrap();
    let c = summarize(&closed.rtt);
    assert!(c.max_us >= 200_000.0, "the stall is in the max: {c:?}");
    assert!(c.p99_us < 100_000.0, "closed-loop p99 hides it: {c:?}");

    // Open loop at 1000/s for 1 s: every message scheduled during the stall waits for it.
    let addr = stalling_server(300, stall).await;
    let cfg = ClientConfig::new(addr);
    let sched = Schedule {
        rate: 1000.0,
        duration: Duration::from_secs(1),
        size: 64,
        lateness_budget: Duration::from_millis(50),
    };
    let open = workload::open_loop::<wirelab_tcp::TcpClient>(&cfg, sched, None)
        .await
        .unwrap();
    let o = summarize(&open.corrected);
    assert_eq!(open.messages, 1000);
    // ~200 of 1000 messages were scheduled inside the stall, waiting 200..0 ms: the top 1%
    // waited ~180 ms or more.
    assert!(
        o.p99_us >= 150_000.0,
        "open-loop p99 shows the stall: {o:?}"
    );
    assert!(o.p90_us >= 20_000.0, "and so does p90: {o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_bytes_are_counted_at_the_socket() {
    // The tcp floor frames a message as a 4-byte length and the message: 64 + 4 bytes each
    // way per echo, nothing else on the connection.
    let addr = stalling_server(u64::MAX, Duration::ZERO).await;
    let mut cfg = ClientConfig::new(addr);
    let wire = WireCounters::new();
    cfg.wire = Some(wire.clone());
    let probe = Probe {
        wire: Some(wire),
        cpu: false,
        remote: None,
    };
    let r = workload::closed_loop::<wirelab_tcp::TcpClient>(&cfg, 64, 5, 200, Some(&probe))
        .await
        .unwrap();
    let cost = r.cost.unwrap();
    assert_eq!(cost.tx_bytes, Some(200 * 68));
    assert_eq!(cost.rx_bytes, Some(200 * 68));
    assert_eq!(cost.datagrams, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_datagrams_are_counted_too() {
    use wirelab_core::tls::{self, Identity, Trust};
    use wirelab_core::{CancellationToken, Server, ServerConfig};
    let ident = Identity::self_signed(&["localhost"]).unwrap();
    let alpn = [wirelab_core::tls::ALPN_WIRELAB_QUIC];
    let mut scfg = ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    scfg.tls = Some(ident.server_config(&alpn).unwrap());
    let server = wirelab_quic::QuicServer::bind(scfg).await.unwrap();
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(shutdown.clone()));
    let mut cfg = ClientConfig::new(addr);
    cfg.tls =
        Some(tls::client_config(&Trust::Certificates(vec![ident.certificate()]), &alpn).unwrap());
    let wire = WireCounters::new();
    cfg.wire = Some(wire.clone());
    let probe = Probe {
        wire: Some(wire),
        cpu: false,
        remote: None,
    };
    let r = workload::closed_loop::<wirelab_quic::QuicClient>(&cfg, 64, 5, 100, Some(&probe))
        .await
        .unwrap();
    let cost = r.cost.unwrap();
    let (tx, rx, d) = (
        cost.tx_bytes.unwrap(),
        cost.rx_bytes.unwrap(),
        cost.datagrams.unwrap(),
    );
    // At least the 68 framed bytes each way per echo, plus QUIC headers and AEAD tags; at
    // least one datagram each way per echo.
    assert!(tx > 100 * 68 && rx > 100 * 68, "{cost:?}");
    assert!(d >= 200, "{cost:?}");
    // And no more than a QUIC packet's overhead allows: a 1-RTT packet adds at most ~60
    // bytes (1 flags + up to 20 connection id + up to 4 packet number + STREAM frame header
    // up to 12 + 16 AEAD tag) plus a piggy-backed ACK; 140 bytes per echo each way covers
    // that and an occasional ACK-only packet, while counting the handshake, a retransmitted
    // copy of every packet, or the other direction's bytes would not fit. Likewise at most
    // two datagrams each way per echo.
    assert!(tx < 100 * (68 + 140) && rx < 100 * (68 + 140), "{cost:?}");
    assert!(d <= 400, "{cost:?}");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
