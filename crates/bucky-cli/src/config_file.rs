//! The CLI's config file: named clusters, carbonate style, in TOML.
//!
//! ```toml
//! default = "main"            # the cluster used without --cluster (optional)
//!
//! [main]                      # one table per cluster
//! host = "graphite1:4242"     # seed agent, as -h/--host
//! token_file = "main.jwt"     # as --token-file (relative paths: to this file's directory)
//! workers = 10                # as -w/--workers
//! ring_config = "/etc/carbon/carbon.conf"   # the cluster's ring file (carbon.conf, carbonate.conf, relay config)
//! ring_cluster = "main"       # which cluster of that file
//! ```
//!
//! The file is read whole and checked before anything uses it: invalid TOML, an unknown key, a value of the
//! wrong type and a `default` naming no cluster are each one line naming the file (and the cluster).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table, Value};

/// The keys a cluster table may have.
pub(crate) const CLUSTER_KEYS: [&str; 5] = ["host", "token_file", "workers", "ring_config", "ring_cluster"];

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    /// The file cannot be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML.
    #[error("invalid TOML in the config file {path}, line {line}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// Where (1-based).
        line: usize,
        /// The parser's reason.
        message: String,
    },
    /// A key the file may not have.
    #[error("unknown key {key:?} {place} of the config file {path} (known: {known})")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// `at the top level` or `in [cluster]`.
        place: String,
        /// The key.
        key: String,
        /// The keys allowed there.
        known: String,
    },
    /// A value of the wrong type.
    #[error("{key} in [{cluster}] of the config file {path} must be {want}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The cluster's table.
        cluster: String,
        /// The key.
        key: String,
        /// What it must be.
        want: &'static str,
    },
    /// `default` names no cluster.
    #[error("default = {name:?} in the config file {path} names no cluster (clusters: {clusters})")]
    UnknownDefault {
        /// The file.
        path: PathBuf,
        /// What `default` says.
        name: String,
        /// The clusters found.
        clusters: String,
    },
    /// `default` is not a string.
    #[error("default in the config file {path} must be the name of a cluster, as a string")]
    BadDefault {
        /// The file.
        path: PathBuf,
    },
    /// `--cluster NAME` is not in the file.
    #[error("unknown cluster {name:?} in the config file {path} (clusters: {clusters})")]
    UnknownCluster {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The clusters found.
        clusters: String,
    },
}

/// One cluster's table; every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FileCluster {
    /// Seed agent, `HOST[:PORT]` (validated where it is used, like `-h`).
    pub host: Option<String>,
    /// The JWT file (absolute: relative paths are taken from the config file's directory).
    pub token_file: Option<PathBuf>,
    /// Concurrent requests per node (≥ 1).
    pub workers: Option<usize>,
    /// The cluster's ring file (absolute, as `token_file`).
    pub ring_config: Option<PathBuf>,
    /// Which cluster of the ring file.
    pub ring_cluster: Option<String>,
}

/// A parsed, checked config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The cluster used without `--cluster`.
    pub default: Option<String>,
    /// The clusters by name.
    pub clusters: BTreeMap<String, FileCluster>,
}

impl ConfigFile {
    /// Reads and checks `path`.
    pub(crate) fn load(path: &Path) -> Result<ConfigFile, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read { path: path.to_owned(), source })?;
        ConfigFile::parse(&text, path)
    }

    /// Checks `text`, the contents of `path`.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<ConfigFile, FileError> {
        let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| FileError::Toml {
            path: path.to_owned(),
            line: e.span().map_or(1, |span| text[..span.start.min(text.len())].matches('\n').count() + 1),
            message: e.message().trim().replace('\n', " "),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut default = None;
        let mut clusters = BTreeMap::new();
        for (key, item) in doc.as_table().iter() {
            match item {
                Item::Table(table) => {
                    clusters.insert(key.to_owned(), cluster(table, key, path, base)?);
                }
                Item::Value(Value::String(name)) if key == "default" => default = Some(name.value().clone()),
                Item::Value(_) if key == "default" => {
                    return Err(FileError::BadDefault { path: path.to_owned() });
                }
                _ => {
                    return Err(FileError::UnknownKey {
                        path: path.to_owned(),
                        place: "at the top level".into(),
                        key: key.to_owned(),
                        known: "default, and one [table] per cluster".into(),
                    })
                }
            }
        }
        let file = ConfigFile { path: path.to_owned(), default, clusters };
        if let Some(name) = &file.default {
            if !file.clusters.contains_key(name) {
                return Err(FileError::UnknownDefault {
                    path: path.to_owned(),
                    name: name.clone(),
                    clusters: file.names(),
                });
            }
        }
        Ok(file)
    }

    /// The cluster called `name`.
    pub(crate) fn cluster(&self, name: &str) -> Result<&FileCluster, FileError> {
        self.clusters.get(name).ok_or_else(|| FileError::UnknownCluster {
            path: self.path.clone(),
            name: name.to_owned(),
            clusters: self.names(),
        })
    }

    /// The clusters' names, for messages.
    fn names(&self) -> String {
        if self.clusters.is_empty() {
            return "none".into();
        }
        self.clusters.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
    }
}

