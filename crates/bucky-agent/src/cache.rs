//! The metric list: built by a background scan, kept sorted in memory, updated at once by the agent's own
//! creates and deletes.
//!
//! Protocol (buckyd's): while a scan runs, listings answer `202 Cache update in progress.`; a list older
//! than the cache lifetime (`--timeout`), or `force`, starts a new scan. Unlike buckyd, the state is behind
//! one mutex (no unsynchronised flags), `force` never returns a list scanned before it was asked for, and
//! changes made by the agent during a scan are journalled and replayed onto the new list, so a name created
//! or deleted mid-scan is never lost or resurrected.
//!
//! Go bucky answers a 202 by re-sending the *same* request (`force=true` included) after a Fibonacci
//! back-off of up to 55 s, and nothing tells a retry from a new request. So a scan that a forced listing
//! asked for (it started the scan or waited for it) is owed to the first listing that comes after it,
//! forced or not, within [`FORCED_SCAN_PICKUP`]: Go bucky's forced retry gets it, as does bucky's own
//! unforced retry. Any later forced listing scans again, instead of every retry restarting the scan
//! forever or a new `-f` getting a list scanned before it asked.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::walk;

/// Whether a list can be served now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStatus {
    /// The list is current; serve it.
    Ready,
    /// A scan is running; answer 202.
    Building,
}

#[derive(Debug)]
enum Change {
    Added(Box<str>),
    Removed(Box<str>),
}

/// How long a finished scan that a forced listing asked for waits for that listing's retry: longer than
/// Go bucky's longest back-off between retries (55 s).
pub const FORCED_SCAN_PICKUP: Duration = Duration::from_secs(90);

#[derive(Debug, Default)]
struct Inner {
    names: Option<BTreeSet<Box<str>>>,
    built: Option<Instant>,
    building: bool,
    /// A forced listing was answered 202 during the running scan: its result is owed to a forced listing.
    force_waiting: bool,
    /// The current list came from a scan a forced listing waited for, and no listing took it yet.
    force_owed: bool,
    /// Changes made while a scan runs, replayed onto its result.
    journal: Vec<Change>,
}

/// The cached metric list of one store.
#[derive(Debug)]
pub struct MetricCache {
    root: PathBuf,
    lifetime: Duration,
    threads: usize,
    inner: Mutex<Inner>,
    /// Where the scan registers itself as an operation in flight (set once by the agent's state).
    registry: std::sync::OnceLock<bucky_diag::Registry>,
}

impl MetricCache {
    /// A cache of the metrics below `root`, fresh for `lifetime`, scanned with `threads` threads.
    pub fn new(root: PathBuf, lifetime: Duration, threads: usize) -> Arc<MetricCache> {
        Arc::new(MetricCache {
            root,
            lifetime,
            threads,
            inner: Mutex::new(Inner::default()),
            registry: std::sync::OnceLock::new(),
        })
    }

