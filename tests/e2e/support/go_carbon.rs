//! A real go-carbon 0.17.1 (built by `../shared/peers/build.sh` into `.peers/`) on a private loopback address:
//! its line receiver, its whisper writer (`flock`, `compressed` as asked) and its carbonserver (`/admin/info`,
//! the file-list-cache), killed and reaped on drop. Tests that need go-carbon start it here, so every one of
//! them runs the same configuration.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::{free_port, go_peer, spawn_logged};

/// What a test chooses about its go-carbon; `GoCarbonConfig::new` gives the defaults used everywhere else.
#[derive(Clone, Debug)]
pub struct GoCarbonConfig {
    /// `[whisper] flock`: an exclusive flock around every write (as carbon-cache's `WHISPER_LOCK_WRITES`).
    pub flock: bool,
    /// `[whisper] compressed`: new files in go-whisper's compressed format.
    pub compressed: bool,
    /// `[cache] max-size`: the cache's limit in points, reported as `cache.limit` by `/admin/info`.
    pub max_size: u64,
    /// `[whisper] max-updates-per-second` (0: unlimited); a low value keeps points in the cache.
    pub max_updates_per_second: u64,
    /// `storage-schemas.conf` retentions for every metric (`pattern = .*`).
    pub retentions: String,
    /// `[carbonserver] file-list-cache-version`, when a file-list-cache is written (`None`: none).
    pub file_list_cache_version: Option<u8>,
    /// `[carbonserver] scan-frequency`: how often the carbonserver rescans the tree (and rewrites the cache).
    pub scan_frequency: String,
    /// The line receiver's port (`None`: a free one). A relay's ring names every node on one port.
    pub line_port: Option<u16>,
    /// The carbonserver's port (`None`: a free one). bucky finds a node's carbonserver at its host on one
    /// port (`--go-carbon-port`).
    pub carbonserver_port: Option<u16>,
}

impl GoCarbonConfig {
    /// flock on, uncompressed, a 1,000,000-point cache, a v2 file-list-cache rescanned every 2 s.
    pub fn new(retentions: &str) -> GoCarbonConfig {
        GoCarbonConfig {
            flock: true,
            compressed: false,
            max_size: 1_000_000,
            max_updates_per_second: 0,
            retentions: retentions.to_owned(),
            file_list_cache_version: Some(2),
            scan_frequency: "2s".to_owned(),
            line_port: None,
            carbonserver_port: None,
        }
    }
}

/// A running go-carbon. `data_dir` is its whisper tree; `line` its plain-text receiver; `carbonserver` its
/// HTTP listener; `file_list_cache` the cache it writes (when configured).
pub struct GoCarbon {
    child: Child,
    /// Its whisper tree (`[whisper] data-dir`).
    pub data_dir: PathBuf,
    /// `IP:PORT` of its plain-text line receiver.
    pub line: String,
    /// `IP:PORT` of its carbonserver (`/admin/info`, `/metrics/list`).
    pub carbonserver: String,
    /// The file-list-cache it writes, when configured.
    pub file_list_cache: Option<PathBuf>,
    /// Its log file.
    pub log: PathBuf,
}

