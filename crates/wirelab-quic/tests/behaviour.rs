//! The quic floor's behaviour beyond the conformance module: 0-RTT resumption, the stream
//! limit, the idle timeout, junk datagrams, qlog files. Every wait is bounded by an event or
//! `BOUND`; ports come from the OS.

use std::net::UdpSocket;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use wirelab_core::codec::{self, Kind, StreamRequest};
use wirelab_core::tls::{client_config, Trust, ALPN_WIRELAB_QUIC};
use wirelab_core::{Channel, Client, ClientConfig, Error, Server, ServerConfig, Sharing};
use wirelab_quic::{QuicClient, QuicServer};
use wirelab_quinn::QuicConnector;

const BOUND: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    wirelab_test_support::within(what, BOUND, f).await
}

/// The served server and the client TLS that trusts it (`wirelab_test_support::TlsLab`).
struct Lab(wirelab_test_support::TlsLab);

impl std::ops::Deref for Lab {
    type Target = wirelab_test_support::TlsLab;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Lab {
    async fn start(tune: impl FnOnce(&mut ServerConfig)) -> Self {
        Self(wirelab_test_support::TlsLab::start::<QuicServer>(ALPN_WIRELAB_QUIC, tune).await)
    }

    async fn stop(self) {
        self.0.stop(BOUND).await;
    }
}

fn msg(seq: u64) -> Bytes {
    codec::encode(0, seq, seq, Kind::Echo, 64).unwrap()
}

/// Connects in a task of its own: no timer of the test's task (`within`'s) polls `connect`
/// again, so only a wake-up (or `connect`'s own timeouts) can finish it.
async fn connect_apart(cfg: &ClientConfig) -> QuicClient {
    let cfg = cfg.clone();
    let task = tokio::spawn(async move { QuicClient::connect(&cfg).await });
    within("connect", task).await.unwrap().unwrap()
}

/// A quic server with its own TLS config (so its own session cache) granting `streams`.
async fn serve(
    tls: std::sync::Arc<rustls::ServerConfig>,
    streams: u32,
) -> wirelab_test_support::Served {
    let mut cfg = wirelab_test_support::local();
    cfg.tls = Some(tls);
    cfg.quic.max_concurrent_streams = streams;
    wirelab_test_support::start::<QuicServer>(cfg).await
}

async fn one_echo(cfg: &ClientConfig) -> Option<bool> {
    let mut c = within("connect", QuicClient::connect(cfg)).await.unwrap();
    let mut ch = c.channels().remove(0);
    let m = msg(1);
    assert!(within("echo", ch.echo(m.clone())).await.unwrap() == m);
    let early = within("early data", c.early_data()).await;
    drop(ch);
    within("close", c.close()).await.unwrap();
    early
}

#[tokio::test]
async fn zero_rtt_resumes_with_a_ticket_and_not_without() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = Lab::start(|_| {}).await;
    let mut cfg = lab.client();
    // First contact: a full handshake, which leaves a ticket in the shared TLS config.
    assert_eq!(one_echo(&cfg).await, None);
    cfg.zero_rtt = true;
    assert_eq!(one_echo(&cfg).await, Some(true), "0-RTT was not used");
    // A fresh TLS config holds no ticket: 0-RTT is asked for but cannot be offered.
    let mut fresh = lab.client();
    fresh.tls = Some(client_config(&Trust::InsecureAnyCertificate, &[ALPN_WIRELAB_QUIC]).unwrap());
    fresh.zero_rtt = true;
    assert_eq!(one_echo(&fresh).await, None);
    lab.stop().await;
}

#[tokio::test]
async fn a_server_stream_asked_for_in_0rtt_is_still_served_completely() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = Lab::start(|_| {}).await;
    let mut cfg = lab.client();
    one_echo(&cfg).await;
    cfg.zero_rtt = true;
    let mut c = within("connect", QuicClient::connect(&cfg)).await.unwrap();
    let mut ch = c.channels().remove(0);
    let req = StreamRequest {
        count: 50,
        size: 64,
        interval_ms: 0,
    };
    let got = within("stream", ch.server_stream(req)).await.unwrap();
    assert_eq!(got.len(), 50);
    assert_eq!(within("early data", c.early_data()).await, Some(true));
    drop(ch);
    within("close", c.close()).await.unwrap();
    lab.stop().await;
}

