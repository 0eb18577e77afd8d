//! Metric names: reading them from arguments or stdin, parsing a JSON array as it streams in, and holding
//! millions of them compactly.

use anyhow::{bail, Context};

/// A regex over metric names (RE2 syntax, evaluated by the agents), checked once, when it is parsed: by
/// clap for `-r REGEX` flags, by [`crate::settings::Selection`] for `-r` with names.
#[derive(Debug, Clone)]
pub struct MetricRegex(regex::Regex);

impl MetricRegex {
    /// Checks `text`; the error is the one line a user sees.
    pub fn parse(text: &str) -> Result<MetricRegex, String> {
        regex::Regex::new(text).map(MetricRegex).map_err(|e| format!("invalid regex: {e}"))
    }

    /// The regex as given, as sent to the agents.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for MetricRegex {
    fn eq(&self, other: &MetricRegex) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for MetricRegex {}

impl std::fmt::Display for MetricRegex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names from text: a JSON array of strings, or one name per line (blank lines skipped, whitespace
/// trimmed).
pub(crate) fn parse_name_list(text: &str) -> anyhow::Result<Vec<String>> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text).context("stdin starts with '[' but is not a JSON array of strings");
    }
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

/// An incremental parser of a JSON array of strings, fed in chunks as they arrive from the network, so a
/// list of millions of names is never held as one document.
#[derive(Debug, Default)]
pub(crate) struct JsonArrayParser {
    state: State,
    token: Vec<u8>,
    escaped: bool,
    count: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before `[`.
    #[default]
    Start,
    /// After `[` or `,`: a string (or `]` right after `[`).
    Value,
    /// Inside a string.
    String,
    /// After a string: `,` or `]`.
    Separator,
    /// After `]`.
    Done,
}

impl JsonArrayParser {
    /// A parser expecting `[`.
    pub(crate) fn new() -> JsonArrayParser {
        JsonArrayParser::default()
    }

