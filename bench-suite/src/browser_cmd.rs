//! `wirelab browser`: the workloads from headless Chromium against servers in this process,
//! beside the Rust client on the same servers; `--limits`: the browser's own limits.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use wirelab::browser::{self, Chromium, PageRun, Target, TARGETS};
use wirelab::driver::Saved;
use wirelab::results::{self, Placement, ResultFile, VariantInfo};
use wirelab::runner::{self, Plan, Servers};
use wirelab::scenario::{self, Kind, Scenario};
use wirelab::{env, report, transports};
use wirelab_core::tls::Identity;
use wirelab_core::{CancellationToken, Mode, ServerConfig, TransportId};

/// Options of `wirelab browser`.
#[derive(Debug, Args)]
pub(crate) struct BrowserArgs {
    /// Small counts (CI): 200 echoes, streams of 1000 messages, 1 repetition, no warm-up.
    #[arg(long)]
    quick: bool,
    /// Transports to measure from the browser, comma-separated; default: every one a browser
    /// speaks (ws, h1, h2, h2ws, h3, sse).
    #[arg(long, value_delimiter = ',', value_parser = crate::opts::transport_parser())]
    transports: Vec<TransportId>,
    /// Messages per echo run and per server stream (default: the scenarios' own, 2000 and
    /// 10000).
    #[arg(long)]
    messages: Option<u64>,
    /// Measured repetitions per workload and target.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=1000))]
    reps: u32,
    /// Unmeasured repetitions first.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Do not measure the same transports with the Rust client for comparison.
    #[arg(long)]
    no_rust: bool,
    /// Directory for the results; default `results/browser-<UTC date>-<time>`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write Chromium's net log (every connection and stream it opened) to this file.
    #[arg(long, value_name = "FILE")]
    netlog: Option<PathBuf>,
    /// Measure the browser's limits instead: WebSockets per browser and per host (also over
    /// RFC 8441), concurrent requests per host over HTTP/1.1, h2 and h3, handshake pacing.
    #[arg(long)]
    limits: bool,
    /// --limits: WebSockets opened at once to one host.
    #[arg(long, default_value_t = 300)]
    ws_count: u32,
    /// --limits: slow requests started at once per host.
    #[arg(long, default_value_t = 18)]
    fetch_count: u32,
    /// --limits: how long each slow request takes, ms.
    #[arg(long, default_value_t = 1000)]
    fetch_ms: u32,
}

fn default_out(what: &str) -> PathBuf {
    let t = env::rfc3339(env::unix_now());
    let stamp: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
    PathBuf::from("results").join(format!("{what}-{}-{}", &stamp[..8], &stamp[8..]))
}

/// The servers the targets need, one per (transport, security), on loopback.
struct Lab {
    addrs: BTreeMap<(String, bool), SocketAddr>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<wirelab_core::Result<()>>>,
    spki: String,
    /// The h2ws server's limit on concurrent streams (RFC 8441 WebSockets per connection).
    h2ws_streams: u32,
}

impl Lab {
    async fn start(targets: &[&Target], servers: &Servers, extra: &[(&str, bool)]) -> Result<Self> {
        let ident = Identity::self_signed(&["localhost", "127.0.0.1"])?;
        let spki = ident
            .spki_sha256_base64()
            .context("the certificate has no public key hash")?;
        let stop = CancellationToken::new();
        let mut addrs = BTreeMap::new();
        let mut tasks = Vec::new();
        let mut h2ws_streams = 0;
        let mut wanted: Vec<(String, bool)> = Vec::new();
        for t in targets {
            let (pt, ps) = t.page_server();
            wanted.push((pt.to_string(), ps));
            wanted.push((t.transport.to_string(), t.tls));
        }
        wanted.extend(extra.iter().map(|(t, s)| (t.to_string(), *s)));
        for (transport, tls) in wanted {
            if addrs.contains_key(&(transport.clone(), tls)) {
                continue;
            }
            let id = transports::parse(&transport).map_err(anyhow::Error::msg)?;
            let mut cfg = ServerConfig::new(SocketAddr::new(servers.listen, 0));
            if transport == "h2ws" {
                h2ws_streams = cfg.h2.max_concurrent_streams;
            }
            if tls {
                cfg.tls = Some(ident.server_config(&[transports::alpn(id)])?);
            }
            let (addr, task) =
                transports::start_server(id, cfg, stop.clone(), &servers.handle).await?;
            addrs.insert((transport, tls), addr);
            tasks.push(task);
        }
        Ok(Self {
            addrs,
            stop,
            tasks,
            spki,
            h2ws_streams,
        })
    }

