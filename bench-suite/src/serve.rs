//! `wirelab serve` and `wirelab client`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use wirelab_core::codec::{StreamRequest, HEADER_LEN};
use wirelab_core::tls::{self, Identity, Trust};
use wirelab_core::{CancellationToken, ClientConfig, ServerConfig, TransportId};

use crate::opts::{self, ClientTlsOpts, H2Opts, LimitOpts, QuicOpts, ServerTlsOpts, SessionOpts};
use wirelab::workload::Work;
use wirelab::{stats, transports};

/// Options of `wirelab serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// One transport. Without it every transport is served, on consecutive ports from
    /// --listen's, in the order listed here.
    #[arg(long, short, value_parser = opts::transport_parser())]
    transport: Option<TransportId>,
    /// Address to listen on. Port 0 lets the OS choose (each transport its own).
    #[arg(long, short, default_value_t = opts::default_listen())]
    listen: SocketAddr,
    #[command(flatten)]
    tls: ServerTlsOpts,
    #[command(flatten)]
    limits: LimitOpts,
    #[command(flatten)]
    h2: H2Opts,
    #[command(flatten)]
    quic: QuicOpts,
    /// h2 and h2ws without TLS: cleartext HTTP/2 with prior knowledge (h2c). They use TLS by
    /// default.
    #[arg(long)]
    h2c: bool,
    /// WebSocket: echo every message verbatim, text included (for Autobahn and other
    /// conformance suites) instead of closing text messages with 1003.
    #[arg(long)]
    raw_echo: bool,
    /// Also answer a control endpoint here (plain HTTP: GET /v1/info, GET /v1/cpu, POST
    /// /v1/shutdown), so `wirelab run --server HOST` on another host can measure this server:
    /// e.g. 0.0.0.0:7799. It reveals versions, ports and CPU time to anyone who can reach it.
    #[arg(long, value_name = "ADDR")]
    control: Option<SocketAddr>,
    /// Addresses (CIDR, repeatable) allowed to stop this server through the control endpoint,
    /// besides loopback. Everything else can only read it.
    #[arg(long, value_name = "CIDR", requires = "control")]
    control_allow: Vec<wirelab::control::Cidr>,
}

/// Options of `wirelab client`.
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// Transport of the server.
    #[arg(long, short, value_parser = opts::transport_parser())]
    transport: TransportId,
    /// Server address, e.g. 127.0.0.1:7701.
    #[arg(long, short)]
    connect: SocketAddr,
    #[command(flatten)]
    tls: ClientTlsOpts,
    /// h2 and h2ws without TLS: cleartext HTTP/2 with prior knowledge (h2c). They use TLS by
    /// default.
    #[arg(long)]
    h2c: bool,
    #[command(flatten)]
    session: SessionOpts,
    /// Message size (at least the 32-byte header), e.g. 64, 1K, 1M.
    #[arg(long, default_value = "64", value_parser = opts::parse_size)]
    size: usize,
    /// Measured echoes per logical stream.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Unmeasured echoes per logical stream first.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Messages in the server-stream check (0 skips it).
    #[arg(long, default_value_t = 100)]
    stream_count: u32,
    /// wt: after the echoes, send this many datagrams (of --size bytes, at --datagram-rate)
    /// and report how many echoes were lost or reordered (0 skips it).
    #[arg(long, default_value_t = 0)]
    datagrams: u64,
    /// Datagrams per second with --datagrams.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    datagram_rate: u64,
    #[command(flatten)]
    limits: LimitOpts,
    #[command(flatten)]
    h2: H2Opts,
    #[command(flatten)]
    quic: QuicOpts,
}

pub(crate) fn identity(tls: &ServerTlsOpts, listen: SocketAddr) -> Result<Identity> {
    if let (Some(c), Some(k)) = (&tls.cert, &tls.key) {
        return Ok(Identity::from_pem_files(c, k)?);
    }
    let ip = listen.ip().to_string();
    let id = Identity::self_signed(&["localhost", "127.0.0.1", &ip])?;
    let path = tls.cert_out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("wirelab-cert-{}.pem", std::process::id()))
    });
    std::fs::write(&path, id.certificate_pem())
        .with_context(|| format!("writing the certificate to {}", path.display()))?;
    println!(
        "self-signed certificate: {} (clients: --tls --ca {0})",
        path.display()
    );
    Ok(id)
}

