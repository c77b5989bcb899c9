//! Independent peers against our servers and clients: the Autobahn|Testsuite cases (via
//! `kosoku`), Python `websockets`, `curl`, `h2load`, Python `h2` + `wsproto` (RFC 8441),
//! `hypercorn`, and aioquic's HTTP/3 example client and server.
//!
//! Python peers come from a virtualenv: `$WIRELAB_VENV`, else `.venv` at the repository root
//! (`scripts/test.sh` makes it). When a peer is missing the test says so on the terminal and
//! returns; with `WIRELAB_REQUIRE_PEERS=1` (CI) a missing peer fails the test instead.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use wirelab_core::tls::{self, Identity};
use wirelab_core::{CancellationToken, Server, ServerConfig};

const PEER_BOUND: Duration = Duration::from_secs(300);

fn venv() -> PathBuf {
    std::env::var_os("WIRELAB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv"))
}

/// Returns the peer's program, or records the skip (in `scripts/test.sh`'s summary) and
/// returns `None`; fails instead when peers are required (`WIRELAB_REQUIRE_PEERS=1`).
#[track_caller]
fn peer(program: PathBuf, what: &str) -> Option<PathBuf> {
    wirelab_test_support::find_file(program, what)
}

async fn run(cmd: &mut tokio::process::Command) -> Output {
    cmd.kill_on_drop(true);
    tokio::time::timeout(PEER_BOUND, cmd.output())
        .await
        .expect("peer did not finish in time")
        .expect("peer could not be started")
}

async fn start<S: Server>(cfg: ServerConfig) -> (SocketAddr, CancellationToken) {
    let s = wirelab_test_support::start::<S>(cfg).await;
    (s.addr, s.stop)
}

fn local() -> ServerConfig {
    wirelab_test_support::local()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_testsuite_cases_all_pass() {
    let Some(kosoku) = peer(venv().join("bin/kosoku"), "Autobahn (kosoku)") else {
        return;
    };
    let mut cfg = local();
    cfg.raw_echo = true;
    let (addr, stop) = start::<wirelab_ws::WsServer>(cfg).await;
    let out_dir = std::env::temp_dir().join(format!("wirelab-autobahn-{}", std::process::id()));
    let out = run(tokio::process::Command::new(kosoku)
        .arg("-m")
        .arg("fuzzingclient")
        .arg(format!("ws://{addr}/ws"))
        .args(["-x", "12.*", "-x", "13.*", "-p", "2", "-o"])
        .arg(&out_dir))
    .await;
    stop.cancel();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("index.json")).unwrap()).unwrap();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    let mut failed = Vec::new();
    for cases in index.as_object().unwrap().values() {
        for (case, r) in cases.as_object().unwrap() {
            let b = r["behavior"].as_str().unwrap_or("?").to_string();
            let bc = r["behaviorClose"].as_str().unwrap_or("?");
            if !matches!(b.as_str(), "OK" | "NON-STRICT" | "INFORMATIONAL")
                || !matches!(bc, "OK" | "INFORMATIONAL")
            {
                failed.push(format!("{case}: {b}/{bc}"));
            }
            *counts.entry(b).or_default() += 1;
        }
    }
    let total: usize = counts.values().sum();
    let _ = writeln!(
        std::io::stderr(),
        "Autobahn|Testsuite via kosoku (12.*, 13.* compression excluded): {total} cases, {counts:?}; failed: {failed:?}"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(out.status.success(), "kosoku failed:\n{stdout}");
    assert_eq!(total, 301, "expected the 301 non-compression cases");
    assert!(failed.is_empty(), "{failed:?}");
}

/// The asyncio client, not `websockets.sync`: the sync client reads in a second thread while
/// the first writes the request, and on Python 3.11 both use one OpenSSL `SSL` object at once.
/// When the server's TLS 1.3 session tickets arrive just as the request is written, the request
/// is sometimes never sent (the client's socket shows only ClientHello, CCS and Finished) and
/// the open stalls until a timeout: 1 to 3 in 1000 wss opens in a stress loop, against our
/// server and against Python's own `websockets` server alike; none in 8000 with the asyncio
/// client, 4000 with TLS 1.2, or 4000 against a server that sends no tickets.
const WEBSOCKETS_PEER: &str = r#"
import asyncio, ssl, struct, sys, time
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

