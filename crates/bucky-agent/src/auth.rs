//! Optional authentication, compatible with the go-graphite fork of buckyd.
//!
//! With `--auth-jwt-secret-file`, every request to `/metrics` needs `X-Buckyd-Authorization: <JWT>`, an
//! HS256 token signed with the file's secret (surrounding whitespace trimmed) whose claims are
//! `{"namespaces": ["sys.*", …], "ops": ["read", "update", "replace", "delete" or "*"]}`. GET and HEAD need
//! `read`, POST `update`, PUT `replace`, DELETE `delete`; namespaces are matched against the metric name
//! with Go's `filepath.Match` syntax (`*`, `?`, `[a-z]`, `\`). Unlike the fork:
//! - `exp` and `nbf` are enforced;
//! - only HS256 is accepted (no `none`, no algorithm confusion), and the signature is compared in constant
//!   time;
//! - a listing needs `read` and returns only the names the token's namespaces cover (the fork demanded a
//!   token for `*`);
//! - a missing or invalid token is `401`, a valid token without the right is `403`;
//! - the token the agent mints for its own offload fetches is read-only, expires after a minute and is only
//!   ever sent to ring members.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::error::AgentError;

/// An operation a token may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// GET, HEAD and listings.
    Read,
    /// POST (heal).
    Update,
    /// PUT (replace).
    Replace,
    /// DELETE.
    Delete,
}

impl Op {
    /// The claim value naming the operation.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::Replace => "replace",
            Op::Delete => "delete",
        }
    }
}

/// The verifier (and minter) of tokens for one secret.
#[derive(Clone)]
pub struct Auth {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { secret: <redacted> }")
    }
}

#[derive(Debug, Deserialize)]
struct JwtHeader {
    alg: String,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default, alias = "Namespaces")]
    namespaces: Vec<String>,
    #[serde(default, alias = "Ops")]
    ops: Vec<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
}

/// What a verified token allows.
#[derive(Debug, Clone)]
pub struct Grant {
    namespaces: Vec<Glob>,
    ops: Vec<String>,
}

impl Auth {
    /// A verifier for `secret` (already trimmed; must not be empty).
    pub fn new(secret: Vec<u8>) -> Result<Auth, String> {
        if secret.is_empty() {
            return Err("the JWT secret is empty".into());
        }
        Ok(Auth { secret })
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length")
    }

