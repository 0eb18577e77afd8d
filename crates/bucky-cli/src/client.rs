//! The HTTP client of buckyd's API, as spoken by bucky-agent and buckyd.
//!
//! Every request has a connect timeout and an idle (read) timeout; network errors and 5xx answers are
//! retried a bounded number of times with exponential backoff and jitter (honouring `Retry-After`).
//! Connections are pooled per host. Metric lists are streamed and parsed as they arrive; a `202 Cache
//! update in progress.` is waited out with growing sleeps, up to `--cache-wait`.
//!
//! buckyd's list is a cache, fresh for an hour (`-timeout 3600`), and `force` races with it: the forcing
//! request starts the rebuild in a goroutine and then reads the cache, which is usually still the old list
//! (jjneely metrics.go:48-51, the same in 0.6.0). So a forced listing here is two requests: one that forces
//! and lists nothing, then the listing, which waits out the 202 of the rebuild. A list may still name a
//! metric that is gone (no force, or 0.6.0 with `-cache_path ""`, whose rebuilds append to the old list):
//! commands count a 404 on such a name as "gone since listed", not as an error.

use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bucky_wire::batch::{self, Frame, Meta};
use bucky_wire::digest::MetricDigest;
use bucky_wire::{
    HealReport, MetricStat, RingInfo, AUTH_HEADER, HEAL_REPORT_HEADER, METRIC_STAT_HEADER, READ_BACK_HEADER,
};
use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_MATCH, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode, Url};

use crate::config::{Addr, Config};
use crate::health::Health;
use crate::inflight::FileBudget;
use crate::names::JsonArrayParser;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The agent could not be reached (or kept timing out) after every retry. The message names the
    /// address once: the network error's own chain (reqwest's "error sending request for url (…)") is
    /// reduced to its root cause, see [`network_cause`], and printed; so it is not exposed as a source.
    #[error("{addr} is unreachable ({what}): {}", network_cause(network))]
    Unreachable {
        /// The agent.
        addr: String,
        /// What was being done.
        what: String,
        /// The last network error (printed as its root cause).
        network: reqwest::Error,
    },
    /// The agent answered with an unexpected status.
    #[error("{addr}: {what}: HTTP {status}: {body}")]
    Status {
        /// The agent.
        addr: String,
        /// What was being done.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body (the agent's reason).
        body: String,
    },
    /// The agent's disk is full (507 Insufficient Storage): it cannot take more data until space is freed.
    #[error("{addr} is full (507 Insufficient Storage): {what}: {body}")]
    Full {
        /// The agent.
        addr: String,
        /// What was being done.
        what: String,
        /// The agent's reason (which device, and the fix).
        body: String,
    },
    /// `If-Match` failed: the file changed since it was read (412).
    #[error("{addr}: {what}: the file changed since it was read")]
    Changed {
        /// The agent.
        addr: String,
        /// What was being done.
        what: String,
    },
    /// The metric list was still being built when `--cache-wait` ran out.
    #[error("{addr}: the metric list was still being built after {secs} s (raise --cache-wait)")]
    CacheWait {
        /// The agent.
        addr: String,
        /// Seconds waited.
        secs: u64,
    },
    /// The answer could not be understood.
    #[error("{addr}: {what}: {reason}")]
    Invalid {
        /// The agent.
        addr: String,
        /// What was being done.
        what: String,
        /// What was wrong.
        reason: String,
    },
}

/// The root cause of a network error, without the URL reqwest puts in its own message (the caller names the
/// agent already): `Connection refused (os error 111)`, `timed out`.
pub fn network_cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &(dyn std::error::Error + 'static) = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if std::ptr::addr_eq(cause, error as &(dyn std::error::Error + 'static)) {
        // No deeper cause: reqwest's own text, less its " for url (…)".
        let text = error.to_string();
        return match (text.find(" for url ("), text.rfind(')')) {
            (Some(start), Some(end)) if end > start => format!("{}{}", &text[..start], &text[end + 1..]),
            _ => text,
        };
    }
    cause.to_string()
}

/// Whether a request reached its agent: any answer does, even an error status; only
/// [`ClientError::Unreachable`] does not.
pub(crate) fn reached<T>(result: &Result<T, ClientError>) -> bool {
    !matches!(result, Err(ClientError::Unreachable { .. }))
}

/// A whisper file read from an agent.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its `X-Metric-Stat` (Encoding describes the transfer; Size the decoded file).
    pub stat: MetricStat,
    /// The decoded file.
    pub data: Vec<u8>,
    /// The version read, for `If-Match` (bucky-agent only; buckyd sends none).
    pub etag: Option<String>,
    /// Bytes that crossed the network.
    pub wire_bytes: u64,
}

/// A whisper file ready to be sent to any number of agents: compressed once (if asked), and sent
/// compressed to the agents worth it (see [`Client::snappy_for`]), as is to the others.
#[derive(Debug, Clone)]
pub struct Upload {
    /// `X-Metric-Stat` of the plain body.
    plain_stat: String,
    plain: Bytes,
    /// The snappy-framed body and its `X-Metric-Stat`.
    snappy: Option<(String, Bytes)>,
    /// The plain body's [`bucky_wire::content_etag`], when computed ([`Upload::with_etag`]).
    etag: Option<String>,
    /// Heal with the upload's values winning where they differ ([`Upload::overwriting`]).
    overwrite: bool,
}

impl Upload {
    /// Prepares `data` (a whole whisper file) with the stat of its source; compressed too if `snappy`.
    pub fn new(stat: MetricStat, data: &[u8], snappy: bool) -> std::io::Result<Upload> {
        Upload::from_bytes(stat, Bytes::copy_from_slice(data), snappy)
    }