url, cafile = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
ctx = None
if cafile:
    ctx = ssl.create_default_context(cafile=cafile)

def msg(stream, seq, size):
    # wirelab's header, written independently: magic, version, kind, stream, seq, ns, len, 0
    h = struct.pack('>2sBBIQQII', b'WL', 1, 0, stream, seq, time.monotonic_ns(), size, 0)
    return h + bytes((i + seq) & 0xff for i in range(size - 32))

async def main():
    async with connect(url, ssl=ctx, max_size=None) as ws:
        for seq in range(50):
            for size in (32, 125, 126, 65536, 70000):
                m = msg(0, seq, size)
                await ws.send(m)
                assert await asyncio.wait_for(ws.recv(), 10) == m, (seq, size)
        await ws.close()
        assert ws.protocol.close_rcvd.code == 1000, ws.protocol.close_rcvd

    async with connect(url, ssl=ctx) as ws:
        # Plain text and bytes that are not a wirelab message come back as they were sent.
        await ws.send("text typed by hand")
        assert await asyncio.wait_for(ws.recv(), 10) == "text typed by hand"
        await ws.send(b"plain bytes")
        assert await asyncio.wait_for(ws.recv(), 10) == b"plain bytes"
        # A wirelab message gone wrong (header version 9) is refused with 1003.
        await ws.send(b"WL\x09" + bytes(61))
        try:
            await asyncio.wait_for(ws.recv(), 10)
            sys.exit("expected a close")
        except ConnectionClosed as e:
            assert e.rcvd.code == 1003, e.rcvd

asyncio.run(main())
print("websockets peer: 250 echoes OK, close 1000 OK, text and plain bytes echoed OK, bad wirelab message -> 1003 OK")
"#;

async fn websockets_peer(use_tls: bool) {
    let Some(py) = peer(venv().join("bin/python"), "Python websockets") else {
        return;
    };
    let mut cfg = local();
    let mut args = Vec::new();
    let dir = std::env::temp_dir().join(format!("wirelab-peer-{}-{use_tls}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if use_tls {
        let id = Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, id.certificate_pem()).unwrap();
        cfg.tls = Some(id.server_config(&[tls::ALPN_HTTP11]).unwrap());
        args.push(ca.display().to_string());
    }
    let (addr, stop) = start::<wirelab_ws::WsServer>(cfg).await;
    let scheme = if use_tls { "wss" } else { "ws" };
    let out = run(tokio::process::Command::new(py)
        .arg("-c")
        .arg(WEBSOCKETS_PEER)
        // The address itself, not `localhost`: nothing listens on ::1, which `localhost`
        // may try first.
        .arg(format!("{scheme}://{addr}/ws"))
        .args(&args))
    .await;
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "python websockets peer failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_echoes_through_ws() {
    websockets_peer(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_echoes_through_wss() {
    websockets_peer(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_against_h1() {
    let Some(curl) = wirelab_test_support::find_program("curl", "curl", "apt-get install curl")
    else {
        return;
    };
    let mut cfg = local();
    cfg.limits.max_message = 1024;
    let (addr, stop) = start::<wirelab_h1::H1Server>(cfg).await;
    let base = format!("http://127.0.0.1:{}", addr.port());

    let out = run(tokio::process::Command::new(&curl)
        .args(["-s", "--data-binary", "hello from curl"])
        .arg(format!("{base}/echo")))
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from curl");

    // Two requests in one invocation reuse the keep-alive connection.
    let url = format!("{base}/stream?count=10&size=64");
    let out = run(tokio::process::Command::new(&curl)
        .args(["-sv"])
        .arg(&url)
        .arg(&url))
    .await;
    assert_eq!(out.stdout.len(), 2 * 10 * 64);
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("Re-using existing connection"),
        "{verbose}"
    );
    assert!(
        verbose.contains("Transfer-Encoding: chunked")
            || verbose.contains("transfer-encoding: chunked"),
        "{verbose}"
    );

    let out = run(tokio::process::Command::new(&curl)
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--data-binary",
        ])
        .arg("x".repeat(2000))
        .arg(format!("{base}/echo")))
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "413");
    stop.cancel();
}

