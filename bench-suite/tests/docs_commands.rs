//! The book's command examples, run against the built `wirelab`, so they cannot drift.
//!
//! # Convention
//!
//! A fenced `sh` block in `docs/src/*.md` or `README.md` is tested when the line right before
//! its opening fence is the HTML comment `<!-- docs-test -->` (invisible in the rendered book):
//!
//! ````text
//! <!-- docs-test -->
//! ```sh
//! wirelab serve --cert-out /tmp/c.pem                # comments are fine
//! wirelab client -t h3 -c 127.0.0.1:7706 --ca /tmp/c.pem
//! ```
//! ````
//!
//! Each line of a tested block, in order (blank and comment lines ignored, `\` continuations
//! joined):
//!
//! - `wirelab`, `target/release/wirelab` and `cargo run --release -p wirelab --` all mean the
//!   binary under test (`CARGO_BIN_EXE_wirelab`); leading `VAR=value` words are kept; a leading
//!   `sudo` marks a line that needs root. The line runs under `sh -c`.
//! - `serve` starts in the background (a trailing `&` is optional), must print `serving` within
//!   30 s, and stays up for the rest of the block; at the block's end it gets SIGTERM and must
//!   exit 0 within 15 s. A literal `PID` in a later line (`/tmp/wirelab-cert-PID.pem`) becomes
//!   the process id of the last `serve` that wrote its certificate under that name.
//! - `client`, `run --list`, `--help` and `--version` run in full and must exit 0 (120 s at
//!   most each).
//! - Long-running examples are checked for argument validity only, not run in full:
//!   `run` without `--list` runs with `--list` appended (clap parses every argument and the
//!   transport ids; the scenario names given to `--scenario` are then checked against the list;
//!   with `--link` the link is started and stopped, so that needs root);
//!   `report`, `compare`, `link`, `hol` and `browser` run with `--help` appended (clap rejects an unknown
//!   option or a value that does not parse before it prints the help, but does not check
//!   values that are validated later, such as `hol --only` names).
//! - A line that needs root is skipped without root, visibly, through
//!   `wirelab_test_support::skip(Need::Root, …)` (a failure under `WIRELAB_REQUIRE_ROOT=1`).
//! - A line that is not a wirelab invocation (`cargo bench`, `curl`, `python3`) is listed as not
//!   checked. Blocks with placeholders that cannot run (`-t T -c ADDR`) are not marked.
//!
//! The book names fixed ports (7700-7706, 9000) and paths under `/tmp`; the test runs each
//! block on ports the OS has free (the book's ports mapped onto them, and `--listen` added to a
//! `serve` that relies on the default), and with `/tmp/` mapped to a fresh directory of its
//! own (`TMPDIR` too, where `serve` writes its certificate), so it never meets another
//! process's ports or files.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wirelab_test_support::{is_root, skip, Need};

const MARKER: &str = "<!-- docs-test -->";
const RUN_LIMIT: Duration = Duration::from_secs(120);
const SERVE_READY: Duration = Duration::from_secs(30);
const SERVE_STOP: Duration = Duration::from_secs(15);

/// One tested block: where it is and its command lines.
#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    commands: Vec<String>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench-suite has a parent")
        .to_path_buf()
}

/// Tested blocks of one Markdown text.
fn blocks(file: &str, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == MARKER {
            let fence = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
            assert!(
                fence == "```sh",
                "{file}:{}: `{MARKER}` must be followed by a ```sh fence, found {fence:?}",
                i + 1
            );
            let start = i + 2;
            let mut j = start;
            let mut commands = Vec::new();
            let mut pending = String::new();
            while j < lines.len() && lines[j].trim() != "```" {
                let l = lines[j].trim_end();
                if let Some(head) = l.strip_suffix('\\') {
                    pending.push_str(head);
                    pending.push(' ');
                } else {
                    pending.push_str(l);
                    let cmd = strip_comment(&pending).trim().to_string();
                    if !cmd.is_empty() {
                        commands.push(cmd);
                    }
                    pending.clear();
                }
                j += 1;
            }
            assert!(j < lines.len(), "{file}:{}: unclosed fence", i + 2);
            out.push(Block {
                file: file.to_string(),
                line: i + 1,
                commands,
            });
            i = j;
        }
        i += 1;
    }
    out
}

