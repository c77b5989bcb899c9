use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h3::client::{RequestStream, SendRequest};
use http::{HeaderValue, Method, Request};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wirelab_core::codec::StreamRequest;
use wirelab_core::tls::ALPN_H3;
use wirelab_core::transport::stream_by_messages;
use wirelab_core::{Channel, Client, ClientConfig, Error, Mode, Received, Result, Sharing};
use wirelab_http::{check_status, collect_messages, read_messages, InOrder, STREAM_HEADER};
use wirelab_quinn::{QuicConnector, ZeroRtt};

use crate::body::{to_bytes, RecvBody};
use crate::server::UNI_STREAMS;

type Sender = SendRequest<h3_quinn::OpenStreams, Bytes>;
type SendHalf = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = RequestStream<h3_quinn::RecvStream, Bytes>;

/// An h3 client session: K logical streams on one HTTP/3 connection (`shared`) or one
/// connection each (`pool`), in `rr` or `duplex` mode.
pub struct H3Client {
    connector: QuicConnector,
    zero_rtt: Option<ZeroRtt>,
    senders: Vec<Sender>,
    drivers: Vec<JoinHandle<()>>,
    channels: Vec<H3Channel>,
    /// Duplex response readers; each ends when the server ends its response.
    readers: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl std::fmt::Debug for H3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Client")
            .field("connector", &self.connector)
            .field("connections", &self.senders.len())
            .finish_non_exhaustive()
    }
}

/// One logical stream of an h3 session.
pub struct H3Channel {
    id: u32,
    sender: Sender,
    base: String,
    max: usize,
    kind: Kind,
}

impl std::fmt::Debug for H3Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Channel")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

enum Kind {
    Rr(InOrder),
    Duplex {
        // Boxed: the h3 send half is large and the channel moves between tasks.
        send: Box<SendHalf>,
        rx: mpsc::Receiver<Result<Bytes>>,
    },
}

fn stream_err(e: h3::error::StreamError) -> Error {
    Error::Protocol(format!("HTTP/3: {e}"))
}

fn request(method: Method, uri: &str, stream_id: Option<u32>) -> Result<Request<()>> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(id) = stream_id {
        b = b.header(STREAM_HEADER, HeaderValue::from(id));
    }
    b.body(())
        .map_err(|e| Error::Config(format!("bad request {uri}: {e}")))
}

fn recv_body(s: RecvHalf) -> RecvBody<RecvHalf> {
    RecvBody::new(s, |s, cx| {
        s.poll_recv_data(cx).map(|r| r.map(|o| o.map(to_bytes)))
    })
}

/// Opens a request stream, waits for a `200`, and returns the two halves.
async fn open_request(sender: &mut Sender, req: Request<()>) -> Result<(SendHalf, RecvHalf)> {
    let mut s = sender.send_request(req).await.map_err(stream_err)?;
    check_status(&s.recv_response().await.map_err(stream_err)?)?;
    Ok(s.split())
}

async fn echo_request(mut sender: Sender, uri: String, msg: Bytes, max: usize) -> Result<Bytes> {
    let mut s = sender
        .send_request(request(Method::POST, &uri, None)?)
        .await
        .map_err(stream_err)?;
    s.send_data(msg).await.map_err(stream_err)?;
    s.finish().await.map_err(stream_err)?;
    check_status(&s.recv_response().await.map_err(stream_err)?)?;
    let mut out = BytesMut::new();
    while let Some(chunk) = s.recv_data().await.map_err(stream_err)? {
        if out.len() + chunk.remaining() > max {
            return Err(Error::Protocol(format!("echo over the {max}-byte limit")));
        }
        out.put(chunk);
    }
    Ok(out.freeze())
}

impl H3Channel {
    async fn open(
        id: u32,
        mut sender: Sender,
        cfg: &ClientConfig,
        readers: &mut Vec<JoinHandle<()>>,
    ) -> Result<Self> {
        let base = format!("https://{}:{}", cfg.server_name, cfg.addr.port());
        let max = cfg.limits.max_message;
        let kind = match cfg.mode {
            Mode::Rr => Kind::Rr(InOrder::default()),
            Mode::Duplex => {
                let req = request(Method::POST, &format!("{base}/duplex"), Some(id))?;
                let (send, recv) = open_request(&mut sender, req).await?;
                let (in_tx, rx) = mpsc::channel(256);
                readers.push(tokio::spawn(async move {
                    let fwd = in_tx.clone();
                    let r = read_messages(recv_body(recv), max, move |r| {
                        let fwd = fwd.clone();
                        async move { fwd.send(Ok(r.msg)).await.is_ok() }
                    })
                    .await;
                    let _ = in_tx
                        .send(Err(r.err().unwrap_or(Error::ConnectionClosed)))
                        .await;
                }));
                Kind::Duplex {
                    send: Box::new(send),
                    rx,
                }
            }
        };
        Ok(Self {
            id,
            sender,
            base,
            max,
            kind,
        })
    }
}

