//! [`AgentError`]: every way a request can fail, and the HTTP answer for each.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A failed request. Client faults (4xx) are answered with the reason and not logged as errors; internal
/// faults (5xx) are logged with their detail. Bodies are plain text ending in a newline, as Go's
/// `http.Error` writes them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// 400: malformed name, header, body or parameter.
    #[error("{0}")]
    BadRequest(String),
    /// 401: authentication is on and the request has no valid token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token does not allow this operation on this metric.
    #[error("{0}")]
    Forbidden(String),
    /// 404: the metric does not exist (buckyd's exact text).
    #[error("Metric not found.")]
    NotFound,
    /// 404: no such route (Go's `http.NotFound` text).
    #[error("404 page not found")]
    NotFoundPath,
    /// 409: the file on disk is in a state the operation cannot work with (e.g. a corrupt destination).
    #[error("{0}")]
    Conflict(String),
    /// 422: the operation cannot be done on this kind of file (a fill into or from a go-whisper compressed
    /// file); no retry helps.
    #[error("{0}")]
    Unprocessable(String),
    /// 412: `If-Match` did not match the file's current ETag.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 408: the request body stopped arriving, or arrives too slowly (`--body-timeout`, `--min-body-rate`).
    #[error("{0}")]
    RequestTimeout(String),
    /// 413: the body is larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: an unknown `Content-Encoding`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: the whisper lock could not be taken in time (carbon-cache busy); retry later.
    #[error("{0}")]
    Unavailable(String),
    /// 502: a peer this agent fetched from failed (an offload's source agent).
    #[error("{0}")]
    BadGateway(String),
    /// An operation that could not go on now (a held flock, a full memory budget, a file being written):
    /// turned into a retry or the final answer by a [`crate::wait::Waiter`]; answered as 503 if it ever
    /// reaches a client as it is.
    #[error("{0}; retry")]
    Wait(crate::wait::Wait),
    /// 507: the device holding the store has no space left (`ENOSPC`) or the quota is used up (`EDQUOT`).
    /// Nothing was changed (a new file's temp copy is removed); retrying will not help until space is freed.
    #[error("{0}")]
    InsufficientStorage(String),
    /// 500: something broke on our side. The message is the context; the error that broke is its source
    /// (the answer's text prints both, see [`AgentError::status_and_message`]).
    #[error("{context}")]
    Internal {
        /// What the agent was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl AgentError {
    /// An internal error with context, keeping the error as its source.
    pub fn internal(
        context: impl Into<String>,
        err: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> AgentError {
        AgentError::Internal { context: context.into(), source: err.into() }
    }

    /// 409: the destination is not a valid whisper file (`err` names it and why); the answer names the fixes.
    pub(crate) fn corrupt_file(err: impl std::fmt::Display) -> AgentError {
        AgentError::Conflict(format!("{err}; replace it with PUT, or move it aside and POST again"))
    }

    /// The text of the answer: the message, and for an internal fault its cause after a colon.
    fn answer_text(&self) -> String {
        match self {
            AgentError::Internal { context, source } => format!("{context}: {source}"),
            other => other.to_string(),
        }
    }

    /// The status code of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            AgentError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AgentError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AgentError::Forbidden(_) => StatusCode::FORBIDDEN,
            AgentError::NotFound | AgentError::NotFoundPath => StatusCode::NOT_FOUND,
            AgentError::Conflict(_) => StatusCode::CONFLICT,
            AgentError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            AgentError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AgentError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            AgentError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AgentError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AgentError::Unavailable(_) | AgentError::Wait(_) => StatusCode::SERVICE_UNAVAILABLE,
            AgentError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            AgentError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            AgentError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The status and the text (without the trailing newline) that answer this error, as an HTTP answer or
    /// as one entry of a batch; logs it as an answer is logged (internal faults as errors, client faults at
    /// debug level).
    pub(crate) fn status_and_message(&self) -> (StatusCode, String) {
        let status = self.status();
        if status.is_server_error() {
            match self {
                AgentError::Unavailable(_) | AgentError::Wait(_) => {
                    tracing::warn!(reason = %self, "request not served");
                }
                AgentError::InsufficientStorage(reason) => {
                    FULL_LOG.note(reason);
                }
                _ => tracing::error!(error = %self.answer_text(), "internal error"),
            }
        } else {
            tracing::debug!(%status, reason = %self, "request refused");
        }
        (status, self.answer_text())
    }
}

/// 507s less than this apart belong to one burst (a rebalance into a full node sends hundreds a second).
const FULL_BURST_GAP: Duration = Duration::from_secs(60);

/// The log of 507s: a warning at the start of each burst, the rest at debug level, so that a full disk
/// fills neither the log nor the disk holding it.
static FULL_LOG: FullLog = FullLog { last: Mutex::new(None) };

struct FullLog {
    /// When the last 507 was answered, and how many the current burst has had.
    last: Mutex<Option<(Instant, u64)>>,
}

impl FullLog {
    /// Logs a 507; returns whether it started a burst (and was logged as a warning).
    fn note(&self, reason: &str) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let (burst_start, refused) = match *last {
            Some((at, refused)) if now.duration_since(at) < FULL_BURST_GAP => (false, refused + 1),
            _ => (true, 1),
        };
        *last = Some((now, refused));
        drop(last);
        if burst_start {
            tracing::warn!(
                %reason,
                "device full: writes are answered 507 Insufficient Storage (logged once until none for {} s)",
                FULL_BURST_GAP.as_secs()
            );
        } else {
            tracing::debug!(%reason, refused, "507 Insufficient Storage");
        }
        burst_start
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let (status, message) = self.status_and_message();
        let mut response = (status, format!("{message}\n")).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts of full devices are checked in `store::error`; here, the log of a burst of them.
    #[test]
    fn a_full_device_is_warned_once_per_burst() {
        let log = FullLog { last: Mutex::new(None) };
        assert!(log.note("full"), "the first 507 starts a burst");
        assert!(!log.note("full"), "the next ones are part of it");
        *log.last.lock().unwrap() = Some((Instant::now() - FULL_BURST_GAP, 2));
        assert!(log.note("full"), "after a quiet gap, a new burst");
    }

    /// An internal error keeps what broke as its source, and answers with both, as before.
    #[test]
    fn an_internal_error_keeps_its_source() {
        let err = AgentError::internal("blocking task", std::io::Error::other("the task panicked"));
        let source = std::error::Error::source(&err).expect("the source is kept");
        assert_eq!(source.to_string(), "the task panicked");
        assert_eq!(err.to_string(), "blocking task");
        assert_eq!(err.status_and_message().1, "blocking task: the task panicked");
    }
}
