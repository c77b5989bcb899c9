use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wirelab_core::net;
use wirelab_core::service::{self, Action};
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
        let sd = shutdown.clone();
        net::accept_loop(
            "tcp",
            self.0.tcp(),
            &shutdown,
            timeouts.shutdown_grace,
            |sock| connection(sock, limits, timeouts, sd.clone()),
        )
        .await;
        Ok(())
    }
}

async fn connection(
    sock: TcpStream,
    limits: Limits,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) -> Result<()> {
    let (rd, wr) = sock.into_split();
    let mut reader = FramedRead::new(rd, crate::framing(limits.max_message));
    let mut writer = FramedWrite::new(wr, crate::framing(limits.max_message));
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    let write_task = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            writer.feed(m).await?;
            while let Ok(m) = rx.try_recv() {
                writer.feed(m).await?;
            }
            SinkExt::<Bytes>::flush(&mut writer).await?;
        }
        SinkExt::<Bytes>::close(&mut writer).await
    });
    let streams = TaskTracker::new();
    let result = loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            f = tokio::time::timeout(timeouts.idle, reader.next()) => f,
        };
        let msg = match frame {
            Err(_) => break Err(Error::Timeout("idle connection")),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(Error::Io(e)),
            Ok(Some(Ok(m))) => m.freeze(),
        };
        match service::classify(&msg, &limits) {
            Ok(Action::Echo) => {
                if tx.send(msg).await.is_err() {
                    break Err(Error::ConnectionClosed);
                }
            }
            Ok(Action::Stream(plan)) => {
                let (tx, sd) = (tx.clone(), shutdown.clone());
                streams.spawn(async move {
                    let send = |m| {
                        let tx = tx.clone();
                        async move { tx.send(m).await.map_err(|_| ()) }
                    };
                    tokio::select! {
                        _ = sd.cancelled() => {}
                        _ = service::drive_stream(plan, true, send) => {}
                    }
                });
            }
            Err(e) => break Err(Error::Codec(e)),
        }
    };
    streams.close();
    streams.wait().await;
    drop(tx);
    // Every answer already queued is written before FIN.
    let written = write_task
        .await
        .map_err(|e| Error::Protocol(format!("writer task: {e}")))?;
    result.and(written.map_err(Error::Io))
}
