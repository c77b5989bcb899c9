use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wirelab_core::codec::StreamRequest;
use wirelab_core::transport::stream_by_messages;
use wirelab_core::{net, Channel, Client, ClientConfig, Error, Mode, Received, Result, Sharing};
use wirelab_http::{
    check_status, coalesce, collect_messages, read_messages, InOrder, COALESCE_MAX, STREAM_HEADER,
};

type ReqBody = BoxBody<Bytes, Infallible>;
type Sender = SendRequest<ReqBody>;

/// An h2 client session: K logical streams on one HTTP/2 connection (`shared`) or one
/// connection each (`pool`), in `rr` or `duplex` mode.
#[derive(Debug)]
pub struct H2Client {
    senders: Vec<Sender>,
    conns: Vec<JoinHandle<()>>,
    channels: Vec<H2Channel>,
    /// Duplex response readers; each ends when the server ends its response.
    readers: Vec<JoinHandle<()>>,
    grace: Duration,
}

/// One logical stream of an h2 session.
#[derive(Debug)]
pub struct H2Channel {
    id: u32,
    sender: Sender,
    base: String,
    max: usize,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Rr(InOrder),
    Duplex {
        tx: mpsc::Sender<Bytes>,
        rx: mpsc::Receiver<Result<Bytes>>,
    },
}

fn proto(e: hyper::Error) -> Error {
    wirelab_http::protocol_error(e)
}

async fn handshake<S>(io: S, cfg: &ClientConfig) -> Result<(Sender, JoinHandle<()>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = wirelab_http::h2::client_builder(&cfg.h2)
        .handshake(TokioIo::new(io))
        .await
        .map_err(proto)?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, task))
}

async fn connect_one(cfg: &ClientConfig) -> Result<(Sender, JoinHandle<()>)> {
    let io = net::connect_io(cfg, Some(b"h2")).await?;
    tokio::time::timeout(cfg.timeouts.handshake, handshake(io, cfg))
        .await
        .map_err(|_| Error::Timeout("HTTP/2 handshake"))?
}

fn request(method: Method, uri: &str, body: ReqBody) -> Result<Request<ReqBody>> {
    let uri: Uri = uri
        .parse()
        .map_err(|e| Error::Config(format!("bad URI {uri}: {e}")))?;
    Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .map_err(|e| Error::Config(e.to_string()))
}

