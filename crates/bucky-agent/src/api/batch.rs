//! `POST /batch/read`, `/batch/heal`, `/batch/delete` (a bucky extension): many metrics in one request,
//! in the frames of [`bucky_wire::batch`].
//!
//! Each entry is answered as its single-metric route would answer it (`GET`; `POST` with
//! `X-Bucky-Read-Back: 1`; `DELETE` with `If-Match`): same checks, same status, same message. One entry
//! failing (a hostile name, a token without the right, a malformed upload, a missing file, a lock timeout)
//! gives that entry an error frame and does not stop the others. Whole-request faults are ordinary HTTP
//! errors before anything on disk changes: a bad token (401/403), a `Content-Type` other than
//! [`CONTENT_TYPE`] (400), an unknown `Content-Encoding` (415), a body over `--max-body` once decoded
//! (413), a malformed body (400).
//!
//! A request costs one trip through the blocking pool whatever its size: the body is decompressed and
//! decoded, every entry served and the answer encoded in one blocking task, and the heals of a batch share
//! one group commit ([`Store::heal_many`]).
//!
//! The answer data of a read is bounded by `--max-body` too (what could not be sent back in one heal
//! should not be read in one batch): an entry that would take it beyond is a 413 entry, unless nothing
//! was read before it (so a batch of one reads what a `GET` reads). The client reads those again, in
//! another batch or with `GET`.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bucky_wire::batch::{self, Frame, Limits, Meta, CONTENT_TYPE};
use bucky_wire::{HealReport, MetricName, MetricStat};
use whisper::WhisperBuf;

use super::{admit, authenticate, decode_whisper, is_snappy, max_encoded_len, nanos, read_body, snappy_framed};
use super::{unix_now, wants_snappy};
use crate::auth::{Grant, Op};
use crate::cache::MetricCache;
use crate::error::AgentError;
use crate::etag::IfMatch;
use crate::store::{Healed, Store};
use crate::AppState;

/// The three batch routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Read,
    Heal,
    Delete,
}

pub(super) async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AgentError> {
    serve(state, headers, body, Route::Read).await
}

pub(super) async fn heal(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AgentError> {
    serve(state, headers, body, Route::Heal).await
}

pub(super) async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AgentError> {
    serve(state, headers, body, Route::Delete).await
}

/// What every entry of one request is served with.
struct Context<'a> {
    store: &'a Store,
    grant: Option<&'a Grant>,
    cache: &'a MetricCache,
    /// `--max-body`.
    limit: u64,
    /// The most bytes of files in a read answer: `--max-body`, or less if the client asks.
    answer_limit: u64,
}

/// Checks the request, reads its body, then serves every entry and encodes the answer in one blocking task.
async fn serve(state: AppState, headers: HeaderMap, body: Body, route: Route) -> Result<Response, AgentError> {
    let grant = authenticate(&state, &headers)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(CONTENT_TYPE) {
        return Err(AgentError::BadRequest(format!("Content-Type must be {CONTENT_TYPE}.")));
    }
    let snappy = is_snappy(headers.get(header::CONTENT_ENCODING))?;
    let snappy_answer = wants_snappy(&headers);
    let limit = state.config().body_limit;
    let answer_limit = match headers.get(batch::MAX_ANSWER_HEADER) {
        None => limit,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| AgentError::BadRequest(format!("{} must be a number of bytes.", batch::MAX_ANSWER_HEADER)))?
            .min(limit),
    };
    // The decoded body is bounded by --max-body; a snappy stream may be slightly longer than what it decodes to.
    let raw_limit = max_encoded_len(limit, snappy);
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    // A heal holds the body and the checked copy of each file at once.
    let copies = if route == Route::Heal { 2 } else { 1 };
    let memory = state.reserve_upload(declared.unwrap_or(limit).min(raw_limit).saturating_mul(copies)).await?;
    let body = read_body(&headers, body, raw_limit).await?;
    let cache = Arc::clone(state.cache());
    let answer = state
        .blocking(move |store| {
            let frames = decode(body, snappy, limit)?;
            let context = Context { store, grant: grant.as_ref(), cache: &cache, limit, answer_limit };
            let answers = match route {
                Route::Read => read_entries(&context, frames),
                Route::Heal => heal_entries(&context, frames),
                Route::Delete => delete_entries(&context, frames),
            };
            let body = batch::encode(&answers);
            drop(answers);
            if snappy_answer {
                snappy_framed(&body)
            } else {
                Ok(body)
            }
        })
        .await?;
    drop(memory);
    let mut response = (StatusCode::OK, Body::from(answer)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if snappy_answer {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    }
    Ok(response)
}

