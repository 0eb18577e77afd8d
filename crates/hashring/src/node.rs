//! Nodes and the two node-spec syntaxes: buckyd/carbon-c-relay members and carbon's `DESTINATIONS`.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// One ring member: a carbon-cache (or relay) reachable at `server[:port]`, optionally distinguished by an
/// instance name.
///
/// Which parts are hashed depends on the hash and router (see the crate docs): carbon ignores the port
/// entirely; carbon-c-relay uses `host:port` (port default 2003) in fnv1a_ch keys of nodes without instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// Host name or address exactly as configured (IPv6 without brackets). Never resolved.
    pub server: String,
    /// TCP port, if one was given.
    pub port: Option<u16>,
    /// Instance name. `None` and `Some("")` are different nodes to carbon (`None` hashes as the text `None`).
    pub instance: Option<String>,
}

impl Node {
    /// A node from its parts (not validated until it is put in a [`Ring`](crate::Ring)).
    pub fn new(server: impl Into<String>, port: Option<u16>, instance: Option<&str>) -> Node {
        Node { server: server.into(), port, instance: instance.map(str::to_owned) }
    }

    /// Parses buckyd's and carbon-c-relay's member syntax `host[:port][=instance]`, IPv6 as
    /// `[addr][:port][=instance]`. The instance is everything after the first `=` (it may be empty or contain
    /// `:` and `=`).
    ///
    /// ```
    /// use hashring::Node;
    /// let node = Node::parse("[2001:db8::1]:2004=a")?;
    /// assert_eq!((node.server.as_str(), node.port, node.instance.as_deref()), ("2001:db8::1", Some(2004), Some("a")));
    /// assert_eq!(node.to_string(), "[2001:db8::1]:2004=a");
    /// # Ok::<(), hashring::Error>(())
    /// ```
    pub fn parse(spec: &str) -> Result<Node, Error> {
        let (hostport, instance) = match spec.split_once('=') {
            Some((hostport, instance)) => (hostport, Some(instance)),
            None => (spec, None),
        };
        let (server, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (addr, after) = rest.split_once(']').ok_or_else(|| invalid(spec, "unclosed '[' in IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(port) => Some(parse_port(spec, port)?),
                    None => return Err(invalid(spec, "unexpected text after ']' (want [addr]:port)")),
                },
            };
            (addr, port)
        } else {
            match hostport.split_once(':') {
                None => (hostport, None),
                Some((_, port)) if port.contains(':') => {
                    return Err(invalid(spec, "IPv6 addresses must be written in brackets: [addr]:port"))
                }
                Some((host, port)) => (host, Some(parse_port(spec, port)?)),
            }
        };
        let node = Node::new(server, port, instance);
        node.validate_as(spec)?;
        Ok(node)
    }

    /// Checks the parts for characters no configuration file can carry.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        self.validate_as(&self.to_string())
    }

    fn validate_as(&self, spec: &str) -> Result<(), Error> {
        if self.server.is_empty() {
            return Err(Error::EmptyHost { spec: spec.to_owned() });
        }
        if self.server.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(spec, "whitespace or control character in host"));
        }
        if self.server.chars().any(|c| matches!(c, '[' | ']' | '=' | ',' | '\'' | '"' | '\\')) {
            return Err(invalid(spec, "forbidden character in host (one of [ ] = , ' \" \\)"));
        }
        if self.port == Some(0) {
            return Err(Error::BadPort { spec: spec.to_owned(), port: "0".to_owned() });
        }
        if let Some(instance) = &self.instance {
            if instance.chars().any(char::is_control) {
                return Err(invalid(spec, "control character in instance"));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Node {
    /// The node in buckyd/carbon-c-relay syntax, `host[:port][=instance]` (IPv6 hosts bracketed): the spec text
    /// `Node::parse` was given, for any canonical spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.server.contains(':') {
            write!(f, "[{}]", self.server)?;
        } else {
            f.write_str(&self.server)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if let Some(instance) = &self.instance {
            write!(f, "={instance}")?;
        }
        Ok(())
    }
}

impl FromStr for Node {
    type Err = Error;

    /// Same as [`Node::parse`].
    fn from_str(s: &str) -> Result<Self, Error> {
        Node::parse(s)
    }
}

/// Parses carbon's `DESTINATIONS` setting (also carbonate's `destinations`): comma-separated
/// `host:port[:instance]` or `[v6addr]:port[:instance]`, each entry stripped of surrounding whitespace, as
/// carbon's `parseDestination` reads it. The port is mandatory; the instance is everything after the second
/// `:` (`h:2004:` gives the empty instance, which carbon hashes differently from no instance).
///
/// ```
/// let nodes = hashring::parse_destinations("10.0.0.1:2004:a, [::1]:2104")?;
/// assert_eq!(nodes[0].instance.as_deref(), Some("a"));
/// assert_eq!((nodes[1].server.as_str(), nodes[1].instance.as_deref()), ("::1", None));
/// # Ok::<(), hashring::Error>(())
/// ```
pub fn parse_destinations(destinations: &str) -> Result<Vec<Node>, Error> {
    destinations.split(',').map(|entry| parse_destination(entry.trim())).collect()
}

fn parse_destination(spec: &str) -> Result<Node, Error> {
    let (server, rest) = if let Some(inner) = spec.strip_prefix('[') {
        // carbon: the address ends at the LAST "]:".
        match inner.rfind("]:") {
            Some(end) => (&inner[..end], &inner[end + 2..]),
            None => return Err(invalid(spec, "DESTINATIONS entries need a port: [addr]:port[:instance]")),
        }
    } else {
        match spec.split_once(':') {
            Some(parts) => parts,
            None if spec.is_empty() => return Err(Error::EmptyHost { spec: spec.to_owned() }),
            None => return Err(invalid(spec, "DESTINATIONS entries need a port: host:port[:instance]")),
        }
    };
    let (port, instance) = match rest.split_once(':') {
        Some((port, instance)) => (port, Some(instance)),
        None => (rest, None),
    };
    let node = Node::new(server, Some(parse_port(spec, port)?), instance);
    node.validate_as(spec)?;
    Ok(node)
}

fn parse_port(spec: &str, port: &str) -> Result<u16, Error> {
    let bad = || Error::BadPort { spec: spec.to_owned(), port: port.to_owned() };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(port) => Ok(port),
    }
}

