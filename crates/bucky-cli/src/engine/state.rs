//! The state file (finished jobs, one JSON line each, so a rerun skips them) and the error file.
//!
//! Only jobs that finished are recorded (the go-graphite fork recorded failed ones too, and its resume
//! then skipped them). A torn last line after a crash is ignored.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::Job;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
struct Entry {
    op: String,
    source: String,
    source_metric: String,
    metric: String,
}

impl Entry {
    fn of(op: &str, job: &Job) -> Entry {
        Entry {
            op: op.to_owned(),
            source: job.source.to_string(),
            source_metric: job.source_name.clone(),
            metric: job.name.clone(),
        }
    }
}

/// Finished jobs of this and earlier runs.
#[derive(Debug)]
pub struct StateLog {
    op: &'static str,
    done: HashSet<Entry>,
    file: Mutex<File>,
}

impl StateLog {
    /// Reads (or creates) the state file.
    pub fn open(path: &Path, op: &'static str) -> anyhow::Result<StateLog> {
        let mut done = HashSet::new();
        if path.exists() {
            let file = File::open(path).with_context(|| format!("cannot read the state file {}", path.display()))?;
            for line in BufReader::new(file).lines() {
                let line = line.with_context(|| format!("cannot read the state file {}", path.display()))?;
                if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
                    done.insert(entry);
                }
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .with_context(|| format!("cannot write the state file {}", path.display()))?;
        // A crash may have left half a line: end it so the next record starts on a line of its own.
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok(StateLog { op, done, file: Mutex::new(file) })
    }

    /// Whether `job` finished in an earlier run.
    pub fn is_done(&self, job: &Job) -> bool {
        self.done.contains(&Entry::of(self.op, job))
    }

    /// Records a finished job.
    pub fn record(&self, job: &Job) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&Entry::of(self.op, job)).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&line)?;
        file.flush()
    }

    /// Makes the finished jobs recorded so far durable (at the end of a run, and when it is aborted).
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).sync_data()
    }
}

/// Failed jobs: `metric<TAB>source<TAB>reason` lines.
#[derive(Debug)]
pub struct ErrorLog {
    file: Mutex<File>,
}

impl ErrorLog {
    /// Creates (truncates) the error file.
    pub fn create(path: &Path) -> anyhow::Result<ErrorLog> {
        let file = File::create(path).with_context(|| format!("cannot create the error file {}", path.display()))?;
        Ok(ErrorLog { file: Mutex::new(file) })
    }

    /// Appends one failure.
    pub fn write(&self, metric: &str, source: &str, reason: &str) -> std::io::Result<()> {
        let reason = reason.replace(['\t', '\n'], " ");
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(file, "{metric}\t{source}\t{reason}")?;
        file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Addr;

    #[test]
    fn finished_jobs_survive_a_restart_and_torn_lines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.jsonl");
        let job = |n: &str| Job {
            name: n.into(),
            source_name: n.into(),
            source: Addr { host: "h".into(), port: 1 },
            dests: vec![],
            keep_source: false,
        };
        {
            let log = StateLog::open(&path, "rebalance").unwrap();
            assert!(!log.is_done(&job("a")));
            log.record(&job("a")).unwrap();
        }
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"op\":\"reb").unwrap();
        let log = StateLog::open(&path, "rebalance").unwrap();
        assert!(log.is_done(&job("a")));
        assert!(!log.is_done(&job("b")));
        log.record(&job("b")).unwrap();
        drop(log);
        assert!(StateLog::open(&path, "rebalance").unwrap().is_done(&job("b")));
        assert!(!StateLog::open(&path, "copy").unwrap().is_done(&job("a")));
    }
}
