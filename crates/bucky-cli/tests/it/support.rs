//! Helpers shared by the CLI's integration tests.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs the real `bucky` binary with `args`, feeding `stdin`.
pub(crate) fn bucky(args: &[&str], stdin: impl AsRef<[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bucky"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bucky");
    child.stdin.take().expect("stdin").write_all(stdin.as_ref()).expect("write stdin");
    child.wait_with_output().expect("bucky output")
}
