//! `wirelab resume`: the resume experiment (`wirelab::resume`) over every transport that pushes,
//! on loopback or through the link emulator (`--link`).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use wirelab::resume::{self, Break, Outcome, Spec, Workload};
use wirelab::runner::{Certs, Servers, VariantServer};
use wirelab::transports::{self, Variant};
use wirelab_core::{Mode, TransportId};

/// Options of `wirelab resume`.
#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// Transports (default: every one that serves resume messages: tcp, ws, h2 duplex, h2ws,
    /// quic, h3 duplex, wt; sse resumes with its own Last-Event-ID).
    #[arg(long, value_delimiter = ',', value_parser = crate::opts::transport_parser())]
    transports: Vec<TransportId>,
    /// Break kinds: cut (the client drops its connection, back inside the window), restart
    /// (the server restarts: a new epoch), window (away longer than the server's window), dark
    /// (the path loses every packet for --dark-ms, the connection is kept; needs --link, and
    /// is left out, saying so, without it), migrate (the client's address changes and the old
    /// one is gone: QUIC migrates, TCP transports reconnect; with --link the path is dark for
    /// --outage-ms first).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Break::ALL)]
    kinds: Vec<Break>,
    /// What runs across the break: stream (a long server stream, resumed by offset and epoch
    /// from the server's window) or echo (the client sends one message every interval and sends
    /// the unanswered ones again on the new connection; no window break).
    #[arg(long, value_enum, default_value_t = Workload::Stream)]
    workload: Workload,
    /// Repetitions of each (transport, kind).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: u32,
    /// Messages in the stream.
    #[arg(long, default_value_t = 4000)]
    messages: u32,
    /// One message every this many ms (at least 1: a stream paced like a ticker).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    interval_ms: u32,
    /// Message size, bytes.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// The client breaks the connection after processing this many messages.
    #[arg(long, default_value_t = 1000)]
    break_at: u64,
    /// How long the client stays away for `cut` and `restart`, and the path is dark before
    /// `migrate` (with --link), ms (`window` stays away twice the window's length in time).
    #[arg(long, default_value_t = 200)]
    outage_ms: u64,
    /// How long the path stays dark for `dark`, ms.
    #[arg(long, default_value_t = 1000)]
    dark_ms: u64,
    /// Reconnection backoff: base and cap, ms (full jitter: uniform up to base × 2^attempt).
    #[arg(long, default_value_t = 10)]
    backoff_base_ms: u64,
    #[arg(long, default_value_t = 1000)]
    backoff_max_ms: u64,
    /// Write one qlog file per QUIC client connection (JSON-SEQ, `.sqlog`) into this directory.
    #[arg(long, value_name = "DIR")]
    qlog_dir: Option<PathBuf>,
    /// Emulate this link between client and server (as for `run --link`; needs root). With
    /// --router the lab's router carries it instead.
    #[arg(long, value_name = "SPEC")]
    link: Option<String>,
    /// Resume against a remote server instead of local ones: the control endpoint of
    /// `wirelab serve --control ADDR` on that host, HOST or HOST:PORT (port 7799 by default).
    /// Its transports are measured at the security it serves; `restart` needs a server in this
    /// process and is left out, saying so.
    #[arg(long, value_name = "HOST[:PORT]")]
    server: Option<String>,
    /// With --server: trust the server's certificate through this CA (PEM) instead of by the
    /// fingerprint its control endpoint gives.
    #[arg(long, value_name = "FILE", requires = "server")]
    ca: Option<PathBuf>,
    /// With --server: the path goes through the lab's router (`wirelab link router`) at
    /// HOST or HOST:PORT (port 7798 by default), which carries --link and the dark break.
    #[arg(long, value_name = "HOST[:PORT]", requires = "server")]
    router: Option<String>,
    #[command(flatten)]
    link_setup: crate::link_cmd::LinkSetup,
    #[command(flatten)]
    cpu: crate::opts::CpuOpts,
    /// Directory for resume.json and report.md; default `results/resume-<UTC date>-<time>`.
    #[arg(long)]
    out: Option<PathBuf>,
}

impl ResumeArgs {
    /// The `--link` spec, parsed, when it is for the in-process link emulator (not the lab's
    /// router).
    pub(crate) fn local_link_spec(&self) -> Result<Option<wirelab_link::LinkSpec>> {
        if self.router.is_some() {
            return Ok(None);
        }
        if self.link.is_some() && self.server.is_some() {
            bail!("--link with --server needs --router (the lab's router carries the link)");
        }
        self.link_spec()
    }

