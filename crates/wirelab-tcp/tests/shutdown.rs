//! Shutdown with echoes in flight: every echo that reached the server before it was told to
//! stop is answered, in order, before the FIN. Bounded waits; ports chosen by the OS.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wirelab_core::codec::{self, Kind};
use wirelab_tcp::TcpServer;

const BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_in_flight_at_shutdown_are_answered_before_the_fin() {
    let _panics = wirelab_test_support::panics::no_panics();
    for round in 0..10u64 {
        let served = wirelab_test_support::start::<TcpServer>(wirelab_test_support::local()).await;
        let mut s = TcpStream::connect(served.addr).await.unwrap();
        // One echo answered first: the connection is being served.
        let first = codec::encode(0, 0, 0, Kind::Echo, 64).unwrap();
        s.write_all(&(first.len() as u32).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&first).await.unwrap();
        let mut back = vec![0u8; 4 + first.len()];
        wirelab_test_support::within("first echo", BOUND, s.read_exact(&mut back))
            .await
            .unwrap();
        // Then 50 echoes written and not read, then shutdown.
        let mut sent = Vec::new();
        for seq in 1..=50u64 {
            let m = codec::encode(0, seq, 0, Kind::Echo, 64).unwrap();
            sent.extend_from_slice(&(m.len() as u32).to_be_bytes());
            sent.extend_from_slice(&m);
        }
        s.write_all(&sent).await.unwrap();
        served.stop.cancel();
        let mut got = Vec::new();
        wirelab_test_support::within("answers, then FIN", BOUND, s.read_to_end(&mut got))
            .await
            .unwrap();
        assert_eq!(got.len(), sent.len(), "round {round}: answers missing");
        assert_eq!(got, sent, "round {round}: answers out of order or wrong");
        wirelab_test_support::within("server stops", BOUND, served.task)
            .await
            .unwrap()
            .unwrap();
    }
}