    /// [`Upload::new`] without copying `data`.
    pub fn from_bytes(mut stat: MetricStat, data: Bytes, snappy: bool) -> std::io::Result<Upload> {
        stat.size = data.len() as i64;
        let compressed = if snappy {
            let body = Bytes::from(snappy_frame(&data)?);
            stat.encoding = bucky_wire::ENCODING_SNAPPY;
            Some((stat.to_header_value(), body))
        } else {
            None
        };
        stat.encoding = bucky_wire::ENCODING_IDENTITY;
        Ok(Upload { plain_stat: stat.to_header_value(), plain: data, snappy: compressed, etag: None, overwrite: false })
    }

    /// The same upload, healed with its values winning over the replica's where both hold a point for
    /// the same time (`bucky repair`; bucky-agent only, buckyd fills empty slots whatever it is told).
    pub fn overwriting(mut self, overwrite: bool) -> Upload {
        self.overwrite = overwrite;
        self
    }

    /// The same upload, knowing its content's ETag: a batch heal then leaves out of its answer a replica
    /// read back identical to it (see [`Healed::identical`]).
    pub fn with_etag(mut self) -> Upload {
        self.etag = Some(bucky_wire::content_etag(&self.plain));
        self
    }

    /// The `X-Metric-Stat`, body and whether it is snappy: compressed if prepared so and `snappy`.
    fn body(&self, snappy: bool) -> (&str, &Bytes, bool) {
        match &self.snappy {
            Some((stat, body)) if snappy => (stat, body, true),
            _ => (&self.plain_stat, &self.plain, false),
        }
    }

    /// Bytes on the wire, compressed or not.
    pub fn wire_len(&self, snappy: bool) -> u64 {
        self.body(snappy).1.len() as u64
    }
}

/// What a heal answered.
#[derive(Debug)]
pub struct Healed {
    /// The agent's report (all zero from buckyd (jj), which answers with an empty body).
    pub report: HealReport,
    /// Bytes of the upload sent.
    pub sent: u64,
    /// The replica as the agent read it back from its final path after the heal, when asked for and the
    /// agent supports it (`X-Bucky-Read-Back`, bucky-agent only).
    pub replica: Option<Fetched>,
    /// The replica as read back is byte for byte the upload: the agent's ETag of it, computed from the file
    /// read back, is the upload's own (a batch heal then sends no copy, and `replica` is `None`).
    pub identical: bool,
}

/// What an offload did for one metric: the destination fetched the source itself, healed it and checked
/// the replica it read back against it.
#[derive(Debug, Clone)]
pub struct Offloaded {
    /// What the heal did.
    pub report: HealReport,
    /// The replica checked against the source fetched.
    pub verdict: bucky_wire::verify::Verdict,
    /// The version of the source fetched (delete it with `If-Match` of this).
    pub source_etag: String,
    /// Bytes of the source.
    pub bytes: u64,
}

/// What a DELETE did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The file was removed.
    Removed,
    /// There was no such file.
    Absent,
}

/// The query of a metric listing.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only names matching this regex (RE2 syntax, evaluated by the agent).
    pub regex: Option<String>,
    /// Rebuild the agent's list first.
    pub force: bool,
}

/// A shared, pooled client for every agent of a cluster. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    token: Option<String>,
    snappy: bool,
    attempts: u32,
    cache_wait: Duration,
    /// Agents that answered a batch request with 404 (buckyd, older bucky-agents): one request per metric.
    no_batch: Arc<Mutex<HashSet<Addr>>>,
    /// Agents that answered `/batch/offload` with 404 (older bucky-agents): copies to them go through the
    /// client.
    no_offload: Arc<Mutex<HashSet<Addr>>>,
    /// The agents found unreachable (and not heard from since).
    health: Arc<Health>,
    /// The budget batch reads reserve room in (an engine run's `--inflight-mib`), if any.
    files: Option<FileBudget>,
}

/// Largest error body kept for messages.
const ERROR_BODY: usize = 300;
/// First retry delay.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Pause after asking for a list rebuild, so that buckyd's rebuild goroutine has started (and answers 202)
/// before the listing itself is asked for.
const REBUILD_START: Duration = Duration::from_millis(100);

