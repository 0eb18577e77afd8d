//! `bucky-agent`: the per-node daemon of a consistent-hashing Graphite cluster, wire-compatible with buckyd
//! (jjneely/buckytools and the go-graphite fork), that never loses or corrupts a whisper file.
//!
//! # API (identical to buckyd, plus bucky's batches)
//!
//! | route | answer |
//! |---|---|
//! | `GET /hashring` | `{"Name","Nodes":[{"Server","Port","Instance"}],"Algo","Replicas","Router"}`, plus `"Diverse":true` when set (Go bucky ignores both) |
//! | `GET\|POST /metrics` | JSON array of names, streamed; params `regex` (RE2 syntax), `list` (JSON array to intersect), `force`; **202** `Cache update in progress.` while the list is being built |
//! | `HEAD /metrics/<name>` | 200 + `X-Metric-Stat`, or 404 |
//! | `GET /metrics/<name>` | the file read under a shared flock, `X-Metric-Stat`, `ETag`; snappy framed with `Accept-Encoding: snappy` |
//! | `POST /metrics/<name>` | heal: create durably, or fill the empty slots of the existing file under its exclusive flock (concurrent heals share their flushes: group commit); `?fetch_offload=true` with `server`, `metric`, `no_encoding` fetches the source from a ring member first; with `X-Bucky-Read-Back: 1` the answer is the replica read back from disk, the report in `X-Bucky-Heal-Report` |
//! | `PUT /metrics/<name>` | replace, never delete-then-write: in place (same layout) or temp + rename; honours `If-Match` |
//! | `DELETE /metrics/<name>` | 200, 404 `Metric not found.`, 412 when `If-Match` does not match |
//! | `POST /batch/read` | bucky extension: many `GET`s in one request ([`bucky_wire::batch`] frames in and out); per entry 200 + `Stat`, `ETag`, the file, or its own error (404, 400 invalid name, 403, 503, 413 once the answer's files reach `--max-body`) |
//! | `POST /batch/heal` | bucky extension: many `POST`s with `X-Bucky-Read-Back: 1`, healed with one group commit; per entry 200 + `Report` and the replica read back (`Stat`, `ETag`, the file, which is left out when its `ETag` is the one the entry gave; only the report if the read-back fails), or its own error (400 invalid name or upload, 403, 409, 503) |
//! | `POST /batch/delete` | bucky extension: many `DELETE`s, each with an optional `IfMatch`; per entry 200, or its own error (404, 412, 400, 403) |
//! | `POST /batch/offload` | bucky extension (`bucky rebalance --offload`): fetches the entries' sources from the ring member named by `X-Bucky-Offload-From` (one `/batch/read`, the agent's read-only token), heals each, reads it back and checks it against the source fetched at `X-Bucky-Verify-At`; per entry 200 + `Report`, `Verified`, `SourceETag` (no file), or its own error (404 no source, 413 not read this time, 409, 403); 400 when the source is not a ring member's agent, 502 when it cannot be fetched from |
//!
//! Wrong methods are 400 (as buckyd). A batch answers 200 with one frame per request frame, in order, the
//! same status and message as the single-metric route, streamed a chunk at a time; the whole request fails
//! (401 token, 403 a token without the route's right, 400 `Content-Type`, malformed or empty body, 413
//! over `--max-body` once decoded) before anything changes. Every byte a request holds is charged to one
//! memory budget (`--request-memory`), and waits for a flock or for memory hold no I/O slot (see the
//! README's "Limits and protections"). The body
//! may be snappy framed (`Content-Encoding`/`Accept-Encoding: snappy`). Client mistakes are 4xx with the reason; nothing on disk changes
//! when a request fails, and nothing outside the prefix is ever touched (names go through
//! [`bucky_wire::MetricName`]). Lock timeouts are 503 with `Retry-After`.
//!
//! # Shape
//!
//! [`app`] builds the axum [`Router`] (tests drive it with `oneshot`); [`serve`] runs it on a listener
//! (from [`bind_listener`]: a deep backlog) until a shutdown future resolves, then lets the requests in
//! flight finish within `--shutdown-grace` and cancels the rest; [`run`] is the binary. Disk work, flocks
//! and the directory scan run on the blocking pool, at most `--io-concurrency` at a time; an operation that
//! would wait (a held flock, a full memory budget) gives its slot back and waits in async code.
//!
//! ```no_run
//! use bucky_agent::{AppState, Config};
//! use hashring::{Hash, Node, RingSpec};
//!
//! # async fn example() -> anyhow::Result<()> {
//! let ring = RingSpec::new(vec![Node::parse("graphite1:2003")?], Hash::CarbonCh).build()?;
//! let state = AppState::new(Config::new("graphite1", ring, "/opt/graphite/storage/whisper"))?;
//! let listener = bucky_agent::bind_listener("0.0.0.0:4242").await?;
//! bucky_agent::serve(listener, state, bucky_agent::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod api;
pub mod auth;
mod budget;
pub mod cache;
pub mod cli;
pub mod config;
mod error;
pub mod etag;
mod flc;
mod names;
mod server;
pub mod store;
#[cfg(test)]
mod testutil;
mod wait;
pub mod walk;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use bucky_wire::{RingInfo, RingNode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use api::app;
pub use cli::{run, Cli};
pub use config::Config;
pub use error::AgentError;
pub use server::{bind_listener, warn_if_backlog_capped, LISTEN_BACKLOG};
pub use wait::Wait;

use crate::budget::Budget;
use crate::cache::MetricCache;
use crate::store::Store;
use crate::wait::Waiter;

/// The shared state of one agent: config, store, metric list, concurrency bound and HTTP client.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    config: Config,
    ring_info: RingInfo,
    store: Store,
    cache: Arc<MetricCache>,
    io: Arc<Semaphore>,
    /// What requests may hold in memory together (`--request-memory`).
    budget: Budget,
    client: reqwest::Client,
    /// In-flight registry, watchdog, state dump, self-metrics.
    diag: bucky_diag::Diagnostics,
}

