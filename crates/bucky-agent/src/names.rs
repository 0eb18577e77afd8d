//! The metric list held in memory: a scan's names packed into two allocations, and the agent's own
//! creates and deletes since that scan beside them.
//!
//! A million names kept one allocation each (a `BTreeSet<Box<str>>`) cost about 74 MiB, and every rescan
//! built a new set beside the old one out of a million more small allocations: the allocator could not
//! give the freed ones back between the live ones, so an agent listing from go-carbon's file-list-cache grew
//! to 219 MiB after five forced re-reads. Packed, the same names are one string and one offset table
//! (their bytes plus 8 per name), built and freed whole. The changes made between two scans, which are few
//! next to the list (the next scan takes them in), live in two small sets.

use std::collections::BTreeSet;
use std::iter::Peekable;
use std::ops::Bound;

/// The least a list's buffer reserves. glibc serves an allocation above 32 MiB (the most its dynamic mmap
/// threshold rises to, `mallopt(3)`) with a mapping of its own and unmaps it when it is freed; a smaller
/// one may be placed in an arena that keeps it once freed, so a million names re-read every few minutes
/// left their earlier lists resident (43 MiB after the first list, 162 MiB after five forced re-reads).
/// The pages of a mapping that are never touched cost no memory, so a small list costs only its size.
const MAPPED_ON_ITS_OWN: usize = 32 * 1024 * 1024 + 4096;

/// Names in one string, each ending where `ends` says: a scan's list, sorted and distinct once
/// [`Packed::sorted`] made it so.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Packed {
    text: String,
    ends: Vec<usize>,
}

impl Default for Packed {
    fn default() -> Packed {
        Packed::with_capacity(0, 0)
    }
}

/// A vector of at least `len` elements' room, in a mapping of its own (see [`MAPPED_ON_ITS_OWN`]).
fn mapped_vec<T>(len: usize) -> Vec<T> {
    Vec::with_capacity(len.max(MAPPED_ON_ITS_OWN / std::mem::size_of::<T>().max(1)))
}

impl Packed {
    fn with_capacity(bytes: usize, names: usize) -> Packed {
        Packed { text: String::with_capacity(bytes.max(MAPPED_ON_ITS_OWN)), ends: mapped_vec(names) }
    }

    /// Packs `names`, which must be sorted and distinct (the walk's result).
    pub(crate) fn from_sorted(names: Vec<Box<str>>) -> Packed {
        let mut packed = Packed::with_capacity(names.iter().map(|n| n.len()).sum(), names.len());
        for name in names {
            packed.push(&name);
        }
        packed
    }

    pub(crate) fn push(&mut self, name: &str) {
        self.text.push_str(name);
        self.ends.push(self.text.len());
    }

