//! Slow readers: 50 WebSocket clients that flood the server (pings, or echo requests) and never
//! read a byte of what it sends back must not grow the server's memory by more than the
//! configured bounds allow.
//!
//! The server runs in a child process (this test binary, re-executed to run only
//! `server_process`), so the figure is the server's resident memory and nothing else: the test
//! asks it for its `VmRSS` once every client has finished its handshake (the baseline), and
//! again once every client has either sent its whole flood or found the server no longer
//! reading (a write that does not complete within [`STALL`]).
//!
//! The bound, per connection, with the default limits (`read_buffer` 8 KiB, `write_queue`
//! 64 KiB) and 16 KiB messages: the read buffers (tungstenite's 1 KiB, what `Gated` read ahead,
//! at most 8 KiB, plus the frame being assembled, 16 KiB); the session's queue (64 KiB plus one message); tungstenite's write buffer
//! (it writes once past 64 KiB: 64 KiB plus one frame, plus the pongs for the pings already read,
//! at most the 8 KiB read buffer, doubled by `Vec` growth: about 180 KiB). That is about 290
//! KiB. The test allows [`ALLOWED_PER_CONNECTION`] = 512 KiB for allocator slack. Before the
//! fix, every client's pings were answered into an unbounded (32 MiB) write buffer and 256
//! echoes were queued per connection, so the same floods grew the server by megabytes per
//! connection.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use wirelab_core::codec::{self, Kind};
use wirelab_core::{CancellationToken, Server, ServerConfig};

const CHILD_ENV: &str = "WIRELAB_SLOW_READER_SERVER";
const CLIENTS: usize = 50;
/// Bytes each client sends at most.
const FLOOD: usize = 16 << 20;
/// A write that makes no progress for this long means the server stopped reading from us.
const STALL: Duration = Duration::from_secs(2);
const ALLOWED_PER_CONNECTION: u64 = 512;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Not a test: the server process of the tests below, which start it.
#[test]
#[ignore = "the server process of the slow-reader tests, started by them"]
fn server_process() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kind = std::env::var(CHILD_ENV).unwrap();
    rt.block_on(async {
        let cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap());
        let shutdown = CancellationToken::new();
        let addr = match kind.as_str() {
            "ws" => {
                let server = wirelab_ws::WsServer::bind(cfg).await.unwrap();
                let addr = server.local_addr();
                tokio::spawn(server.serve(shutdown.clone()));
                addr
            }
            _ => {
                // h2c, prior knowledge.
                let server = wirelab_h2::H2Server::bind(cfg).await.unwrap();
                let addr = server.local_addr();
                tokio::spawn(server.serve(shutdown.clone()));
                addr
            }
        };
        println!("addr {addr}");
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if l == "rss" {
                println!("rss {}", rss_kib());
            }
        }
        shutdown.cancel();
    });
}

struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    addr: std::net::SocketAddr,
}

impl ServerProcess {
    async fn start(kind: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["server_process", "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_ENV, kind)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let l = lines.next_line().await.unwrap().expect("server exited");
            // The harness may have printed "test server_process ... " on the same line.
            if let Some((_, a)) = l.split_once("addr ") {
                break a.trim().parse().unwrap();
            }
        };
        Self {
            child,
            stdin,
            lines,
            addr,
        }
    }

    async fn rss_kib(&mut self) -> u64 {
        self.stdin.write_all(b"rss\n").await.unwrap();
        loop {
            let l = self
                .lines
                .next_line()
                .await
                .unwrap()
                .expect("server exited");
            if let Some((_, v)) = l.split_once("rss ") {
                return v.trim().parse().unwrap();
            }
        }
    }
}

/// A client socket with a small receive buffer (so the kernel cannot absorb much of what the
/// server sends).
async fn small_socket(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    let sock = s.connect(addr).await.unwrap();
    sock.set_nodelay(true).unwrap();
    sock
}

/// A small-buffered client socket past the WebSocket handshake.
async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let mut sock = small_socket(addr).await;
    sock.write_all(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    // Read exactly the 101 head (byte by byte: nothing after it may be consumed).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(sock.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{head:?}");
    sock
}

/// A client frame with the mask bit set and a zero key (so the payload goes as is).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(payload);
    f
}

/// Writes `chunk` until [`FLOOD`] bytes are sent or a write stalls. Returns the bytes sent.
async fn flood(mut sock: TcpStream, chunk: &[u8]) -> (TcpStream, usize) {
    let mut sent = 0;
    while sent < FLOOD {
        match tokio::time::timeout(STALL, sock.write_all(chunk)).await {
            Ok(Ok(())) => {}
            // The server closed the connection (h2: a peer that ignores flow control).
            Ok(Err(_)) => break,
            Err(_) => break,
        }
        sent += chunk.len();
    }
    (sock, sent)
}

/// Opens [`CLIENTS`] connections, floods with `chunk` from all at once, and returns the server's
/// RSS growth in KiB and the bytes the clients got in.
async fn flood_from_all(chunk: Vec<u8>) -> (u64, usize) {
    flood_from_all_of("ws", chunk, Vec::new()).await
}