impl AppState {
    /// The state for `config` (builds the HTTP client used for offload fetches).
    pub fn new(config: Config) -> anyhow::Result<AppState> {
        let ring_info = RingInfo {
            name: config.node.clone(),
            nodes: config
                .ring
                .nodes()
                .iter()
                .map(|n| RingNode {
                    server: n.server.clone(),
                    port: n.port.unwrap_or(0),
                    instance: n.instance.clone().unwrap_or_default(),
                })
                .collect(),
            algo: config::buckyd_algo(config.ring.hash()).to_owned(),
            replicas: u32::try_from(config.ring.replicas()).unwrap_or(u32::MAX),
            router: Some(config.ring.router().name().to_owned()),
            diverse: config.ring.diverse(),
        };
        let budget = Budget::new(config.request_memory);
        // The store reports what it would wait for instead of waiting in an I/O slot (see `wait`).
        let store = Store::new(config.prefix.clone(), config.store.clone()).reporting_waits(budget.clone());
        let cache = MetricCache::with_file_list_cache(
            config.prefix.clone(),
            config.cache_lifetime,
            config.scan_threads,
            config.file_list_cache.clone(),
        );
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let io = Arc::new(Semaphore::new(config.io_concurrency.max(1)));
        // Threads start only in `run` (`Diagnostics::start`): tests build states freely.
        let diag = bucky_diag::Diagnostics::new(config.diag.clone())?;
        cache.set_registry(diag.registry().clone());
        store.set_registry(diag.registry());
        Ok(AppState(Arc::new(Inner { config, ring_info, store, cache, io, budget, client, diag })))
    }

