//! The text each peer hashes for a node's ring points.

use crate::digest::{self, Bytes};
use crate::{Error, Hash, Node, Router};

/// Points per node in both peers (carbon's `replica_count`, the relay's `HASH_REPLICAS`).
pub(crate) const POINTS_PER_NODE: u32 = 100;

/// carbon-c-relay's default member port.
pub(crate) const RELAY_DEFAULT_PORT: u16 = 2003;

/// carbon-c-relay formats node keys into a 256-byte buffer with `snprintf`: longer keys are cut at 255 bytes.
const RELAY_KEY_MAX: usize = 255;

/// Computes the hashed ring position of point `i` of `node`, or says why the peer's key cannot be reproduced.
pub(crate) struct PointKeys {
    hash: Hash,
    router: Router,
    /// The per-node prefix of the key (everything before the point number, or after it for fnv1a_ch).
    text: String,
}

impl PointKeys {
    pub(crate) fn new(node: &Node, hash: Hash, router: Router) -> Result<PointKeys, Error> {
        let text = match (hash, router) {
            // "%s:%d" % ((server, instance), i): Python's str() of the tuple.
            (Hash::CarbonCh, Router::Carbon) => {
                let unrepresentable =
                    || Error::Unrepresentable { node: node.to_string(), router, reason: PY_REPR_LIMIT };
                let server = py_repr(&node.server).ok_or_else(unrepresentable)?;
                let instance = match &node.instance {
                    Some(instance) => py_repr(instance).ok_or_else(unrepresentable)?,
                    None => "None".to_owned(),
                };
                format!("({server}, {instance}):")
            }
            // snprintf("('%s', %s%s%s):%d"): no escaping at all.
            (Hash::CarbonCh, Router::Relay) => match &node.instance {
                Some(instance) => format!("('{}', '{instance}'):", node.server),
                None => format!("('{}', None):", node.server),
            },
            // "%d-%s" % (i, instance): the instance only; a missing one is the text "None".
            (Hash::Fnv1aCh, Router::Carbon) => format!("-{}", node.instance.as_deref().unwrap_or("None")),
            // "%d-%s" with the instance, else "%d-%s:%u" with host and port.
            (Hash::Fnv1aCh, Router::Relay) => match &node.instance {
                Some(instance) => format!("-{instance}"),
                None => format!("-{}:{}", node.server, node.port.unwrap_or(RELAY_DEFAULT_PORT)),
            },
            (Hash::JumpFnv1aCh, _) => String::new(),
        };
        Ok(PointKeys { hash, router, text })
    }

    /// The full key of point `i`, as bytes the peer hashes.
    pub(crate) fn key(&self, i: u32) -> Vec<u8> {
        let mut key = match self.hash {
            Hash::CarbonCh => format!("{}{i}", self.text),
            _ => format!("{i}{}", self.text),
        }
        .into_bytes();
        if self.router == Router::Relay {
            key.truncate(RELAY_KEY_MAX);
        }
        key
    }

    /// The hashed ring position of point `i`.
    pub(crate) fn position(&self, i: u32) -> u16 {
        let key = self.key(i);
        match (self.hash, self.router) {
            (Hash::Fnv1aCh, Router::Carbon) => digest::fnv1a_position(&key, Bytes::Unsigned),
            (Hash::Fnv1aCh, Router::Relay) => digest::fnv1a_position(&key, Bytes::Signed),
            _ => digest::carbon_position(&key),
        }
    }
}

const PY_REPR_LIMIT: &str = "carbon hashes Python's repr() of the (server, instance) tuple, and repr() of \
                             characters above U+00FF depends on Python's Unicode tables; only ASCII and \
                             Latin-1 are reproduced";

/// Python 3's `repr()` of a str, for the characters whose printability does not depend on the Unicode
/// database version (U+0000..=U+00FF). `None` if the text has other characters.
pub(crate) fn py_repr(text: &str) -> Option<String> {
    let quote = if text.contains('\'') && !text.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            _ if c == quote => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            // C0 controls, DEL, C1 controls, NO-BREAK SPACE and SOFT HYPHEN are not printable.
            '\0'..='\x1f' | '\x7f'..='\u{a0}' | '\u{ad}' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            ' '..='\u{ff}' => out.push(c),
            _ => return None,
        }
    }
    out.push(quote);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_repr_rules() {
        let cases = [
            ("10.0.0.1", "'10.0.0.1'"),
            ("", "''"),
            ("it's", "\"it's\""),
            ("say \"hi\"", "'say \"hi\"'"),
            ("both ' and \"", "'both \\' and \"'"),
            ("back\\slash", "'back\\\\slash'"),
            ("tab\there", "'tab\\there'"),
            ("bell\x07", "'bell\\x07'"),
            ("café", "'café'"),
            ("nb\u{a0}sp\u{ad}", "'nb\\xa0sp\\xad'"),
            ("c1\u{85}", "'c1\\x85'"),
        ];
        for (text, want) in cases {
            assert_eq!(py_repr(text).as_deref(), Some(want), "{text:?}");
        }
        assert_eq!(py_repr("Ω"), None);
    }

    #[test]
    fn node_keys_per_router() {
        let key = |node: &str, hash, router, i| {
            let keys = PointKeys::new(&Node::parse(node).unwrap(), hash, router).unwrap();
            String::from_utf8(keys.key(i)).unwrap()
        };
        assert_eq!(key("10.0.0.1:2004=a", Hash::CarbonCh, Router::Carbon, 0), "('10.0.0.1', 'a'):0");
        assert_eq!(key("10.0.0.1", Hash::CarbonCh, Router::Carbon, 99), "('10.0.0.1', None):99");
        assert_eq!(key("h=", Hash::CarbonCh, Router::Carbon, 1), "('h', ''):1");
        assert_eq!(key("h=it's", Hash::CarbonCh, Router::Carbon, 1), "('h', \"it's\"):1");
        assert_eq!(key("h=it's", Hash::CarbonCh, Router::Relay, 1), "('h', 'it's'):1");
        assert_eq!(key("10.0.0.1:2004", Hash::Fnv1aCh, Router::Carbon, 7), "7-None");
        assert_eq!(key("10.0.0.1:2004", Hash::Fnv1aCh, Router::Relay, 7), "7-10.0.0.1:2004");
        assert_eq!(key("[::1]", Hash::Fnv1aCh, Router::Relay, 7), "7-::1:2003");
        assert_eq!(key("10.0.0.1=x", Hash::Fnv1aCh, Router::Relay, 12), "12-x");
        let long = format!("h={}", "i".repeat(300));
        assert_eq!(key(&long, Hash::CarbonCh, Router::Relay, 1).len(), 255);
        assert!(key(&long, Hash::CarbonCh, Router::Carbon, 1).len() > 300);
    }
}
