//! `QuicSettings::congestion` reaches quinn on both sides: for each controller, a client and a
//! server configured with it run that controller on their connection (quinn reports its
//! controller as a `dyn Controller`, downcast here to the type asked for). Every wait is
//! bounded; ports come from the OS.

use std::time::Duration;

use wirelab_core::tls::{client_config, Identity, Trust};
use wirelab_core::{CancellationToken, ClientConfig, QuicCongestion, ServerConfig};
use wirelab_quinn::quinn::congestion::{Bbr, Controller, Cubic, NewReno};
use wirelab_quinn::{QuicConnector, QuicListener};

const ALPN: &[u8] = b"wirelab-test";
const BOUND: Duration = Duration::from_secs(5);

/// Which of quinn's controllers `c` is.
fn controller(c: Box<dyn Controller>) -> QuicCongestion {
    let any = c.into_any();
    if any.is::<Cubic>() {
        QuicCongestion::Cubic
    } else if any.is::<NewReno>() {
        QuicCongestion::NewReno
    } else if any.is::<Bbr>() {
        QuicCongestion::Bbr
    } else {
        panic!("a controller that is none of quinn's three")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_congestion_controller_runs_on_both_sides() {
    let id = Identity::self_signed(&["localhost"]).unwrap();
    for cc in QuicCongestion::ALL {
        let mut scfg = ServerConfig::new("127.0.0.1:0".parse().unwrap());
        scfg.tls = Some(id.server_config(&[ALPN]).unwrap());
        scfg.quic.congestion = cc;
        let listener = QuicListener::bind(scfg, ALPN, 0).unwrap();
        let addr = listener.local_addr();
        let stop = CancellationToken::new();
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let seen_tx = std::sync::Mutex::new(Some(seen_tx));
        let sd = stop.clone();
        let serve = tokio::spawn(async move {
            let seen_tx = std::sync::Arc::new(seen_tx);
            listener
                .serve("test", &sd, move |conn, _| {
                    let seen_tx = seen_tx.clone();
                    async move {
                        if let Some(tx) = seen_tx.lock().unwrap().take() {
                            let _ = tx.send(controller(conn.congestion_state()));
                        }
                        conn.closed().await;
                        Ok(())
                    }
                })
                .await
        });
        let mut ccfg = ClientConfig::new(addr);
        ccfg.server_name = "localhost".into();
        ccfg.tls =
            Some(client_config(&Trust::Certificates(vec![id.certificate()]), &[ALPN]).unwrap());
        ccfg.quic.congestion = cc;
        let connector = QuicConnector::new(&ccfg, ALPN, 0).unwrap();
        let (conn, _) = tokio::time::timeout(BOUND, connector.connect())
            .await
            .expect("connect within the bound")
            .unwrap();
        assert_eq!(controller(conn.congestion_state()), cc, "client side");
        let server_side = tokio::time::timeout(BOUND, seen_rx)
            .await
            .expect("the server saw the connection within the bound")
            .unwrap();
        assert_eq!(server_side, cc, "server side");
        conn.close(0u32.into(), b"done");
        stop.cancel();
        let _ = tokio::time::timeout(BOUND, serve).await;
    }
}

#[test]
fn names_parse_back() {
    for cc in QuicCongestion::ALL {
        assert_eq!(cc.name().parse::<QuicCongestion>(), Ok(cc));
        assert_eq!(
            cc.to_string().to_uppercase().parse::<QuicCongestion>(),
            Ok(cc)
        );
    }
    assert!("vegas"
        .parse::<QuicCongestion>()
        .unwrap_err()
        .contains("known: cubic"));
}