/// The line without a trailing `# comment` (a `#` after whitespace, outside quotes).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// How a line is checked.
#[derive(Debug, PartialEq)]
enum Action {
    /// Start in the background until the block ends.
    Serve,
    /// Run to completion.
    Run,
    /// Run with this argument appended (argument validity only).
    Parse(&'static str),
}

/// A line made runnable: the shell text, whether it needs root, what to do.
#[derive(Debug)]
struct Line {
    shell: String,
    root: bool,
    action: Action,
    subcommand: String,
}

/// `None` when the line is not a wirelab invocation.
fn prepare(cmd: &str, bin: &Path) -> Option<Line> {
    let cmd = cmd.trim().trim_end_matches('&').trim_end();
    let mut rest = cmd;
    let mut env = Vec::new();
    loop {
        let word = rest.split_whitespace().next()?;
        if word.contains('=') && !word.starts_with('-') {
            env.push(word);
            rest = rest[word.len()..].trim_start();
        } else {
            break;
        }
    }
    let root = if let Some(r) = rest.strip_prefix("sudo ") {
        rest = r.trim_start();
        true
    } else {
        false
    };
    let args = [
        "cargo run --release -p wirelab -- ",
        "target/release/wirelab ",
        "wirelab ",
    ]
    .iter()
    .find_map(|p| rest.strip_prefix(p))?
    .trim_start();
    let subcommand = args
        .split_whitespace()
        .find(|w| !w.starts_with('-'))
        .unwrap_or("")
        .to_string();
    let has = |flag: &str| args.split_whitespace().any(|w| w == flag);
    let action = if has("--help") || has("-h") || has("--version") || has("-V") {
        Action::Run
    } else {
        match subcommand.as_str() {
            "serve" => Action::Serve,
            "client" | "transports" => Action::Run,
            "run" if has("--list") => Action::Run,
            "run" => Action::Parse("--list"),
            "report" | "compare" | "link" | "hol" | "browser" | "resume" => Action::Parse("--help"),
            other => panic!("`{cmd}`: no rule for subcommand {other:?}; add one to this test"),
        }
    };
    let bin = bin.display().to_string();
    let mut shell = String::new();
    for e in env {
        shell.push_str(e);
        shell.push(' ');
    }
    shell.push_str(&format!("exec '{bin}' {args}"));
    if let Action::Parse(extra) = action {
        shell.push(' ');
        shell.push_str(extra);
    }
    Some(Line {
        shell,
        root,
        action,
        subcommand,
    })
}

/// Waits for `child` at most `limit`; kills it past that.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A background `serve`, stopped (SIGTERM, then checked) at the end of its block or killed on
/// a panic.
struct Server {
    child: Option<Child>,
    what: String,
    output: mpsc::Receiver<String>,
}

impl Server {
    fn start(shell: &str, what: &str) -> (Server, Option<u32>) {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(shell)
            .env("TMPDIR", scratch())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("`{what}`: cannot start: {e}"));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {l}"));
            }
        });
        let server = Server {
            child: Some(child),
            what: what.to_string(),
            output: rx,
        };
        let deadline = Instant::now() + SERVE_READY;
        let mut seen = Vec::new();
        let mut cert_pid = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.output.recv_timeout(left) {
                Ok(l) => {
                    if let Some(pid) = cert_pid_of(&l) {
                        cert_pid = Some(pid);
                    }
                    let ready = l.starts_with("serving");
                    seen.push(l);
                    if ready {
                        break;
                    }
                }
                Err(_) => panic!(
                    "`{what}`: not serving within {SERVE_READY:?} (ports the book names must be free); output:\n{}",
                    seen.join("\n")
                ),
            }
        }
        (server, cert_pid)
    }

    fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let st = wait_bounded(&mut child, SERVE_STOP);
        let rest: Vec<String> = self.output.try_iter().collect();
        match st {
            Some(st) if st.success() => {}
            Some(st) => panic!(
                "`{}`: exited {st} after SIGTERM:\n{}",
                self.what,
                rest.join("\n")
            ),
            None => panic!(
                "`{}`: still running {SERVE_STOP:?} after SIGTERM",
                self.what
            ),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The pid in a `self-signed certificate: …/wirelab-cert-<pid>.pem` line.
fn cert_pid_of(line: &str) -> Option<u32> {
    let rest = line.split("wirelab-cert-").nth(1)?;
    rest.split(".pem").next()?.parse().ok()
}

/// This test's own directory for what the book puts under `/tmp`.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wirelab-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// The ports the book names: `serve`'s default consecutive ports (one per listed transport),
/// and the one of its TLS example.
const BOOK_BASE: u16 = 7700;
const BOOK_PORTS: u16 = wirelab::transports::LIST.len() as u16;
const BOOK_OTHER: u16 = 9000;

/// A first port of `n` consecutive ones that are free for TCP and UDP on 127.0.0.1 now.
fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an OS-chosen port")
            .port();
        if u32::from(p) + u32::from(n) > 65_535 {
            continue;
        }
        let free = (p..p + n).all(|q| {
            std::net::TcpListener::bind(("127.0.0.1", q)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", q)).is_ok()
        });
        if free {
            return p;
        }
    }
    panic!("no {n} consecutive free ports found");
}

