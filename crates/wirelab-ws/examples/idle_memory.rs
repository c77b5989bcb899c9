//! Server memory per idle connection.
//!
//! ```text
//! cargo run --release -p wirelab-ws --example idle_memory -- --transport ws --n 2000
//! cargo run --release -p wirelab-ws --example idle_memory -- --transport h2 --n 2000
//! cargo run --release -p wirelab-ws --example idle_memory -- --transport h3 --n 2000
//! ```
//!
//! The real server runs in this process, on its own tokio runtime (2 worker threads). The
//! clients run in a child process (this same binary, re-executed with `--client`), so that no
//! client allocation is counted as server memory. The child first opens `--warm` connections
//! (default 100) and reports them; this process then reads its own `VmRSS` as the baseline (the
//! runtime's threads, allocator arenas, TLS and QUIC endpoint state already exist by then). The
//! child opens `--n` more connections; each completes its handshake and one echo round trip
//! (for h2/h3 one request, so the connection is fully set up), and only when all of them have
//! answered does the child report again. This process reads `VmRSS` once more and prints
//! `(after - baseline) / n`.
//!
//! Both processes raise `RLIMIT_NOFILE` to what they need, or stop with an error saying so.
//! Transports: ws (cleartext; `--tls` for wss), h2ws, h1 (cleartext unless `--tls`), h2 (TLS),
//! h3 (QUIC, always TLS). Server timeouts are the defaults except the idle timeout, raised to
//! 10 minutes so that no connection is closed while it is being measured.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use wirelab_core::codec::{self, Kind};
use wirelab_core::tls::{self, Identity, Trust};
use wirelab_core::{
    CancellationToken, Channel, Client, ClientConfig, Mode, Server, ServerConfig, Sharing,
};

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Clone)]
struct Args {
    transport: String,
    n: usize,
    warm: usize,
    tls: bool,
    /// Server `Limits::read_buffer` override, to show the trade-off.
    read_buffer: Option<usize>,
    /// Set in the child: the server's address and certificate file.
    client: Option<(SocketAddr, Option<PathBuf>)>,
}

fn parse_args() -> AnyResult<Args> {
    let mut a = Args {
        transport: "ws".into(),
        n: 2000,
        warm: 100,
        tls: false,
        read_buffer: None,
        client: None,
    };
    let mut it = std::env::args().skip(1);
    let mut cert = None;
    let mut addr = None;
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--transport" => a.transport = val()?,
            "--n" => a.n = val()?.parse()?,
            "--warm" => a.warm = val()?.parse()?,
            "--tls" => a.tls = true,
            "--read-buffer" => a.read_buffer = Some(val()?.parse()?),
            "--client" => addr = Some(val()?.parse()?),
            "--cert" => cert = Some(PathBuf::from(val()?)),
            "--help" | "-h" => {
                println!(
                    "idle_memory [--transport ws|h2ws|h1|h2|h3] [--n N] [--warm W] [--tls] \
                     [--read-buffer BYTES]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}'").into()),
        }
    }
    if !["ws", "h2ws", "h1", "h2", "h3"].contains(&a.transport.as_str()) {
        return Err(format!("unknown transport '{}'", a.transport).into());
    }
    // h2 and h3 always run TLS (h3 cannot do otherwise; h2 as browsers use it).
    if a.transport == "h2" || a.transport == "h3" {
        a.tls = true;
    }
    a.client = addr.map(|addr| (addr, cert));
    Ok(a)
}

/// Raises the soft `RLIMIT_NOFILE` to at least `want` (up to the hard limit).
fn raise_nofile(want: u64) -> AnyResult<()> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    let cur = lim.current.unwrap_or(u64::MAX);
    if cur >= want {
        return Ok(());
    }
    let max = lim.maximum.unwrap_or(u64::MAX);
    if max < want {
        return Err(format!(
            "RLIMIT_NOFILE hard limit is {max}, {want} file descriptors are needed: \
             raise it (ulimit -Hn, /etc/security/limits.conf) or use a smaller --n"
        )
        .into());
    }
    lim.current = Some(want);
    setrlimit(Resource::Nofile, lim)
        .map_err(|e| format!("cannot raise RLIMIT_NOFILE to {want}: {e}"))?;
    Ok(())
}

/// This process's resident set size, in KiB, from `/proc/self/status`.
fn rss_kib() -> AnyResult<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("malformed VmRSS line")?
        .parse()?)
}

fn main() -> AnyResult<()> {
    let args = parse_args()?;
    match args.client.clone() {
        Some((addr, cert)) => client_main(&args, addr, cert),
        None => server_main(&args),
    }
}

fn alpn(transport: &str) -> &'static [u8] {
    match transport {
        "h2" | "h2ws" => tls::ALPN_H2,
        "h3" => tls::ALPN_H3,
        _ => tls::ALPN_HTTP11,
    }
}

