//! `POST /batch/read`, `/batch/heal`, `/batch/delete`, `/batch/digest`, `/batch/offload` (bucky extensions): many metrics in one request,
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
//! The entries are served a chunk at a time on the blocking pool (one trip per [`CHUNK`] bytes of answer,
//! not one per entry), and the heals of a batch share one group commit ([`Store::heal_many`]). The answer
//! is streamed: the next chunk is made only once the previous one was taken by the connection, so the
//! memory a batch holds is its body and one chunk, whatever its number of entries, and every byte of it is
//! charged to the memory budget. A client that goes away stops the batch at the next chunk.
//!
//! An entry that has to wait (its file's flock is held, the budget is full) gives its I/O slot back and
//! waits outside it; the waits of a whole batch share one `--lock-timeout`, after which the entries still
//! waiting are answered 503 at once.
//!
//! The answer data of a read is bounded by `--max-body` too (what could not be sent back in one heal
//! should not be read in one batch): an entry that would take it beyond is a 413 entry, unless nothing
//! was read before it (so a batch of one reads what a `GET` reads). The client reads those again, in
//! another batch or with `GET`.

use std::io::{Read, Write};

use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bucky_wire::batch::{self, Frame, Limits, Meta, CONTENT_TYPE};
use bucky_wire::{HealReport, MetricName, MetricStat};
use whisper::WhisperData;

use super::{admit, authenticate, decode_whisper, is_snappy, max_encoded_len, nanos, read_body};
use super::{unix_now, wants_snappy};
use crate::auth::{Grant, Op};
use crate::budget::{Budget, Charge};
use crate::error::AgentError;
use crate::etag::IfMatch;
use crate::store::{HealItem, Healed, Store, StoreError};
use crate::wait::{Wait, Waiter};
use crate::AppState;

/// Bytes of answer made per trip through the blocking pool (and held at once, besides the body).
const CHUNK: usize = 256 * 1024;

/// The batch routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Read,
    Heal,
    Delete,
    Digest,
    Offload,
}

