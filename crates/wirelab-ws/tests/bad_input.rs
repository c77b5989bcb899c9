//! Bad input sent as raw bytes, each asserting the exact answer (RFC 6455 status and close
//! codes). Every read is bounded; ports come from the OS.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wirelab_core::codec::{self, Kind};
use wirelab_core::{CancellationToken, Channel, Client, ClientConfig, Error, ServerConfig};
use wirelab_ws::{WsClient, WsServer};

const BOUND: Duration = Duration::from_secs(10);

async fn server(tweak: impl FnOnce(&mut ServerConfig)) -> (SocketAddr, CancellationToken) {
    let mut cfg = wirelab_test_support::local();
    tweak(&mut cfg);
    let s = wirelab_test_support::start::<WsServer>(cfg).await;
    (s.addr, s.stop)
}

/// Sends `raw` and reads until the server closes; returns everything it answered.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, s.read_to_end(&mut out))
        .await
        .expect("server did not close the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

const GOOD: &str = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn handshake_faults_get_exact_http_answers() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|_| {}).await;
    let cases: &[(String, &str, &[&str])] = &[
        (
            GOOD.replace("Version: 13", "Version: 8"),
            "HTTP/1.1 426 ",
            &["\r\nSec-WebSocket-Version: 13\r\n"],
        ),
        (
            GOOD.replace("Sec-WebSocket-Version: 13\r\n", ""),
            "HTTP/1.1 426 ",
            &["\r\nSec-WebSocket-Version: 13\r\n"],
        ),
        (
            GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            "HTTP/1.1 400 ",
            &["missing Sec-WebSocket-Key"],
        ),
        (
            GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "not-a-key"),
            "HTTP/1.1 400 ",
            &["not base64 of 16 bytes"],
        ),
        (
            GOOD.replace("Upgrade: websocket\r\n", ""),
            "HTTP/1.1 400 ",
            &["Upgrade: websocket"],
        ),
        (
            GOOD.replace("Connection: Upgrade\r\n", ""),
            "HTTP/1.1 400 ",
            &["Connection: Upgrade"],
        ),
        (GOOD.replace("/ws", "/nope"), "HTTP/1.1 404 ", &[]),
        (
            GOOD.replace("GET", "POST"),
            "HTTP/1.1 405 ",
            &["Allow: GET"],
        ),
        (
            "\x16\x03\x01garbage\r\n\r\n".to_string(),
            "HTTP/1.1 400 ",
            &["malformed"],
        ),
    ];
    for (raw, status, needles) in cases {
        let answer = exchange(addr, raw.as_bytes()).await;
        assert!(answer.starts_with(status), "for {raw:?} got {answer:?}");
        for n in *needles {
            assert!(
                answer.contains(n),
                "for {raw:?}: {n:?} missing in {answer:?}"
            );
        }
    }
}

#[tokio::test]
async fn oversized_handshake_gets_431() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|c| c.limits.max_header_bytes = 1024).await;
    let big = GOOD.replace(
        "Host: localhost\r\n",
        &format!("Host: localhost\r\nX-Pad: {}\r\n", "a".repeat(4000)),
    );
    let answer = exchange(addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
}

#[tokio::test]
async fn slow_handshake_times_out_with_408() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|c| c.timeouts.handshake = Duration::from_millis(300)).await;
    // Half a request line, then nothing (slowloris).
    let t0 = std::time::Instant::now();
    let answer = exchange(addr, b"GET /ws HTTP/1.1\r\nHost: x\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(290),
        "408 after {waited:?} for a 300 ms handshake timeout"
    );
}

/// A connected raw WebSocket client.
struct Raw(TcpStream);

impl Raw {
    async fn open(addr: SocketAddr) -> Self {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(GOOD.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            tokio::time::timeout(BOUND, s.read_exact(&mut b))
                .await
                .unwrap()
                .unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        Self(s)
    }

    /// A frame with FIN, `first` holding RSV bits and opcode, optionally masked.
    fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mut f = vec![first];
        let m = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xffff => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x12, 0x34, 0x56, 0x78];
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        f
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.unwrap();
    }

    /// Reads server frames until a close frame; returns its code (None if TCP ended first).
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            let mut h = [0u8; 2];
            if tokio::time::timeout(BOUND, self.0.read_exact(&mut h))
                .await
                .unwrap()
                .is_err()
            {
                return None;
            }
            assert_eq!(h[1] & 0x80, 0, "server frames are never masked");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.0.read_exact(&mut b).await.unwrap();
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.0.read_exact(&mut b).await.unwrap();
                    u64::from_be_bytes(b) as usize
                }
                n => n as usize,
            };
            let mut p = vec![0u8; len];
            self.0.read_exact(&mut p).await.unwrap();
            if h[0] & 0x0f == 0x8 {
                return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
            }
        }
    }
}

