//! carbon-c-relay 3.7.3 configuration files: the `cluster` statements, everything else skipped.
//!
//! The lexer follows the relay's: `#` starts a comment anywhere (to the end of the line), `"..."` is a string
//! with `\` escaping the next character (no newline, not empty), `;` ends a statement, `=` stands alone, and
//! a bare word of digits is a number (so `=007` is instance `7`, as the relay prints it). Statements may span
//! lines. A hash cluster reads
//!
//! ```text
//! cluster NAME <carbon_ch | fnv1a_ch | jump_fnv1a_ch> [replication N] [dynamic]
//!     host[:port][=instance] [proto udp|tcp] [type linemode] [transport plain|gzip|lz4|snappy [ssl]] ... ;
//! ```
//!
//! `forward`, `any_of`, `failover`, `lb` and `file` clusters are not hash rings. `include` is not followed
//! (the crate reads no files): a cluster defined in an included file is reported as missing, with a word
//! about the include.

use hashring::{Hash, Node, Ring, Router};

use crate::carbon::ring_error;
use crate::{destination_label, Error, Kind, RingConfig};

/// A token and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Equals,
    End,
}

/// Tokens with their 1-based line numbers.
fn lex(text: &str) -> Result<Vec<(Token, usize)>, Error> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => while chars.next_if(|&c| c != '\n').is_some() {},
            ';' => tokens.push((Token::End, line)),
            '=' => tokens.push((Token::Equals, line)),
            '"' => {
                let start = line;
                let mut text = String::new();
                loop {
                    match chars.next() {
                        None | Some('\n') => {
                            return Err(Error::RelaySyntax { line: start, message: "unterminated string".to_owned() })
                        }
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            None | Some('\n') => {
                                return Err(Error::RelaySyntax {
                                    line: start,
                                    message: "unterminated string".to_owned(),
                                })
                            }
                            Some(escaped) => text.push(escaped),
                        },
                        Some(c) => text.push(c),
                    }
                }
                if text.is_empty() {
                    return Err(Error::RelaySyntax { line: start, message: "empty string".to_owned() });
                }
                tokens.push((Token::Quoted(text), start));
            }
            c => {
                let mut word = String::from(c);
                while let Some(c) = chars.next_if(|&c| !c.is_whitespace() && !matches!(c, '#' | ';' | '=' | '"')) {
                    word.push(c);
                }
                tokens.push((Token::Word(word), line));
            }
        }
    }
    Ok(tokens)
}

/// The statement keywords of carbon-c-relay 3.7.3.
const KEYWORDS: [&str; 8] = ["cluster", "match", "rewrite", "aggregate", "send", "statistics", "listen", "include"];

/// Whether `text` reads as a relay config: its first statement starts with a relay keyword.
pub(crate) fn looks_like_relay(text: &str) -> bool {
    match lex(text) {
        Ok(tokens) => matches!(tokens.first(), Some((Token::Word(w), _)) if KEYWORDS.contains(&w.as_str())),
        Err(_) => false,
    }
}

/// What a `cluster` statement defines.
struct Cluster {
    name: String,
    line: usize,
    kind: ClusterKind,
}

enum ClusterKind {
    Hash { hash: Hash, replicas: usize, members: Vec<Node> },
    Other(String),
}

