//! `wirelab resume` end to end on loopback, over every transport that serves resume messages:
//! a cut inside the window is resumed with nothing lost and the outage replayed; a server
//! restart is answered `epoch changed`; an absence longer than the window `outside window`;
//! an address change is migrated by QUIC (no new connection) and resumed by TCP transports.
//! Every wait is bounded (the command's own bounds, and this test's); the outage is the
//! experiment's parameter, not synchronisation.

use std::time::Duration;

use serde_json::Value;

async fn wirelab_resume(
    out: &std::path::Path,
    outage_ms: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wirelab"));
    c.kill_on_drop(true)
        .args([
            "resume",
            "--reps",
            "1",
            "--messages",
            "2600",
            "--break-at",
            "100",
            "--cpu",
            "free",
            "--outage-ms",
            outage_ms,
            "--out",
        ])
        .arg(out)
        .args(extra);
    tokio::time::timeout(Duration::from_secs(600), c.output())
        .await
        .expect("wirelab resume finished within 10 minutes")
        .expect("wirelab runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_break_gets_its_answer_and_a_cut_loses_nothing() {
    let out = std::env::temp_dir().join(format!("wirelab-resume-{}", std::process::id()));
    let o = wirelab_resume(&out, "50", &[]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "wirelab resume failed:\n{stderr}");
    let file: Value =
        serde_json::from_slice(&std::fs::read(out.join("resume.json")).unwrap()).unwrap();
    assert_eq!(file["schema"], "wirelab.resume/1");
    let rows = file["rows"].as_array().unwrap();
    let transports: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    for t in ["tcp", "ws", "h2 duplex", "h2ws", "quic", "h3 duplex", "wt"] {
        assert!(transports.contains(t), "{t} missing: {transports:?}");
    }
    // cut, restart, window, migrate (dark needs the link and is left out, saying so).
    assert_eq!(rows.len(), 4 * transports.len());
    assert!(stderr.contains("the dark break needs --link"), "{stderr}");
    for r in rows {
        let label = format!("{} {}", r["transport"], r["kind"]);
        assert!(r["errors"].as_array().unwrap().is_empty(), "{label}: {r}");
        let run = &r["runs"][0];
        assert_eq!(run["answer_as_expected"], true, "{label}: {run}");
        assert_eq!(run["lost"], 0, "{label}: {run}");
        match r["kind"].as_str().unwrap() {
            "cut" => {
                assert_eq!(run["answer"], "ok", "{label}");
                // Every offset processed once; what was produced while away came from the
                // window; no duplicate reached the application.
                assert_eq!(run["processed"], 2600, "{label}: {run}");
                assert!(run["replayed"].as_u64().unwrap() > 0, "{label}: {run}");
                assert!(run["resume_ms"].as_f64().is_some(), "{label}: {run}");
            }
            "migrate" => {
                // QUIC moves its connection to the new address (no reconnection); the others
                // open a new connection and resume. Either way every offset arrives once.
                let quic = ["quic", "h3 duplex"].contains(&r["transport"].as_str().unwrap());
                let (answer, attempts) = if quic { ("migrated", 0) } else { ("ok", 1) };
                assert_eq!(run["answer"], answer, "{label}: {run}");
                assert_eq!(run["attempts"], attempts, "{label}: {run}");
                assert_eq!(run["processed"], 2600, "{label}: {run}");
                assert_eq!(run["duplicates"], 0, "{label}: {run}");
                assert!(run["resume_ms"].as_f64().is_some(), "{label}: {run}");
            }
            "restart" => assert_eq!(run["answer"], "epoch changed", "{label}"),
            "window" => assert_eq!(run["answer"], "outside window", "{label}"),
            other => panic!("unknown kind {other}"),
        }
    }
    assert!(out.join("report.md").is_file());
    let _ = std::fs::remove_dir_all(&out);
}

/// An echo stream across a cut, a server restart and an address change: the client sends
/// again what was unanswered, every message is answered once, none lost; a window break does
/// not apply (no server window) and is left out, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_stream_loses_nothing_across_breaks() {
    let out = std::env::temp_dir().join(format!("wirelab-resume-echo-{}", std::process::id()));
    let o = wirelab_resume(
        &out,
        "50",
        &["--workload", "echo", "--transports", "tcp,ws,h2,quic,wt"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "wirelab resume failed:\n{stderr}");
    let file: Value =
        serde_json::from_slice(&std::fs::read(out.join("resume.json")).unwrap()).unwrap();
    assert_eq!(file["spec"]["workload"], "echo");
    let rows = file["rows"].as_array().unwrap();
    // cut, restart, migrate on 5 transports (window and dark left out).
    assert_eq!(rows.len(), 15, "{file}");
    let skipped = file["skipped"].to_string();
    assert!(
        skipped.contains("window") && skipped.contains("dark"),
        "{skipped}"
    );
    for r in rows {
        let label = format!("{} {}", r["transport"], r["kind"]);
        assert!(r["errors"].as_array().unwrap().is_empty(), "{label}: {r}");
        let run = &r["runs"][0];
        assert_eq!(run["answer_as_expected"], true, "{label}: {run}");
        assert_eq!(run["lost"], 0, "{label}: {run}");
        assert_eq!(run["processed"], 2600, "{label}: {run}");
        assert!(run["resume_ms"].as_f64().is_some(), "{label}: {run}");
        let migrated = r["kind"] == "migrate" && r["transport"] == "quic";
        let answer = if migrated { "migrated" } else { "resent" };
        assert_eq!(run["answer"], answer, "{label}: {run}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[tokio::test]
async fn a_cut_outside_the_window_is_refused_before_anything_runs() {
    let out = std::env::temp_dir().join(format!("wirelab-resume-bad-{}", std::process::id()));
    let o = wirelab_resume(&out, "5000", &["--kinds", "cut"]).await;
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("not inside the server's window"),
        "{stderr}"
    );
}

/// The path goes dark (the link emulator drops everything both ways for 300 ms) and returns:
/// TCP and QUIC keep their connections, nothing is lost, and the stream goes on by the
/// transport's own recovery. Then the path goes dark for 50 ms and returns under a new client
/// address: QUIC migrates its connection, TCP reconnects and resumes, nothing is lost. Needs
/// root (the link emulator); SKIPPED otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dark_path_is_held_by_tcp_and_quic() {
    if !wirelab_test_support::root("the dark break (the link emulator: namespaces, TUN devices)") {
        return;
    }
    let out = std::env::temp_dir().join(format!("wirelab-resume-dark-{}", std::process::id()));
    let o = wirelab_resume(
        &out,
        "50",
        &[
            "--kinds",
            "dark,migrate",
            "--dark-ms",
            "300",
            "--transports",
            "tcp,quic",
            "--link",
            "rtt=20ms,seed=1",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "wirelab resume failed:\n{stderr}");
    let file: Value =
        serde_json::from_slice(&std::fs::read(out.join("resume.json")).unwrap()).unwrap();
    let rows = file["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{file}");
    for r in rows {
        let run = &r["runs"][0];
        if r["kind"] == "migrate" {
            let quic = r["transport"] == "quic";
            assert_eq!(run["answer"], if quic { "migrated" } else { "ok" }, "{r}");
            assert_eq!(run["answer_as_expected"], true, "{r}");
            assert_eq!(run["lost"], 0, "{r}");
            assert_eq!(run["duplicates"], 0, "{r}");
            assert_eq!(run["processed"], 2600, "{r}");
            assert!(run["outage_ms"].as_f64().is_some_and(|m| m >= 50.0), "{r}");
            continue;
        }
        assert!(run["answer"].as_str().unwrap().starts_with("held"), "{r}");
        assert_eq!(run["answer_as_expected"], true, "{r}");
        assert_eq!(run["lost"], 0, "{r}");
        assert_eq!(run["attempts"], 0, "{r}");
        // Held to the end: the stream went on after the path returned. (Should the server's
        // window run out first, it says so explicitly: "held, then outside window".)
        if run["answer"] == "held" {
            assert!(run["resume_ms"].as_f64().is_some_and(|m| m > 0.0), "{r}");
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}