impl Route {
    /// The right a token needs for the route's entries.
    fn op(self) -> Op {
        match self {
            Route::Read | Route::Digest => Op::Read,
            Route::Heal | Route::Offload => Op::Update,
            Route::Delete => Op::Delete,
        }
    }
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

pub(super) async fn digest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AgentError> {
    serve(state, headers, body, Route::Digest).await
}

pub(super) async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AgentError> {
    serve(state, headers, body, Route::Delete).await
}

pub(super) async fn offload(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AgentError> {
    serve(state, headers, body, Route::Offload).await
}

/// Checks the request (token and its right first, before anything is read or reserved), reads and decodes
/// its body, then answers with a stream of the entries' frames.
async fn serve(state: AppState, headers: HeaderMap, body: Body, route: Route) -> Result<Response, AgentError> {
    let grant = authenticate(&state, &headers)?;
    if grant.as_ref().is_some_and(|g| !g.allows(route.op())) {
        return Err(AgentError::Forbidden(format!("forbidden: token doesn't have {} permission", route.op().as_str())));
    }
    if matches!(route, Route::Heal | Route::Offload) {
        super::refuse_writes_outside_ring(&state)?;
    }
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
    let digest_window = match route {
        Route::Digest => Some(digest_window(&headers)?),
        _ => None,
    };
    // The decoded body is bounded by --max-body; a snappy stream may be slightly longer than what it decodes to.
    let mut charge = state.budget().charge();
    let body = read_body(&state, &headers, body, max_encoded_len(limit, snappy), &mut charge).await?;
    let (frames, charge) = decode_frames(&state, body, snappy, limit, charge).await?;
    if frames.is_empty() {
        return Err(AgentError::BadRequest("empty batch: send at least one entry".into()));
    }
    let entries: Box<dyn Entries> = match route {
        Route::Read => Box::new(ReadEntries { frames, grant, total: 0, limit, answer_limit, _body: charge }),
        Route::Heal => Box::new(heal_entries(&state, frames, grant, limit, charge).await?),
        Route::Delete => Box::new(DeleteEntries { frames, grant, state: state.clone(), _body: charge }),
        Route::Digest => {
            let (until, ranges) = digest_window.unwrap_or_default();
            Box::new(DigestEntries { frames, grant, until, ranges, _body: charge })
        }
        Route::Offload => Box::new(
            super::batch_offload::offload_entries(&state, &headers, frames, grant, answer_limit, charge).await?,
        ),
    };
    let writer = Writer::new(snappy_answer, state.budget().clone());
    let answer =
        Answer { state: state.clone(), entries, next: 0, unsent: None, waiter: state.waiter(), writer: Some(writer) };
    let body = answer.into_body().await;
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if snappy_answer {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    }
    Ok(response)
}

/// The frames of a body (snappy framed if `snappy`), decoded to at most `limit` bytes: 413 beyond, 400 for
/// a malformed stream or batch. The inflated copy is charged as it grows.
pub(super) async fn decode_frames(
    state: &AppState,
    body: Bytes,
    snappy: bool,
    limit: u64,
    charge: Charge,
) -> Result<(Vec<Frame>, Charge), AgentError> {
    let mut input = Some((body, charge));
    state
        .blocking(move |_| {
            let (body, charge) = input.as_mut().ok_or_else(|| AgentError::internal("batch", "decoded twice"))?;
            let decoded = if snappy { inflate(body, limit, charge)? } else { body.clone() };
            let frames =
                batch::decode(decoded, &Limits::default()).map_err(|e| AgentError::BadRequest(e.to_string()))?;
            let (_, charge) = input.take().ok_or_else(|| AgentError::internal("batch", "decoded twice"))?;
            Ok((frames, charge))
        })
        .await
}

/// A snappy framed body inflated to at most `limit` bytes (a bomb cannot inflate beyond it), charged.
fn inflate(body: &Bytes, limit: u64, charge: &mut Charge) -> Result<Bytes, AgentError> {
    let mut decoded = Vec::new();
    let mut decoder = snap::read::FrameDecoder::new(&body[..]).take(limit.saturating_add(1));
    let mut piece = vec![0; 64 * 1024];
    loop {
        let n = match decoder.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(AgentError::BadRequest(format!("invalid snappy stream: {e}"))),
        };
        if decoded.len() + n > decoded.capacity() {
            let capacity = (decoded.len() + n).max(decoded.capacity() * 2);
            charge.try_grow_to((body.len() + capacity + piece.len()) as u64)?;
            decoded.reserve_exact(capacity - decoded.len());
        }
        decoded.extend_from_slice(&piece[..n]);
        if decoded.len() as u64 > limit {
            return Err(AgentError::PayloadTooLarge(format!(
                "request body larger than the {limit}-byte limit (--max-body) once decoded"
            )));
        }
    }
    Ok(Bytes::from(decoded))
}

/// The answer frame of a failed entry: the status and message its single-metric route would answer.
pub(super) fn failed(name: String, error: &AgentError) -> Frame {
    let (status, message) = error.status_and_message();
    Frame::error(name, status.as_u16(), message)
}

/// The entries of one batch, answered one at a time, in order.
pub(super) trait Entries: Send + 'static {
    /// How many.
    fn len(&self) -> usize;
    /// The answer of entry `i`, or `Err` with the [`Wait`] that keeps it from being served now (nothing
    /// changed; it is tried again after the wait).
    fn serve(&mut self, store: &Store, i: usize) -> Result<Frame, Wait>;
    /// The answer of entry `i` once its waiter gave up with `error`.
    fn given_up(&mut self, i: usize, error: &AgentError) -> Frame;
}

/// A batch's answer being made, one chunk per [`Answer::next_chunk`].
struct Answer {
    state: AppState,
    entries: Box<dyn Entries>,
    /// The next entry to serve.
    next: usize,
    /// An entry's answer served but not yet written (the budget had no room for it): it goes first.
    unsent: Option<Frame>,
    waiter: Waiter,
    /// `None` once the last chunk went out.
    writer: Option<Writer>,
}

