//! The access log: one line per request, like buckyd's (remote, method, URI, status, duration), and one
//! warning per request that never got its answer.
//!
//! A request is abandoned when its future is dropped before it answers: its client went away (hyper
//! drops the request when the connection closes) or the shutdown grace was over. A drop guard notes it,
//! with the cause. A client that goes away while it is sending the body is seen by the handler as a
//! body error instead; the body is watched, and that request is logged as abandoned too, whatever the
//! handler answered (nobody will read it).

use std::error::Error as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

use crate::server::{InFlight, Lifecycle};
use crate::AppState;

/// Target of the per-request lines (`RUST_LOG=bucky_agent::access=off` silences them, not the warnings).
const ACCESS: &str = "bucky_agent::access";

/// The access-log middleware; it also registers the request in the in-flight registry (for the watchdog
/// and the state dump) and counts it in the self-metrics.
pub(super) async fn access_log(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let remote =
        request.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| "-".to_owned(), |c| c.0.to_string());
    let in_flight = request.extensions().get::<Arc<Lifecycle>>().map(Lifecycle::request);
    let body_failure = Arc::new(OnceLock::new());
    let (kind, route, detail) = describe(request.method(), request.uri().path());
    let diag = state.diagnostics().clone();
    // `--no-inflight-registry` exists to measure what the registry costs (scripts/bench-agent.sh).
    let op = state.config().inflight_registry.then(|| Arc::new(diag.registry().begin(kind, detail)));
    let request = request.map(|body| {
        Body::new(WatchedBody {
            body,
            failure: Arc::clone(&body_failure),
            metrics: diag.metrics().clone(),
            op: op.clone(),
        })
    });
    let mut pending = Pending {
        method: request.method().clone(),
        uri: request.uri().clone(),
        remote,
        started: Instant::now(),
        in_flight,
        answered: false,
    };
    let response = match &op {
        Some(op) => bucky_diag::scope(Arc::clone(op), next.run(request)).await,
        None => next.run(request).await,
    };
    pending.answered = true;
    let (method, uri, remote) = (&pending.method, &pending.uri, &pending.remote);
    let status = response.status().as_u16();
    diag.metrics().incr(&format!("requests.{route}.{status}"));
    if let Some(op) = &op {
        op.phase(bucky_diag::phase::WRITING_RESPONSE);
    }
    let response = response.map(|body| Body::new(CountedBody { body, metrics: diag.metrics().clone(), _op: op }));
    let ms = pending.started.elapsed().as_secs_f64() * 1e3;
    if let Some(failure) = body_failure.get() {
        tracing::warn!(%remote, %method, %uri, status, ms, "request abandoned by the client: {failure}");
    } else {
        tracing::info!(target: ACCESS, %remote, %method, %uri, status, ms, "request");
    }
    response
}

/// A request not answered yet; logged as abandoned if dropped so.
struct Pending {
    method: Method,
    uri: Uri,
    remote: String,
    started: Instant,
    in_flight: Option<InFlight>,
    answered: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let cause = if self.in_flight.as_ref().is_some_and(InFlight::cancelling) {
            "cancelled at shutdown"
        } else {
            "abandoned by the client"
        };
        let (method, uri, remote) = (&self.method, &self.uri, &self.remote);
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
        tracing::warn!(%remote, %method, %uri, ms, "request {cause}");
    }
}

/// `(registry kind, self-metrics route, detail)` of a request: `POST /metrics/{name}`, `post_metric`, the
/// name; routes without a name are their path (`GET /metrics`, `get_list`).
fn describe(method: &Method, path: &str) -> (String, String, String) {
    let verb = method.as_str().to_ascii_lowercase();
    if let Some(name) = path.strip_prefix("/metrics/") {
        return (format!("{method} /metrics/{{name}}"), format!("{verb}_metric"), name.to_owned());
    }
    let route = match path {
        "/metrics" => "list",
        "/hashring" => "hashring",
        bucky_wire::batch::READ_PATH => "batch_read",
        bucky_wire::batch::HEAL_PATH => "batch_heal",
        bucky_wire::batch::DELETE_PATH => "batch_delete",
        "/debug/state" => "debug_state",
        _ => "other",
    };
    (format!("{method} {path}"), format!("{verb}_{route}"), String::new())
}

/// A request body that notes how it failed when its client went away mid-body, counts its bytes
/// (`bytes_in`) and marks its request as reading it.
struct WatchedBody {
    body: Body,
    failure: Arc<OnceLock<String>>,
    metrics: bucky_diag::Metrics,
    op: Option<Arc<bucky_diag::Op>>,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                if let Some(op) = &self.op {
                    op.phase(bucky_diag::phase::READING_BODY);
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.metrics.add("bytes_in", data.len() as f64);
                }
            }
            _ => {}
        }
        if let Poll::Ready(Some(Err(e))) = &polled {
            if let Some(cause) = client_went_away(e) {
                let _ = self.failure.set(cause);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that counts its bytes (`bytes_out`) and keeps its request registered (phase
/// "writing response") until it is sent or dropped: a client that stops reading shows up in the dump.
struct CountedBody {
    body: Body,
    metrics: bucky_diag::Metrics,
    _op: Option<Arc<bucky_diag::Op>>,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.metrics.add("bytes_out", data.len() as f64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// How the client went away, if a body error says it did (the connection was closed or reset before
/// the body was complete), as opposed to a malformed body.
fn client_went_away(error: &axum::Error) -> Option<String> {
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::UnexpectedEof => Some("the connection closed before the body was complete".to_owned()),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                    Some(format!("the connection broke before the body was complete: {io}"))
                }
                _ => None,
            };
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_closed() {
                return Some("the connection closed before the body was complete".to_owned());
            }
        }
        source = e.source();
    }
    None
}