    fn addr(&self, transport: &str, tls: bool) -> SocketAddr {
        self.addrs[&(transport.to_string(), tls)]
    }

    fn quic(&self) -> Vec<SocketAddr> {
        self.addrs
            .iter()
            .filter(|((t, _), _)| browser::over_quic(t))
            .map(|(_, a)| *a)
            .collect()
    }

    async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

fn transport_label(t: &Target) -> Result<String> {
    let id = transports::parse(t.transport).map_err(anyhow::Error::msg)?;
    Ok(transports::descriptor(id).label(t.tls).to_string())
}

/// The Rust client's variant compared with a target.
fn rust_variant(t: &Target) -> Result<transports::Variant> {
    let id = transports::parse(t.transport).map_err(anyhow::Error::msg)?;
    let modes = transports::descriptor(id).modes;
    let mode = match t.api {
        "duplex" => Mode::Duplex,
        "fetch" if modes.contains(&Mode::Rr) => Mode::Rr,
        _ => modes[0],
    };
    Ok(transports::Variant {
        id,
        tls: t.tls,
        mode,
    })
}

fn progress(total: u64) -> Result<ProgressBar> {
    Ok(if std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} runs, eta {eta}  {msg}",
            )
            .context("progress template")?
            .progress_chars("=> "),
        );
        pb
    } else {
        ProgressBar::hidden()
    })
}

fn pick_targets(ids: &[TransportId]) -> Vec<&'static Target> {
    TARGETS
        .iter()
        .filter(|t| ids.is_empty() || ids.iter().any(|i| i.as_str() == t.transport))
        .collect()
}

