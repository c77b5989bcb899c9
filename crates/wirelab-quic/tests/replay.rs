//! Replay of a recorded 0-RTT flight, end to end. A UDP relay between the client and the
//! server records the client's first flight of a 0-RTT connection (its Initial packets with the
//! ClientHello and its 0-RTT packets with the request); the test then sends those datagrams
//! again, unchanged, from a new socket, as an on-path attacker would.
//!
//! What stops the replay: the servers' rustls configs keep a stateful session cache
//! (`ServerSessionMemoryCache`, no ticketer) that *takes* a TLS 1.3 ticket out when a
//! ClientHello uses it (rustls `server/tls13.rs`, `attempt_tls13_ticket_decryption`; rustls
//! offers 0-RTT only with such single-use tickets). The replayed ClientHello names a ticket that
//! is gone, so the server does a full handshake, derives no 0-RTT keys, and quinn discards the
//! 0-RTT packets. Observed here on the server side: the TLS key log (rustls logs
//! `CLIENT_EARLY_TRAFFIC_SECRET` exactly when it resumes a session, before the handshake
//! secrets) and, with a test connection function on `QuicListener` (what the quic and h3
//! servers run on), the streams the replayed connection delivers to the application.
//!
//! Every wait is bounded and ends on an event; ports come from the OS.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use wirelab_core::codec::{self, Kind};
use wirelab_core::tls::ALPN_WIRELAB_QUIC;
use wirelab_core::{CancellationToken, Channel, Client, ClientConfig, ServerConfig};
use wirelab_quic::{QuicClient, QuicServer};
use wirelab_quinn::{QuicConnector, QuicListener};

const BOUND: Duration = Duration::from_secs(10);
/// How long one replay waits for the server to take it as a new connection before it is sent
/// again: until the original connection has drained (3 PTOs after its close, tens of ms on
/// loopback), quinn routes datagrams naming its connection ID to it, where they are dropped.
const RESEND: Duration = Duration::from_millis(250);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    wirelab_test_support::within(what, BOUND, f).await
}

// ---- QUIC long headers, read without decrypting (RFC 9000 §17.2) ----

/// Long-header packet types (RFC 9000 §17.2, QUIC v1).
const INITIAL: u8 = 0;
const ZERO_RTT: u8 = 1;
/// Stand-in for a short-header (1-RTT) packet.
const SHORT: u8 = 0xff;

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    let mut v = u64::from(first & 0x3f);
    for x in b.get(1..len)? {
        v = (v << 8) | u64::from(*x);
    }
    Some((v, len))
}

/// The types of the packets coalesced in one datagram, in order. The fields up to the Length
/// field are not protected, so each packet's extent is known without its keys.
fn packet_types(d: &[u8]) -> Vec<u8> {
    fn next(d: &[u8], at: usize) -> Option<(u8, usize)> {
        let first = *d.get(at)?;
        if first & 0x80 == 0 {
            return Some((SHORT, d.len()));
        }
        let ty = (first >> 4) & 0x03;
        let mut p = at + 5; // first byte, version
        p += 1 + usize::from(*d.get(p)?); // destination connection ID
        p += 1 + usize::from(*d.get(p)?); // source connection ID
        if ty == INITIAL {
            let (token, n) = varint(d.get(p..)?)?;
            p += n + usize::try_from(token).ok()?;
        }
        let (len, n) = varint(d.get(p..)?)?;
        Some((ty, p + n + usize::try_from(len).ok()?))
    }
    let (mut out, mut at) = (Vec::new(), 0);
    while let Some((ty, end)) = next(d, at) {
        out.push(ty);
        if ty == SHORT {
            break;
        }
        at = end;
    }
    out
}

// ---- the relay ----

/// A UDP relay in front of a server, for one client. It forwards the client's datagrams at once
/// and records them until it delivers the server's first datagram; it holds the server's
/// datagrams until the client has sent a 0-RTT packet, so the recorded flight always holds the
/// early data (on loopback the handshake could otherwise complete before the client writes).
struct Relay {
    addr: SocketAddr,
    flight: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(server: SocketAddr) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let flight = Arc::new(Mutex::new(Vec::new()));
        let recorded = flight.clone();
        let task = tokio::spawn(async move {
            let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
            let mut client = None;
            let mut held: Vec<Vec<u8>> = Vec::new();
            let (mut early_seen, mut recording) = (false, true);
            loop {
                tokio::select! {
                    r = front.recv_from(&mut up) => {
                        let Ok((n, from)) = r else { return };
                        if *client.get_or_insert(from) != from {
                            continue;
                        }
                        let d = &up[..n];
                        if recording {
                            recorded.lock().unwrap().push(d.to_vec());
                        }
                        let _ = back.send(d).await;
                        if !early_seen && packet_types(d).contains(&ZERO_RTT) {
                            early_seen = true;
                            recording = held.is_empty();
                            for h in held.drain(..) {
                                let _ = front.send_to(&h, from).await;
                            }
                        }
                    }
                    r = back.recv(&mut down) => {
                        let (Ok(n), Some(to)) = (r, client) else { continue };
                        if early_seen {
                            recording = false;
                            let _ = front.send_to(&down[..n], to).await;
                        } else {
                            held.push(down[..n].to_vec());
                        }
                    }
                }
            }
        });
        Self { addr, flight, task }
    }

    /// The client datagrams recorded; checks that they are a 0-RTT first flight.
    fn flight(&self) -> Vec<Vec<u8>> {
        let flight = self.flight.lock().unwrap().clone();
        let types: Vec<u8> = flight.iter().flat_map(|d| packet_types(d)).collect();
        assert!(
            types.first() == Some(&INITIAL)
                && types.contains(&ZERO_RTT)
                && types.iter().all(|t| [INITIAL, ZERO_RTT].contains(t)),
            "the recorded flight is not Initial + 0-RTT packets: {types:?}"
        );
        flight
    }
}