impl Client {
    /// A client for the validated common flags.
    pub fn new(config: &Config) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .read_timeout(config.timeout)
            .pool_max_idle_per_host(256)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("bucky/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            token: config.token.clone(),
            snappy: config.snappy,
            attempts: 4,
            cache_wait: config.cache_wait,
            no_batch: Arc::default(),
            no_offload: Arc::default(),
            health: Arc::default(),
            files: None,
        })
    }

    /// This client (the same connections, the same knowledge of the agents) with its batch reads reserving
    /// room in `budget` first: each asks for at most the room it got (see [`crate::inflight`]).
    pub(crate) fn with_file_budget(&self, budget: FileBudget) -> Client {
        Client { files: Some(budget), ..self.clone() }
    }

    /// The agents this client found unreachable.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Whether transfers are snappy-compressed (with agents not on loopback, see [`Client::snappy_for`]).
    pub fn snappy(&self) -> bool {
        self.snappy
    }

    /// Whether transfers with `addr` are snappy-compressed: as configured, except on loopback, where
    /// compressing and decompressing cost more CPU on both sides than the bytes saved.
    pub fn snappy_for(&self, addr: &Addr) -> bool {
        self.snappy && !addr.is_loopback()
    }

    fn url(addr: &Addr, path: &[&str]) -> Url {
        let mut url = Url::parse(&format!("http://{}/", addr.authority())).unwrap_or_else(|_| {
            // Addr hosts are validated; fall back to a URL that fails to connect with a clear error.
            Url::parse("http://invalid.invalid/").expect("static URL")
        });
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.clear();
            for p in path {
                segments.push(p);
            }
        }
        url
    }

    fn authorized(&self, builder: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => builder.header(AUTH_HEADER, token),
            None => builder,
        }
    }

    /// Sends with retries; reads the whole body. Network errors and 5xx other than 507 (a full disk) are
    /// retried. The outcome is noted in [`Client::health`]: unreachable, or answering, or full.
    async fn exchange(
        &self,
        addr: &Addr,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
        let result = self.exchange_with_retries(addr, what, build).await;
        self.health.saw(addr, reached(&result));
        if matches!(&result, Ok((status, ..)) if *status == StatusCode::INSUFFICIENT_STORAGE) {
            self.health.saw_full(addr);
        }
        result
    }

    async fn exchange_with_retries(
        &self,
        addr: &Addr,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.attempts;
            let result = async {
                let response = self.authorized(build()).send().await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, headers, body))
            }
            .await;
            match result {
                // A full disk stays full for a while: asking again at once would only make the run slower.
                Ok((status, headers, _))
                    if status.is_server_error() && status != StatusCode::INSUFFICIENT_STORAGE && !last =>
                {
                    let wait = retry_after(&headers).unwrap_or(delay);
                    tracing::debug!(%addr, what, %status, "retrying after a server error");
                    tokio::time::sleep(wait.min(MAX_BACKOFF)).await;
                }
                Ok(answer) => return Ok(answer),
                Err(e) if !last => {
                    tracing::debug!(%addr, what, error = %e, "retrying after a network error");
                    tokio::time::sleep(jitter(delay)).await;
                }
                Err(source) => {
                    return Err(ClientError::Unreachable {
                        addr: addr.to_string(),
                        what: what.to_owned(),
                        network: source,
                    })
                }
            }
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    fn status_error(addr: &Addr, what: &str, status: StatusCode, body: &[u8]) -> ClientError {
        let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY)]).trim().to_owned();
        status_error(addr, what, status.as_u16(), text)
    }

    /// `GET /hashring`.
    pub async fn hashring(&self, addr: &Addr) -> Result<RingInfo, ClientError> {
        let url = Self::url(addr, &["hashring"]);
        let what = "GET /hashring";
        let (status, _, body) = self.exchange(addr, what, || self.http.get(url.clone())).await?;
        if status != StatusCode::OK {
            return Err(Self::status_error(addr, what, status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Invalid {
            addr: addr.to_string(),
            what: what.into(),
            reason: format!("not a hashring document: {e}"),
        })
    }

    /// Whether `addr` answers now: one `GET /hashring`, no retry, at most `timeout`. Noted in
    /// [`Client::health`] like any request (the engine probes the nodes whose jobs wait this way).
    pub async fn probe(&self, addr: &Addr, timeout: Duration) -> bool {
        let request = self.authorized(self.http.get(Self::url(addr, &["hashring"]))).timeout(timeout);
        let reached = match request.send().await {
            Ok(response) => response.bytes().await.is_ok(),
            Err(_) => false,
        };
        self.health.saw(addr, reached);
        reached
    }

    /// Asks the agent to rebuild its metric list (`force`). The request lists nothing (`list=[]`), and the
    /// listing proper is a later request, answered 202 while the rebuild runs and then with the new list:
    /// buckyd (0.4.2 and 0.6.0) starts the rebuild in a goroutine and may answer the forcing request itself
    /// from the old list (its defect, see the module doc); the pause gives that goroutine time to start.
    async fn rebuild_list(&self, addr: &Addr) -> Result<(), ClientError> {
        let what = "rebuild the metric list";
        let url = Self::url(addr, &["metrics"]);
        let form = [("force", "true"), ("list", "[]")];
        let (status, _, body) = self.exchange(addr, what, || self.http.post(url.clone()).form(&form)).await?;
        match status {
            StatusCode::OK | StatusCode::ACCEPTED => {}
            status => return Err(Self::status_error(addr, what, status, &body)),
        }
        tokio::time::sleep(REBUILD_START).await;
        Ok(())
    }

    /// Streams the agent's metric list, calling `emit` for every name as it is parsed; returns the count.
    /// With `force`, the list is rebuilt first ([`Client::rebuild_list`]); `202` answers are waited out.
    pub async fn list(&self, addr: &Addr, query: &ListQuery, mut emit: impl FnMut(String)) -> Result<u64, ClientError> {
        let what = "list metrics";
        let url = Self::url(addr, &["metrics"]);
        if query.force {
            self.rebuild_list(addr).await?;
        }
        let started = Instant::now();
        let mut waits = Backoff::list();
        loop {
            let mut form: Vec<(&str, &str)> = Vec::new();
            if let Some(regex) = &query.regex {
                form.push(("regex", regex));
            }
            let mut delay = FIRST_BACKOFF;
            let mut attempt = 0;
            let mut response = loop {
                attempt += 1;
                let sent = self.authorized(self.http.post(url.clone()).form(&form)).send().await;
                match sent {
                    Ok(r) if r.status().is_server_error() && attempt < self.attempts => {
                        tokio::time::sleep(retry_after(r.headers()).unwrap_or(delay).min(MAX_BACKOFF)).await;
                    }
                    Ok(r) => break r,
                    Err(e) if attempt < self.attempts => {
                        tracing::debug!(%addr, error = %e, "retrying the listing");
                        tokio::time::sleep(jitter(delay)).await;
                    }
                    Err(source) => {
                        return Err(ClientError::Unreachable {
                            addr: addr.to_string(),
                            what: what.into(),
                            network: source,
                        })
                    }
                }
                delay = (delay * 2).min(MAX_BACKOFF);
            };
            match response.status() {
                StatusCode::OK => {}
                StatusCode::ACCEPTED => {
                    let waited = started.elapsed();
                    if waited >= self.cache_wait {
                        return Err(ClientError::CacheWait { addr: addr.to_string(), secs: waited.as_secs() });
                    }
                    let wait = waits.next().min(self.cache_wait - waited);
                    tracing::info!(%addr, "metric list being built; waiting {:.1} s", wait.as_secs_f64());
                    tokio::time::sleep(wait).await;
                    continue;
                }
                status => {
                    let body = response.bytes().await.unwrap_or_default();
                    return Err(Self::status_error(addr, what, status, &body));
                }
            }
            let mut parser = JsonArrayParser::new();
            let invalid = |reason: String| ClientError::Invalid { addr: addr.to_string(), what: what.into(), reason };
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => parser.feed(&chunk, &mut emit).map_err(|e| invalid(format!("{e:#}")))?,
                    Ok(None) => break,
                    Err(source) => {
                        return Err(ClientError::Unreachable {
                            addr: addr.to_string(),
                            what: what.into(),
                            network: source,
                        })
                    }
                }
            }
            return parser.finish().map_err(|e| invalid(format!("{e:#}")));
        }
    }

    /// Which of `names` exist on the agent (`list=` intersection), in batches.
    pub async fn existing(&self, addr: &Addr, names: &[String], force: bool) -> Result<Vec<String>, ClientError> {
        let what = "look up metrics";
        let url = Self::url(addr, &["metrics"]);
        let mut found = Vec::new();
        if force {
            self.rebuild_list(addr).await?;
        }
        let mut waits = Backoff::list();
        let started = Instant::now();
        for batch in names.chunks(10_000) {
            let list = serde_json::to_string(batch).unwrap_or_else(|_| "[]".into());
            loop {
                let form = [("list", list.as_str())];
                let (status, _, body) = self.exchange(addr, what, || self.http.post(url.clone()).form(&form)).await?;
                match status {
                    StatusCode::OK => {
                        let names: Vec<String> = serde_json::from_slice(&body).map_err(|e| ClientError::Invalid {
                            addr: addr.to_string(),
                            what: what.into(),
                            reason: format!("not a JSON array: {e}"),
                        })?;
                        found.extend(names);
                        break;
                    }
                    StatusCode::ACCEPTED => {
                        let waited = started.elapsed();
                        if waited >= self.cache_wait {
                            return Err(ClientError::CacheWait { addr: addr.to_string(), secs: waited.as_secs() });
                        }
                        tokio::time::sleep(waits.next().min(self.cache_wait - waited)).await;
                    }
                    status => return Err(Self::status_error(addr, what, status, &body)),
                }
            }
        }
        Ok(found)
    }

    /// `HEAD /metrics/<name>`: the stat, or `None` if the metric does not exist.
    pub async fn stat(&self, addr: &Addr, name: &str) -> Result<Option<MetricStat>, ClientError> {
        let url = Self::url(addr, &["metrics", name]);
        let what = format!("stat {name}");
        let (status, headers, body) = self.exchange(addr, &what, || self.http.head(url.clone())).await?;
        match status {
            StatusCode::OK => parse_stat(addr, &what, &headers).map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(Self::status_error(addr, &what, status, &body)),
        }
    }

    /// `GET /metrics/<name>`, decoded; `None` if the metric does not exist.
    pub async fn get(&self, addr: &Addr, name: &str) -> Result<Option<Fetched>, ClientError> {
        let url = Self::url(addr, &["metrics", name]);
        let what = format!("read {name}");
        let snappy = self.snappy_for(addr);
        let (status, headers, body) = self
            .exchange(addr, &what, || {
                let request = self.http.get(url.clone());
                if snappy {
                    request.header(ACCEPT_ENCODING, "snappy")
                } else {
                    request
                }
            })
            .await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            status => return Err(Self::status_error(addr, &what, status, &body)),
        }
        fetched(addr, &what, &headers, body).map(Some)
    }

    /// `POST /metrics/<name>`: heal (create, or fill the empty slots of the existing file).
    pub async fn heal(&self, addr: &Addr, name: &str, upload: &Upload) -> Result<HealReport, ClientError> {
        self.upload(addr, name, upload, false).await.map(|healed| healed.report)
    }

    /// [`Client::heal`], asking the agent to answer with the replica as it reads it back from its final
    /// path after the heal (`X-Bucky-Read-Back`), which saves a `GET` to verify it. `replica` is `None`
    /// when the agent ignores the header (buckyd) or could not read the file back.
    pub async fn heal_read_back(&self, addr: &Addr, name: &str, upload: &Upload) -> Result<Healed, ClientError> {
        self.upload(addr, name, upload, true).await
    }

    async fn upload(&self, addr: &Addr, name: &str, upload: &Upload, read_back: bool) -> Result<Healed, ClientError> {
        let url = Self::url(addr, &["metrics", name]);
        let what = format!("heal {name}");
        let snappy = self.snappy_for(addr);
        let (stat, body, compressed) = upload.body(snappy);
        let (status, headers, answer) = self
            .exchange(addr, &what, || {
                let request = self.http.post(url.clone());
                let mut request = request
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(METRIC_STAT_HEADER, stat)
                    .body(body.clone());
                if compressed {
                    request = request.header(CONTENT_ENCODING, "snappy");
                }
                if upload.overwrite {
                    request = request.header(bucky_wire::OVERWRITE_HEADER, "1");
                }
                if read_back {
                    request = request.header(READ_BACK_HEADER, "1");
                    if snappy {
                        request = request.header(ACCEPT_ENCODING, "snappy");
                    }
                }
                request
            })
            .await?;
        let sent = body.len() as u64;
        match status {
            StatusCode::OK | StatusCode::CREATED | StatusCode::NO_CONTENT => {}
            status => return Err(Self::status_error(addr, &what, status, &answer)),
        }
        if read_back && headers.get(READ_BACK_HEADER).is_some() {
            let report = headers
                .get(HEAL_REPORT_HEADER)
                .and_then(|v| serde_json::from_slice(v.as_bytes()).ok())
                .unwrap_or_default();
            let replica = fetched(addr, &format!("read back {name}"), &headers, answer)?;
            return Ok(Healed { report, sent, replica: Some(replica), identical: false });
        }
        // buckyd (jj) answers with an empty body; the fork and bucky-agent with a report.
        Ok(Healed {
            report: serde_json::from_slice(&answer).unwrap_or_default(),
            sent,
            replica: None,
            identical: false,
        })
    }

    /// `DELETE /metrics/<name>`, only if the file is still at version `if_match` when given.
    pub async fn delete(&self, addr: &Addr, name: &str, if_match: Option<&str>) -> Result<Deleted, ClientError> {
        let url = Self::url(addr, &["metrics", name]);
        let what = format!("delete {name}");
        let (status, _, body) = self
            .exchange(addr, &what, || {
                let request = self.http.delete(url.clone());
                match if_match {
                    Some(tag) => request.header(IF_MATCH, tag),
                    None => request,
                }
            })
            .await?;
        match status {
            StatusCode::OK | StatusCode::NO_CONTENT => Ok(Deleted::Removed),
            StatusCode::NOT_FOUND => Ok(Deleted::Absent),
            StatusCode::PRECONDITION_FAILED => Err(ClientError::Changed { addr: addr.to_string(), what }),
            status => Err(Self::status_error(addr, &what, status, &body)),
        }
    }
}

