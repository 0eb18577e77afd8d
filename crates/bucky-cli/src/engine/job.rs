//! What the engine is asked to do: the [`Operation`] (the command that runs it), its [`Job`]s, and what
//! each job is to that command ([`JobKind`]), which names it in the plan and counts it in the summary.

use serde::Serialize;

use crate::config::Addr;
use crate::printer::Printer;

/// The command running the engine. Its name labels the state file's entries, the progress bars and the
/// summary; what its jobs are follows from it ([`Job::kind`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Operation {
    /// `rebalance`: moves copies to their ring homes and syncs replicas.
    #[default]
    Rebalance,
    /// `drain`: moves every copy off one node; labelled as a move, like `rebalance`.
    Drain,
    /// `copy`: heals one agent's metrics into another; never deletes.
    Copy,
    /// `backfill`: heals renamed metrics within one cluster.
    Backfill,
    /// `backfill2`: heals metrics from one cluster into another.
    Backfill2,
    /// `repair`: heals the replicas of a metric into its reference replica (`overwrite` false), then the
    /// reference into every other replica with its values winning where they differ (`overwrite` true);
    /// never deletes.
    Repair {
        /// Whether the heals replace conflicting values ([`whisper::FillMode::SourceWins`]) and the
        /// verification requires the source's very values.
        overwrite: bool,
    },
}

impl Operation {
    /// The command's name, as the state file, the progress bars and the summary say it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Rebalance => "rebalance",
            Operation::Drain => "drain",
            Operation::Copy => "copy",
            Operation::Backfill => "backfill",
            Operation::Backfill2 => "backfill2",
            Operation::Repair { .. } => "repair",
        }
    }

    /// Whether heals replace the destination's conflicting values with the source's (`repair`'s last phase).
    pub fn overwrites(self) -> bool {
        matches!(self, Operation::Repair { overwrite: true })
    }

    /// Whether the command moves copies (its kept sources are replicas being synced).
    pub fn moves(self) -> bool {
        matches!(self, Operation::Rebalance | Operation::Drain)
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Operation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What a job does, in the words of its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A copy moved to where the ring wants it (`rebalance`, `drain`); its source may go once verified.
    Move,
    /// A replica's copy healed into the other replicas of a moved metric; its source stays.
    ReplicaSync,
    /// A copy healed into another agent (`copy`); its source stays.
    Copy,
    /// A metric healed under its new name (`backfill`, `backfill2`); its source stays.
    Backfill,
    /// A replica healed into the metric's reference replica, or the reference into the others (`repair`);
    /// its source stays.
    Repair,
}

/// One unit of work: heal `source_name` from `source` into `name` on every destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// The metric as stored on the destinations.
    #[serde(rename = "metric")]
    pub name: String,
    /// The metric as stored on the source (differs from `name` only for backfill).
    #[serde(rename = "source_metric")]
    pub source_name: String,
    /// Where the copy is read from.
    #[serde(serialize_with = "ser_addr")]
    pub source: Addr,
    /// Where it must end up.
    #[serde(serialize_with = "ser_addrs")]
    pub dests: Vec<Addr>,
    /// The source is a replica (or a backfill/copy source): never deleted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_source: bool,
}

impl Job {
    /// Every node the job needs: its source, then its destinations.
    pub fn nodes(&self) -> impl Iterator<Item = &Addr> {
        std::iter::once(&self.source).chain(&self.dests)
    }

    /// Whether the source goes once every destination verified: not for a replica or a kept source, and
    /// never for a job without destinations (nothing would hold the data).
    pub fn deletes_source(&self) -> bool {
        !self.keep_source && !self.dests.is_empty()
    }

    /// What the job is to `op`, the command running it.
    pub fn kind(&self, op: Operation) -> JobKind {
        match op {
            Operation::Rebalance | Operation::Drain if self.keep_source => JobKind::ReplicaSync,
            Operation::Rebalance | Operation::Drain => JobKind::Move,
            Operation::Copy => JobKind::Copy,
            Operation::Backfill | Operation::Backfill2 => JobKind::Backfill,
            Operation::Repair { .. } => JobKind::Repair,
        }
    }
}