pub(crate) async fn browser(a: BrowserArgs, servers: Servers) -> Result<()> {
    // Before anything starts: a missing browser is the most likely failure.
    let bin = browser::find_chromium()?;
    if a.limits {
        return limits(a, servers).await;
    }
    let targets = pick_targets(&a.transports);
    if targets.is_empty() {
        bail!("a browser speaks none of the transports asked for (it speaks ws, h1, h2, h2ws, h3, sse)");
    }
    let (reps, warmup) = if a.quick { (1, 0) } else { (a.reps, a.warmup) };
    let mut scenarios = Vec::new();
    for name in [
        "echo_64B_c1_shared",
        "stream_1KiB",
        "fanout_64B_n10_pool_r100",
    ] {
        let mut s: Scenario = scenario::embedded()
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .find(|s| s.name == name)
            .with_context(|| format!("scenario {name} is not embedded"))?;
        s.messages = match (a.messages, a.quick, s.kind) {
            // Fan-out publishes for the scenario's duration at its rate.
            (_, _, Kind::Fanout) => s.messages,
            (Some(n), _, _) => n,
            (None, true, Kind::Echo) => 200,
            (None, true, _) => 1000,
            (None, false, _) => s.messages,
        };
        scenarios.push(s);
    }
    let out = a.out.clone().unwrap_or_else(|| default_out("browser"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let lab = Lab::start(&targets, &servers, &[]).await?;
    eprintln!("wirelab browser: starting {}", bin.display());
    let chromium = Chromium::launch(&lab.spki, &lab.quic(), a.netlog.as_deref()).await?;
    let runs: u64 = targets
        .iter()
        .map(|t| t.workloads.len() as u64 * u64::from(reps + warmup))
        .sum();
    eprintln!(
        "wirelab browser: {} from {} against {} targets, {reps} repetitions each (+{warmup} warm-up) -> {}",
        scenarios.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
        chromium.version,
        targets.len(),
        out.display()
    );
    let pb = progress(runs)?;
    let env = env::Env::capture();
    let t0 = Instant::now();
    let measured = measure(
        &chromium, &lab, &targets, &scenarios, reps, warmup, &env, &out, &pb,
    )
    .await;
    pb.finish_and_clear();
    chromium.close().await;
    lab.stop().await;
    let failures = measured?;
    let mut failed = failures.len();
    for f in &failures {
        eprintln!("FAILED {f}");
    }
    if !a.no_rust {
        let mut variants = Vec::new();
        for t in &targets {
            let v = rust_variant(t)?;
            if !variants.contains(&v) {
                variants.push(v);
            }
        }
        let plan = Plan {
            scenarios: scenarios.clone(),
            variants,
            reps,
            warmup_reps: warmup,
            out: out.clone(),
        };
        eprintln!(
            "wirelab browser: the same workloads from the Rust client ({} variants)",
            plan.variants.len()
        );
        let pb = progress(runner::total_reps(&plan))?;
        let (_, rust_failures) = runner::execute(&plan, &servers, &pb).await?;
        pb.finish_and_clear();
        for f in &rust_failures {
            eprintln!("FAILED {} · {}: {}", f.scenario, f.variant, f.error);
        }
        failed += rust_failures.len();
    }
    let results = results::load_dir(&out)?;
    let path = report::write(&out, &results)?;
    println!("{}", report::terminal(&results));
    println!(
        "\n{} results in {:.0} s. Report: {}",
        results.len(),
        t0.elapsed().as_secs_f64(),
        path.display()
    );
    if failed > 0 {
        bail!("{failed} measurements failed (the others are in the report)");
    }
    Ok(())
}

/// Runs every target's workloads in one tab; saves a result per (scenario, target). Returns
/// the failures (a failed target does not stop the others).
#[allow(clippy::too_many_arguments)]
async fn measure(
    chromium: &Chromium,
    lab: &Lab,
    targets: &[&Target],
    scenarios: &[Scenario],
    reps: u32,
    warmup: u32,
    env: &env::Env,
    out: &std::path::Path,
    pb: &ProgressBar,
) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    for t in targets {
        // A fresh browser context per target: its first connection is cold, whatever ran
        // before (the warm-up repetitions then warm it).
        let tab = chromium.tab().await?;
        let r = measure_target(
            chromium, &tab, lab, t, scenarios, reps, warmup, env, out, pb,
        )
        .await;
        chromium.close_tab(tab).await;
        failures.extend(r?);
    }
    Ok(failures)
}

#[allow(clippy::too_many_arguments)]
async fn measure_target(
    chromium: &Chromium,
    tab: &browser::Tab,
    lab: &Lab,
    t: &Target,
    scenarios: &[Scenario],
    reps: u32,
    warmup: u32,
    env: &env::Env,
    out: &std::path::Path,
    pb: &ProgressBar,
) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    let addr = lab.addr(t.transport, t.tls);
    let label = t.label(&transport_label(t)?);
    let (pt, ps) = t.page_server();
    let page = format!(
        "{}://{}/",
        if ps { "https" } else { "http" },
        lab.addr(pt, ps)
    );
    if let Err(e) = chromium.goto(tab, &page).await {
        failures.push(format!("{label}: {e:#}"));
        pb.inc(t.workloads.len() as u64 * u64::from(reps + warmup));
        return Ok(failures);
    }
    let nav = chromium
            .eval(
                tab,
                "performance.getEntriesByType('navigation')[0].nextHopProtocol + ' ' + self.crossOriginIsolated",
                Duration::from_secs(5),
            )
            .await?;
    let nav = nav.as_str().unwrap_or("? false").to_string();
    let (nav_proto, isolated) = nav.split_once(' ').unwrap_or((&nav, "false"));
    for s in scenarios {
        let workload = match s.kind {
            Kind::Echo => "echo",
            Kind::Stream => "stream",
            Kind::Fanout => "fanout",
            _ => continue,
        };
        if !t.workloads.contains(&workload) {
            continue;
        }
        pb.set_message(format!("{} · {label}", s.name));
        chromium.websocket_protocols(tab);
        let count = match s.kind {
            Kind::Fanout => wirelab::fanout::spec_of(s)?.messages,
            _ => s.messages,
        };
        let spec = json!({
            "api": t.api, "url": t.url(addr), "workload": workload,
            "size": s.size_bytes(), "count": count, "timeoutMs": 20000,
            "subscribers": s.subscribers, "rate": s.rate,
        });
        let expr = format!("wirelab.run({spec})");
        let mut kept = Vec::new();
        let mut protocols: Vec<String> = Vec::new();
        let mut error = None;
        for i in 0..reps + warmup {
            let r = chromium
                .eval(tab, &expr, Duration::from_secs(120))
                .await
                .and_then(|v| serde_json::from_value::<PageRun>(v).context("the page's result"));
            pb.inc(1);
            match r {
                Ok(run) => {
                    for p in &run.protocols {
                        if !protocols.contains(p) {
                            protocols.push(p.clone());
                        }
                    }
                    if i >= warmup {
                        kept.push(run);
                    }
                }
                Err(e) => {
                    error = Some(e);
                    pb.inc(u64::from(reps + warmup - i - 1));
                    break;
                }
            }
        }
        if let Some(e) = error {
            failures.push(format!("{} · {label}: {e:#}", s.name));
            continue;
        }
        let mut negotiated = vec![format!("page {nav_proto}")];
        if !protocols.is_empty() {
            negotiated.push(format!("requests {}", protocols.join(", ")));
        }
        let ws = chromium.websocket_protocols(tab);
        if !ws.is_empty() {
            negotiated.push(format!("WebSocket {}", ws.join(", ")));
        }
        let reps = match kept
            .iter()
            .map(|r| r.rep_for(s))
            .collect::<Result<Vec<results::Rep>>>()
        {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{} · {label}: {e:#}", s.name));
                continue;
            }
        };
        if let Some(f) = reps
            .iter()
            .filter_map(|r| r.fanout.as_ref())
            .find(|f| f.missed > 0 || f.disordered > 0 || f.cut > 0)
        {
            failures.push(format!(
                "{} · {label}: subscribers missed {} deliveries, {} out of order, {} cut off",
                s.name, f.missed, f.disordered, f.cut
            ));
        }
        let v = rust_variant(t)?;
        let mut notes = vec![format!(
            "browser API {}; timer {}",
            t.api,
            if isolated == "true" {
                "cross-origin isolated (µs resolution)"
            } else {
                "not isolated (coarsened to ~100 µs)"
            }
        )];
        if s.kind == Kind::Fanout {
            notes.push(format!(
                "fan-out: {} subscribers and the publisher are channels of this page; latency from the page's send of each publish to its arrival (one clock), not from an intended send time (the page's timers cannot hold an open-loop schedule)",
                s.subscribers
            ));
        }
        if t.api == "duplex" {
            notes.push(
                    "duplex: Chromium sends the whole streamed request body before it hands the response to the page (half duplex), so each latency is from a message's write to its answer after the body ended".into(),
                );
        }
        let result = ResultFile {
            schema: results::SCHEMA.into(),
            scenario: s.clone(),
            variant: VariantInfo {
                label: label.clone(),
                slug: label
                    .replace(" (page of another origin)", "-cross-origin")
                    .replace(['+', ' '], "-"),
                transport: t.transport.into(),
                tls: t.tls,
                mode: transports::mode_name(v.mode).into(),
                floor: v.floor().map(|f| f.as_str().to_string()),
            },
            env: env.clone(),
            warmup_reps: warmup,
            summary: results::summarize(&reps),
            reps,
            notes,
            link: None,
            placement: Placement {
                kind: "browser".into(),
                browser: Some(chromium.version.clone()),
                negotiated,
                ..Placement::default()
            },
        };
        result.save(out)?;
        if pb.is_hidden() {
            eprintln!("done {} · {label}", s.name);
        }
    }
    Ok(failures)
}