impl Client {
    /// Whether `addr` may take batch requests: not known to refuse them.
    pub fn batches(&self, addr: &Addr) -> bool {
        !self.no_batch.lock().unwrap_or_else(PoisonError::into_inner).contains(addr)
    }

    /// Whether `addr` may be asked to offload: not known to refuse it.
    pub fn offloads(&self, addr: &Addr) -> bool {
        self.batches(addr) && !self.no_offload.lock().unwrap_or_else(PoisonError::into_inner).contains(addr)
    }

    /// One batch request (`/batch/read`, `/batch/heal`, `/batch/delete`): the answer's frames, one per
    /// request frame and in the same order; `None` if the agent does not take batches (buckyd answers 404),
    /// which is remembered so later calls return `None` at once.
    async fn batch(
        &self,
        addr: &Addr,
        path: &str,
        frames: &[Frame],
        max_answer: Option<u64>,
    ) -> Result<Option<Vec<Frame>>, ClientError> {
        let extra = max_answer.map(|bytes| (batch::MAX_ANSWER_HEADER, bytes.to_string()));
        Ok(self.batch_with(addr, path, frames, extra.as_slice()).await?.map(|(frames, _)| frames))
    }

    /// [`Client::batch`] with `headers` added to the request; also returns the bytes of the request's body
    /// and of its answer as they crossed the network.
    async fn batch_with(
        &self,
        addr: &Addr,
        path: &str,
        frames: &[Frame],
        headers: &[(&str, String)],
    ) -> Result<Option<(Vec<Frame>, u64)>, ClientError> {
        if !self.batches(addr) || (path == batch::OFFLOAD_PATH && !self.offloads(addr)) {
            return Ok(None);
        }
        let what = format!("{path} of {} metrics", frames.len());
        let snappy = self.snappy_for(addr);
        let invalid = |reason: String| ClientError::Invalid { addr: addr.to_string(), what: what.clone(), reason };
        let body = match snappy {
            true => snappy_batch(frames).map_err(|e| invalid(format!("cannot compress: {e}")))?,
            false => batch::encode(frames),
        };
        let body = Bytes::from(body);
        let url = Url::parse(&format!("http://{}{path}", addr.authority()))
            .map_err(|e| invalid(format!("bad address: {e}")))?;
        let (status, headers, answer) = self
            .exchange(addr, &what, || {
                let mut request =
                    self.http.post(url.clone()).header(CONTENT_TYPE, batch::CONTENT_TYPE).body(body.clone());
                for (name, value) in headers {
                    request = request.header(*name, value);
                }
                if snappy {
                    request.header(CONTENT_ENCODING, "snappy").header(ACCEPT_ENCODING, "snappy")
                } else {
                    request
                }
            })
            .await?;
        let is_batch = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(';').next().unwrap_or("").trim() == batch::CONTENT_TYPE);
        match status {
            StatusCode::OK if is_batch => {}
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED if !is_batch => {
                let refusers = match path == batch::OFFLOAD_PATH {
                    true => &self.no_offload,
                    false => &self.no_batch,
                };
                tracing::debug!(%addr, path, "not taken: the client does it itself");
                refusers.lock().unwrap_or_else(PoisonError::into_inner).insert(addr.clone());
                return Ok(None);
            }
            status => return Err(Self::status_error(addr, &what, status, &answer)),
        }
        // The body sent and the compressed answer go as soon as they are no longer needed: a batch's files
        // are held in one form at a time, as far as the frames allow.
        let wire = (body.len() + answer.len()) as u64;
        drop(body);
        let answer = if is_snappy(&headers) {
            let compressed = answer;
            let mut plain = Vec::with_capacity(compressed.len() * 2);
            snap::read::FrameDecoder::new(&compressed[..])
                .read_to_end(&mut plain)
                .map_err(|e| invalid(format!("bad snappy stream: {e}")))?;
            Bytes::from(plain)
        } else {
            answer
        };
        let answers = batch::decode(answer, &batch::Limits::default()).map_err(|e| invalid(e.to_string()))?;
        if answers.len() != frames.len() || answers.iter().zip(frames).any(|(a, q)| a.name != q.name) {
            return Err(invalid(format!(
                "the answer does not match the request ({} frames for {}, or other names)",
                answers.len(),
                frames.len()
            )));
        }
        // A full disk answers each entry 507: noted as a 507 answer to the whole request would be.
        if answers.iter().any(|a| a.status == StatusCode::INSUFFICIENT_STORAGE.as_u16()) {
            self.health.saw_full(addr);
        }
        tracing::trace!(%addr, path, frames = frames.len(), wire, "batch");
        Ok(Some((answers, wire)))
    }

    /// The digests of `names` on `addr` ([`bucky_wire::digest`]), windows ending at `until`, per time range
    /// if `ranges`: per name the digest, `None` if there is no file, or the error a `GET` would have given;
    /// and the bytes that crossed the network. `None` if the agent takes no batches (buckyd).
    pub async fn digest_many(
        &self,
        addr: &Addr,
        names: &[&str],
        until: i64,
        ranges: bool,
    ) -> Result<Option<(Vec<Result<Option<MetricDigest>, ClientError>>, u64)>, ClientError> {
        use bucky_wire::digest::{decode, DIGEST_PATH, RANGES_HEADER, UNTIL_HEADER};
        let frames: Vec<Frame> = names.iter().map(|n| Frame::new(*n, 0, Meta::default(), Bytes::new())).collect();
        let headers = [(UNTIL_HEADER, until.to_string()), (RANGES_HEADER, if ranges { "1" } else { "0" }.to_owned())];
        let Some((answers, wire)) = self.batch_with(addr, DIGEST_PATH, &frames, &headers).await? else {
            return Ok(None);
        };
        let digests = answers
            .into_iter()
            .map(|frame| match frame.status {
                200 => decode(&frame.data).map(Some).map_err(|e| ClientError::Invalid {
                    addr: addr.to_string(),
                    what: format!("digest {}", frame.name),
                    reason: e.to_string(),
                }),
                404 => Ok(None),
                _ => Err(entry_error(addr, &format!("digest {}", frame.name), &frame)),
            })
            .collect();
        Ok(Some((digests, wire)))
    }

    /// Reads `names` in one request: per name the file, `None` if it does not exist, or the error that
    /// a `GET` would have given. The answer holds at most `max_bytes` of files (the first file found is
    /// always sent); the names beyond are answered 413 (read them in another batch). `None` if the agent
    /// does not take batches.
    pub async fn get_many(
        &self,
        addr: &Addr,
        names: &[&str],
        max_bytes: u64,
    ) -> Result<Option<Vec<Result<Option<Fetched>, ClientError>>>, ClientError> {
        let frames: Vec<Frame> = names.iter().map(|n| Frame::new(*n, 0, Meta::default(), Bytes::new())).collect();
        let room = match &self.files {
            Some(budget) => Some(budget.reserve(max_bytes).await),
            None => None,
        };
        let max_bytes = room.as_ref().map_or(max_bytes, |room| room.bytes().min(max_bytes));
        let Some(answers) = self.batch(addr, batch::READ_PATH, &frames, Some(max_bytes)).await? else {
            return Ok(None);
        };
        if let Some(mut room) = room {
            // Held, for what was read, until the batch that asked for it ends.
            room.shrink_to(answers.iter().map(|a| a.data.len() as u64).sum());
            room.keep();
        }
        Ok(Some(
            answers
                .into_iter()
                .map(|frame| match frame.status {
                    200 => entry_file(addr, &format!("read {}", frame.name), frame.meta, frame.data).map(Some),
                    404 => Ok(None),
                    _ => Err(entry_error(addr, &format!("read {}", frame.name), &frame)),
                })
                .collect(),
        ))
    }

    /// Heals each `(name, upload)` in one request, each answered with its replica read back (as
    /// [`Client::heal_read_back`]). `None` if the agent does not take batches.
    pub async fn heal_many(
        &self,
        addr: &Addr,
        uploads: &[(&str, &Upload)],
    ) -> Result<Option<Vec<Result<Healed, ClientError>>>, ClientError> {
        let frames: Vec<Frame> = uploads
            .iter()
            .map(|(name, upload)| {
                let stat = MetricStat::from_header_value(&upload.plain_stat).unwrap_or_default();
                let meta = Meta {
                    stat: Some(stat),
                    etag: upload.etag.clone(),
                    overwrite: upload.overwrite,
                    ..Meta::default()
                };
                Frame::new(*name, 0, meta, upload.plain.clone())
            })
            .collect();
        let Some(answers) = self.batch(addr, batch::HEAL_PATH, &frames, None).await? else { return Ok(None) };
        Ok(Some(
            answers
                .into_iter()
                .zip(uploads)
                .map(|(frame, (_, upload))| {
                    let what = format!("heal {}", frame.name);
                    if !frame.is_success() {
                        return Err(entry_error(addr, &what, &frame));
                    }
                    let report = frame.meta.report.clone().unwrap_or_default();
                    let sent = upload.plain.len() as u64;
                    let identical = frame.data.is_empty()
                        && upload.etag.is_some()
                        && frame.meta.etag == upload.etag
                        && frame.meta.stat.as_ref().is_some_and(|s| s.size == upload.plain.len() as i64);
                    let replica = match frame.meta.stat {
                        Some(_) if !identical => {
                            Some(entry_file(addr, &format!("read back {}", frame.name), frame.meta, frame.data)?)
                        }
                        _ => None,
                    };
                    Ok(Healed { report, sent, replica, identical })
                })
                .collect(),
        ))
    }

    /// Asks `dest` to fetch each `(name, source name)` from the agent `from` itself, heal it into `name` and
    /// check the replica against it at `now` (`/batch/offload`): per entry what it did, the error a heal
    /// would have given, or 413 (not read this time: `max_bytes` of files were reached); and the bytes that
    /// crossed the client's network. `None` if `dest` cannot offload (buckyd, older agents).
    pub async fn offload_many(
        &self,
        dest: &Addr,
        from: &Addr,
        entries: &[(&str, &str)],
        overwrite: bool,
        now: i64,
        max_bytes: u64,
    ) -> Result<Option<(Vec<Result<Offloaded, ClientError>>, u64)>, ClientError> {
        let frames: Vec<Frame> = entries
            .iter()
            .map(|(name, source)| {
                let source = (name != source).then(|| (*source).to_owned());
                Frame::new(*name, 0, Meta { source, overwrite, ..Meta::default() }, Bytes::new())
            })
            .collect();
        // The destination holds the files it fetched until it answers: the run's budget of files in flight
        // bounds them as it bounds the client's own reads, for as long as the request lasts.
        let room = match &self.files {
            Some(budget) => Some(budget.reserve(max_bytes).await),
            None => None,
        };
        let max_bytes = room.as_ref().map_or(max_bytes, |room| room.bytes().min(max_bytes));
        let headers = [
            (batch::OFFLOAD_FROM_HEADER, from.authority()),
            (batch::VERIFY_AT_HEADER, now.to_string()),
            (batch::MAX_ANSWER_HEADER, max_bytes.to_string()),
        ];
        let Some((answers, wire)) = self.batch_with(dest, batch::OFFLOAD_PATH, &frames, &headers).await? else {
            return Ok(None);
        };
        drop(room);
        let offloaded = answers
            .into_iter()
            .map(|frame| {
                let what = format!("offload {} from {from}", frame.name);
                if !frame.is_success() {
                    return Err(entry_error(dest, &what, &frame));
                }
                let invalid = |reason: &str| ClientError::Invalid {
                    addr: dest.to_string(),
                    what: what.clone(),
                    reason: reason.to_owned(),
                };
                let meta = frame.meta;
                Ok(Offloaded {
                    report: meta.report.unwrap_or_default(),
                    verdict: meta.verified.ok_or_else(|| invalid("no verdict in the answer"))?,
                    source_etag: meta.source_etag.ok_or_else(|| invalid("no SourceETag in the answer"))?,
                    bytes: meta.stat.map_or(0, |s| s.size.max(0) as u64),
                })
            })
            .collect();
        Ok(Some((offloaded, wire)))
    }

    /// Deletes each `(name, if_match)` in one request, with the outcome a `DELETE` would have given.
    /// `None` if the agent does not take batches.
    pub async fn delete_many(
        &self,
        addr: &Addr,
        deletes: &[(&str, Option<&str>)],
    ) -> Result<Option<Vec<Result<Deleted, ClientError>>>, ClientError> {
        let frames: Vec<Frame> = deletes
            .iter()
            .map(|(name, tag)| {
                Frame::new(*name, 0, Meta { if_match: tag.map(str::to_owned), ..Meta::default() }, Bytes::new())
            })
            .collect();
        let Some(answers) = self.batch(addr, batch::DELETE_PATH, &frames, None).await? else { return Ok(None) };
        Ok(Some(
            answers
                .into_iter()
                .map(|frame| {
                    let what = format!("delete {}", frame.name);
                    match frame.status {
                        200 | 204 => Ok(Deleted::Removed),
                        404 => Ok(Deleted::Absent),
                        412 => Err(ClientError::Changed { addr: addr.to_string(), what }),
                        _ => Err(entry_error(addr, &what, &frame)),
                    }
                })
                .collect(),
        ))
    }
}

