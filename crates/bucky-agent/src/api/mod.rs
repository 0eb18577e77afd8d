//! The HTTP API: routes, access log, and the request plumbing shared by the handlers.

mod access;
mod batch;
mod batch_offload;
#[cfg(test)]
mod limits_tests;
mod list;
mod metric;
mod offload;
#[cfg(test)]
mod tests;

use std::io::{Read, Write};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use bucky_wire::{HealReport, MetricName, MetricStat, METRIC_STAT_HEADER};
use http_body_util::BodyExt;
use tower_http::timeout::TimeoutLayer;
use whisper::WhisperData;

use crate::auth::{Grant, Op};
use crate::budget::Charge;
use crate::error::AgentError;
use crate::store::{Healed, StoreError};
use crate::AppState;

/// The agent's router (testable with `tower::ServiceExt::oneshot`, no server needed).
pub fn app(state: AppState) -> Router {
    let timeout = state.config().request_timeout;
    Router::new()
        .route("/", any(not_found))
        .route("/hashring", get(hashring).fallback(bad_method))
        .route("/metrics", get(list::list).post(list::list).fallback(bad_method))
        .route("/metrics/", any(name_missing))
        .route(
            "/metrics/{*name}",
            get(metric::get_metric)
                .head(metric::head_metric)
                .post(metric::post_metric)
                .put(metric::put_metric)
                .delete(metric::delete_metric)
                .fallback(bad_method),
        )
        .route(bucky_wire::batch::READ_PATH, post(batch::read).fallback(bad_method))
        .route(bucky_wire::batch::HEAL_PATH, post(batch::heal).fallback(bad_method))
        .route(bucky_wire::batch::DELETE_PATH, post(batch::delete).fallback(bad_method))
        .route(bucky_wire::batch::OFFLOAD_PATH, post(batch::offload).fallback(bad_method))
        .route("/debug/state", get(debug_state).fallback(bad_method))
        .route(bucky_wire::digest::DIGEST_PATH, post(batch::digest).fallback(bad_method))
        .fallback(not_found)
        // Handlers enforce `--max-body` themselves (with a 413 that names the limit).
        .layer(DefaultBodyLimit::disable())
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(middleware::from_fn_with_state(state.clone(), access::access_log))
        .with_state(state)
}

async fn hashring(State(state): State<AppState>) -> Json<bucky_wire::RingInfo> {
    Json(state.0.ring_info.clone())
}

async fn not_found() -> AgentError {
    AgentError::NotFoundPath
}

async fn bad_method() -> AgentError {
    AgentError::BadRequest("Bad request method.".into())
}

async fn name_missing() -> AgentError {
    AgentError::BadRequest("Metric name missing.".into())
}

/// Records a heal that took `took` ns: in the daemon's self-metrics, and in the answer's `report` (how it
/// was healed, points written and replaced).
pub(crate) fn record_heal(state: &AppState, healed: &Healed, took: u64, report: &mut HealReport) {
    let metrics = state.diagnostics().metrics();
    match *healed {
        Healed::Created => {
            metrics.incr("heals.created");
            report.created = true;
            report.copy = took;
        }
        Healed::Filled(points) => {
            metrics.incr("heals.filled");
            metrics.add("heals.points_written", points as f64);
            report.points_written = points;
            report.fill = took;
        }
        Healed::Repaired { filled, replaced } => {
            metrics.incr("heals.repaired");
            metrics.add("heals.points_written", (filled + replaced) as f64);
            report.points_written = filled + replaced;
            report.points_replaced = replaced;
            report.fill = took;
        }
    }
}

