//! Accept errors: what they mean, how long to pause, and logging them once per burst.
//!
//! When the process runs out of file descriptors every `accept` fails at once, and keeps failing until
//! a connection closes: the loop must neither spin on it nor flood the log, nor ever stop serving. The
//! first error of a burst is logged with its cause and the fix, then a count every [`REPORT_EVERY`]
//! while it lasts, and the total when accepting works again. Near the limit accepts succeed and fail in
//! turn (each connection accepted takes the descriptor another one freed): the burst ends only at an
//! accept [`QUIET`] after its last error.

use std::io;
use std::time::{Duration, Instant};

use rustix::io::Errno;

/// How often a burst of accept errors is reported while it lasts.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(5);

/// How long accepts must go without an error to end a burst (longer than [`MAX_PAUSE`], so that a burst
/// going on never looks over).
pub(crate) const QUIET: Duration = Duration::from_secs(2);

/// First pause after a failed accept; it doubles up to [`MAX_PAUSE`] while the errors go on.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Whether an accept error concerns only the connection being accepted (the client reset it before it
/// was accepted, or a network error pending on it: see accept(2)). The next accept is unaffected.
pub(crate) fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    ) || Errno::from_io_error(error).is_some_and(|errno| {
        [
            Errno::PROTO,
            Errno::NOPROTOOPT,
            Errno::NETDOWN,
            Errno::NETUNREACH,
            Errno::HOSTDOWN,
            Errno::HOSTUNREACH,
            Errno::OPNOTSUPP,
            Errno::PERM,
            Errno::TIMEDOUT,
        ]
        .contains(&errno)
    })
}

/// The cause of an accept error, with the fix when there is one.
pub(crate) fn describe(error: &io::Error) -> String {
    match Errno::from_io_error(error) {
        Some(Errno::MFILE) => {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
            let limit = limit.map_or_else(|| "unlimited".to_owned(), |l| l.to_string());
            format!("too many open files (limit {limit}): raise LimitNOFILE (ulimit -n)")
        }
        Some(Errno::NFILE) => "too many open files in the system: raise fs.file-max".to_owned(),
        Some(Errno::NOBUFS | Errno::NOMEM) => format!("out of memory for sockets ({error})"),
        _ => error.to_string(),
    }
}

/// The current burst of accept errors.
#[derive(Debug)]
struct Burst {
    started: Instant,
    reported: Instant,
    last_error: Instant,
    total: u64,
    unreported: u64,
    cause: String,
}

/// Logs accept errors once per burst and says how long to pause after each.
#[derive(Debug, Default)]
pub(crate) struct AcceptErrors {
    burst: Option<Burst>,
    pause: Duration,
}

impl AcceptErrors {
    /// Notes a failed accept at `now` (logging it if it starts a burst or a report is due) and returns
    /// how long to pause before the next accept.
    pub(crate) fn failed(&mut self, error: &io::Error, now: Instant) -> Duration {
        let cause = describe(error);
        if self.burst.as_ref().is_some_and(|b| now.duration_since(b.last_error) >= QUIET) {
            // Nothing was accepted since the last burst, nor failed: that one is over.
            self.end_burst();
        }
        match &mut self.burst {
            None => {
                tracing::error!("cannot accept connections: {cause}");
                self.burst =
                    Some(Burst { started: now, reported: now, last_error: now, total: 1, unreported: 0, cause });
            }
            Some(burst) => {
                burst.last_error = now;
                burst.total += 1;
                burst.unreported += 1;
                burst.cause = cause;
                if now.duration_since(burst.reported) >= REPORT_EVERY {
                    tracing::warn!(
                        errors = burst.unreported,
                        "still cannot accept connections: {} errors in the last {} s ({})",
                        burst.unreported,
                        now.duration_since(burst.reported).as_secs(),
                        burst.cause
                    );
                    burst.reported = now;
                    burst.unreported = 0;
                }
            }
        }
        self.pause = (self.pause * 2).clamp(FIRST_PAUSE, MAX_PAUSE);
        self.pause
    }

    /// Notes a successful accept: ends the burst, if any and [`QUIET`] for long enough, with its total.
    pub(crate) fn accepted(&mut self, now: Instant) {
        self.pause = Duration::ZERO;
        if self.burst.as_ref().is_some_and(|b| now.duration_since(b.last_error) >= QUIET) {
            self.end_burst();
        }
    }

    fn end_burst(&mut self) {
        if let Some(burst) = self.burst.take() {
            tracing::info!(
                errors = burst.total,
                "accept errors over: {} in {:.1} s (last: {})",
                if burst.total == 1 { "1 error".to_owned() } else { format!("{} errors", burst.total) },
                burst.last_error.duration_since(burst.started).as_secs_f64(),
                burst.cause
            );
        }
    }

    /// Whether a burst is going on.
    #[cfg(test)]
    fn in_burst(&self) -> bool {
        self.burst.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        Errno::MFILE.into()
    }

    #[test]
    fn causes_name_the_fix() {
        let text = describe(&emfile());
        assert!(text.starts_with("too many open files (limit ") && text.contains("LimitNOFILE"), "{text}");
        assert!(describe(&Errno::NFILE.into()).contains("fs.file-max"));
        assert!(is_connection_error(&Errno::CONNABORTED.into()));
        assert!(is_connection_error(&Errno::PROTO.into()));
        assert!(!is_connection_error(&emfile()));
        assert!(!is_connection_error(&Errno::NOBUFS.into()));
    }

    #[test]
    fn a_burst_pauses_more_and_more_then_ends_on_success() {
        let mut errors = AcceptErrors::default();
        let start = Instant::now();
        let pauses: Vec<Duration> =
            (0..10).map(|i| errors.failed(&emfile(), start + Duration::from_millis(i))).collect();
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(pauses[9], MAX_PAUSE);
        assert!(errors.in_burst());
        // Near the limit accepts succeed and fail in turn: still the same burst, though pauses start over.
        errors.accepted(start + Duration::from_millis(10));
        assert!(errors.in_burst());
        assert_eq!(errors.failed(&emfile(), start + Duration::from_millis(20)), FIRST_PAUSE);
        errors.accepted(start + Duration::from_millis(20) + QUIET);
        assert!(!errors.in_burst(), "quiet for long enough: the burst is over");
        // An error long after the last one, with no accept in between, starts a burst of its own.
        let later = start + Duration::from_secs(60);
        errors.failed(&emfile(), later);
        errors.failed(&emfile(), later + QUIET);
        let burst = errors.burst.as_ref().unwrap();
        assert_eq!((burst.started, burst.total), (later + QUIET, 1));
    }

    #[test]
    fn a_burst_is_reported_once_then_every_few_seconds() {
        let mut errors = AcceptErrors::default();
        let start = Instant::now();
        let mut reports = 0;
        for ms in (0..12_000).step_by(10) {
            errors.failed(&emfile(), start + Duration::from_millis(ms));
            let burst = errors.burst.as_ref().unwrap();
            if burst.unreported == 0 && burst.total > 1 {
                reports += 1;
            }
        }
        // 1,200 errors over 12 s: the first one, then a count at 5 s and at 10 s.
        assert_eq!(reports, 2);
        assert_eq!(errors.burst.as_ref().unwrap().total, 1200);
    }
}