pub(crate) async fn serve(a: ServeArgs) -> Result<()> {
    // Installed before anything listens, so a signal sent as soon as the addresses are printed
    // still shuts down gracefully.
    let signals = Signals::install()?;
    let ids: Vec<TransportId> = match a.transport {
        Some(t) => vec![t],
        None => transports::ids(),
    };
    if a.tls.tls
        && ids
            .iter()
            .all(|&t| !transports::descriptor(t).tls.supported())
    {
        bail!("--tls: {} has no TLS mode", ids[0]);
    }
    let uses_tls = |id: TransportId| transports::descriptor(id).tls.resolve(a.tls.tls, a.h2c);
    let identity = if ids.iter().any(|&id| uses_tls(id)) {
        Some(identity(&a.tls, a.listen)?)
    } else {
        None
    };
    if let Some(ident) = &identity {
        let fp = tls::fingerprint(&ident.certificate());
        println!("certificate sha256 {}", tls::fingerprint_hex(&fp));
    }
    let shutdown = CancellationToken::new();
    let mut servers = Vec::new();
    let mut served = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let mut listen = a.listen;
        if listen.port() != 0 {
            let port = u16::try_from(usize::from(listen.port()) + i)
                .context("--listen port too high for consecutive ports")?;
            listen.set_port(port);
        }
        let tls = match (&identity, uses_tls(id)) {
            (Some(ident), true) => Some(ident.server_config(&[transports::alpn(id)])?),
            _ => None,
        };
        let cfg = ServerConfig {
            listen,
            tls: tls.clone(),
            limits: a.limits.limits(),
            timeouts: a.limits.timeouts(),
            raw_echo: a.raw_echo,
            h2: a.h2.settings().map_err(anyhow::Error::msg)?,
            quic: a.quic.settings().map_err(anyhow::Error::msg)?,
            qlog_dir: a.quic.qlog_dir.clone(),
            fanout: wirelab_core::fanout::Hub::new(),
            resume: wirelab_core::resume::Registry::default(),
        };
        let (addr, task) = transports::start_server(
            id,
            cfg,
            shutdown.clone(),
            &tokio::runtime::Handle::current(),
        )
        .await?;
        let d = transports::descriptor(id);
        let note = if identity.is_some() && tls.is_none() {
            " (cleartext: no TLS mode)"
        } else {
            ""
        };
        let url = format!("{}{addr}{}", d.scheme(tls.is_some()), d.path);
        println!("{id:<5} listening on {url}{note}");
        served.push(wirelab::control::Served {
            transport: id.to_string(),
            tls: tls.is_some(),
            port: addr.port(),
            url,
        });
        servers.push((id, task));
    }
    let quic: Vec<String> = served
        .iter()
        .filter(|s| wirelab::browser::over_quic(&s.transport))
        .filter_map(|s| {
            s.url
                .split("://")
                .nth(1)?
                .split('/')
                .next()
                .map(String::from)
        })
        .collect();
    println!("browser page at / on every HTTP server (ws, h1, h2, h2ws, h3, sse)");
    if let Some(spki) = identity.as_ref().and_then(|i| i.spki_sha256_base64()) {
        println!(
            "  Chromium trusts this certificate with --ignore-certificate-errors-spki-list={spki}{}",
            if quic.is_empty() {
                String::new()
            } else {
                format!(" --origin-to-force-quic-on={}", quic.join(","))
            }
        );
    }
    // A trusted POST /v1/shutdown stops the server like a signal.
    let remote_stop = CancellationToken::new();
    let control_done = CancellationToken::new();
    let control = match a.control {
        None => None,
        Some(listen) => {
            let info = wirelab::control::Info {
                schema: wirelab::control::SCHEMA.into(),
                env: wirelab::env::Env::capture(),
                boot_id: wirelab::control::boot_id(),
                served,
                cert_sha256: identity
                    .as_ref()
                    .map(|i| tls::fingerprint_hex(&tls::fingerprint(&i.certificate()))),
                trusted: Vec::new(),
            };
            let mut trusted = wirelab::control::loopback();
            trusted.extend(a.control_allow.iter().copied());
            let (addr, task) = wirelab::control::serve(
                listen,
                info,
                trusted,
                remote_stop.clone(),
                control_done.clone(),
            )
            .await?;
            println!(
                "control listening on http://{addr} (GET /v1/info, GET /v1/cpu, POST /v1/shutdown)"
            );
            Some(task)
        }
    };
    println!("serving; Ctrl-C or SIGTERM to stop");
    tokio::select! {
        () = signals.wait() => {}
        () = remote_stop.cancelled() => println!("stop requested through the control endpoint"),
    }
    println!("shutting down: finishing in-flight messages");
    shutdown.cancel();
    for (id, task) in servers {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("{id}: {e}"),
            Err(e) => eprintln!("{id}: server task failed: {e}"),
        }
    }
    control_done.cancel();
    if let Some(task) = control {
        let _ = task.await;
    }
    println!("stopped");
    Ok(())
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn client_config(a: &ClientArgs, use_tls: bool) -> Result<ClientConfig> {
    let (tls, session, limits, h2, quic) = (&a.tls, &a.session, &a.limits, &a.h2, &a.quic);
    let (addr, alpn) = (a.connect, transports::alpn(a.transport));
    let tls_cfg = if use_tls {
        let trust = match (&tls.ca, tls.insecure) {
            (Some(p), _) => Trust::PemFile(PathBuf::from(p)),
            (None, true) => Trust::InsecureAnyCertificate,
            (None, false) => {
                bail!("TLS needs --ca FILE (the server's certificate, e.g. the one `wirelab serve` wrote) or --insecure")
            }
        };
        Some(tls::client_config(&trust, &[alpn])?)
    } else {
        None
    };
    Ok(ClientConfig {
        addr,
        server_name: tls.server_name.clone(),
        tls: tls_cfg,
        streams: session.streams,
        sharing: session.sharing,
        pool_size: session.pool_size,
        mode: session.mode,
        h2: h2.settings().map_err(anyhow::Error::msg)?,
        quic: quic.settings().map_err(anyhow::Error::msg)?,
        zero_rtt: session.zero_rtt,
        qlog_dir: quic.qlog_dir.clone(),
        limits: limits.limits(),
        timeouts: limits.timeouts(),
        wire: None,
    })
}

