//! `bucky whisper isempty`: buckytools' `bucky-isempty`, finding whisper files that hold no point.
//!
//! Same flags and output as the Go tool, with its defects fixed: a file that cannot be read is reported and
//! the walk goes on (Go aborts the whole scan), hidden directories are recognised by name (see [`super::walk`]),
//! files are read under a shared flock, and `-l` prints the newest point (Go prints the newest point of the
//! oldest archive range holding any, which is older as soon as several archives have data).

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};
use whisper::{LockMode, WhisperFile};

use super::walk::{self, Found};
use crate::cli::IsEmptyArgs;
use crate::ExitStatus;

/// What one file holds.
struct Examined {
    points: usize,
    slots: usize,
    newest: Option<(i64, f64)>,
}

fn examine(path: &Path, now: i64, lock_timeout: Duration) -> whisper::Result<Examined> {
    let file = WhisperFile::open_locked(path, LockMode::Shared, lock_timeout)?;
    let known = whisper::known_points(&file, now)?;
    Ok(Examined { points: known.points.len(), slots: known.slots, newest: known.newest() })
}

/// Runs `bucky whisper isempty`.
pub(crate) fn run(args: IsEmptyArgs) -> Result<ExitStatus> {
    let now = super::common::now_or_clock(args.now);
    let lock_timeout = Duration::from_secs(args.lock_timeout);
    let roots = if args.paths.is_empty() { vec![args.prefix.clone()] } else { args.paths.clone() };
    // Go prints its first argument (`flag.Arg(0)`) in every -d line, "" when it walks the prefix.
    let first_arg = args.paths.first().map(|p| p.display().to_string()).unwrap_or_default();
    let mut out = io::BufWriter::new(io::stdout().lock());
    let (mut scanned, mut empty, mut failed) = (0usize, 0usize, 0usize);
    let mut listed: Vec<Value> = Vec::new();
    let mut write_error: Option<io::Error> = None;
    walk::whisper_files(&roots, &mut |found| {
        let path = match found {
            Found::File(path) => path,
            Found::Problem(path, e) => {
                failed += 1;
                eprintln!("bucky: {}: {e}", path.display());
                return;
            }
        };
        let examined = match examine(path, now, lock_timeout) {
            Ok(examined) => examined,
            Err(e) => {
                failed += 1;
                eprintln!("bucky: {}", super::common::one_line_error(path, &e));
                return;
            }
        };
        scanned += 1;
        let is_empty = examined.points == 0;
        empty += usize::from(is_empty);
        let name = metric_name(path, &args.prefix);
        if args.json {
            if is_empty || args.last || args.debug {
                listed.push(json!({
                    "path": path.display().to_string(),
                    "metric": name,
                    "empty": is_empty,
                    "points": examined.points,
                    "slots": examined.slots,
                    "newest": examined.newest.map(|(t, v)| json!([t, super::common::float_json(v)])),
                }));
            }
            return;
        }
        if let Err(e) = print_file(&mut out, &args, path, &name, &examined, &first_arg) {
            write_error.get_or_insert(e);
        }
    });
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if args.json {
        let summary = json!({"scanned": scanned, "empty": empty, "errors": failed, "files": listed});
        writeln!(out, "{summary}")?;
    }
    out.flush()?;
    Ok(ExitStatus::from_ok(failed == 0))
}

fn print_file(
    out: &mut impl Write,
    args: &IsEmptyArgs,
    path: &Path,
    name: &str,
    examined: &Examined,
    first_arg: &str,
) -> io::Result<()> {
    let shown = path.display();
    if args.last {
        match examined.newest {
            Some((t, v)) => writeln!(out, "{shown}: Most recent DP: {t} or {}\t{}", rfc3339_utc(t), go_fixed2(v))?,
            None => writeln!(out, "{shown}: No valid data points")?,
        }
    }
    if args.debug {
        writeln!(out, "{shown}: {} data points used out of {} in {first_arg}", examined.points, examined.slots)?;
    }
    if !args.debug && !args.last && examined.points == 0 {
        if args.metric_name {
            writeln!(out, "{name}")?;
        } else {
            writeln!(out, "{shown}")?;
        }
    }
    Ok(())
}

/// The metric a path under `prefix` stores: `prefix/a/b.wsp` → `a.b`. A path outside the prefix is
/// taken as relative to it. (Go strips the prefix as a string, so `/data/whisper2/x.wsp` under
/// `/data/whisper` becomes `2.x`, and removes the first `.wsp` anywhere in the path.)
pub(crate) fn metric_name(path: &Path, prefix: &Path) -> String {
    let relative = path.strip_prefix(prefix).unwrap_or(path);
    let parts: Vec<String> = relative
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let joined = parts.join(".");
    joined.strip_suffix(".wsp").map(str::to_owned).unwrap_or(joined)
}

/// Go's `%.2f`: infinities as `+Inf` / `-Inf`.
fn go_fixed2(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v:.2}")
    }
}

/// Go's `time.Unix(t, 0).UTC().Format(time.RFC3339)`: `2023-11-14T22:13:20Z`.
pub(crate) fn rfc3339_utc(t: i64) -> String {
    bucky_wire::UtcTime::from_unix(t).rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(go_fixed2(0.125), "0.12");
        assert_eq!(go_fixed2(-0.0), "-0.00");
        assert_eq!(go_fixed2(f64::INFINITY), "+Inf");
    }

    #[test]
    fn metric_names_are_relative_to_the_prefix() {
        let prefix = Path::new("/opt/graphite/storage/whisper");
        assert_eq!(metric_name(Path::new("/opt/graphite/storage/whisper/a/b.wsp"), prefix), "a.b");
        assert_eq!(metric_name(Path::new("a/b/c.wsp"), prefix), "a.b.c");
        assert_eq!(
            metric_name(Path::new("/opt/graphite/storage/whisper2/x.wsp"), prefix),
            "opt.graphite.storage.whisper2.x"
        );
    }
}
