//! `POST /batch/offload` (a bucky extension; see [`bucky_wire::batch`]): this agent fetches a batch of
//! sources from another ring member's agent itself, with one `/batch/read`, heals each into its entry's
//! metric as `/batch/heal` does, reads the replica back and checks it against the very source it fetched
//! ([`bucky_wire::verify`], at the client's time). The answer carries, per entry, the heal's report, the
//! verdict and the ETag of the source version copied, and no file: the client (`bucky rebalance
//! --offload`) deletes the source with `If-Match` of that ETag, so a source written to since the fetch
//! stays.
//!
//! As the single-metric offload ([`super::offload`]), the source must be a ring member's agent (its host a
//! ring node's, its port one of `--peer-port`), checked before anything is fetched, and the token sent to
//! it is the agent's own short-lived, read-only one; the caller's token must allow `update` on each entry
//! and `read` on its source. A source that cannot be fetched as a whole (not a member, down, no batches:
//! buckyd) fails the whole request (400, 502), and the client copies those metrics through itself.
//!
//! Memory: the fetched answer (bounded by the request's [`bucky_wire::batch::MAX_ANSWER_HEADER`] and
//! `--max-body`) is charged to the budget and held until the last entry is answered, as the sources are
//! what the replicas are checked against.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use bucky_wire::batch::{self, Frame, Meta};
use bucky_wire::verify::{self, Verdict};
use whisper::{WhisperBuf, WhisperData};

use super::batch::{decode_frames, failed, heal_entries, Entries, HealEntries};
use super::offload::check_peer;
use super::{admit, max_encoded_len, unix_now};
use crate::auth::{Grant, Op};
use crate::budget::Charge;
use crate::error::AgentError;
use crate::store::Store;
use crate::wait::Wait;
use crate::AppState;

/// Bytes of frame overhead (name, meta) allowed per entry in the fetched answer, besides the files.
const FRAME_OVERHEAD: u64 = 8 * 1024;

/// A source fetched for an entry: what its replica is checked against.
struct Source {
    data: Bytes,
    etag: Option<String>,
    stat: Option<bucky_wire::MetricStat>,
}

/// The entries of one offload batch: answered at once when they failed before the heal, else from the heal
/// (which reads the replica back) and the check against the source.
pub(super) struct OffloadEntries {
    /// Answers known before the heal (refused, source missing or unreadable).
    answers: Vec<Option<Frame>>,
    /// Per entry, its place among the heal's entries.
    healing: Vec<Option<usize>>,
    heal: HealEntries,
    sources: Vec<Option<Source>>,
    names: Vec<String>,
    /// The time the replicas are checked at (the client's).
    now: i64,
    /// Per entry: healed with the source's values winning, so checked value for value.
    exact: Vec<bool>,
    /// The fetched answer's charge, held as long as the sources are.
    _fetched: Charge,
}