pub(crate) async fn client(a: ClientArgs) -> Result<()> {
    if a.size < HEADER_LEN {
        bail!("--size must be at least the {HEADER_LEN}-byte header");
    }
    let d = transports::descriptor(a.transport);
    if a.tls.tls && !d.tls.supported() {
        bail!("--tls: {} has no TLS mode", a.transport);
    }
    let use_tls = d.tls.resolve(a.tls.tls, a.h2c);
    let cfg = client_config(&a, use_tls)?;
    if cfg.zero_rtt && !d.zero_rtt {
        let with: Vec<_> = transports::LIST
            .iter()
            .filter(|d| d.zero_rtt)
            .map(|d| d.id.as_str())
            .collect();
        bail!(
            "--0rtt: {} has no 0-RTT (only {})",
            a.transport,
            with.join(" and ")
        );
    }
    let work = Work {
        size: a.size,
        count: a.count,
        warmup: a.warmup,
        stream: (a.stream_count > 0).then_some(StreamRequest {
            count: a.stream_count,
            size: a.size as u32,
            interval_ms: 0,
        }),
    };
    if a.datagrams > 0 && !d.datagrams {
        let with: Vec<_> = transports::LIST
            .iter()
            .filter(|d| d.datagrams)
            .map(|d| d.id.as_str())
            .collect();
        bail!(
            "--datagrams: {} has no datagrams (only {})",
            a.transport,
            with.join(" and ")
        );
    }
    let o = transports::run_client(a.transport, &cfg, &work).await?;
    let s = stats::summarize(&o.rtt);
    println!(
        "{} {} K={} {:?}{}: setup {:.2} ms{}",
        a.transport,
        a.connect,
        a.session.streams,
        a.session.sharing,
        if d.has_modes() {
            format!(" {:?}", a.session.mode)
        } else {
            String::new()
        },
        o.setup.as_secs_f64() * 1e3,
        match o.early_data {
            Some(true) => " (0-RTT: resumed, early data accepted)",
            Some(false) => " (0-RTT: early data rejected)",
            None => "",
        }
    );
    println!(
        "echo {} x {} B: RTT p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us  ({:.0} msg/s)",
        s.count, a.size, s.p50_us, s.p90_us, s.p99_us, s.p999_us, s.max_us, o.messages_per_sec()
    );
    if a.datagrams > 0 {
        let rate = a.datagram_rate as f64;
        let sched = wirelab::workload::Schedule {
            rate,
            duration: std::time::Duration::from_secs_f64(a.datagrams as f64 / rate),
            size: a.size,
            lateness_budget: std::time::Duration::from_millis(2),
        };
        let mut dcfg = cfg.clone();
        dcfg.streams = 1;
        let r = wirelab::workload::datagram_echo(a.transport, &dcfg, sched, None).await?;
        let t = &r.tally;
        let w = stats::summarize(&r.rtt);
        println!(
            "datagrams {} x {} B at {}/s: {} echoed, {} lost ({:.2}%), {} reordered, {} duplicates; RTT of the echoes p50 {:.1} us  p99 {:.1} us{}",
            t.sent,
            a.size,
            a.datagram_rate,
            t.received,
            t.lost(),
            100.0 * t.loss_ratio(),
            t.reordered,
            t.duplicates,
            w.p50_us,
            w.p99_us,
            r.behind.map(|b| format!(" ({b})")).unwrap_or_default()
        );
    }
    if let Some((n, owd)) = o.stream {
        // Server and client stamp with their own monotonic clocks: one clock only on one host.
        if a.connect.ip().is_loopback() {
            let w = stats::summarize(&owd);
            println!(
                "server stream: {n} messages complete and in order; one-way p50 {:.1} us  p99 {:.1} us (same-host clock)",
                w.p50_us, w.p99_us
            );
        } else {
            println!(
                "server stream: {n} messages complete and in order (one-way delay not shown: {} is not loopback, so the two clocks are not known to be one)",
                a.connect.ip()
            );
        }
    }
    Ok(())
}