impl Answer {
    /// The answer's body: with a `Content-Length` when it fits in its first chunk (most batches), else
    /// streamed (chunked) a chunk at a time.
    async fn into_body(mut self) -> Body {
        let first = self.next_chunk().await;
        if self.next >= self.entries.len() && self.unsent.is_none() {
            let rest = self.next_chunk().await;
            return match (first, rest) {
                (Some(first), Some(rest)) => Body::from([first.as_ref(), rest.as_ref()].concat()),
                (Some(only), None) | (None, Some(only)) => Body::from(only),
                (None, None) => Body::empty(),
            };
        }
        let rest = futures_util::stream::unfold(self, |mut answer| async move {
            answer.next_chunk().await.map(|chunk| (chunk, answer))
        });
        let chunks = futures_util::stream::iter(first).chain(rest).map(Ok::<Bytes, std::convert::Infallible>);
        Body::from_stream(chunks)
    }

    /// The next piece of the answer (`None` when it is complete): the entries served in one trip through
    /// the blocking pool, until [`CHUNK`] bytes are ready, one of them has to wait, or all are served.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            let mut writer = self.writer.take()?;
            if self.next >= self.entries.len() && self.unsent.is_none() {
                return writer.finish();
            }
            let entries = std::mem::replace(&mut self.entries, Box::new(NoEntries));
            let (mut next, mut unsent) = (self.next, self.unsent.take());
            let step = self
                .state
                .in_slot(move |store| {
                    let mut entries = entries;
                    let mut waiting = None;
                    while writer.pending() < CHUNK {
                        let frame = match unsent.take() {
                            Some(frame) => frame,
                            None if next >= entries.len() => break,
                            None => match entries.serve(store, next) {
                                Ok(frame) => {
                                    next += 1;
                                    frame
                                }
                                Err(wait) => {
                                    waiting = Some(wait);
                                    break;
                                }
                            },
                        };
                        if let Err(wait) = writer.push(&frame) {
                            unsent = Some(frame);
                            waiting = Some(wait);
                            break;
                        }
                    }
                    let chunk = writer.take();
                    (entries, writer, next, unsent, waiting, chunk)
                })
                .await;
            let Ok((entries, writer, next, unsent, waiting, chunk)) = step else {
                tracing::error!("batch answer: the blocking task failed; the answer is cut short");
                return None;
            };
            self.entries = entries;
            self.writer = Some(writer);
            self.next = next;
            self.unsent = unsent;
            if let Some(chunk) = chunk {
                return Some(chunk);
            }
            if let Some(wait) = waiting {
                // Nothing to send meanwhile: wait here (no I/O slot held), or answer the entry now.
                if let Err(error) = self.waiter.wait(&wait).await {
                    match self.unsent.take() {
                        // The budget stayed full even for a served answer: cut it to its error.
                        Some(frame) => self.unsent = Some(failed(frame.name, &error)),
                        None => {
                            self.unsent = Some(self.entries.given_up(self.next, &error));
                            self.next += 1;
                        }
                    }
                }
            }
        }
    }
}

/// Stands in for an answer's entries while they are on the blocking pool.
struct NoEntries;

impl Entries for NoEntries {
    fn len(&self) -> usize {
        0
    }
    fn serve(&mut self, _: &Store, _: usize) -> Result<Frame, Wait> {
        Err(Wait::Memory { bytes: 0 })
    }
    fn given_up(&mut self, _: usize, error: &AgentError) -> Frame {
        failed(String::new(), error)
    }
}

/// Encodes answer frames into chunks (snappy framed if asked), charging them to the budget.
struct Writer {
    plain: Vec<u8>,
    snappy: Option<snap::write::FrameEncoder<Vec<u8>>>,
    budget: Budget,
    charge: Option<Charge>,
    started: bool,
}

impl Writer {
    fn new(snappy: bool, budget: Budget) -> Writer {
        let snappy = snappy.then(|| snap::write::FrameEncoder::new(Vec::new()));
        Writer { plain: Vec::new(), snappy, budget, charge: None, started: false }
    }

