//! Nodes that stopped answering: every request of a [`crate::client::Client`] is noted here.
//!
//! A request to a node that is down fails only after the client's retries (about 1.5 s), and a job retries
//! that a few times more: every job that needs the node would wait that long, and a rebalance of millions
//! of metrics with one node down would take days to fail. So once a request finds a node unreachable, the
//! engine's jobs that need it fail at once ("down", source kept, listed in `--error-file`; a rerun with
//! `--state-file` does them once the node is back). Every [`PROBE_AFTER`] the jobs try the node again,
//! and any answer from it clears the mark.
//!
//! A node whose disk is full answers writes with 507 Insufficient Storage (bucky-agent; as a single answer,
//! or per entry of a batch heal). It is marked full for the rest of the run: the engine sends it no more
//! copies (the jobs that would fail at once, sources kept), while reads and deletes on it go on. Space is
//! seldom freed within a run, and every job retrying the node would make a run into a full node last hours.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::Addr;

/// How long a node found unreachable is skipped before jobs try it again.
pub(crate) const PROBE_AFTER: Duration = Duration::from_secs(10);

/// When a node down was first and last found unreachable.
#[derive(Debug, Clone, Copy)]
struct Down {
    since: Instant,
    last: Instant,
}

/// The nodes found down during a run.
#[derive(Debug, Default)]
pub struct Health {
    down: Mutex<HashMap<Addr, Down>>,
    full: Mutex<HashSet<Addr>>,
}

impl Health {
    /// Takes note of the outcome of a request to `addr` (see [`crate::client::reached`]): unreachable marks
    /// it down, any answer (even an error status) clears the mark.
    pub fn saw(&self, addr: &Addr, reached: bool) {
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        if reached {
            down.remove(addr);
        } else {
            let now = Instant::now();
            down.entry(addr.clone()).and_modify(|d| d.last = now).or_insert(Down { since: now, last: now });
        }
    }

    /// Takes note that `addr` answered 507 Insufficient Storage (to a request, or to an entry of a batch):
    /// full for the rest of the run.
    pub fn saw_full(&self, addr: &Addr) {
        self.full.lock().unwrap_or_else(PoisonError::into_inner).insert(addr.clone());
    }

    /// The first of `dests` found full during the run: no copy may be sent to it.
    pub fn full_among<'a>(&self, dests: impl IntoIterator<Item = &'a Addr>) -> Option<&'a Addr> {
        let full = self.full.lock().unwrap_or_else(PoisonError::into_inner);
        dests.into_iter().find(|d| full.contains(*d))
    }

    /// Why a job needing `nodes` must not start now: the first of them found unreachable less than
    /// [`PROBE_AFTER`] ago.
    pub fn refuse<'a>(&self, nodes: impl IntoIterator<Item = &'a Addr>) -> Option<String> {
        let down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.into_iter().find_map(|node| {
            let d = down.get(node)?;
            // Whether a source is kept is the caller's to say: copy and backfill never delete one.
            (d.last.elapsed() < PROBE_AFTER).then(|| match d.since.elapsed().as_secs() {
                0 => format!("{node} is down (unreachable)"),
                secs => format!("{node} is down (unreachable for {secs} s)"),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{reached, ClientError};

    fn unreachable(addr: &Addr) -> Result<(), ClientError> {
        // A real connection error: nothing listens on port 9 of this loopback address.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let source = runtime
            .block_on(reqwest::Client::new().get(format!("http://{}/", addr.authority())).send())
            .expect_err("nothing listens there");
        Err(ClientError::Unreachable { addr: addr.to_string(), what: "test".into(), network: source })
    }

    #[test]
    fn an_unreachable_node_is_refused_until_it_answers_again() {
        let health = Health::default();
        let (a, b) = (Addr { host: "127.0.0.1".into(), port: 9 }, Addr { host: "127.0.0.2".into(), port: 9 });
        assert_eq!(health.refuse([&a, &b]), None);
        health.saw(&a, reached(&unreachable(&a)));
        let why = health.refuse([&b, &a]).expect("a is down");
        assert!(why.starts_with("127.0.0.1:9 is down"), "{why}");
        assert_eq!(health.refuse([&b]), None, "only the node that failed");
        // An answer, even an error status, means the node is up.
        health.saw(
            &a,
            reached::<()>(&Err(ClientError::Status {
                addr: a.to_string(),
                what: "x".into(),
                status: 503,
                body: String::new(),
            })),
        );
        assert_eq!(health.refuse([&a]), None);
        health.saw(&a, reached(&unreachable(&a)));
        health.saw(&a, reached(&Ok(())));
        assert_eq!(health.refuse([&a]), None);
    }

    #[test]
    fn a_full_node_stays_full_for_the_rest_of_the_run() {
        let health = Health::default();
        let (a, b) = (Addr { host: "127.0.0.1".into(), port: 9 }, Addr { host: "127.0.0.2".into(), port: 9 });
        assert_eq!(health.full_among([&b, &a]), None);
        health.saw_full(&a);
        assert_eq!(health.full_among([&b, &a]), Some(&a));
        assert_eq!(health.full_among([&b]), None, "only the node that answered 507");
        assert_eq!(health.refuse([&a]), None, "full is not down: reads and deletes on it go on");
        // Any later answer, even a success, leaves it full: space is seldom freed within a run.
        health.saw(&a, reached(&Ok(())));
        assert_eq!(health.full_among([&a]), Some(&a));
    }
}
