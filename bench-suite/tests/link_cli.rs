//! The link emulator from the command line: a clear error without privileges, nothing left
//! behind after Ctrl-C, bad `--link` specs refused. The root cases skip visibly without root
//! (and fail under `WIRELAB_REQUIRE_ROOT=1`, as in CI).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wirelab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wirelab"))
}

#[track_caller]
fn root() -> bool {
    wirelab_test_support::root("the link emulator (namespaces, TUN devices)")
}

#[test]
fn without_privileges_the_error_names_what_is_missing() {
    if !wirelab_test_support::is_root() {
        // Already unprivileged: run directly (this is the test, not a skip).
        let out = wirelab()
            .args(["link", "check", "--quick"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("root") && err.contains("CAP_NET_ADMIN"),
            "{err}"
        );
        return;
    }
    // As root: drop to nobody with no capabilities (util-linux setpriv). Nothing host-wide
    // may change on the way to the error: the allowed congestion-control list is the one
    // sysctl the link writes outside its namespaces.
    let allowed_key = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";
    let allowed_before = std::fs::read_to_string(allowed_key).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_wirelab"))
        .args(["hol", "--quick", "--out", "/tmp/wirelab-never-written"])
        .output()
        .expect("setpriv (util-linux) runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("error: the link emulator needs root or CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("CAP_NET_ADMIN"), "{err}");
    assert!(!err.contains("Permission denied"), "{err}");
    assert_eq!(
        std::fs::read_to_string(allowed_key).unwrap(),
        allowed_before,
        "the failed run changed a host-wide sysctl"
    );
}

#[test]
fn bad_link_specs_are_refused_before_anything_starts() {
    for (spec, says) in [
        ("rtt=40", "unit"),
        ("loss=2", "[0, 100%)"),
        ("foo=1", "unknown key"),
    ] {
        let out = wirelab()
            .args(["run", "--quick", "--link", spec])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(says), "{spec}: {err}");
    }
}

/// Ctrl-C while the link is up: the process ends and leaves no namespace, device or
/// host setting behind.
#[test]
fn ctrl_c_leaves_nothing_behind() {
    if !root() {
        return;
    }
    let allowed =
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_allowed_congestion_control").unwrap();
    let netns_before: Vec<_> = std::fs::read_dir("/run/netns")
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    // Through `env --default-signal=INT` (GNU coreutils), which execs wirelab in its own
    // process with SIGINT's default action, whatever this test inherited: a shell that starts
    // a command in the background without job control (`cmd &` in a script, nohup) leaves
    // SIGINT ignored, and an ignored signal stays ignored across exec, so the child would
    // never see Ctrl-C.
    let mut child = Command::new("env")
        .arg("--default-signal=INT")
        .arg(env!("CARGO_BIN_EXE_wirelab"))
        .args(["link", "check", "--rates", "200"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Bounded wait for the event: the link reports it is up.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let up = lines.next().expect("a line on stderr").unwrap();
    assert!(up.starts_with("link up:"), "{up}");
    // The child's namespaces: those its threads are in and those its descriptors hold
    // (the link keeps each namespace open by a descriptor).
    let mut ns = Vec::new();
    let links = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| t.path().join("ns/net"))
        .chain(
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .flatten()
                .map(|f| f.path()),
        );
    for l in links {
        if let Ok(t) = std::fs::read_link(l) {
            let t = t.to_string_lossy().into_owned();
            if t.starts_with("net:[") && !ns.contains(&t) {
                ns.push(t);
            }
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    // No thread or descriptor of any process on the host still refers to a namespace the
    // child had: the kernel has freed them and the TUN devices in them.
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let theirs: Vec<_> = ns
        .into_iter()
        .filter(|n| *n != own.to_string_lossy())
        .collect();
    assert_eq!(
        theirs.len(),
        2,
        "the child had client and server namespaces"
    );
    let holders = wirelab_test_support::netns_holders(&theirs);
    assert!(holders.is_empty(), "namespaces live on: {holders:?}");
    // Nor did it name one (`ip netns add` would leave a file here after a kill).
    let netns_after: Vec<_> = std::fs::read_dir("/run/netns")
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(netns_before, netns_after);
    assert_eq!(
        allowed,
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_allowed_congestion_control").unwrap()
    );
}

/// `wirelab hol --qlog-dir`: one qlog file per QUIC connection and side, with the congestion
/// window over time (what `scripts/hol-trace.py --qlog` reads).
#[test]
fn hol_writes_a_qlog_per_quic_connection_side() {
    if !root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("wirelab-hol-qlog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let qlog = dir.join("qlog");
    let out = wirelab()
        .args(["hol", "--only", "quic", "--rtt", "20", "--loss", "1"])
        .args(["--random-only", "--messages", "200", "--out"])
        .arg(dir.join("results"))
        .arg("--qlog-dir")
        .arg(&qlog)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let mut sides = Vec::new();
    for e in std::fs::read_dir(&qlog).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(".sqlog"), "{name}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"congestion_window\""),
            "no window in {name}"
        );
        sides.push(name.split('-').next().unwrap().to_string());
    }
    sides.sort();
    // One cell, one connection: a client file and a server file.
    assert_eq!(sides, ["client", "server"], "{qlog:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
