//! The engine's flags ([`EngineArgs`]) as validated [`engine::Options`]: the engine itself knows nothing
//! of clap.

use std::time::Duration;

use bucky_diag::GraphiteTarget;

use crate::cli::{DampingArgs, EngineArgs, GraphiteArgs, ThrottleArgs};
use crate::config::Addr;
use crate::engine::{self, DampingConfig, Interrupts, Operation, ThrottleOptions};
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
    if !(1..=MAX_INFLIGHT_MIB).contains(&args.inflight_mib) {
        return Err(UsageError(format!(
            "--inflight-mib must be from 1 to {MAX_INFLIGHT_MIB} (MiB of files in flight), not {}",
            args.inflight_mib
        ))
        .into());
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
        offload: args.offload,
        inflight_bytes: args.inflight_mib << 20,
        attempts: args.attempts,
        max_rate: args.max_rate,
        state_file: args.state_file.clone(),
        error_file: args.error_file.clone(),
        error_tolerance: args.error_tolerance,
        now: engine::unix_now,
        interrupts: Interrupts::CtrlC,
        throttle: throttle_options(&args.throttle)?,
        damping: damping_config(&args.damping)?,
        graphite: graphite_target(&args.graphite, op)?,
    })
}

/// The largest `--inflight-mib`: 1 TiB (the budget counts KiB in a u32, up to 4 TiB).
const MAX_INFLIGHT_MIB: u64 = 1 << 20;

/// Carbon's plaintext line receiver port, when `--graphite` names none.
const CARBON_LINE_PORT: u16 = 2003;

/// Flap damping's parameters; a [`UsageError`] for a value out of range or limits in the wrong order.
pub(crate) fn damping_config(args: &DampingArgs) -> Result<DampingConfig, UsageError> {
    let positive = |flag: &str, value: f64| {
        if value.is_finite() && value > 0.0 && value <= 1e12 {
            Ok(value)
        } else {
            Err(UsageError(format!("{flag} must be a positive number, not {value}")))
        }
    };
    let seconds = |flag: &str, value: f64| {
        if value.is_finite() && (0.01..=31_536_000.0).contains(&value) {
            Ok(Duration::from_secs_f64(value))
        } else {
            Err(UsageError(format!("{flag} must be a number of seconds from 0.01 to 31536000, not {value}")))
        }
    };
    let config = DampingConfig {
        penalty: positive("--flap-penalty", args.flap_penalty)?,
        suppress: positive("--flap-suppress", args.flap_suppress)?,
        reuse: positive("--flap-reuse", args.flap_reuse)?,
        half_life: seconds("--flap-half-life", args.flap_half_life)?,
        max_suppress: seconds("--flap-max-suppress", args.flap_max_suppress)?,
    };
    if config.reuse >= config.suppress {
        return Err(UsageError(format!(
            "--flap-reuse ({}) must be below --flap-suppress ({}): a node is reused only after its penalty fell \
             under the limit that suppressed it",
            config.reuse, config.suppress
        )));
    }
    Ok(config)
}