async fn close_code_for(frames: &[Vec<u8>], tweak: impl FnOnce(&mut ServerConfig)) -> Option<u16> {
    let (addr, _stop) = server(tweak).await;
    let mut raw = Raw::open(addr).await;
    for f in frames {
        raw.send(f).await;
    }
    raw.close_code().await
}

fn service_msg() -> Vec<u8> {
    codec::encode(0, 0, 0, Kind::Echo, 64).unwrap().to_vec()
}

#[tokio::test]
async fn unmasked_client_frame_closes_1002() {
    let _panics = wirelab_test_support::panics::no_panics();
    let f = Raw::frame(0x82, &service_msg(), false);
    assert_eq!(close_code_for(&[f], |_| {}).await, Some(1002));
}

#[tokio::test]
async fn control_frame_over_125_bytes_closes_1002() {
    let _panics = wirelab_test_support::panics::no_panics();
    let f = Raw::frame(0x89, &[0u8; 126], true);
    assert_eq!(close_code_for(&[f], |_| {}).await, Some(1002));
}

#[tokio::test]
async fn reserved_bits_close_1002() {
    let _panics = wirelab_test_support::panics::no_panics();
    let f = Raw::frame(0x80 | 0x40 | 0x2, &service_msg(), true);
    assert_eq!(close_code_for(&[f], |_| {}).await, Some(1002));
}

#[tokio::test]
async fn reserved_opcode_closes_1002() {
    let _panics = wirelab_test_support::panics::no_panics();
    let f = Raw::frame(0x83, b"abc", true);
    assert_eq!(close_code_for(&[f], |_| {}).await, Some(1002));
}

/// A person trying the server by hand (a browser console, websocat) gets text back as text and
/// bytes that are not a wirelab message back unchanged, on the same open connection.
#[tokio::test]
async fn plain_text_and_bytes_are_echoed_as_they_came() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|_| {}).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
        .await
        .unwrap();
    let sent = [
        Message::Text("hello".into()),
        Message::Binary(
            b"just some bytes that are long enough to be a header"
                .to_vec()
                .into(),
        ),
        Message::Binary(vec![7u8; 3].into()),
        Message::Binary(service_msg().into()),
        Message::Text("and text again".into()),
    ];
    for m in sent {
        ws.send(m.clone()).await.unwrap();
        let back = tokio::time::timeout(BOUND, ws.next())
            .await
            .expect("no answer")
            .unwrap()
            .unwrap();
        assert_eq!(back, m);
    }
}

#[tokio::test]
async fn invalid_wirelab_message_closes_1003() {
    let _panics = wirelab_test_support::panics::no_panics();
    // The magic, then a header version this server does not speak.
    let mut m = service_msg();
    m[2] = 9;
    let f = Raw::frame(0x82, &m, true);
    assert_eq!(close_code_for(&[f], |_| {}).await, Some(1003));
}

#[tokio::test]
async fn invalid_utf8_close_reason_closes_1007() {
    let _panics = wirelab_test_support::panics::no_panics();
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0xff, 0xfe, 0xfd]);
    let f = Raw::frame(0x88, &payload, true);
    assert_eq!(close_code_for(&[f], |_| {}).await, Some(1007));
}

#[tokio::test]
async fn message_over_the_limit_closes_1009() {
    let _panics = wirelab_test_support::panics::no_panics();
    let big = vec![0u8; 2048];
    let f = Raw::frame(0x82, &big, true);
    assert_eq!(
        close_code_for(&[f], |c| c.limits.max_message = 1024).await,
        Some(1009)
    );
}

#[tokio::test]
async fn declared_length_over_the_limit_closes_1009_before_the_payload() {
    let _panics = wirelab_test_support::panics::no_panics();
    // Header only: 1 MiB declared, no payload sent. The server must not wait for it.
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&(1u64 << 20).to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    let tweak = |c: &mut ServerConfig| {
        c.limits.max_message = 1024;
        c.limits.max_frame = 1024;
    };
    assert_eq!(close_code_for(&[f], tweak).await, Some(1009));
}

#[tokio::test]
async fn fragmented_message_over_the_limit_closes_1009() {
    let _panics = wirelab_test_support::panics::no_panics();
    // Three 512-byte fragments of one message: each frame is fine, the message is not.
    let part = vec![7u8; 512];
    let frames = vec![
        Raw::frame(0x02, &part, true),
        Raw::frame(0x00, &part, true),
        Raw::frame(0x80, &part, true),
    ];
    assert_eq!(
        close_code_for(&frames, |c| c.limits.max_message = 1024).await,
        Some(1009)
    );
}

#[tokio::test]
async fn normal_close_is_answered_1000() {
    let _panics = wirelab_test_support::panics::no_panics();
    let f = Raw::frame(0x88, &1000u16.to_be_bytes(), true);
    assert_eq!(close_code_for(&[f], |_| {}).await, Some(1000));
}