fn invalid(spec: &str, reason: &'static str) -> Error {
    Error::InvalidNode { spec: spec.to_owned(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parts<'a> = (&'a str, Option<u16>, Option<&'a str>);

    fn parts(node: &Node) -> Parts<'_> {
        (&node.server, node.port, node.instance.as_deref())
    }

    #[test]
    fn buckyd_syntax() {
        let cases: [(&str, Parts<'_>); 9] = [
            ("10.0.0.1", ("10.0.0.1", None, None)),
            ("10.0.0.1:2003", ("10.0.0.1", Some(2003), None)),
            ("10.0.0.1=a", ("10.0.0.1", None, Some("a"))),
            ("graphite-a:2004=b", ("graphite-a", Some(2004), Some("b"))),
            ("h=", ("h", None, Some(""))),
            ("h:1=x:y=z", ("h", Some(1), Some("x:y=z"))),
            ("[::1]", ("::1", None, None)),
            ("[::1]:2005", ("::1", Some(2005), None)),
            ("[fe80::1]=7", ("fe80::1", None, Some("7"))),
        ];
        for (spec, want) in cases {
            let node = Node::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(parts(&node), want, "{spec}");
            assert_eq!(node.to_string(), spec, "Display gives the spec back");
            assert_eq!(spec.parse::<Node>().as_ref(), Ok(&node));
        }
    }

    #[test]
    fn buckyd_syntax_errors_name_the_node() {
        let cases = [
            ("", "empty host"),
            (":2003", "empty host"),
            ("=a", "empty host"),
            ("[]:2003", "empty host"),
            ("h:", "bad port"),
            ("h:0", "bad port"),
            ("h:65536", "bad port"),
            ("h:20x3", "bad port"),
            ("h:+203", "bad port"),
            ("::1", "brackets"),
            ("fe80::1:2003", "brackets"),
            ("[::1", "unclosed"),
            ("[::1]2003", "unexpected text"),
            ("h h:2003", "whitespace"),
            ("h,i", "forbidden character"),
            ("h=a\nb", "control character"),
        ];
        for (spec, want) in cases {
            let err = Node::parse(spec).expect_err(spec).to_string();
            assert!(err.contains(want), "{spec:?}: {err}");
            assert!(err.contains(&format!("{spec:?}")), "{spec:?}: message names the node: {err}");
        }
    }

    #[test]
    fn destinations_syntax() {
        let nodes = parse_destinations(" 10.0.0.1:2004:a ,10.0.0.1:2104, h:2004:, [::1]:2004:x:y,[::1]:7").unwrap();
        let got: Vec<_> = nodes.iter().map(parts).collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1", Some(2004), Some("a")),
                ("10.0.0.1", Some(2104), None),
                ("h", Some(2004), Some("")),
                ("::1", Some(2004), Some("x:y")),
                ("::1", Some(7), None),
            ]
        );
    }

    #[test]
    fn destinations_errors() {
        for (text, want) in [
            ("10.0.0.1", "need a port"),
            ("[::1]", "need a port"),
            ("a:2004,", "empty host"),
            (":2004", "empty host"),
            ("a:x", "bad port"),
            ("a:2004:ok,b:99999", "bad port"),
        ] {
            let err = parse_destinations(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn constructed_nodes_are_validated() {
        assert!(Node::new("", None, None).validate().is_err());
        assert!(Node::new("h", Some(0), None).validate().is_err());
        assert!(Node::new("it's", None, None).validate().is_err());
        assert!(Node::new("h", None, Some("it's")).validate().is_ok());
        assert_eq!(Node::new("::1", Some(1), Some("")).to_string(), "[::1]:1=");
    }
}
