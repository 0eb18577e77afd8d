//! The go-graphite fork's offload: `POST /metrics/<dst>?fetch_offload=true` with the form fields `server`,
//! `metric` and `no_encoding`. The agent fetches `metric` from the agent at `server` itself and heals it
//! into `<dst>`, so the client's bandwidth is not in the path.
//!
//! Unlike the fork, `server` must be a ring member (its host a ring node's host, its port one of
//! `--peer-port`), so the agent cannot be used to fetch arbitrary URLs, and the token it sends along (when
//! authentication is on) is read-only and short-lived. With authentication on, the caller's token must
//! allow `read` on the *source* metric as well as `update` on the destination: otherwise a token limited to
//! one namespace could copy any metric into it and read it there.

use std::collections::HashMap;
use std::time::Instant;

use super::metric::{decode, Upload};
use super::{checked_size, is_snappy, max_encoded_len, nanos, parse_stat, read_body, unix_now};
use crate::auth::{Grant, Op};
use crate::error::AgentError;
use crate::AppState;
use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use bucky_wire::{MetricName, METRIC_STAT_HEADER};

/// Largest offload form body.
const FORM_LIMIT: u64 = 1 << 20;

fn fetch_error(reason: impl std::fmt::Display) -> AgentError {
    AgentError::BadRequest(format!("Error fetching metric: {reason}"))
}

/// Fetches the offload source named by the form; returns it decoded and validated, with the download time
/// (as `took`). `grant` is the caller's token (authentication on): it must allow reading the source.
pub(super) async fn fetch(
    state: &AppState,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
    grant: Option<&Grant>,
) -> Result<Upload, AgentError> {
    let started = Instant::now();
    let mut form: HashMap<String, String> = HashMap::new();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let mut charge = state.budget().charge();
        let bytes = read_body(state, headers, body, FORM_LIMIT, &mut charge).await?;
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
    if let Some(grant) = grant {
        grant.authorize(Op::Read, metric.as_str()).map_err(|e| {
            AgentError::Forbidden(format!("offload: the token may not read the source metric {}: {e}", metric.as_str()))
        })?;
    }
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
    let size = checked_size(&stat, limit, "Error fetching metric: ")?;
    let max = max_encoded_len(size, snappy);
    let patience = state.config().memory_wait;
    let mut charge = state.budget().charge();
    let mut data = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
        let len = (data.len() + chunk.len()) as u64;
        if len > max {
            return Err(fetch_error(format!("the body is longer than X-Metric-Stat.Size ({}) allows", stat.size)));
        }
        charge.grow_to(len.max(data.capacity() as u64), patience).await?;
        data.extend_from_slice(&chunk);
        charge.grow_to(data.capacity() as u64, patience).await?;
    }
    let (stat, buf, charge) = decode(state, stat, data.into(), snappy, charge, "Error fetching metric: ").await?;
    Ok(Upload { stat, buf, took: nanos(started), charge })
}

/// Accepts `host:port` only if the host is a ring member's and the port one of `--peer-port`.
pub(super) fn check_peer(state: &AppState, server: &str) -> Result<(), AgentError> {
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
