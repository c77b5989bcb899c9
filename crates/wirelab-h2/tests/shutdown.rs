//! Shutdown with messages in flight on a duplex request (h2c): every echo that reached the
//! server before it was told to stop is answered, in order, then the response ends and the
//! connection closes. Bounded waits; ports chosen by the OS.

use std::time::Duration;

use wirelab_core::codec::{self, Kind};
use wirelab_core::{Channel, Client, ClientConfig, Mode};
use wirelab_h2::{H2Client, H2Server};

const BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplex_messages_in_flight_at_shutdown_are_answered() {
    let _panics = wirelab_test_support::panics::no_panics();
    for round in 0..10u64 {
        let served = wirelab_test_support::start::<H2Server>(wirelab_test_support::local()).await;
        let mut cfg = ClientConfig::new(served.addr);
        cfg.mode = Mode::Duplex;
        let mut client = H2Client::connect(&cfg).await.unwrap();
        let mut ch = client.channels().remove(0);
        let first = codec::encode(0, 0, 0, Kind::Echo, 64).unwrap();
        let back = wirelab_test_support::within("first echo", BOUND, ch.echo(first.clone()))
            .await
            .unwrap();
        assert_eq!(back, first);
        let sent: Vec<_> = (1..=50u64)
            .map(|seq| codec::encode(0, seq, 0, Kind::Echo, 64).unwrap())
            .collect();
        for m in &sent {
            ch.send(m.clone()).await.unwrap();
        }
        served.stop.cancel();
        for (i, m) in sent.iter().enumerate() {
            match wirelab_test_support::within("an answer", BOUND, ch.recv()).await {
                Ok(b) => assert_eq!(&b, m, "round {round}: answer {i} wrong"),
                Err(e) => panic!("round {round}: {i} of 50 answered, then {e:?}"),
            }
        }
        let end = wirelab_test_support::within("the end", BOUND, ch.recv()).await;
        assert!(end.is_err(), "round {round}: more than was sent: {end:?}");
        drop(ch);
        let _ = client.close().await;
        wirelab_test_support::within("server stops", BOUND, served.task)
            .await
            .unwrap()
            .unwrap();
    }
}
