//! The SSE-specific behaviour, from the wire: resume with `Last-Event-ID`, bad `POST`s, `204`,
//! keep-alive comments. Every wait is bounded; nothing sleeps to synchronise.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sse_stream::{Sse, SseStream};
use wirelab_core::codec::{self, Kind};
use wirelab_core::{Channel, Client, ClientConfig, Error, Server, ServerConfig};
use wirelab_sse::{SseClient, SseServer, SseSettings};
use wirelab_test_support::{local, panics, start, within, Served};

const BOUND: Duration = Duration::from_secs(10);

fn msg(seq: u64, size: usize) -> Bytes {
    codec::encode(0, seq, 0, Kind::Echo, size).unwrap()
}

fn q(session: u64) -> String {
    format!("session={session:016x}&stream=0")
}

async fn serve_with(cfg: ServerConfig, settings: SseSettings) -> Served {
    let s = SseServer::bind_with(cfg, settings).await.unwrap();
    let addr = s.local_addr();
    let stop = wirelab_core::CancellationToken::new();
    let task = tokio::spawn(s.serve(stop.clone()));
    Served { addr, stop, task }
}

async fn stop(s: Served) {
    s.stop.cancel();
    within("server shutdown", BOUND, s.task)
        .await
        .unwrap()
        .unwrap();
}

/// One raw HTTP/1.1 request on a new connection.
async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    last: Option<&str>,
    body: Bytes,
) -> Response<Incoming> {
    let io = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost");
    if let Some(l) = last {
        req = req.header("last-event-id", l);
    }
    within(
        "response head",
        BOUND,
        tx.send_request(req.body(Full::new(body)).unwrap()),
    )
    .await
    .unwrap()
}

async fn post(addr: SocketAddr, session: u64, body: Bytes) -> StatusCode {
    let path = format!("/send?{}", q(session));
    request(addr, Method::POST, &path, None, body)
        .await
        .status()
}

type Events = SseStream<Incoming>;

async fn events(addr: SocketAddr, session: u64, last: Option<&str>) -> (StatusCode, Events) {
    let path = format!("/events?{}", q(session));
    let r = request(addr, Method::GET, &path, last, Bytes::new()).await;
    (r.status(), SseStream::new(r.into_body()))
}

/// The next event that carries data: its id and decoded message.
async fn next_data(ev: &mut Events) -> (u64, Bytes) {
    loop {
        let e: Sse = within("an event", BOUND, ev.next())
            .await
            .expect("the stream goes on")
            .unwrap();
        if let Some(d) = e.data {
            let id = e.id.unwrap().parse().unwrap();
            let m = base64::engine::general_purpose::STANDARD.decode(d).unwrap();
            return (id, Bytes::from(m));
        }
    }
}

