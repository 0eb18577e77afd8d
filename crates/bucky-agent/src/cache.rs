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
//!
//! With `--file-list-cache`, a list is read from go-carbon's file-list-cache instead of walking the store
//! (see `flc`), and the walk is the fallback when that file is missing, older than the list's lifetime,
//! truncated, corrupt or another tree's (one warning says why). go-carbon's file is as old as its last scan
//! (`scan-frequency`), so it may not show what this agent created or deleted since: the agent remembers
//! the names it changed ([`Touched`]) and looks each of them up on disk when it reads the file, until a
//! later go-carbon scan (or a walk) has certainly seen the change. Files that other programs create or
//! remove show up with go-carbon's next scan.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::names::{NameList, Packed};
use crate::{flc, walk};

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
    names: Option<NameList>,
    built: Option<Instant>,
    building: bool,
    /// A forced listing was answered 202 during the running scan: its result is owed to a forced listing.
    force_waiting: bool,
    /// The current list came from a scan a forced listing waited for, and no listing took it yet.
    force_owed: bool,
    /// Changes made while a scan runs, replayed onto its result.
    journal: Vec<Change>,
    /// With a file-list-cache: the names this agent changed that go-carbon's file may not show yet.
    touched: Touched,
}

/// Most names remembered in [`Touched`]; past it the next list comes from a walk.
const MAX_TOUCHED: usize = 100_000;

/// The metrics this agent created or deleted, and when, that the next file-list-cache read must look up on
/// disk. go-carbon scans one after the other and writes its file at the end of each scan, so a file written
/// after another one comes from a scan that started after that one was written: once such a file is read,
/// the changes made before the earlier one was written are in it and are forgotten.
#[derive(Debug, Default)]
struct Touched {
    names: HashMap<Box<str>, SystemTime>,
    /// When the newest file-list-cache read so far was written.
    newest_read: Option<SystemTime>,
    /// Too many changes to remember: the next list is walked.
    overflowed: bool,
}

impl Touched {
    fn record(&mut self, name: &str) {
        if self.names.len() >= MAX_TOUCHED && !self.names.contains_key(name) {
            if !self.overflowed {
                tracing::warn!(
                    limit = MAX_TOUCHED,
                    "this agent changed more metrics than it remembers since go-carbon's last file-list-cache; \
                     the next metric list is walked"
                );
            }
            self.names.clear();
            self.overflowed = true;
        }
        self.names.insert(name.into(), SystemTime::now());
    }

    /// A file-list-cache written at `modified` is about to be read: forgets what the scan behind it has
    /// certainly seen, and returns the names to look up.
    fn reading(&mut self, modified: SystemTime) -> Vec<Box<str>> {
        if let Some(previous) = self.newest_read.filter(|&previous| modified > previous) {
            // A second of slack for the file system's timestamps.
            let seen_before = previous.checked_sub(Duration::from_secs(1)).unwrap_or(SystemTime::UNIX_EPOCH);
            self.names.retain(|_, changed| *changed >= seen_before);
        }
        self.newest_read = Some(self.newest_read.map_or(modified, |newest| newest.max(modified)));
        self.names.keys().cloned().collect()
    }

    /// A walk that started at `started` is done: it saw every change made before.
    fn walked(&mut self, started: SystemTime) {
        self.names.retain(|_, changed| *changed >= started);
        self.overflowed = false;
    }
}

/// Where a list came from.
enum Source {
    Walk(walk::Scan),
    FileListCache(flc::Listing),
}

/// The cached metric list of one store.
#[derive(Debug)]
pub struct MetricCache {
    root: PathBuf,
    lifetime: Duration,
    threads: usize,
    /// go-carbon's file-list-cache, read instead of walking when it is usable.
    file_list_cache: Option<PathBuf>,
    inner: Mutex<Inner>,
    /// Where the scan registers itself as an operation in flight (set once by the agent's state).
    registry: std::sync::OnceLock<bucky_diag::Registry>,
}

impl MetricCache {
    /// A cache of the metrics below `root`, fresh for `lifetime`, scanned with `threads` threads.
    pub fn new(root: PathBuf, lifetime: Duration, threads: usize) -> Arc<MetricCache> {
        Self::with_file_list_cache(root, lifetime, threads, None)
    }