/// `cmd` with the book's ports mapped to `base` (7700 + i to base + i) and `other` (9000),
/// `/tmp/` to this test's directory, and `--listen 127.0.0.1:base` added to a `serve` that
/// relies on the default address.
fn localise(cmd: &str, base: u16, other: u16) -> String {
    let mut out = String::new();
    let mut rest = cmd;
    // A port is 4 digits right after ':'.
    while let Some(i) = rest.find(':') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(p) = digits.parse::<u16>() {
            let mapped = if (BOOK_BASE..BOOK_BASE + BOOK_PORTS).contains(&p) {
                Some(base + (p - BOOK_BASE))
            } else if p == BOOK_OTHER {
                Some(other)
            } else {
                None
            };
            if let Some(m) = mapped {
                out.push_str(&m.to_string());
                rest = &rest[digits.len()..];
            }
        }
    }
    out.push_str(rest);
    let mut out = out.replace("/tmp/", &format!("{}/", scratch().display()));
    let words: Vec<&str> = out.split_whitespace().collect();
    let serves = words
        .windows(2)
        .any(|w| w[0].ends_with("wirelab") && w[1] == "serve")
        || words.windows(2).any(|w| w == ["--", "serve"]);
    if serves && !words.iter().any(|w| *w == "--listen" || *w == "-l") {
        // Before a trailing comment or `&`.
        let cut = out.find(" #").unwrap_or(out.len());
        let (head, tail) = out.split_at(cut);
        let head = head.trim_end();
        let (head, amp) = match head.strip_suffix('&') {
            Some(h) => (h.trim_end().to_string(), " &"),
            None => (head.to_string(), ""),
        };
        out = format!("{head} --listen 127.0.0.1:{base}{amp}{tail}");
    }
    out
}

/// Runs `shell` to completion; returns its stdout, or panics with its output.
fn run(shell: &str, what: &str) -> String {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(shell)
        .env("TMPDIR", scratch())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("`{what}`: cannot start: {e}"));
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let st = wait_bounded(&mut child, RUN_LIMIT);
    let (stdout, stderr) = (
        t_out.join().unwrap_or_default(),
        t_err.join().unwrap_or_default(),
    );
    match st {
        Some(st) if st.success() => stdout,
        Some(st) => panic!("`{what}`: exited {st}\nstdout:\n{stdout}\nstderr:\n{stderr}"),
        None => panic!("`{what}`: not done within {RUN_LIMIT:?}\nstderr:\n{stderr}"),
    }
}

/// The scenario names a `run` line asks for that are not paths.
fn scenario_names(cmd: &str) -> Vec<String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let mut names = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let value = if let Some(v) = w.strip_prefix("--scenario=") {
            Some(v)
        } else if *w == "--scenario" {
            words.get(i + 1).copied()
        } else {
            None
        };
        if let Some(v) = value {
            names.extend(
                v.split(',')
                    .filter(|n| !n.ends_with(".toml"))
                    .map(str::to_string),
            );
        }
    }
    names
}