impl H2Channel {
    async fn open(
        id: u32,
        mut sender: Sender,
        cfg: &ClientConfig,
        readers: &mut Vec<JoinHandle<()>>,
    ) -> Result<Self> {
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}:{}", cfg.server_name, cfg.addr.port());
        let max = cfg.limits.max_message;
        let kind = match cfg.mode {
            Mode::Rr => Kind::Rr(InOrder::default()),
            Mode::Duplex => {
                let (tx, body_rx) = mpsc::channel::<Bytes>(256);
                // Messages already queued go out as one DATA frame: one frame per small
                // message trips the server's budget for framing overhead under load.
                let body =
                    StreamBody::new(futures_util::stream::unfold(body_rx, |mut rx| async move {
                        let first = rx.recv().await?;
                        let chunk = coalesce(first, COALESCE_MAX, || rx.try_recv().ok());
                        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
                    }));
                let mut req = request(
                    Method::POST,
                    &format!("{base}/duplex"),
                    BodyExt::boxed(body),
                )?;
                req.headers_mut()
                    .insert(STREAM_HEADER, http::HeaderValue::from(id));
                sender.ready().await.map_err(proto)?;
                // hyper queues the HEADERS when `send_request` is called; only the response
                // is awaited, by the reader. The channel does not wait for the response head
                // before its first message: nothing in HTTP/2 asks a client to (RFC 9113 §8.1),
                // and waiting would cost a round trip the protocol does not (see the
                // methodology chapter, "Setup at the protocol's minimum"). A refusal (a status
                // other than 200, a reset) reaches the channel's next `recv`.
                let response = sender.send_request(req);
                let (in_tx, rx) = mpsc::channel(256);
                let reader = tokio::spawn(async move {
                    let r = async {
                        let resp = response.await.map_err(proto)?;
                        check_status(&resp)?;
                        let fwd = in_tx.clone();
                        read_messages(resp.into_body(), max, move |r| {
                            let fwd = fwd.clone();
                            async move { fwd.send(Ok(r.msg)).await.is_ok() }
                        })
                        .await
                    }
                    .await;
                    let _ = in_tx
                        .send(Err(r.err().unwrap_or(Error::ConnectionClosed)))
                        .await;
                });
                // The reader runs until the server ends the response; it is never aborted, so a
                // clean close sends no RST_STREAM. The session's close waits for it.
                readers.push(reader);
                Kind::Duplex { tx, rx }
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

impl Client for H2Client {
    type Channel = H2Channel;

    async fn connect(cfg: &ClientConfig) -> Result<Self> {
        cfg.h2.validate().map_err(Error::Config)?;
        let n_conns = match cfg.sharing {
            Sharing::Shared => 1,
            Sharing::Pool => cfg.streams.max(1) as usize,
        };
        let (mut senders, mut conns) = (Vec::new(), Vec::new());
        for _ in 0..n_conns {
            let (s, c) = connect_one(cfg).await?;
            senders.push(s);
            conns.push(c);
        }
        let (mut channels, mut readers) = (Vec::new(), Vec::new());
        for id in 0..cfg.streams {
            let sender = senders[id as usize % senders.len()].clone();
            channels.push(H2Channel::open(id, sender, cfg, &mut readers).await?);
        }
        Ok(Self {
            senders,
            conns,
            channels,
            readers,
            grace: cfg.timeouts.shutdown_grace,
        })
    }

    fn channels(&mut self) -> Vec<H2Channel> {
        std::mem::take(&mut self.channels)
    }

    async fn close(self) -> Result<()> {
        // Dropping a duplex channel ends its request body (END_STREAM); the server then ends the
        // response. Once every response has ended and every sender is gone, hyper closes the
        // connection. Channels the caller took must have been dropped by now.
        drop(self.channels);
        for r in self.readers {
            tokio::time::timeout(self.grace, r)
                .await
                .map_err(|_| Error::Timeout("waiting for duplex responses to end"))?
                .map_err(|e| Error::Protocol(format!("reader task: {e}")))?;
        }
        drop(self.senders);
        for c in self.conns {
            tokio::time::timeout(self.grace, c)
                .await
                .map_err(|_| Error::Timeout("closing the HTTP/2 connection"))?
                .map_err(|e| Error::Protocol(format!("connection task: {e}")))?;
        }
        Ok(())
    }
}

impl Channel for H2Channel {
    fn id(&self) -> u32 {
        self.id
    }

    async fn send(&mut self, msg: Bytes) -> Result<()> {
        match &mut self.kind {
            Kind::Duplex { tx, .. } => tx.send(msg).await.map_err(|_| Error::ConnectionClosed),
            Kind::Rr(pending) => {
                let mut sender = self.sender.clone();
                let req = request(
                    Method::POST,
                    &format!("{}/echo", self.base),
                    Full::new(msg).boxed(),
                )?;
                let max = self.max;
                pending.push(tokio::spawn(async move {
                    sender.ready().await.map_err(proto)?;
                    let resp = sender.send_request(req).await.map_err(proto)?;
                    check_status(&resp)?;
                    let body = Limited::new(resp.into_body(), max)
                        .collect()
                        .await
                        .map_err(|e| Error::Protocol(format!("reading the echo: {e}")))?;
                    Ok(body.to_bytes())
                }));
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
        let mut http_req = request(Method::GET, &uri, Full::new(Bytes::new()).boxed())?;
        http_req
            .headers_mut()
            .insert(STREAM_HEADER, http::HeaderValue::from(self.id));
        self.sender.ready().await.map_err(proto)?;
        let resp = self.sender.send_request(http_req).await.map_err(proto)?;
        check_status(&resp)?;
        collect_messages(resp.into_body(), self.max, req.count).await
    }
}