    /// The `--link` spec, parsed.
    pub(crate) fn link_spec(&self) -> Result<Option<wirelab_link::LinkSpec>> {
        self.link
            .as_deref()
            .map(|s| s.parse().map_err(|e| anyhow::anyhow!("--link {s}: {e}")))
            .transpose()
    }

    /// How to set the link up.
    pub(crate) fn link_setup(&self) -> &crate::link_cmd::LinkSetup {
        &self.link_setup
    }

    /// Where the client and server threads run.
    pub(crate) fn cpu(&self) -> Option<wirelab::topology::Cpus> {
        self.cpu.cpu
    }

    /// The server's replay window for this stream's message size, in messages.
    fn window(&self) -> usize {
        wirelab_core::resume::Limits::default().window_for(self.size as usize)
    }

    fn check(&self) -> Result<()> {
        if self.break_at == 0 || self.break_at >= u64::from(self.messages) {
            bail!(
                "--break-at must be between 1 and --messages - 1 (got {} of {})",
                self.break_at,
                self.messages
            );
        }
        if self.size < wirelab_core::codec::HEADER_LEN as u32 {
            bail!(
                "--size {} is under the {}-byte message header",
                self.size,
                wirelab_core::codec::HEADER_LEN
            );
        }
        if self.workload == Workload::Echo {
            // No server window: the client keeps what is unanswered itself.
            return Ok(());
        }
        let window = self.window();
        let window_ms = window as u64 * u64::from(self.interval_ms);
        let left_ms = (u64::from(self.messages) - self.break_at) * u64::from(self.interval_ms);
        if (self.kinds.contains(&Break::Cut) || self.kinds.contains(&Break::Migrate))
            && self.outage_ms >= window_ms
        {
            bail!(
                "--outage-ms {} is not inside the server's window ({} messages = {window_ms} ms at this interval): a cut or a migration must come back inside it",
                self.outage_ms,
                window
            );
        }
        if self.kinds.contains(&Break::Window) && left_ms <= 2 * window_ms {
            bail!(
                "the window break needs more than {} ms of stream after the break (has {left_ms}): raise --messages",
                2 * window_ms
            );
        }
        Ok(())
    }
}

/// Every transport that serves resume messages, in its duplex mode.
fn variants(ids: &[TransportId]) -> Vec<Variant> {
    let ids: Vec<TransportId> = if ids.is_empty() {
        transports::ids()
    } else {
        ids.to_vec()
    };
    transports::variants(&ids, false)
        .into_iter()
        .filter(|v| {
            v.mode == Mode::Duplex
                && wirelab::fanout::PUSH.contains(&v.id.as_str())
                && v.id.as_str() != "sse"
        })
        .collect()
}

/// One (transport, kind)'s repetitions.
#[derive(Debug, Serialize)]
struct Row {
    transport: String,
    kind: Break,
    runs: Vec<Outcome>,
    /// Why a repetition failed outright, if one did.
    errors: Vec<String>,
}

/// The file `resume.json`.
#[derive(Debug, Serialize)]
struct ResumeFile {
    schema: &'static str,
    spec: Spec,
    window: usize,
    link: Option<String>,
    env: wirelab::env::Env,
    rows: Vec<Row>,
    /// Break kinds asked for but not run, and why.
    skipped: Vec<String>,
}