/// The request's header `name`, as text.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Checks the offload's headers and each entry's rights, fetches the sources and heals them; the entries
/// then answer as the replicas are read back. `answer_limit` bounds the files fetched at once.
pub(super) async fn offload_entries(
    state: &AppState,
    headers: &HeaderMap,
    frames: Vec<Frame>,
    grant: Option<Grant>,
    answer_limit: u64,
    body: Charge,
) -> Result<OffloadEntries, AgentError> {
    let server = header_text(headers, batch::OFFLOAD_FROM_HEADER).ok_or_else(|| {
        AgentError::BadRequest(format!(
            "{} missing: name the agent (host:port) to fetch from",
            batch::OFFLOAD_FROM_HEADER
        ))
    })?;
    check_peer(state, server)?;
    let now: i64 = header_text(headers, batch::VERIFY_AT_HEADER)
        .and_then(|v| v.parse().ok())
        .filter(|t| (0..=i64::from(u32::MAX)).contains(t))
        .ok_or_else(|| {
            AgentError::BadRequest(format!(
                "{} must be the time to verify at, in Unix seconds",
                batch::VERIFY_AT_HEADER
            ))
        })?;
    drop(body); // The request's frames hold only names: owned strings from here on.

    let n = frames.len();
    let mut answers: Vec<Option<Frame>> = (0..n).map(|_| None).collect();
    let mut names = Vec::with_capacity(n);
    let mut exact = Vec::with_capacity(n);
    // The entries whose sources are fetched: (entry, source name).
    let mut wanted: Vec<(usize, String)> = Vec::new();
    for (i, frame) in frames.into_iter().enumerate() {
        let source = frame.meta.source.clone().unwrap_or_else(|| frame.name.clone());
        let admitted = admit(grant.as_ref(), Op::Update, &frame.name).and_then(|_| {
            admit(grant.as_ref(), Op::Read, &source).map_err(|e| match e {
                AgentError::Forbidden(why) => AgentError::Forbidden(format!("the source {source}: {why}")),
                other => other,
            })
        });
        match admitted {
            Ok(_) => wanted.push((i, source)),
            Err(e) => answers[i] = Some(failed(frame.name.clone(), &e)),
        }
        exact.push(frame.meta.overwrite);
        names.push(frame.name);
    }

    let mut fetched = state.budget().charge();
    let source_frames = if wanted.is_empty() {
        Vec::new()
    } else {
        let names: Vec<&str> = wanted.iter().map(|(_, s)| s.as_str()).collect();
        let (frames, charge) = fetch(state, server, &names, answer_limit).await?;
        fetched = charge;
        frames
    };

    let mut sources: Vec<Option<Source>> = (0..n).map(|_| None).collect();
    let mut healing: Vec<Option<usize>> = (0..n).map(|_| None).collect();
    let mut heal_frames = Vec::new();
    for ((i, source), answer) in wanted.into_iter().zip(source_frames) {
        let why = match answer.status {
            200 => {
                let meta = Meta {
                    stat: answer.meta.stat.clone(),
                    etag: answer.meta.etag.clone(),
                    overwrite: exact[i],
                    ..Meta::default()
                };
                healing[i] = Some(heal_frames.len());
                heal_frames.push(Frame::new(names[i].clone(), 0, meta, answer.data.clone()));
                sources[i] = Some(Source { data: answer.data, etag: answer.meta.etag, stat: answer.meta.stat });
                continue;
            }
            404 => (404, format!("the source {source} does not exist on {server}")),
            413 => (413, format!("the source {source} was not read: the batch's answer was full; send it again")),
            status => {
                let reason = answer.meta.error.unwrap_or_default();
                (502, format!("fetching {source} from {server}: {status} {reason}"))
            }
        };
        answers[i] = Some(Frame::error(names[i].clone(), why.0, why.1));
    }
    let heal = heal_entries(state, heal_frames, grant, state.config().body_limit, state.budget().charge()).await?;
    Ok(OffloadEntries { answers, healing, heal, sources, names, now, exact, _fetched: fetched })
}

/// Reads `names` from the agent at `server` with one `/batch/read` (the agent's own read-only token), at
/// most `answer_limit` bytes of files: the answer's frames, one per name, and their charge. Any failure of
/// the request as a whole is a 502.
async fn fetch(
    state: &AppState,
    server: &str,
    names: &[&str],
    answer_limit: u64,
) -> Result<(Vec<Frame>, Charge), AgentError> {
    let bad_gateway = |why: String| AgentError::BadGateway(format!("offload: fetching from {server}: {why}"));
    let request: Vec<Frame> = names.iter().map(|n| Frame::new(*n, 0, Meta::default(), Bytes::new())).collect();
    let url =
        reqwest::Url::parse(&format!("http://{server}{}", batch::READ_PATH)).map_err(|e| bad_gateway(e.to_string()))?;
    let mut request = state
        .0
        .client
        .post(url)
        .header(header::CONTENT_TYPE, batch::CONTENT_TYPE)
        .header(header::ACCEPT_ENCODING, "snappy")
        .header(batch::MAX_ANSWER_HEADER, answer_limit.to_string())
        .body(batch::encode(&request));
    if let Some(auth) = &state.config().auth {
        request = request.header(bucky_wire::AUTH_HEADER, auth.peer_token(unix_now()));
    }
    let mut response = request.send().await.map_err(|e| bad_gateway(e.to_string()))?;
    let is_batch = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim() == batch::CONTENT_TYPE);
    if response.status() != StatusCode::OK || !is_batch {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let text = text.lines().next().unwrap_or("").trim().to_owned();
        let hint = if status == StatusCode::NOT_FOUND { " (it takes no batches: not a bucky-agent)" } else { "" };
        return Err(bad_gateway(format!("{status}{hint} {text}")));
    }
    let snappy = response.headers().get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() == b"snappy");
    // The source sends at most `answer_limit` bytes of files, and always its first file (≤ --max-body).
    let limit = state.config().body_limit;
    let bound = answer_limit.saturating_add(limit).saturating_add(FRAME_OVERHEAD * names.len() as u64);
    let max = max_encoded_len(bound, snappy);
    let patience = state.config().memory_wait;
    let mut charge = state.budget().charge();
    let mut data: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| bad_gateway(e.to_string()))? {
        let len = (data.len() + chunk.len()) as u64;
        if len > max {
            return Err(bad_gateway(format!("the answer is longer than the {max} bytes asked for")));
        }
        if len > data.capacity() as u64 {
            let capacity = len.max(data.capacity() as u64 * 2).min(max);
            charge.grow_to(capacity, patience).await?;
            data.reserve_exact(usize::try_from(capacity).unwrap_or(usize::MAX) - data.len());
        }
        data.extend_from_slice(&chunk);
    }
    let (frames, charge) = decode_frames(state, Bytes::from(data), snappy, bound, charge)
        .await
        .map_err(|e| bad_gateway(format!("malformed answer: {e}")))?;
    if frames.len() != names.len() || frames.iter().zip(names).any(|(f, n)| f.name != *n) {
        return Err(bad_gateway(format!("{} answers for {} sources, or other names", frames.len(), names.len())));
    }
    Ok((frames, charge))
}