fn server_main(args: &Args) -> AnyResult<()> {
    raise_nofile((args.n + args.warm) as u64 + 256)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse()?);
    cfg.timeouts.idle = Duration::from_secs(600);
    if let Some(rb) = args.read_buffer {
        cfg.limits.read_buffer = rb;
    }
    let cert_path = std::env::temp_dir().join(format!("wirelab-idle-{}.pem", std::process::id()));
    if args.tls {
        let id = Identity::self_signed(&["localhost"])?;
        cfg.tls = Some(id.server_config(&[alpn(&args.transport)])?);
        std::fs::write(&cert_path, id.certificate_pem())?;
    }
    let shutdown = CancellationToken::new();
    let addr = rt.block_on(start_server(&args.transport, cfg, shutdown.clone()))?;

    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--transport", &args.transport])
        .args(["--n", &args.n.to_string()])
        .args(["--warm", &args.warm.to_string()])
        .args(["--client", &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if args.tls {
        cmd.arg("--tls").arg("--cert").arg(&cert_path);
    }
    let mut child = cmd.spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no child stdout")?).lines();
    let mut expect = |what: &str| -> AnyResult<()> {
        match lines.next() {
            Some(Ok(l)) if l == what => Ok(()),
            Some(Ok(l)) => Err(format!("client said '{l}', expected '{what}'").into()),
            _ => Err(format!("client ended before '{what}' (see its stderr)").into()),
        }
    };
    let started = Instant::now();
    expect("warm")?;
    let base = rss_kib()?;
    expect("ready")?;
    let after = rss_kib()?;
    let took = started.elapsed();
    // Closing the child's stdin tells it to exit.
    drop(child.stdin.take());
    let status = child.wait()?;
    shutdown.cancel();
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_file(&cert_path);
    if !status.success() {
        return Err(format!("client process failed: {status}").into());
    }
    let per = (after as f64 - base as f64) / args.n as f64;
    println!(
        "transport={} tls={} n={} warm={} baseline_rss_kib={base} after_rss_kib={after} \
         delta_kib={} per_connection_kib={per:.1} setup_s={:.1}",
        args.transport,
        args.tls,
        args.n,
        args.warm,
        after as i64 - base as i64,
        took.as_secs_f64()
    );
    Ok(())
}

async fn start_server(
    transport: &str,
    cfg: ServerConfig,
    shutdown: CancellationToken,
) -> AnyResult<SocketAddr> {
    async fn go<S: Server>(cfg: ServerConfig, sd: CancellationToken) -> AnyResult<SocketAddr> {
        let s = S::bind(cfg).await?;
        let addr = s.local_addr();
        tokio::spawn(s.serve(sd));
        Ok(addr)
    }
    match transport {
        "ws" => go::<wirelab_ws::WsServer>(cfg, shutdown).await,
        "h2ws" => go::<wirelab_h2ws::H2wsServer>(cfg, shutdown).await,
        "h1" => go::<wirelab_h1::H1Server>(cfg, shutdown).await,
        "h2" => go::<wirelab_h2::H2Server>(cfg, shutdown).await,
        "h3" => go::<wirelab_h3::H3Server>(cfg, shutdown).await,
        t => Err(format!("unknown transport {t}").into()),
    }
}

fn client_main(args: &Args, addr: SocketAddr, cert: Option<PathBuf>) -> AnyResult<()> {
    raise_nofile((args.n + args.warm) as u64 * 2 + 256)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut cfg = ClientConfig::new(addr);
    cfg.streams = 1;
    cfg.sharing = Sharing::Shared;
    cfg.mode = Mode::Rr;
    cfg.timeouts.idle = Duration::from_secs(600);
    if let Some(cert) = cert {
        cfg.tls = Some(tls::client_config(
            &Trust::PemFile(cert),
            &[alpn(&args.transport)],
        )?);
    }
    let cfg = Arc::new(cfg);
    let transport = args.transport.clone();
    let (warm, n) = (args.warm, args.n);
    rt.block_on(async move {
        let first = open_many(&transport, &cfg, warm).await?;
        say("warm")?;
        let second = open_many(&transport, &cfg, n).await?;
        say("ready")?;
        // Hold every connection open until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            let _ = std::io::stdin().read_line(&mut sink);
        })
        .await?;
        drop((first, second));
        AnyResult::Ok(())
    })
}

fn say(what: &str) -> AnyResult<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{what}")?;
    out.flush()?;
    Ok(())
}

/// A connection held open: the client and its channels.
type Held = Box<dyn std::any::Any + Send>;

/// Opens `n` connections (64 at a time), each with one echo round trip.
async fn open_many(transport: &str, cfg: &Arc<ClientConfig>, n: usize) -> AnyResult<Vec<Held>> {
    let opened: Vec<AnyResult<Held>> = stream::iter(0..n)
        .map(|i| {
            let (cfg, t) = (cfg.clone(), transport.to_string());
            async move {
                match t.as_str() {
                    "ws" => open_one::<wirelab_ws::WsClient>(&cfg, i).await,
                    "h2ws" => open_one::<wirelab_h2ws::H2wsClient>(&cfg, i).await,
                    "h1" => open_one::<wirelab_h1::H1Client>(&cfg, i).await,
                    "h2" => open_one::<wirelab_h2::H2Client>(&cfg, i).await,
                    "h3" => open_one::<wirelab_h3::H3Client>(&cfg, i).await,
                    t => Err(format!("unknown transport {t}").into()),
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    opened.into_iter().collect()
}

async fn open_one<C: Client>(cfg: &ClientConfig, i: usize) -> AnyResult<Held> {
    let mut c = C::connect(cfg).await?;
    let mut chans = c.channels();
    let ch = chans.first_mut().ok_or("no channel")?;
    let msg: Bytes = codec::encode(ch.id(), i as u64, 0, Kind::Echo, 64)?;
    let back = ch.echo(msg.clone()).await?;
    if back != msg {
        return Err("echo differs".into());
    }
    Ok(Box::new((c, chans)))
}