/// Sends `flight` to `server` from a new socket, again every [`RESEND`] until `taken` (the
/// server's reaction to a new connection) happens.
async fn replay(server: SocketAddr, flight: &[Vec<u8>], taken: impl AsyncFnMut()) -> SocketAddr {
    let mut taken = taken;
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = attacker.local_addr().unwrap();
    within(
        "the server takes the replayed flight as a new connection",
        async {
            loop {
                for d in flight {
                    attacker.send_to(d, server).await.unwrap();
                }
                if tokio::time::timeout(RESEND, taken()).await.is_ok() {
                    return;
                }
            }
        },
    )
    .await;
    addr
}

// ---- the server's key log ----

const EARLY: &str = "CLIENT_EARLY_TRAFFIC_SECRET";
const HANDSHAKE: &str = "CLIENT_HANDSHAKE_TRAFFIC_SECRET";

/// What a rustls server logged: (label, client random), in order.
type Log = Vec<(String, Vec<u8>)>;

/// Records what a rustls server logs.
#[derive(Debug)]
struct KeyLog(watch::Sender<Log>);

impl rustls::KeyLog for KeyLog {
    fn log(&self, label: &str, client_random: &[u8], _secret: &[u8]) {
        self.0
            .send_modify(|v| v.push((label.to_string(), client_random.to_vec())));
    }

    fn will_log(&self, _label: &str) -> bool {
        true
    }
}

fn count(log: &Log, label: &str, random: &[u8]) -> usize {
    log.iter()
        .filter(|(l, r)| l == label && r == random)
        .count()
}

/// A server config with a fresh certificate (and so a fresh session cache) whose key log is
/// recorded, and a client TLS config that trusts it.
fn tls_with_key_log() -> (
    ServerConfig,
    Arc<rustls::ClientConfig>,
    watch::Receiver<Log>,
) {
    let t = wirelab_test_support::test_tls(ALPN_WIRELAB_QUIC);
    let (tx, rx) = watch::channel(Vec::new());
    let mut server_tls = (*t.server).clone();
    server_tls.key_log = Arc::new(KeyLog(tx));
    let mut cfg = wirelab_test_support::local();
    cfg.tls = Some(Arc::new(server_tls));
    (cfg, t.client, rx)
}

/// The one client random the server derived 0-RTT keys for.
fn early_random(log: &Log) -> Vec<u8> {
    let early: Vec<_> = log.iter().filter(|(l, _)| l == EARLY).collect();
    assert_eq!(
        early.len(),
        1,
        "exactly one resumed session so far: {log:?}"
    );
    early[0].1.clone()
}

/// The quic server: the replayed ClientHello is handshaken afresh (its handshake secrets are
/// logged a second time) but never resumed (no second early secret), so its 0-RTT request
/// cannot be read, let alone answered.
#[tokio::test]
async fn a_replayed_0rtt_flight_is_not_resumed_by_the_quic_server() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (cfg, client_tls, mut log) = tls_with_key_log();
    let server = wirelab_test_support::start::<QuicServer>(cfg).await;
    let relay = Relay::start(server.addr).await;

    let echo = |addr, zero_rtt| {
        let mut c = ClientConfig::new(addr);
        c.tls = Some(client_tls.clone());
        c.zero_rtt = zero_rtt;
        async move {
            let mut client = within("connect", QuicClient::connect(&c)).await.unwrap();
            let mut ch = client.channels().remove(0);
            let m = codec::encode(0, 1, 1, Kind::Echo, 64).unwrap();
            assert!(within("echo", ch.echo(m.clone())).await.unwrap() == m);
            let early = within("early data", client.early_data()).await;
            drop(ch);
            within("close", client.close()).await.unwrap();
            early
        }
    };
    // A full handshake for a ticket, then the recorded 0-RTT connection through the relay.
    assert_eq!(echo(server.addr, false).await, None);
    assert_eq!(echo(relay.addr, true).await, Some(true), "0-RTT accepted");
    let flight = relay.flight();
    let random = early_random(&log.borrow());
    assert_eq!(count(&log.borrow(), HANDSHAKE, &random), 1);

    replay(server.addr, &flight, async || {
        let _ = log.wait_for(|l| count(l, HANDSHAKE, &random) >= 2).await;
    })
    .await;
    assert_eq!(
        count(&log.borrow(), EARLY, &random),
        1,
        "the replayed ClientHello resumed the session: its 0-RTT data would be accepted"
    );

    server.stop.cancel();
    within("server shutdown", server.task)
        .await
        .unwrap()
        .unwrap();
}