/// The frames of a body (snappy framed if `snappy`), decoded to at most `limit` bytes: 413 beyond, 400 for
/// a malformed stream or batch.
fn decode(body: Bytes, snappy: bool, limit: u64) -> Result<Vec<Frame>, AgentError> {
    let body = if snappy {
        // Read at most one byte more than allowed: a bomb cannot inflate beyond the limit.
        let mut decoded = Vec::with_capacity(body.len().saturating_mul(2));
        snap::read::FrameDecoder::new(&body[..])
            .take(limit.saturating_add(1))
            .read_to_end(&mut decoded)
            .map_err(|e| AgentError::BadRequest(format!("invalid snappy stream: {e}")))?;
        if decoded.len() as u64 > limit {
            return Err(AgentError::PayloadTooLarge(format!(
                "request body larger than the {limit}-byte limit (--max-body) once decoded"
            )));
        }
        Bytes::from(decoded)
    } else {
        body
    };
    batch::decode(body, &Limits::default()).map_err(|e| AgentError::BadRequest(e.to_string()))
}

/// The answer frame of a failed entry: the status and message its single-metric route would answer.
fn failed(name: String, error: &AgentError) -> Frame {
    let (status, message) = error.status_and_message();
    Frame::error(name, status.as_u16(), message)
}

/// Each entry as a `GET`: the file read under its shared flock, with its stat and ETag.
fn read_entries(context: &Context<'_>, frames: Vec<Frame>) -> Vec<Frame> {
    let mut total: u64 = 0;
    frames
        .into_iter()
        .map(|frame| {
            let read = admit(context.grant, Op::Read, &frame.name).and_then(|name| context.store.read(&name));
            let snapshot = read.and_then(|snapshot| {
                let len = snapshot.bytes.len() as u64;
                if total > 0 && total.saturating_add(len) > context.answer_limit {
                    let whose =
                        if context.answer_limit < context.limit { batch::MAX_ANSWER_HEADER } else { "--max-body" };
                    return Err(AgentError::PayloadTooLarge(format!(
                        "the batch's answer would be larger than the {}-byte limit ({whose}); read this metric \
                         in another batch",
                        context.answer_limit
                    )));
                }
                total = total.saturating_add(len);
                Ok(snapshot)
            });
            match snapshot {
                Ok(snapshot) => {
                    let meta = Meta { stat: Some(snapshot.stat), etag: Some(snapshot.etag), ..Meta::default() };
                    Frame::new(frame.name, 200, meta, Bytes::from(snapshot.bytes))
                }
                Err(e) => failed(frame.name, &e),
            }
        })
        .collect()
}

/// An upload entry, checked as a single upload is: its `Stat` is required, its `Size` must be the data's
/// length, its `Encoding` 0 (only the whole body may be compressed), and the data a valid whisper file.
fn checked_upload(stat: Option<MetricStat>, data: Bytes, limit: u64) -> Result<(WhisperBuf, i64), AgentError> {
    let stat = stat.ok_or_else(|| {
        AgentError::BadRequest("Stat missing: a heal entry carries the file's Stat (ModTime, Size)".into())
    })?;
    if stat.encoding != bucky_wire::ENCODING_IDENTITY {
        return Err(AgentError::BadRequest(format!(
            "Stat.Encoding is {}: the file of a batch entry is never compressed (compress the whole body with \
             Content-Encoding: snappy)",
            stat.encoding
        )));
    }
    let buf = decode_whisper(&stat, data, false, limit, "")?;
    Ok((buf, stat.mod_time))
}