#[tokio::test]
async fn a_client_is_held_to_the_stream_limit() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = Lab::start(|c| c.quic.max_concurrent_streams = 4).await;
    let cfg = lab.client();
    let connector = QuicConnector::new(&cfg, ALPN_WIRELAB_QUIC, 0).unwrap();
    let (conn, _) = within("connect", connector.connect()).await.unwrap();
    let mut streams = Vec::new();
    for seq in 0..4u64 {
        let (mut send, mut recv) = within("open", conn.open_bi()).await.unwrap();
        let m = msg(seq);
        send.write_all(&(m.len() as u32).to_be_bytes())
            .await
            .unwrap();
        send.write_all(&m).await.unwrap();
        let mut back = vec![0u8; 4 + m.len()];
        within("echo", recv.read_exact(&mut back)).await.unwrap();
        streams.push((send, recv));
    }
    // The server granted 4 streams: a fifth cannot even be opened (no frame is sent for it).
    assert!(
        conn.open_bi().now_or_never().is_none(),
        "a fifth stream opened over the limit of 4"
    );
    // Ending one stream (both directions) frees one: the server grants a new stream.
    let (mut send, mut recv) = streams.remove(0);
    send.finish().unwrap();
    within("server's FIN", recv.read_to_end(1 << 20))
        .await
        .unwrap();
    let (mut send, mut recv) = within("open after MAX_STREAMS", conn.open_bi())
        .await
        .unwrap();
    let m = msg(9);
    send.write_all(&(m.len() as u32).to_be_bytes())
        .await
        .unwrap();
    send.write_all(&m).await.unwrap();
    let mut back = vec![0u8; 4 + m.len()];
    within("echo on the new stream", recv.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(&back[4..], &m[..]);
    drop(streams);
    drop(conn);
    connector.close(BOUND).await;
    lab.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_by_the_idle_timeout() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = Lab::start(|c| c.timeouts.idle = Duration::from_millis(300)).await;
    let mut cfg = lab.client();
    // No keep-alive PINGs: the client stays silent after connecting.
    cfg.timeouts.ping_interval = None;
    let connector = QuicConnector::new(&cfg, ALPN_WIRELAB_QUIC, 0).unwrap();
    let (conn, _) = within("connect", connector.connect()).await.unwrap();
    let t0 = std::time::Instant::now();
    // QUIC uses the smaller of the two idle timeouts (RFC 9000 §10.1): the server's 300 ms.
    let reason = within("idle close", conn.closed()).await;
    assert_eq!(reason, quinn::ConnectionError::TimedOut);
    // Not before the timeout (a connection that closes at once would pass the line above);
    // quinn arms the timer from the last packet, at most a handshake's time before t0.
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after {waited:?} for a 300 ms idle timeout"
    );
    // The server keeps serving.
    one_echo(&lab.client()).await;
    lab.stop().await;
}

#[tokio::test]
async fn junk_datagrams_are_ignored_and_the_server_keeps_serving() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = Lab::start(|_| {}).await;
    let mut c = within("connect", QuicClient::connect(&lab.client()))
        .await
        .unwrap();
    let mut ch = c.channels().remove(0);
    within("echo", ch.echo(msg(0))).await.unwrap();
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..3000usize {
        // xorshift: reproducible junk of every length, some dressed as QUIC long and short
        // headers (with versions the server does not speak, or unknown connection ids).
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x as usize % 1400);
        let mut d: Vec<u8> = (0..len).map(|j| (x >> (j % 56)) as u8).collect();
        match i % 3 {
            0 => d[0] = 0xc0 | (d[0] & 0x0f),
            1 => d[0] = 0x40 | (d[0] & 0x3f),
            _ => {}
        }
        junk.send_to(&d, lab.addr).unwrap();
    }
    // The established connection and a new one both still work.
    for seq in 1..100 {
        let m = msg(seq);
        assert!(within("echo after junk", ch.echo(m.clone())).await.unwrap() == m);
    }
    one_echo(&lab.client()).await;
    assert!(!lab.task.is_finished(), "the server stopped");
    drop(ch);
    within("close", c.close()).await.unwrap();
    lab.stop().await;
}

/// A client that changes its address (a new UDP socket; the old one neither sends nor
/// receives from then on, as after a NAT rebinding) keeps its connection: the server migrates
/// it to the new address, and echoes go on with no new handshake.
#[tokio::test]
async fn an_address_change_migrates_the_connection() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = Lab::start(|_| {}).await;
    let mut c = within("connect", QuicClient::connect(&lab.client()))
        .await
        .unwrap();
    let mut ch = c.channels().remove(0);
    within("echo", ch.echo(msg(0))).await.unwrap();
    for round in 0..3u64 {
        assert!(
            within("migrate", c.migrate()).await.unwrap(),
            "quic migrates"
        );
        for seq in 1..50 {
            let m = msg(round * 100 + seq);
            // Only the new socket receives: the answer came through the migrated path.
            assert!(
                within("echo after migrating", ch.echo(m.clone()))
                    .await
                    .unwrap()
                    == m
            );
        }
    }
    drop(ch);
    within("close", c.close()).await.unwrap();
    lab.stop().await;
}