fn book_files() -> Vec<PathBuf> {
    let root = repo();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs/src"))
        .expect("docs/src exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files.push(root.join("README.md"));
    files
}

#[test]
fn convention_parses() {
    let text = "a\n<!-- docs-test -->\n```sh\nwirelab serve -t ws   # c\n\nsudo wirelab hol \\\n  --quick\n```\n";
    let b = blocks("x.md", text);
    assert_eq!(b.len(), 1);
    assert_eq!(
        b[0].commands,
        vec!["wirelab serve -t ws", "sudo wirelab hol    --quick"]
    );
    let bin = Path::new("/bin/wl");
    let l = prepare(
        "SSLKEYLOGFILE=/tmp/k wirelab client -t h3 -c 1.2.3.4:5",
        bin,
    )
    .unwrap();
    assert_eq!(
        l.shell,
        "SSLKEYLOGFILE=/tmp/k exec '/bin/wl' client -t h3 -c 1.2.3.4:5"
    );
    assert_eq!(l.action, Action::Run);
    let l = prepare(
        "sudo target/release/wirelab hol --only \"tcp shared,quic\"",
        bin,
    )
    .unwrap();
    assert!(l.root);
    assert_eq!(l.action, Action::Parse("--help"));
    let l = prepare("cargo run --release -p wirelab -- run --quick", bin).unwrap();
    assert_eq!(l.shell, "exec '/bin/wl' run --quick --list");
    assert!(prepare("cargo bench -p wirelab", bin).is_none());
    assert_eq!(strip_comment("a '#x' b # c"), "a '#x' b ");
    assert_eq!(
        cert_pid_of("self-signed certificate: /tmp/wirelab-cert-42.pem (clients"),
        Some(42)
    );
    assert_eq!(
        scenario_names("run --scenario echo_64B_c8_shared,x.toml,setup_1rtt"),
        vec!["echo_64B_c8_shared", "setup_1rtt"]
    );
}

#[test]
fn book_ports_and_paths_are_mapped() {
    let dir = scratch().display().to_string();
    assert_eq!(
        localise(
            "wirelab client -t h3 -c 127.0.0.1:7706 --ca /tmp/c.pem",
            40000,
            50000
        ),
        format!("wirelab client -t h3 -c 127.0.0.1:40006 --ca {dir}/c.pem")
    );
    assert_eq!(
        localise(
            "wirelab serve --cert-out /tmp/c.pem   # all seven",
            40000,
            50000
        ),
        format!("wirelab serve --cert-out {dir}/c.pem --listen 127.0.0.1:40000 # all seven")
    );
    assert_eq!(
        localise(
            "wirelab serve -t ws --listen 0.0.0.0:9000 --tls &",
            40000,
            50000
        ),
        "wirelab serve -t ws --listen 0.0.0.0:50000 --tls &"
    );
    assert_eq!(
        localise("cargo run --release -p wirelab -- serve &", 40000, 50000),
        "cargo run --release -p wirelab -- serve --listen 127.0.0.1:40000 &"
    );
    assert_eq!(
        localise("wirelab run --link rtt=40ms", 1, 2),
        "wirelab run --link rtt=40ms"
    );
}

#[test]
fn book_commands_work() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_wirelab"));
    let root = repo();
    let mut all = Vec::new();
    for f in book_files() {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let name = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
        all.extend(blocks(&name, &text));
    }
    assert!(
        !all.is_empty(),
        "no `{MARKER}` blocks in the book: the test would check nothing"
    );
    let started = Instant::now();
    let (mut ran, mut parsed, mut skipped, mut unchecked) = (0, 0, 0, 0);
    let mut scenario_list: Option<String> = None;
    for b in &all {
        eprintln!("{}:{}", b.file, b.line);
        let mut servers: Vec<Server> = Vec::new();
        let mut cert_pid: Option<u32> = None;
        let (base, other) = (free_ports(BOOK_PORTS), free_ports(1));
        for cmd in &b.commands {
            let cmd = localise(cmd, base, other);
            let cmd = match cert_pid {
                Some(pid) => cmd.replace("wirelab-cert-PID", &format!("wirelab-cert-{pid}")),
                None => cmd.clone(),
            };
            let what = format!("{}:{}: {cmd}", b.file, b.line);
            let Some(line) = prepare(&cmd, &bin) else {
                eprintln!("  not checked (not a wirelab command): {cmd}");
                unchecked += 1;
                continue;
            };
            if line.root && !is_root() {
                skip(Need::Root, &format!("docs command needs root: {cmd}"));
                skipped += 1;
                continue;
            }
            match line.action {
                Action::Serve => {
                    let (s, pid) = Server::start(&line.shell, &what);
                    if pid.is_some() {
                        cert_pid = pid;
                    }
                    servers.push(s);
                    eprintln!("  serving: {cmd}");
                    ran += 1;
                }
                Action::Run => {
                    run(&line.shell, &what);
                    eprintln!("  ran: {cmd}");
                    ran += 1;
                }
                Action::Parse(extra) => {
                    let out = run(&line.shell, &what);
                    if line.subcommand == "run" {
                        let list = scenario_list.get_or_insert(out);
                        for n in scenario_names(&cmd) {
                            assert!(
                                list.contains(&format!("| {n} |")),
                                "{what}: scenario {n:?} is not in `wirelab run --list`"
                            );
                        }
                    }
                    eprintln!("  arguments valid ({extra}, not run in full): {cmd}");
                    parsed += 1;
                }
            }
        }
        // Stop in reverse order of start.
        while let Some(s) = servers.pop() {
            s.stop();
        }
    }
    eprintln!(
        "docs commands: {} blocks; {ran} run, {parsed} checked for valid arguments, {skipped} skipped (root), {unchecked} not wirelab commands; {:.1} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(scratch());
}
