//! `/metrics/<name>`: HEAD (stat), GET (read), POST (heal), PUT (replace), DELETE.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bucky_wire::{HealReport, MetricName, MetricStat, HEAL_REPORT_HEADER, METRIC_STAT_HEADER, READ_BACK_HEADER};
use whisper::WhisperData;

use super::{
    admit, authenticate, authorize, checked_size, decode_whisper, is_snappy, max_encoded_len, nanos, parse_stat,
    read_body, refuse_writes_outside_ring, snappy_framed, unix_now, wants_snappy,
};
use crate::auth::Op;
use crate::budget::Charge;
use crate::error::AgentError;
use crate::etag::IfMatch;
use crate::store::{Healed, Replaced, Snapshot, Store};
use crate::AppState;

fn stat_header(stat: &MetricStat) -> Result<HeaderValue, AgentError> {
    HeaderValue::from_str(&stat.to_header_value()).map_err(|e| AgentError::internal("X-Metric-Stat header", e))
}

fn if_match(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<IfMatch>, AgentError> {
    headers
        .get(&name)
        .map(|v| {
            let v = v.to_str().map_err(|_| AgentError::BadRequest(format!("malformed {name} header")))?;
            IfMatch::parse(v)
        })
        .transpose()
}

pub(super) async fn head_metric(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AgentError> {
    let name = authorize(&state, &headers, Op::Read, &name)?;
    let stat = state.blocking(move |store| Ok(store.stat(&name)?)).await?;
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert(METRIC_STAT_HEADER, stat_header(&stat)?);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(response)
}

pub(super) async fn get_metric(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AgentError> {
    let name = authorize(&state, &headers, Op::Read, &name)?;
    let if_none_match = if_match(&headers, header::IF_NONE_MATCH)?;
    let snappy = wants_snappy(&headers);
    let file = state.blocking(move |store| Encoded::read(store, &name, snappy)).await?;
    // (a 304 answers without the file: its charge goes back as it is dropped)
    if if_none_match.is_some_and(|m| m.matches(&file.snapshot.etag)) {
        let etag = HeaderValue::from_str(&file.snapshot.etag).map_err(|e| AgentError::internal("ETag", e))?;
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(header::ETAG, etag);
        return Ok(response);
    }
    file.into_response()
}

/// A file read under its shared flock, ready to be sent: snappy framed when the client asked for it.
struct Encoded {
    snapshot: Snapshot,
    compressed: Option<Vec<u8>>,
}

impl Encoded {
    /// Reads the metric's file (blocking) and compresses it if `snappy`, the compressed copy charged too.
    fn read(store: &Store, name: &MetricName, snappy: bool) -> Result<Encoded, AgentError> {
        let mut snapshot = store.read(name)?;
        let compressed = if snappy {
            let len = snapshot.bytes.len() as u64;
            snapshot.charge.try_grow_to(len + max_encoded_len(len, true))?;
            Some(snappy_framed(&snapshot.bytes)?)
        } else {
            None
        };
        Ok(Encoded { snapshot, compressed })
    }

    /// The answer of a GET: the file with its `X-Metric-Stat`, `ETag` and `Last-Modified`. The body keeps
    /// its memory charged until the server has written it.
    fn into_response(self) -> Result<Response, AgentError> {
        let Encoded { snapshot, compressed } = self;
        let etag = HeaderValue::from_str(&snapshot.etag).map_err(|e| AgentError::internal("ETag", e))?;
        let mut stat = snapshot.stat;
        let mut charge = snapshot.charge;
        let body = match compressed {
            Some(compressed) => {
                stat.encoding = bucky_wire::ENCODING_SNAPPY;
                drop(snapshot.bytes);
                charge.shrink_to(compressed.len() as u64);
                compressed
            }
            None => snapshot.bytes,
        };
        let mut response = (StatusCode::OK, Body::from(charge.hold(body))).into_response();
        let h = response.headers_mut();
        h.insert(METRIC_STAT_HEADER, stat_header(&stat)?);
        h.insert(header::ETAG, etag);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        let modified = snapshot.modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        if let Ok(date) = HeaderValue::from_str(&bucky_wire::UtcTime::from_unix(modified).http_date()) {
            h.insert(header::LAST_MODIFIED, date);
        }
        if stat.encoding == bucky_wire::ENCODING_SNAPPY {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        }
        Ok(response)
    }
}

/// Whether a heal's client asked for the replica read back (`X-Bucky-Read-Back: 1`); a value other than
/// `1`/`true`/`0`/`false` is refused before anything changes.
fn wants_read_back(headers: &HeaderMap) -> Result<bool, AgentError> {
    let Some(value) = headers.get(READ_BACK_HEADER) else {
        return Ok(false);
    };
    match value.to_str().map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Ok("1" | "true") => Ok(true),
        Ok("0" | "false") => Ok(false),
        _ => Err(AgentError::BadRequest(format!("{READ_BACK_HEADER} must be 1 or 0"))),
    }
}

/// Uploads up to this size (decoded) are decoded and checked on the request's own task.
const INLINE_DECODE: i64 = 64 * 1024;

/// An upload, checked and decoded, with the time it took and the memory it holds.
pub(super) struct Upload {
    pub(super) stat: MetricStat,
    pub(super) buf: WhisperData,
    pub(super) took: u64,
    pub(super) charge: Charge,
}

/// Reads and validates a POST/PUT body: `Content-Type: application/octet-stream`, `X-Metric-Stat`, optional
/// snappy, the size and the whisper structure, all before anything on disk changes.
async fn receive(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Upload, AgentError> {
    let started = Instant::now();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.split(';').next().unwrap_or("").trim() != "application/octet-stream" {
        return Err(AgentError::BadRequest("Content-Type must be application/octet-stream.".into()));
    }
    let stat = parse_stat(headers.get(METRIC_STAT_HEADER))?;
    let snappy = is_snappy(headers.get(header::CONTENT_ENCODING))?;
    let limit = state.config().body_limit;
    let size = checked_size(&stat, limit, "")?;
    // Never read more than the announced file can take.
    let max = max_encoded_len(size, snappy);
    let mut charge = state.budget().charge();
    let body = read_body(state, headers, body, max.min(limit), &mut charge).await.map_err(|e| match e {
        AgentError::PayloadTooLarge(_) if max < limit => AgentError::BadRequest(format!(
            "Malformed whisper data: the body is longer than X-Metric-Stat.Size ({}) allows",
            stat.size
        )),
        other => other,
    })?;
    let (stat, buf, charge) = decode(state, stat, body, snappy, charge, "").await?;
    Ok(Upload { stat, buf, took: nanos(started), charge })
}

/// Checks and decodes a received body (see [`decode_whisper`]); the charge ends up holding the file.
pub(super) async fn decode(
    state: &AppState,
    stat: MetricStat,
    body: bytes::Bytes,
    snappy: bool,
    charge: Charge,
    what: &'static str,
) -> Result<(MetricStat, WhisperData, Charge), AgentError> {
    let limit = state.config().body_limit;
    // Small plain files decode in microseconds: a trip through the blocking pool would cost more than the work.
    if !snappy && stat.size <= INLINE_DECODE {
        let mut charge = charge;
        let buf = decode_whisper(&stat, body, false, limit, what, &mut charge)?;
        return Ok((stat, buf, charge));
    }
    let mut input = Some((body, charge));
    state
        .blocking(move |_| {
            let (body, charge) =
                input.as_mut().ok_or_else(|| AgentError::internal("decode", "retried after success"))?;
            let buf = decode_whisper(&stat, body.clone(), snappy, limit, what, charge)?;
            let (_, mut charge) = input.take().ok_or_else(|| AgentError::internal("decode", "no input"))?;
            charge.shrink_to(buf.as_bytes().len() as u64);
            Ok((stat.clone(), buf, charge))
        })
        .await
}

pub(super) async fn post_metric(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AgentError> {
    let grant = authenticate(&state, &headers)?;
    let name = admit(grant.as_ref(), Op::Update, &name)?;
    refuse_writes_outside_ring(&state)?;
    let read_back = wants_read_back(&headers)?.then(|| wants_snappy(&headers));
    let overwrite = headers.get(bucky_wire::OVERWRITE_HEADER).is_some_and(|v| v.as_bytes() == b"1");
    let query: HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let (upload, mut report) = if query.get("fetch_offload").is_some_and(|v| v == "true") {
        let upload = super::offload::fetch(&state, &query, &headers, body, grant.as_ref()).await?;
        let report = HealReport { download: upload.took, ..HealReport::default() };
        (upload, report)
    } else {
        let upload = receive(&state, &headers, body).await?;
        let report = HealReport { dump: upload.took, ..HealReport::default() };
        (upload, report)
    };
    let Upload { stat, buf, charge, .. } = upload;
    let replica = heal(&state, name, stat, buf, charge, &mut report, read_back, overwrite).await?;
    let Some(replica) = replica else {
        return Ok(Json(report).into_response());
    };
    let report = serde_json::to_string(&report).map_err(|e| AgentError::internal("heal report", e))?;
    let mut response = replica.into_response()?;
    let h = response.headers_mut();
    h.insert(READ_BACK_HEADER, HeaderValue::from_static("1"));
    h.insert(HEAL_REPORT_HEADER, HeaderValue::from_str(&report).map_err(|e| AgentError::internal("heal report", e))?);
    Ok(response)
}

/// Heals `buf` into `name` and records what happened in `report` (and in the metric list). With
/// `read_back` (`Some(snappy)`), then reads the file back from its final path, re-opened under a shared
/// flock as a GET would; `None` if that read fails (the client falls back to a GET, which reports why).
/// With `overwrite` the upload's values win over the file's ([`Store::heal_with`]).
#[allow(clippy::too_many_arguments)] // the parts of one upload, taken apart by the caller
async fn heal(
    state: &AppState,
    name: MetricName,
    stat: MetricStat,
    buf: WhisperData,
    charge: Charge,
    report: &mut HealReport,
    read_back: Option<bool>,
    overwrite: bool,
) -> Result<Option<Encoded>, AgentError> {
    let started = Instant::now();
    let cache = Arc::clone(state.cache());
    let mut upload = Some((buf, charge));
    // The list is updated in the blocking task: it happens even if the request is abandoned meanwhile.
    let (healed, took, replica) = state
        .blocking(move |store| {
            let (buf, _) = upload.as_ref().ok_or_else(|| AgentError::internal("heal", "retried after success"))?;
            let healed = store.heal_with(&name, buf, stat.mod_time, unix_now(), overwrite)?;
            if healed == Healed::Created {
                cache.added(name.as_str());
            }
            let took = nanos(started);
            upload = None; // before the read-back: two copies of the file at once are enough
            let replica = read_back.and_then(|snappy| match Encoded::read(store, &name, snappy) {
                Ok(replica) => Some(replica),
                Err(e) => {
                    tracing::debug!(metric = %name.as_str(), error = %e, "heal read-back failed; the client will GET");
                    None
                }
            });
            Ok((healed, took, replica))
        })
        .await?;
    super::record_heal(state, &healed, took, report);
    Ok(replica)
}

pub(super) async fn put_metric(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AgentError> {
    let name = authorize(&state, &headers, Op::Replace, &name)?;
    refuse_writes_outside_ring(&state)?;
    let condition = if_match(&headers, header::IF_MATCH)?;
    let upload = receive(&state, &headers, body).await?;
    let started = Instant::now();
    let cache = Arc::clone(state.cache());
    let Upload { stat, buf, took, charge } = upload;
    let replaced = state
        .blocking(move |store| {
            let replaced = store.replace(&name, &buf, condition.as_ref(), stat.mod_time)?;
            if replaced == Replaced::Created {
                cache.added(name.as_str());
            }
            Ok(replaced)
        })
        .await?;
    drop(charge);
    let report = HealReport {
        dump: took,
        copy: nanos(started),
        created: replaced == Replaced::Created,
        ..HealReport::default()
    };
    Ok(Json(report).into_response())
}

pub(super) async fn delete_metric(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AgentError> {
    let name = authorize(&state, &headers, Op::Delete, &name)?;
    let condition = if_match(&headers, header::IF_MATCH)?;
    let cache = Arc::clone(state.cache());
    state
        .blocking(move |store| {
            store.delete(&name, condition.as_ref())?;
            cache.removed(name.as_str());
            Ok(())
        })
        .await?;
    Ok(StatusCode::OK.into_response())
}
