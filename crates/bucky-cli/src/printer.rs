//! [`Printer`]: owns all output. Data goes to stdout, logs and progress bars to stderr; bars are drawn only
//! on a terminal and never in verbose mode (they would interleave with the log lines).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde::Serialize;

use crate::progress::{round_rate, Meters};

/// Where output goes and how it looks.
#[derive(Debug, Clone)]
pub struct Printer {
    json: bool,
    verbose: bool,
    progress: bool,
    multi: MultiProgress,
}

impl Printer {
    /// A printer; `progress` should already account for stderr being a terminal.
    pub fn new(json: bool, verbose: bool, progress: bool) -> Printer {
        let target = if progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Printer { json, verbose, progress, multi: MultiProgress::with_draw_target(target) }
    }

    /// The printer of a cluster command.
    pub fn from_config(config: &crate::config::Config) -> Printer {
        Printer::new(config.json, config.verbose, config.progress)
    }

    /// Whether results are printed as JSON.
    pub fn json(&self) -> bool {
        self.json
    }

    /// Whether verbose logging is on.
    pub fn is_verbose(&self) -> bool {
        self.verbose
    }

    /// A buffered handle on stdout for data. Flush it (or drop it) before the command returns.
    pub fn stdout(&self) -> BufWriter<StdoutLock<'static>> {
        BufWriter::with_capacity(64 * 1024, io::stdout().lock())
    }

    /// Whether stdout is a terminal (commands writing binary data refuse one).
    pub fn stdout_is_terminal(&self) -> bool {
        io::stdout().is_terminal()
    }

    /// Prints `value` as one line of JSON on stderr: the summary of a command whose stdout is data (`tar`).
    pub fn print_json_stderr<T: Serialize + ?Sized>(&self, value: &T) -> io::Result<()> {
        let line = serde_json::to_string(value).map_err(io::Error::other)?;
        self.multi.suspend(|| writeln!(io::stderr().lock(), "{line}"))
    }

    /// Prints `value` as pretty JSON on stdout.
    pub fn print_json<T: Serialize + ?Sized>(&self, value: &T) -> io::Result<()> {
        let mut out = self.stdout();
        serde_json::to_writer_pretty(&mut out, value)?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// A log line on stderr (above the progress bars).
    pub fn info(&self, message: impl AsRef<str>) {
        self.stderr_line(message.as_ref());
    }

    /// A warning on stderr.
    pub fn warn(&self, message: impl AsRef<str>) {
        self.stderr_line(&format!("warning: {}", message.as_ref()));
    }

    /// An error report on stderr (the command goes on).
    pub fn error(&self, message: impl AsRef<str>) {
        self.stderr_line(&format!("error: {}", message.as_ref()));
    }

    /// A log line shown only with `--verbose`.
    pub fn verbose(&self, message: impl AsRef<str>) {
        if self.verbose {
            self.stderr_line(message.as_ref());
        }
    }

    fn stderr_line(&self, line: &str) {
        self.multi.suspend(|| {
            let _ = writeln!(io::stderr().lock(), "{line}");
        });
    }

    /// Progress bars: one per node (`(label, total)`) plus an overall one. Hidden unless enabled. Rates and
    /// ETAs come from [`crate::progress::Meters`]: a node's own, and the run's ETA is its slowest node's.
    pub fn progress(&self, what: &str, nodes: &[(String, u64)]) -> Progress {
        let total_len: u64 = nodes.iter().map(|(_, n)| n).sum();
        let width = nodes.iter().map(|(l, _)| l.len()).max().unwrap_or(5).max(5);
        let started = Instant::now();
        let meters = Arc::new(Mutex::new(Meters::new(nodes)));
        // `node`: `Some(label)` for a node's bar, `None` for the overall one.
        let style = |node: Option<String>| {
            let meters = Arc::clone(&meters);
            ProgressStyle::with_template(&format!(
                "{{prefix:>{width}}} [{{bar:30}}] {{pos}}/{{len}} {{rate_eta}} {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate_eta", move |_: &ProgressState, out: &mut dyn std::fmt::Write| {
                let meters = meters.lock().unwrap_or_else(PoisonError::into_inner);
                let now = started.elapsed();
                let text = match &node {
                    Some(label) => meters.node_text(label, now),
                    None => meters.total_text(now),
                };
                let _ = out.write_str(&text);
            })
            .progress_chars("=> ")
        };
        let mut bars = HashMap::new();
        if self.progress && nodes.len() > 1 {
            for (label, len) in nodes {
                let bar = self.multi.add(ProgressBar::new(*len));
                bar.set_style(style(Some(label.clone())));
                bar.set_prefix(label.clone());
                bars.insert(label.clone(), bar);
            }
        }
        let total = self.multi.add(ProgressBar::new(total_len));
        total.set_style(style(None));
        total.set_prefix(what.to_owned());
        if self.progress {
            total.enable_steady_tick(Duration::from_millis(200));
        }
        Progress { total, bars, meters, started, notes: Mutex::default() }
    }
}

/// A running set of progress bars; bars are removed when it is finished or dropped.
#[derive(Debug)]
pub struct Progress {
    total: ProgressBar,
    bars: HashMap<String, ProgressBar>,
    meters: Arc<Mutex<Meters>>,
    started: Instant,
    /// The notes at the end of the overall bar, by who set them.
    notes: Mutex<BTreeMap<&'static str, String>>,
}

impl Progress {
    /// One unit of work done for `node`.
    pub fn inc(&self, node: &str) {
        self.meters.lock().unwrap_or_else(PoisonError::into_inner).inc(node, self.started.elapsed());
        if let Some(bar) = self.bars.get(node) {
            bar.inc(1);
        }
        self.total.inc(1);
    }

    /// `who`'s note at the end of the overall bar (`paused: 10.0.0.3 (cache 81%)`); empty clears it. The
    /// notes of several (the throttle, flap damping) are shown side by side.
    pub fn set_note(&self, who: &'static str, note: String) {
        let mut notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        if note.is_empty() {
            notes.remove(who);
        } else {
            notes.insert(who, note);
        }
        self.total.set_message(notes.values().cloned().collect::<Vec<_>>().join("; "));
    }

    /// Removes the bars.
    pub fn finish(&self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
        self.total.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `why` about `addr`, naming the address once: `why` as is when it starts with the address already (client
/// errors do), otherwise `addr: why`.
pub fn about(addr: &impl std::fmt::Display, why: &str) -> String {
    let addr = addr.to_string();
    if why.starts_with(&addr) {
        why.to_owned()
    } else {
        format!("{addr}: {why}")
    }
}

/// `4,602 metrics/s`.
pub fn human_rate(per_second: f64, unit: &str) -> String {
    format!("{} {unit}/s", round_rate(per_second))
}

/// The first `shown` of `names` (`total` in all), comma-separated, then `… and N more`.
pub fn first_names<'a>(names: impl IntoIterator<Item = &'a str>, total: usize, shown: usize) -> String {
    let mut text = names.into_iter().take(shown).collect::<Vec<_>>().join(", ");
    if total > shown {
        text.push_str(&format!(" … and {} more", total - shown));
    }
    text
}

/// Human-readable bytes: `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
