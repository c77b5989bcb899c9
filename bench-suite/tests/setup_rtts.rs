//! Setup at the protocol's minimum: over an emulated path of a known RTT, the round trips from
//! nothing to the first echo, per transport, mode and security, at 1-RTT and with 0-RTT. Each
//! count below is derived in the methodology chapter ("Setup at the protocol's minimum"): the
//! fewest the RFCs allow, or, where our count is higher, the rule that stops it. A client that
//! starts waiting for something the protocol does not need (a response head, a setting) adds a
//! round trip and fails here. Needs root (the link emulator); skips visibly without it.

use std::collections::BTreeMap;
use std::process::Command;

/// The emulated RTT: long beside a debug build's handshake CPU (a few ms), so `p50 / RTT`
/// rounds to the count.
const RTT_MS: f64 = 50.0;

/// `(variant label, 0-RTT)` -> round trips to the first echo. Every variant `wirelab run --tls`
/// measures in the setup scenarios must be here, and every entry must be measured.
const EXPECTED: &[(&str, bool, u32)] = &[
    ("tcp", false, 2),
    ("ws", false, 3),
    ("ws+tls", false, 4),
    ("h1", false, 2),
    ("h1+tls", false, 3),
    ("h2 rr", false, 3),
    ("h2 duplex", false, 3),
    ("h2c rr", false, 2),
    ("h2c duplex", false, 2),
    // RFC 8441 §3: no extended CONNECT before the server's SETTINGS; the server's SETTINGS
    // leave after the client's TLS Finished (no 0.5-RTT data), so one more than the minimum.
    ("h2ws", false, 5),
    ("h2ws (h2c)", false, 4),
    ("quic", false, 2),
    ("h3 rr", false, 2),
    ("h3 duplex", false, 2),
    // The event stream must be attached before the first POST (the server refuses a POST for a
    // stream nobody listens to).
    ("sse-h1", false, 4),
    ("sse-h2", false, 4),
    // WebTransport: no CONNECT before the server's SETTINGS, which wtransport's server sends
    // only after the client's Finished (no 0.5-RTT data), then the 200 before the first stream.
    ("wt", false, 4),
    ("quic", true, 1),
    ("h3 rr", true, 1),
    // POST /duplex is not replay-safe: the server answers it once the handshake is confirmed,
    // and our client sends on a stream opened in 0-RTT only after that answer.
    ("h3 duplex", true, 3),
];

#[test]
fn setup_takes_the_expected_round_trips_per_transport() {
    if !wirelab_test_support::root("the link emulator (namespaces, TUN devices)") {
        return;
    }
    let out = std::env::temp_dir().join(format!("wirelab-setup-rtts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_wirelab"))
        .args(["run", "--link", &format!("rtt={RTT_MS}ms"), "--tls"])
        .args([
            "--scenario",
            "setup_1rtt,setup_0rtt",
            "--reps",
            "1",
            "--warmup",
            "0",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("wirelab runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut measured = BTreeMap::new();
    for scenario in ["setup_1rtt", "setup_0rtt"] {
        for entry in std::fs::read_dir(out.join(scenario)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let r: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let label = r["variant"]["label"].as_str().unwrap().to_string();
                let zero_rtt = r["scenario"]["zero_rtt"].as_bool().unwrap_or(false);
                let p50_ms = r["summary"]["p50_us"]["median"].as_f64().unwrap() / 1e3;
                measured.insert((label, zero_rtt), p50_ms / RTT_MS);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    let mut wrong = Vec::new();
    for &(label, zero_rtt, rtts) in EXPECTED {
        match measured.remove(&(label.to_string(), zero_rtt)) {
            None => wrong.push(format!("{label} (0-RTT {zero_rtt}): not measured")),
            Some(got) if (got - f64::from(rtts)).abs() >= 0.5 => wrong.push(format!(
                "{label} (0-RTT {zero_rtt}): {got:.2} round trips, expected {rtts}"
            )),
            Some(got) => eprintln!("{label} (0-RTT {zero_rtt}): {got:.2} round trips"),
        }
    }
    for ((label, zero_rtt), got) in measured {
        wrong.push(format!(
            "{label} (0-RTT {zero_rtt}): {got:.2} round trips, but no expected count: derive it \
             (methodology chapter) and add it to EXPECTED"
        ));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