#[tokio::test]
async fn server_shutdown_sends_1001() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, stop) = server(|_| {}).await;
    let mut raw = Raw::open(addr).await;
    raw.send(&Raw::frame(0x82, &service_msg(), true)).await;
    let mut h = [0u8; 2];
    tokio::time::timeout(BOUND, raw.0.read_exact(&mut h))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h[0], 0x82, "binary echo");
    let mut p = vec![0u8; (h[1] & 0x7f) as usize];
    raw.0.read_exact(&mut p).await.unwrap();
    assert_eq!(p, service_msg());
    stop.cancel();
    assert_eq!(raw.close_code().await, Some(1001));
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|c| {
        c.timeouts.idle = Duration::from_millis(300);
        c.timeouts.ping_interval = None;
    })
    .await;
    let mut raw = Raw::open(addr).await;
    let t0 = std::time::Instant::now();
    assert_eq!(raw.close_code().await, Some(1001));
    // Not before the idle timeout (a server that closes at once would pass the line above).
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(3),
        "closed after {waited:?} for a 300 ms idle timeout"
    );
}

#[tokio::test]
async fn server_pings_at_its_interval() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) =
        server(|c| c.timeouts.ping_interval = Some(Duration::from_millis(50))).await;
    let mut raw = Raw::open(addr).await;
    // Five pings, each a complete empty ping frame, spaced by the interval: not a single
    // ping at connect, and not a burst.
    let t0 = std::time::Instant::now();
    let mut at = Vec::new();
    for _ in 0..5 {
        let mut h = [0u8; 2];
        tokio::time::timeout(BOUND, raw.0.read_exact(&mut h))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(h, [0x89, 0x00], "expected an empty ping frame");
        at.push(t0.elapsed());
    }
    // tokio's interval fires late rather than early; the first tick is one interval in.
    assert!(at[0] >= Duration::from_millis(45), "first ping at {at:?}");
    for w in at.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(25), "pings at {at:?}");
    }
    assert!(at[4] >= Duration::from_millis(240), "five pings in {at:?}");
}

/// A peer that completes the server side of the handshake; returns its socket.
async fn raw_server(listener: TcpListener) -> TcpStream {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    let req = String::from_utf8_lossy(&got).to_string();
    let key = req
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .unwrap();
    let accept = wirelab_ws::handshake::accept_key(&key);
    let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
    s.write_all(resp.as_bytes()).await.unwrap();
    s
}

#[tokio::test]
async fn client_reports_1006_when_tcp_dies_without_a_close_frame() {
    let _panics = wirelab_test_support::panics::no_panics();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { drop(raw_server(listener).await) });
    let mut client = WsClient::connect(&ClientConfig::new(addr)).await.unwrap();
    let mut ch = client.channels().remove(0);
    let e = tokio::time::timeout(BOUND, ch.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Closed { code: 1006, .. }), "{e:?}");
}

#[tokio::test]
async fn client_answers_the_servers_close_and_reports_its_code() {
    let _panics = wirelab_test_support::panics::no_panics();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut s = raw_server(listener).await;
        let mut close = vec![0x88, 2 + 4];
        close.extend_from_slice(&1001u16.to_be_bytes());
        close.extend_from_slice(b"bye!");
        s.write_all(&close).await.unwrap();
        // The client's reply: a masked close frame echoing the code (RFC 6455 §5.5.1).
        let mut h = [0u8; 2];
        tokio::time::timeout(BOUND, s.read_exact(&mut h))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(h[0], 0x88, "expected a close frame");
        assert_eq!(h[1] & 0x80, 0x80, "client frames are masked");
        let mut rest = vec![0u8; 4 + (h[1] & 0x7f) as usize];
        s.read_exact(&mut rest).await.unwrap();
        let code: Vec<u8> = rest[4..6]
            .iter()
            .zip(&rest[..2])
            .map(|(b, k)| b ^ k)
            .collect();
        u16::from_be_bytes([code[0], code[1]])
    });
    let mut client = WsClient::connect(&ClientConfig::new(addr)).await.unwrap();
    let mut ch = client.channels().remove(0);
    let e = tokio::time::timeout(BOUND, ch.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(e, Error::Closed { code: 1001, ref reason } if reason == "bye!"),
        "{e:?}"
    );
    assert_eq!(
        tokio::time::timeout(BOUND, peer).await.unwrap().unwrap(),
        1001
    );
}

/// `GET /` without an upgrade is the browser page, then the connection closes.
#[tokio::test]
async fn the_browser_page_is_served_at_slash() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|_| {}).await;
    let r = exchange(addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("const SERVER = \"ws\";"));
    assert!(r.contains("\r\nAccess-Control-Allow-Origin: *\r\n"));
    assert!(r.trim_end().ends_with("</html>"));
}