/// A file in a batch answer (its bytes are never compressed: only the whole body may be).
fn entry_file(addr: &Addr, what: &str, meta: Meta, data: Bytes) -> Result<Fetched, ClientError> {
    let invalid = |reason: String| ClientError::Invalid { addr: addr.to_string(), what: what.to_owned(), reason };
    let stat = meta.stat.ok_or_else(|| invalid("no Stat in the answer".into()))?;
    if stat.size != data.len() as i64 {
        return Err(invalid(format!("got {} bytes but Stat.Size is {}", data.len(), stat.size)));
    }
    let wire_bytes = data.len() as u64;
    Ok(Fetched { stat, data: Vec::from(data), etag: meta.etag, wire_bytes })
}

/// The error of a failed batch entry, as the single-metric request would have given it.
fn entry_error(addr: &Addr, what: &str, frame: &Frame) -> ClientError {
    let reason = frame.meta.error.clone().unwrap_or_default();
    if frame.status == 412 {
        return ClientError::Changed { addr: addr.to_string(), what: what.to_owned() };
    }
    status_error(addr, what, frame.status, reason)
}

/// The error of an answer with an unexpected status (`body`: the agent's reason): [`ClientError::Full`] for
/// a 507, [`ClientError::Status`] otherwise.
fn status_error(addr: &Addr, what: &str, status: u16, body: String) -> ClientError {
    let (addr, what) = (addr.to_string(), what.to_owned());
    if status == StatusCode::INSUFFICIENT_STORAGE.as_u16() {
        return ClientError::Full { addr, what, body };
    }
    ClientError::Status { addr, what, status, body }
}

