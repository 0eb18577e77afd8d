//! The INI dialect of Python 3's `configparser`, as carbon 1.1.10 (`ConfigParser`, with `%` interpolation)
//! and carbonate 1.1.10 (`RawConfigParser`, without) read their files.
//!
//! What is reproduced: `[section]` headers (the name is everything up to the line's last `]`), `key = value`
//! and `key: value` (the key ends at the first `=` or `:`), keys folded to lower case, whole-line comments
//! starting with `#` or `;` (no inline comments), values continued on lines indented deeper than their key
//! (blank lines inside kept, trailing ones dropped), the `[DEFAULT]` section seen by every section, and
//! `strict` mode's refusal of duplicate sections and keys. Interpolation is `BasicInterpolation`: `%%` and
//! `%(key)s`, at most 10 levels deep.

use std::collections::HashMap;

use crate::Error;

/// The name of the section whose keys every other section inherits.
const DEFAULT_SECTION: &str = "DEFAULT";

/// configparser's `MAX_INTERPOLATION_DEPTH`.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// A parsed INI file: sections in file order, keys in lower case, values joined and raw (not interpolated).
#[derive(Debug, Default)]
pub(crate) struct Ini {
    defaults: Vec<(String, String)>,
    sections: Vec<(String, Vec<(String, String)>)>,
}

/// Where the value being read goes, while reading.
enum Target {
    Defaults,
    Section(usize),
}

impl Ini {
    /// Parses `text` as configparser would, refusing what it refuses (a key before any section, a line that
    /// is neither header nor `key = value`, duplicates).
    pub(crate) fn parse(text: &str) -> Result<Ini, Error> {
        // Python reads text files with universal newlines.
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let mut ini = Ini::default();
        let mut target: Option<Target> = None;
        // The key being read and its lines (None until the first key of a section).
        let mut current: Option<(String, Vec<String>)> = None;
        let mut indent_level = 0usize;
        for (number, line) in text.split('\n').enumerate() {
            let number = number + 1;
            let stripped = line.trim();
            if stripped.starts_with('#') || stripped.starts_with(';') {
                continue;
            }
            if stripped.is_empty() {
                if let Some((_, lines)) = current.as_mut() {
                    lines.push(String::new());
                }
                continue;
            }
            let indent = line.chars().take_while(|c| c.is_whitespace()).count();
            if current.is_some() && indent > indent_level {
                if let Some((_, lines)) = current.as_mut() {
                    lines.push(stripped.to_owned());
                }
                continue;
            }
            indent_level = indent;
            if let Some(name) = section_header(stripped) {
                ini.finish(&target, current.take());
                if name == DEFAULT_SECTION {
                    target = Some(Target::Defaults);
                } else if ini.sections.iter().any(|(existing, _)| existing == name) {
                    return Err(syntax(number, format!("section [{name}] appears twice")));
                } else {
                    ini.sections.push((name.to_owned(), Vec::new()));
                    target = Some(Target::Section(ini.sections.len() - 1));
                }
                continue;
            }
            if target.is_none() {
                return Err(syntax(number, format!("{stripped:?} comes before any [section] header")));
            }
            let Some(delimiter) = stripped.find(['=', ':']) else {
                return Err(syntax(number, format!("{stripped:?} is neither a [section] header nor key = value")));
            };
            let key = stripped[..delimiter].trim_end().to_lowercase();
            if key.is_empty() {
                return Err(syntax(number, format!("{stripped:?} has no key before its '='")));
            }
            ini.finish(&target, current.take());
            let known = match &target {
                Some(Target::Defaults) => &ini.defaults,
                Some(Target::Section(i)) => &ini.sections[*i].1,
                None => unreachable!("checked above"),
            };
            if known.iter().any(|(existing, _)| *existing == key) {
                return Err(syntax(number, format!("key {key:?} appears twice in its section")));
            }
            let value = stripped[delimiter + 1..].trim().to_owned();
            current = Some((key, vec![value]));
        }
        ini.finish(&target, current.take());
        Ok(ini)
    }

    /// Stores a finished key: its lines joined by newlines, trailing whitespace dropped.
    fn finish(&mut self, target: &Option<Target>, key: Option<(String, Vec<String>)>) {
        let Some((key, lines)) = key else { return };
        let value = lines.join("\n").trim_end().to_owned();
        match target {
            Some(Target::Defaults) => self.defaults.push((key, value)),
            Some(Target::Section(i)) => self.sections[*i].1.push((key, value)),
            None => {}
        }
    }

