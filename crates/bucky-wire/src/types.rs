//! JSON documents exchanged with buckyd-compatible daemons. Field names are Go's (PascalCase); decoding
//! also takes lower-case names and missing fields (Go's `encoding/json` is that lenient) and ignores unknown
//! fields, so newer peers can add fields.

use serde::{Deserialize, Serialize};

/// The `X-Metric-Stat` header: what buckyd knows about one file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricStat {
    /// The metric name (dotted).
    #[serde(rename = "Name", alias = "name")]
    pub name: String,
    /// Size in bytes of the *decoded* whisper file.
    #[serde(rename = "Size", alias = "size")]
    pub size: i64,
    /// Go `os.FileMode` bits (a regular `0644` file is `420`); see [`go_file_mode`].
    #[serde(rename = "Mode", alias = "mode")]
    pub mode: i64,
    /// Modification time, Unix seconds.
    #[serde(rename = "ModTime", alias = "modtime", alias = "modTime")]
    pub mod_time: i64,
    /// Body encoding: [`crate::ENCODING_IDENTITY`] or [`crate::ENCODING_SNAPPY`].
    #[serde(rename = "Encoding", alias = "encoding")]
    pub encoding: i64,
    /// The go-graphite fork's storage version (cwhisper); absent for plain whisper.
    #[serde(
        rename = "StorageVersion",
        alias = "storageversion",
        alias = "storageVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub storage_version: Option<String>,
}

impl MetricStat {
    /// The header value (compact JSON).
    pub fn to_header_value(&self) -> String {
        serde_json::to_string(self).expect("MetricStat always serializes")
    }

    /// Parses a header value.
    pub fn from_header_value(value: &str) -> Result<MetricStat, serde_json::Error> {
        serde_json::from_str(value)
    }
}

/// Go's `os.FileMode` for a Unix `st_mode`: permission bits, plus Go's own bits for directories, symlinks,
/// setuid, setgid and sticky.
pub fn go_file_mode(st_mode: u32) -> i64 {
    const S_IFMT: u32 = 0o170000;
    const S_IFDIR: u32 = 0o040000;
    const S_IFLNK: u32 = 0o120000;
    let mut mode = i64::from(st_mode & 0o777);
    match st_mode & S_IFMT {
        S_IFDIR => mode |= 1 << 31,
        S_IFLNK => mode |= 1 << 27,
        _ => {}
    }
    if st_mode & 0o4000 != 0 {
        mode |= 1 << 23;
    }
    if st_mode & 0o2000 != 0 {
        mode |= 1 << 22;
    }
    if st_mode & 0o1000 != 0 {
        mode |= 1 << 20;
    }
    mode
}

/// One ring member in `GET /hashring`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RingNode {
    /// Host as configured.
    #[serde(rename = "Server", alias = "server")]
    pub server: String,
    /// Carbon port; 0 when none was configured (Go's zero value).
    #[serde(rename = "Port", alias = "port")]
    pub port: u16,
    /// Instance; empty when none was configured.
    #[serde(rename = "Instance", alias = "instance")]
    pub instance: String,
}

/// The body of `GET /hashring`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RingInfo {
    /// The answering daemon's node name (`-n`).
    #[serde(rename = "Name", alias = "name")]
    pub name: String,
    /// The ring members, in configuration order.
    #[serde(rename = "Nodes", alias = "nodes")]
    pub nodes: Vec<RingNode>,
    /// buckyd's hash name: `carbon`, `fnv1a` or `jump_fnv1a`.
    #[serde(rename = "Algo", alias = "algo")]
    pub algo: String,
    /// Replication factor.
    #[serde(rename = "Replicas", alias = "replicas")]
    pub replicas: u32,
    /// Whose placement the ring follows (`carbon` or `relay`); bucky-agent only.
    #[serde(rename = "Router", alias = "router", skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// carbon's DIVERSE_REPLICAS (replicas on distinct servers); bucky-agent only, sent only when true so
    /// the document stays byte-identical to buckyd's otherwise.
    #[serde(rename = "Diverse", alias = "diverse", default, skip_serializing_if = "std::ops::Not::not")]
    pub diverse: bool,
}

/// The go-graphite fork's answer to a successful `POST`/`PUT /metrics/<name>`: durations in nanoseconds (Go
/// `time.Duration`), plus what bucky-agent did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealReport {
    /// Fetching the source (offload only).
    #[serde(rename = "Download")]
    pub download: u64,
    /// Receiving and checking the upload.
    #[serde(rename = "Dump")]
    pub dump: u64,
    /// Healing into an existing file.
    #[serde(rename = "Fill")]
    pub fill: u64,
    /// Always 0 (bucky-agent writes plain whisper).
    #[serde(rename = "Compress")]
    pub compress: u64,
    /// Creating or rewriting the file.
    #[serde(rename = "Copy")]
    pub copy: u64,
    /// The file did not exist and was created from the upload.
    #[serde(rename = "Created")]
    pub created: bool,
    /// Points written into an existing file (heal) — 0 for a create or a replace.
    #[serde(rename = "PointsWritten")]
    pub points_written: u64,
    /// Of those, points whose value the upload's replaced (a heal with overwrite, `bucky repair`); sent
    /// only when not 0, so the report stays the fork's otherwise.
    #[serde(rename = "PointsReplaced", skip_serializing_if = "is_zero")]
    pub points_replaced: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_lenient_like_go() {
        let stat = MetricStat::from_header_value(r#"{"name":"x","size":40,"Extra":true}"#).unwrap();
        assert_eq!((stat.name.as_str(), stat.size, stat.encoding), ("x", 40, 0));
        assert!(MetricStat::from_header_value("not json").is_err());
        assert!(MetricStat::from_header_value(r#"{"Size":"12"}"#).is_err());
    }

    #[test]
    fn ring_info_matches_buckyd() {
        let info = RingInfo {
            name: "g1".into(),
            nodes: vec![RingNode { server: "g1".into(), port: 2003, instance: "a".into() }],
            algo: "carbon".into(),
            replicas: 1,
            router: None,
            diverse: false,
        };
        let json = r#"{"Name":"g1","Nodes":[{"Server":"g1","Port":2003,"Instance":"a"}],"Algo":"carbon","Replicas":1}"#;
        assert_eq!(serde_json::to_string(&info).unwrap(), json);
        assert_eq!(serde_json::from_str::<RingInfo>(json).unwrap(), info, "buckyd's document: not diverse");
        let diverse = RingInfo { replicas: 2, router: Some("carbon".into()), diverse: true, ..info };
        let json = serde_json::to_string(&diverse).unwrap();
        assert!(json.ends_with(r#""Replicas":2,"Router":"carbon","Diverse":true}"#), "{json}");
        assert_eq!(serde_json::from_str::<RingInfo>(&json).unwrap(), diverse);
    }

    #[test]
    fn file_modes_follow_go() {
        assert_eq!(go_file_mode(0o100644), 420);
        assert_eq!(go_file_mode(0o040755), (1 << 31) | 0o755);
        assert_eq!(go_file_mode(0o104755), (1 << 23) | 0o755);
    }
}
