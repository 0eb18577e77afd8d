//! ETags and `If-Match`.
//!
//! The ETag is a content hash: XXH3-128 of the whole file as read under its shared flock, so it changes
//! whenever any byte changes, including carbon-cache's in-place writes that keep the size and may keep the
//! mtime second. (An `(inode, size, mtime)` tag would miss two writes within one mtime tick on filesystems
//! with coarse timestamps.) It identifies the decoded file, whatever the transfer encoding, so a client can
//! `GET` with snappy and later `DELETE` with `If-Match`.

use crate::error::AgentError;

/// The strong ETag (quoted) of a file's content.
pub fn etag_of(bytes: &[u8]) -> String {
    bucky_wire::content_etag(bytes)
}

/// A parsed `If-Match` (or `If-None-Match`) header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any existing file.
    Any,
    /// A list of entity tags, quotes included (`W/` prefixes dropped).
    Tags(Vec<String>),
}

impl IfMatch {
    /// Parses `*` or a comma-separated list of (possibly weak) quoted entity tags.
    pub fn parse(value: &str) -> Result<IfMatch, AgentError> {
        let value = value.trim();
        if value == "*" {
            return Ok(IfMatch::Any);
        }
        let mut tags = Vec::new();
        for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            if tag.len() < 2 || !tag.starts_with('"') || !tag.ends_with('"') || tag[1..tag.len() - 1].contains('"') {
                return Err(AgentError::BadRequest(format!(
                    "malformed entity tag {tag:?}: expected a quoted ETag as returned by GET, or *"
                )));
            }
            tags.push(tag.to_owned());
        }
        if tags.is_empty() {
            return Err(AgentError::BadRequest("empty If-Match header".into()));
        }
        Ok(IfMatch::Tags(tags))
    }

    /// Whether the file with ETag `etag` satisfies the condition.
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_follow_content() {
        assert_eq!(etag_of(b"abc"), etag_of(b"abc"));
        assert_ne!(etag_of(b"abc"), etag_of(b"abd"));
        assert_eq!(etag_of(b"").len(), 34);
    }

    #[test]
    fn if_match_parsing() {
        let e = etag_of(b"x");
        assert!(IfMatch::parse("*").unwrap().matches(&e));
        assert!(IfMatch::parse(&format!("\"nope\", W/{e}")).unwrap().matches(&e));
        assert!(!IfMatch::parse("\"nope\"").unwrap().matches(&e));
        for bad in ["", "nope", "\"a", "\"a\"b\"", ","] {
            assert!(IfMatch::parse(bad).is_err(), "{bad:?}");
        }
    }
}
