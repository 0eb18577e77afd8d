//! The nodes a run waits for (suppressed by flap damping, or not answering yet; the rules are in
//! `crate::health`) or has given up on (down): while their jobs wait in the queue, or fail at once, nothing
//! else is sent to them, so this task probes each of them every [`PROBE_EVERY`] (a flapping node keeps
//! being seen to flap, a node back up is seen to be up at once), says when one is suppressed, reused or
//! given up on, and keeps the progress line's note (`suppressed: NODE (3 flaps, penalty 2207)`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::config::Addr;
use crate::health::Waiting;
use crate::printer::{Printer, Progress};

/// How often a node waited for is probed.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the states are looked at.
const TICK: Duration = Duration::from_millis(200);

/// What a node was when last looked at, for the messages on a change.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Suppressed { since: Instant },
    Unanswered { since: Instant },
}

/// Probes and reports the nodes waited for, until the task is dropped.
/// `reuse` is the damping's reuse limit, `deletes` whether the run deletes sources (the messages say they
/// are kept only then).
pub(super) async fn nodes(client: Client, printer: Printer, progress: Arc<Progress>, reuse: f64, deletes: bool) {
    let kept = if deletes { " (sources kept)" } else { "" };
    let mut seen: HashMap<Addr, Seen> = HashMap::new();
    let mut probed: HashMap<Addr, Instant> = HashMap::new();
    let mut note = String::new();
    loop {
        let mut unhealthy: Vec<Addr> = client.health().waited_for().into_iter().map(|(addr, _)| addr).collect();
        unhealthy.extend(client.health().down_nodes());
        unhealthy.sort();
        unhealthy.dedup();
        let now = Instant::now();
        // Probe those not probed for PROBE_EVERY, side by side.
        let due: Vec<&Addr> = unhealthy
            .iter()
            .filter(|addr| probed.get(*addr).is_none_or(|at| now.duration_since(*at) >= PROBE_EVERY))
            .collect();
        for addr in &due {
            probed.insert((*addr).clone(), now);
        }
        futures_util::future::join_all(due.iter().map(|addr| client.probe(addr, PROBE_TIMEOUT))).await;

        let waited = client.health().waited_for();
        for (addr, why) in &waited {
            let was = seen.get(addr).copied();
            match (why, was) {
                (Waiting::Suppressed { flaps, penalty }, None | Some(Seen::Unanswered { .. })) => {
                    printer.warn(format!(
                        "{addr} flaps ({flaps} times; penalty {penalty:.0}): suppressed, its metrics wait{kept} \
                         until it has stayed up for a while (penalty below {reuse:.0})"
                    ));
                    seen.insert(addr.clone(), Seen::Suppressed { since: now });
                }
                (Waiting::Unanswered { .. }, None) => {
                    printer.verbose(format!("{addr} does not answer: its metrics wait for it (probed every second)"));
                    seen.insert(addr.clone(), Seen::Unanswered { since: now });
                }
                _ => {}
            }
        }
        let report = client.health().report();
        seen.retain(|addr, was| {
            if waited.iter().any(|(a, _)| a == addr) {
                return true;
            }
            let down = report.get(addr).is_some_and(|r| r.down);
            match (*was, down) {
                (Seen::Suppressed { since }, false) => printer.info(format!(
                    "{addr}: reused after {:.1} s suppressed (it stayed up)",
                    since.elapsed().as_secs_f64()
                )),
                (Seen::Suppressed { since } | Seen::Unanswered { since }, true) => printer.warn(format!(
                    "{addr} still does not answer after {:.0} s: the metrics that need it fail at once{kept}; \
                     rerun once it is back",
                    since.elapsed().as_secs_f64()
                )),
                (Seen::Unanswered { .. }, false) => printer.verbose(format!("{addr} answers again")),
            }
            false
        });
        let text = note_of(&waited);
        if text != note {
            progress.set_note("health", text.clone());
            note = text;
        }
        tokio::time::sleep(TICK).await;
    }
}

/// The progress line's note: `suppressed: A (3 flaps, penalty 2207); waiting for: B (no answer for 4 s)`.
fn note_of(waited: &[(Addr, Waiting)]) -> String {
    let mut suppressed = Vec::new();
    let mut unanswered = Vec::new();
    for (addr, why) in waited {
        match why {
            Waiting::Suppressed { flaps, penalty } => {
                suppressed.push(format!("{addr} ({flaps} flaps, penalty {penalty:.0})"))
            }
            Waiting::Unanswered { for_ } => unanswered.push(format!("{addr} (no answer for {} s)", for_.as_secs())),
        }
    }
    suppressed.sort();
    unanswered.sort();
    let mut parts = Vec::new();
    if !suppressed.is_empty() {
        parts.push(format!("suppressed: {}", suppressed.join(", ")));
    }
    if !unanswered.is_empty() {
        parts.push(format!("waiting for: {}", unanswered.join(", ")));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_note_names_the_nodes_waited_for() {
        let addr = |host: &str| Addr { host: host.into(), port: 4242 };
        assert_eq!(note_of(&[]), "");
        let waited = [
            (addr("10.0.0.3"), Waiting::Unanswered { for_: Duration::from_millis(4500) }),
            (addr("10.0.0.2"), Waiting::Suppressed { flaps: 3, penalty: 2207.4 }),
        ];
        assert_eq!(
            note_of(&waited),
            "suppressed: 10.0.0.2:4242 (3 flaps, penalty 2207); waiting for: 10.0.0.3:4242 (no answer for 4 s)"
        );
    }
}
