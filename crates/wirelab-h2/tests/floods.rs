//! HTTP/2 flood classes sent as raw frames (h2c), each asserting the server's answer:
//! GOAWAY ENHANCE_YOUR_CALM, or every frame answered with the connection still alive.
//! Bounded waits throughout; ports chosen by the OS.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use wirelab_core::{CancellationToken, Server, ServerConfig};
use wirelab_h2::H2Server;

const BOUND: Duration = Duration::from_secs(10);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

const NO_ERROR: u32 = 0x0;
const ENHANCE_YOUR_CALM: u32 = 0xb;

async fn server(tweak: impl FnOnce(&mut ServerConfig)) -> (SocketAddr, CancellationToken) {
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    tweak(&mut cfg);
    let s = H2Server::bind(cfg).await.unwrap();
    let addr = s.local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(s.serve(stop.clone()));
    (addr, stop)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK block from the static table (RFC 7541 Appendix A) and literals without indexing.
fn request_block(method_post: bool, path: &str) -> Vec<u8> {
    let mut b = vec![if method_post { 0x83 } else { 0x82 }, 0x86]; // :method, :scheme http
    b.push(0x04); // :path, literal value
    b.push(path.len() as u8);
    b.extend_from_slice(path.as_bytes());
    b.push(0x01); // :authority, literal value
    b.push(9);
    b.extend_from_slice(b"localhost");
    b
}

struct Conn {
    rd: OwnedReadHalf,
    wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        let (rd, mut wr) = s.into_split();
        wr.write_all(PREFACE).await.unwrap();
        wr.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        Self { rd, wr }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.wr.write_all(bytes).await
    }
}

/// Reads frames until `stop` says so or the connection ends; returns (type, flags, payload).
async fn read_until(
    rd: &mut OwnedReadHalf,
    mut stop: impl FnMut(u8, u8, &[u8]) -> bool,
) -> Vec<(u8, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(BOUND, async {
        loop {
            let mut h = [0u8; 9];
            if rd.read_exact(&mut h).await.is_err() {
                return;
            }
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let mut p = vec![0u8; len];
            if rd.read_exact(&mut p).await.is_err() {
                return;
            }
            let done = stop(h[3], h[4], &p);
            out.push((h[3], h[4], p));
            if done {
                return;
            }
        }
    })
    .await;
    out
}

fn goaway_code(frames: &[(u8, u8, Vec<u8>)]) -> Option<u32> {
    frames
        .iter()
        .find(|(t, _, _)| *t == GOAWAY)
        .map(|(_, _, p)| u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
}

async fn goaway_after(addr: SocketAddr, flood: Vec<u8>) -> Option<u32> {
    let mut c = Conn::open(addr).await;
    // The server may close mid-flood; what it said before closing is what counts.
    let _ = c.send(&flood).await;
    let frames = read_until(&mut c.rd, |t, _, _| t == GOAWAY).await;
    goaway_code(&frames)
}

#[tokio::test]
async fn rapid_reset_gets_enhance_your_calm() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|_| {}).await;
    let mut flood = Vec::new();
    for i in 0..500u32 {
        let id = 2 * i + 1;
        flood.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &request_block(false, "/stream?count=1000&size=64&interval_ms=100"),
        ));
        flood.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
    }
    assert_eq!(goaway_after(addr, flood).await, Some(ENHANCE_YOUR_CALM));
}

#[tokio::test]
async fn continuation_flood_gets_enhance_your_calm() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|_| {}).await;
    // HEADERS without END_HEADERS, then endless empty CONTINUATION frames.
    let mut flood = frame(HEADERS, END_STREAM, 1, &request_block(false, "/"));
    for _ in 0..1000 {
        flood.extend(frame(CONTINUATION, 0, 1, &[]));
    }
    assert_eq!(goaway_after(addr, flood).await, Some(ENHANCE_YOUR_CALM));
}

#[tokio::test]
async fn empty_data_flood_gets_enhance_your_calm() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|_| {}).await;
    let mut flood = frame(HEADERS, END_HEADERS, 1, &request_block(true, "/echo"));
    for _ in 0..1000 {
        flood.extend(frame(DATA, 0, 1, &[]));
    }
    assert_eq!(goaway_after(addr, flood).await, Some(ENHANCE_YOUR_CALM));
}