    /// Verifies the header value (a bare token, or `Bearer <token>`) at Unix time `now`.
    pub fn verify(&self, header: Option<&str>, now: i64) -> Result<Grant, AgentError> {
        let unauthorized = |reason: &str| AgentError::Unauthorized(format!("unauthorized: {reason}"));
        let token = header
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("missing X-Buckyd-Authorization token"))?;
        let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(unauthorized("malformed token (want header.payload.signature)"));
        };
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('='));
        let jwt_header: JwtHeader = decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| unauthorized("malformed token header"))?;
        if jwt_header.alg != "HS256" {
            return Err(unauthorized(&format!("unsupported signing algorithm {:?} (want HS256)", jwt_header.alg)));
        }
        let signature = decode(signature).map_err(|_| unauthorized("malformed token signature"))?;
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).map_err(|_| unauthorized("token signature is invalid"))?;
        let claims: Claims = decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| unauthorized("malformed token claims"))?;
        let now = now as f64;
        if claims.exp.is_some_and(|exp| now >= exp) {
            return Err(unauthorized("token has expired"));
        }
        if claims.nbf.is_some_and(|nbf| now < nbf) {
            return Err(unauthorized("token is not valid yet"));
        }
        let namespaces = claims
            .namespaces
            .iter()
            .map(|ns| {
                Glob::new(ns)
                    .map_err(|e| AgentError::Forbidden(format!("forbidden: broken namespace {ns:?} in token: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Grant { namespaces, ops: claims.ops })
    }

    /// Signs `claims` (a JSON object) as an HS256 token.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}.{payload}.{signature}")
    }

    /// The short-lived, read-only token the agent sends to ring members when it fetches for an offload.
    pub fn peer_token(&self, now: i64) -> String {
        self.sign(&serde_json::json!({"namespaces": ["*"], "ops": ["read"], "exp": now + 60}))
    }
}

impl Grant {
    /// Whether the token allows `op` at all.
    pub fn allows(&self, op: Op) -> bool {
        self.ops.iter().any(|o| o == "*" || o == op.as_str())
    }

    /// Whether the token's namespaces cover `name`.
    pub fn covers(&self, name: &str) -> bool {
        self.namespaces.iter().any(|g| g.matches(name))
    }

    /// `Ok` if the token allows `op` on `name`, else 403 with the reason.
    pub fn authorize(&self, op: Op, name: &str) -> Result<(), AgentError> {
        if !self.covers(name) {
            return Err(AgentError::Forbidden("forbidden: token has no access to the metric/namespace".into()));
        }
        if !self.allows(op) {
            return Err(AgentError::Forbidden(format!(
                "forbidden: token doesn't have {} permission for the metric/namespace",
                op.as_str()
            )));
        }
        Ok(())
    }
}

/// A Go `filepath.Match` pattern. Metric names hold no `/`, so `*` matches any run of characters.
#[derive(Debug, Clone)]
struct Glob(Vec<Token>);

#[derive(Debug, Clone)]
enum Token {
    Star,
    AnyChar,
    Literal(char),
    Class { negated: bool, ranges: Vec<(char, char)> },
}

impl Glob {
    fn new(pattern: &str) -> Result<Glob, &'static str> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => Token::Star,
                '?' => Token::AnyChar,
                '\\' => Token::Literal(chars.next().ok_or("trailing backslash")?),
                '[' => {
                    let mut negated = false;
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let mut c = chars.next().ok_or("unclosed '['")?;
                        if first && c == '^' {
                            negated = true;
                            c = chars.next().ok_or("unclosed '['")?;
                        }
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        let escaped = |c: char, chars: &mut std::str::Chars<'_>| {
                            if c == '\\' {
                                chars.next().ok_or("trailing backslash")
                            } else {
                                Ok(c)
                            }
                        };
                        if c == ']' || c == '-' {
                            return Err("bad character in '[...]'");
                        }
                        let lo = escaped(c, &mut chars)?;
                        let mut lookahead = chars.clone();
                        if lookahead.next() == Some('-') && lookahead.clone().next() != Some(']') {
                            chars.next();
                            let hi = chars.next().ok_or("unclosed '['")?;
                            let hi = escaped(hi, &mut chars)?;
                            if hi < lo {
                                return Err("inverted range in '[...]'");
                            }
                            ranges.push((lo, hi));
                        } else {
                            ranges.push((lo, lo));
                        }
                    }
                    Token::Class { negated, ranges }
                }
                c => Token::Literal(c),
            });
        }
        Ok(Glob(tokens))
    }

    fn matches(&self, name: &str) -> bool {
        let text: Vec<char> = name.chars().collect();
        let tokens = &self.0;
        let one = |t: &Token, c: char| match t {
            Token::AnyChar => true,
            Token::Literal(l) => *l == c,
            Token::Class { negated, ranges } => ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated,
            Token::Star => unreachable!(),
        };
        // Classic wildcard matching with one backtrack point (the last star).
        let (mut t, mut s) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while s < text.len() {
            match tokens.get(t) {
                Some(Token::Star) => {
                    star = Some((t, s));
                    t += 1;
                }
                Some(tok) if one(tok, text[s]) => {
                    t += 1;
                    s += 1;
                }
                _ => match star {
                    Some((st, ss)) => {
                        t = st + 1;
                        s = ss + 1;
                        star = Some((st, ss + 1));
                    }
                    None => return false,
                },
            }
        }
        tokens[t..].iter().all(|tok| matches!(tok, Token::Star))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_go_filepath_match() {
        let cases = [
            ("*", "a.b.c", true),
            ("sys.*", "sys.cpu.load", true),
            ("sys.*", "system.cpu", false),
            ("a.?.c", "a.b.c", true),
            ("a.?.c", "a.bb.c", false),
            ("a.[bc].d", "a.c.d", true),
            ("a.[^bc].d", "a.c.d", false),
            ("a.[a-c]*", "a.bravo", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("*.cpu", "host1.cpu", true),
            ("*a*b", "xaxxb", true),
            ("*a*b", "xaxxbc", false),
            ("", "", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(Glob::new(pattern).unwrap().matches(name), want, "{pattern} vs {name}");
        }
        for bad in ["[", "a\\", "[]", "[z-a]", "[a-"] {
            assert!(Glob::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_verified() {
        let auth = Auth::new(b"secret".to_vec()).unwrap();
        let now = 1_700_000_000;
        let token = auth.sign(&serde_json::json!({"namespaces": ["a.*"], "ops": ["read"], "exp": now + 10}));
        let grant = auth.verify(Some(&token), now).unwrap();
        assert!(grant.authorize(Op::Read, "a.b").is_ok());
        assert!(matches!(grant.authorize(Op::Read, "b.c"), Err(AgentError::Forbidden(_))));
        assert!(matches!(grant.authorize(Op::Delete, "a.b"), Err(AgentError::Forbidden(_))));
        assert!(auth.verify(Some(&format!("Bearer {token}")), now).is_ok());
        // Expired, not yet valid, wrong key, tampered, missing, alg none.
        assert!(matches!(auth.verify(Some(&token), now + 10), Err(AgentError::Unauthorized(_))));
        let early = auth.sign(&serde_json::json!({"namespaces": ["*"], "ops": ["*"], "nbf": now + 5}));
        assert!(auth.verify(Some(&early), now).is_err());
        let other = Auth::new(b"other".to_vec()).unwrap();
        assert!(other.verify(Some(&token), now).is_err());
        let mut tampered = token.clone();
        tampered.insert(tampered.find('.').unwrap() + 2, 'x');
        assert!(auth.verify(Some(&tampered), now).is_err());
        assert!(auth.verify(None, now).is_err());
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let payload = token.split('.').nth(1).unwrap();
        assert!(auth.verify(Some(&format!("{none_header}.{payload}.")), now).is_err());
        // The peer token only reads.
        let peer = auth.verify(Some(&auth.peer_token(now)), now).unwrap();
        assert!(peer.allows(Op::Read) && !peer.allows(Op::Delete));
    }
}
