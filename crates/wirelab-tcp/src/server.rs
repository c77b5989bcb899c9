use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use wirelab_core::net;
use wirelab_core::service;
use wirelab_core::{Error, Limits, Result, Server, ServerConfig, Timeouts};

/// The tcp echo/stream server.
#[derive(Debug)]
pub struct TcpServer(net::Listener);

impl Server for TcpServer {
    async fn bind(cfg: ServerConfig) -> Result<Self> {
        if cfg.tls.is_some() {
            return Err(Error::Config("the tcp floor is cleartext only".into()));
        }
        Ok(Self(net::Listener::bind(cfg).await?))
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let cfg = self.0.config();
        let (limits, timeouts) = (cfg.limits, cfg.timeouts);
        let (hub, resume) = (cfg.fanout.clone(), cfg.resume.clone());
        let sd = shutdown.clone();
        net::accept_loop(
            "tcp",
            self.0.tcp(),
            &shutdown,
            timeouts.shutdown_grace,
            |sock| {
                connection(
                    sock,
                    limits,
                    (hub.clone(), resume.clone()),
                    timeouts,
                    sd.clone(),
                )
            },
        )
        .await;
        Ok(())
    }
}

async fn connection(
    sock: TcpStream,
    limits: Limits,
    (hub, resume): (wirelab_core::fanout::Hub, wirelab_core::resume::Registry),
    timeouts: Timeouts,
    shutdown: CancellationToken,
) -> Result<()> {
    let (rd, wr) = sock.into_split();
    let reader = FramedRead::new(rd, net::length_prefixed(limits.max_message));
    let writer = FramedWrite::new(wr, net::length_prefixed(limits.max_message));
    let no_gate = || std::future::ready(Ok(()));
    let (_, result) = service::serve_messages(
        reader,
        writer,
        limits,
        hub,
        resume,
        Some(timeouts.idle),
        shutdown,
        no_gate,
    )
    .await;
    result
}
