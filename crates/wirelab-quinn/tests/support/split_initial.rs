//! Test support (shared by the wirelab-quinn and wirelab-h3 tests): a client whose ClientHello
//! needs two Initial packets, as a browser's does, and a UDP relay that delivers the second one
//! only after the server has processed the first.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use wirelab_quinn::quinn;

/// A rustls client config offering six 250-byte ALPN names before `alpn`: its ClientHello
/// (≈1.9 KB, like Chromium's) no longer fits in one Initial packet. The server still picks
/// `alpn`, the only name it knows.
pub(crate) fn split_hello_tls(base: &rustls::ClientConfig, alpn: &[u8]) -> rustls::ClientConfig {
    let mut tls = base.clone();
    let mut names: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            let mut n = format!("wirelab-filler-{i}-").into_bytes();
            n.resize(250, b'x');
            n
        })
        .collect();
    names.push(alpn.to_vec());
    tls.alpn_protocols = names;
    tls
}

/// A quinn client endpoint on an OS-chosen port and a config for `tls`.
pub(crate) fn client(tls: rustls::ClientConfig) -> (quinn::Endpoint, quinn::ClientConfig) {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    (endpoint, quinn::ClientConfig::new(Arc::new(crypto)))
}

/// What the relay saw, summed over the client connections it carried.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Clients (source addresses) seen.
    pub(crate) clients: AtomicUsize,
    /// Clients whose second datagram was an Initial packet too (the ClientHello's second half).
    pub(crate) split_hellos: AtomicUsize,
    /// Second datagrams released only after the server had answered the first one.
    pub(crate) held_until_answer: AtomicUsize,
}

/// A UDP relay in front of `server`. For each client (source address) it forwards the first
/// datagram at once and holds the second until the server has sent something back (its ACK of
/// the first Initial: the server has processed it alone), plus `extra` (a deliberate delay, so
/// the server's tasks run before the rest of the ClientHello arrives). Everything else passes.
pub(crate) struct Relay {
    /// Where clients send to.
    pub(crate) addr: SocketAddr,
    /// What was seen.
    pub(crate) counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Starts a relay to `server`.
    pub(crate) async fn start(server: SocketAddr, extra: Duration) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            let mut clients: HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
            // Dropped (and so aborted) with this task.
            let mut sessions = JoinSet::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = front.recv_from(&mut buf).await else {
                    return;
                };
                let tx = clients.entry(from).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    c.clients.fetch_add(1, Ordering::SeqCst);
                    sessions.spawn(session(front.clone(), from, server, rx, extra, c.clone()));
                    tx
                });
                let _ = tx.send(buf[..n].to_vec());
            }
        });
        Self { addr, counts, task }
    }
}

/// A QUIC v1 Initial packet (long header, type 0).
fn is_initial(d: &[u8]) -> bool {
    d.first()
        .is_some_and(|b| b & 0x80 != 0 && (b >> 4) & 0x03 == 0)
}

async fn session(
    front: Arc<UdpSocket>,
    client: SocketAddr,
    server: SocketAddr,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    extra: Duration,
    counts: Arc<Counts>,
) {
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let answered = Arc::new(Notify::new());
    let mut down = JoinSet::new();
    let (b, a) = (back.clone(), answered.clone());
    down.spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = b.recv(&mut buf).await {
            // `notify_one` keeps a permit when nobody waits yet: no answer is missed.
            a.notify_one();
            let _ = front.send_to(&buf[..n], client).await;
        }
    });
    let Some(first) = rx.recv().await else { return };
    let _ = back.send(&first).await;
    let Some(second) = rx.recv().await else {
        return;
    };
    if is_initial(&first) && is_initial(&second) {
        counts.split_hellos.fetch_add(1, Ordering::SeqCst);
    }
    // Bounded: the client's own retransmission timer (≈1 s) would resend anyway.
    if tokio::time::timeout(Duration::from_secs(2), answered.notified())
        .await
        .is_ok()
    {
        counts.held_until_answer.fetch_add(1, Ordering::SeqCst);
    }
    tokio::time::sleep(extra).await;
    let _ = back.send(&second).await;
    while let Some(d) = rx.recv().await {
        let _ = back.send(&d).await;
    }
}