    /// Bytes ready to go.
    fn pending(&self) -> usize {
        self.plain.len() + self.snappy.as_ref().map_or(0, |e| e.get_ref().len())
    }

    /// Appends a frame, the memory charged first ([`Wait::Memory`] when the budget has no room: send what
    /// is ready, then try again).
    fn push(&mut self, frame: &Frame) -> Result<(), Wait> {
        let len = 4 + frame.name.len() + 2 + 4 + 512 + 8 + frame.data.len();
        let need = (self.pending() + len) as u64;
        let charge = self.charge.get_or_insert_with(|| self.budget.charge());
        if let Err(AgentError::Wait(wait)) = charge.try_grow_to(need) {
            return Err(wait);
        }
        if !self.started {
            self.plain.extend_from_slice(batch::MAGIC);
            self.started = true;
        }
        batch::encode_frame(frame, &mut self.plain);
        if let Some(encoder) = &mut self.snappy {
            // Writing to a Vec cannot fail. Not flushed here: a snappy block (64 KiB) then spans several
            // frames, and what one file shares with the next is compressed too; `take` flushes.
            let _ = encoder.write_all(&self.plain);
            self.plain.clear();
        }
        Ok(())
    }

    /// What is ready, as one chunk holding its charge until the connection has written it.
    fn take(&mut self) -> Option<Bytes> {
        let bytes = match &mut self.snappy {
            Some(encoder) => {
                let _ = encoder.flush();
                std::mem::take(encoder.get_mut())
            }
            None => std::mem::take(&mut self.plain),
        };
        if bytes.is_empty() {
            return None;
        }
        let charge = self.charge.take()?;
        Some(charge.hold(bytes))
    }

    /// The last chunk (the magic alone for an answer with no frame, which a batch never is).
    fn finish(&mut self) -> Option<Bytes> {
        if !self.started {
            self.plain.extend_from_slice(batch::MAGIC);
            self.started = true;
            if let Some(encoder) = &mut self.snappy {
                let _ = encoder.write_all(&self.plain);
                self.plain.clear();
            }
        }
        self.take()
    }
}

/// Each entry as a `GET`: the file read under its shared flock, with its stat and ETag.
struct ReadEntries {
    frames: Vec<Frame>,
    grant: Option<Grant>,
    /// Bytes of files answered so far.
    total: u64,
    limit: u64,
    answer_limit: u64,
    _body: Charge,
}

impl Entries for ReadEntries {
    fn len(&self) -> usize {
        self.frames.len()
    }

    fn serve(&mut self, store: &Store, i: usize) -> Result<Frame, Wait> {
        let name = std::mem::take(&mut self.frames[i].name);
        let read = admit(self.grant.as_ref(), Op::Read, &name).and_then(|metric| Ok(store.read(&metric)?));
        let snapshot = read.and_then(|snapshot| {
            let len = snapshot.bytes.len() as u64;
            if self.total > 0 && self.total.saturating_add(len) > self.answer_limit {
                let whose = if self.answer_limit < self.limit { batch::MAX_ANSWER_HEADER } else { "--max-body" };
                return Err(AgentError::PayloadTooLarge(format!(
                    "the batch's answer would be larger than the {}-byte limit ({whose}); read this metric \
                     in another batch",
                    self.answer_limit
                )));
            }
            Ok(snapshot)
        });
        match snapshot {
            Ok(snapshot) => {
                self.total = self.total.saturating_add(snapshot.bytes.len() as u64);
                let meta = Meta { stat: Some(snapshot.stat), etag: Some(snapshot.etag), ..Meta::default() };
                // The snapshot's charge goes with it: the writer charges the encoded copy.
                Ok(Frame::new(name, 200, meta, Bytes::from(snapshot.bytes)))
            }
            Err(AgentError::Wait(wait)) => {
                self.frames[i].name = name;
                Err(wait)
            }
            Err(e) => Ok(failed(name, &e)),
        }
    }

    fn given_up(&mut self, i: usize, error: &AgentError) -> Frame {
        failed(std::mem::take(&mut self.frames[i].name), error)
    }
}