    /// [`MetricCache::new`], listing from go-carbon's `file_list_cache` when it is usable (see the module
    /// docs).
    pub fn with_file_list_cache(
        root: PathBuf,
        lifetime: Duration,
        threads: usize,
        file_list_cache: Option<PathBuf>,
    ) -> Arc<MetricCache> {
        Arc::new(MetricCache {
            root,
            lifetime,
            threads,
            file_list_cache,
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
            op.phase("building the list (walk or file-list-cache)");
        }
        let started = Instant::now();
        let built = std::panic::catch_unwind(AssertUnwindSafe(|| self.build()));
        let (mut set, source) = match built {
            Ok(built) => built,
            Err(_) => {
                tracing::error!("the metric scan panicked; the previous list is kept");
                self.lock().building = false;
                return;
            }
        };
        let mut inner = self.lock();
        for change in inner.journal.drain(..) {
            match change {
                Change::Added(name) => set.insert(&name),
                Change::Removed(name) => set.remove(&name),
            }
        }
        let count = set.len();
        let old = inner.names.replace(set);
        inner.built = Some(Instant::now());
        inner.building = false;
        inner.force_owed = std::mem::take(&mut inner.force_waiting);
        drop(inner);
        drop(old); // freeing the old list takes a while: not under the lock
        let seconds = started.elapsed().as_secs_f64();
        match source {
            Source::Walk(scan) => tracing::info!(
                metrics = count,
                dirs = scan.dirs,
                unaddressable = scan.unaddressable,
                errors = scan.errors,
                stale_temps_removed = scan.stale_temps_removed,
                seconds,
                "metric scan complete"
            ),
            Source::FileListCache(listing) => tracing::info!(
                metrics = count,
                version = listing.version.number(),
                entries = listing.entries,
                unaddressable = listing.unaddressable,
                age_seconds = SystemTime::now().duration_since(listing.modified).unwrap_or_default().as_secs(),
                seconds,
                "metric list read from go-carbon's file-list-cache"
            ),
        }
    }

    /// Builds a list: from the file-list-cache when there is one and it is usable, else by walking.
    fn build(&self) -> (NameList, Source) {
        if let Some(path) = &self.file_list_cache {
            if !self.lock().touched.overflowed {
                match self.read_file_list_cache(path) {
                    Ok(built) => return built,
                    Err(e) => tracing::warn!(
                        file = %path.display(),
                        "not listing from go-carbon's file-list-cache: {e}; walking the store instead"
                    ),
                }
            }
        }
        tracing::info!(root = %self.root.display(), "scanning for metrics");
        let started = SystemTime::now();
        let mut scan = walk::scan(&self.root, self.threads);
        self.lock().touched.walked(started);
        let set = NameList::new(Packed::from_sorted(std::mem::take(&mut scan.names)));
        (set, Source::Walk(scan))
    }

    /// The list in go-carbon's file-list-cache at `path`, with this agent's own recent changes looked up on
    /// disk (see [`Touched`]).
    fn read_file_list_cache(&self, path: &Path) -> Result<(NameList, Source), flc::FlcError> {
        let mut listing = flc::load(path, &self.root, self.lifetime)?;
        let recheck = self.lock().touched.reading(listing.modified);
        let mut set = NameList::new(std::mem::take(&mut listing.names));
        for name in recheck {
            let file = self.root.join(format!("{}.wsp", name.replace('.', "/")));
            if std::fs::symlink_metadata(file).is_ok_and(|m| m.is_file()) {
                set.insert(&name);
            } else {
                set.remove(&name);
            }
        }
        Ok((set, Source::FileListCache(listing)))
    }

    /// Records a metric the agent just created.
    pub fn added(&self, name: &str) {
        let mut inner = self.lock();
        if self.file_list_cache.is_some() {
            inner.touched.record(name);
        }
        if let Some(names) = inner.names.as_mut() {
            names.insert(name);
        }
        if inner.building {
            inner.journal.push(Change::Added(name.into()));
        }
    }

    /// Records a metric the agent just deleted.
    pub fn removed(&self, name: &str) {
        let mut inner = self.lock();
        if self.file_list_cache.is_some() {
            inner.touched.record(name);
        }
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
        names.after(after).take(max).map(Box::from).collect()
    }

    /// Calls `visit` on up to `max` names after `after` (from the start if `None`), in order, under the
    /// lock (so `visit` must be quick), and returns the last name visited: the cursor of the next page.
    /// Listings page through the live set this way without copying it.
    pub fn visit_page(&self, after: Option<&str>, max: usize, mut visit: impl FnMut(&str)) -> Option<Box<str>> {
        let inner = self.lock();
        let names = inner.names.as_ref()?;
        let mut last = None;
        for name in names.after(after).take(max) {
            visit(name);
            last = Some(name);
        }
        last.map(Box::from)
    }

    /// Whether `name` is listed.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().names.as_ref().is_some_and(|n| n.contains(name))
    }