/// `wirelab browser --limits`.
async fn limits(a: BrowserArgs, servers: Servers) -> Result<()> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| default_out("browser-limits"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let lab = Lab::start(
        &[],
        &servers,
        &[
            ("ws", false),
            ("h1", false),
            ("h2", true),
            ("h2ws", true),
            ("h3", true),
        ],
    )
    .await?;
    // A second ws server: two hosts (two ports of one address) for the per-browser cap.
    let mut cfg2 = ServerConfig::new(SocketAddr::new(servers.listen, 0));
    cfg2.tls = None;
    let ws_id = transports::parse("ws").map_err(anyhow::Error::msg)?;
    let (ws2, ws2_task) =
        transports::start_server(ws_id, cfg2, lab.stop.clone(), &servers.handle).await?;
    let chromium = Chromium::launch(&lab.spki, &lab.quic(), a.netlog.as_deref()).await?;
    let version = chromium.version.clone();
    eprintln!("wirelab browser --limits: {version} -> {}", out.display());
    let r = limits_with(&chromium, &lab, ws2, &a).await;
    chromium.close().await;
    lab.stop().await;
    let _ = ws2_task.await;
    let mut rows = r?;
    rows["browser"] = Value::String(version.clone());
    rows["env"] = serde_json::to_value(env::Env::capture())?;
    let md = limits_markdown(&rows, &version);
    std::fs::write(
        out.join("limits.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    std::fs::write(out.join("limits.md"), &md)?;
    println!("{md}");
    println!("Results: {}", out.join("limits.json").display());
    Ok(())
}

async fn limits_with(
    chromium: &Chromium,
    lab: &Lab,
    ws2: SocketAddr,
    a: &BrowserArgs,
) -> Result<Value> {
    let tab = chromium.tab().await?;
    let long = Duration::from_secs(120);
    let n = a.ws_count;
    let mut rows = json!({ "ws_count": n, "fetch_count": a.fetch_count, "fetch_ms": a.fetch_ms,
        "h2ws_max_concurrent_streams": lab.h2ws_streams });
    // WebSockets to one host.
    let ws = lab.addr("ws", false);
    chromium.goto(&tab, &format!("http://{ws}/")).await?;
    eprintln!("limits: {n} WebSockets to one host");
    rows["ws_one_host"] = chromium
        .eval(
            &tab,
            &format!("wirelab.wsLimit('ws://{ws}/ws', {n}, 15000)"),
            long,
        )
        .await?;
    let both = 2 * n;
    eprintln!("limits: {both} WebSockets to two hosts, alternating");
    rows["ws_two_hosts"] = chromium
        .eval(
            &tab,
            &format!("wirelab.wsLimit(['ws://{ws}/ws', 'ws://{ws2}/ws'], {both}, 15000)"),
            long,
        )
        .await?;
    // RFC 8441: from a page on the h2ws origin (the WebSockets go over its HTTP/2 connection).
    let h2ws = lab.addr("h2ws", true);
    chromium.goto(&tab, &format!("https://{h2ws}/")).await?;
    chromium.websocket_protocols(&tab);
    eprintln!("limits: {n} WebSockets over RFC 8441");
    rows["ws_rfc8441"] = chromium
        .eval(
            &tab,
            &format!("wirelab.wsLimit('wss://{h2ws}/ws', {n}, 15000)"),
            long,
        )
        .await?;
    rows["ws_rfc8441"]["handshakes"] = json!(chromium.websocket_protocols(&tab));
    // Concurrent slow requests per host.
    for (name, transport, tls) in [
        ("fetch_h1", "h1", false),
        ("fetch_h2", "h2", true),
        ("fetch_h3", "h3", true),
    ] {
        let addr = lab.addr(transport, tls);
        let origin = format!("{}://{addr}", if tls { "https" } else { "http" });
        chromium.goto(&tab, &format!("{origin}/")).await?;
        eprintln!("limits: {} slow requests over {transport}", a.fetch_count);
        let mut r = chromium
            .eval(
                &tab,
                &format!(
                    "wirelab.fetchLimit('{origin}', {}, {})",
                    a.fetch_count, a.fetch_ms
                ),
                long,
            )
            .await?;
        let done: Vec<f64> = r["done_ms"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        r["waves"] = json!(wirelab::browser::waves(&done, f64::from(a.fetch_ms)));
        rows[name] = r;
    }
    Ok(rows)
}

fn limits_markdown(r: &Value, version: &str) -> String {
    use std::fmt::Write as _;
    let mut md = format!("# Browser limits ({version}, loopback)\n\n| what | opened | failed | still queued | opens/s | note |\n|---|---:|---:|---:|---:|---|\n");
    let ws_row = |md: &mut String, what: &str, v: &Value, note: &str| {
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {} | {} | {note} |",
            v["opened"],
            v["failed"],
            v["pending"],
            wirelab::browser::opens_per_s(v).map_or("-".into(), |x| format!("{x:.0}"))
        );
    };
    let n = &r["ws_count"];
    ws_row(
        &mut md,
        &format!("{n} WebSockets, one host"),
        &r["ws_one_host"],
        "",
    );
    let two = &r["ws_two_hosts"];
    ws_row(
        &mut md,
        &format!(
            "{} WebSockets, two hosts (two ports), alternating",
            two["n"]
        ),
        two,
        &format!("opened per host: {}", two["opened_per_url"]),
    );
    ws_row(
        &mut md,
        &format!("{n} WebSockets over RFC 8441"),
        &r["ws_rfc8441"],
        &format!(
            "server allows {} streams; handshakes: {}",
            r["h2ws_max_concurrent_streams"], r["ws_rfc8441"]["handshakes"]
        ),
    );
    let _ = writeln!(
        md,
        "\n| {} slow requests ({} ms each) | protocol | finished in waves of |\n|---|---|---|",
        r["fetch_count"], r["fetch_ms"]
    );
    for (name, what) in [
        ("fetch_h1", "HTTP/1.1"),
        ("fetch_h2", "h2"),
        ("fetch_h3", "h3"),
    ] {
        let v = &r[name];
        let failed = match v["failed"].as_u64() {
            Some(n) if n > 0 => format!(" ({n} failed: {})", v["errors"]),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "| {what} | {} | {}{failed} |",
            v["protocols"], v["waves"]
        );
    }
    md
}