/// `GET /debug/state`: the daemon's state as JSON (what `SIGQUIT` writes as text), for tokens with read
/// permission when auth is on. It holds no secret: no tokens, keys or request bodies.
async fn debug_state(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AgentError> {
    if let Some(grant) = authenticate(&state, &headers)? {
        if !grant.allows(Op::Read) {
            return Err(AgentError::Forbidden("forbidden: token doesn't have read permission".into()));
        }
    }
    Ok(Json(state.diagnostics().state("GET /debug/state")).into_response())
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The token's grant when authentication is on (`None` when it is off).
pub(crate) fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Option<Grant>, AgentError> {
    let Some(auth) = &state.config().auth else {
        return Ok(None);
    };
    let header = headers.get(bucky_wire::AUTH_HEADER).map(|v| v.to_str().unwrap_or(""));
    auth.verify(header, unix_now()).map(Some)
}

/// Authenticates the request, then checks the name and that the token (if any) allows `op` on it.
pub(crate) fn authorize(state: &AppState, headers: &HeaderMap, op: Op, name: &str) -> Result<MetricName, AgentError> {
    let grant = authenticate(state, headers)?;
    admit(grant.as_ref(), op, name)
}

/// 409 on a node outside the ring (being drained): it must not receive new copies of any metric, only give
/// its own away. Checked after authentication, before the body is read.
pub(crate) fn refuse_writes_outside_ring(state: &AppState) -> Result<(), AgentError> {
    let config = state.config();
    if config.in_ring() {
        return Ok(());
    }
    Err(AgentError::Conflict(format!(
        "this node ({}) is not in the ring: it serves reads and deletes only, for draining; write to the \
         metric's ring nodes instead",
        config.node
    )))
}

/// Checks the name (400) and that the grant (if authentication is on) allows `op` on it (403).
pub(crate) fn admit(grant: Option<&Grant>, op: Op, name: &str) -> Result<MetricName, AgentError> {
    let name = MetricName::parse(name).map_err(|e| AgentError::BadRequest(format!("invalid metric name: {e}")))?;
    if let Some(grant) = grant {
        grant.authorize(op, name.as_str())?;
    }
    Ok(name)
}

/// Reads a request body of at most `limit` bytes (413 beyond), charging its bytes to `charge` as they arrive
/// (never what `Content-Length` announces): a client trickling a body it claims to be huge holds only
/// what it sent. The body must keep coming: each piece within `--body-timeout`, and on average at least
/// `--min-body-rate` once it has taken longer than that (408 otherwise).
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    charge: &mut Charge,
) -> Result<Bytes, AgentError> {
    let too_large =
        || AgentError::PayloadTooLarge(format!("request body larger than the {limit}-byte limit (--max-body)"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let config = state.config();
    let (idle, min_rate, patience) = (config.body_timeout, config.min_body_rate, config.memory_wait);
    let mut body = body;
    let mut bytes: Vec<u8> = Vec::new();
    let started = Instant::now();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(AgentError::RequestTimeout(format!(
                    "request body: nothing received for {} s (--body-timeout) after {} bytes",
                    idle.as_secs(),
                    bytes.len()
                )))
            }
            Ok(None) => break,
            Ok(Some(frame)) => {
                frame.map_err(|e| AgentError::BadRequest(format!("error reading the request body: {e}")))?
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = bytes.len() as u64 + data.len() as u64;
        if len > limit {
            return Err(too_large());
        }
        if len > bytes.capacity() as u64 {
            // Grow by doubling (bounded by what was announced and by the limit), charged before allocating.
            let ceiling = declared.filter(|&d| d >= len).unwrap_or(limit);
            let capacity = len.max((bytes.capacity() as u64).saturating_mul(2)).max(8192).min(ceiling);
            charge.grow_to(capacity, patience).await?;
            bytes.reserve_exact(usize::try_from(capacity).unwrap_or(usize::MAX) - bytes.len());
        }
        bytes.extend_from_slice(&data);
        let elapsed = started.elapsed();
        if elapsed > idle && (bytes.len() as f64) < min_rate as f64 * elapsed.as_secs_f64() {
            return Err(AgentError::RequestTimeout(format!(
                "request body arriving too slowly: {} bytes in {:.0} s, below --min-body-rate {min_rate} bytes/s",
                bytes.len(),
                elapsed.as_secs_f64()
            )));
        }
    }
    Ok(Bytes::from(bytes))
}

/// Parses an `X-Metric-Stat` header value.
pub(crate) fn parse_stat(value: Option<&HeaderValue>) -> Result<MetricStat, AgentError> {
    let value = value.ok_or_else(|| AgentError::BadRequest(format!("{METRIC_STAT_HEADER} header missing")))?;
    let text = value
        .to_str()
        .map_err(|_| AgentError::BadRequest(format!("Error decoding {METRIC_STAT_HEADER} header: not ASCII")))?;
    MetricStat::from_header_value(text)
        .map_err(|e| AgentError::BadRequest(format!("Error decoding {METRIC_STAT_HEADER} header: {e}")))
}

/// The most bytes a body encoding a `size`-byte file can take: `size` itself, or snappy's worst case
/// (incompressible data grows by at most a sixth, plus framing).
pub(crate) fn max_encoded_len(size: u64, snappy: bool) -> u64 {
    if snappy {
        size + size / 6 + 4096
    } else {
        size
    }
}

/// Whether a `Content-Encoding` value means snappy; `Err` (415) for encodings the agent cannot decode.
pub(crate) fn is_snappy(content_encoding: Option<&HeaderValue>) -> Result<bool, AgentError> {
    match content_encoding.map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(e) if e.is_empty() || e == "identity" => Ok(false),
        Some(e) if e == "snappy" => Ok(true),
        Some(e) => {
            Err(AgentError::UnsupportedMediaType(format!("unsupported Content-Encoding {e:?} (use snappy or none)")))
        }
    }
}

/// `X-Metric-Stat.Size` of an upload, checked before anything is read: 400 if it cannot be a whisper
/// file (negative included), 413 beyond `--max-body`.
pub(crate) fn checked_size(stat: &MetricStat, limit: u64, what: &str) -> Result<u64, AgentError> {
    if stat.size <= 28 {
        return Err(AgentError::BadRequest(format!(
            "{what}Whisper data in request too small: X-Metric-Stat.Size is {}",
            stat.size
        )));
    }
    let size = stat.size as u64;
    if size > limit {
        return Err(AgentError::PayloadTooLarge(format!(
            "{what}X-Metric-Stat.Size {size} is larger than the {limit}-byte limit (--max-body)"
        )));
    }
    Ok(size)
}

/// Decodes and validates an uploaded (or fetched) whisper file before anything on disk changes: the
/// decoded size must equal `X-Metric-Stat.Size`, and the bytes must be a structurally valid whisper file, or
/// a go-whisper compressed one (recognised by its magic, kept as bytes: it can only create a missing file).
/// `what` prefixes the messages ("" for uploads). A snappy stream is inflated into memory charged to
/// `charge` (which holds the body already) as it grows: [`Wait::Memory`](crate::Wait) when the budget
/// has no room, so run it where waits are handled ([`AppState::blocking`]).
pub(crate) fn decode_whisper(
    stat: &MetricStat,
    body: Bytes,
    snappy: bool,
    limit: u64,
    what: &str,
    charge: &mut Charge,
) -> Result<WhisperData, AgentError> {
    let size = checked_size(stat, limit, what)?;
    let bytes = if snappy {
        inflate(&body, size, charge).map_err(|e| match e {
            AgentError::BadRequest(reason) => AgentError::BadRequest(format!("{what}{reason}")),
            other => other,
        })?
    } else {
        Vec::from(body) // no copy when the buffer is not shared
    };
    if bytes.len() as u64 != size {
        return Err(AgentError::BadRequest(format!(
            "{what}Malformed whisper data: the body decodes to {} bytes but X-Metric-Stat.Size is {size}",
            bytes.len()
        )));
    }
    WhisperData::from_bytes(bytes).map_err(|e| AgentError::BadRequest(format!("{what}Malformed whisper data: {e}")))
}

/// A snappy framed stream inflated to at most `size + 1` bytes (a lying `Size` cannot make us inflate a
/// bomb), each growth of the buffer charged before it is made.
fn inflate(body: &Bytes, size: u64, charge: &mut Charge) -> Result<Vec<u8>, AgentError> {
    let ceiling = usize::try_from(size + 1).unwrap_or(usize::MAX);
    let mut decoder = snap::read::FrameDecoder::new(&body[..]).take(size + 1);
    let mut decoded: Vec<u8> = Vec::new();
    loop {
        if decoded.len() == decoded.capacity() {
            let capacity = (decoded.capacity().saturating_mul(2)).max(64 * 1024).min(ceiling.max(1));
            charge.try_grow_to(body.len() as u64 + capacity as u64)?;
            decoded.reserve_exact(capacity - decoded.len());
        }
        let start = decoded.len();
        let room = decoded.capacity() - start;
        decoded.resize(start + room, 0);
        match decoder.read(&mut decoded[start..]) {
            Ok(0) => {
                decoded.truncate(start);
                return Ok(decoded);
            }
            Ok(n) => decoded.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => decoded.truncate(start),
            Err(e) => return Err(AgentError::BadRequest(format!("invalid snappy stream: {e}"))),
        }
        if decoded.len() >= ceiling {
            return Ok(decoded);
        }
    }
}

/// Whether the client asked for snappy (`Accept-Encoding: snappy`, buckyd's exact protocol; a list
/// naming snappy is accepted too).
pub(crate) fn wants_snappy(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| e.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("snappy"))
}