/// Each entry as a `POST` with `X-Bucky-Read-Back: 1`: checked, then all healed with one group commit,
/// then each replica read back from its final path under a shared flock.
fn heal_entries(context: &Context<'_>, frames: Vec<Frame>) -> Vec<Frame> {
    let now = unix_now();
    let mut answers: Vec<Frame> = Vec::with_capacity(frames.len());
    // The entries to heal: their place in the answer, the time their check took, and the upload's ETag.
    let mut pending: Vec<(usize, u64, Option<String>)> = Vec::new();
    let mut items: Vec<(MetricName, WhisperBuf, i64)> = Vec::new();
    for frame in frames {
        let started = Instant::now();
        let Frame { name, meta, data, .. } = frame;
        let known = meta.etag.clone();
        let checked = admit(context.grant, Op::Update, &name)
            .and_then(|metric| checked_upload(meta.stat, data, context.limit).map(|(buf, mtime)| (metric, buf, mtime)));
        match checked {
            Ok(item) => {
                pending.push((answers.len(), nanos(started), known));
                items.push(item);
                // Replaced below by the heal's answer.
                answers.push(Frame::error(name, 500, "batch heal: the entry was not healed"));
            }
            Err(e) => answers.push(failed(name, &e)),
        }
    }
    let started = Instant::now();
    let healed = context.store.heal_many(&items, now);
    let took = nanos(started);
    // The uploads are dropped before the read-back: two copies of the files at once are enough.
    let metrics: Vec<MetricName> = items.into_iter().map(|(metric, ..)| metric).collect();
    for ((index, dump, known), (metric, result)) in pending.into_iter().zip(metrics.iter().zip(healed)) {
        let Some(slot) = answers.get_mut(index) else { continue };
        let name = std::mem::take(&mut slot.name);
        *slot = match result {
            Ok(healed) => {
                let mut report = HealReport { dump, ..HealReport::default() };
                match healed {
                    Healed::Created => {
                        context.cache.added(metric.as_str());
                        report.created = true;
                        report.copy = took;
                    }
                    Healed::Filled(points) => {
                        report.points_written = points;
                        report.fill = took;
                    }
                }
                read_back(context.store, metric, name, report, known.as_deref())
            }
            Err(e) => failed(name, &e),
        };
    }
    answers
}

/// The answer of a healed entry: the report, and the replica as read back from disk (no stat, ETag or data
/// if that read fails: the client then GETs, which reports why). The data is left out when the replica's
/// ETag is `known` (the upload's): the client has those very bytes.
fn read_back(store: &Store, metric: &MetricName, name: String, report: HealReport, known: Option<&str>) -> Frame {
    match store.read(metric) {
        Ok(snapshot) => {
            let data = if known == Some(snapshot.etag.as_str()) { Bytes::new() } else { Bytes::from(snapshot.bytes) };
            let meta =
                Meta { stat: Some(snapshot.stat), etag: Some(snapshot.etag), report: Some(report), ..Meta::default() };
            Frame::new(name, 200, meta, data)
        }
        Err(e) => {
            tracing::debug!(metric = %metric.as_str(), error = %e, "heal read-back failed; the client will GET");
            Frame::new(name, 200, Meta { report: Some(report), ..Meta::default() }, Bytes::new())
        }
    }
}

/// Each entry as a `DELETE`, with its `IfMatch` as the `If-Match` header.
fn delete_entries(context: &Context<'_>, frames: Vec<Frame>) -> Vec<Frame> {
    frames
        .into_iter()
        .map(|frame| {
            let deleted = admit(context.grant, Op::Delete, &frame.name).and_then(|metric| {
                let condition = frame.meta.if_match.as_deref().map(IfMatch::parse).transpose()?;
                context.store.delete(&metric, condition.as_ref())?;
                context.cache.removed(metric.as_str());
                Ok(())
            });
            match deleted {
                Ok(()) => Frame::new(frame.name, 200, Meta::default(), Bytes::new()),
                Err(e) => failed(frame.name, &e),
            }
        })
        .collect()
}