fn batch(seqs: std::ops::Range<u64>) -> Bytes {
    let mut b = Vec::new();
    for s in seqs {
        b.extend_from_slice(&msg(s, 64));
    }
    Bytes::from(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_last_event_id_returns_exactly_the_missed_events() {
    let _panics = panics::no_panics();
    let mut cfg = local();
    cfg.timeouts.ping_interval = None;
    let settings = SseSettings {
        replay_events: 8,
        ..SseSettings::default()
    };
    let s = serve_with(cfg, settings).await;
    let session = 0x5e55_1011;
    let (status, mut first) = events(s.addr, session, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        post(s.addr, session, batch(0..5)).await,
        StatusCode::ACCEPTED
    );
    for want in 0..2 {
        assert_eq!(next_data(&mut first).await, (want, msg(want, 64)));
    }
    // The client "loses" its stream after event 1; three more messages are sent meanwhile.
    drop(first);
    assert_eq!(
        post(s.addr, session, batch(5..8)).await,
        StatusCode::ACCEPTED
    );
    let (status, mut resumed) = events(s.addr, session, Some("1")).await;
    assert_eq!(status, StatusCode::OK);
    for want in 2..8 {
        assert_eq!(next_data(&mut resumed).await, (want, msg(want, 64)));
    }
    // Nothing else was queued: the next event is the next message.
    assert_eq!(
        post(s.addr, session, batch(8..9)).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(next_data(&mut resumed).await, (8, msg(8, 64)));
    assert_eq!(
        post(s.addr, session, batch(9..13)).await,
        StatusCode::ACCEPTED
    );
    for want in 9..13 {
        assert_eq!(next_data(&mut resumed).await.0, want);
    }
    drop(resumed);

    // The replay buffer holds the last 8 events (5..=12): resuming after 3 cannot be exact,
    // so the answer is 204 (stop); after 10 it can.
    let (status, _) = events(s.addr, session, Some("3")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, mut tail) = events(s.addr, session, Some("10")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_data(&mut tail).await, (11, msg(11, 64)));
    assert_eq!(next_data(&mut tail).await.0, 12);
    drop(tail);
    // A session this server never saw cannot be resumed either; an id from the future is an
    // error.
    let (status, _) = events(s.addr, 0xdead, Some("3")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = events(s.addr, session, Some("99")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_posts_get_http_errors() {
    let _panics = panics::no_panics();
    let mut cfg = local();
    cfg.limits.max_message = 4096;
    let s = serve_with(cfg, SseSettings::default()).await;
    let session = 0xbad;
    let (_, mut ev) = events(s.addr, session, None).await;
    let cases: Vec<(&str, Bytes, StatusCode)> = vec![
        (
            "over the limit",
            Bytes::from(vec![0u8; 8192]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "not a service message",
            Bytes::from(vec![b'x'; 64]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "ends inside a message",
            msg(0, 64).slice(..40),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a good message then garbage",
            Bytes::from([&msg(0, 64)[..], &[7u8; 40][..]].concat()),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, body, want) in cases {
        assert_eq!(post(s.addr, session, body).await, want, "{what}");
    }
    assert_eq!(
        post(s.addr, 0x1234, msg(0, 64)).await,
        StatusCode::NOT_FOUND,
        "no event stream"
    );
    let bad_query = request(s.addr, Method::POST, "/send?stream=x", None, msg(0, 64)).await;
    assert_eq!(bad_query.status(), StatusCode::BAD_REQUEST);
    let path = format!("/events?{}", q(session));
    let wrong = request(s.addr, Method::PUT, &path, None, Bytes::new()).await;
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    let bad_id = request(s.addr, Method::GET, &path, Some("x"), Bytes::new()).await;
    assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);
    let body = bad_id.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("Last-Event-ID"));
    // None of the refused bodies queued anything: the first event is the first good message.
    assert_eq!(
        post(s.addr, session, msg(9, 64)).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(next_data(&mut ev).await, (0, msg(9, 64)));
    drop(ev);
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_a_status_error_for_the_client_over_h1_and_h2() {
    let _panics = panics::no_panics();
    for tls in [false, true] {
        let mut cfg = local();
        cfg.limits.max_message = 4096;
        let mut client = ClientConfig::new(cfg.listen);
        if tls {
            let t = wirelab_test_support::test_tls(wirelab_core::tls::ALPN_H2);
            cfg.tls = Some(t.server);
            client.tls = Some(t.client);
        }
        let s = start::<SseServer>(cfg).await;
        client.addr = s.addr;
        let mut c = within("connect", BOUND, SseClient::connect(&client))
            .await
            .unwrap();
        let mut ch = c.channels().remove(0);
        assert_eq!(
            within("echo", BOUND, ch.echo(msg(0, 100))).await.unwrap(),
            msg(0, 100)
        );
        let e = within("echo", BOUND, ch.echo(msg(1, 8192)))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Status(413)), "tls {tls}: {e:?}");
        drop(ch);
        within("close", BOUND, c.close()).await.unwrap();
        stop(s).await;
    }
}

/// A server that answers the first event stream with one event and a short `retry:`, then
/// ends it, and answers the reconnection `204`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204_stops_the_client_cleanly() {
    let _panics = panics::no_panics();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gets = Arc::new(AtomicU32::new(0));
    let resumed_after = Arc::new(std::sync::Mutex::new(None::<String>));
    let first = msg(0, 64);
    let event = format!(
        "retry: 10\n\nid: 0\ndata: {}\n\n",
        base64::engine::general_purpose::STANDARD.encode(&first)
    );
    let (g, r) = (gets.clone(), resumed_after.clone());
    let server = tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let (g, r, event) = (g.clone(), r.clone(), event.clone());
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let n = g.fetch_add(1, Ordering::SeqCst);
                let last = req
                    .headers()
                    .get("last-event-id")
                    .map(|v| v.to_str().unwrap().to_string());
                let resp = if n == 0 {
                    Response::new(Full::new(Bytes::from(event.clone())))
                } else {
                    *r.lock().unwrap() = last;
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = StatusCode::NO_CONTENT;
                    resp
                };
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc),
            );
        }
    });
    let mut c = within(
        "connect",
        BOUND,
        SseClient::connect(&ClientConfig::new(addr)),
    )
    .await
    .unwrap();
    let mut ch = c.channels().remove(0);
    assert_eq!(within("recv", BOUND, ch.recv()).await.unwrap(), first);
    let end = within("recv", BOUND, ch.recv()).await.unwrap_err();
    assert!(matches!(end, Error::ConnectionClosed), "{end:?}");
    assert_eq!(
        gets.load(Ordering::SeqCst),
        2,
        "one reconnection, then none"
    );
    assert_eq!(resumed_after.lock().unwrap().as_deref(), Some("0"));
    drop(ch);
    within("close", BOUND, c.close()).await.unwrap();
    assert_eq!(gets.load(Ordering::SeqCst), 2);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_comments_arrive_at_the_interval() {
    let interval = Duration::from_millis(150);
    let mut cfg = local();
    cfg.timeouts.ping_interval = Some(interval);
    let s = serve_with(cfg, SseSettings::default()).await;
    let path = format!("/events?{}", q(7));
    let resp = request(s.addr, Method::GET, &path, None, Bytes::new()).await;
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    let start = Instant::now();
    while seen.len() < 5 {
        let frame = within("a chunk", BOUND, body.frame())
            .await
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            let comments = data.windows(6).filter(|w| w == b": ka\n\n").count();
            assert!(
                comments > 0 || data.starts_with(b"retry: "),
                "only comments on an idle stream: {data:?}"
            );
            seen.extend(std::iter::repeat_n(Instant::now(), comments));
        }
    }
    let mut prev = start;
    for (i, at) in seen.iter().enumerate() {
        // Not before its time: comment k no earlier than k intervals after the stream began
        // (less a little: the server's clock started before the response head reached us).
        let since = *at - start;
        let due = interval * (i as u32 + 1);
        assert!(
            since + interval / 4 >= due,
            "comment {i} at {since:?}, due {due:?}"
        );
        // Nor much later than one interval after the one before.
        let gap = *at - prev;
        assert!(gap <= interval * 4, "comment {i} after {gap:?}");
        prev = *at;
    }
    drop(body);
    stop(s).await;
}

/// The browser page at `GET /`, a CORS preflight answer, and `Access-Control-Allow-Origin` on
/// the event stream and on `POST /send`, so a page of another origin can use both.
#[tokio::test]
async fn page_and_cors() {
    let _panics = panics::no_panics();
    let s = serve_with(local(), SseSettings::default()).await;
    let r = request(s.addr, Method::GET, "/", None, Bytes::new()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = within("the page", BOUND, r.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&page).contains("const SERVER = \"sse\";"));
    let r = request(s.addr, Method::OPTIONS, "/send", None, Bytes::new()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let (status, mut ev) = events(s.addr, 7, None).await;
    assert_eq!(status, StatusCode::OK);
    let r = request(
        s.addr,
        Method::POST,
        &format!("/send?{}", q(7)),
        None,
        msg(0, 64),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(next_data(&mut ev).await.1, msg(0, 64));
    drop(ev);
    stop(s).await;
}

/// A client that opens its event stream and never reads it must not make the server buffer
/// without bound: the events its `POST`s produce fill the stream's bounded replay buffer (the
/// heap the server spends on it), hyper's write buffer and the kernel's socket buffers, and then
/// the next `POST` waits and, at the idle timeout, is answered `503` ("the event stream is not
/// being read") instead of being queued. The bound on what is accepted before that: the replay
/// buffer, what the connection may hold in user space (the event batch and hyper's write
/// buffer, under 1 MiB together) and the kernel's buffers (the server's send buffer at most
/// `tcp_wmem`'s maximum, the client's receive buffer as set here). Other sessions are served
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_event_stream_gets_503_not_unbounded_buffering() {
    use tokio::io::AsyncWriteExt;
    const SIZE: usize = 16 << 10;
    const RCVBUF: u32 = 8 << 10;
    let settings = SseSettings {
        replay_events: 64,
        replay_bytes: 256 << 10,
        ..SseSettings::default()
    };
    let mut cfg = local();
    cfg.timeouts.idle = Duration::from_secs(2);
    let s = serve_with(cfg, settings).await;
    let session = 0x51_0e;
    // The never-reading event stream: a small receive buffer, a GET, and no read ever.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(RCVBUF).unwrap();
    let mut never_read = within("connect", BOUND, sock.connect(s.addr))
        .await
        .unwrap();
    let get = format!(
        "GET /events?{} HTTP/1.1\r\nhost: localhost\r\n\r\n",
        q(session)
    );
    never_read.write_all(get.as_bytes()).await.unwrap();
    // The stream exists once a POST to it is not answered 404.
    let first = within("the event stream to attach", BOUND, async {
        loop {
            match post(s.addr, session, msg(0, SIZE)).await {
                StatusCode::NOT_FOUND => tokio::task::yield_now().await,
                other => break other,
            }
        }
    })
    .await;
    assert_eq!(first, StatusCode::ACCEPTED);
    let wmem_max: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let bound = (256 << 10) + (1 << 20) + wmem_max + 4 * u64::from(RCVBUF);
    let most = bound / SIZE as u64 + 1;
    let mut accepted = 1u64;
    let refused = within("a POST to be refused", Duration::from_secs(60), async {
        loop {
            let status = post(s.addr, session, msg(accepted, SIZE)).await;
            if status != StatusCode::ACCEPTED {
                break status;
            }
            accepted += 1;
            assert!(
                accepted <= most,
                "{accepted} messages of {SIZE} B accepted for a stream nobody reads: more than \
                 the {bound} B the bound allows"
            );
        }
    })
    .await;
    assert_eq!(refused, StatusCode::SERVICE_UNAVAILABLE);
    // Another session is served meanwhile, and the server stops cleanly with the stuck one.
    let (status, mut ev) = events(s.addr, session + 1, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        post(s.addr, session + 1, msg(7, 64)).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(next_data(&mut ev).await.1, msg(7, 64));
    eprintln!("never-reading client: {accepted} x {SIZE} B accepted (bound {bound} B), then 503");
    drop(never_read);
    stop(s).await;
}