/// The window of a digest request: its `X-Bucky-Digest-Until` (required, a real time) and whether it asks
/// for range digests. 400 before anything is read otherwise.
fn digest_window(headers: &HeaderMap) -> Result<(i64, bool), AgentError> {
    use bucky_wire::digest::{RANGES_HEADER, UNTIL_HEADER};
    let until = headers
        .get(UNTIL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|t| (0..=i64::from(u32::MAX)).contains(t))
        .ok_or_else(|| AgentError::BadRequest(format!("{UNTIL_HEADER} must be a Unix time in seconds.")))?;
    let ranges = match headers.get(RANGES_HEADER).map(|v| v.as_bytes()) {
        None | Some(b"0") => false,
        Some(b"1") => true,
        Some(_) => return Err(AgentError::BadRequest(format!("{RANGES_HEADER} must be 0 or 1."))),
    };
    Ok((until, ranges))
}

/// Each entry's digest ([`bucky_wire::digest`]): the file read under its shared flock as a `GET` reads it
/// (same checks and errors), then digested once the lock is released; only the digest is kept. A file that
/// is not a valid whisper file is a 409 entry, as a heal into it would be.
struct DigestEntries {
    frames: Vec<Frame>,
    grant: Option<Grant>,
    until: i64,
    ranges: bool,
    _body: Charge,
}

impl Entries for DigestEntries {
    fn len(&self) -> usize {
        self.frames.len()
    }

    fn serve(&mut self, store: &Store, i: usize) -> Result<Frame, Wait> {
        let name = std::mem::take(&mut self.frames[i].name);
        let digest = admit(self.grant.as_ref(), Op::Read, &name).and_then(|metric| {
            let snapshot = store.read(&metric)?;
            let mod_time = snapshot.stat.mod_time;
            let file = whisper::WhisperBuf::from_bytes(snapshot.bytes).map_err(|e| {
                AgentError::corrupt_file(format!("{} is not a valid whisper file: {e}", metric.as_str()))
            })?;
            let archives = whisper::digest(&file, self.until, self.ranges)
                .map_err(|e| AgentError::BadRequest(format!("cannot digest {}: {e}", metric.as_str())))?;
            Ok(bucky_wire::digest::encode(&bucky_wire::digest::MetricDigest { mod_time, archives }))
        });
        match digest {
            Ok(data) => Ok(Frame::new(name, 200, Meta::default(), Bytes::from(data))),
            Err(AgentError::Wait(wait)) => {
                self.frames[i].name = name;
                Err(wait)
            }
            Err(e) => Ok(failed(name, &e)),
        }
    }

    fn given_up(&mut self, i: usize, error: &AgentError) -> Frame {
        failed(std::mem::take(&mut self.frames[i].name), error)
    }
}

/// Each entry as a `DELETE`, with its `IfMatch` as the `If-Match` header.
struct DeleteEntries {
    frames: Vec<Frame>,
    grant: Option<Grant>,
    state: AppState,
    _body: Charge,
}

impl Entries for DeleteEntries {
    fn len(&self) -> usize {
        self.frames.len()
    }

    fn serve(&mut self, store: &Store, i: usize) -> Result<Frame, Wait> {
        let frame = &self.frames[i];
        let deleted = admit(self.grant.as_ref(), Op::Delete, &frame.name).and_then(|metric| {
            let condition = frame.meta.if_match.as_deref().map(IfMatch::parse).transpose()?;
            store.delete(&metric, condition.as_ref())?;
            self.state.cache().removed(metric.as_str());
            Ok(())
        });
        let name = frame.name.clone();
        match deleted {
            Ok(()) => Ok(Frame::new(name, 200, Meta::default(), Bytes::new())),
            Err(AgentError::Wait(wait)) => Err(wait),
            Err(e) => Ok(failed(name, &e)),
        }
    }

    fn given_up(&mut self, i: usize, error: &AgentError) -> Frame {
        failed(self.frames[i].name.clone(), error)
    }
}

