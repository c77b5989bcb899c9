//! The WebSocket chapter of the book shows a real exchange with our server. This test captures
//! it again and fails if the book no longer shows exactly these bytes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wirelab_core::codec::{self, Kind};
use wirelab_core::{CancellationToken, Server, ServerConfig};
use wirelab_ws::WsServer;

const REQUEST: &str = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn hex_lines(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, c)| {
            let hex: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}  {}\n", i * 16, hex.join(" "))
        })
        .collect()
}

#[tokio::test]
async fn book_shows_the_bytes_our_server_sends() {
    let s = WsServer::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let addr = s.local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(s.serve(stop.clone()));

    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(REQUEST.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        sock.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    // A 40-byte service message: stream 1, sequence 2, send time 3 ns.
    let msg = codec::encode(1, 2, 3, Kind::Echo, 40).unwrap();
    let key = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x82, 0x80 | msg.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(msg.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    sock.write_all(&frame).await.unwrap();
    let mut echo = vec![0u8; 2 + msg.len()];
    tokio::time::timeout(Duration::from_secs(10), sock.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    stop.cancel();

    let captured = format!(
        "{}\n--- client frame ---\n{}--- server frame ---\n{}",
        String::from_utf8_lossy(&head)
            .replace("\r\n", "\n")
            .trim_end(),
        hex_lines(&frame),
        hex_lines(&echo)
    );
    let book = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/src/websocket.md"
    ))
    .unwrap();
    assert!(
        book.contains(&captured),
        "docs/src/websocket.md must contain this capture verbatim:\n{captured}"
    );
}