    /// Number of listed metrics (0 before the first scan).
    pub fn len(&self) -> usize {
        self.lock().names.as_ref().map_or(0, NameList::len)
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

    fn wait_built(cache: &Arc<MetricCache>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.is_building() {
            assert!(Instant::now() < deadline, "scan did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn touch(root: &std::path::Path, path: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }

    #[test]
    fn lists_from_the_file_list_cache_with_its_own_changes_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("whisper");
        for path in ["a/b.wsp", "a/c.wsp", "d.wsp", "late.wsp"] {
            touch(&root, path);
        }
        let flc = dir.path().join("flc.bin");
        // go-carbon's last scan: before late.wsp was made.
        std::fs::write(&flc, crate::flc::tests::v2(&["", "/a", "/a/b.wsp", "/a/c.wsp", "/d.wsp"])).unwrap();
        let cache = MetricCache::with_file_list_cache(root.clone(), Duration::from_secs(60), 1, Some(flc.clone()));
        wait_ready(&cache);
        assert_eq!(cache.page(None, 10), vec!["a.b".into(), "a.c".into(), "d".into()], "go-carbon's list");
        // The agent deletes one and creates one; go-carbon has not scanned since.
        std::fs::remove_file(root.join("a/b.wsp")).unwrap();
        cache.removed("a.b");
        touch(&root, "new.wsp");
        cache.added("new");
        assert_eq!(cache.request(true), ListStatus::Building);
        wait_built(&cache);
        assert_eq!(cache.request(true), ListStatus::Ready, "the forced retry");
        assert_eq!(cache.page(None, 10), vec!["a.c".into(), "d".into(), "new".into()], "the agent's own changes");
        // A broken file: the walk, which sees late.wsp too.
        std::fs::write(&flc, b"not a file-list-cache, not even gzip").unwrap();
        assert_eq!(cache.request(true), ListStatus::Building);
        wait_built(&cache);
        assert_eq!(cache.page(None, 10), vec!["a.c".into(), "d".into(), "late".into(), "new".into()]);
    }

    #[test]
    fn changes_are_looked_up_until_a_later_scan_has_certainly_seen_them() {
        let mut touched = Touched::default();
        let t0 = SystemTime::now();
        touched.record("a");
        // The first file read: it may come from a scan that started before the change.
        assert_eq!(touched.reading(t0 - Duration::from_secs(10)), vec!["a".into()]);
        // The same file again, or an older one: still looked up.
        assert_eq!(touched.reading(t0 - Duration::from_secs(10)), vec!["a".into()]);
        assert_eq!(touched.reading(t0 - Duration::from_secs(20)), vec!["a".into()]);
        // A newer file: its scan started after the first was written, before the change: still looked up.
        assert_eq!(touched.reading(t0 + Duration::from_secs(5)), vec!["a".into()]);
        // One newer still: its scan started after the one written at t0 + 5 s, after the change.
        assert!(touched.reading(t0 + Duration::from_secs(10)).is_empty());
        // A walk forgets what was changed before it started.
        touched.record("b");
        touched.walked(SystemTime::now() + Duration::from_secs(1));
        assert!(touched.names.is_empty());
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