/// An upload entry, checked as a single upload is: its `Stat` is required, its `Size` must be the data's
/// length, its `Encoding` 0 (only the whole body may be compressed), and the data a valid whisper file.
fn checked_upload(stat: Option<MetricStat>, data: Bytes, limit: u64) -> Result<(WhisperData, i64), AgentError> {
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
    // A plain copy of an entry's data: no budget of its own (the caller charged the copies of the batch).
    let mut unlimited = Budget::unlimited().charge();
    let buf = decode_whisper(&stat, data, false, limit, "", &mut unlimited)?;
    Ok((buf, stat.mod_time))
}

/// Each entry as a `POST` with `X-Bucky-Read-Back: 1`: checked, then all healed with one group commit
/// (entries that must wait are healed again together after the wait), then each replica read back from
/// its final path under a shared flock, as the answer is streamed.
pub(super) async fn heal_entries(
    state: &AppState,
    frames: Vec<Frame>,
    grant: Option<Grant>,
    limit: u64,
    mut charge: Charge,
) -> Result<HealEntries, AgentError> {
    // The checked copy of each file sits beside the body until the body is dropped.
    let body_bytes: u64 = frames.iter().map(|f| f.data.len() as u64).sum();
    charge.grow_to(body_bytes.saturating_mul(2), state.config().memory_wait).await?;
    let now = unix_now();
    let n = frames.len();
    let mut answers: Vec<Option<Frame>> = Vec::with_capacity(n);
    let mut names: Vec<String> = Vec::with_capacity(n);
    // The entries to heal: their place, the time their check took, the upload's ETag.
    let mut pending: Vec<(usize, u64, Option<String>)> = Vec::new();
    let mut items: Vec<HealItem> = Vec::new();
    // Per item: heal with overwrite ([`Meta::overwrite`]).
    let mut overwrites: Vec<bool> = Vec::new();
    for frame in frames {
        let started = Instant::now();
        let Frame { name, meta, data, .. } = frame;
        let known = meta.etag.clone();
        let overwrite = meta.overwrite;
        let checked = admit(grant.as_ref(), Op::Update, &name)
            .and_then(|metric| checked_upload(meta.stat, data, limit).map(|(buf, mtime)| (metric, buf, mtime)));
        match checked {
            Ok(item) => {
                pending.push((answers.len(), nanos(started), known));
                items.push(item);
                overwrites.push(overwrite);
                answers.push(None);
            }
            Err(e) => answers.push(Some(failed(name.clone(), &e))),
        }
        names.push(name);
    }
    // The body's slices are gone: only the checked copies are held now.
    charge.shrink_to(items.iter().map(|(_, buf, _)| buf.as_bytes().len() as u64).sum());
    let mut results: Vec<Option<Result<Healed, AgentError>>> = (0..items.len()).map(|_| None).collect();
    let mut waiter = state.waiter();
    let mut todo: Vec<usize> = (0..items.len()).collect();
    let started = Instant::now();
    let items = Arc::new(items);
    while !todo.is_empty() {
        let (batch_items, indices, modes) = (Arc::clone(&items), todo.clone(), overwrites.clone());
        let healed = state
            .in_slot(move |store| {
                // The plain heals and the overwriting ones (`bucky repair`), each with one group commit.
                let mut results: Vec<Option<Result<Healed, StoreError>>> = indices.iter().map(|_| None).collect();
                for overwrite in [false, true] {
                    let chosen: Vec<usize> = (0..indices.len()).filter(|&k| modes[indices[k]] == overwrite).collect();
                    if chosen.is_empty() {
                        continue;
                    }
                    let subset: Vec<&HealItem> = chosen.iter().map(|&k| &batch_items[indices[k]]).collect();
                    for (k, result) in chosen.into_iter().zip(store.heal_many_with(&subset, now, overwrite)) {
                        results[k] = Some(result);
                    }
                }
                let missing = || Err(StoreError::failed("batch heal", "the entry was not healed"));
                results.into_iter().map(|r| r.unwrap_or_else(missing)).collect::<Vec<_>>()
            })
            .await?;
        let mut waiting = Vec::new();
        let mut first_wait = None;
        for (&i, result) in todo.iter().zip(healed) {
            match result {
                Err(StoreError::Wait(wait)) => {
                    waiting.push(i);
                    results[i] = Some(Err(AgentError::Wait(wait.clone())));
                    first_wait.get_or_insert(wait);
                }
                other => results[i] = Some(other.map_err(AgentError::from)),
            }
        }
        todo = waiting;
        if let Some(wait) = first_wait {
            if waiter.wait(&wait).await.is_err() {
                for &i in &todo {
                    if let Some(Err(AgentError::Wait(wait))) = &results[i] {
                        results[i] = Some(Err(waiter.give_up(wait)));
                    }
                }
                break;
            }
        }
    }
    let took = nanos(started);
    let metrics: Vec<MetricName> = items.iter().map(|(metric, ..)| metric.clone()).collect();
    drop(items);
    charge.shrink_to(0);
    let mut healed = Vec::with_capacity(metrics.len());
    for ((index, dump, known), (metric, result)) in pending.into_iter().zip(metrics.into_iter().zip(results)) {
        let name = names[index].clone();
        let result = result.unwrap_or_else(|| Err(AgentError::internal("batch heal", "the entry was not healed")));
        match result {
            Ok(outcome) => {
                let mut report = HealReport { dump, ..HealReport::default() };
                if outcome == Healed::Created {
                    state.cache().added(metric.as_str());
                }
                super::record_heal(state, &outcome, took, &mut report);
                healed.push((index, metric, report, known));
            }
            Err(e) => answers[index] = Some(failed(name, &e)),
        }
    }
    let mut read_backs: Vec<Option<(MetricName, HealReport, Option<String>)>> = (0..n).map(|_| None).collect();
    for (index, metric, report, known) in healed {
        read_backs[index] = Some((metric, report, known));
    }
    Ok(HealEntries { answers, read_backs, names })
}