/// Where the progress goes, `None` without `--graphite`; a [`UsageError`] for a bad address, prefix or
/// interval, or for a Graphite flag given without `--graphite` (it would do nothing).
pub(crate) fn graphite_target(args: &GraphiteArgs, op: Operation) -> Result<Option<GraphiteTarget>, UsageError> {
    let Some(address) = &args.graphite else {
        let given = [
            ("--graphite-prefix (-graphite-metrics-prefix)", args.graphite_prefix.is_some()),
            ("--graphite-interval (-graphite-stat-interval)", args.graphite_interval.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
            return Err(UsageError(format!(
                "{flag} sets where progress goes: add --graphite HOST:PORT (-graphite-endpoint) to send it"
            )));
        }
        return Ok(None);
    };
    let address = Addr::parse(address, CARBON_LINE_PORT)
        .map_err(|UsageError(why)| UsageError(format!("--graphite: {why}")))?
        .authority();
    let prefix = match &args.graphite_prefix {
        Some(prefix) => {
            let bad = prefix.is_empty()
                || prefix.split('.').any(str::is_empty)
                || prefix.chars().any(|c| c.is_whitespace() || c.is_control());
            if bad {
                return Err(UsageError(format!(
                    "--graphite-prefix {prefix:?}: want a dotted Graphite path (no empty part, no spaces)"
                )));
            }
            prefix.clone()
        }
        None => format!("{}.{}", bucky_diag::metrics::default_prefix("cli"), op.name()),
    };
    let interval = args.graphite_interval.unwrap_or(60.0);
    if !(interval.is_finite() && (0.05..=86_400.0).contains(&interval)) {
        return Err(UsageError(format!(
            "--graphite-interval must be a number of seconds from 0.05 to 86400, not {interval}"
        )));
    }
    Ok(Some(GraphiteTarget { address, prefix, interval: Duration::from_secs_f64(interval) }))
}

/// The go-carbon throttle's options, `None` when it is off; a [`UsageError`] for a value out of range, or
/// for a throttle flag given without `--go-carbon-throttle` (it would do nothing).
pub(crate) fn throttle_options(args: &ThrottleArgs) -> Result<Option<ThrottleOptions>, UsageError> {
    if !args.go_carbon_throttle {
        let given = [
            ("--go-carbon-port", args.go_carbon_port.is_some()),
            ("--go-carbon-protocol", args.go_carbon_protocol.is_some()),
            ("--go-carbon-server", !args.go_carbon_server.is_empty()),
            ("--go-carbon-cache-threshold", args.go_carbon_cache_threshold.is_some()),
            ("--go-carbon-resume-threshold", args.go_carbon_resume_threshold.is_some()),
            ("--go-carbon-poll-interval", args.go_carbon_poll_interval.is_some()),
            ("--throttle-rate (-metrics-per-second)", args.throttle_rate.is_some()),
            ("--throttle-speed-up (-sync-speed-up-interval)", args.throttle_speed_up.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
            return Err(UsageError(format!(
                "{flag} sets the go-carbon throttle: add --go-carbon-throttle (-go-carbon-health-check) to turn it \
                 on (--max-rate paces source nodes without it)"
            )));
        }
        return Ok(None);
    }
    let share = |flag: &str, value: f64| {
        if value.is_finite() && value > 0.0 && value <= 1.0 {
            Ok(value)
        } else {
            Err(UsageError(format!("{flag} must be a share of the cache's limit, above 0 and at most 1, not {value}")))
        }
    };
    let threshold = share("--go-carbon-cache-threshold", args.go_carbon_cache_threshold.unwrap_or(0.75))?;
    let resume = share("--go-carbon-resume-threshold", args.go_carbon_resume_threshold.unwrap_or(threshold * 0.8))?;
    if resume > threshold {
        return Err(UsageError(format!(
            "--go-carbon-resume-threshold ({resume}) must not be above --go-carbon-cache-threshold ({threshold})"
        )));
    }
    let interval = args.go_carbon_poll_interval.unwrap_or(10.0);
    if !(interval.is_finite() && (0.05..=86_400.0).contains(&interval)) {
        return Err(UsageError(format!(
            "--go-carbon-poll-interval must be a number of seconds from 0.05 to 86400, not {interval}"
        )));
    }
    let rate = args.throttle_rate.unwrap_or(1.0);
    if !(rate.is_finite() && rate > 0.0) {
        return Err(UsageError(format!("--throttle-rate must be a positive number of metrics per second, not {rate}")));
    }
    let speed_up = args.throttle_speed_up.unwrap_or(600.0);
    if !speed_up.is_finite() || speed_up > 1e9 {
        return Err(UsageError(format!("--throttle-speed-up must be a number of seconds, not {speed_up}")));
    }
    let port = args.go_carbon_port.unwrap_or(8080);
    if port == 0 {
        return Err(UsageError("--go-carbon-port must not be 0".into()));
    }
    let servers = args
        .go_carbon_server
        .iter()
        .map(|text| {
            let (node, server) = text
                .split_once('=')
                .filter(|(node, _)| !node.trim().is_empty())
                .ok_or_else(|| UsageError(format!("--go-carbon-server {text:?}: want NODE=HOST:PORT")))?;
            let server = Addr::parse(server, port)
                .map_err(|UsageError(why)| UsageError(format!("--go-carbon-server {text:?}: {why}")))?;
            Ok((node.trim().to_owned(), server))
        })
        .collect::<Result<Vec<_>, UsageError>>()?;
    Ok(Some(ThrottleOptions {
        scheme: if args.go_carbon_protocol.as_deref() == Some("https") { "https" } else { "http" },
        port,
        servers,
        threshold,
        resume,
        interval: Duration::from_secs_f64(interval),
        rate,
        speed_up: (speed_up > 0.0).then(|| Duration::from_secs_f64(speed_up)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The engine flags of `bucky rebalance ARGS…`, go-style spellings rewritten as `main` does.
    fn engine_args(args: &[&str]) -> EngineArgs {
        let args = ["bucky", "rebalance"].iter().chain(args).map(std::ffi::OsString::from);
        let args = crate::cli::go_style_args(&<crate::Cli as clap::CommandFactory>::command(), args);
        let cli = crate::Cli::try_parse_from(args).unwrap();
        let crate::Command::Rebalance(rebalance) = cli.command else { panic!("not rebalance") };
        rebalance.engine
    }

    /// The throttle options of `bucky rebalance ARGS…`.
    fn throttle(args: &[&str]) -> Result<Option<ThrottleOptions>, UsageError> {
        throttle_options(&engine_args(args).throttle)
    }

    #[test]
    fn flap_damping_defaults_and_flags() {
        let config = damping_config(&engine_args(&[]).damping).unwrap();
        assert_eq!(config, DampingConfig::default());
        assert_eq!((config.penalty, config.suppress, config.reuse), (1000.0, 2000.0, 750.0));
        assert_eq!((config.half_life, config.max_suppress), (Duration::from_secs(30), Duration::from_secs(300)));
        let args = ["--flap-half-life", "4", "--flap-suppress", "1500", "--flap-reuse", "600", "--flap-penalty", "900"];
        let config = damping_config(&engine_args(&args).damping).unwrap();
        assert_eq!((config.penalty, config.suppress, config.reuse), (900.0, 1500.0, 600.0));
        assert_eq!(config.half_life, Duration::from_secs(4));
        let cases: &[(&[&str], &str)] = &[
            (
                &["--flap-reuse", "2000"],
                "must be below --flap-suppress (2000): a node is reused only after its penalty fell under",
            ),
            (&["--flap-half-life", "0"], "--flap-half-life must be a number of seconds from 0.01"),
            (&["--flap-penalty=-1"], "--flap-penalty must be a positive number, not -1"),
            (&["--flap-suppress", "NaN"], "not NaN"),
            (&["--flap-max-suppress", "0"], "--flap-max-suppress must be a number of seconds"),
        ];
        for (args, want) in cases {
            let UsageError(why) = damping_config(&engine_args(args).damping).expect_err(&args.join(" "));
            assert!(why.contains(want) && !why.contains('\n'), "{args:?}: {why}");
        }
    }

    #[test]
    fn graphite_flags_and_go_graphites_aliases() {
        let target = |args: &[&str]| graphite_target(&engine_args(args).graphite, Operation::Rebalance);
        assert!(target(&[]).unwrap().is_none());
        let t = target(&[
            "-graphite-endpoint",
            "g1:2103",
            "-graphite-metrics-prefix",
            "ops.bucky",
            "-graphite-stat-interval",
            "5",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (t.address.as_str(), t.prefix.as_str(), t.interval),
            ("g1:2103", "ops.bucky", Duration::from_secs(5))
        );
        let t = target(&["--graphite", "g1"]).unwrap().unwrap();
        assert_eq!((t.address.as_str(), t.interval), ("g1:2003", Duration::from_secs(60)));
        assert!(t.prefix.starts_with("bucky.cli.") && t.prefix.ends_with(".rebalance"), "{}", t.prefix);
        assert_eq!(t.prefix.split('.').count(), 4, "the hostname's dots are underscores: {}", t.prefix);
        let cases: &[(&[&str], &str)] = &[
            (&["--graphite-prefix", "a"], "add --graphite HOST:PORT (-graphite-endpoint)"),
            (&["-graphite-stat-interval", "5"], "--graphite-interval (-graphite-stat-interval) sets where"),
            (&["--graphite", "g:99999"], "--graphite: invalid address"),
            (&["--graphite", "g", "--graphite-prefix", "a..b"], "want a dotted Graphite path"),
            (&["--graphite", "g", "--graphite-prefix", "a b"], "want a dotted Graphite path"),
            (&["--graphite", "g", "--graphite-interval", "0"], "from 0.05 to 86400, not 0"),
        ];
        for (args, want) in cases {
            let UsageError(why) = target(args).expect_err(&args.join(" "));
            assert!(why.contains(want) && !why.contains('\n'), "{args:?}: {why}");
        }
    }

    #[test]
    fn go_graphites_flags_set_the_throttle() {
        let options = throttle(&[
            "-go-carbon-health-check",
            "-go-carbon-port",
            "9090",
            "-go-carbon-protocol",
            "https",
            "-go-carbon-cache-threshold",
            "0.5",
            "-go-carbon-health-check-interval",
            "2",
            "-metrics-per-second",
            "7",
            "-sync-speed-up-interval",
            "-1",
            "-no-random-easing",
        ])
        .unwrap()
        .unwrap();
        assert_eq!((options.scheme, options.port, options.threshold), ("https", 9090, 0.5));
        assert_eq!(options.resume, 0.4);
        assert_eq!((options.interval, options.rate, options.speed_up), (Duration::from_secs(2), 7.0, None));
        // Our defaults are go-graphite's, plus the lower mark.
        let options = throttle(&["--go-carbon-throttle", "--go-carbon-server", "10.0.0.2=10.0.9.2"]).unwrap().unwrap();
        assert_eq!((options.scheme, options.port, options.threshold), ("http", 8080, 0.75));
        assert!((options.resume - 0.6).abs() < 1e-9, "{}", options.resume);
        assert_eq!((options.interval, options.rate), (Duration::from_secs(10), 1.0));
        assert_eq!(options.speed_up, Some(Duration::from_secs(600)));
        assert_eq!(options.servers, [("10.0.0.2".to_owned(), Addr { host: "10.0.9.2".into(), port: 8080 })]);
        assert_eq!(throttle(&[]).unwrap(), None);
    }

    #[test]
    fn the_inflight_budget_defaults_to_4_mib_and_must_be_at_least_1() {
        let options = engine_options(Operation::Rebalance, &engine_args(&[]), 5, true).unwrap();
        assert_eq!(options.inflight_bytes, 4 << 20);
        let options = engine_options(Operation::Rebalance, &engine_args(&["--inflight-mib", "100"]), 5, true).unwrap();
        assert_eq!(options.inflight_bytes, 100 << 20);
        for bad in ["0", "2000000"] {
            let error = engine_options(Operation::Rebalance, &engine_args(&["--inflight-mib", bad]), 5, true)
                .expect_err(bad)
                .to_string();
            assert!(error.starts_with("--inflight-mib must be from 1 to 1048576") && !error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn bad_throttle_flags_are_one_line_usage_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&["-metrics-per-second", "3"], "--throttle-rate (-metrics-per-second) sets the go-carbon throttle"),
            (&["--go-carbon-port", "1"], "--go-carbon-port sets the go-carbon throttle: add --go-carbon-throttle"),
            (&["--go-carbon-throttle", "--go-carbon-cache-threshold", "1.5"], "above 0 and at most 1, not 1.5"),
            (&["--go-carbon-throttle", "--go-carbon-cache-threshold", "0"], "not 0"),
            (&["--go-carbon-throttle", "--go-carbon-resume-threshold", "0.8"], "must not be above"),
            (&["--go-carbon-throttle", "--go-carbon-poll-interval", "0"], "from 0.05 to 86400, not 0"),
            (&["--go-carbon-throttle", "--throttle-rate", "0"], "positive number of metrics per second, not 0"),
            (&["--go-carbon-throttle", "--throttle-rate", "NaN"], "not NaN"),
            (&["--go-carbon-throttle", "--go-carbon-server", "10.0.0.2"], "want NODE=HOST:PORT"),
            (&["--go-carbon-throttle", "--go-carbon-server", "=h:1"], "want NODE=HOST:PORT"),
            (&["--go-carbon-throttle", "--go-carbon-server", "n=h:99999"], "bad port"),
        ];
        for (args, want) in cases {
            let UsageError(why) = throttle(args).expect_err(&args.join(" "));
            assert!(why.contains(want) && !why.contains('\n'), "{args:?}: {why}");
        }
    }
}