impl OffloadEntries {
    /// The answer of entry `i` from its heal's answer (the replica read back): the replica checked
    /// against the source, without the file.
    fn checked(&self, i: usize, healed: Frame) -> Frame {
        let name = self.names[i].clone();
        if !healed.is_success() {
            return healed;
        }
        let Some(source) = &self.sources[i] else {
            return Frame::error(name, 500, "offload: the entry has no source");
        };
        let Some(replica_etag) = healed.meta.etag.clone() else {
            return Frame::error(name, 503, "offload: the replica could not be read back; retry");
        };
        let verdict = match verdict(source, &healed, self.now, self.exact[i]) {
            Ok(verdict) => verdict,
            Err(why) => return Frame::error(name, 409, format!("offload: {why}")),
        };
        let meta = Meta {
            stat: source.stat.clone(),
            etag: Some(replica_etag),
            source_etag: source.etag.clone(),
            report: healed.meta.report,
            verified: Some(verdict),
            ..Meta::default()
        };
        Frame::new(name, 200, meta, Bytes::new())
    }
}

/// The replica of a heal answer (left out when byte for byte the source) checked against `source`; `Err`
/// when one of them is no whisper file, or a compressed source's copy is not byte for byte the source.
fn verdict(source: &Source, healed: &Frame, now: i64, exact: bool) -> Result<Verdict, String> {
    let identical = healed.data.is_empty() && source.etag.is_some() && healed.meta.etag == source.etag;
    let source_file = WhisperData::from_bytes(source.data.to_vec()).map_err(|e| format!("the source: {e}"))?;
    let WhisperData::Standard(source_file) = source_file else {
        // go-whisper's compressed files: the copy must be the file itself.
        return match identical || healed.data == source.data {
            true => Ok(Verdict::default()),
            false => Err("the copy of the compressed source differs from it".into()),
        };
    };
    if identical {
        return Ok(Verdict { checked: verify::points_held(&source_file, now), ..Verdict::default() });
    }
    let replica = WhisperBuf::from_bytes(healed.data.to_vec()).map_err(|e| format!("the replica: {e}"))?;
    Ok(match exact {
        true => verify::verify_exact(&source_file, &replica, now),
        false => verify::verify(&source_file, &replica, now),
    })
}

impl Entries for OffloadEntries {
    fn len(&self) -> usize {
        self.answers.len()
    }

    fn serve(&mut self, store: &Store, i: usize) -> Result<Frame, Wait> {
        if let Some(answer) = self.answers[i].take() {
            return Ok(answer);
        }
        let Some(k) = self.healing[i] else {
            return Ok(Frame::error(self.names[i].clone(), 500, "offload: the entry was not healed"));
        };
        let healed = self.heal.serve(store, k)?;
        Ok(self.checked(i, healed))
    }

    fn given_up(&mut self, i: usize, error: &AgentError) -> Frame {
        let name = self.names[i].clone();
        match (self.answers[i].take(), self.healing[i]) {
            (Some(answer), _) => answer,
            // Healed but not read back: not verified.
            (None, Some(_)) | (None, None) => failed(name, error),
        }
    }
}