pub(crate) async fn resume(a: ResumeArgs, mut servers: Servers) -> Result<()> {
    a.check()?;
    let mut vs = variants(&a.transports);
    if let Some(server) = &a.server {
        let remote = wirelab::control::Remote::connect_async(server.clone(), a.ca.clone()).await?;
        eprint!("{}", remote.describe());
        let ids: Vec<TransportId> = vs.iter().map(|v| v.id).collect();
        vs = crate::run::remote_variants(&remote, &ids)
            .into_iter()
            .filter(|v| v.mode == Mode::Duplex)
            .collect();
        servers.remote = Some(std::sync::Arc::new(remote));
    }
    if let Some(addr) = &a.router {
        let spec = a.link_spec()?.unwrap_or_default();
        let (router, info) = crate::link_cmd::connect_router(addr, &spec, &servers)?;
        servers.link = Some((router, spec));
        servers.router = Some(info);
    }
    if vs.is_empty() {
        bail!("none of the transports asked for serves resume messages (tcp, ws, h2, h2ws, quic, h3, wt do; sse uses Last-Event-ID)");
    }
    let window = a.window();
    let window_ms = window as u64 * u64::from(a.interval_ms);
    let spec = Spec {
        workload: a.workload,
        messages: a.messages,
        interval_ms: a.interval_ms,
        size: a.size,
        break_at: a.break_at,
        outage_ms: a.outage_ms,
        backoff_base_ms: a.backoff_base_ms,
        backoff_max_ms: a.backoff_max_ms,
    };
    let out = a.out.clone().unwrap_or_else(|| {
        let t = wirelab::env::rfc3339(wirelab::env::unix_now());
        let stamp: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
        PathBuf::from("results").join(format!("resume-{}-{}", &stamp[..8], &stamp[8..]))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let certs = Certs::new()?;
    let mut kinds = a.kinds.clone();
    let mut skipped = Vec::new();
    if a.workload == Workload::Echo && kinds.contains(&Break::Window) {
        kinds.retain(|k| *k != Break::Window);
        skipped.push("window: an echo stream keeps what is unanswered in the client; there is no server window to fall out of".into());
    }
    if servers.remote.is_some() && kinds.contains(&Break::Restart) {
        kinds.retain(|k| *k != Break::Restart);
        skipped.push("restart: needs a server in this process (not --server); not run".into());
        eprintln!("wirelab resume: the restart break needs a local server; it is left out of this run (--server)");
    }
    if servers.link.is_none() && kinds.contains(&Break::Dark) {
        kinds.retain(|k| *k != Break::Dark);
        skipped.push(
            "dark: needs the link emulator (--link, as root) or the lab's router; not run"
                .to_string(),
        );
        eprintln!("wirelab resume: the dark break needs --link (the link emulator); it is left out of this run");
    }
    let total = vs.len() * kinds.len() * a.reps as usize;
    eprintln!(
        "wirelab resume: {} transports x {} break kinds x {} reps = {total} runs of {} messages every {} ms (window {} messages = {window_ms} ms){} -> {}",
        vs.len(),
        kinds.len(),
        a.reps,
        a.messages,
        a.interval_ms,
        window,
        a.link.as_deref().map(|l| format!(", link {l}")).unwrap_or_default(),
        out.display()
    );
    let mut rows = Vec::new();
    let mut done = 0;
    for v in &vs {
        for &kind in &kinds {
            let mut row = Row {
                transport: v.label(),
                kind,
                runs: Vec::new(),
                errors: Vec::new(),
            };
            for _ in 0..a.reps {
                let mut s = spec;
                if kind == Break::Window {
                    s.outage_ms = 2 * window_ms;
                }
                if kind == Break::Dark {
                    s.outage_ms = a.dark_ms;
                }
                let mut server = VariantServer::start(v, &certs, &servers).await?;
                let r = resume::run_one(
                    v,
                    &mut server,
                    &certs,
                    &servers,
                    &s,
                    kind,
                    a.qlog_dir.as_deref(),
                )
                .await;
                server.stop().await;
                done += 1;
                match r {
                    Ok(o) => {
                        eprintln!(
                            "[{done}/{total}] {} {}: answer {}, resume {}, replayed {}, lost {}, duplicates {}",
                            v.label(),
                            kind.name(),
                            o.answer,
                            o.resume_ms.map(|m| format!("{m:.2} ms")).unwrap_or("-".into()),
                            o.replayed,
                            o.lost,
                            o.duplicates
                        );
                        row.runs.push(o);
                    }
                    Err(e) => {
                        eprintln!(
                            "[{done}/{total}] {} {}: FAILED {e:#}",
                            v.label(),
                            kind.name()
                        );
                        row.errors.push(format!("{e:#}"));
                    }
                }
            }
            rows.push(row);
        }
    }
    let file = ResumeFile {
        schema: "wirelab.resume/1",
        spec,
        window,
        link: a.link.clone(),
        env: wirelab::env::Env::capture(),
        rows,
        skipped,
    };
    std::fs::write(out.join("resume.json"), serde_json::to_vec_pretty(&file)?)?;
    let md = report(&file);
    std::fs::write(out.join("report.md"), &md)?;
    println!("{md}");
    let wrong: Vec<String> = file
        .rows
        .iter()
        .filter(|r| {
            !r.errors.is_empty() || r.runs.iter().any(|o| !o.answer_as_expected || o.lost > 0)
        })
        .map(|r| format!("{} {}", r.transport, r.kind.name()))
        .collect();
    if !wrong.is_empty() {
        bail!(
            "wrong answers, lost messages or failed runs in: {}",
            wrong.join(", ")
        );
    }
    eprintln!("results in {}", out.display());
    Ok(())
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn report(f: &ResumeFile) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Resume after a broken connection: {}\n",
        match f.spec.workload {
            Workload::Stream => "a server stream",
            Workload::Echo => "an echo stream",
        }
    );
    if f.spec.workload == Workload::Echo {
        let _ = writeln!(
            s,
            "An echo stream: the client sends one message every interval and keeps those not answered yet; on a new connection it sends them again (replayed) and goes on with the schedule, sending at once what fell due while it was away. Lost: messages never answered (must be 0); duplicates: answers for a message already answered, dropped by the client. Answers: `held` / `migrated` (the connection survived), `resent` (a new connection carried the outstanding ones).\n"
        );
    }
    let _ = writeln!(
        s,
        "{} messages of {} B, one every {} ms; the client breaks after message {}; cut and restart stay away {} ms, window twice the server's window ({} messages). {}Reconnection: full-jitter backoff from {} ms, capped at {} ms. wirelab {} ({}), {}.\n",
        f.spec.messages,
        f.spec.size,
        f.spec.interval_ms,
        f.spec.break_at,
        f.spec.outage_ms,
        f.window,
        f.link.as_deref().map(|l| format!("Link: {l}. ")).unwrap_or("Loopback. ".into()),
        f.spec.backoff_base_ms,
        f.spec.backoff_max_ms,
        f.env.wirelab,
        f.env.git_rev,
        f.env.cpu_model,
    );
    let _ = writeln!(
        s,
        "For `dark` the connection is kept: resume is from the path's return to the first new message (the transport's own recovery), and the answer is `held` when the connection survived. For `migrate` the client's address changes (the old one is gone at once; with a link, after the path was dark for the outage): a QUIC connection migrates (`migrated`: no new handshake), a TCP-based client opens a new connection and resumes (`ok`); resume is from the address change to the first new message.\n"
    );
    let _ = writeln!(
        s,
        "{}\n",
        match f.spec.workload {
            Workload::Stream => "Resume: from the start of the reconnection attempt that succeeded to the first new message: connection setup and the resume's round trip (median [min-max] over the repetitions; the backoff's random waits before it are in the backoff column, mean). Replayed: messages produced while the client was away, sent from the server's window. Lost must be 0 where the answer is ok; duplicates are dropped by the client's offset check.",
            Workload::Echo => "Resume: from the start of the reconnection attempt that succeeded (for `dark` and `migrate`, from the path's return or the address change) to the first answer that had not come before: connection setup and one round trip (median [min-max] over the repetitions; the backoff's random waits before it are in the backoff column, mean). Replayed: messages the client sent again on the new connection (those unanswered when the old one broke). Lost must be 0; duplicates are answers the client had already had, dropped by it.",
        }
    );
    let _ = writeln!(
        s,
        "| transport | break | answer (expected) | resume ms | backoff ms | attempts | replayed | lost | duplicates | runs |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &f.rows {
        let answers: Vec<&str> = r.runs.iter().map(|o| o.answer.as_str()).collect();
        let mut uniq = answers.clone();
        uniq.dedup();
        let ms: Vec<f64> = r.runs.iter().filter_map(|o| o.resume_ms).collect();
        let range = match (
            median(ms.clone()),
            ms.iter().cloned().reduce(f64::min),
            ms.iter().cloned().reduce(f64::max),
        ) {
            (Some(m), Some(lo), Some(hi)) => format!("{m:.2} [{lo:.2}-{hi:.2}]"),
            _ => "–".into(),
        };
        let sum = |f: fn(&Outcome) -> u64| r.runs.iter().map(f).sum::<u64>();
        let expected = if f.spec.workload == Workload::Echo {
            "all answered"
        } else if r.kind == Break::Dark {
            "held"
        } else {
            status(r.kind.expected())
        };
        let ok = r.runs.iter().all(|o| o.answer_as_expected);
        let _ = writeln!(
            s,
            "| {} | {} | {}{} ({expected}) | {range} | {:.1} | {} | {} | {} | {} | {}{} |",
            r.transport,
            r.kind.name(),
            uniq.join(", "),
            if ok { "" } else { " **wrong**" },
            r.runs.iter().map(|o| o.backoff_ms).sum::<f64>() / r.runs.len().max(1) as f64,
            r.runs.iter().map(|o| o.attempts).max().unwrap_or(0),
            sum(|o| o.replayed),
            sum(|o| o.lost),
            sum(|o| o.duplicates),
            r.runs.len(),
            if r.errors.is_empty() {
                String::new()
            } else {
                format!(" ({} failed: {})", r.errors.len(), r.errors.join("; "))
            }
        );
    }
    for k in &f.skipped {
        let _ = writeln!(s, "\nNot run: {k}.");
    }
    s
}

fn status(s: wirelab_core::codec::ResumeStatus) -> &'static str {
    use wirelab_core::codec::ResumeStatus as S;
    match s {
        S::Ok => "ok",
        S::EpochChanged => "epoch changed",
        S::OutsideWindow => "outside window",
        S::Unknown => "unknown",
    }
}
