//! Metric names and the paths they live at: `a.b.c` ⇔ `a/b/c.wsp` below the store root.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Longest accepted metric name, in bytes (Linux's `PATH_MAX`).
pub const MAX_NAME_LEN: usize = 4096;

/// Longest path component, in bytes (Linux's `NAME_MAX`); the last component also carries `.wsp`.
pub const MAX_COMPONENT_LEN: usize = 255;

/// Suffix of whisper files.
const SUFFIX: &str = ".wsp";

/// Why a metric name was refused. Every variant is the client's fault (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("metric name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("metric name is {0} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    /// The name holds a `/` (names use `.` as separator; a `/` would alias or escape paths).
    #[error("metric name contains '/'; use '.' to separate the parts of a name")]
    Slash,
    /// The name holds a NUL byte.
    #[error("metric name contains a NUL byte")]
    Nul,
    /// The name holds a control character.
    #[error("metric name contains the control character U+{0:04X}")]
    Control(u32),
    /// Two dots in a row, or a leading or trailing dot (`a..b` would alias `a.b` on disk).
    #[error("metric name has an empty part at position {0} (leading, trailing or doubled '.')")]
    EmptyComponent(usize),
    /// One part is longer than a file name may be.
    #[error("part {index} of the metric name is {len} bytes long; the limit is {limit}")]
    ComponentTooLong {
        /// Zero-based position of the part.
        index: usize,
        /// Its length in bytes (with `.wsp` for the last part).
        len: usize,
        /// The limit that applies to it.
        limit: usize,
    },
}

/// A metric name that maps to exactly one path below the store root and back.
///
/// Accepted: non-empty parts separated by single dots, no `/`, NUL or control characters, parts of at most
/// 255 bytes (251 for the last, which gets `.wsp`), at most 4096 bytes in all. Because `.` is the separator,
/// no part can be `.` or `..`, and the path built from the parts has only normal components, so it can never
/// leave the store root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricName(String);

impl MetricName {
    /// Checks `name` (see the type's docs).
    pub fn parse(name: &str) -> Result<MetricName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(name.len()));
        }
        for c in name.chars() {
            match c {
                '/' => return Err(NameError::Slash),
                '\0' => return Err(NameError::Nul),
                c if c.is_control() => return Err(NameError::Control(u32::from(c))),
                _ => {}
            }
        }
        let parts = name.split('.').count();
        for (index, part) in name.split('.').enumerate() {
            if part.is_empty() {
                return Err(NameError::EmptyComponent(index));
            }
            let (len, limit) = if index + 1 == parts {
                (part.len() + SUFFIX.len(), MAX_COMPONENT_LEN)
            } else {
                (part.len(), MAX_COMPONENT_LEN)
            };
            if len > limit {
                return Err(NameError::ComponentTooLong { index, len, limit });
            }
        }
        Ok(MetricName(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path relative to the store root: dots become `/`, and `.wsp` is appended.
    pub fn relative_path(&self) -> PathBuf {
        let mut path = PathBuf::with_capacity(self.0.len() + SUFFIX.len());
        let mut parts = self.0.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_some() {
                path.push(part);
            } else {
                path.push(format!("{part}{SUFFIX}"));
            }
        }
        path
    }

    /// The parts of the name, in order.
    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl fmt::Display for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for MetricName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The metric stored at `relative` (a path below the store root such as `a/b/c.wsp`), or `None` when the
/// path is not one that [`MetricName::relative_path`] produces (no `.wsp` suffix, a part holding a dot, a
/// hidden file, `..`, non-UTF-8 bytes, …): such files cannot be addressed through the API.
pub fn metric_from_relative(relative: &Path) -> Option<MetricName> {
    let mut name = String::with_capacity(relative.as_os_str().len());
    for component in relative.components() {
        let Component::Normal(part) = component else { return None };
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(part.to_str()?);
    }
    let stem = name.strip_suffix(SUFFIX)?;
    let parsed = MetricName::parse(stem).ok()?;
    (parsed.relative_path() == relative).then_some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_round_trip() {
        for name in ["a", "a.b.c", "carbon.agents.host-1.cpuUsage", "x y.z", "ünï.cødé", "a\\b"] {
            let parsed = MetricName::parse(name).unwrap();
            let path = parsed.relative_path();
            assert_eq!(metric_from_relative(&path).unwrap(), parsed, "{name}");
        }
        assert_eq!(MetricName::parse("a.b").unwrap().relative_path(), Path::new("a/b.wsp"));
    }

    #[test]
    fn hostile_names_are_refused() {
        let long_part = "x".repeat(256);
        let long_last = "x".repeat(252);
        let long_name = vec!["x"; 2049].join(".");
        let cases: Vec<(String, NameError)> = vec![
            (String::new(), NameError::Empty),
            ("a..b".into(), NameError::EmptyComponent(1)),
            (".a".into(), NameError::EmptyComponent(0)),
            ("a.".into(), NameError::EmptyComponent(1)),
            ("..".into(), NameError::EmptyComponent(0)),
            (".".into(), NameError::EmptyComponent(0)),
            ("a/b".into(), NameError::Slash),
            ("/etc/passwd".into(), NameError::Slash),
            ("../../etc/passwd".into(), NameError::Slash),
            ("a\0b".into(), NameError::Nul),
            ("a\nb".into(), NameError::Control(10)),
            ("a\u{7f}b".into(), NameError::Control(0x7f)),
            ("a\u{85}b".into(), NameError::Control(0x85)),
            (format!("{long_part}.b"), NameError::ComponentTooLong { index: 0, len: 256, limit: 255 }),
            (format!("a.{long_last}"), NameError::ComponentTooLong { index: 1, len: 256, limit: 255 }),
            (long_name.clone(), NameError::TooLong(long_name.len())),
        ];
        for (name, want) in cases {
            assert_eq!(MetricName::parse(&name), Err(want), "{name:?}");
        }
        assert!(MetricName::parse(&"x".repeat(251)).is_ok());
    }

    #[test]
    fn unaddressable_paths_have_no_name() {
        for path in ["a/b.txt", "a/.b.wsp", "a.b/c.wsp", "a/b.c.wsp", "../a.wsp", "/a.wsp", ".wsp", "a/.wsp", "a//"] {
            assert_eq!(metric_from_relative(Path::new(path)), None, "{path}");
        }
    }
}
