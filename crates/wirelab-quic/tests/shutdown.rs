//! quic server shutdown with messages in flight: what the client sent before the shutdown is
//! answered, each stream then ends with FIN and the client is told, with STOP_SENDING
//! (`SHUTTING_DOWN`), that nothing after the last answer was processed. Nothing is lost
//! silently. Every wait is bounded; ports come from the OS.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{ReadError, ReadExactError, RecvStream, SendStream, VarInt, WriteError};
use tokio::sync::Notify;
use wirelab_core::codec::{self, Kind};
use wirelab_core::tls::ALPN_WIRELAB_QUIC;
use wirelab_quic::{QuicServer, SHUTTING_DOWN};
use wirelab_quinn::{quinn, QuicConnector};

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
    async fn start() -> Self {
        Self(
            wirelab_test_support::TlsLab::start::<QuicServer>(ALPN_WIRELAB_QUIC, |c| {
                c.timeouts.shutdown_grace = Duration::from_secs(5)
            })
            .await,
        )
    }

    async fn connect(&self) -> (QuicConnector, quinn::Connection) {
        let c = self.client();
        let connector = QuicConnector::new(&c, ALPN_WIRELAB_QUIC, 0).unwrap();
        let (conn, _) = within("connect", connector.connect()).await.unwrap();
        (connector, conn)
    }

    async fn stopped(self) {
        self.0.stopped(BOUND).await;
    }
}

fn msg(stream: u32, seq: u64) -> Bytes {
    codec::encode(stream, seq, seq, Kind::Echo, 128).unwrap()
}

async fn write_msg(s: &mut SendStream, m: &[u8]) -> Result<(), WriteError> {
    s.write_all(&(m.len() as u32).to_be_bytes()).await?;
    s.write_all(m).await
}

/// The next answer, `Ok(None)` at a clean end (FIN).
async fn read_msg(r: &mut RecvStream) -> Result<Option<Vec<u8>>, ReadError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(ReadExactError::FinishedEarly(n)) => panic!("stream ended inside a length ({n} bytes)"),
        Err(ReadExactError::ReadError(e)) => return Err(e),
    }
    let mut m = vec![0u8; u32::from_be_bytes(len) as usize];
    match r.read_exact(&mut m).await {
        Ok(()) => Ok(Some(m)),
        Err(ReadExactError::FinishedEarly(_)) => panic!("stream ended inside a message"),
        Err(ReadExactError::ReadError(e)) => Err(e),
    }
}

#[tokio::test]
async fn messages_in_flight_at_shutdown_are_answered_then_each_stream_ends_cleanly() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = Lab::start().await;
    let (connector, conn) = lab.connect().await;
    let mut streams = Vec::new();
    for id in 0..8u32 {
        let (mut send, mut recv) = within("open", conn.open_bi()).await.unwrap();
        // One answered message first (the server has the stream), then eight unread ones.
        write_msg(&mut send, &msg(id, 0)).await.unwrap();
        assert_eq!(
            within("echo", read_msg(&mut recv)).await.unwrap().unwrap(),
            msg(id, 0)
        );
        for seq in 1..=8 {
            write_msg(&mut send, &msg(id, seq)).await.unwrap();
        }
        streams.push((id, send, recv));
    }
    lab.stop.cancel();
    for (id, send, recv) in &mut streams {
        for seq in 1..=8 {
            let got = within("answer", read_msg(recv)).await.unwrap();
            assert_eq!(
                got.as_deref(),
                Some(&msg(*id, seq)[..]),
                "stream {id} message {seq}"
            );
        }
        assert_eq!(
            within("FIN", read_msg(recv)).await.unwrap(),
            None,
            "stream {id} FIN"
        );
        let stopped = within("STOP_SENDING", send.stopped()).await.unwrap();
        assert_eq!(
            stopped,
            Some(VarInt::from_u32(SHUTTING_DOWN)),
            "stream {id}"
        );
    }
    let reason = within("close", conn.closed()).await;
    assert!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code == VarInt::from_u32(0)),
        "{reason:?}"
    );
    connector.close(BOUND).await;
    lab.stopped().await;
}

/// How one echo loop ended.
#[derive(Debug, Default)]
struct Tally {
    answered: usize,
    /// Unanswered, and told: the stream ended with FIN and was stopped with SHUTTING_DOWN, or
    /// was reset or stopped with it.
    refused: usize,
    lost: usize,
}

async fn echo_loop(
    conn: quinn::Connection,
    id: u32,
    done: Arc<AtomicUsize>,
    busy: Arc<Notify>,
) -> Tally {
    let mut t = Tally::default();
    let told = |code: VarInt| code == VarInt::from_u32(SHUTTING_DOWN);
    let Ok((mut send, mut recv)) = conn.open_bi().await else {
        t.refused += 1;
        return t;
    };
    for seq in 0.. {
        let m = msg(id, seq);
        match write_msg(&mut send, &m).await {
            Ok(()) => {}
            Err(WriteError::Stopped(c)) if told(c) => {
                t.refused += 1;
                return t;
            }
            Err(e) => {
                eprintln!("stream {id} message {seq}: write {e}");
                t.lost += 1;
                return t;
            }
        }
        match read_msg(&mut recv).await {
            Ok(Some(back)) if back == m => t.answered += 1,
            Ok(Some(_)) => {
                t.lost += 1;
                return t;
            }
            Ok(None) => {
                // The server ended the stream: it must say it stopped reading.
                match send.stopped().await {
                    Ok(Some(c)) if told(c) => t.refused += 1,
                    other => {
                        eprintln!("stream {id} message {seq}: FIN, then {other:?}");
                        t.lost += 1;
                    }
                }
                return t;
            }
            Err(ReadError::Reset(c)) if told(c) => {
                t.refused += 1;
                return t;
            }
            Err(e) => {
                eprintln!("stream {id} message {seq}: read {e}");
                t.lost += 1;
                return t;
            }
        }
        if done.fetch_add(1, Ordering::SeqCst) == 200 {
            busy.notify_one();
        }
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_shutdowns_under_load_lose_nothing_silently() {
    let _panics = wirelab_test_support::panics::no_panics();
    let mut all = Tally::default();
    for _ in 0..10 {
        let lab = Lab::start().await;
        let (connector, conn) = lab.connect().await;
        let done = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(Notify::new());
        let tasks: Vec<_> = (0..8)
            .map(|id| tokio::spawn(echo_loop(conn.clone(), id, done.clone(), busy.clone())))
            .collect();
        within("clients busy", busy.notified()).await;
        lab.stop.cancel();
        for t in tasks {
            let t = within("echo loop", t).await.unwrap();
            all.answered += t.answered;
            all.refused += t.refused;
            all.lost += t.lost;
        }
        connector.close(BOUND).await;
        lab.stopped().await;
    }
    eprintln!("{all:?}");
    assert_eq!(
        all.lost, 0,
        "messages lost silently across 10 shutdowns: {all:?}"
    );
    assert_eq!(all.refused, 80, "every loop ends told: {all:?}");
}
