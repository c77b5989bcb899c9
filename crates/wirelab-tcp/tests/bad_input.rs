//! Bad framing on the tcp floor: each case asserts the server closes that connection (and keeps
//! serving others). Every read is bounded; ports come from the OS.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wirelab_core::codec::{self, Kind};
use wirelab_core::{CancellationToken, Channel, Client, ClientConfig};
use wirelab_tcp::{TcpClient, TcpServer};

const BOUND: Duration = Duration::from_secs(10);

async fn server(max: usize) -> (SocketAddr, CancellationToken) {
    let mut cfg = wirelab_test_support::local();
    cfg.limits.max_message = max;
    let s = wirelab_test_support::start::<TcpServer>(cfg).await;
    (s.addr, s.stop)
}

/// Sends `raw` (then half-closes if `fin`) and returns what the server wrote before closing.
async fn answer(addr: SocketAddr, raw: &[u8], fin: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    if fin {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let r = tokio::time::timeout(BOUND, s.read_to_end(&mut out))
        .await
        .expect("server kept the connection open");
    // A reset is as good as a FIN here: the connection is closed.
    if let Err(e) = r {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    out
}

async fn still_serves(addr: SocketAddr) {
    let mut c = TcpClient::connect(&ClientConfig::new(addr)).await.unwrap();
    let mut ch = c.channels().remove(0);
    let m = codec::encode(0, 1, 2, Kind::Echo, 64).unwrap();
    assert_eq!(ch.echo(m.clone()).await.unwrap(), m);
    drop(ch);
    c.close().await.unwrap();
}

#[tokio::test]
async fn oversized_length_prefix_closes_without_reading_the_body() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(1024).await;
    // Declares 1 MiB and sends none of it: the server must not wait.
    let out = answer(addr, &(1u32 << 20).to_be_bytes(), false).await;
    assert!(out.is_empty());
    still_serves(addr).await;
}

#[tokio::test]
async fn truncated_message_closes() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(1024).await;
    let mut raw = 100u32.to_be_bytes().to_vec();
    raw.extend_from_slice(&[0u8; 10]);
    let out = answer(addr, &raw, true).await;
    assert!(out.is_empty());
    still_serves(addr).await;
}

#[tokio::test]
async fn truncated_length_prefix_closes() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(1024).await;
    let out = answer(addr, &[0, 0], true).await;
    assert!(out.is_empty());
}

#[tokio::test]
async fn malformed_message_closes_after_earlier_answers() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(1024).await;
    let good = codec::encode(0, 0, 0, Kind::Echo, 40).unwrap();
    let mut raw = (good.len() as u32).to_be_bytes().to_vec();
    raw.extend_from_slice(&good);
    let mut bad = good.to_vec();
    bad[0] = b'X';
    raw.extend_from_slice(&(bad.len() as u32).to_be_bytes());
    raw.extend_from_slice(&bad);
    let out = answer(addr, &raw, false).await;
    // The good message, read before the bad one, is still answered.
    assert_eq!(&out[..4], &40u32.to_be_bytes());
    assert_eq!(&out[4..], &good[..]);
    still_serves(addr).await;
}

#[tokio::test]
async fn header_length_disagreeing_with_the_frame_closes() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (addr, _stop) = server(1024).await;
    let good = codec::encode(0, 0, 0, Kind::Echo, 64).unwrap();
    let mut raw = 50u32.to_be_bytes().to_vec();
    raw.extend_from_slice(&good[..50]);
    let out = answer(addr, &raw, false).await;
    assert!(out.is_empty());
}
