//! The `wirelab` binary end to end: serving, SIGTERM, the client check, and clear errors.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use wirelab_core::codec::{self, Kind};
use wirelab_core::{Channel, Client, ClientConfig, Error};

const BOUND: Duration = Duration::from_secs(30);

fn wirelab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wirelab"));
    c.kill_on_drop(true);
    c
}

/// Reads `serve`'s output a line at a time until `pick` takes one (bounded by `BOUND`).
async fn read_until<T>(
    out: &mut BufReader<ChildStdout>,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> T {
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout(BOUND, out.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(
            read > 0,
            "serve exited before printing what the test waits for"
        );
        if let Some(v) = pick(&line) {
            return v;
        }
    }
}

/// Starts `wirelab serve ARGS` and returns the child and each transport's address as printed.
async fn serve(
    args: &[&str],
    n: usize,
) -> (Child, BufReader<ChildStdout>, Vec<(String, SocketAddr)>) {
    let mut child = wirelab()
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut addrs = Vec::new();
    while addrs.len() < n {
        let got = read_until(&mut out, |line| {
            let (id, rest) = line.split_once(" listening on ")?;
            let url = rest.split("://").nth(1).unwrap();
            // host:port, then the transport's path if it has one (`/ws`, `/events`).
            let addr = url
                .split_whitespace()
                .next()
                .unwrap()
                .split('/')
                .next()
                .unwrap();
            Some((id.trim().to_string(), addr.parse().unwrap()))
        })
        .await;
        addrs.push(got);
    }
    (child, out, addrs)
}

fn sigterm(child: &Child) {
    let pid = child.id().unwrap().to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(st.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_all_then_sigterm_exits_cleanly() {
    let listed: Vec<_> = wirelab::transports::LIST
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    let (mut child, mut out, addrs) = serve(&[], listed.len()).await;
    let ids: Vec<_> = addrs.iter().map(|(id, _)| id.as_str()).collect();
    // Every listed transport is served, in the list's order.
    assert_eq!(ids, listed);
    sigterm(&child);
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    while out.read_line(&mut rest).await.unwrap() > 0 {}
    assert!(rest.contains("stopped"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_websockets_with_1001_after_answering() {
    let (mut child, _out, addrs) = serve(&["-t", "ws"], 1).await;
    let mut client = wirelab_ws::WsClient::connect(&ClientConfig::new(addrs[0].1))
        .await
        .unwrap();
    let mut ch = client.channels().remove(0);
    let m = codec::encode(0, 0, 0, Kind::Echo, 64).unwrap();
    assert_eq!(ch.echo(m.clone()).await.unwrap(), m);
    sigterm(&child);
    let e = tokio::time::timeout(BOUND, ch.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Closed { code: 1001, .. }), "{e:?}");
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_subcommand_checks_each_transport() {
    let cert = std::env::temp_dir().join(format!("wirelab-cli-all-{}.pem", std::process::id()));
    let cert_s = cert.display().to_string();
    let n = wirelab::transports::LIST.len();
    let (mut child, _out, addrs) = serve(&["--cert-out", &cert_s], n).await;
    for (id, addr) in &addrs {
        let d = wirelab::transports::descriptor(wirelab::transports::parse(id).unwrap());
        let addr_s = addr.to_string();
        let mut args = vec![
            "client", "-t", id, "-c", &addr_s, "-k", "4", "--count", "200",
        ];
        if d.tls.by_default() {
            args.extend(["--ca", cert_s.as_str()]);
        }
        if d.zero_rtt {
            // Resumption: a priming session, then the measured one in 0-RTT.
            args.push("--0rtt");
        }
        let out = tokio::time::timeout(BOUND, wirelab().args(&args).output())
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{id}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("RTT p50"), "{text}");
        assert!(
            text.contains("100 messages complete and in order"),
            "{text}"
        );
        if d.zero_rtt {
            assert!(text.contains("early data accepted"), "{text}");
        }
    }
    sigterm(&child);
    tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serve_and_client_with_the_printed_certificate() {
    let dir = std::env::temp_dir().join(format!("wirelab-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let cert_s = cert.display().to_string();
    let (mut child, _out, addrs) = serve(&["-t", "ws", "--tls", "--cert-out", &cert_s], 1).await;
    let out = wirelab()
        .args([
            "client",
            "-t",
            "ws",
            "-c",
            &addrs[0].1.to_string(),
            "--tls",
            "--ca",
            &cert_s,
            "--count",
            "50",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sigterm(&child);
    tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn fails_with(args: &[&str], needle: &str) {
    let out = tokio::time::timeout(BOUND, wirelab().args(args).output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    fails_with(
        &["client", "-t", "tcp", "-c", "127.0.0.1:1", "--size", "8"],
        "at least the 32-byte header",
    )
    .await;
    fails_with(
        &["client", "-t", "tcp", "-c", "127.0.0.1:1", "--0rtt"],
        "has no 0-RTT",
    )
    .await;
    fails_with(
        &["client", "-t", "ws", "-c", "127.0.0.1:1", "--tls"],
        "--ca FILE",
    )
    .await;
    fails_with(
        &[
            "client",
            "-t",
            "tcp",
            "-c",
            "127.0.0.1:1",
            "--datagrams",
            "5",
        ],
        "has no datagrams (only wt)",
    )
    .await;
    fails_with(
        &["client", "-t", "nope", "-c", "127.0.0.1:1"],
        "possible values: tcp, ws",
    )
    .await;
    fails_with(
        &["client", "-t", "tcp", "-c", "127.0.0.1:1", "--count", "1"],
        "connecting",
    )
    .await;
    fails_with(&["serve", "-t", "tcp", "--tls"], "no TLS mode").await;
    fails_with(&["serve", "--idle-timeout", "0s"], "positive duration").await;
    fails_with(
        &["serve", "-t", "h2", "--h2-max-frame", "1K"],
        "outside 16384",
    )
    .await;
    fails_with(
        &[
            "client",
            "-t",
            "h2",
            "-c",
            "127.0.0.1:1",
            "--h2c",
            "--h2-window",
            "0",
        ],
        "outside 1..",
    )
    .await;
    // A port that is already taken.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = l.local_addr().unwrap().to_string();
    fails_with(
        &["serve", "-t", "tcp", "--listen", &taken],
        "cannot listen on",
    )
    .await;
}

/// `wirelab run --quick` end to end on one transport (CI also runs it for all of them): the
/// JSON parses with the current schema, the report and charts exist, `report` rebuilds them
/// and `compare` diffs two runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_quick_writes_json_report_and_charts() {
    let dir = std::env::temp_dir().join(format!("wirelab-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        wirelab()
            .args([
                "run",
                "--quick",
                "--transports",
                "tcp",
                "--reps",
                "2",
                "--warmup",
                "0",
            ])
            .arg("--out")
            .arg(&dir)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("| tcp |") && stdout.contains("report.md"),
        "{stdout}"
    );
    assert!(stderr.contains("covers less than 95%"), "{stderr}");
    let results = wirelab::results::load_dir(&dir).unwrap();
    let quick: Vec<_> = wirelab::scenario::embedded()
        .unwrap()
        .into_iter()
        .filter(|s| s.in_set("quick"))
        .collect();
    assert_eq!(results.len(), quick.len());
    for r in &results {
        assert_eq!(r.schema, wirelab::results::SCHEMA);
        assert_eq!(r.reps.len(), 2);
        assert!(
            r.summary.contains_key(&wirelab::results::Metric::P50Us),
            "{}: {:?}",
            r.scenario.name,
            r.summary.keys()
        );
        assert!(!r.env.git_rev.is_empty() && r.env.cores >= 1);
        // Pinned by default (`--cpu`): split where two CPUs are allowed, else same.
        let cpu = &r.placement.cpu;
        assert!(
            cpu.starts_with(if r.env.cores >= 2 {
                "split ("
            } else {
                "same ("
            }),
            "{cpu}"
        );
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for s in &quick {
        assert!(report.contains(&format!("## {}", s.name)), "{report}");
    }
    assert!(dir.join("echo_64B_c1_shared/latency_cdf.svg").is_file());
    assert!(dir.join("echo_64B_c1_shared/throughput.svg").is_file());
    assert!(dir.join("echo_64B_c1_shared/overhead.svg").is_file());
    assert!(dir.join("setup_1rtt/setup.svg").is_file());

    // `report` rebuilds report.md from the JSON alone.
    std::fs::remove_file(dir.join("report.md")).unwrap();
    std::fs::remove_file(dir.join("setup_1rtt/setup.svg")).unwrap();
    let out = wirelab().arg("report").arg(&dir).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("report.md")).unwrap(),
        report
    );
    assert!(dir.join("setup_1rtt/setup.svg").is_file());

    // `compare` of a run with itself: every metric within its interval.
    let out = wirelab()
        .arg("compare")
        .arg(&dir)
        .arg(&dir)
        .output()
        .await
        .unwrap();
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        diff.contains("| echo_64B_c1_shared | tcp | p50 µs |"),
        "{diff}"
    );
    assert!(
        diff.contains("+0.0%") && !diff.contains("**clear**"),
        "{diff}"
    );

    // Report content, not only files: the right rows, units and series.
    assert!(
        report.contains("| transport |") && report.contains("| tcp |"),
        "{report}"
    );
    assert!(
        report.contains(" µs") || report.contains("µs |"),
        "{report}"
    );
    let cdf = std::fs::read_to_string(dir.join("echo_64B_c1_shared/latency_cdf.svg")).unwrap();
    // plotters writes each text on its own line: the legend entry, the axis with its unit,
    // and at least one drawn series.
    assert!(cdf.contains("\ntcp\n"), "no tcp legend entry in the CDF");
    assert!(cdf.contains("latency (µs"), "the CDF's axis has no unit");
    assert!(cdf.contains("<polyline"), "the CDF draws no line");

    // A real change is marked: B = A with every echo p50 three times higher (intervals
    // scaled too, so they no longer overlap) and one result flagged invalid.
    let dir_b = std::env::temp_dir().join(format!("wirelab-run-b-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir_b);
    let mut changed = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if !entry.path().is_dir() {
            continue;
        }
        let sub = dir_b.join(entry.file_name());
        std::fs::create_dir_all(&sub).unwrap();
        for f in std::fs::read_dir(entry.path()).unwrap().flatten() {
            if f.path().extension().is_none_or(|e| e != "json") {
                continue;
            }
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(f.path()).unwrap()).unwrap();
            if v["scenario"]["name"] == "echo_64B_c1_shared" {
                for k in ["median", "lo", "hi"] {
                    let x = v["summary"]["p50_us"][k].as_f64().unwrap();
                    v["summary"]["p50_us"][k] = serde_json::json!(x * 3.0);
                }
                v["notes"] = serde_json::json!([
                    "invalid: the link emulator fell behind: up: 1 writes failed"
                ]);
                changed += 1;
            }
            std::fs::write(sub.join(f.file_name()), v.to_string()).unwrap();
        }
    }
    assert_eq!(changed, 1);
    let out = wirelab()
        .arg("compare")
        .arg(&dir)
        .arg(&dir_b)
        .output()
        .await
        .unwrap();
    let diff = String::from_utf8_lossy(&out.stdout);
    let row = |metric: &str| {
        diff.lines()
            .find(|l| l.starts_with(&format!("| echo_64B_c1_shared | tcp | {metric} |")))
            .unwrap_or_else(|| panic!("no {metric} row: {diff}"))
            .to_string()
    };
    assert!(
        row("p50 µs").contains("+200.0%") && row("p50 µs").ends_with("**clear** |"),
        "{diff}"
    );
    assert!(row("p99 µs").ends_with("within CI |"), "{diff}");
    let out = wirelab().arg("report").arg(&dir_b).output().await.unwrap();
    assert!(out.status.success());
    let report_b = std::fs::read_to_string(dir_b.join("report.md")).unwrap();
    assert!(report_b.contains("| tcp ⚠ invalid |"), "{report_b}");
    assert!(report_b.contains("1 writes failed"), "{report_b}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir_b);
}

#[tokio::test]
async fn run_report_and_compare_refuse_bad_input_clearly() {
    fails_with(
        &["run", "--scenario", "echo_3B_c1_shared"],
        "no scenario 'echo_3B_c1_shared'; known:",
    )
    .await;
    fails_with(&["run", "--quick", "--full"], "cannot be used with").await;
    fails_with(
        &["run", "--transports", "smoke"],
        "possible values: tcp, ws",
    )
    .await;
    fails_with(&["run", "--reps", "0"], "reps").await;
    fails_with(
        &["report", "/nonexistent/wirelab"],
        "is not a directory of results",
    )
    .await;
    let empty = std::env::temp_dir().join(format!("wirelab-empty-{}", std::process::id()));
    std::fs::create_dir_all(empty.join("x")).unwrap();
    std::fs::write(empty.join("x/y.json"), "{\"schema\": \"wirelab.result/0\"}").unwrap();
    fails_with(
        &["report", empty.to_str().unwrap()],
        "this wirelab reads wirelab.result/1",
    )
    .await;
    std::fs::write(empty.join("x/y.json"), "not json").unwrap();
    fails_with(&["compare", empty.to_str().unwrap(), "/tmp"], "is not JSON").await;
    let bad = empty.join("echo_64B_c2_shared.toml");
    std::fs::write(
        &bad,
        "about = 'x'\nkind = 'echo'\nsize = '64B'\nstreams = 3\nmessages = 9\n",
    )
    .unwrap();
    fails_with(
        &["run", "--scenario", bad.to_str().unwrap()],
        "its parameters name it 'echo_64B_c3_shared'",
    )
    .await;
    let _ = std::fs::remove_dir_all(&empty);
}

/// `wirelab run --scenario SCENARIO --transports T --reps REPS --warmup 0 --out OUT` (within
/// 120 s, exit 0), then its results loaded back.
async fn run_and_load(
    scenario: &str,
    transports: &str,
    reps: u32,
    out: &std::path::Path,
) -> Vec<wirelab::results::ResultFile> {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        wirelab()
            .args(["run", "--scenario", scenario, "--transports", transports])
            .args(["--reps", &reps.to_string(), "--warmup", "0", "--out"])
            .arg(out)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    wirelab::results::load_dir(out).unwrap()
}

/// The scale scenario measures a server in its own process: memory per connection and
/// connections per second come out positive and plausible for the tcp floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_measures_a_server_process() {
    let dir = std::env::temp_dir().join(format!("wirelab-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let results = run_and_load("scale_c500", "tcp,ws", 2, &dir).await;
    assert_eq!(results.len(), 2);
    for r in &results {
        for rep in &r.reps {
            let s = rep.scale.expect("a scale record");
            assert_eq!(s.connections, 500);
            assert!(s.rss_idle_kib > s.rss_base_kib, "{s:?}");
        }
        let kib = r.summary[&wirelab::results::Metric::ServerKibPerIdleConn].median;
        // Each connection holds at least its socket buffers' bookkeeping and a task; a figure
        // of megabytes would mean the client side was counted.
        assert!(
            (1.0..200.0).contains(&kib),
            "{}: {kib} KiB",
            r.variant.label
        );
        assert!(r.summary[&wirelab::results::Metric::ConnsPerS].median > 10.0);
        assert!(r.summary[&wirelab::results::Metric::ServerCpuUsPerConnSetup].median > 0.0);
        assert_eq!(
            r.reps[0].messages, 500,
            "one echo per connection in the active phase"
        );
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("server KiB/idle conn"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stream scenario with several streams downloads on all of them at once: every stream
/// delivers all its messages, each repetition says when each stream finished, and the report
/// shows when the first did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_with_several_streams_downloads_on_all_of_them() {
    let dir = std::env::temp_dir().join(format!("wirelab-mstream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("stream_16KiB_c4_shared.toml");
    std::fs::write(
        &file,
        "about = 'four downloads at once'\nkind = 'stream'\nsize = '16KiB'\nstreams = 4\nmessages = 8\n",
    )
    .unwrap();
    let out_dir = dir.join("out");
    let transports = "tcp,ws,h2,h2ws,quic,h3,sse,wt";
    let results = run_and_load(file.to_str().unwrap(), transports, 1, &out_dir).await;
    assert!(results.len() >= 8, "{} results", results.len());
    for r in &results {
        let rep = &r.reps[0];
        assert_eq!(rep.messages, 32, "{}", r.variant.label);
        assert_eq!(rep.payload_bytes, 32 * 16384, "{}", r.variant.label);
        assert_eq!(rep.stream_done_s.len(), 4, "{}", r.variant.label);
        let last = rep.stream_done_s.iter().copied().fold(0.0, f64::max);
        assert!(
            last <= rep.elapsed_s,
            "{}: {last} > {}",
            r.variant.label,
            rep.elapsed_s
        );
    }
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(report.contains("first stream done ms"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file-descriptor limit too low for the scale scenario is a clear error, not a panic or a
/// half-measured result.
#[tokio::test]
async fn scale_says_when_the_open_file_limit_is_too_low() {
    let Some(prlimit) = wirelab_test_support::find_program(
        "prlimit",
        "prlimit (util-linux)",
        "apt-get install util-linux",
    ) else {
        return;
    };
    let out = tokio::process::Command::new(prlimit)
        .arg("--nofile=256:256")
        .arg(env!("CARGO_BIN_EXE_wirelab"))
        .args(["run", "--scenario", "scale_c10000", "--transports", "tcp"])
        .args(["--reps", "1", "--warmup", "0", "--out"])
        .arg(std::env::temp_dir().join(format!("wirelab-nofile-{}", std::process::id())))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("open files, and the hard limit is 256"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Starts `wirelab serve` with a control endpoint on loopback; returns it and the endpoint.
async fn serve_with_control() -> (Child, BufReader<ChildStdout>, SocketAddr) {
    let n = wirelab::transports::LIST.len();
    let (child, mut out, _) = serve(&["--control", "127.0.0.1:0"], n).await;
    let control = read_until(&mut out, |line| {
        let rest = line.strip_prefix("control listening on http://")?;
        Some(rest.split_whitespace().next().unwrap().parse().unwrap())
    })
    .await;
    (child, out, control)
}

/// `hol --server`: HOL over a real path (here loopback) without the emulator or root; the
/// results say where they ran and that the loss was the path's own; the control endpoint then
/// stops the server (loopback is trusted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hol_against_a_remote_server_without_the_emulator() {
    let (mut child, _out, control) = serve_with_control().await;
    let dir = std::env::temp_dir().join(format!("wirelab-hol-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        wirelab()
            .args(["hol", "--server", &control.to_string(), "--rtt", "20"])
            .args([
                "--only",
                "tcp shared,quic",
                "--messages",
                "200",
                "--streams",
                "4",
            ])
            .arg("--out")
            .arg(&dir)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("certificate sha256"), "{err}");
    let results = wirelab::hol::load_dir(&dir).unwrap();
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.placement.kind, "remote");
        assert_eq!(r.cell.kind, wirelab::hol::LossKind::Path);
        assert_eq!(r.cell.name(), "rtt20_path");
        assert!(r.summary.contains_key("p99_ms"), "{:?}", r.summary);
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("the real path's own loss"), "{report}");
    assert!(report.contains("no emulator"), "{report}");
    let (code, body) = tokio::task::spawn_blocking(move || {
        wirelab::control::request(control, "POST", "/v1/shutdown").unwrap()
    })
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