/// One cluster's table, checked.
fn cluster(table: &Table, name: &str, path: &Path, base: &Path) -> Result<FileCluster, FileError> {
    let bad = |key: &str, want: &'static str| FileError::BadValue {
        path: path.to_owned(),
        cluster: name.to_owned(),
        key: key.to_owned(),
        want,
    };
    let string = |key: &str, item: &Item| -> Result<String, FileError> {
        match item.as_str() {
            Some(s) if !s.trim().is_empty() => Ok(s.to_owned()),
            _ => Err(bad(key, "a non-empty string")),
        }
    };
    let mut out = FileCluster::default();
    for (key, item) in table.iter() {
        match key {
            "host" => out.host = Some(string(key, item)?),
            "token_file" => out.token_file = Some(base.join(string(key, item)?)),
            "ring_config" => out.ring_config = Some(base.join(string(key, item)?)),
            "ring_cluster" => out.ring_cluster = Some(string(key, item)?),
            "workers" => {
                let workers = item
                    .as_integer()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| bad(key, "a whole number of at least 1"))?;
                out.workers = Some(workers);
            }
            _ => {
                return Err(FileError::UnknownKey {
                    path: path.to_owned(),
                    place: format!("in [{name}]"),
                    key: key.to_owned(),
                    known: CLUSTER_KEYS.join(", "),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, FileError> {
        ConfigFile::parse(text, Path::new("/etc/bucky/config.toml"))
    }

    #[test]
    fn clusters_and_default() {
        let file = parse(
            "default = \"main\"\n[main]\nhost = \"g1:4242\"\ntoken_file = \"main.jwt\"\nworkers = 10\n\
             ring_config = \"/etc/carbon/carbon.conf\"\nring_cluster = \"main\"\n[backup]\nhost = \"b1\"\n",
        )
        .unwrap();
        assert_eq!(file.default.as_deref(), Some("main"));
        let main = file.cluster("main").unwrap();
        assert_eq!(main.host.as_deref(), Some("g1:4242"));
        assert_eq!(main.token_file.as_deref(), Some(Path::new("/etc/bucky/main.jwt")), "relative to the file");
        assert_eq!(main.workers, Some(10));
        assert_eq!(main.ring_config.as_deref(), Some(Path::new("/etc/carbon/carbon.conf")));
        assert_eq!(main.ring_cluster.as_deref(), Some("main"));
        assert_eq!(file.cluster("backup").unwrap(), &FileCluster { host: Some("b1".into()), ..FileCluster::default() });
        assert!(parse("").unwrap().clusters.is_empty());
    }

    #[test]
    fn errors_are_one_line_and_name_the_file() {
        let cases: [(&str, &[&str]); 8] = [
            ("[main\nhost = 1", &["invalid TOML", "line 1", "/etc/bucky/config.toml"]),
            ("[main]\nhots = \"x\"\n", &["unknown key \"hots\" in [main]", "known: host, token_file"]),
            ("colour = 1\n", &["unknown key \"colour\" at the top level"]),
            ("[main]\nworkers = 0\n", &["workers in [main]", "at least 1"]),
            ("[main]\nworkers = \"5\"\n", &["workers in [main]"]),
            ("[main]\nhost = \"\"\n", &["host in [main]", "non-empty string"]),
            ("default = \"nope\"\n[a]\n[b]\n", &["default = \"nope\"", "clusters: a, b"]),
            ("default = 3\n", &["default in the config file", "as a string"]),
        ];
        for (text, wanted) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{text:?}: {err}");
            for want in wanted {
                assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
            }
        }
        let file = parse("[a]\n[b]\n").unwrap();
        let err = file.cluster("c").unwrap_err().to_string();
        assert_eq!(err, "unknown cluster \"c\" in the config file /etc/bucky/config.toml (clusters: a, b)");
        let err = ConfigFile::load(Path::new("/nonexistent/bucky.toml")).unwrap_err().to_string();
        assert!(err.starts_with("cannot read the config file /nonexistent/bucky.toml"), "{err}");
    }
}
