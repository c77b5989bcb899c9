use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use wirelab_core::codec::StreamRequest;
use wirelab_core::{net, Channel, Client, ClientConfig, Error, Received, Result, Sharing};
use wirelab_http::{check_status, InOrder};

type Sender = SendRequest<Full<Bytes>>;

/// A keep-alive pool: at most `size` connections; a request waits while all are busy.
#[derive(Debug)]
struct Pool {
    cfg: ClientConfig,
    authority: String,
    idle: Mutex<Vec<Sender>>,
    permits: Semaphore,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    async fn connect(&self) -> Result<Sender> {
        let io = net::connect_io(&self.cfg, None).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        if let Ok(mut conns) = self.conns.lock() {
            conns.push(task);
        }
        Ok(sender)
    }

    /// Runs `req` on a pooled connection; `read` consumes the response while the connection is
    /// held, so the connection returns to the pool only once its response is fully read.
    async fn with_connection<T, F, Fut>(&self, req: Request<Full<Bytes>>, read: F) -> Result<T>
    where
        F: FnOnce(Response<Incoming>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::ConnectionClosed)?;
        let reused = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut sender = match reused {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender
            .ready()
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let out = read(resp).await?;
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(sender);
        }
        Ok(out)
    }

    fn request(&self, method: Method, path: &str, body: Bytes) -> Result<Request<Full<Bytes>>> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority)
            .body(Full::new(body))
            .map_err(|e| Error::Config(e.to_string()))
    }
}

/// An h1 client session: K logical streams sharing one keep-alive pool.
#[derive(Debug)]
pub struct H1Client {
    pool: Arc<Pool>,
    channels: Vec<H1Channel>,
}

/// One logical stream: each message is a `POST /echo` on a pooled connection; answers are
/// returned in the order the messages were sent.
#[derive(Debug)]
pub struct H1Channel {
    id: u32,
    pool: Arc<Pool>,
    pending: InOrder,
}

impl Client for H1Client {
    type Channel = H1Channel;

    async fn connect(cfg: &ClientConfig) -> Result<Self> {
        let size = match cfg.sharing {
            Sharing::Shared => 1,
            Sharing::Pool => cfg.pool_size.max(1),
        };
        let pool = Arc::new(Pool {
            authority: format!("{}:{}", cfg.server_name, cfg.addr.port()),
            cfg: cfg.clone(),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
            conns: Mutex::new(Vec::new()),
        });
        // Open one connection now so that connection errors surface at connect time.
        let first = pool.connect().await?;
        if let Ok(mut idle) = pool.idle.lock() {
            idle.push(first);
        }
        let channels = (0..cfg.streams)
            .map(|id| H1Channel {
                id,
                pool: pool.clone(),
                pending: InOrder::default(),
            })
            .collect();
        Ok(Self { pool, channels })
    }

    fn channels(&mut self) -> Vec<H1Channel> {
        std::mem::take(&mut self.channels)
    }

    async fn close(self) -> Result<()> {
        drop(self.channels);
        // Dropping the idle senders lets each connection task finish; hyper closes the socket.
        if let Ok(mut idle) = self.pool.idle.lock() {
            idle.clear();
        }
        self.pool.permits.close();
        let tasks = self
            .pool
            .conns
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        let grace = self.pool.cfg.timeouts.shutdown_grace;
        for t in tasks {
            let _ = tokio::time::timeout(grace, t).await;
        }
        Ok(())
    }
}

impl Channel for H1Channel {
    fn id(&self) -> u32 {
        self.id
    }

    async fn send(&mut self, msg: Bytes) -> Result<()> {
        let pool = self.pool.clone();
        let max = pool.cfg.limits.max_message;
        let req = pool.request(Method::POST, "/echo", msg)?;
        self.pending.push(tokio::spawn(async move {
            pool.with_connection(req, |resp| async move {
                check_status(&resp)?;
                let body = Limited::new(resp.into_body(), max)
                    .collect()
                    .await
                    .map_err(|e| Error::Protocol(format!("reading the echo: {e}")))?;
                Ok(body.to_bytes())
            })
            .await
        }));
        Ok(())
    }

    async fn recv(&mut self) -> Result<Bytes> {
        self.pending.next().await
    }

    async fn server_stream(&mut self, req: StreamRequest) -> Result<Vec<Received>> {
        let path = format!("/stream?{}", req.to_query());
        let mut http_req = self.pool.request(Method::GET, &path, Bytes::new())?;
        http_req
            .headers_mut()
            .insert(crate::STREAM_HEADER, header::HeaderValue::from(self.id));
        let max = self.pool.cfg.limits.max_message;
        self.pool
            .with_connection(http_req, |resp| async move {
                check_status(&resp)?;
                wirelab_http::collect_messages(resp.into_body(), max, req.count).await
            })
            .await
    }
}