    /// Feeds a chunk; calls `emit` for every complete name.
    pub(crate) fn feed(&mut self, chunk: &[u8], mut emit: impl FnMut(String)) -> anyhow::Result<()> {
        for &b in chunk {
            match self.state {
                State::Start => match b {
                    b'[' => self.state = State::Value,
                    b if b.is_ascii_whitespace() => {}
                    _ => bail!("metric list is not a JSON array (starts with {:?})", b as char),
                },
                State::Value => match b {
                    b'"' => {
                        self.state = State::String;
                        self.token.clear();
                        self.token.push(b'"');
                        self.escaped = false;
                    }
                    b']' if self.count == 0 => self.state = State::Done,
                    b if b.is_ascii_whitespace() => {}
                    _ => bail!("metric list: expected a string, found {:?}", b as char),
                },
                State::String => {
                    self.token.push(b);
                    if self.escaped {
                        self.escaped = false;
                    } else if b == b'\\' {
                        self.escaped = true;
                    } else if b == b'"' {
                        let name: String = if self.token.contains(&b'\\') {
                            serde_json::from_slice(&self.token).context("metric list: bad JSON string")?
                        } else {
                            String::from_utf8(self.token[1..self.token.len() - 1].to_vec())
                                .context("metric list: name is not UTF-8")?
                        };
                        self.count += 1;
                        emit(name);
                        self.state = State::Separator;
                    }
                }
                State::Separator => match b {
                    b',' => self.state = State::Value,
                    b']' => self.state = State::Done,
                    b if b.is_ascii_whitespace() => {}
                    _ => bail!("metric list: expected ',' or ']', found {:?}", b as char),
                },
                State::Done => {
                    if !b.is_ascii_whitespace() {
                        bail!("metric list: trailing data after ']'");
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the array was complete.
    pub(crate) fn finish(&self) -> anyhow::Result<u64> {
        if self.state != State::Done {
            bail!("metric list ended early (truncated response)");
        }
        Ok(self.count)
    }
}

/// Many names in one allocation: the bytes of every name back to back, plus where each starts. About
/// 8 bytes of overhead per name instead of ~40 for a `Vec<String>`.
#[derive(Debug, Default, Clone)]
pub(crate) struct NameArena {
    bytes: Vec<u8>,
    starts: Vec<usize>,
}

impl NameArena {
    /// An empty arena.
    pub(crate) fn new() -> NameArena {
        NameArena::default()
    }

    /// Appends a name.
    pub(crate) fn push(&mut self, name: &str) {
        self.starts.push(self.bytes.len());
        self.bytes.extend_from_slice(name.as_bytes());
    }

    /// Number of names.
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Name `i`.
    pub(crate) fn get(&self, i: usize) -> &str {
        let end = self.starts.get(i + 1).copied().unwrap_or(self.bytes.len());
        // Only whole `&str`s are pushed, so every slice between starts is UTF-8.
        std::str::from_utf8(&self.bytes[self.starts[i]..end]).unwrap_or("")
    }

    /// The names in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Sorts and removes duplicates (rebuilds the arena).
    pub(crate) fn sort_dedup(&mut self) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        let sorted = self.iter().zip(self.iter().skip(1)).all(|(a, b)| a < b);
        if sorted {
            return;
        }
        order.sort_unstable_by(|&a, &b| self.get(a).cmp(self.get(b)));
        let mut out =
            NameArena { bytes: Vec::with_capacity(self.bytes.len()), starts: Vec::with_capacity(order.len()) };
        let mut last: Option<&str> = None;
        for &i in &order {
            let name = self.get(i);
            if last != Some(name) {
                out.push(name);
                last = Some(name);
            }
        }
        *self = out;
    }
}

/// Merges sorted, deduplicated arenas into one sorted stream without duplicates.
pub(crate) fn merge_sorted<'a>(
    lists: &'a [&'a NameArena],
    mut emit: impl FnMut(&'a str) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut heap = BinaryHeap::new();
    for (list, arena) in lists.iter().enumerate() {
        if !arena.is_empty() {
            heap.push(Reverse((arena.get(0), list, 0usize)));
        }
    }
    let mut last: Option<&str> = None;
    while let Some(Reverse((name, list, i))) = heap.pop() {
        if last != Some(name) {
            emit(name)?;
            last = Some(name);
        }
        if i + 1 < lists[list].len() {
            heap.push(Reverse((lists[list].get(i + 1), list, i + 1)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> anyhow::Result<Vec<String>> {
        let mut parser = JsonArrayParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |n| out.push(n))?;
        }
        parser.finish()?;
        Ok(out)
    }

    #[test]
    fn streams_json_arrays_split_anywhere() {
        let doc = br#" ["a.b", "c\"d", "\u00e9.x","z"] "#;
        let want = vec!["a.b".to_owned(), "c\"d".to_owned(), "é.x".to_owned(), "z".to_owned()];
        for split in 0..doc.len() {
            let (a, b) = doc.split_at(split);
            assert_eq!(parse_chunks(&[a, b]).unwrap(), want, "split at {split}");
        }
        assert_eq!(parse_chunks(&[b"[]"]).unwrap(), Vec::<String>::new());
        assert!(parse_chunks(&[b"[\"a\""]).is_err());
        assert!(parse_chunks(&[b"{}"]).is_err());
        assert!(parse_chunks(&[b"[\"a\",]"]).is_err());
        assert!(parse_chunks(&[b"[1]"]).is_err());
    }

    #[test]
    fn name_lists() {
        assert_eq!(parse_name_list("[\"a\",\"b\"]").unwrap(), vec!["a", "b"]);
        assert_eq!(parse_name_list(" a\n\nb \r\n").unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn arenas_sort_and_merge() {
        let mut a = NameArena::new();
        for n in ["c", "a", "b", "a"] {
            a.push(n);
        }
        a.sort_dedup();
        assert_eq!(a.iter().collect::<Vec<_>>(), vec!["a", "b", "c"]);
        let mut b = NameArena::new();
        for n in ["b", "d"] {
            b.push(n);
        }
        let mut out = Vec::new();
        merge_sorted(&[&a, &b], |n| {
            out.push(n.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(out, vec!["a", "b", "c", "d"]);
    }
}
