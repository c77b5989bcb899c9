//! The browser lab end to end: `wirelab browser` with Debian's headless Chromium (a peer: the
//! tests record a skip when it is not installed, and fail with `WIRELAB_REQUIRE_PEERS=1`).
//! Small counts; every wait bounded.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;
use wirelab::browser::TARGETS;

const BOUND: Duration = Duration::from_secs(300);

/// One browser at a time: two Chromiums and their servers at once on a small machine measure
/// each other.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WIRELAB_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    wirelab_test_support::find_program(
        "chromium",
        "Chromium (the browser lab)",
        "apt-get install -y --no-install-recommends chromium",
    )
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wirelab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

async fn wirelab(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wirelab"));
    c.args(args).kill_on_drop(true);
    tokio::time::timeout(BOUND, c.output())
        .await
        .expect("wirelab browser did not finish in time")
        .expect("wirelab could not be started")
}

/// Every target's workloads run from the browser, results are saved like `run`'s with
/// placement `browser`, and the protocols the browser reports are the ones each target is
/// about: RFC 8441 from the h2ws page, the RFC 6455 upgrade for a cold WebSocket to the same
/// port, h2 and h3 for fetch.
#[tokio::test(flavor = "multi_thread")]
async fn quick_browser_set() {
    if chromium().is_none() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let out = out_dir("browser");
    let o = wirelab(&[
        "browser",
        "--quick",
        "--messages",
        "40",
        "--no-rust",
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "wirelab browser failed:\n{stderr}");
    let results = wirelab::results::load_dir(&out).unwrap();
    let expected: usize = TARGETS.iter().map(|t| t.workloads.len()).sum();
    assert_eq!(results.len(), expected, "{stderr}");
    let used = |label: &str| -> String {
        let r = results
            .iter()
            .find(|r| r.variant.label == label && r.scenario.name.starts_with("echo"))
            .unwrap_or_else(|| panic!("no echo result for {label}"));
        assert_eq!(r.placement.kind, "browser");
        assert!(r.placement.browser.is_some());
        assert_eq!(r.reps.len(), 1);
        assert_eq!(r.reps[0].messages, 40);
        r.placement.negotiated.join("; ")
    };
    assert!(used("browser ws").contains("WebSocket http/1.1"));
    assert!(used("browser h1 fetch").contains("requests http/1.1"));
    assert!(used("browser h2 fetch").contains("requests h2"));
    assert!(used("browser h3 fetch").contains("requests h3"));
    let h2ws = used("browser h2ws");
    assert!(
        h2ws.contains("page h2") && h2ws.contains("RFC 8441"),
        "{h2ws}"
    );
    let cold = used("browser h2ws (page of another origin)");
    assert!(cold.contains("RFC 6455 Upgrade"), "{cold}");
    assert!(used("browser h2 fetch (page of another origin)").contains("requests h2"));
    // WebTransport from the h2 server's page to the wt server: a session Chromium reports
    // ready, then 40 echoes on a bidirectional stream and 40 as datagrams.
    for label in ["browser wt", "browser wt datagram"] {
        let wt = used(label);
        assert!(
            wt.contains("page h2") && wt.contains("requests webtransport"),
            "{label}: {wt}"
        );
    }
    let mut fanouts = 0;
    for r in &results {
        if r.scenario.name.starts_with("stream") {
            assert!(r.reps[0].messages > 0, "{}", r.variant.label);
        }
        // Fan-out from the page: 10 subscribers, 100 messages each, in order, none missed.
        if let Some(f) = &r.reps[0].fanout {
            fanouts += 1;
            assert_eq!(
                (f.subscribers, f.published, f.deliveries),
                (10, 100, 1000),
                "{}",
                r.variant.label
            );
            assert_eq!(
                (f.missed, f.disordered, f.cut),
                (0, 0, 0),
                "{}",
                r.variant.label
            );
            assert!(r.reps[0].latency.is_some(), "{}", r.variant.label);
        }
    }
    let pushed = TARGETS
        .iter()
        .filter(|t| t.workloads.contains(&"fanout"))
        .count();
    assert!(pushed >= 5, "ws, wss, h2ws, sse-h2 and wt push to the page");
    assert_eq!(fanouts, pushed, "{stderr}");
    assert!(out.join("report.md").is_file());
    let _ = std::fs::remove_dir_all(&out);
}

/// The limits experiment with small counts: every WebSocket opens below the browser's cap,
/// HTTP/1.1 runs at most six requests to a host at once, HTTP/2 and HTTP/3 run them all.
#[tokio::test(flavor = "multi_thread")]
async fn small_limits_experiment() {
    if chromium().is_none() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let out = out_dir("browser-limits");
    let o = wirelab(&[
        "browser",
        "--limits",
        "--ws-count",
        "20",
        "--fetch-count",
        "8",
        "--fetch-ms",
        "1000",
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "wirelab browser --limits failed:\n{stderr}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("limits.json")).unwrap()).unwrap();
    assert_eq!(v["ws_one_host"]["opened"], 20, "{v}");
    assert_eq!(v["ws_one_host"]["failed"], 0, "{v}");
    assert_eq!(v["ws_rfc8441"]["opened"], 20, "{v}");
    let waves = |k: &str| -> Vec<u64> {
        v[k]["waves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    let h1 = waves("fetch_h1");
    assert_eq!(h1.iter().sum::<u64>(), 8, "{v}");
    assert!(h1[0] <= 6 && h1.len() >= 2, "{h1:?}");
    for k in ["fetch_h2", "fetch_h3"] {
        assert_eq!(waves(k).iter().sum::<u64>(), 8, "{k}: {v}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Without Chromium the command says how to install it (no browser needed for this test).
#[tokio::test]
async fn missing_chromium_says_how_to_install_it() {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wirelab"));
    c.args([
        "browser",
        "--quick",
        "--out",
        out_dir("nobrowser").to_str().unwrap(),
    ])
    .env("PATH", "/nonexistent")
    .env_remove("WIRELAB_CHROMIUM")
    .kill_on_drop(true);
    let o = tokio::time::timeout(BOUND, c.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("apt-get install -y --no-install-recommends chromium"),
        "{e}"
    );
}
