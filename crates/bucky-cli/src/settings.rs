//! Settings: what the command line asks for, turned into validated values before any work starts (as fd's
//! `Opts` → `Config` and uv's `settings.rs`).
//!
//! [`Settings::resolve`] resolves and checks the common flags of the cluster commands: each value comes from
//! its flag, else its environment variable (`BUCKYHOST`, `BUCKY_TOKEN_FILE`, `BUCKY_CLUSTER`,
//! `BUCKY_CONFIG`), else the named cluster of the config file (see [`crate::config_file`]), else bucky's
//! default; and each remembers where it came from, for `bucky config show`. [`Selection`] is which metrics a
//! command works on. A regex is checked once, when clap parses it ([`crate::names::MetricRegex`]).

mod engine;

pub(crate) use self::engine::engine_options;

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::cli::{ClusterArgs, NamesArgs, ScopeArgs, BUCKYHOST, BUCKY_TOKEN_FILE};
use crate::config::{Addr, Config, DEFAULT_PORT};
use crate::config_file::{ConfigFile, FileCluster};
use crate::names::{parse_name_list, MetricRegex};
use crate::UsageError;

/// Default seed agent.
pub(crate) const DEFAULT_HOST: &str = "localhost:4242";
/// Default `--workers`.
pub(crate) const DEFAULT_WORKERS: usize = 5;
/// Default `--timeout`, in seconds.
pub(crate) const DEFAULT_TIMEOUT: u64 = 30;
/// Default `--cache-wait`, in seconds.
pub(crate) const DEFAULT_CACHE_WAIT: u64 = 600;
/// Picks a named cluster of the config file when `--cluster` is not given.
pub(crate) const BUCKY_CLUSTER: &str = "BUCKY_CLUSTER";
/// The config file, when `--config` is not given.
pub(crate) const BUCKY_CONFIG: &str = "BUCKY_CONFIG";
/// The per-user config file, below `$HOME`.
pub(crate) const USER_CONFIG: &str = ".config/bucky/config.toml";
/// The system-wide config file.
pub(crate) const SYSTEM_CONFIG: &str = "/etc/bucky/config.toml";

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env(&'static str),
    /// A cluster's table of the config file.
    File {
        /// The file.
        path: PathBuf,
        /// The table.
        cluster: String,
    },
    /// The config file's `default` key (for the cluster's name).
    FileDefault(PathBuf),
    /// bucky's default.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(var) => write!(f, "env {var}"),
            Source::File { path, cluster } => write!(f, "file {} [{cluster}]", path.display()),
            Source::FileDefault(path) => write!(f, "file {} (default)", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One setting in force, for `bucky config show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shown {
    /// Its name, as in the config file (or the flag's).
    pub key: &'static str,
    /// Its value as text (`None`: not set).
    pub value: Option<String>,
    /// Where it came from.
    pub source: Source,
}

/// What the resolution reads besides the flags: the environment and where the system-wide file is (so
/// tests need not touch the process's environment or `/etc`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Environment {
    /// The environment variables that matter (unset and empty ones left out).
    pub vars: std::collections::BTreeMap<String, String>,
    /// The system-wide config file.
    pub system_file: PathBuf,
}

impl Environment {
    /// This process's.
    pub(crate) fn from_process() -> Environment {
        let vars = [BUCKYHOST, BUCKY_TOKEN_FILE, BUCKY_CLUSTER, BUCKY_CONFIG, "HOME"]
            .into_iter()
            .filter_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()).map(|v| (var.to_owned(), v)))
            .collect();
        Environment { vars, system_file: PathBuf::from(SYSTEM_CONFIG) }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The config file to read: `--config`, else `$BUCKY_CONFIG` (both must exist), else the per-user one,
    /// else the system-wide one, if they exist.
    fn config_file(&self, flag: Option<&Path>) -> Option<PathBuf> {
        if let Some(path) = flag {
            return Some(path.to_owned());
        }
        if let Some(path) = self.var(BUCKY_CONFIG) {
            return Some(PathBuf::from(path));
        }
        let user = self.var("HOME").map(|home| Path::new(home).join(USER_CONFIG));
        user.into_iter().chain([self.system_file.clone()]).find(|p| p.exists())
    }
}

/// The common flags resolved against the environment and the config file, validated once: the
/// [`Config`] every command uses, and where each value came from.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The validated settings.
    pub config: Config,
    /// Every value in force with its source, in a fixed order.
    pub shown: Vec<Shown>,
}

/// The first of flag, environment variable, config file, default that has a value.
fn pick<T: Clone>(
    flag: Option<T>,
    env: Option<(&'static str, T)>,
    file: Option<(T, &Source)>,
    default: Option<T>,
) -> (Option<T>, Source) {
    if let Some(v) = flag {
        return (Some(v), Source::Flag);
    }
    if let Some((var, v)) = env {
        return (Some(v), Source::Env(var));
    }
    if let Some((v, source)) = file {
        return (Some(v), source.clone());
    }
    (default, Source::Default)
}

impl Settings {
    /// Resolves `args`: flags beat environment variables, which beat the config file's cluster, which
    /// beats the defaults. Reads the config file and the token file; every problem is one line.
    pub(crate) fn resolve(args: &ClusterArgs, env: &Environment) -> anyhow::Result<Settings> {
        let (cluster, cluster_source) =
            pick(args.cluster.clone(), env.var(BUCKY_CLUSTER).map(|v| (BUCKY_CLUSTER, v.to_owned())), None, None);
        let file_path = env.config_file(args.config.as_deref());
        let file = match &file_path {
            Some(path) => Some(ConfigFile::load(path).map_err(|e| UsageError(e.to_string()))?),
            None if cluster.is_some() => {
                let user = env.var("HOME").map_or_else(|| format!("~/{USER_CONFIG}"), |h| format!("{h}/{USER_CONFIG}"));
                return Err(UsageError(format!(
                    "--cluster {}: no config file (give --config FILE or ${BUCKY_CONFIG}, or write {user} or {})",
                    cluster.unwrap_or_default(),
                    env.system_file.display()
                ))
                .into());
            }
            None => None,
        };
        // The cluster: named by flag or env, else the file's default.
        let (cluster, cluster_source) = match (&cluster, &file) {
            (None, Some(file)) if file.default.is_some() => {
                (file.default.clone(), Source::FileDefault(file.path.clone()))
            }
            _ => (cluster, cluster_source),
        };
        let entry = match (&cluster, &file) {
            (Some(name), Some(file)) => Some((
                file.cluster(name).map_err(|e| UsageError(e.to_string()))?.clone(),
                Source::File { path: file.path.clone(), cluster: name.clone() },
            )),
            _ => None,
        };
        let from_file = |get: fn(&FileCluster) -> Option<String>| {
            entry.as_ref().and_then(|(c, source)| get(c).map(|v| (v, source)))
        };
        let path_text = |p: &PathBuf| p.display().to_string();

        let (host, host_source) = pick(
            args.host.clone(),
            env.var(BUCKYHOST).map(|v| (BUCKYHOST, v.to_owned())),
            from_file(|c| c.host.clone()),
            Some(DEFAULT_HOST.to_owned()),
        );
        let host = host.unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let seed =
            Addr::parse(&host, DEFAULT_PORT).map_err(|e| UsageError(format!("{e} (host from {host_source})")))?;
        let (workers, workers_source) = pick(
            args.workers,
            None,
            entry.as_ref().and_then(|(c, source)| c.workers.map(|w| (w, source))),
            Some(DEFAULT_WORKERS),
        );
        let workers = workers.unwrap_or(DEFAULT_WORKERS);
        if workers == 0 {
            return Err(UsageError("--workers must be at least 1".into()).into());
        }
        let (timeout, timeout_source) = pick(args.timeout, None, None, Some(DEFAULT_TIMEOUT));
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout == 0 {
            return Err(UsageError("--timeout must be at least 1 second".into()).into());
        }
        let (cache_wait, cache_wait_source) = pick(args.cache_wait, None, None, Some(DEFAULT_CACHE_WAIT));
        let cache_wait = cache_wait.unwrap_or(DEFAULT_CACHE_WAIT);
        let (token_file, token_source) = pick(
            args.token_file.clone(),
            env.var(BUCKY_TOKEN_FILE).map(|v| (BUCKY_TOKEN_FILE, PathBuf::from(v))),
            entry.as_ref().and_then(|(c, source)| c.token_file.clone().map(|t| (t, source))),
            None,
        );
        let token = match &token_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {} (from {token_source})", path.display()))?;
                let token = text.trim().to_owned();
                if token.is_empty() {
                    return Err(UsageError(format!(
                        "the token file {} (from {token_source}) is empty",
                        path.display()
                    ))
                    .into());
                }
                Some(token)
            }
        };
        let (ring_config, ring_config_source) =
            pick(None, None, entry.as_ref().and_then(|(c, s)| c.ring_config.clone().map(|r| (r, s))), None);
        let (ring_cluster, ring_cluster_source) = pick(None, None, from_file(|c| c.ring_cluster.clone()), None);

        let file_source = match (&args.config, env.var(BUCKY_CONFIG), &file_path) {
            (Some(_), _, _) => Source::Flag,
            (None, Some(_), _) => Source::Env(BUCKY_CONFIG),
            _ => Source::Default,
        };
        let shown = vec![
            Shown { key: "config", value: file_path.as_ref().map(path_text), source: file_source },
            Shown { key: "cluster", value: cluster.clone(), source: cluster_source },
            Shown { key: "host", value: Some(seed.to_string()), source: host_source },
            Shown { key: "token_file", value: token_file.as_ref().map(path_text), source: token_source },
            Shown { key: "workers", value: Some(workers.to_string()), source: workers_source },
            Shown { key: "timeout", value: Some(format!("{timeout}s")), source: timeout_source },
            Shown { key: "cache_wait", value: Some(format!("{cache_wait}s")), source: cache_wait_source },
            Shown { key: "ring_config", value: ring_config.as_ref().map(path_text), source: ring_config_source },
            Shown { key: "ring_cluster", value: ring_cluster.clone(), source: ring_cluster_source },
        ];
        let config = Config {
            seed,
            workers,
            json: args.json,
            verbose: args.verbose,
            force: args.force,
            timeout: Duration::from_secs(timeout),
            cache_wait: Duration::from_secs(cache_wait),
            snappy: !args.no_encoding,
            token,
            progress: !args.no_progress && !args.verbose && std::io::stderr().is_terminal(),
            diverse_replicas: args.diverse_replicas,
            ring_config,
            ring_cluster,
        };
        Ok(Settings { config, shown })
    }
}

/// The validated common flags, against this process's environment and config file (see
/// [`Settings::resolve`]).
pub(crate) fn config(args: &ClusterArgs) -> anyhow::Result<Config> {
    Ok(Settings::resolve(args, &Environment::from_process())?.config)
}

/// The settings of `audit` and `repair`: the common flags and what to audit. A window end that is not a real
/// time or a batch of 0 is a usage error.
pub(crate) fn audit(
    cluster: &ClusterArgs,
    names: &NamesArgs,
    exclude: &[String],
    until: Option<i64>,
    batch: usize,
) -> anyhow::Result<(Config, AuditSpec)> {
    let config = config(cluster)?;
    let selection = Selection::from_args(names, false)?;
    let until = until.unwrap_or_else(crate::engine::unix_now);
    if !(0..=i64::from(u32::MAX)).contains(&until) {
        return Err(UsageError(format!("--until {until} is not a Unix time in seconds")).into());
    }
    if batch == 0 {
        return Err(UsageError("the digest batch must be at least 1".into()).into());
    }
    let excludes = exclude.iter().filter(|p| !p.is_empty()).cloned().collect();
    Ok((config, AuditSpec { selection, excludes, until, batch }))
}

/// What `audit` (and `repair`'s audit) looks at, and how.
#[derive(Debug, Clone)]
pub(crate) struct AuditSpec {
    /// Which metrics.
    pub(crate) selection: Selection,
    /// Names starting with one of these are skipped (carbon's own statistics by default).
    pub(crate) excludes: Vec<String>,
    /// End of the archives' windows, Unix seconds: the same for every replica.
    pub(crate) until: i64,
    /// Names per digest request.
    pub(crate) batch: usize,
}

/// Which metrics a command works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    /// Every metric on the cluster.
    All,
    /// These names (deduplicated, in the order given).
    Names(Vec<String>),
    /// Names matching this regex (evaluated by the agents, RE2 syntax).
    Regex(MetricRegex),
}

impl Selection {
    /// Resolves `[-r] [names|-|regex]`. `-` reads stdin (a JSON array, or one name per line). With
    /// `require` set, an empty selection is a usage error.
    pub(crate) fn from_args(args: &NamesArgs, require: bool) -> anyhow::Result<Selection> {
        if args.regex {
            return match args.names.as_slice() {
                [regex] => Ok(Selection::Regex(MetricRegex::parse(regex).map_err(UsageError)?)),
                [] => Err(UsageError("-r/--regex needs a regular expression".into()).into()),
                _ => Err(UsageError("-r/--regex takes exactly one regular expression".into()).into()),
            };
        }
        let mut names = Vec::new();
        for arg in &args.names {
            if arg == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("cannot read names from stdin")?;
                names.extend(parse_name_list(&text)?);
            } else {
                names.push(arg.clone());
            }
        }
        if names.is_empty() {
            if args.names.is_empty() && !require {
                return Ok(Selection::All);
            }
            return Err(UsageError("no metric names given (use NAME..., '-' for stdin, or -r REGEX)".into()).into());
        }
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        Ok(Selection::Names(names))
    }

    /// The regex, for a listing query (`None`: every name, or names asked for one by one).
    pub(crate) fn regex(&self) -> Option<&MetricRegex> {
        match self {
            Selection::Regex(regex) => Some(regex),
            Selection::All | Selection::Names(_) => None,
        }
    }
}

/// The settings of a scoped command (`list`, `du`, `stat`, `tar`, `delete`): the common flags, which
/// metrics, and whether only the seed is asked.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    /// The validated common flags.
    pub(crate) config: Config,
    /// Which metrics.
    pub(crate) selection: Selection,
    /// Only the seed agent (`--single`).
    pub(crate) single: bool,
}

impl Scope {
    /// Validates the common flags, then reads which metrics (stdin included). With `require_names`, an
    /// empty selection is a usage error.
    pub(crate) fn from_args(args: &ScopeArgs, require_names: bool) -> anyhow::Result<Scope> {
        let config = config(&args.cluster)?;
        let selection = Selection::from_args(&args.names, require_names)?;
        Ok(Scope { config, selection, single: args.single })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The common flags of `bucky list ARGS…`.
    fn flags(args: &[&str]) -> ClusterArgs {
        let cli = crate::Cli::try_parse_from(["bucky", "list"].iter().chain(args)).unwrap();
        let crate::Command::List(list) = cli.command else { panic!("not list") };
        list.scope.cluster
    }

    /// A directory with a config file, a token file per cluster, and an environment that sees no other.
    struct Setup {
        dir: tempfile::TempDir,
        env: Environment,
    }

    impl Setup {
        fn new(config: &str) -> Setup {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("config.toml"), config).unwrap();
            for name in ["main.jwt", "env.jwt", "flag.jwt"] {
                std::fs::write(dir.path().join(name), format!("token-of-{name}\n")).unwrap();
            }
            std::fs::write(dir.path().join("empty.jwt"), " \n").unwrap();
            let env = Environment { vars: Default::default(), system_file: dir.path().join("system.toml") };
            Setup { dir, env }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        fn with_var(mut self, var: &str, value: &str) -> Setup {
            self.env.vars.insert(var.into(), value.into());
            self
        }

        fn resolve(&self, args: &[&str]) -> anyhow::Result<Settings> {
            Settings::resolve(&flags(args), &self.env)
        }

        fn source(&self, settings: &Settings, key: &str) -> (Option<String>, String) {
            let shown = settings.shown.iter().find(|s| s.key == key).unwrap();
            (shown.value.clone(), shown.source.to_string())
        }
    }

    const FILE: &str = "default = \"main\"\n[main]\nhost = \"g1:5000\"\ntoken_file = \"main.jwt\"\nworkers = 9\n\
                        ring_config = \"carbon.conf\"\nring_cluster = \"relays\"\n[other]\nhost = \"o1\"\n";

    #[test]
    fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
        let setup = Setup::new(FILE);
        let file = setup.path("config.toml");
        // The file's default cluster, found through --config.
        let s = setup.resolve(&["--config", &file]).unwrap();
        assert_eq!(setup.source(&s, "cluster").0.as_deref(), Some("main"));
        assert_eq!(s.config.seed.to_string(), "g1:5000");
        assert_eq!(s.config.workers, 9);
        assert_eq!(s.config.token.as_deref(), Some("token-of-main.jwt"));
        assert_eq!(s.config.ring_config.as_deref(), Some(setup.dir.path().join("carbon.conf").as_path()));
        assert_eq!(s.config.ring_cluster.as_deref(), Some("relays"));
        let in_main = format!("file {file} [main]");
        assert_eq!(setup.source(&s, "host"), (Some("g1:5000".into()), in_main.clone()));
        assert_eq!(setup.source(&s, "workers").1, in_main);
        assert_eq!(setup.source(&s, "cluster"), (Some("main".into()), format!("file {file} (default)")));
        assert_eq!(setup.source(&s, "config"), (Some(file.clone()), "flag".into()));
        assert_eq!(setup.source(&s, "timeout"), (Some("30s".into()), "default".into()));

        // The environment beats the file; flags beat both.
        let env_token = setup.path("env.jwt");
        let setup =
            setup.with_var(BUCKYHOST, "e1:6000").with_var(BUCKY_TOKEN_FILE, &env_token).with_var(BUCKY_CONFIG, &file);
        let s = setup.resolve(&[]).unwrap();
        assert_eq!(setup.source(&s, "config").1, "env BUCKY_CONFIG");
        assert_eq!(setup.source(&s, "host"), (Some("e1:6000".into()), "env BUCKYHOST".into()));
        assert_eq!(s.config.token.as_deref(), Some("token-of-env.jwt"));
        assert_eq!(s.config.workers, 9, "no environment variable for workers: the file's");
        let flag_token = setup.path("flag.jwt");
        let s = setup.resolve(&["-h", "f1", "-w", "2", "--token-file", &flag_token, "--timeout", "7"]).unwrap();
        assert_eq!(setup.source(&s, "host"), (Some("f1:4242".into()), "flag".into()));
        assert_eq!((s.config.workers, s.config.token.as_deref()), (2, Some("token-of-flag.jwt")));
        assert_eq!(setup.source(&s, "timeout"), (Some("7s".into()), "flag".into()));
        // --cluster (or $BUCKY_CLUSTER) picks another table; what it lacks comes from the defaults.
        let s = setup.resolve(&["--cluster", "other"]).unwrap();
        assert_eq!(setup.source(&s, "cluster"), (Some("other".into()), "flag".into()));
        assert_eq!(s.config.seed.to_string(), "e1:6000", "the environment still beats the file");
        let setup = Setup::new(FILE).with_var(BUCKY_CLUSTER, "other");
        let s = setup.resolve(&["--config", &setup.path("config.toml")]).unwrap();
        assert_eq!(setup.source(&s, "cluster").1, "env BUCKY_CLUSTER");
        assert_eq!(s.config.seed.to_string(), "o1:4242");
        assert_eq!((s.config.workers, s.config.token.as_deref()), (DEFAULT_WORKERS, None));
        assert_eq!(setup.source(&s, "workers"), (Some("5".into()), "default".into()));
        assert_eq!(setup.source(&s, "ring_config"), (None, "default".into()));
    }

    #[test]
    fn selections() {
        let names =
            |regex: bool, names: &[&str]| NamesArgs { regex, names: names.iter().map(|n| n.to_string()).collect() };
        assert_eq!(Selection::from_args(&names(false, &[]), false).unwrap(), Selection::All);
        assert_eq!(
            Selection::from_args(&names(false, &["b", "a", "b"]), false).unwrap(),
            Selection::Names(vec!["b".into(), "a".into()])
        );
        let regex = Selection::from_args(&names(true, &["^a"]), false).unwrap();
        assert_eq!(regex.regex().map(MetricRegex::as_str), Some("^a"));
        for (args, why) in [
            (names(true, &["a("]), "invalid regex"),
            (names(true, &[]), "-r/--regex needs a regular expression"),
            (names(true, &["a", "b"]), "takes exactly one"),
            (names(false, &[]), "no metric names given"),
        ] {
            let require = !args.regex;
            let err = Selection::from_args(&args, require).unwrap_err();
            assert!(err.downcast_ref::<UsageError>().is_some(), "{err}");
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    #[test]
    fn the_file_is_looked_for_in_home_then_etc() {
        let setup = Setup::new(FILE);
        // Neither exists: defaults, no file.
        let home = tempfile::tempdir().unwrap();
        let setup = setup.with_var("HOME", home.path().to_str().unwrap());
        let s = setup.resolve(&[]).unwrap();
        assert_eq!((setup.source(&s, "config").0, s.config.seed.to_string()), (None, DEFAULT_HOST.to_owned()));
        assert_eq!(setup.source(&s, "host").1, "default");
        // The system-wide file.
        std::fs::write(&setup.env.system_file, "default = \"s\"\n[s]\nhost = \"sys1\"\n").unwrap();
        assert_eq!(setup.resolve(&[]).unwrap().config.seed.host, "sys1");
        // The user's beats it.
        let user = home.path().join(USER_CONFIG);
        std::fs::create_dir_all(user.parent().unwrap()).unwrap();
        std::fs::write(&user, "default = \"u\"\n[u]\nhost = \"user1\"\n").unwrap();
        let s = setup.resolve(&[]).unwrap();
        assert_eq!(
            (setup.source(&s, "config").0, s.config.seed.host.as_str()),
            (Some(user.display().to_string()), "user1")
        );
    }

    #[test]
    fn errors_are_one_line_each() {
        let setup = Setup::new(FILE);
        let file = setup.path("config.toml");
        let err = |setup: &Setup, args: &[&str]| {
            let e = setup.resolve(args).unwrap_err();
            let text = format!("{e:#}");
            assert!(!text.contains('\n'), "{text}");
            (text, e.chain().any(|c| c.downcast_ref::<UsageError>().is_some()))
        };
        let (text, usage) = err(&setup, &["--config", &file, "--cluster", "nope"]);
        assert!(usage, "a bad config is bad usage (exit 2)");
        assert!(text.contains("unknown cluster \"nope\"") && text.contains("(clusters: main, other)"), "{text}");
        let (text, _) = err(&setup, &["--cluster", "main"]);
        assert!(text.contains("--cluster main: no config file"), "{text}");
        let (text, _) = err(&setup, &["--config", &setup.path("missing.toml")]);
        assert!(text.contains("cannot read the config file") && text.contains("missing.toml"), "{text}");
        std::fs::write(setup.dir.path().join("bad.toml"), "[main]\nhots = \"x\"\n").unwrap();
        let (text, _) = err(&setup, &["--config", &setup.path("bad.toml")]);
        assert!(text.contains("unknown key \"hots\" in [main]") && text.contains("bad.toml"), "{text}");
        std::fs::write(setup.dir.path().join("bad.toml"), "[main]\nhost = \"[x:1\"\n").unwrap();
        let (text, usage) = err(&setup, &["--config", &setup.path("bad.toml"), "--cluster", "main"]);
        assert!(usage && text.contains("invalid address") && text.contains("[main]"), "{text}");
        let (text, usage) = err(&setup, &["--config", &file, "--token-file", &setup.path("empty.jwt")]);
        assert!(usage && text.contains("empty.jwt (from flag) is empty"), "{text}");
        let setup = setup.with_var(BUCKY_TOKEN_FILE, "/nonexistent/token");
        let (text, _) = err(&setup, &["--config", &file]);
        assert!(text.contains("/nonexistent/token (from env BUCKY_TOKEN_FILE)"), "{text}");
        let (text, usage) = err(&Setup::new(""), &["-w", "0"]);
        assert!(usage && text.contains("--workers must be at least 1"), "{text}");
    }
}
