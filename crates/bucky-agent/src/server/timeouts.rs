//! Header and idle timeouts of one HTTP/1 connection, kept by its socket.
//!
//! hyper's own `header_read_timeout` runs from the end of one response to the end of the next request's
//! headers, so it is also the keep-alive idle timeout: a 10 s header bound would close pooled connections
//! after 10 s of quiet and make clients race the close. Here the two are separate, as in Go's `net/http`
//! (`ReadHeaderTimeout`, `IdleTimeout`): between requests the connection may stay quiet for the idle
//! timeout; from the first byte of a request (or from the connection's start) its headers must arrive
//! within the header timeout. While a request is being served neither applies (`--request-timeout` does).
//!
//! The socket cannot see where requests start and end, so the service tells it through [`Activity`]:
//! [`Activity::request_started`] when hyper hands it a request (headers complete), and
//! [`Activity::response_done`] when the response body has been sent or dropped ([`TrackedBody`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Whether a connection is serving a request, shared by its service and its socket.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    busy: AtomicBool,
    /// Bumped at every end of a response: the socket restarts its idle clock when it sees a new value.
    responses: AtomicU64,
    /// The task of a read polled while busy: it must poll again when the response is done, to start the
    /// idle clock (hyper may poll for the next request before it drops the response body).
    reader: AtomicWaker,
}

impl Activity {
    /// The connection received a request's headers: no header or idle timeout until it is answered.
    pub(crate) fn request_started(&self) {
        self.busy.store(true, Ordering::Release);
    }

    /// The response is sent (or abandoned): the connection is idle from now on.
    pub(crate) fn response_done(&self) {
        self.responses.fetch_add(1, Ordering::AcqRel);
        self.busy.store(false, Ordering::Release);
        self.reader.wake();
    }
}

/// What the socket is waiting for while no request is being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The rest of a request's headers (bounded by the header timeout).
    Headers,
    /// The first byte of the next request (bounded by the idle timeout).
    NextRequest,
}

/// A socket that fails its reads with `TimedOut` once the header or idle timeout is over, which makes
/// hyper close the connection.
#[derive(Debug)]
pub(crate) struct TimedIo<T> {
    io: T,
    activity: Arc<Activity>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// The value of `activity.responses` the current wait started from.
    responses: u64,
    wait: Wait,
    deadline: Pin<Box<Sleep>>,
}

impl<T> TimedIo<T> {
    /// Wraps a just-accepted socket: its first request's headers are due within `header_timeout`.
    pub(crate) fn new(io: T, activity: Arc<Activity>, header_timeout: Duration, idle_timeout: Duration) -> Self {
        let responses = activity.responses.load(Ordering::Acquire);
        TimedIo {
            io,
            activity,
            header_timeout,
            idle_timeout,
            responses,
            wait: Wait::Headers,
            deadline: Box::pin(tokio::time::sleep(header_timeout)),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.activity.busy.load(Ordering::Acquire) {
            this.activity.reader.register(cx.waker());
            // Done meanwhile: go on below (the idle clock starts now) rather than miss the wake-up.
            if this.activity.busy.load(Ordering::Acquire) {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
        }
        let responses = this.activity.responses.load(Ordering::Acquire);
        if responses != this.responses {
            this.responses = responses;
            this.wait = Wait::NextRequest;
            this.deadline.as_mut().reset(Instant::now() + this.idle_timeout);
        }
        let filled = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.wait == Wait::NextRequest && buf.filled().len() > filled {
                    this.wait = Wait::Headers;
                    this.deadline.as_mut().reset(Instant::now() + this.header_timeout);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    match this.wait {
                        Wait::Headers => "request headers not received within --header-timeout",
                        Wait::NextRequest => "keep-alive connection idle for --idle-timeout",
                    },
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that tells its connection's [`Activity`] when it is over: at its end, or when hyper
/// drops it (sent, or the connection closed).
#[derive(Debug)]
pub(crate) struct TrackedBody {
    body: axum::body::Body,
    activity: Option<Arc<Activity>>,
}

impl TrackedBody {
    pub(crate) fn new(body: axum::body::Body, activity: Arc<Activity>) -> TrackedBody {
        TrackedBody { body, activity: Some(activity) }
    }

    fn done(&mut self) {
        if let Some(activity) = self.activity.take() {
            activity.response_done();
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.done();
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = polled {
            self.done();
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
