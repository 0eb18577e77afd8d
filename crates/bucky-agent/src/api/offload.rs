//! The go-graphite fork's offload: `POST /metrics/<dst>?fetch_offload=true` with the form fields `server`,
//! `metric` and `no_encoding`. The agent fetches `metric` from the agent at `server` itself and heals it
//! into `<dst>`, so the client's bandwidth is not in the path.
//!
//! Unlike the fork, `server` must be a ring member (its host a ring node's host, its port one of
//! `--peer-port`), so the agent cannot be used to fetch arbitrary URLs, and the token it sends along (when
//! authentication is on) is read-only and short-lived.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use bucky_wire::{HealReport, MetricName, MetricStat, METRIC_STAT_HEADER};
use tokio::sync::OwnedSemaphorePermit;
use whisper::WhisperBuf;

use super::{decode_whisper, is_snappy, max_encoded_len, parse_stat, read_body, unix_now};
use crate::error::AgentError;
use crate::AppState;

/// Largest offload form body.
const FORM_LIMIT: u64 = 1 << 20;

fn fetch_error(reason: impl std::fmt::Display) -> AgentError {
    AgentError::BadRequest(format!("Error fetching metric: {reason}"))
}

/// Fetches the offload source named by the form; returns it decoded and validated, with the download time.
pub(super) async fn fetch(
    state: &AppState,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(MetricStat, WhisperBuf, HealReport, OwnedSemaphorePermit), AgentError> {
    let started = Instant::now();
    let mut form: HashMap<String, String> = HashMap::new();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let bytes = read_body(headers, body, FORM_LIMIT).await?;
        for (k, v) in form_urlencoded::parse(&bytes) {
            form.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    for (k, v) in query {
        form.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let field = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let server = field("server").ok_or_else(|| AgentError::BadRequest("offload: form field server missing".into()))?;
    let metric = field("metric").ok_or_else(|| AgentError::BadRequest("offload: form field metric missing".into()))?;
    let metric = MetricName::parse(metric)
        .map_err(|e| AgentError::BadRequest(format!("offload: invalid source metric name: {e}")))?;
    let no_encoding = field("no_encoding") == Some("true");
    check_peer(state, server)?;

    let mut url = reqwest::Url::parse(&format!("http://{server}/")).map_err(fetch_error)?;
    url.path_segments_mut().map_err(|()| fetch_error("bad server address"))?.push("metrics").push(metric.as_str());
    let mut request = state.0.client.get(url);
    if !no_encoding {
        request = request.header(header::ACCEPT_ENCODING, "snappy");
    }
    if let Some(auth) = &state.config().auth {
        request = request.header(bucky_wire::AUTH_HEADER, auth.peer_token(unix_now()));
    }
    let mut response = request.send().await.map_err(fetch_error)?;
    match response.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => {
            return Err(AgentError::NotFound);
        }
        status => return Err(fetch_error(format!("{server} answered {status}"))),
    }
    let stat = parse_stat(response.headers().get(METRIC_STAT_HEADER)).map_err(fetch_error)?;
    let snappy = is_snappy(response.headers().get(header::CONTENT_ENCODING)).map_err(fetch_error)?;
    let limit = state.config().body_limit;
    if stat.size.max(0) as u64 > limit {
        return Err(fetch_error(format!("the source is larger than the {limit}-byte limit (--max-body)")));
    }
    let memory = state.reserve_upload(stat.size.max(0) as u64).await?;
    let max = max_encoded_len(stat.size.max(0) as u64, snappy);
    let mut data = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
        if (data.len() + chunk.len()) as u64 > max {
            return Err(fetch_error(format!("the body is longer than X-Metric-Stat.Size ({}) allows", stat.size)));
        }
        data.extend_from_slice(&chunk);
    }
    let (stat, buf) = state
        .blocking(move |_| {
            let buf = decode_whisper(&stat, data.into(), snappy, limit, "Error fetching metric: ")?;
            Ok((stat, buf))
        })
        .await?;
    let download = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    Ok((stat, buf, HealReport { download, ..HealReport::default() }, memory))
}

/// Accepts `host:port` only if the host is a ring member's and the port one of `--peer-port`.
fn check_peer(state: &AppState, server: &str) -> Result<(), AgentError> {
    let split = match server.strip_prefix('[') {
        Some(rest) => rest.split_once("]:"),
        None => server.rsplit_once(':').filter(|(host, _)| !host.contains(':')),
    };
    let config = state.config();
    let members = || config.ring.nodes().iter().map(|n| n.server.as_str()).collect::<Vec<_>>().join(", ");
    let Some((host, port)) = split else {
        return Err(AgentError::BadRequest(format!("offload: server {server:?} must be HOST:PORT")));
    };
    let port: u16 =
        port.parse().map_err(|_| AgentError::BadRequest(format!("offload: server {server:?} has a bad port")))?;
    if !config.ring.nodes().iter().any(|n| n.server.eq_ignore_ascii_case(host)) {
        return Err(AgentError::BadRequest(format!(
            "offload: server {server:?} is not a ring member (members: {})",
            members()
        )));
    }
    if !config.peer_ports.contains(&port) {
        let ports = config.peer_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        return Err(AgentError::BadRequest(format!(
            "offload: port {port} of {server:?} is not an agent port (--peer-port: {ports})"
        )));
    }
    Ok(())
}