/// [`flood_from_all`] against a `kind` server ("ws", or "h2" for h2c), each connection starting
/// with `opening` (h2: the preface).
async fn flood_from_all_of(kind: &str, chunk: Vec<u8>, opening: Vec<u8>) -> (u64, usize) {
    let mut server = ServerProcess::start(kind).await;
    let mut socks = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = if kind == "ws" {
            connect(server.addr).await
        } else {
            small_socket(server.addr).await
        };
        s.write_all(&opening).await.unwrap();
        socks.push(s);
    }
    let before = server.rss_kib().await;
    eprintln!("{CLIENTS} clients connected; server RSS {before} KiB");
    let chunk = std::sync::Arc::new(chunk);
    let tasks: Vec<_> = socks
        .into_iter()
        .map(|s| {
            let chunk = chunk.clone();
            tokio::spawn(async move { flood(s, &chunk).await })
        })
        .collect();
    let mut held = Vec::new();
    let mut total = 0;
    for t in tasks {
        let (s, sent) = t.await.unwrap();
        total += sent;
        // Still connected and still not reading while the server is measured.
        held.push(s);
    }
    eprintln!("floods done: {} KiB sent", total >> 10);
    let after = server.rss_kib().await;
    eprintln!("server RSS {after} KiB");
    if kind != "ws" {
        drop(held);
        let _ = server.child.kill().await;
        return (after.saturating_sub(before), total);
    }
    // The server still serves others while the floods are held back.
    let mut fresh = connect(server.addr).await;
    let msg = codec::encode(0, 1, 0, Kind::Echo, 64).unwrap();
    fresh.write_all(&masked_frame(0x2, &msg)).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            // Server frames are unmasked; skip keepalive pings.
            let mut head = [0u8; 2];
            fresh.read_exact(&mut head).await?;
            let mut payload = vec![0; usize::from(head[1] & 0x7f)];
            fresh.read_exact(&mut payload).await?;
            if head[0] != 0x89 {
                return std::io::Result::Ok((head[0], payload));
            }
        }
    })
    .await
    .expect("a fresh client got no echo")
    .unwrap();
    assert_eq!(echoed, (0x82, msg.to_vec()));
    drop(held);
    let _ = server.child.kill().await;
    (after.saturating_sub(before), total)
}

fn check(what: &str, grew_kib: u64, sent: usize) {
    let allowed = CLIENTS as u64 * ALLOWED_PER_CONNECTION;
    eprintln!(
        "{what}: {CLIENTS} clients sent {} KiB; server RSS grew {grew_kib} KiB ({} KiB per \
         connection), allowed {allowed} KiB",
        sent >> 10,
        grew_kib / CLIENTS as u64
    );
    assert!(
        grew_kib <= allowed,
        "{what}: server RSS grew {grew_kib} KiB, over the {allowed} KiB the bounds allow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_from_clients_that_never_read_is_bounded() {
    let ping = masked_frame(0x9, &[0x5a; 125]);
    let chunk: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 512)
        .collect();
    let (grew, sent) = flood_from_all(chunk).await;
    check("ping flood", grew, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_flood_from_clients_that_never_read_is_bounded() {
    let msg = codec::encode(0, 1, 0, Kind::Echo, 16 << 10).unwrap();
    let frame = masked_frame(0x2, &msg);
    let chunk: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 4)
        .collect();
    let (grew, sent) = flood_from_all(chunk).await;
    check("echo flood", grew, sent);
}

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn h2_preface() -> Vec<u8> {
    let mut v = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    v.extend(h2_frame(0x4, 0, 0, &[]));
    v
}

/// HTTP/2 is flow controlled: h2 answers PINGs one pending PONG at a time and stops reading
/// while it cannot write, so a PING flood from clients that never read is bounded by h2
/// itself. Verified here rather than assumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_ping_flood_from_clients_that_never_read_is_bounded() {
    let ping = h2_frame(0x6, 0, 0, &[7; 8]);
    let chunk: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 4096)
        .collect();
    let (grew, sent) = flood_from_all_of("h2", chunk, h2_preface()).await;
    check("h2 ping flood", grew, sent);
}

/// `POST /duplex` echoes from clients that never read the response: the response body is
/// bounded in bytes, the request body stops being read, and h2 stops granting window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_duplex_echo_flood_from_clients_that_never_read_is_bounded() {
    let mut opening = h2_preface();
    // HEADERS, END_HEADERS: POST /duplex (HPACK: static :method POST, :scheme http, literal
    // :path and :authority without indexing).
    let mut block = vec![0x83, 0x86, 0x04, 7];
    block.extend_from_slice(b"/duplex");
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"localhost");
    opening.extend(h2_frame(0x1, 0x4, 1, &block));
    let msg = codec::encode(1, 1, 0, Kind::Echo, 16 << 10).unwrap();
    let data = h2_frame(0x0, 0, 1, &msg);
    let chunk: Vec<u8> = data.iter().copied().cycle().take(data.len() * 4).collect();
    let (grew, sent) = flood_from_all_of("h2", chunk, opening).await;
    check("h2 duplex echo flood", grew, sent);
}