    /// Registers every scan in `registry` (as `list scan`), for the watchdog and the state dump.
    pub fn set_registry(&self, registry: bucky_diag::Registry) {
        let _ = self.registry.set(registry);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers a listing request: [`ListStatus::Ready`] if the list is fresh (for `force`: if it comes from a
    /// scan a forced listing is owed, see the module docs), otherwise starts a scan if none is running and
    /// returns [`ListStatus::Building`].
    pub fn request(self: &Arc<Self>, force: bool) -> ListStatus {
        let mut inner = self.lock();
        if inner.building {
            inner.force_waiting |= force;
            return ListStatus::Building;
        }
        let built_within = |limit: Duration| inner.names.is_some() && inner.built.is_some_and(|t| t.elapsed() <= limit);
        if !force && built_within(self.lifetime) {
            inner.force_owed = false;
            return ListStatus::Ready;
        }
        if force && inner.force_owed && built_within(FORCED_SCAN_PICKUP) {
            inner.force_owed = false;
            return ListStatus::Ready;
        }
        inner.force_waiting = force;
        self.start(&mut inner);
        ListStatus::Building
    }

    /// Starts a scan unless one is running (used at startup).
    pub fn refresh(self: &Arc<Self>) {
        let mut inner = self.lock();
        if !inner.building {
            self.start(&mut inner);
        }
    }

    /// Whether a scan is running.
    pub fn is_building(&self) -> bool {
        self.lock().building
    }

    fn start(self: &Arc<Self>, inner: &mut Inner) {
        inner.building = true;
        inner.journal.clear();
        let cache = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("bucky-scan".into()).spawn(move || cache.scan());
        if let Err(e) = spawned {
            inner.building = false;
            tracing::error!(error = %e, "cannot start the metric scan thread");
        }
    }

    fn scan(&self) {
        let op = self.registry.get().map(|r| r.begin("list scan", self.root.display().to_string()));
        if let Some(op) = &op {
            op.phase("walking the tree");
        }
        let started = Instant::now();
        tracing::info!(root = %self.root.display(), "scanning for metrics");
        let scanned = std::panic::catch_unwind(AssertUnwindSafe(|| walk::scan(&self.root, self.threads)));
        let scan = match scanned {
            Ok(scan) => scan,
            Err(_) => {
                tracing::error!("the metric scan panicked; the previous list is kept");
                self.lock().building = false;
                return;
            }
        };
        // Already sorted: building the set is linear.
        let mut set: BTreeSet<Box<str>> = scan.names.into_iter().collect();
        let mut inner = self.lock();
        for change in inner.journal.drain(..) {
            match change {
                Change::Added(name) => set.insert(name),
                Change::Removed(name) => set.remove(&name),
            };
        }
        let count = set.len();
        let old = inner.names.replace(set);
        inner.built = Some(Instant::now());
        inner.building = false;
        inner.force_owed = std::mem::take(&mut inner.force_waiting);
        drop(inner);
        drop(old); // freeing the old list takes a while: not under the lock
        tracing::info!(
            metrics = count,
            dirs = scan.dirs,
            unaddressable = scan.unaddressable,
            errors = scan.errors,
            stale_temps_removed = scan.stale_temps_removed,
            seconds = started.elapsed().as_secs_f64(),
            "metric scan complete"
        );
    }

    /// Records a metric the agent just created.
    pub fn added(&self, name: &str) {
        let mut inner = self.lock();
        if let Some(names) = inner.names.as_mut() {
            names.insert(name.into());
        }
        if inner.building {
            inner.journal.push(Change::Added(name.into()));
        }
    }

    /// Records a metric the agent just deleted.
    pub fn removed(&self, name: &str) {
        let mut inner = self.lock();
        if let Some(names) = inner.names.as_mut() {
            names.remove(name);
        }
        if inner.building {
            inner.journal.push(Change::Removed(name.into()));
        }
    }

    /// Up to `max` names after `after` (all names if `None`), in order. Listings page through the live
    /// set this way, holding the lock only for one page.
    pub fn page(&self, after: Option<&str>, max: usize) -> Vec<Box<str>> {
        let inner = self.lock();
        let Some(names) = inner.names.as_ref() else { return Vec::new() };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        names.range::<str, _>((lower, Bound::Unbounded)).take(max).cloned().collect()
    }

    /// Calls `visit` on up to `max` names after `after` (from the start if `None`), in order, under the
    /// lock (so `visit` must be quick), and returns the last name visited: the cursor of the next page.
    /// Listings page through the live set this way without copying it.
    pub fn visit_page(&self, after: Option<&str>, max: usize, mut visit: impl FnMut(&str)) -> Option<Box<str>> {
        let inner = self.lock();
        let names = inner.names.as_ref()?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut last = None;
        for name in names.range::<str, _>((lower, Bound::Unbounded)).take(max) {
            visit(name);
            last = Some(name);
        }
        last.cloned()
    }

    /// Whether `name` is listed.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().names.as_ref().is_some_and(|n| n.contains(name))
    }

    /// Number of listed metrics (0 before the first scan).
    pub fn len(&self) -> usize {
        self.lock().names.as_ref().map_or(0, BTreeSet::len)
    }

    /// Whether no metric is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_ready(cache: &Arc<MetricCache>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.request(false) != ListStatus::Ready {
            assert!(Instant::now() < deadline, "scan did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn builds_then_tracks_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/b.wsp"), b"").unwrap();
        let cache = MetricCache::new(dir.path().to_owned(), Duration::from_secs(60), 2);
        assert_eq!(cache.request(false), ListStatus::Building);
        wait_ready(&cache);
        assert_eq!(cache.page(None, 10), vec!["a.b".into()]);
        cache.added("a.c");
        cache.removed("a.b");
        assert_eq!(cache.page(None, 10), vec!["a.c".into()]);
        assert!(cache.contains("a.c") && !cache.contains("a.b"));
        // force always rescans (and the journal keeps a.c, which is not on disk).
        assert_eq!(cache.request(true), ListStatus::Building);
        cache.added("a.d");
        wait_ready(&cache);
        assert_eq!(cache.page(None, 10), vec!["a.b".into(), "a.d".into()]);
        assert_eq!(cache.page(Some("a.b"), 10), vec!["a.d".into()]);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_forced_scan_answers_one_forced_retry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MetricCache::new(dir.path().to_owned(), Duration::from_secs(60), 1);
        wait_ready(&cache);
        // The first scan was not forced: a force rescans, and its retry (Go bucky re-sends the same forced
        // request after a 202) gets that scan instead of starting another one.
        assert_eq!(cache.request(true), ListStatus::Building);
        assert_eq!(cache.request(true), ListStatus::Building, "a forced retry during the scan waits for it");
        std::fs::write(dir.path().join("late.wsp"), b"").unwrap();
        while cache.is_building() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(cache.request(true), ListStatus::Ready, "the forced retry gets the scan it asked for");
        // That scan is taken: the next forced listing scans again and sees what appeared since.
        assert_eq!(cache.request(true), ListStatus::Building);
        while cache.is_building() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(cache.request(true), ListStatus::Ready, "its forced retry");
        assert_eq!(cache.page(None, 10), vec!["late".into()]);
        // bucky retries a forced listing unforced: that retry takes the scan, and a new force rescans.
        assert_eq!(cache.request(true), ListStatus::Building);
        while cache.is_building() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(cache.request(false), ListStatus::Ready, "an unforced retry takes the fresh list");
        assert_eq!(cache.request(true), ListStatus::Building, "a later force does not get a list from before it");
    }

    #[test]
    fn a_forced_scan_is_not_owed_forever() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MetricCache::new(dir.path().to_owned(), Duration::from_secs(3600), 1);
        assert_eq!(cache.request(true), ListStatus::Building);
        while cache.is_building() {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Pretend the scan finished longer ago than any retry would wait.
        cache.lock().built = Instant::now().checked_sub(FORCED_SCAN_PICKUP + Duration::from_secs(1));
        assert_eq!(cache.request(true), ListStatus::Building);
    }

    #[test]
    fn stale_list_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MetricCache::new(dir.path().to_owned(), Duration::ZERO, 1);
        cache.refresh();
        while cache.is_building() {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.request(false), ListStatus::Building);
    }
}
