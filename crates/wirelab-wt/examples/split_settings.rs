//! Shows a defect of wtransport 0.7.2's server (the library under `wirelab serve -t wt`): a
//! peer's SETTINGS frame that arrives in two packets, with a new stream between them, is
//! misread and the connection is closed with H3_FRAME_UNEXPECTED (0x105, 261).
//!
//! wtransport's connection driver reads the peer's control stream inside a `tokio::select!`
//! loop that builds the read anew on every turn. `Frame::read_async` takes the frame type, the
//! length and the payload off the stream in separate awaits and keeps none of it when it is
//! dropped, so when another branch (here: a new bidirectional stream) wins while a frame is
//! half read, the bytes already read are lost and the rest of the frame is parsed from its
//! middle. A client whose writes of one frame leave in separate packets (wtransport's own
//! client writes type, length and payload separately, and a multi-threaded runtime can send
//! a packet between them) meets this by chance; this example makes it happen on purpose.
//!
//! It sends the same valid control stream twice, over a raw QUIC connection to our wt server:
//! the stream type, an empty SETTINGS frame and a reserved (GREASE) frame of 33 bytes, which
//! RFC 9114 §7.2.8 says to ignore. Once in one write, and once split after the SETTINGS type
//! byte, with a bidirectional stream opened between the halves. With the defect, the split run
//! reads the SETTINGS length (0) as a DATA frame type and closes the connection with 261.
//!
//! Run: `cargo run -p wirelab-wt --example split_settings` (prints one line per case).

use std::time::Duration;

use wirelab_core::tls::ALPN_H3;
use wirelab_quinn::QuicConnector;
use wirelab_wt::WtServer;

/// How long a connection the server keeps is watched before it counts as kept.
const WATCH: Duration = Duration::from_secs(2);

/// Waits until the server has acknowledged something new, so the bytes sent before have been
/// received (quinn has no acknowledgement event, so its counter is read every millisecond).
async fn acknowledged(conn: &quinn::Connection) -> Result<(), String> {
    let before = conn.stats().frame_rx.acks;
    for _ in 0..5_000 {
        if conn.stats().frame_rx.acks > before {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err("no acknowledgement from the server within 5 s".into())
}

/// One connection: the control stream whole or split; what became of the connection.
async fn case(split: bool) -> Result<String, String> {
    let lab = wirelab_test_support::TlsLab::start::<WtServer>(ALPN_H3, |_| {}).await;
    let connector = QuicConnector::new(&lab.client(), ALPN_H3, 8).map_err(|e| e.to_string())?;
    let (conn, _) = connector.connect().await.map_err(|e| e.to_string())?;
    let mut control = conn.open_uni().await.map_err(|e| e.to_string())?;
    // Stream type 0x00 (control); SETTINGS (type 0x04, length 0); a reserved frame of type
    // 0x21 with 33 bytes of payload.
    let mut bytes = vec![0x00u8, 0x04, 0x00, 0x21, 0x21];
    bytes.extend_from_slice(&[0u8; 33]);
    let w = |e: quinn::WriteError| e.to_string();
    // The reserved frame opens a bidirectional stream: the server reads it and waits for the
    // stream's next frame.
    let grease = [0x21u8, 0x00];
    if split {
        control.write_all(&bytes[..2]).await.map_err(w)?;
        acknowledged(&conn).await?;
        let (mut other, _) = conn.open_bi().await.map_err(|e| e.to_string())?;
        other.write_all(&grease).await.map_err(w)?;
        acknowledged(&conn).await?;
        control.write_all(&bytes[2..]).await.map_err(w)?;
    } else {
        control.write_all(&bytes).await.map_err(w)?;
        let (mut other, _) = conn.open_bi().await.map_err(|e| e.to_string())?;
        other.write_all(&grease).await.map_err(w)?;
    }
    Ok(match tokio::time::timeout(WATCH, conn.closed()).await {
        Ok(e) => format!("server closed the connection: {e}"),
        Err(_) => format!("connection still open after {WATCH:?}"),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for (split, what) in [
        (false, "control stream in one write"),
        (true, "SETTINGS split after its type"),
    ] {
        match case(split).await {
            Ok(outcome) => println!("{what}: {outcome}"),
            Err(e) => println!("{what}: could not run: {e}"),
        }
    }
}
