//! The byte ranges an update writes back: merged when they touch, and, under an exclusive lock that every
//! writer honours, coalesced across small gaps so that many small writes become a few large ones.

use std::ops::Range;

/// Largest run of unchanged bytes rewritten to join two changed ranges into one write (see
/// [`coalesce_ranges`]).
pub const MAX_COALESCE_GAP: usize = 64 * 1024;

/// Sorts and merges overlapping or touching ranges.
pub(crate) fn merge_ranges(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_unstable_by_key(|r| r.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// Sorted ranges (as [`crate::WhisperBuf::dirty_ranges`] gives them) joined across gaps of at most
/// [`MAX_COALESCE_GAP`] unchanged bytes. Writing the joined spans rewrites the unchanged bytes between
/// changes with the values the caller read, so it is only safe while holding the file's exclusive flock,
/// and only when every writer of the file takes that flock (carbon-cache with `WHISPER_LOCK_WRITES`).
pub fn coalesce_ranges(ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    let mut spans: Vec<Range<usize>> = Vec::with_capacity(ranges.len().min(16));
    for range in ranges {
        match spans.last_mut() {
            Some(last) if range.start.saturating_sub(last.end) <= MAX_COALESCE_GAP => {
                last.end = last.end.max(range.end)
            }
            _ => spans.push(range),
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_joins_only_small_gaps() {
        let gap = MAX_COALESCE_GAP;
        let ranges = vec![0..12, 12 + gap..24 + gap, 25 + 2 * gap..40 + 2 * gap];
        assert_eq!(coalesce_ranges(ranges), vec![0..24 + gap, 25 + 2 * gap..40 + 2 * gap]);
        assert_eq!(merge_ranges(vec![10..20, 0..10, 15..30, 40..50]), vec![0..30, 40..50]);
        // The agent's `--coalesce-writes` case: two points 12 bytes apart join, one 100 KB away does not.
        assert_eq!(coalesce_ranges(vec![0..12, 24..36, 100_000..100_012]), vec![0..36, 100_000..100_012]);
    }
}
