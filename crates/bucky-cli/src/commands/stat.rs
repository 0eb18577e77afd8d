//! `bucky stat [-r] [names|-|regex]`: size, modification time, agent and name of every copy.

use std::io::Write;

use crate::cli::StatArgs;
use crate::error::one_line;
use crate::scope::open_scope;
use crate::scope::stat_each;
use crate::settings::Scope;
use crate::ExitStatus;

/// RFC 3339 UTC time of Unix seconds, e.g. `2023-11-14T22:13:20Z`.
pub(super) fn rfc3339(secs: i64) -> String {
    bucky_wire::UtcTime::from_unix(secs).rfc3339()
}

/// Prints `size KiB<TAB>mtime<TAB>agent<TAB>name` per copy (JSON: an array of stats).
pub(super) async fn run(args: &StatArgs) -> anyhow::Result<ExitStatus> {
    let (ctx, _cluster, gathered) = open_scope(Scope::from_args(&args.scope, false)?, |_| Ok(())).await?;
    let json = ctx.printer.json();
    let mut out = ctx.printer.stdout();
    let mut errors = 0u64;
    let mut first = true;
    if json {
        out.write_all(b"[")?;
    }
    stat_each(&ctx, &gathered, |addr, name, result| match result {
        Ok(Some(stat)) if json => {
            let item = serde_json::json!({
                "name": name, "agent": addr.to_string(), "size": stat.size, "mode": stat.mode,
                "mtime": stat.mod_time, "mtime_rfc3339": rfc3339(stat.mod_time),
            });
            if !first {
                out.write_all(b",\n")?;
            }
            first = false;
            serde_json::to_writer(&mut out, &item).map_err(std::io::Error::other)
        }
        Ok(Some(stat)) => {
            writeln!(out, "{:.2}KiB\t{}\t{addr}\t{name}", stat.size as f64 / 1024.0, rfc3339(stat.mod_time))
        }
        Ok(None) => Ok(()),
        Err(e) => {
            errors += 1;
            ctx.printer.error(one_line(&e));
            Ok(())
        }
    })
    .await?;
    if json {
        out.write_all(b"]\n")?;
    }
    out.flush()?;
    drop(out);
    let ok = gathered.report(&ctx) && errors == 0;
    Ok(ExitStatus::from_ok(ok))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