/// A batch body snappy framed, each frame compressed as it is encoded: the body is never held whole
/// uncompressed (only one frame at a time, in a buffer reused from frame to frame).
fn snappy_batch(frames: &[Frame]) -> std::io::Result<Vec<u8>> {
    let plain: usize = frames.iter().map(|f| f.name.len() + f.data.len() + 512).sum();
    // Room for data that does not compress (snappy's framing adds a few bytes per 64 KiB).
    let mut encoder = snap::write::FrameEncoder::new(Vec::with_capacity(plain + plain / 64 + 64));
    let mut frame_bytes = Vec::new();
    std::io::Write::write_all(&mut encoder, batch::MAGIC)?;
    for frame in frames {
        frame_bytes.clear();
        batch::encode_frame(frame, &mut frame_bytes);
        std::io::Write::write_all(&mut encoder, &frame_bytes)?;
    }
    encoder.into_inner().map_err(|e| std::io::Error::other(e.to_string()))
}

fn snappy_frame(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = snap::write::FrameEncoder::new(Vec::with_capacity(data.len() / 2 + 64));
    std::io::Write::write_all(&mut encoder, data)?;
    encoder.into_inner().map_err(|e| std::io::Error::other(e.to_string()))
}

fn is_snappy(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim().eq_ignore_ascii_case("snappy"))
}