/// Floods the connection with `n` copies of a frame while reading the answers, then checks the
/// connection is alive: a final PING with a distinct payload is acknowledged.
async fn absorbs(addr: SocketAddr, one: Vec<u8>, n: usize, is_answer: fn(u8, u8) -> bool) -> usize {
    let c = Conn::open(addr).await;
    let (mut rd, mut wr) = (c.rd, c.wr);
    let reader = tokio::spawn(async move {
        let mut answers = 0usize;
        let frames = read_until(&mut rd, |t, f, p| {
            if is_answer(t, f) {
                answers += 1;
            }
            t == GOAWAY || (t == PING && f & ACK != 0 && p == b"alive?!!")
        })
        .await;
        (answers, frames)
    });
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    for _ in 0..n / 1000 {
        wr.write_all(&batch).await.unwrap();
    }
    wr.write_all(&frame(PING, 0, 0, b"alive?!!")).await.unwrap();
    let (answers, frames) = tokio::time::timeout(BOUND, reader).await.unwrap().unwrap();
    assert_eq!(
        goaway_code(&frames),
        None,
        "the server gave up on a legal flood"
    );
    let last = frames.last().expect("no answer at all");
    assert_eq!(
        (last.0, last.2.as_slice()),
        (PING, &b"alive?!!"[..]),
        "connection not alive after the flood"
    );
    answers
}

#[tokio::test]
async fn ping_flood_is_answered_and_the_connection_stays_alive() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|_| {}).await;
    let answers = absorbs(addr, frame(PING, 0, 0, b"flood!!!"), 20_000, |t, f| {
        t == PING && f & ACK != 0
    })
    .await;
    // Every PING is acknowledged (the final one too, counted here).
    assert_eq!(answers, 20_001);
}

#[tokio::test]
async fn settings_flood_is_answered_and_the_connection_stays_alive() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|_| {}).await;
    let answers = absorbs(addr, frame(SETTINGS, 0, 0, &[]), 20_000, |t, f| {
        t == SETTINGS && f & ACK != 0
    })
    .await;
    // One more ACK answers the client's first SETTINGS.
    assert_eq!(answers, 20_001);
}

#[tokio::test]
async fn idle_connection_gets_goaway() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|c| {
        c.timeouts.idle = Duration::from_millis(300);
        c.timeouts.ping_interval = None;
    })
    .await;
    let mut c = Conn::open(addr).await;
    let frames = read_until(&mut c.rd, |t, _, _| t == GOAWAY).await;
    assert_eq!(goaway_code(&frames), Some(NO_ERROR));
}

#[tokio::test]
async fn shutdown_sends_goaway() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, stop) = server(|_| {}).await;
    let mut c = Conn::open(addr).await;
    // Wait for the server's SETTINGS so the connection is established before shutting down.
    read_until(&mut c.rd, |t, f, _| t == SETTINGS && f & ACK == 0).await;
    stop.cancel();
    let frames = read_until(&mut c.rd, |t, _, _| t == GOAWAY).await;
    assert_eq!(goaway_code(&frames), Some(NO_ERROR));
}

#[tokio::test]
async fn streams_over_the_limit_are_refused() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(|c| c.h2.max_concurrent_streams = 4).await;
    let mut c = Conn::open(addr).await;
    // Wait for the server's SETTINGS (the limit), then open 6 slow streams at once.
    read_until(&mut c.rd, |t, f, _| t == SETTINGS && f & ACK == 0).await;
    let mut burst = Vec::new();
    for i in 0..6u32 {
        burst.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            2 * i + 1,
            &request_block(false, "/stream?count=100&size=64&interval_ms=100"),
        ));
    }
    c.send(&burst).await.unwrap();
    let frames = read_until(&mut c.rd, |t, _, _| t == RST_STREAM).await;
    let rst = frames
        .iter()
        .find(|(t, _, _)| *t == RST_STREAM)
        .expect("no RST_STREAM");
    // REFUSED_STREAM (0x7): safe for the client to retry.
    assert_eq!(
        u32::from_be_bytes([rst.2[0], rst.2[1], rst.2[2], rst.2[3]]),
        0x7
    );
}