/// `bytes` snappy framed (blocking: CPU work).
pub(crate) fn snappy_framed(bytes: &[u8]) -> Result<Vec<u8>, AgentError> {
    let mut encoder = snap::write::FrameEncoder::new(Vec::with_capacity(bytes.len() / 2 + 64));
    encoder.write_all(bytes).map_err(|e| AgentError::internal("snappy", e))?;
    encoder.into_inner().map_err(|e| AgentError::internal("snappy", e.error().to_string()))
}

/// Nanoseconds since `since` (the timings of a heal report).
pub(crate) fn nanos(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A plain-text response (Go `http.Error` style) with a given status.
pub(crate) fn text(status: StatusCode, body: &str) -> Response {
    let mut response = (status, format!("{body}\n")).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The HTTP answer of each store failure; the texts are the ones the agent has always answered (the e2e
/// tests and the Go clients read them).
impl From<StoreError> for AgentError {
    fn from(err: StoreError) -> AgentError {
        let text = err.to_string();
        match err {
            StoreError::NotFound => AgentError::NotFound,
            StoreError::NameTooLong => AgentError::BadRequest(text),
            StoreError::Symlink { .. } => AgentError::Forbidden(text),
            StoreError::InTheWay { .. } => AgentError::Conflict(text),
            StoreError::Corrupt(_) => AgentError::corrupt_file(text),
            StoreError::Compressed(_) | StoreError::CompressedUpload { .. } => AgentError::Unprocessable(text),
            StoreError::IfMatchButMissing | StoreError::Changed => AgentError::PreconditionFailed(text),
            StoreError::Locked(_) | StoreError::Unstable { .. } | StoreError::KeepsBeingReplaced { .. } => {
                AgentError::Unavailable(text)
            }
            StoreError::Wait(wait) => AgentError::Wait(wait),
            StoreError::Full { .. } | StoreError::QuotaExceeded { .. } => AgentError::InsufficientStorage(text),
            StoreError::Failed { context, source } => AgentError::Internal { context, source },
        }
    }
}
