//! The engine's flags ([`EngineArgs`]) as validated [`engine::Options`]: the engine itself knows nothing
//! of clap.

use crate::cli::EngineArgs;
use crate::engine::{self, Interrupts, Operation};
use crate::UsageError;

/// The options of `op` from its engine flags, `-w` (`workers`) and whether it deletes sources; a
/// [`UsageError`] for a flag out of range. The run takes Ctrl-C as its interrupts and the wall clock.
pub(crate) fn engine_options(
    op: Operation,
    args: &EngineArgs,
    workers: usize,
    delete: bool,
) -> anyhow::Result<engine::Options> {
    if let Some(rate) = args.max_rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(
                UsageError(format!("--max-rate must be a positive number of metrics per second, not {rate}")).into()
            );
        }
    }
    if args.batch == 0 {
        return Err(UsageError("--batch must be at least 1".into()).into());
    }
    if args.batch_mib == 0 {
        return Err(UsageError("--batch-mib must be at least 1".into()).into());
    }
    if args.attempts == 0 {
        return Err(UsageError("--attempts must be at least 1".into()).into());
    }
    Ok(engine::Options {
        op,
        delete,
        workers,
        batch: args.batch,
        batch_bytes: args.batch_mib.saturating_mul(1 << 20),
        attempts: args.attempts,
        max_rate: args.max_rate,
        state_file: args.state_file.clone(),
        error_file: args.error_file.clone(),
        error_tolerance: args.error_tolerance,
        now: engine::unix_now,
        interrupts: Interrupts::CtrlC,
    })
}
