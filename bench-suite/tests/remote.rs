//! The `remote` placement across a real network path: a server in its own network namespace,
//! joined to this one by a veth pair (the kernel's own path, no emulator; addresses from
//! 198.18.0.0/15, the benchmarking range of RFC 2544), and `wirelab run --quick --server`
//! against its control endpoint.
//!
//! Needs root (namespaces, veth): without it the test says SKIPPED, and CI
//! (`WIRELAB_REQUIRE_ROOT=1`) fails it.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

const BOUND: Duration = Duration::from_secs(30);

/// A network namespace with one end of a veth pair; deleted on drop (which deletes the pair).
struct Netns {
    name: String,
    host_addr: Ipv4Addr,
    ns_addr: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new() -> Self {
        // A /30 of 198.18.0.0/15 and names of our own, from the process id, so a run never
        // meets another's leftovers.
        let pid = std::process::id();
        let idx = pid % 16384;
        let (third, fourth) = ((idx / 64) as u8, ((idx % 64) * 4) as u8);
        let host_addr = Ipv4Addr::new(198, 18, third, fourth + 1);
        let ns_addr = Ipv4Addr::new(198, 18, third, fourth + 2);
        let name = format!("wl-remote-{pid}");
        let (a, b) = (format!("wlr{pid}a"), format!("wlr{pid}b"));
        ip(&["netns", "add", &name]);
        let ns = Self {
            name,
            host_addr,
            ns_addr,
        };
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &b, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &a]);
        ip(&["link", "set", &a, "up"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{ns_addr}/30"),
            "dev",
            &b,
        ]);
        ip(&["-n", &ns.name, "link", "set", &b, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_quick_against_a_server_across_a_veth_pair() {
    if !wirelab_test_support::root("the remote placement over a veth pair (namespaces)") {
        return;
    }
    if wirelab_test_support::find_program(
        "ip",
        "the namespace and veth set-up",
        "apt-get install iproute2",
    )
    .is_none()
    {
        return;
    }
    let ns = Netns::new();
    let exe = env!("CARGO_BIN_EXE_wirelab");
    let listen = format!("{}:0", ns.ns_addr);
    let mut server = tokio::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, exe, "serve"])
        .args(["--listen", &listen, "--control", &listen])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut printed = String::new();
    let control: SocketAddr = loop {
        let mut line = String::new();
        let n = tokio::time::timeout(BOUND, out.read_line(&mut line))
            .await
            .expect("serve prints its control address")
            .unwrap();
        assert!(n > 0, "serve exited: {printed}");
        printed.push_str(&line);
        if let Some(rest) = line.strip_prefix("control listening on http://") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let fingerprint = printed
        .lines()
        .find_map(|l| l.strip_prefix("certificate sha256 "))
        .expect("serve prints its certificate's fingerprint")
        .to_string();

    // This side is not trusted to stop the server: the control endpoint only reads.
    let (code, body) = tokio::task::spawn_blocking(move || {
        wirelab::control::request(control, "POST", "/v1/shutdown").unwrap()
    })
    .await
    .unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains(&ns.host_addr.to_string()), "{body}");

    let dir = std::env::temp_dir().join(format!("wirelab-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(exe)
            .args(["run", "--quick", "--reps", "2", "--warmup", "0"])
            .args(["--server", &control.to_string()])
            .arg("--out")
            .arg(&dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run --server finishes")
    .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    // The user was shown the fingerprint the server printed.
    assert!(err.contains(&fingerprint), "{err}");

    let mut transports = std::collections::BTreeSet::new();
    let mut server_cpu = 0;
    let mut files = 0;
    for scenario in std::fs::read_dir(&dir).unwrap() {
        let scenario = scenario.unwrap().path();
        if !scenario.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&scenario).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            files += 1;
            let p = &r["placement"];
            assert_eq!(p["kind"], "remote", "{}", f.display());
            assert_eq!(p["server"], control.to_string());
            // One kernel on both sides of the veth pair: one clock.
            assert_eq!(p["clock"], "shared");
            assert!(p["server_env"]["kernel"].is_string());
            transports.insert(r["variant"]["transport"].as_str().unwrap().to_string());
            for rep in r["reps"].as_array().unwrap() {
                if let Some(ns) = rep["cost"]["server_cpu_ns"].as_u64() {
                    assert!(ns > 0, "{}", f.display());
                    server_cpu += 1;
                }
            }
        }
    }
    let listed: std::collections::BTreeSet<_> = wirelab::transports::LIST
        .iter()
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(transports, listed, "every served transport measured");
    assert!(files >= listed.len(), "{files} result files");
    assert!(server_cpu > 0, "no server CPU figures");
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        report.contains("| placement | remote (clock shared; threads client side: "),
        "{report}"
    );
    assert!(report.contains("over a real network path"), "{report}");

    // SIGTERM through `ip netns exec`'s child: the server stops cleanly.
    let pid = server.id().unwrap().to_string();
    let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success());
    let status = tokio::time::timeout(BOUND, server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}