/// A file in an answer (GET, or a heal's read-back): `X-Metric-Stat`, decoded body (snappy or not), ETag.
fn fetched(addr: &Addr, what: &str, headers: &HeaderMap, body: Bytes) -> Result<Fetched, ClientError> {
    let invalid = |reason: String| ClientError::Invalid { addr: addr.to_string(), what: what.to_owned(), reason };
    let stat = parse_stat(addr, what, headers)?;
    let snappy = is_snappy(headers);
    let wire_bytes = body.len() as u64;
    let data = if snappy {
        let mut data = Vec::with_capacity(usize::try_from(stat.size).unwrap_or(0).min(1 << 30));
        snap::read::FrameDecoder::new(&body[..])
            .take(u64::try_from(stat.size).unwrap_or(0).saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| invalid(format!("bad snappy stream: {e}")))?;
        data
    } else {
        Vec::from(body) // no copy: the body is not shared
    };
    if stat.size > 0 && data.len() as i64 != stat.size {
        return Err(invalid(format!("got {} bytes but X-Metric-Stat.Size is {}", data.len(), stat.size)));
    }
    let etag = headers.get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok(Fetched { stat, data, etag, wire_bytes })
}

fn parse_stat(addr: &Addr, what: &str, headers: &HeaderMap) -> Result<MetricStat, ClientError> {
    let invalid = |reason: String| ClientError::Invalid { addr: addr.to_string(), what: what.to_owned(), reason };
    let value = headers
        .get(METRIC_STAT_HEADER)
        .ok_or_else(|| invalid(format!("no {METRIC_STAT_HEADER} header")))?
        .to_str()
        .map_err(|_| invalid(format!("{METRIC_STAT_HEADER} is not ASCII")))?;
    MetricStat::from_header_value(value).map_err(|e| invalid(format!("bad {METRIC_STAT_HEADER}: {e}")))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `delay` ± 25 %.
fn jitter(delay: Duration) -> Duration {
    let factor = 0.75 + rand::random::<f64>() * 0.5;
    delay.mul_f64(factor)
}

/// Growing waits for a list being built: 0.5, 1, 2, 3, 5, 8, 13 s, then 13 s.
struct Backoff {
    steps: std::slice::Iter<'static, u64>,
    last: u64,
}

impl Backoff {
    fn list() -> Backoff {
        const STEPS: &[u64] = &[500, 1000, 2000, 3000, 5000, 8000, 13000];
        Backoff { steps: STEPS.iter(), last: 13000 }
    }

    fn next(&mut self) -> Duration {
        if let Some(&ms) = self.steps.next() {
            self.last = ms;
        }
        Duration::from_millis(self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_escape_names() {
        let addr = Addr { host: "h".into(), port: 1 };
        assert_eq!(Client::url(&addr, &["metrics", "a b?c#d%"]).as_str(), "http://h:1/metrics/a%20b%3Fc%23d%25");
        let v6 = Addr { host: "::1".into(), port: 2 };
        assert_eq!(Client::url(&v6, &["hashring"]).as_str(), "http://[::1]:2/hashring");
    }

    #[test]
    fn uploads_compress_once() {
        let stat = MetricStat { name: "a".into(), ..MetricStat::default() };
        let data = vec![7u8; 5000];
        let upload = Upload::new(stat.clone(), &data, true).unwrap();
        let (header, body, snappy) = upload.body(true);
        let sent = MetricStat::from_header_value(header).unwrap();
        assert_eq!((sent.size, sent.encoding, snappy), (5000, 1, true));
        assert!(upload.wire_len(true) < 5000);
        assert_eq!(body.len() as u64, upload.wire_len(true));
        // The same upload goes plain to a loopback agent.
        let (header, body, snappy) = upload.body(false);
        let sent = MetricStat::from_header_value(header).unwrap();
        assert_eq!((sent.size, sent.encoding, snappy, &body[..]), (5000, 0, false, &data[..]));
        let plain = Upload::new(stat, &data, false).unwrap();
        assert_eq!((plain.wire_len(true), plain.wire_len(false)), (5000, 5000));
        assert!(!plain.body(true).2);
    }

    #[test]
    fn a_batch_compressed_frame_by_frame_decodes_to_its_frames() {
        let frames: Vec<Frame> = (0..5u8)
            .map(|i| {
                let data: Vec<u8> = (0..70_000u32).map(|j| (j * 7 + u32::from(i)) as u8).collect();
                Frame::new(format!("m.{i}"), 0, Meta { etag: Some(format!("\"{i}\"")), ..Meta::default() }, data.into())
            })
            .collect();
        let body = snappy_batch(&frames).unwrap();
        let mut plain = Vec::new();
        snap::read::FrameDecoder::new(&body[..]).read_to_end(&mut plain).unwrap();
        assert_eq!(plain, batch::encode(&frames));
        assert_eq!(batch::decode(plain.into(), &batch::Limits::default()).unwrap(), frames);
    }

    #[test]
    fn snappy_is_skipped_on_loopback_only() {
        let config = |snappy| Config {
            seed: Addr { host: "h".into(), port: 1 },
            workers: 1,
            json: false,
            verbose: false,
            force: false,
            timeout: Duration::from_secs(1),
            cache_wait: Duration::from_secs(1),
            snappy,
            token: None,
            progress: false,
            diverse_replicas: None,
            ring_config: None,
            ring_cluster: None,
        };
        let client = Client::new(&config(true)).unwrap();
        assert!(client.snappy_for(&Addr { host: "10.1.2.3".into(), port: 1 }));
        assert!(!client.snappy_for(&Addr { host: "127.0.0.2".into(), port: 1 }));
        let plain = Client::new(&config(false)).unwrap();
        assert!(!plain.snappy_for(&Addr { host: "10.1.2.3".into(), port: 1 }));
    }
}
