//! The validated values every cluster command works with: an agent's [`Addr`], and the [`Config`] that
//! [`crate::settings`] resolves from the flags, the environment and the config file.

use std::path::PathBuf;
use std::time::Duration;

use crate::UsageError;

/// Default agent port (buckyd's).
pub const DEFAULT_PORT: u16 = bucky_wire::DEFAULT_PORT;

/// An agent address: host (IPv6 without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Addr {
    /// Parses `HOST[:PORT]` or `[V6][:PORT]`; the port defaults to `default_port`.
    pub fn parse(text: &str, default_port: u16) -> Result<Addr, UsageError> {
        let text = text.trim();
        let bad = |why: &str| UsageError(format!("invalid address {text:?}: {why} (want HOST[:PORT])"));
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(|| bad("text after ']'"))?)),
            }
        } else {
            match text.matches(':').count() {
                0 => (text, None),
                1 => {
                    let (h, p) = text.split_once(':').unwrap_or((text, ""));
                    (h, Some(p))
                }
                _ => (text, None), // a bare IPv6 address
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| bad("bad port"))?,
        };
        Ok(Addr { host: host.to_owned(), port })
    }

    /// Whether the host is this machine's loopback (`127.0.0.0/8`, `::1`, `localhost`): transfers there are
    /// not worth compressing.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_end_matches('.');
        match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
            Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
            Err(_) => host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost"),
        }
    }

    /// `host:port`, IPv6 bracketed: what goes into a URL and into offload forms.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.authority())
    }
}

/// The validated common flags.

#[derive(Debug, Clone)]
pub struct Config {
    /// The seed agent.
    pub seed: Addr,
    /// Concurrent requests per node (≥ 1).
    pub workers: usize,
    /// JSON output.
    pub json: bool,
    /// Verbose logging.
    pub verbose: bool,
    /// Ask the agents to rebuild their metric lists.
    pub force: bool,
    /// Idle timeout of one request.
    pub timeout: Duration,
    /// Longest wait for a metric list being built (202).
    pub cache_wait: Duration,
    /// Snappy transfers.
    pub snappy: bool,
    /// The JWT, if any.
    pub token: Option<String>,
    /// Draw progress bars (stderr is a terminal and they were not disabled).
    pub progress: bool,
    /// `--diverse-replicas`: carbon's DIVERSE_REPLICAS for the ring, overriding what the agents state.
    pub diverse_replicas: Option<bool>,
    /// The cluster's ring file (`ring_config` of its config-file table), if any.
    pub ring_config: Option<PathBuf>,
    /// Which cluster of the ring file (`ring_cluster`).
    pub ring_cluster: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = Addr::parse("graphite1", 4242).unwrap();
        assert_eq!((a.host.as_str(), a.port), ("graphite1", 4242));
        assert_eq!(Addr::parse("10.0.0.1:5000", 4242).unwrap().authority(), "10.0.0.1:5000");
        assert_eq!(Addr::parse("[::1]:5000", 4242).unwrap().authority(), "[::1]:5000");
        assert_eq!(Addr::parse("[::1]", 4242).unwrap().port, 4242);
        assert_eq!(Addr::parse("::1", 4242).unwrap().authority(), "[::1]:4242");
        assert!(Addr::parse("", 4242).is_err());
        assert!(Addr::parse("h:0", 4242).is_err());
        assert!(Addr::parse("h:x", 4242).is_err());
        assert!(Addr::parse(":80", 4242).is_err());
    }

    #[test]
    fn loopback_hosts() {
        let loopback = [
            "127.0.0.1",
            "127.0.77.4",
            "::1",
            "[::1]:5000",
            "::ffff:127.0.0.1",
            "localhost",
            "LocalHost.",
            "a.localhost",
        ];
        for host in loopback {
            assert!(Addr::parse(host, 4242).unwrap().is_loopback(), "{host}");
        }
        for host in ["10.0.0.1", "graphite1", "::2", "localhost.example.com", "128.0.0.1"] {
            assert!(!Addr::parse(host, 4242).unwrap().is_loopback(), "{host}");
        }
    }
}
