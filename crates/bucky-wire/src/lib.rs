//! The buckyd wire protocol, shared by `bucky-agent` (the server) and the `bucky` CLI (the client).
//!
//! Everything here is byte-compatible with buckyd (jjneely/buckytools 0.4.x and the go-graphite fork):
//!
//! - [`MetricStat`]: the `X-Metric-Stat` header (`{"Name","Size","Mode","ModTime","Encoding"}`);
//! - [`RingInfo`] / [`RingNode`]: the body of `GET /hashring`;
//! - [`HealReport`]: the JSON body the fork returns after `POST`/`PUT /metrics/<name>`;
//! - [`batch`]: bucky's own extension, many metrics in one request (buckyd answers 404);
//! - [`digest`]: bucky's digests of many metrics' copies, to compare replicas without their files;
//! - [`verify`]: the check that a replica holds every point of a source, made by the client or, for an
//!   offload, by the destination agent;
//! - [`UtcTime`]: calendar dates of `ModTime`s (HTTP dates, RFC 3339);
//! - [`MetricName`]: the one checker that turns a metric name into a path below the store root. Unlike
//!   buckyd, which maps `a..b` and `a.b` to the same file and lets `/` or NUL through, it refuses every name
//!   that is not a clean, reversible path.
//!
//! ```
//! use bucky_wire::{MetricName, MetricStat};
//!
//! let name = MetricName::parse("carbon.agents.host1.cpuUsage")?;
//! assert_eq!(name.relative_path(), std::path::Path::new("carbon/agents/host1/cpuUsage.wsp"));
//! assert!(MetricName::parse("a..b").is_err());
//! assert!(MetricName::parse("../etc/passwd").is_err());
//!
//! let stat: MetricStat = serde_json::from_str(r#"{"Name":"a.b","Size":17308,"Mode":420,"ModTime":1700000000,"Encoding":0}"#)?;
//! assert_eq!(stat.size, 17308);
//! assert_eq!(serde_json::to_string(&stat)?, r#"{"Name":"a.b","Size":17308,"Mode":420,"ModTime":1700000000,"Encoding":0}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod batch;
pub mod digest;
#[cfg(feature = "cli")]
pub mod goflags;
mod name;
mod time;
mod types;
pub mod verify;

pub use name::{metric_from_relative, MetricName, NameError, MAX_COMPONENT_LEN, MAX_NAME_LEN};
pub use time::UtcTime;
pub use types::{go_file_mode, HealReport, MetricStat, RingInfo, RingNode};

/// Header carrying a file's [`MetricStat`] as JSON, on responses (HEAD, GET) and uploads (POST, PUT).
pub const METRIC_STAT_HEADER: &str = "X-Metric-Stat";

/// Header carrying the go-graphite fork's HS256 JWT.
pub const AUTH_HEADER: &str = "X-Buckyd-Authorization";

/// Request header of a heal (`POST /metrics/<name>`), a bucky extension: with `1`, bucky-agent answers with
/// the replica as it reads it back from its final path after the heal (under a shared flock), as a `GET`
/// would, so the client can verify it without another request. Agents that do not know it (buckyd) ignore
/// it and answer as usual; clients fall back to a `GET` when the answer lacks the header.
pub const READ_BACK_HEADER: &str = "X-Bucky-Read-Back";

/// Request header of a heal (`POST /metrics/<name>`), a bucky extension: with `1`, where the replica holds
/// another value than the upload for the same time, the upload's value wins (`bucky repair`). buckyd
/// ignores it and only fills empty slots; the client's exact verification then finds the difference.
pub const OVERWRITE_HEADER: &str = "X-Bucky-Heal-Overwrite";

/// Response header of a heal answered with the read-back replica: the [`HealReport`] as JSON (the body
/// is the file).
pub const HEAL_REPORT_HEADER: &str = "X-Bucky-Heal-Report";

/// The strong ETag (quoted) bucky-agent gives a file: XXH3-128 of its whole content, so it changes whenever
/// any byte does, and a client can tell from it alone that a file holds exactly the bytes it has.
pub fn content_etag(bytes: &[u8]) -> String {
    format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// `Encoding` value of an uncompressed body.
pub const ENCODING_IDENTITY: i64 = 0;

/// `Encoding` value of a snappy *framed* body (`Content-Encoding: snappy`).
pub const ENCODING_SNAPPY: i64 = 1;

/// The body (plus a newline) of buckyd's `202 Accepted` while the metric list is being built; clients retry.
pub const CACHE_UPDATE_IN_PROGRESS: &str = "Cache update in progress.";

/// The body (plus a newline) of buckyd's 404 for a missing metric.
pub const METRIC_NOT_FOUND: &str = "Metric not found.";

/// buckyd's default listening port.
pub const DEFAULT_PORT: u16 = 4242;