#[tokio::test]
async fn qlog_files_are_written_per_connection() {
    let _panics = wirelab_test_support::panics::no_panics();
    let dir = std::env::temp_dir().join(format!("wirelab-qlog-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server_dir = dir.join("server");
    let client_dir = dir.join("client");
    let lab = Lab::start(|c| c.qlog_dir = Some(server_dir.clone())).await;
    let mut cfg = lab.client();
    cfg.qlog_dir = Some(client_dir.clone());
    one_echo(&cfg).await;
    lab.stop().await;
    for d in [&server_dir, &client_dir] {
        let files: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{}: {files:?}", d.display());
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(
            text.contains("qlog_version"),
            "no qlog header in {}",
            files[0].display()
        );
        assert!(
            text.contains("packet_sent"),
            "no packet events in {}",
            files[0].display()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn cleartext_is_refused_with_a_clear_error() {
    let _panics = wirelab_test_support::panics::no_panics();
    let e = QuicServer::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    assert!(e.to_string().contains("TLS 1.3"), "{e}");
    let e = QuicClient::connect(&ClientConfig::new("127.0.0.1:9".parse().unwrap()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("TLS 1.3"), "{e}");
}

/// A server that refuses the client's early data: a second server instance with the same
/// certificate does not hold the session the ticket names (rustls's server cache is per
/// instance), so its handshake falls back to a full one and the 0-RTT data is rejected. The
/// client must say so (`early_data() == Some(false)`) and still get its echo, sent again in
/// 1-RTT, not lose it.
#[tokio::test]
async fn early_data_a_server_refuses_is_reported_and_the_echo_still_arrives() {
    let _panics = wirelab_test_support::panics::no_panics();
    let tls = wirelab_test_support::test_tls(ALPN_WIRELAB_QUIC);
    let serve = |tls: std::sync::Arc<rustls::ServerConfig>| async move {
        let mut cfg = wirelab_test_support::local();
        cfg.tls = Some(tls);
        wirelab_test_support::start::<QuicServer>(cfg).await
    };
    // B: the same certificate, its own rustls server config, so its own session cache.
    let b_tls = tls.identity.server_config(&[ALPN_WIRELAB_QUIC]).unwrap();
    let (a, b) = (serve(tls.server.clone()).await, serve(b_tls).await);
    let mut cfg = ClientConfig::new(a.addr);
    cfg.tls = Some(tls.client.clone());
    assert_eq!(
        one_echo(&cfg).await,
        None,
        "first contact: a full handshake"
    );
    cfg.zero_rtt = true;
    assert_eq!(
        one_echo(&cfg).await,
        Some(true),
        "server A accepts its own ticket"
    );
    cfg.addr = b.addr;
    assert_eq!(
        one_echo(&cfg).await,
        Some(false),
        "server B must refuse 0-RTT"
    );
    for s in [a, b] {
        s.stop.cancel();
        within("server shutdown", s.task).await.unwrap().unwrap();
    }
}

/// The refusal above with several channels, each with echoes in flight, in both sharings:
/// four streams on one connection (`shared`) or one connection each (`pool`), every channel
/// sending three echoes in 0-RTT and then waiting for them, all at once. quinn numbers the
/// streams opened after a rejection from 0 again, so on the shared connection the channels'
/// new streams take the numbers of the discarded ones; every echo must still arrive, in
/// order. Before the fix the shared case hung (a discarded stream dropped after another
/// channel's new stream with its number was waiting took that stream's wake-up).
#[tokio::test]
async fn refused_early_data_with_four_channels_each_with_echoes_in_flight() {
    let _panics = wirelab_test_support::panics::no_panics();
    const K: u32 = 4;
    const IN_FLIGHT: u64 = 3;
    let tls = wirelab_test_support::test_tls(ALPN_WIRELAB_QUIC);
    let serve = |tls: std::sync::Arc<rustls::ServerConfig>| async move {
        let mut cfg = wirelab_test_support::local();
        cfg.tls = Some(tls);
        wirelab_test_support::start::<QuicServer>(cfg).await
    };
    let b_tls = tls.identity.server_config(&[ALPN_WIRELAB_QUIC]).unwrap();
    let (a, b) = (serve(tls.server.clone()).await, serve(b_tls).await);
    for sharing in [Sharing::Shared, Sharing::Pool] {
        let mut cfg = ClientConfig::new(a.addr);
        // A fresh TLS config per sharing, so its ticket comes from A's full handshake below.
        cfg.tls =
            Some(client_config(&Trust::InsecureAnyCertificate, &[ALPN_WIRELAB_QUIC]).unwrap());
        cfg.streams = K;
        cfg.sharing = sharing;
        // Full handshakes with A (`one_echo` connects like the session: in `pool` four
        // connections, each leaving two tickets), then 0-RTT to B, which refuses it.
        assert_eq!(one_echo(&cfg).await, None, "{sharing:?}: first contact");
        cfg.zero_rtt = true;
        cfg.addr = b.addr;
        let mut c = within("connect", QuicClient::connect(&cfg)).await.unwrap();
        let msgs = |id: u32| -> Vec<Bytes> {
            (1..=IN_FLIGHT)
                .map(|seq| codec::encode(id, seq, seq, Kind::Echo, 100).unwrap())
                .collect()
        };
        // One task per channel, as the harness runs them: each wakes on its own.
        let runs: Vec<_> = c
            .channels()
            .into_iter()
            .map(|mut ch| {
                tokio::spawn(async move {
                    let sent = msgs(ch.id());
                    for m in &sent {
                        ch.send(m.clone()).await?;
                    }
                    for m in &sent {
                        let back = ch.recv().await?;
                        assert!(back == *m, "{sharing:?} stream {}: {back:?}", ch.id());
                    }
                    Ok::<_, Error>(ch)
                })
            })
            .collect();
        let mut chs = Vec::new();
        for (id, run) in runs.into_iter().enumerate() {
            let what = format!("{sharing:?}: channel {id}'s echoes");
            chs.push(within(&what, run).await.unwrap().unwrap());
        }
        assert_eq!(chs.len(), K as usize);
        assert_eq!(
            within("early data", c.early_data()).await,
            Some(false),
            "{sharing:?}: server B must refuse 0-RTT"
        );
        drop(chs);
        within("close", c.close()).await.unwrap();
    }
    for s in [a, b] {
        s.stop.cancel();
        within("server shutdown", s.task).await.unwrap().unwrap();
    }
}

/// A channel that never used its 0-RTT stream, dropped after the refusal while another
/// channel waits on a new stream with the number of that discarded one: the waiting channel
/// must still get its echo. Four channels on one connection: channel 0 stays idle; 1, 2 and 3
/// each send and receive an echo, which makes them open new streams, numbered 0, 1 and 2 after
/// the rejection (channel 1's takes channel 0's old number); then channel 1 waits for a second
/// echo in its own task while channel 0 is dropped.
#[tokio::test]
async fn a_channel_idle_through_refused_early_data_and_dropped_later_takes_no_wake_up() {
    let _panics = wirelab_test_support::panics::no_panics();
    let tls = wirelab_test_support::test_tls(ALPN_WIRELAB_QUIC);
    let serve = |tls: std::sync::Arc<rustls::ServerConfig>| async move {
        let mut cfg = wirelab_test_support::local();
        cfg.tls = Some(tls);
        wirelab_test_support::start::<QuicServer>(cfg).await
    };
    let b_tls = tls.identity.server_config(&[ALPN_WIRELAB_QUIC]).unwrap();
    let (a, b) = (serve(tls.server.clone()).await, serve(b_tls).await);
    let mut cfg = ClientConfig::new(a.addr);
    cfg.tls = Some(tls.client.clone());
    assert_eq!(one_echo(&cfg).await, None, "first contact");
    cfg.zero_rtt = true;
    cfg.addr = b.addr;
    cfg.streams = 4;
    let mut c = within("connect", QuicClient::connect(&cfg)).await.unwrap();
    let mut chs = c.channels();
    let idle = chs.remove(0);
    for ch in &mut chs {
        within("send", ch.send(msg(1))).await.unwrap();
    }
    for ch in &mut chs {
        assert!(within("echo", ch.recv()).await.unwrap() == msg(1));
    }
    assert_eq!(within("early data", c.early_data()).await, Some(false));
    let mut ch1 = chs.remove(0);
    let waiting = tokio::spawn(async move {
        ch1.send(msg(2)).await?;
        let back = ch1.recv().await?;
        Ok::<_, Error>((ch1, back))
    });
    // Let the task send and start waiting (no timer: it runs before this task resumes).
    tokio::task::yield_now().await;
    drop(idle);
    let (ch1, back) = within("channel 1's second echo", waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(back == msg(2));
    drop((ch1, chs));
    within("close", c.close()).await.unwrap();
    for s in [a, b] {
        s.stop.cancel();
        within("server shutdown", s.task).await.unwrap().unwrap();
    }
}

/// As above, with the new stream opened by `connect` itself: server A grants four streams, so
/// the ticket allows four in 0-RTT, and a fifth channel's stream waits for credit until the
/// handshake with B (which grants more) ends; B refused the early data, so that stream is
/// numbered 0 again, like channel 0's discarded one. Channel 0 stays idle and is dropped while
/// channel 4 waits for its echo, before any channel has seen the refusal itself.
#[tokio::test]
async fn a_stream_connect_opens_after_the_refusal_loses_no_wake_up_to_an_idle_channel() {
    let _panics = wirelab_test_support::panics::no_panics();
    let tls = wirelab_test_support::test_tls(ALPN_WIRELAB_QUIC);
    let b_tls = tls.identity.server_config(&[ALPN_WIRELAB_QUIC]).unwrap();
    let (a, b) = (serve(tls.server.clone(), 4).await, serve(b_tls, 8).await);
    let mut cfg = ClientConfig::new(a.addr);
    cfg.tls = Some(tls.client.clone());
    assert_eq!(one_echo(&cfg).await, None, "first contact");
    cfg.zero_rtt = true;
    cfg.addr = b.addr;
    cfg.streams = 5;
    // Longer than `BOUND`: the fifth stream must be opened by a wake-up, not by the timer of
    // the timeout around it (see the test after this one).
    cfg.timeouts.handshake = 6 * BOUND;
    let mut c = connect_apart(&cfg).await;
    let mut chs = c.channels();
    let idle = chs.remove(0);
    let mut ch4 = chs.pop().unwrap();
    let waiting = tokio::spawn(async move {
        ch4.send(msg(1)).await?;
        let back = ch4.recv().await?;
        Ok::<_, Error>((ch4, back))
    });
    // Let the task send and start waiting (no timer: it runs before this task resumes).
    tokio::task::yield_now().await;
    drop(idle);
    let (ch4, back) = within("channel 4's echo", waiting).await.unwrap().unwrap();
    assert!(back == msg(1));
    for ch in &mut chs {
        assert!(within("echo", ch.echo(msg(2))).await.unwrap() == msg(2));
    }
    assert_eq!(within("early data", c.early_data()).await, Some(false));
    drop((ch4, chs));
    within("close", c.close()).await.unwrap();
    for s in [a, b] {
        s.stop.cancel();
        within("server shutdown", s.task).await.unwrap().unwrap();
    }
}

/// More channels than the ticket's remembered stream limit: the streams over it wait for
/// credit until the handshake ends and the server's own limit applies, whether the server
/// accepts the early data (A: its limit rose from 4 to 8 since the ticket) or refuses it (B,
/// which grants 8; the count starts from 0 again). quinn raises the limit then without waking
/// a task waiting to open a stream; before the client looked for the handshake's end itself,
/// `connect` waited until the handshake timeout's timer polled it again (10 s by default;
/// here set longer than `BOUND`). Every channel then echoes.
#[tokio::test]
async fn channels_over_the_remembered_stream_limit_open_when_the_handshake_ends() {
    let _panics = wirelab_test_support::panics::no_panics();
    let tls = wirelab_test_support::test_tls(ALPN_WIRELAB_QUIC);
    let b_tls = tls.identity.server_config(&[ALPN_WIRELAB_QUIC]).unwrap();
    let a4 = serve(tls.server.clone(), 4).await;
    let (a8, b) = (serve(tls.server.clone(), 8).await, serve(b_tls, 8).await);
    for (server, want) in [(a8.addr, Some(true)), (b.addr, Some(false))] {
        let mut cfg = ClientConfig::new(a4.addr);
        // A fresh ticket store each time, so the ticket comes from A with the limit of 4.
        cfg.tls =
            Some(client_config(&Trust::InsecureAnyCertificate, &[ALPN_WIRELAB_QUIC]).unwrap());
        assert_eq!(one_echo(&cfg).await, None, "first contact");
        cfg.zero_rtt = true;
        cfg.addr = server;
        cfg.streams = 6;
        cfg.timeouts.handshake = 6 * BOUND;
        let mut c = connect_apart(&cfg).await;
        let mut chs = c.channels();
        for ch in &mut chs {
            let m = msg(u64::from(ch.id()));
            assert!(within("echo", ch.echo(m.clone())).await.unwrap() == m);
        }
        assert_eq!(within("early data", c.early_data()).await, want);
        drop(chs);
        within("close", c.close()).await.unwrap();
    }
    for s in [a4, a8, b] {
        s.stop.cancel();
        within("server shutdown", s.task).await.unwrap().unwrap();
    }
}