/// Starts an h2 server (TLS with a certificate for `localhost`, or h2c) and returns it with the
/// CA file clients need.
async fn h2_server(
    use_tls: bool,
    dir: &std::path::Path,
) -> (SocketAddr, CancellationToken, PathBuf) {
    let mut cfg = local();
    let ca = dir.join("ca.pem");
    if use_tls {
        let id = Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
        std::fs::write(&ca, id.certificate_pem()).unwrap();
        cfg.tls = Some(id.server_config(&[tls::ALPN_H2]).unwrap());
    }
    let (addr, stop) = start::<wirelab_h2::H2Server>(cfg).await;
    (addr, stop, ca)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wirelab-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_against_h2_tls_and_h2c() {
    let Some(curl) = wirelab_test_support::find_program("curl", "curl", "apt-get install curl")
    else {
        return;
    };
    let dir = scratch("curl-h2");
    let (addr, stop, ca) = h2_server(true, &dir).await;
    let port = addr.port();
    let out = run(tokio::process::Command::new(&curl)
        .args(["-s", "--http2", "--cacert"])
        .arg(&ca)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .args(["--data-binary", "hello over h2", "-w", " %{http_version}"])
        .arg(format!("https://localhost:{port}/echo")))
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello over h2 2",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.cancel();

    let (addr, stop, _) = h2_server(false, &dir).await;
    let base = format!("http://127.0.0.1:{}", addr.port());
    let out = run(tokio::process::Command::new(&curl)
        .args([
            "-s",
            "--http2-prior-knowledge",
            "--data-binary",
            "hello over h2c",
            "-w",
            " %{http_version}",
        ])
        .arg(format!("{base}/echo")))
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over h2c 2");
    let out = run(tokio::process::Command::new(&curl)
        .args(["-s", "--http2-prior-knowledge"])
        .arg(format!("{base}/stream?count=10&size=64")))
    .await;
    assert_eq!(out.stdout.len(), 640);
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_against_h2_tls_and_h2c() {
    let Some(h2load) =
        wirelab_test_support::find_program("h2load", "h2load", "apt-get install nghttp2-client")
    else {
        return;
    };
    let dir = scratch("h2load");
    let body = dir.join("body.bin");
    std::fs::write(
        &body,
        wirelab_core::codec::encode(0, 0, 0, wirelab_core::codec::Kind::Echo, 64).unwrap(),
    )
    .unwrap();
    for use_tls in [true, false] {
        let (addr, stop, _) = h2_server(use_tls, &dir).await;
        let scheme = if use_tls { "https" } else { "http" };
        let out = run(tokio::process::Command::new(&h2load)
            .args(["-n", "2000", "-c", "4", "-m", "10", "-d"])
            .arg(&body)
            .arg(format!("{scheme}://127.0.0.1:{}/echo", addr.port())))
        .await;
        stop.cancel();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let proto = if use_tls {
            "Application protocol: h2"
        } else {
            "Application protocol: h2c"
        };
        assert!(text.contains(proto), "{text}");
        assert!(
            text.contains("2000 succeeded, 0 failed, 0 errored"),
            "{text}"
        );
        assert!(text.contains("status codes: 2000 2xx"), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `n` echoes of `size` bytes on one channel, each checked; the first failure as text.
async fn echoes<C: wirelab_core::Channel>(ch: &mut C, n: u64, size: usize) -> Result<(), String> {
    for seq in 0..n {
        let m = wirelab_core::codec::encode(ch.id(), seq, 0, wirelab_core::codec::Kind::Echo, size)
            .unwrap();
        match ch.echo(m.clone()).await {
            Ok(back) if back == m => {}
            Ok(_) => return Err(format!("stream {}: echo {seq} differs", ch.id())),
            Err(e) => return Err(format!("stream {}: echo {seq}: {e}", ch.id())),
        }
    }
    Ok(())
}

fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_h2_wsproto_rfc8441_client_against_h2ws() {
    let Some(py) = peer(venv().join("bin/python"), "Python h2 + wsproto") else {
        return;
    };
    let (addr, stop) = start::<wirelab_h2ws::H2wsServer>(local()).await;
    let out = run(tokio::process::Command::new(py)
        .arg(peer_script("rfc8441_client.py"))
        .arg("127.0.0.1")
        .arg(addr.port().to_string()))
    .await;
    stop.cancel();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("200 echoes OK"), "{text}");
    let _ = writeln!(std::io::stderr(), "{}", text.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2ws_client_against_hypercorn() {
    use tokio::io::AsyncBufReadExt;
    use wirelab_core::Client;
    let Some(py) = peer(venv().join("bin/python"), "hypercorn") else {
        return;
    };
    let mut child = tokio::process::Command::new(py)
        .arg(peer_script("hypercorn_echo.py"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = tokio::time::timeout(PEER_BOUND, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("hypercorn printed no port")
        .parse()
        .unwrap();
    let mut cfg = wirelab_core::ClientConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
    cfg.streams = 3;
    let mut client = wirelab_h2ws::H2wsClient::connect(&cfg).await.unwrap();
    let mut tasks = Vec::new();
    for mut ch in client.channels() {
        tasks.push(tokio::spawn(async move {
            echoes(&mut ch, 100, 100).await?;
            // Kept open until every stream is done: hypercorn 0.18.0 drops the whole connection
            // when one WebSocket stream ends while others are open (its own error, reproduced
            // with the independent Python h2 + wsproto client; see docs/src/rfc8441.md).
            Ok(ch)
        }));
    }
    let (mut failures, mut open) = (Vec::<String>::new(), Vec::new());
    for t in tasks {
        match tokio::time::timeout(PEER_BOUND, t).await.unwrap().unwrap() {
            Ok(ch) => open.push(ch),
            Err(e) => failures.push(e),
        }
    }
    drop(open);
    let closed = tokio::time::timeout(PEER_BOUND, client.close())
        .await
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut err = String::new();
    if closed.is_err() {
        // A dropped connection: let hypercorn finish printing why before it is killed (bounded:
        // its traceback, or PEER_BOUND).
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(PEER_BOUND, async {
            while !err.contains("KeyError") {
                match tokio::io::AsyncReadExt::read(&mut stderr, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => err.push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        })
        .await;
    }
    child.kill().await.unwrap();
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut rest)
        .await
        .unwrap();
    err.push_str(&rest);
    assert!(failures.is_empty(), "{failures:?}\nhypercorn said:\n{err}");
    match closed {
        Ok(()) => {}
        // hypercorn 0.18.0 forgets a stream once its own side has ended it and then raises
        // KeyError on the DATA frame that carries our END_STREAM, dropping the connection
        // under the other streams' close handshakes (a race: 11 of 250 runs with 4 busy loops on
        // 2 cores). That is its bug, shown by its own traceback; our client's clean close is
        // checked against our own server in conformance.rs (clean_close).
        Err(e) if err.contains("KeyError") => {
            let _ = writeln!(
                std::io::stderr(),
                "h2ws vs hypercorn: echoes OK; close not checked this run: hypercorn hit its \
                 KeyError on a stream it had already closed ({e})"
            );
        }
        Err(e) => panic!("close: {e}\nhypercorn said:\n{err}"),
    }
    // hypercorn says which HTTP version carried each WebSocket: RFC 8441 means HTTP/2.
    assert_eq!(err.matches("websocket over HTTP/2").count(), 3, "{err}");
}

/// aioquic's examples directory (from its sdist; `scripts/test.sh` unpacks it into the venv).
fn aioquic_examples(what: &str) -> Option<(PathBuf, PathBuf)> {
    let py = peer(venv().join("bin/python"), what)?;
    let ex = venv().join("aioquic-examples");
    peer(ex.join("http3_client.py"), what)?;
    Some((py, ex))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_http3_client_against_h3() {
    let Some((py, ex)) = aioquic_examples("aioquic HTTP/3 client") else {
        return;
    };
    let dir = scratch("aioquic-client");
    let id = Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, id.certificate_pem()).unwrap();
    let mut cfg = local();
    cfg.tls = Some(id.server_config(&[tls::ALPN_H3]).unwrap());
    let (addr, stop) = start::<wirelab_h3::H3Server>(cfg).await;
    let base = format!("https://localhost:{}", addr.port());
    let ticket = dir.join("ticket");
    let client = |out: &str, extra: &[&str], urls: &[String]| {
        let mut c = tokio::process::Command::new(&py);
        c.current_dir(&ex)
            .arg("http3_client.py")
            .arg("--ca-certs")
            .arg(&ca)
            .arg("--session-ticket")
            .arg(&ticket)
            .arg("--output-dir")
            .arg(dir.join(out))
            .args(extra)
            .args(urls);
        std::fs::create_dir_all(dir.join(out)).unwrap();
        c
    };
    // Two POST /echo on one connection (1-RTT; the session ticket is saved).
    let echo = format!("{base}/echo");
    let out = run(&mut client(
        "echo",
        &["--data", "hello over h3"],
        &[echo.clone(), echo],
    ))
    .await;
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert_eq!(
        log.matches("Response received for POST /echo").count(),
        2,
        "{log}"
    );
    assert_eq!(
        std::fs::read(dir.join("echo/echo")).unwrap(),
        b"hello over h3"
    );
    // A server stream, resumed with 0-RTT from the saved ticket.
    let url = format!("{base}/stream?count=10&size=64&interval_ms=0");
    let qlog = dir.join("qlog");
    std::fs::create_dir_all(&qlog).unwrap();
    let qlog_arg = qlog.to_string_lossy().into_owned();
    let out = run(&mut client(
        "stream",
        &["--zero-rtt", "--quic-log", &qlog_arg],
        &[url],
    ))
    .await;
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    // Early data was really used and accepted, from aioquic's own qlog: the request went out
    // in a 0-RTT packet, the server acknowledged that packet (0-RTT and 1-RTT share one packet
    // number space), and the request was never sent again in 1-RTT (what a rejection forces).
    let qlogs: Vec<PathBuf> = std::fs::read_dir(&qlog)
        .unwrap()
        .flatten()
        .map(|f| f.path())
        .collect();
    assert_eq!(qlogs.len(), 1, "one qlog per connection");
    let q: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&qlogs[0]).unwrap()).unwrap();
    let events = q["traces"][0]["events"].as_array().unwrap();
    let packets = |name: &'static str, kind: &'static str| {
        events
            .iter()
            .filter(move |e| e["name"] == name)
            .filter(move |e| e["data"]["header"]["packet_type"] == kind)
            .map(|e| &e["data"])
    };
    let has_request = |d: &serde_json::Value| {
        d["frames"].as_array().is_some_and(|fs| {
            fs.iter()
                .any(|f| f["frame_type"] == "stream" && f["stream_id"] == 0 && f["offset"] == 0)
        })
    };
    let early: Vec<u64> = packets("transport:packet_sent", "0RTT")
        .filter(|d| has_request(d))
        .map(|d| d["header"]["packet_number"].as_u64().unwrap())
        .collect();
    assert_eq!(early.len(), 1, "the request went out in one 0-RTT packet");
    let acked = packets("transport:packet_received", "1RTT").any(|d| {
        d["frames"].as_array().is_some_and(|fs| {
            fs.iter().filter(|f| f["frame_type"] == "ack").any(|f| {
                f["acked_ranges"].as_array().unwrap().iter().any(|r| {
                    let r: Vec<u64> = r
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap())
                        .collect();
                    (r[0]..=*r.last().unwrap()).contains(&early[0])
                })
            })
        })
    });
    assert!(acked, "the server never acknowledged the 0-RTT packet");
    assert!(
        !packets("transport:packet_sent", "1RTT").any(has_request),
        "the request was sent again in 1-RTT: 0-RTT was rejected"
    );
    let body = std::fs::read(dir.join("stream/stream")).unwrap();
    assert_eq!(body.len(), 640, "{log}");
    for (i, m) in body.chunks(64).enumerate() {
        let h = wirelab_core::codec::decode(m, 1 << 20).unwrap();
        assert_eq!((h.seq, h.len), (i as u64, 64));
    }
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = writeln!(
        std::io::stderr(),
        "aioquic http3_client.py: 2 POST /echo on one connection, GET /stream (10 messages) with --zero-rtt: OK"
    );
}

/// RFC 9220 (WebSocket over HTTP/3) is refused, and the refusal is documented here: our h3
/// server does not offer extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL is absent or 0), and
/// aioquic's extended CONNECT with `:protocol websocket` is reset with H3_MESSAGE_ERROR (0x10e),
/// because the released h3 crate cannot parse that token (`crates/wirelab-h3/tests/rfc9220.rs`
/// turns red the day it can). Never a 200: a tunnel the server cannot serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_rfc9220_websocket_over_h3_is_refused() {
    let Some((py, _)) = aioquic_examples("aioquic RFC 9220 client") else {
        return;
    };
    let dir = scratch("aioquic-rfc9220");
    let id = Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let ca = dir.join("cert.pem");
    std::fs::write(&ca, id.certificate_pem()).unwrap();
    let mut cfg = local();
    cfg.tls = Some(id.server_config(&[tls::ALPN_H3]).unwrap());
    let (addr, stop) = start::<wirelab_h3::H3Server>(cfg).await;
    let out = run(tokio::process::Command::new(py)
        .arg(peer_script("rfc9220_client.py"))
        .arg("127.0.0.1")
        .arg(addr.port().to_string())
        .arg(&ca))
    .await;
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(said.trim()).expect("one JSON line");
    assert!(
        matches!(v["enable_connect_protocol"].as_u64(), None | Some(0)),
        "the h3 server offers extended CONNECT: {v}"
    );
    assert_eq!(v["outcome"], "reset 0x10e", "{v}");
    let _ = writeln!(
        std::io::stderr(),
        "aioquic RFC 9220 CONNECT :protocol websocket to our h3 server: no ENABLE_CONNECT_PROTOCOL, reset with H3_MESSAGE_ERROR (documented refusal): OK"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_client_against_aioquic_http3_server() {
    use tokio::io::AsyncBufReadExt;
    use wirelab_core::Client;
    let Some((py, ex)) = aioquic_examples("aioquic HTTP/3 server") else {
        return;
    };
    let dir = scratch("aioquic-server");
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut child = tokio::process::Command::new(py)
        .arg(peer_script("aioquic_server.py"))
        .arg(&ex)
        .arg(&cert)
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = tokio::time::timeout(PEER_BOUND, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("the aioquic server printed no port")
        .parse()
        .unwrap();
    let mut cfg = wirelab_core::ClientConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
    cfg.tls =
        Some(tls::client_config(&tls::Trust::PemFile(cert.clone()), &[tls::ALPN_H3]).unwrap());
    cfg.mode = wirelab_core::Mode::Rr;
    let mut failures = Vec::new();
    for (streams, zero_rtt) in [(4, false), (1, true)] {
        cfg.streams = streams;
        cfg.zero_rtt = zero_rtt;
        let mut client = tokio::time::timeout(PEER_BOUND, wirelab_h3::H3Client::connect(&cfg))
            .await
            .unwrap()
            .unwrap();
        let mut tasks = Vec::new();
        for mut ch in client.channels() {
            tasks.push(tokio::spawn(async move { echoes(&mut ch, 50, 200).await }));
        }
        for t in tasks {
            if let Err(e) = tokio::time::timeout(PEER_BOUND, t).await.unwrap().unwrap() {
                failures.push(e);
            }
        }
        let early = client.early_data().await;
        if zero_rtt && early != Some(true) {
            failures.push(format!("0-RTT not accepted: {early:?}"));
        }
        tokio::time::timeout(PEER_BOUND, client.close())
            .await
            .unwrap()
            .unwrap();
    }
    child.kill().await.unwrap();
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut err)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{failures:?}\naioquic said:\n{err}");
    assert_eq!(err.matches("HTTP request POST /echo").count(), 250, "{err}");
    let _ = writeln!(
        std::io::stderr(),
        "our h3 client against aioquic http3_server.py: 200 echoes on 4 streams, 50 more resumed with 0-RTT: OK"
    );
}

/// aioquic (the library, 1.7.2) as a WebTransport client of our wt server
/// (`peers/aioquic_wt_client.py`): the session's CONNECT is answered 200, 100 service messages
/// come back intact over one WebTransport stream, 20 datagrams are echoed; and aioquic, which
/// checks the SETTINGS it receives, saw ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_webtransport_client_against_wt() {
    let Some(py) = peer(venv().join("bin/python"), "aioquic WebTransport client") else {
        return;
    };
    let dir = scratch("aioquic-wt-client");
    let id = Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, id.certificate_pem()).unwrap();
    let mut cfg = local();
    cfg.tls = Some(id.server_config(&[tls::ALPN_H3]).unwrap());
    let (addr, stop) = start::<wirelab_wt::WtServer>(cfg).await;
    // 100 service messages, each with the 4-byte length prefix the wt stream carries.
    let mut framed = Vec::new();
    for seq in 0..100u64 {
        let size = 32 + (seq as usize * 37) % 2000;
        let m = wirelab_core::codec::encode(0, seq, seq, wirelab_core::codec::Kind::Echo, size)
            .unwrap();
        framed.extend_from_slice(&(m.len() as u32).to_be_bytes());
        framed.extend_from_slice(&m);
    }
    let messages = dir.join("messages.bin");
    std::fs::write(&messages, &framed).unwrap();
    let out = run(tokio::process::Command::new(py)
        .arg(peer_script("aioquic_wt_client.py"))
        .arg("127.0.0.1")
        .arg(addr.port().to_string())
        .arg(&ca)
        .arg(&messages))
    .await;
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["response"][":status"], "200", "{v}");
    assert_eq!(v["stream_echo_equal"], true, "{v}");
    assert_eq!(v["datagrams_echoed"], 20, "{v}");
    // The SETTINGS Chromium and aioquic look for.
    for (k, want) in [
        ("0x8", 1),
        ("0x33", 1),
        ("0x2b603742", 1),
        ("0xc671706a", 1),
    ] {
        assert_eq!(v["settings"][k], want, "SETTINGS {k}: {v}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "aioquic WebTransport client against wt: CONNECT 200, 100 messages on one stream, 20 datagrams: OK; our SETTINGS as aioquic saw them: {}",
        v["settings"]
    );
}

/// Our wt client against an aioquic WebTransport echo server (`peers/aioquic_wt_server.py`):
/// 4 WebTransport streams in one session, 50 echoes each, and datagram echoes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wt_client_against_aioquic_webtransport_server() {
    use tokio::io::AsyncBufReadExt;
    use wirelab_core::Client;
    let Some(py) = peer(venv().join("bin/python"), "aioquic WebTransport server") else {
        return;
    };
    let dir = scratch("aioquic-wt-server");
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut child = tokio::process::Command::new(py)
        .arg(peer_script("aioquic_wt_server.py"))
        .arg(&cert)
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = tokio::time::timeout(PEER_BOUND, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("the aioquic server printed no port")
        .parse()
        .unwrap();
    let mut cfg = wirelab_core::ClientConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
    cfg.tls =
        Some(tls::client_config(&tls::Trust::PemFile(cert.clone()), &[tls::ALPN_H3]).unwrap());
    cfg.streams = 4;
    let mut failures = Vec::new();
    let mut client = tokio::time::timeout(PEER_BOUND, wirelab_wt::WtClient::connect(&cfg))
        .await
        .unwrap()
        .unwrap();
    let mut tasks = Vec::new();
    for mut ch in client.channels() {
        tasks.push(tokio::spawn(async move { echoes(&mut ch, 50, 300).await }));
    }
    for t in tasks {
        if let Err(e) = tokio::time::timeout(PEER_BOUND, t).await.unwrap().unwrap() {
            failures.push(e);
        }
    }
    // Datagrams: each sent up to 5 times until its echo is seen (they are unreliable).
    let d = client.datagrams().unwrap();
    let mut echoed = 0;
    for i in 0..20u8 {
        let payload = [i; 200];
        for _ in 0..5 {
            d.send(&payload).unwrap();
            if let Ok(Ok(back)) = tokio::time::timeout(Duration::from_secs(1), d.recv()).await {
                if back[..] == payload[..] {
                    echoed += 1;
                    break;
                }
            }
        }
    }
    if echoed != 20 {
        failures.push(format!("{echoed} of 20 datagrams echoed"));
    }
    tokio::time::timeout(PEER_BOUND, client.close())
        .await
        .unwrap()
        .unwrap();
    child.kill().await.unwrap();
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut err)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{failures:?}\naioquic said:\n{err}");
    assert_eq!(err.matches("wt session /wt").count(), 1, "{err}");
    let _ = writeln!(
        std::io::stderr(),
        "our wt client against an aioquic WebTransport server: 4 streams x 50 echoes, 20 datagrams: OK; {}",
        err.lines().find(|l| l.starts_with("client settings")).unwrap_or("")
    );
}