impl Client for H3Client {
    type Channel = H3Channel;

    async fn connect(cfg: &ClientConfig) -> Result<Self> {
        let connector = QuicConnector::new(cfg, ALPN_H3, UNI_STREAMS)?;
        let n_conns = match cfg.sharing {
            Sharing::Shared => 1,
            Sharing::Pool => cfg.streams.max(1) as usize,
        };
        let (mut senders, mut drivers, mut zero_rtt) = (Vec::new(), Vec::new(), None);
        for _ in 0..n_conns {
            let (conn, z) = connector.connect().await?;
            zero_rtt.get_or_insert(z);
            let (mut driver, sender) = h3::client::builder()
                .max_field_section_size(cfg.limits.max_header_bytes as u64)
                .build::<_, _, Bytes>(h3_quinn::Connection::new(conn))
                .await
                .map_err(|e| Error::Protocol(format!("HTTP/3 set-up: {e}")))?;
            drivers.push(tokio::spawn(async move {
                let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            }));
            senders.push(sender);
        }
        let (mut channels, mut readers) = (Vec::new(), Vec::new());
        for id in 0..cfg.streams {
            let sender = senders[id as usize % senders.len()].clone();
            let open = H3Channel::open(id, sender, cfg, &mut readers);
            let ch = tokio::time::timeout(cfg.timeouts.handshake, open)
                .await
                .map_err(|_| Error::Timeout("opening an HTTP/3 duplex request"))??;
            channels.push(ch);
        }
        Ok(Self {
            connector,
            zero_rtt,
            senders,
            drivers,
            channels,
            readers,
            grace: cfg.timeouts.shutdown_grace,
        })
    }

    fn channels(&mut self) -> Vec<H3Channel> {
        std::mem::take(&mut self.channels)
    }

    async fn early_data(&mut self) -> Option<bool> {
        self.zero_rtt.as_mut()?.outcome().await
    }

    async fn close(self) -> Result<()> {
        // Dropping a duplex channel ends its request body (FIN); the server then ends the
        // response. Channels the caller took must have been dropped by now.
        drop(self.channels);
        for r in self.readers {
            tokio::time::timeout(self.grace, r)
                .await
                .map_err(|_| Error::Timeout("waiting for duplex responses to end"))?
                .map_err(|e| Error::Protocol(format!("reader task: {e}")))?;
        }
        // The last sender dropped closes the HTTP/3 connection with H3_NO_ERROR.
        drop(self.senders);
        for d in self.drivers {
            let _ = tokio::time::timeout(self.grace, d).await;
        }
        self.connector.close(self.grace).await;
        Ok(())
    }
}

impl Channel for H3Channel {
    fn id(&self) -> u32 {
        self.id
    }

    async fn send(&mut self, msg: Bytes) -> Result<()> {
        match &mut self.kind {
            Kind::Duplex { send, .. } => send.send_data(msg).await.map_err(stream_err),
            Kind::Rr(pending) => {
                let uri = format!("{}/echo", self.base);
                pending.push(tokio::spawn(echo_request(
                    self.sender.clone(),
                    uri,
                    msg,
                    self.max,
                )));
                Ok(())
            }
        }
    }

    async fn recv(&mut self) -> Result<Bytes> {
        match &mut self.kind {
            Kind::Duplex { rx, .. } => rx.recv().await.unwrap_or(Err(Error::ConnectionClosed)),
            Kind::Rr(pending) => pending.next().await,
        }
    }

    async fn server_stream(&mut self, req: StreamRequest) -> Result<Vec<Received>> {
        if matches!(self.kind, Kind::Duplex { .. }) {
            return stream_by_messages(self, req).await;
        }
        let uri = format!("{}/stream?{}", self.base, req.to_query());
        let (_send, recv) =
            open_request(&mut self.sender, request(Method::GET, &uri, Some(self.id))?).await?;
        collect_messages(recv_body(recv), self.max, req.count).await
    }
}