/// Healed entries waiting for their read-back, and the answers already known.
pub(super) struct HealEntries {
    answers: Vec<Option<Frame>>,
    read_backs: Vec<Option<(MetricName, HealReport, Option<String>)>>,
    names: Vec<String>,
}

impl Entries for HealEntries {
    fn len(&self) -> usize {
        self.answers.len()
    }

    /// The answer of a healed entry: the report, and the replica as read back from disk (no stat, ETag or
    /// data if that read fails: the client then GETs, which reports why). The data is left out when the
    /// replica's ETag is the upload's: the client has those very bytes.
    fn serve(&mut self, store: &Store, i: usize) -> Result<Frame, Wait> {
        if let Some(answer) = self.answers[i].take() {
            return Ok(answer);
        }
        let Some((metric, report, known)) = &self.read_backs[i] else {
            return Ok(Frame::error(self.names[i].clone(), 500, "batch heal: the entry was not healed"));
        };
        let name = self.names[i].clone();
        match store.read(metric) {
            Ok(snapshot) => {
                let data = if known.as_deref() == Some(snapshot.etag.as_str()) {
                    Bytes::new()
                } else {
                    Bytes::from(snapshot.bytes)
                };
                let meta = Meta {
                    stat: Some(snapshot.stat),
                    etag: Some(snapshot.etag),
                    report: Some(report.clone()),
                    ..Meta::default()
                };
                Ok(Frame::new(name, 200, meta, data))
            }
            Err(StoreError::Wait(wait)) => Err(wait),
            Err(e) => {
                tracing::debug!(metric = %metric.as_str(), error = %e, "heal read-back failed; the client will GET");
                Ok(Frame::new(name, 200, Meta { report: Some(report.clone()), ..Meta::default() }, Bytes::new()))
            }
        }
    }

    fn given_up(&mut self, i: usize, error: &AgentError) -> Frame {
        let name = self.names[i].clone();
        match &self.read_backs[i] {
            Some((metric, report, _)) => {
                tracing::debug!(metric = %metric.as_str(), %error, "heal read-back gave up; the client will GET");
                Frame::new(name, 200, Meta { report: Some(report.clone()), ..Meta::default() }, Bytes::new())
            }
            None => failed(name, error),
        }
    }
}