fn ser_addr<S: serde::Serializer>(addr: &Addr, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&addr.to_string())
}

fn ser_addrs<S: serde::Serializer>(addrs: &[Addr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(addrs.iter().map(ToString::to_string))
}

/// What a planned step does, in the words of `op` (the command): `rebalance` and `drain` move copies (and
/// delete them with `--delete`) or sync replicas, `copy` copies, `backfill`/`backfill2` backfill.
fn plan_label(op: Operation, job: &Job, delete: bool) -> &'static str {
    match job.kind(op) {
        JobKind::ReplicaSync => "replica sync",
        JobKind::Move if delete && job.deletes_source() => "move, then delete",
        JobKind::Move => "move",
        JobKind::Copy => "copy",
        JobKind::Backfill => "backfill",
        JobKind::Repair if op.overwrites() => "repair: from the reference replica, its values win",
        JobKind::Repair => "repair: into the reference replica, empty slots only",
    }
}

/// Prints a plan (for `--no-op`): one line per job, `SOURCE NAME => DESTS [NEW NAME] (what)`, or a JSON array.
pub fn print_plan(printer: &Printer, jobs: &[Job], op: Operation, delete: bool) -> std::io::Result<()> {
    use std::io::Write;
    if printer.json() {
        #[derive(Serialize)]
        struct Planned<'a> {
            #[serde(flatten)]
            job: &'a Job,
            delete: bool,
            action: &'static str,
        }
        let plan: Vec<Planned<'_>> = jobs
            .iter()
            .map(|job| Planned { job, delete: delete && job.deletes_source(), action: plan_label(op, job, delete) })
            .collect();
        return printer.print_json(&plan);
    }
    let mut out = printer.stdout();
    for job in jobs {
        let dests = job.dests.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let label = plan_label(op, job, delete);
        if job.name == job.source_name {
            writeln!(out, "{} {} => {} ({label})", job.source, job.name, dests)?;
        } else {
            writeln!(out, "{} {} => {} {} ({label})", job.source, job.source_name, dests, job.name)?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(keep_source: bool) -> Job {
        let addr = |host: &str| Addr { host: host.into(), port: 4242 };
        Job { name: "a.b".into(), source_name: "a.b".into(), source: addr("x"), dests: vec![addr("y")], keep_source }
    }

    /// `copy --no-op` and `backfill2 --no-op` used to label every step "(replica sync)".
    #[test]
    fn plan_steps_are_labelled_by_what_they_do() {
        assert_eq!(plan_label(Operation::Copy, &job(true), false), "copy");
        assert_eq!(plan_label(Operation::Backfill, &job(true), false), "backfill");
        assert_eq!(plan_label(Operation::Backfill2, &job(true), false), "backfill");
        assert_eq!(plan_label(Operation::Rebalance, &job(true), true), "replica sync");
        assert_eq!(plan_label(Operation::Rebalance, &job(false), true), "move, then delete");
        assert_eq!(plan_label(Operation::Rebalance, &job(false), false), "move");
        assert_eq!(plan_label(Operation::Drain, &job(false), true), "move, then delete");
        assert_eq!(plan_label(Operation::Drain, &job(true), true), "replica sync");
    }

    #[test]
    fn jobs_are_what_their_command_makes_of_them() {
        assert_eq!(job(false).kind(Operation::Rebalance), JobKind::Move);
        assert_eq!(job(true).kind(Operation::Drain), JobKind::ReplicaSync);
        assert_eq!(job(true).kind(Operation::Copy), JobKind::Copy);
        assert_eq!(job(false).kind(Operation::Backfill2), JobKind::Backfill);
        assert_eq!(serde_json::to_string(&Operation::Backfill2).unwrap(), "\"backfill2\"");
    }
}