    /// The sections in file order, `[DEFAULT]` left out.
    pub(crate) fn section_names(&self) -> Vec<&str> {
        self.sections.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// Whether the file has this section (`[DEFAULT]` is not one).
    pub(crate) fn has_section(&self, name: &str) -> bool {
        self.sections.iter().any(|(existing, _)| existing == name)
    }

    /// Whether any section, or `[DEFAULT]`, has this (lower-case) key.
    pub(crate) fn any_section_has(&self, key: &str) -> bool {
        self.defaults.iter().chain(self.sections.iter().flat_map(|(_, items)| items)).any(|(k, _)| k == key)
    }

    /// configparser's `items(section, raw=True)`: `[DEFAULT]`'s keys overridden by the section's, in that
    /// order. An unknown section gives `[DEFAULT]`'s keys alone.
    pub(crate) fn items(&self, section: &str) -> Vec<(String, String)> {
        let mut items = self.defaults.clone();
        if let Some((_, own)) = self.sections.iter().find(|(name, _)| name == section) {
            for (key, value) in own {
                match items.iter_mut().find(|(k, _)| k == key) {
                    Some(slot) => slot.1 = value.clone(),
                    None => items.push((key.clone(), value.clone())),
                }
            }
        }
        items
    }

    /// The raw value of a (lower-case) key in a section, falling back to `[DEFAULT]`.
    pub(crate) fn get(&self, section: &str, key: &str) -> Option<&str> {
        let own = self.sections.iter().find(|(name, _)| name == section).map(|(_, items)| items);
        own.into_iter().flatten().chain(&self.defaults).find(|(k, _)| k == key).map(|(_, value)| value.as_str())
    }
}

/// `[name]` → `name`: configparser's `\[(?P<header>.+)\]` matched at the start of the stripped line.
fn section_header(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let end = rest.rfind(']')?;
    (end > 0).then(|| &rest[..end])
}

fn syntax(line: usize, message: String) -> Error {
    Error::Syntax { line, message }
}

/// `BasicInterpolation.before_get`: expands `%%` and `%(key)s` in `value` (the value of `option` in
/// `section`) against the section's items (keys in lower case).
pub(crate) fn interpolate(
    items: &HashMap<String, String>,
    section: &str,
    option: &str,
    value: &str,
) -> Result<String, Error> {
    let mut out = String::new();
    interpolate_into(items, section, option, value, 1, &mut out)?;
    Ok(out)
}

fn interpolate_into(
    items: &HashMap<String, String>,
    section: &str,
    option: &str,
    mut rest: &str,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    let bad = |reason: String| Error::Interpolation { section: section.to_owned(), key: option.to_owned(), reason };
    if depth > MAX_INTERPOLATION_DEPTH {
        return Err(bad(format!("more than {MAX_INTERPOLATION_DEPTH} levels of %(...)s references")));
    }
    while let Some(p) = rest.find('%') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        if let Some(after) = rest.strip_prefix("%%") {
            out.push('%');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("%(") {
            let Some(close) = after.find(")s").filter(|&close| close > 0 && !after[..close].contains(')')) else {
                return Err(bad(format!("bad interpolation variable reference {rest:?}")));
            };
            let name = after[..close].to_lowercase();
            let Some(referenced) = items.get(&name) else {
                return Err(bad(format!("%({name})s refers to a key that is not in the section")));
            };
            if referenced.contains('%') {
                interpolate_into(items, section, option, referenced, depth + 1, out)?;
            } else {
                out.push_str(referenced);
            }
            rest = &after[close + 2..];
        } else {
            return Err(bad(format!("'%' must be followed by '%' or '(', found {rest:?}")));
        }
    }
    out.push_str(rest);
    Ok(())
}

/// configparser's `getboolean`: 1/yes/true/on and 0/no/false/off, any case.
pub(crate) fn boolean(value: &str) -> Option<bool> {
    match value.to_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configparser_dialect() {
        let ini = Ini::parse(
            "# comment\n; another\n[DEFAULT]\nshared = d\n\n[relay]\nDESTINATIONS = a:1,\n    b:2,\n\n  c:3\n\
             # inside\nRelay_Method: consistent-hashing\nempty =\n[x]y]\nshared = own\n",
        )
        .unwrap();
        assert_eq!(ini.section_names(), ["relay", "x]y"]);
        assert_eq!(ini.get("relay", "destinations"), Some("a:1,\nb:2,\n\nc:3"));
        assert_eq!(ini.get("relay", "relay_method"), Some("consistent-hashing"));
        assert_eq!(ini.get("relay", "empty"), Some(""));
        assert_eq!(ini.get("relay", "shared"), Some("d"));
        assert_eq!(ini.get("x]y", "shared"), Some("own"));
        let items = ini.items("relay");
        assert_eq!(items[0], ("shared".to_owned(), "d".to_owned()), "DEFAULT's keys come first");
        assert!(ini.any_section_has("relay_method"));
    }

    #[test]
    fn configparser_refusals_name_the_line() {
        for (text, line, want) in [
            ("key = 1\n", 1, "before any [section]"),
            ("[a]\nk = 1\n[a]\n", 3, "appears twice"),
            ("[a]\nk = 1\nK: 2\n", 3, "appears twice"),
            ("[a]\njust words\n", 2, "neither"),
            ("[a]\n = 1\n", 2, "no key"),
        ] {
            match Ini::parse(text) {
                Err(Error::Syntax { line: got, message }) => {
                    assert_eq!(got, line, "{text:?}");
                    assert!(message.contains(want), "{text:?}: {message}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn basic_interpolation() {
        let items: HashMap<String, String> = [("host", "10.0.0.1"), ("dest", "%(host)s:2004"), ("loop", "%(loop)s")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let run = |value: &str| interpolate(&items, "relay", "k", value);
        assert_eq!(run("%(HOST)s:2004:a, %(dest)s").unwrap(), "10.0.0.1:2004:a, 10.0.0.1:2004");
        assert_eq!(run("100%%").unwrap(), "100%");
        assert!(run("50%").is_err());
        assert!(run("%(nope)s").is_err());
        assert!(run("%(host)").is_err());
        assert!(run("%(loop)s").unwrap_err().to_string().contains("levels"));
    }
}