    /// The agent's configuration.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// The metric list.
    pub fn cache(&self) -> &Arc<MetricCache> {
        &self.0.cache
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The daemon's diagnostics: in-flight registry, watchdog, state dump, self-metrics.
    pub fn diagnostics(&self) -> &bucky_diag::Diagnostics {
        &self.0.diag
    }

    /// The memory budget of requests.
    pub(crate) fn budget(&self) -> &Budget {
        &self.0.budget
    }

    /// A new waiter for one request (or one batch): `--lock-timeout` and `--memory-wait`.
    pub(crate) fn waiter(&self) -> Waiter {
        Waiter::new(self.config().store.lock_timeout, self.config().memory_wait, self.0.budget.clone())
            .counting_in(self.0.diag.metrics().clone())
    }

    /// Runs `f` on the blocking pool once an I/O slot is free, and again each time it reports a [`Wait`]
    /// (with its slot given back meanwhile: see [`wait`]) until it is done or its waiter gives up. A try
    /// that started runs to completion even if the request is abandoned; the waits between tries end with
    /// the request.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, AgentError>
    where
        T: Send + 'static,
        F: FnMut(&Store) -> Result<T, AgentError> + Send + 'static,
    {
        let mut waiter = self.waiter();
        let mut f = f;
        // The tries after a wait are part of that wait: they leave the operation's phase ("waiting for
        // flock" since the first try) alone, so the watchdog sees how long it has really waited.
        let mut waiting = false;
        loop {
            let (given_back, result) = self.blocking_once(f, !waiting).await?;
            f = given_back;
            match result {
                Err(AgentError::Wait(wait)) => {
                    waiting = true;
                    waiter.wait(&wait).await?
                }
                other => return other,
            }
        }
    }

    /// One try of `f` in an I/O slot; gives `f` back for the next.
    async fn blocking_once<T, F>(&self, mut f: F, mark_phases: bool) -> Result<(F, Result<T, AgentError>), AgentError>
    where
        T: Send + 'static,
        F: FnMut(&Store) -> Result<T, AgentError> + Send + 'static,
    {
        let op = if mark_phases { bucky_diag::current() } else { None };
        self.run_in_slot(op, move |store| {
            let result = f(store);
            (f, result)
        })
        .await
    }

    /// Runs `f` once on the blocking pool, in an I/O slot. The slot stays taken until `f` returns, even if
    /// the request is abandoned meanwhile (a started operation always runs to completion).
    pub(crate) async fn in_slot<T, F>(&self, f: F) -> Result<T, AgentError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> T + Send + 'static,
    {
        self.run_in_slot(bucky_diag::current(), f).await
    }

    /// [`AppState::in_slot`], marking the phases of `op` (waiting for a slot, disk work) when given.
    async fn run_in_slot<T, F>(&self, op: Option<Arc<bucky_diag::Op>>, f: F) -> Result<T, AgentError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> T + Send + 'static,
    {
        if let Some(op) = &op {
            op.phase(bucky_diag::phase::WAITING_FOR_DISK_SLOT);
        }
        let permit = Arc::clone(&self.0.io).acquire_owned().await.map_err(|e| AgentError::internal("I/O slots", e))?;
        let state = self.clone();
        let blocking_op = op.clone();
        let done = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if let Some(op) = &blocking_op {
                op.phase(bucky_diag::phase::DISK);
            }
            // The store marks the flocks it takes and the group commit it waits for on this op.
            let _scope = bucky_diag::on_this_thread(blocking_op);
            f(&state.0.store)
        })
        .await
        .map_err(|e| AgentError::internal("blocking task", e));
        if let Some(op) = &op {
            op.lock_released();
            op.phase(bucky_diag::phase::HANDLING);
        }
        done
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting, lets the requests in
/// flight finish within the config's `shutdown_grace`, cancels the rest and waits briefly for the disk
/// operations already running. Starts the first metric scan right away, so the list is ready by the time
/// a client asks.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    state.cache().refresh();
    let config = state.config();
    let options = server::Options {
        shutdown_grace: config.shutdown_grace,
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
    };
    let disk = server::DiskSlots { slots: Arc::clone(&state.0.io), total: config.io_concurrency.max(1) };
    let app: Router = app(state);
    server::serve_router(listener, app, options, disk, shutdown).await
}

/// Resolves on SIGINT or SIGTERM (the daemons' shared trigger, re-exported for [`serve`]'s callers).
pub use bucky_runtime::shutdown_signal;
