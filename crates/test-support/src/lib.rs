//! Helpers shared by bucky's tests (a dev-dependency only, never published): where the workspace, its
//! binaries and the reference peers are, free loopback ports, running a peer on some input (and reading
//! carbon-c-relay's `-t` report), whisper files on a minute clock ([`minutes`]), and the whisper oracle
//! harness ([`whisper_oracle`]) that judges bucky against whisper.py and carbonate.
//!
//! A missing peer fails the test that needs it with a message saying how to install it: tests never skip.

pub mod minutes;
pub mod whisper_oracle;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The workspace root (this crate sits two levels below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("workspace root").to_owned()
}

/// The reference Python (the venv with whisper, carbonate and carbon 1.1.10): `BUCKY_ORACLE_PYTHON`, else
/// the workspace's `.venv`, both as set up by `scripts/test.sh`.
pub fn oracle_python() -> PathBuf {
    let path = std::env::var_os("BUCKY_ORACLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "reference Python {} not found (a Python with whisper, carbonate and carbon 1.1.10): run scripts/test.sh \
         once, which creates .venv from tests/oracle/requirements.txt, or set BUCKY_ORACLE_PYTHON",
        path.display()
    );
    path
}

/// A helper script of the reference peers, `tests/oracle/<name>`.
pub fn oracle_script(name: &str) -> PathBuf {
    workspace_root().join("tests/oracle").join(name)
}

/// Path of a Go peer built by `../shared/peers/build.sh` (`go-carbon`, `gg/buckyd`, `jj/bucky`, …): under
/// `$BUCKY_PEERS/bin`, else the workspace's git-ignored `.peers/bin`, where `scripts/test.sh` builds them.
pub fn go_peer(name: &str) -> PathBuf {
    let root = std::env::var_os("BUCKY_PEERS").map(PathBuf::from).unwrap_or_else(|| workspace_root().join(".peers"));
    let path = root.join("bin").join(name);
    assert!(
        path.exists(),
        "Go peer {} not found: run scripts/test.sh once (it calls ../shared/peers/build.sh .peers)",
        path.display()
    );
    path
}

/// Path of a workspace binary (`bucky`, `bucky-agent`, …), built once per test process with `cargo build`
/// so a test never runs a stale binary. (A crate's own binaries are `env!("CARGO_BIN_EXE_<name>")`.)
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join("debug").join(name);
    if !built.iter().any(|b| b == name) {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace_root())
            .args(["build", "--quiet", "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
        built.push(name.to_owned());
    }
    assert!(path.exists(), "{} missing after build", path.display());
    path
}

/// A TCP port that was free on `ip` a moment ago.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a free port")
}

/// Runs `cmd` with `input` on stdin (fed from a thread, so a peer that answers as it reads cannot block
/// on a full pipe), returning stdout; panics with the peer's stderr when it fails. `what` names it.
pub fn pipe(mut cmd: Command, input: Vec<u8>, what: &str) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{what}: {e}"));
    feeder.join().expect("feeder thread");
    assert!(out.status.success(), "{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The placement oracle `carbon-c-relay` 3.7.3: `$BUCKY_RELAY`, else Debian's package on `PATH` (which
/// `scripts/test.sh` installs); its version checked once.
pub fn carbon_c_relay() -> &'static str {
    static RELAY: OnceLock<String> = OnceLock::new();
    RELAY.get_or_init(|| {
        let bin = std::env::var("BUCKY_RELAY").unwrap_or_else(|_| "carbon-c-relay".to_owned());
        let out = Command::new(&bin).arg("-v").output().unwrap_or_else(|e| {
            panic!(
                "relay oracle missing: cannot run {bin} ({e}). Run `bash scripts/test.sh` (it installs \
                 Debian's carbon-c-relay) or set BUCKY_RELAY."
            )
        });
        let version = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(version.contains("v3.7.3"), "the relay oracle must be carbon-c-relay 3.7.3, got {version:?}");
        bin
    })
}

/// Runs `carbon-c-relay -t -f config` on `names` (one per line) and returns its report of where each
/// name goes (read it with [`parse_relay_test`]). The resolver gives up after one 1 s try, since an
/// unanswered query otherwise stalls the relay 5 s. `what` names the run in a failure.
pub fn relay_test(config: &Path, names: &[String], what: &str) -> String {
    let mut input = Vec::new();
    for name in names {
        input.extend(name.bytes());
        input.push(b'\n');
    }
    let mut cmd = Command::new(carbon_c_relay());
    cmd.arg("-t").arg("-f").arg(config).env("RES_OPTIONS", "timeout:1 attempts:1");
    String::from_utf8(pipe(cmd, input, what)).expect("relay output is UTF-8")
}

/// Reads a `carbon-c-relay -t` report: `match`, `    * -> NAME`, then for each cluster the name reaches a
/// header line (`    HASH(CLUSTER)`) and its members (`        host:port`, replica order). Returns, per
/// name in report order, the members under each of `headers`, which must follow in that order.
pub fn parse_relay_test(report: &str, headers: &[String]) -> Vec<(String, Vec<Vec<String>>)> {
    let mut out = Vec::new();
    let mut lines = report.lines().peekable();
    while let Some(line) = lines.next() {
        if line != "match" {
            continue;
        }
        let Some(name) = lines.next().and_then(|l| l.strip_prefix("    * -> ")) else { continue };
        let mut clusters = Vec::with_capacity(headers.len());
        for header in headers {
            assert_eq!(lines.next(), Some(header.as_str()), "relay report for {name:?}:\n{report}");
            let mut members = Vec::new();
            while let Some(addr) = lines.peek().and_then(|l| l.strip_prefix("        ")) {
                members.push(addr.to_owned());
                lines.next();
            }
            clusters.push(members);
        }
        out.push((name.to_owned(), clusters));
    }
    out
}

/// An environment variable read as a count, `default` when unset or not a number (`BUCKY_RINGCONFS`, …).
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}