impl GoCarbon {
    /// Starts go-carbon on `ip` (fresh ports) over `data_dir`, with its config, schemas and log in `work`.
    /// Returns once its line receiver accepts and `/admin/info` answers; panics with its log otherwise.
    pub fn start(ip: &str, data_dir: &Path, work: &Path, config: &GoCarbonConfig) -> GoCarbon {
        std::fs::create_dir_all(data_dir).expect("create go-carbon data dir");
        std::fs::create_dir_all(work).expect("create go-carbon work dir");
        let line = format!("{ip}:{}", config.line_port.unwrap_or_else(|| free_port(ip)));
        let carbonserver = format!("{ip}:{}", config.carbonserver_port.unwrap_or_else(|| free_port(ip)));
        let schemas = work.join("storage-schemas.conf");
        std::fs::write(&schemas, format!("[default]\npattern = .*\nretentions = {}\n", config.retentions))
            .expect("write schemas");
        let file_list_cache = config.file_list_cache_version.map(|_| work.join("file-list-cache.bin"));
        let flc = match (&file_list_cache, config.file_list_cache_version) {
            (Some(path), Some(version)) => {
                format!("file-list-cache = \"{}\"\nfile-list-cache-version = {version}\n", path.display())
            }
            _ => String::new(),
        };
        let log = work.join("go-carbon.log");
        let toml = format!(
            r#"[common]
user = ""
max-cpu = 1
metric-interval = "1h"
[whisper]
data-dir = "{data}"
schemas-file = "{schemas}"
enabled = true
workers = 1
flock = {flock}
compressed = {compressed}
hash-filenames = false
max-updates-per-second = {mups}
[cache]
max-size = {max_size}
write-strategy = "max"
[udp]
enabled = false
[tcp]
listen = "{line}"
enabled = true
[pickle]
enabled = false
[carbonlink]
enabled = false
[grpc]
enabled = false
[tags]
enabled = false
[carbonserver]
listen = "{carbonserver}"
enabled = true
scan-frequency = "{scan}"
{flc}[pprof]
enabled = false
[[logging]]
logger = ""
file = "{log}"
level = "info"
encoding = "mixed"
"#,
            data = data_dir.display(),
            schemas = schemas.display(),
            flock = config.flock,
            compressed = config.compressed,
            mups = config.max_updates_per_second,
            max_size = config.max_size,
            scan = config.scan_frequency,
            log = log.display(),
        );
        let config_path = work.join("go-carbon.toml");
        std::fs::write(&config_path, toml).expect("write go-carbon config");
        let stdio = std::fs::File::create(work.join("go-carbon.stdout")).expect("create go-carbon stdout");
        let mut command = Command::new(go_peer("go-carbon"));
        command.arg("-config").arg(&config_path);
        let child = spawn_logged(&mut command, stdio).expect("start go-carbon");
        let mut go_carbon = GoCarbon { child, data_dir: data_dir.to_owned(), line, carbonserver, file_list_cache, log };
        go_carbon.wait_ready();
        go_carbon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("go-carbon status") {
                panic!("go-carbon exited with {status}: {}", self.log_text());
            }
            if TcpStream::connect(&self.line).is_ok() && self.admin_info().is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "go-carbon not ready after 30 s: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// go-carbon's own log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends plain-text lines (`name value timestamp`, one per entry) to the line receiver on one connection.
    pub fn send_lines<S: AsRef<str>>(&self, lines: &[S]) {
        send_lines(&self.line, lines);
    }

    /// `(cache size, cache limit)` from `GET /admin/info`, or `None` when it does not answer.
    pub fn admin_info(&self) -> Option<(u64, u64)> {
        let mut stream = TcpStream::connect(&self.carbonserver).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let request = format!("GET /admin/info HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.carbonserver);
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let body = answer.split_once("\r\n\r\n")?.1;
        let json: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
        Some((json["cache"]["size"].as_u64()?, json["cache"]["limit"].as_u64()?))
    }

    /// The whisper file go-carbon writes for `name` (dots to directories).
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.data_dir.join(format!("{}.wsp", name.replace('.', "/")))
    }

    /// Waits (at most `timeout`) until every file of `names` exists; panics with the log otherwise.
    pub fn wait_for_files<S: AsRef<str>>(&self, names: &[S], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !names.iter().all(|n| self.path_of(n.as_ref()).exists()) {
            assert!(Instant::now() < deadline, "go-carbon did not create the files in time: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sends plain-text lines to the line receiver at `line` (a [`GoCarbon::line`]) on one connection: for a
/// thread feeding a go-carbon that the test owns.
pub fn send_lines<S: AsRef<str>>(line: &str, lines: &[S]) {
    let mut stream = TcpStream::connect(line).expect("connect to go-carbon's line receiver");
    let mut text = String::new();
    for line in lines {
        text.push_str(line.as_ref());
        text.push('\n');
    }
    stream.write_all(text.as_bytes()).expect("send lines to go-carbon");
}

impl Drop for GoCarbon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
