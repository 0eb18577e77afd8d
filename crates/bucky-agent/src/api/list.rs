//! `GET|POST /metrics`: the metric list, streamed as a JSON array.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use regex::Regex;

use super::{authenticate, read_body, text};
use crate::auth::{Grant, Op};
use crate::cache::{ListStatus, MetricCache};
use crate::error::AgentError;
use crate::AppState;

/// Names fetched from the cache per lock hold.
const PAGE: usize = 4096;
/// Bytes buffered before a chunk is sent.
const CHUNK: usize = 64 * 1024;
/// buckyd's cap on a listing's form body (160 MiB).
const FORM_LIMIT: u64 = 10 << 24;

/// The listing's filters: `regex`, the token's namespaces.
struct Filter {
    regex: Option<Regex>,
    grant: Option<Grant>,
}

impl Filter {
    fn keeps(&self, name: &str) -> bool {
        self.regex.as_ref().is_none_or(|r| r.is_match(name)) && self.grant.as_ref().is_none_or(|g| g.covers(name))
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AgentError> {
    let grant = authenticate(&state, &headers)?;
    if let Some(grant) = &grant {
        if !grant.allows(Op::Read) {
            return Err(AgentError::Forbidden("forbidden: token doesn't have read permission".into()));
        }
    }
    // Go's FormValue: body values first, then the query string.
    let mut params: HashMap<String, String> = HashMap::new();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/x-www-form-urlencoded"));
    if method == Method::POST && is_form {
        let mut charge = state.budget().charge();
        let form = read_body(&state, &headers, body, FORM_LIMIT, &mut charge).await?;
        for (k, v) in form_urlencoded::parse(&form) {
            params.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        params.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    let param = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let regex = param("regex")
        .map(|r| Regex::new(r).map_err(|e| AgentError::BadRequest(format!("invalid regex: {e}"))))
        .transpose()?;
    let wanted = param("list").map(str::to_owned);
    let force = param("force").is_some();
    drop(params);

    let cache = Arc::clone(state.cache());
    if cache.request(force) == ListStatus::Building {
        return Ok(text(StatusCode::ACCEPTED, bucky_wire::CACHE_UPDATE_IN_PROGRESS));
    }
    let filter = Filter { regex, grant };
    let body = match wanted {
        // An intersection is at most as long as the list the client sent (up to 160 MiB of JSON): computed
        // off the async runtime, answered in one piece.
        Some(wanted) => {
            let intersection = tokio::task::spawn_blocking(move || intersect(&wanted, &filter, &cache))
                .await
                .map_err(|e| AgentError::internal("list intersection", e))??;
            Body::from(intersection)
        }
        None => {
            let lister = Lister { cache, filter, cursor: None, started: false, first: true, done: false };
            Body::from_stream(futures_util::stream::unfold(lister, |mut lister| async move {
                lister.next_chunk().map(|chunk| (Ok::<_, Infallible>(chunk), lister))
            }))
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// The JSON array of the names of the JSON array `wanted` that are listed and pass `filter`, sorted.
fn intersect(wanted: &str, filter: &Filter, cache: &MetricCache) -> Result<Vec<u8>, AgentError> {
    let mut wanted: Vec<String> =
        serde_json::from_str(wanted).map_err(|e| AgentError::BadRequest(format!("Error decoding list: {e}")))?;
    wanted.sort_unstable();
    wanted.dedup();
    wanted.retain(|n| filter.keeps(n) && cache.contains(n));
    serde_json::to_vec(&wanted).map_err(|e| AgentError::internal("encode list", e))
}

/// Pages through the live list and renders JSON chunks.
struct Lister {
    cache: Arc<MetricCache>,
    filter: Filter,
    cursor: Option<Box<str>>,
    started: bool,
    first: bool,
    done: bool,
}

impl Lister {
    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut out = Vec::with_capacity(CHUNK + 4096);
        if !self.started {
            self.started = true;
            out.push(b'[');
        }
        loop {
            let (filter, first) = (&self.filter, &mut self.first);
            let cursor = self.cache.visit_page(self.cursor.as_deref(), PAGE, |name| {
                if filter.keeps(name) {
                    if !*first {
                        out.push(b',');
                    }
                    *first = false;
                    push_json_string(&mut out, name);
                }
            });
            let Some(cursor) = cursor else {
                out.push(b']');
                self.done = true;
                return Some(Bytes::from(out));
            };
            self.cursor = Some(cursor);
            if out.len() >= CHUNK {
                return Some(Bytes::from(out));
            }
        }
    }
}

/// Appends `name` as a JSON string. Metric names hold no control characters, so only `"` and `\` ever
/// need escaping; those rare names go through serde_json.
fn push_json_string(out: &mut Vec<u8>, name: &str) {
    if name.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        serde_json::to_writer(out, name).expect("writing JSON to a Vec cannot fail");
    } else {
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::push_json_string;

    #[test]
    fn json_strings_are_escaped_when_needed() {
        for name in ["plain.name", "quo\"te", "back\\slash", "ünï.cødé"] {
            let mut out = Vec::new();
            push_json_string(&mut out, name);
            assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), name);
        }
    }
}
