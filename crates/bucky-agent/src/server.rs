//! The HTTP server under [`crate::serve`]: the listening socket, the accept loop, one hyper HTTP/1
//! connection per client, and shutdown within a deadline.
//!
//! - **Backlog**: [`bind_listener`] listens with a backlog of [`LISTEN_BACKLOG`] (std and tokio use 128,
//!   which makes a burst of connects wait for SYN retries, a second or more each).
//! - **Accept errors** (out of file descriptors, mostly) are logged once per burst with their cause, and
//!   the loop pauses a little and goes on: it never exits on them ([`accept`]).
//! - **Timeouts**: a request's headers must arrive within `--header-timeout`, a keep-alive connection may
//!   wait `--idle-timeout` for its next request ([`timeouts`]).
//! - **Shutdown**: when the shutdown future resolves the listener is closed (new connections are refused),
//!   idle connections are closed, and the requests in flight may finish within `--shutdown-grace`. Then
//!   the connections left are dropped, which cancels their requests (the access log names each one), and
//!   the disk operations already running are given [`DISK_DRAIN`] to finish: a create or heal runs to its
//!   end on the blocking pool whether or not its request is still there, so nothing is left half-written.

pub(crate) mod accept;
pub(crate) mod timeouts;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;

use self::accept::AcceptErrors;
use self::timeouts::{Activity, TimedIo, TrackedBody};

/// Listen backlog of [`bind_listener`]: connections the kernel completes before they are accepted.
pub const LISTEN_BACKLOG: u32 = 1024;

/// After the grace, how long the disk operations already running may take to finish.
pub(crate) const DISK_DRAIN: Duration = Duration::from_secs(5);

/// Binds `addr` (`IP:PORT`, or `HOST:PORT` resolved first) with SO_REUSEADDR and a listen backlog of
/// [`LISTEN_BACKLOG`]; the kernel caps it at `net.core.somaxconn` (see [`warn_if_backlog_capped`]).
pub async fn bind_listener(addr: &str) -> io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match bind_one(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr} has no address"))))
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Warns when `net.core.somaxconn` caps the listen backlog below [`LISTEN_BACKLOG`] (blocking: reads
/// procfs; call before the runtime starts).
pub fn warn_if_backlog_capped() {
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/core/somaxconn") else {
        return;
    };
    if let Ok(somaxconn) = text.trim().parse::<u32>() {
        if somaxconn < LISTEN_BACKLOG {
            tracing::warn!(
                somaxconn,
                "net.core.somaxconn is {somaxconn}: the listen backlog is capped there instead of {LISTEN_BACKLOG}, \
                 and bursts of connections wait for SYN retries; raise it (sysctl -w net.core.somaxconn={LISTEN_BACKLOG})"
            );
        }
    }
}

/// What a request's access log needs to know of the server: how many requests are in flight, and
/// whether the server is cancelling them (so a dropped request was cancelled, not abandoned by its
/// client). Every request served by [`serve_router`] carries an `Arc<Lifecycle>` extension.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    cancelling: AtomicBool,
    in_flight: AtomicUsize,
}

impl Lifecycle {
    /// Counts a request in flight until the returned guard drops.
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// Whether the shutdown grace is over and the requests left are being cancelled.
    pub(crate) fn cancelling(&self) -> bool {
        self.cancelling.load(Ordering::Acquire)
    }
}

/// One request in flight (see [`Lifecycle::request`]).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Lifecycle>);

impl InFlight {
    /// Whether the server is cancelling the requests left after the shutdown grace.
    pub(crate) fn cancelling(&self) -> bool {
        self.0.cancelling()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The server's settings (from the [`Config`](crate::Config)).
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) shutdown_grace: Duration,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// The disk operation slots of the state (`--io-concurrency`): all free means no disk work is running.
#[derive(Debug)]
pub(crate) struct DiskSlots {
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) total: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down as the module says.
pub(crate) async fn serve_router(
    listener: TcpListener,
    app: Router,
    options: Options,
    disk: DiskSlots,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let lifecycle = Arc::new(Lifecycle::default());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut errors = AcceptErrors::default();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    errors.accepted(Instant::now());
                    let serve = connection(stream, remote, app.clone(), Arc::clone(&lifecycle), &options, &graceful);
                    connections.spawn(serve);
                }
                Err(e) if accept::is_connection_error(&e) => {
                    tracing::debug!(error = %e, "a connection failed before it was accepted");
                }
                Err(e) => {
                    let pause = errors.failed(&e, Instant::now());
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
    drop(listener);
    while connections.try_join_next().is_some() {}
    let grace = options.shutdown_grace;
    tracing::info!(
        connections = connections.len(),
        requests = lifecycle.in_flight.load(Ordering::Acquire),
        "shutting down: no new connections; finishing the requests in flight within the grace of {}",
        seconds(grace)
    );
    let drained = tokio::time::timeout(grace, async {
        graceful.shutdown().await;
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        lifecycle.cancelling.store(true, Ordering::Release);
        let requests = lifecycle.in_flight.load(Ordering::Acquire);
        tracing::warn!(
            requests,
            connections = connections.len(),
            "shutdown grace of {} over: {} cancelled ({} closed)",
            seconds(grace),
            plural(requests, "request"),
            plural(connections.len(), "connection")
        );
        // Dropping a connection drops its request's future: the access log notes each cancellation.
        connections.shutdown().await;
    }
    wait_for_disk(&disk).await;
    Ok(())
}

/// Serves one accepted connection with hyper, under the header and idle timeouts, watched by `graceful`.
fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    lifecycle: Arc<Lifecycle>,
    options: &Options,
    graceful: &GracefulShutdown,
) -> impl Future<Output = ()> + Send + 'static {
    // As Go does for every TCP connection: answers are written whole, no need to wait for an ACK.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%remote, error = %e, "cannot set TCP_NODELAY");
    }
    let activity = Arc::new(Activity::default());
    let io = TimedIo::new(stream, Arc::clone(&activity), options.header_timeout, options.idle_timeout);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        activity.request_started();
        // What axum's `into_make_service_with_connect_info` would add, and the server's lifecycle.
        request.extensions_mut().insert(ConnectInfo(remote));
        request.extensions_mut().insert(Arc::clone(&lifecycle));
        let call = app.clone().oneshot(request);
        let activity = Arc::clone(&activity);
        async move {
            let response = call.await?;
            Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, activity)))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Headers are timed by `TimedIo` (hyper's own timeout would also close idle keep-alive connections).
    builder.header_read_timeout(None);
    let watched = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
    async move {
        if let Err(e) = watched.await {
            tracing::debug!(%remote, error = %e, "connection closed");
        }
    }
}

/// Waits, at most [`DISK_DRAIN`], for the disk operations still running (those of cancelled requests
/// run to their end).
async fn wait_for_disk(disk: &DiskSlots) {
    let running = disk.total.saturating_sub(disk.slots.available_permits());
    if running == 0 {
        return;
    }
    tracing::info!(
        running,
        "waiting up to {} for {} to finish",
        seconds(DISK_DRAIN),
        plural(running, "disk operation")
    );
    let all = u32::try_from(disk.total).unwrap_or(u32::MAX);
    if tokio::time::timeout(DISK_DRAIN, disk.slots.acquire_many(all)).await.is_err() {
        let running = disk.total.saturating_sub(disk.slots.available_permits());
        tracing::warn!(
            running,
            "{} still running after {}: exiting anyway (a new file is published only once complete; \
             its temp file is removed by a later scan)",
            plural(running, "disk operation"),
            seconds(DISK_DRAIN)
        );
    }
}

fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests;