    /// Adds the metric name of a path relative to the store (`a/b/c` is `a.b.c`).
    pub(crate) fn push_path(&mut self, relative: &str) {
        for (i, part) in relative.split('/').enumerate() {
            if i > 0 {
                self.text.push('.');
            }
            self.text.push_str(part);
        }
        self.ends.push(self.text.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub(crate) fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The same names sorted, without duplicates. A stable sort: it finds the runs of a list that is
    /// already sorted in parts (go-carbon writes a directory's entries in order).
    pub(crate) fn sorted(self) -> Packed {
        // go-carbon walks each directory in order, so its list is often in order already (not when one name
        // extends a sibling's with a byte below '/', as `a-b/c` after `a/c`): then there is nothing to copy.
        if (1..self.len()).all(|i| self.get(i - 1) < self.get(i)) {
            return self;
        }
        let mut order: Vec<usize> = mapped_vec(self.len());
        order.extend(0..self.len());
        order.sort_by(|&a, &b| self.get(a).cmp(self.get(b)));
        let mut out = Packed::with_capacity(self.text.len(), self.len());
        let mut last = None;
        for i in order {
            let name = self.get(i);
            if last != Some(name) {
                out.push(name);
                last = Some(name);
            }
        }
        out
    }

    /// How many names sort before `name` (with `inclusive`, before or equal to it).
    fn rank(&self, name: &str, inclusive: bool) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            let here = self.get(mid);
            if here < name || (inclusive && here == name) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    fn contains(&self, name: &str) -> bool {
        let i = self.rank(name, false);
        i < self.len() && self.get(i) == name
    }
}

/// The metric list: a scan's names with the agent's changes since applied.
#[derive(Debug)]
pub(crate) struct NameList {
    scanned: Packed,
    /// Names added since the scan that it did not hold.
    added: BTreeSet<Box<str>>,
    /// Names of the scan removed since.
    removed: BTreeSet<Box<str>>,
}

impl NameList {
    /// The list of a scan: `scanned` sorted, without duplicates.
    pub(crate) fn new(scanned: Packed) -> NameList {
        NameList { scanned, added: BTreeSet::new(), removed: BTreeSet::new() }
    }

    pub(crate) fn insert(&mut self, name: &str) {
        if self.scanned.contains(name) {
            self.removed.remove(name);
        } else if !self.added.contains(name) {
            self.added.insert(name.into());
        }
    }

    pub(crate) fn remove(&mut self, name: &str) {
        if self.scanned.contains(name) {
            if !self.removed.contains(name) {
                self.removed.insert(name.into());
            }
        } else {
            self.added.remove(name);
        }
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.added.contains(name) || (self.scanned.contains(name) && !self.removed.contains(name))
    }

    pub(crate) fn len(&self) -> usize {
        self.scanned.len() - self.removed.len() + self.added.len()
    }

    /// The names after `after` (all of them with `None`), in order.
    pub(crate) fn after<'a>(&'a self, after: Option<&str>) -> impl Iterator<Item = &'a str> + 'a {
        let first = after.map_or(0, |a| self.scanned.rank(a, true));
        let scanned = (first..self.scanned.len())
            .map(|i| self.scanned.get(i))
            .filter(|name| self.removed.is_empty() || !self.removed.contains(*name));
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let added = self.added.range::<str, _>((lower, Bound::Unbounded)).map(|name| &**name);
        Merge { a: scanned.peekable(), b: added.peekable() }
    }
}

/// Two sorted iterators of distinct names, merged in order.
struct Merge<A: Iterator, B: Iterator> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<'a, A: Iterator<Item = &'a str>, B: Iterator<Item = &'a str>> Iterator for Merge<A, B> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) if b < a => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A xorshift generator, replayable by seed.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn name(state: &mut u64) -> String {
        // Few distinct names, so inserts and removes keep meeting the same ones; "a.b" and "a.b.c" both
        // occur, as do prefixes that sort on either side of '.'.
        let parts = ["a", "b", "a-b", "a.b", "a0", "c"];
        let n = 1 + next(state) % 3;
        (0..n).map(|_| parts[(next(state) % parts.len() as u64) as usize]).collect::<Vec<_>>().join(".")
    }

    #[test]
    fn it_answers_as_a_sorted_set_would_under_random_changes() {
        let seed: u64 = std::env::var("BUCKY_NAMES_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1157);
        let mut state = seed;
        for round in 0..200 {
            let mut model: BTreeSet<String> = (0..next(&mut state) % 40).map(|_| name(&mut state)).collect();
            // Packed out of order with duplicates, or in order, and sorted: as a file-list-cache is read.
            let mut packed = Packed::default();
            if round % 2 == 0 {
                model.iter().for_each(|n| packed.push(n));
            } else {
                model.iter().rev().chain(model.iter().step_by(2)).for_each(|n| packed.push(n));
            }
            let mut list = NameList::new(packed.sorted());
            for step in 0..60 {
                let n = name(&mut state);
                match next(&mut state) % 4 {
                    0 | 1 => {
                        list.insert(&n);
                        model.insert(n.clone());
                    }
                    2 => {
                        list.remove(&n);
                        model.remove(&n);
                    }
                    _ => {}
                }
                let context = format!("seed {seed:#x}, round {round}, step {step}, name {n}");
                assert_eq!(list.len(), model.len(), "{context}");
                assert_eq!(list.contains(&n), model.contains(&n), "{context}");
                let all: Vec<&str> = list.after(None).collect();
                assert_eq!(all, model.iter().map(String::as_str).collect::<Vec<_>>(), "{context}");
                let after = name(&mut state);
                let tail: Vec<&str> = list.after(Some(&after)).collect();
                let want: Vec<&str> =
                    model.range::<str, _>((Bound::Excluded(after.as_str()), Bound::Unbounded)).map(|s| &**s).collect();
                assert_eq!(tail, want, "{context}, after {after}");
            }
        }
    }

    #[test]
    fn paths_become_names() {
        let mut packed = Packed::default();
        for path in ["a/b/c", "d", "a/b"] {
            packed.push_path(path);
        }
        assert_eq!(packed.sorted().iter().collect::<Vec<_>>(), ["a.b", "a.b.c", "d"]);
    }

    #[test]
    fn a_list_in_order_keeps_one_of_each_name() {
        let mut packed = Packed::default();
        ["a", "a", "a.b", "b", "b"].into_iter().for_each(|n| packed.push(n));
        assert_eq!(packed.sorted().iter().collect::<Vec<_>>(), ["a", "a.b", "b"]);
    }

    #[test]
    fn an_empty_list_lists_nothing() {
        let list = NameList::new(Packed::default().sorted());
        assert_eq!((list.len(), list.contains("a"), list.after(Some("a")).count()), (0, false, 0));
    }
}