/// What a QUIC connection did, as the server's connection function saw it.
#[derive(Debug, Clone)]
struct Seen {
    remote: SocketAddr,
    /// Streams the connection delivered; `None` while it is open.
    streams: Option<usize>,
}

/// `QuicListener` (the quic and h3 servers' endpoint, same TLS and 0-RTT settings) with a
/// connection function that echoes each stream and reports how many it got: the replayed
/// connection is handed over (its ClientHello processed) but delivers no stream before it
/// times out, while the original delivered its request once.
#[tokio::test]
async fn a_replayed_0rtt_request_never_reaches_the_application() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (mut cfg, client_tls, log) = tls_with_key_log();
    // The replayed connection can never complete: it ends at the idle timeout.
    cfg.timeouts.idle = Duration::from_secs(1);
    let listener = QuicListener::bind(cfg, ALPN_WIRELAB_QUIC, 0).unwrap();
    let server = listener.local_addr();
    let (seen_tx, mut seen) = watch::channel(Vec::<Seen>::new());
    let seen_tx = Arc::new(seen_tx);
    let stop = CancellationToken::new();
    let sd = stop.clone();
    let serve = tokio::spawn(async move {
        let sd2 = sd.clone();
        listener
            .serve("replay-test", &sd, move |conn, _confirmed| {
                let (tx, sd) = (seen_tx.clone(), sd2.clone());
                async move {
                    let remote = conn.remote_address();
                    let i = opened(&tx, remote);
                    let mut streams = 0;
                    loop {
                        let (mut send, mut recv) = tokio::select! {
                            _ = sd.cancelled() => break,
                            s = conn.accept_bi() => match s {
                                Ok(s) => s,
                                Err(_) => break,
                            },
                        };
                        streams += 1;
                        if let Ok(data) = recv.read_to_end(1024).await {
                            let _ = send.write_all(&data).await;
                            let _ = send.finish();
                        }
                    }
                    tx.send_modify(|v| v[i].streams = Some(streams));
                    Ok(())
                }
            })
            .await
    });
    let relay = Relay::start(server).await;

    let echo = |addr, zero_rtt| {
        let mut c = ClientConfig::new(addr);
        c.tls = Some(client_tls.clone());
        c.zero_rtt = zero_rtt;
        async move {
            let connector = QuicConnector::new(&c, ALPN_WIRELAB_QUIC, 0).unwrap();
            let (conn, mut early) = within("connect", connector.connect()).await.unwrap();
            let (mut send, mut recv) = within("open", conn.open_bi()).await.unwrap();
            send.write_all(b"ping").await.unwrap();
            send.finish().unwrap();
            let back = within("echo", recv.read_to_end(1024)).await.unwrap();
            assert_eq!(Bytes::from(back), Bytes::from_static(b"ping"));
            let early = within("early data", early.outcome()).await;
            drop((send, recv, conn));
            connector.close(BOUND).await;
            early
        }
    };
    assert_eq!(echo(server, false).await, None);
    assert_eq!(echo(relay.addr, true).await, Some(true), "0-RTT accepted");
    let flight = relay.flight();
    let random = early_random(&log.borrow());

    let attacker = replay(server, &flight, async || {
        let _ = seen.wait_for(|v| v.len() >= 3).await;
    })
    .await;
    // Every connection has ended: the two clients closed, the replayed one timed out.
    let v = within(
        "every connection ends",
        seen.wait_for(|v| v.iter().all(|s| s.streams.is_some())),
    )
    .await
    .unwrap()
    .clone();
    assert_eq!(v.len(), 3, "{v:?}");
    assert_eq!(v[2].remote, attacker, "{v:?}");
    let streams: Vec<_> = v.iter().map(|s| s.streams.unwrap()).collect();
    assert_eq!(
        streams,
        [1, 1, 0],
        "requests per connection (full handshake, 0-RTT, replay of the 0-RTT flight)"
    );
    assert_eq!(count(&log.borrow(), EARLY, &random), 1, "resumed once");

    stop.cancel();
    within("server shutdown", serve).await.unwrap();
}

/// Records a new connection from `remote`; returns its index.
fn opened(seen: &watch::Sender<Vec<Seen>>, remote: SocketAddr) -> usize {
    let mut i = 0;
    seen.send_modify(|v| {
        i = v.len();
        v.push(Seen {
            remote,
            streams: None,
        });
    });
    i
}