/// Reads the hash cluster named `cluster`, or the only one.
pub(crate) fn read(text: &str, cluster: Option<&str>) -> Result<RingConfig, Error> {
    let tokens = lex(text)?;
    let mut clusters: Vec<Cluster> = Vec::new();
    let mut includes: Vec<String> = Vec::new();
    let mut statements = tokens.split(|(token, _)| *token == Token::End).peekable();
    while let Some(statement) = statements.next() {
        let Some((first, line)) = statement.first() else { continue };
        if statements.peek().is_none() {
            // The last piece after the final ';' is not empty: an unterminated statement.
            return Err(Error::RelaySyntax { line: *line, message: "statement not terminated by ';'".to_owned() });
        }
        match first {
            Token::Word(w) if w == "cluster" => {
                let parsed = parse_cluster(statement)?;
                if clusters.iter().any(|c| c.name == parsed.name) {
                    return Err(Error::RelaySyntax {
                        line: parsed.line,
                        message: format!("cluster {:?} is defined twice", parsed.name),
                    });
                }
                clusters.push(parsed);
            }
            Token::Word(w) if w == "include" => {
                includes.extend(statement[1..].iter().filter_map(|(t, _)| match t {
                    Token::Word(s) | Token::Quoted(s) => Some(s.clone()),
                    _ => None,
                }));
            }
            Token::Word(w) if KEYWORDS.contains(&w.as_str()) => {}
            Token::Word(w) | Token::Quoted(w) => {
                return Err(Error::RelaySyntax { line: *line, message: format!("unknown statement {w:?}") })
            }
            Token::Equals | Token::End => {
                return Err(Error::RelaySyntax { line: *line, message: "unexpected '='".to_owned() })
            }
        }
    }
    let chosen = match cluster {
        Some(name) => clusters.iter().find(|c| c.name == name).ok_or_else(|| {
            let mut available = if clusters.is_empty() {
                "it defines no clusters".to_owned()
            } else {
                format!("clusters: {}", clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "))
            };
            if !includes.is_empty() {
                available.push_str(&format!(" (included files are not read: {})", includes.join(", ")));
            }
            Error::NoCluster { kind: Kind::RelayConf, what: "cluster", name: name.to_owned(), available }
        })?,
        None => {
            let hashed: Vec<&Cluster> =
                clusters.iter().filter(|c| matches!(c.kind, ClusterKind::Hash { .. })).collect();
            match hashed.as_slice() {
                [only] => *only,
                [] => {
                    return Err(Error::NoCluster {
                        kind: Kind::RelayConf,
                        what: "hash cluster",
                        name: "(any)".to_owned(),
                        available: format!(
                            "clusters: {}",
                            if clusters.is_empty() {
                                "none".to_owned()
                            } else {
                                clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                            }
                        ),
                    })
                }
                several => {
                    return Err(Error::AmbiguousCluster {
                        kind: Kind::RelayConf,
                        names: several.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                    })
                }
            }
        }
    };
    let label = format!("cluster {}", chosen.name);
    let (hash, replicas, members) = match &chosen.kind {
        ClusterKind::Hash { hash, replicas, members } => (*hash, *replicas, members.clone()),
        ClusterKind::Other(kind) => {
            return Err(Error::NotARing {
                cluster: label,
                reason: format!("a {kind} cluster sends to its members without a hash ring"),
            })
        }
    };
    let ring = Ring::new(members, hash, Some(Router::Relay), replicas, false).map_err(|e| ring_error(&label, e))?;
    let labels = ring.nodes().iter().map(destination_label).collect();
    Ok(RingConfig { kind: Kind::RelayConf, cluster: chosen.name.clone(), ring, labels, notes: Vec::new() })
}

/// `cluster NAME TYPE ...` (without its `;`).
fn parse_cluster(statement: &[(Token, usize)]) -> Result<Cluster, Error> {
    let line = statement[0].1;
    let mut rest = statement[1..].iter().peekable();
    let name = match rest.next() {
        Some((Token::Word(name) | Token::Quoted(name), _)) => name.clone(),
        _ => return Err(Error::RelaySyntax { line, message: "cluster without a name".to_owned() }),
    };
    let err = |line: usize, message: String| Error::RelaySyntax { line, message: format!("cluster {name}: {message}") };
    let kind = match rest.next() {
        Some((Token::Word(kind), _)) => kind.clone(),
        _ => return Err(err(line, "no cluster type".to_owned())),
    };
    let hash = match kind.as_str() {
        "carbon_ch" => Hash::CarbonCh,
        "fnv1a_ch" => Hash::Fnv1aCh,
        "jump_fnv1a_ch" => Hash::JumpFnv1aCh,
        "forward" | "any_of" | "failover" | "lb" | "file" => {
            return Ok(Cluster { name, line, kind: ClusterKind::Other(kind) })
        }
        other => return Err(err(line, format!("unknown cluster type {other:?}"))),
    };
    let mut replicas = 1;
    let word = |token: Option<&(Token, usize)>| match token {
        Some((Token::Word(w), _)) => Some(w.clone()),
        _ => None,
    };
    loop {
        match rest.peek() {
            Some((Token::Word(w), at)) if w == "replication" => {
                rest.next();
                let count = word(rest.next()).unwrap_or_default();
                replicas = match count.parse::<usize>() {
                    Ok(n) if count.bytes().all(|b| b.is_ascii_digit()) => n,
                    _ => return Err(err(*at, format!("replication {count:?} is not a number"))),
                };
            }
            Some((Token::Word(w), _)) if w == "dynamic" => {
                rest.next();
            }
            _ => break,
        }
    }
    let mut members = Vec::new();
    while let Some((token, at)) = rest.next() {
        let address = match token {
            Token::Word(address) | Token::Quoted(address) => address,
            _ => return Err(err(*at, "'=' without a member before it".to_owned())),
        };
        let mut node = Node::parse(address).map_err(|e| err(*at, e.to_string()))?;
        if let Some((Token::Equals, _)) = rest.peek() {
            rest.next();
            node.instance = Some(match rest.next() {
                Some((Token::Quoted(instance), _)) => instance.clone(),
                Some((Token::Word(instance), at)) => bare_instance(instance).map_err(|m| err(*at, m))?,
                _ => return Err(err(*at, format!("member {address}: '=' without an instance"))),
            });
        }
        // Member options.
        while let Some(option) = word(rest.peek().copied()) {
            let arguments = match option.as_str() {
                "proto" | "type" | "transport" => 1,
                "ssl" => 0,
                "mtls" => 2,
                _ => break,
            };
            rest.next();
            for _ in 0..arguments {
                if word(rest.next()).is_none() {
                    return Err(err(*at, format!("member {address}: {option} without its value")));
                }
            }
        }
        members.push(node);
    }
    if members.is_empty() {
        return Err(err(line, "no members".to_owned()));
    }
    Ok(Cluster { name, line, kind: ClusterKind::Hash { hash, replicas, members } })
}

/// A bare instance: a word of digits is a number to the relay (`007` is `7`).
fn bare_instance(word: &str) -> Result<String, String> {
    if !word.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(word.to_owned());
    }
    match word.parse::<i32>() {
        Ok(number) => Ok(number.to_string()),
        Err(_) => Err(format!("instance {word} is a number too large for the relay (quote it)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexer() {
        let tokens: Vec<Token> = lex("cluster a # comment ; not a statement\n  carbon_ch h:1=\"x \\\"y\" ;")
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(
            tokens,
            [
                Token::Word("cluster".into()),
                Token::Word("a".into()),
                Token::Word("carbon_ch".into()),
                Token::Word("h:1".into()),
                Token::Equals,
                Token::Quoted("x \"y".into()),
                Token::End,
            ]
        );
        assert!(lex("cluster \"a\n\";").is_err());
        assert!(lex("cluster \"\";").is_err());
    }

    #[test]
    fn numeric_bare_instances() {
        assert_eq!(bare_instance("007").unwrap(), "7");
        assert_eq!(bare_instance("0").unwrap(), "0");
        assert_eq!(bare_instance("a01").unwrap(), "a01");
        assert!(bare_instance("99999999999").is_err());
    }
}
