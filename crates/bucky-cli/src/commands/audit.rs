//! `bucky audit [-r REGEX | NAME… | -]`: compares every replica of every metric by digests (see
//! [`crate::audit`]) and reports the metrics missing a replica, the divergent ones (with the archives and
//! time ranges that differ), the misplaced copies and the healthy count. Exit 1 unless all is healthy.
//! Read-only.

use std::io::Write;

use crate::audit::{audit, Report};
use crate::cli::AuditArgs;
use crate::ctx::Ctx;
use crate::printer::{human_bytes, Printer};
use crate::{settings, ExitStatus};

/// Runs the audit and prints it.
pub(super) async fn run(args: &AuditArgs) -> anyhow::Result<ExitStatus> {
    let (config, spec) = settings::audit(&args.cluster, &args.names, &args.exclude, args.until, args.batch)?;
    let ctx = Ctx::new(config)?;
    let cluster = ctx.cluster().await?;
    cluster.require_healthy()?;
    let report = audit(&ctx, &cluster, &spec).await?;
    print(&ctx.printer, &report)?;
    Ok(ExitStatus::from_ok(report.clean()))
}

/// Prints a report: with `--json` one object on stdout; else one line per finding on stdout and the counts
/// on stderr.
pub(crate) fn print(printer: &Printer, report: &Report) -> std::io::Result<()> {
    if printer.json() {
        return printer.print_json(report);
    }
    let mut out = printer.stdout();
    for f in &report.findings {
        if !f.missing.is_empty() {
            let missing = f.missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let held = f.present.iter().map(|c| c.agent.to_string()).collect::<Vec<_>>().join(", ");
            writeln!(out, "missing {}: no copy on {missing} (held by {held})", f.metric)?;
        }
        if f.divergent {
            let replicas = f.present.iter().map(|c| c.agent.to_string()).collect::<Vec<_>>().join(", ");
            let ranges = if f.schemas_differ {
                "the archives' layouts differ".to_owned()
            } else {
                f.ranges
                    .iter()
                    .map(|r| format!("{}s [{}, {})", r.seconds_per_point, r.from, r.until))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            writeln!(out, "divergent {} on {replicas}: {ranges}", f.metric)?;
        }
    }
    for (agent, names) in &report.misplaced_copies {
        for name in names {
            writeln!(out, "misplaced {agent}: {name}")?;
        }
    }
    out.flush()?;
    for failure in &report.failures {
        printer.error(format!("{} on {}: {}", failure.metric, failure.agent, failure.reason));
    }
    let per_copy = report.wire_bytes.checked_div(report.copies).unwrap_or(0);
    printer.info(format!(
        "audit: {} metrics: {} healthy, {} missing a replica, {} divergent, {} misplaced copies, {} unreadable; \
         digests at {}, {} on the wire ({per_copy} bytes per copy); {:.1} s, {}",
        report.metrics,
        report.healthy,
        report.missing,
        report.divergent,
        report.misplaced,
        report.errors,
        report.until,
        human_bytes(report.wire_bytes),
        report.seconds,
        crate::printer::human_rate(report.metrics_per_second, "metrics"),
    ));
    Ok(())
}
