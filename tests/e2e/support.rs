//! Shared helpers of the end-to-end tests: locating (and if needed building) the real binaries, the
//! reference Python, and free loopback ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// Path of a workspace binary (`bucky`, `bucky-agent`, …), built once per test run with `cargo build` so
/// the tests never run a stale binary.
pub fn bin(name: &str) -> PathBuf {
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

/// The reference Python (venv with whisper, carbonate and carbon 1.1.10), as set up by `scripts/test.sh`.
pub fn oracle_python() -> PathBuf {
    let path = std::env::var_os("BUCKY_ORACLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "reference Python {} not found: run scripts/test.sh once to install the peers",
        path.display()
    );
    path
}

/// A TCP port that was free on `ip` a moment ago.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a free port")
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
