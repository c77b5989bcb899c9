//! Shutdown with messages in flight: every message that reached the server before it was told
//! to stop is answered, in order, and then the close frame says 1001 "going away". The client
//! is raw tokio-tungstenite, so "reached the server" is exact: the frames are written and
//! flushed to the loopback socket before the stop. Bounded waits; ports chosen by the OS.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use wirelab_core::codec::{self, Kind};
use wirelab_ws::WsServer;

const BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_in_flight_at_shutdown_are_answered_before_1001() {
    let _panics = wirelab_test_support::panics::no_panics();
    for round in 0..30u64 {
        let served = wirelab_test_support::start::<WsServer>(wirelab_test_support::local()).await;
        let url = format!("ws://{}/ws", served.addr);
        let tcp = tokio::net::TcpStream::connect(served.addr).await.unwrap();
        let (mut ws, _) = wirelab_test_support::within(
            "handshake",
            BOUND,
            tokio_tungstenite::client_async(url, tcp),
        )
        .await
        .unwrap();
        let first = codec::encode(0, 0, 0, Kind::Echo, 64).unwrap();
        ws.send(Message::Binary(first.clone())).await.unwrap();
        let back = wirelab_test_support::within("first echo", BOUND, ws.next()).await;
        assert_eq!(back.unwrap().unwrap(), Message::Binary(first));
        // 50 messages written and flushed, not read, then shutdown.
        let sent: Vec<_> = (1..=50u64)
            .map(|seq| codec::encode(0, seq, 0, Kind::Echo, 64).unwrap())
            .collect();
        for m in &sent {
            ws.feed(Message::Binary(m.clone())).await.unwrap();
        }
        ws.flush().await.unwrap();
        served.stop.cancel();
        for (i, m) in sent.iter().enumerate() {
            match wirelab_test_support::within("an answer", BOUND, ws.next()).await {
                Some(Ok(Message::Binary(b))) => assert_eq!(&b, m, "round {round}: answer {i}"),
                other => panic!("round {round}: {i} of 50 answered, then {other:?}"),
            }
        }
        match wirelab_test_support::within("the close", BOUND, ws.next()).await {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(f.code, CloseCode::Away, "round {round}")
            }
            other => panic!("round {round}: expected close 1001, got {other:?}"),
        }
        // Finish the close handshake and the TCP connection, as a client would.
        let _ = ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(BOUND, ws.next()).await {}
        drop(ws);
        wirelab_test_support::within("server stops", BOUND, served.task)
            .await
            .unwrap()
            .unwrap();
    }
}
