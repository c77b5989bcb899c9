//! A ClientHello in two Initial packets, processed apart (what browsers send): the connection
//! handed to the server's connection function must already know the client's transport
//! parameters, so that the server can open streams. Every wait is bounded; ports come from
//! the OS.

#[path = "support/split_initial.rs"]
mod split_initial;

use std::sync::atomic::Ordering;
use std::time::Duration;

use split_initial::{client, split_hello_tls, Relay};
use wirelab_core::tls::{client_config, Identity, Trust};
use wirelab_core::{CancellationToken, ServerConfig};
use wirelab_quinn::{quinn, QuicListener};

const ALPN: &[u8] = b"wirelab-test";
const ROUNDS: usize = 30;
/// Per connection: a normal one takes milliseconds on loopback.
const BOUND: Duration = Duration::from_secs(2);
/// The deliberate extra delay of the second Initial in the relay.
const HOLD: Duration = Duration::from_millis(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_can_open_a_stream_when_the_client_hello_came_in_two_initials() {
    let id = Identity::self_signed(&["localhost"]).unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.tls = Some(id.server_config(&[ALPN]).unwrap());
    let listener = QuicListener::bind(cfg, ALPN, 0).unwrap();
    let server = listener.local_addr();
    let stop = CancellationToken::new();
    let sd = stop.clone();
    // The server opens a unidirectional stream at once, as h3 does for its control stream.
    let serve = tokio::spawn(async move {
        let sd2 = sd.clone();
        listener
            .serve("test", &sd, move |conn, _| {
                let sd = sd2.clone();
                async move {
                    tokio::select! {
                        _ = sd.cancelled() => {}
                        r = async {
                            let mut s = conn.open_uni().await?;
                            s.write_all(b"hello").await?;
                            s.finish()?;
                            conn.closed().await;
                            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                        } => { let _ = r; }
                    }
                    Ok(())
                }
            })
            .await
    });
    let relay = Relay::start(server, HOLD).await;
    let base = client_config(&Trust::Certificates(vec![id.certificate()]), &[ALPN]).unwrap();
    let tls = split_hello_tls(&base, ALPN);
    let mut hung = 0;
    for round in 0..ROUNDS {
        let (endpoint, cc) = client(tls.clone());
        let attempt = async {
            let conn = endpoint
                .connect_with(cc, relay.addr, "localhost")
                .unwrap()
                .await
                .unwrap();
            let alpn = conn
                .handshake_data()
                .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|h| h.protocol);
            assert_eq!(alpn.as_deref(), Some(ALPN), "round {round}: ALPN");
            let mut s = conn.accept_uni().await.unwrap();
            let got = s.read_to_end(64).await.unwrap();
            assert_eq!(got, b"hello");
            conn.close(0u32.into(), b"done");
        };
        if tokio::time::timeout(BOUND, attempt).await.is_err() {
            hung += 1;
        }
        endpoint.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(BOUND, endpoint.wait_idle()).await;
    }
    let c = &relay.counts;
    assert_eq!(c.clients.load(Ordering::SeqCst), ROUNDS);
    assert_eq!(
        c.split_hellos.load(Ordering::SeqCst),
        ROUNDS,
        "every ClientHello must span two Initial packets"
    );
    assert_eq!(
        c.held_until_answer.load(Ordering::SeqCst),
        ROUNDS,
        "the server must have answered the first Initial before the second was released"
    );
    assert_eq!(
        hung, 0,
        "{hung} of {ROUNDS} connections never got the server's stream"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), serve)
        .await
        .expect("server shutdown")
        .unwrap();
}
