//! The iteration order of a CPython 3.11 `set` of ints.
//!
//! whisper's `update_many` propagates `set(lowerIntervals)` in set order, and the first interval that
//! reaches an empty lower archive becomes that archive's anchor (slot 0). Byte-identical files therefore
//! need the same order, which is the order of CPython's open-addressing table (setobject.c: linear probes
//! of 9, perturbed probing, resize ×4 at 60 % fill).

const MIN_SIZE: usize = 8;
const LINEAR_PROBES: usize = 9;
const PERTURB_SHIFT: u32 = 5;

/// `hash(int)` in CPython (modulus 2^61 - 1; -1 is reserved and becomes -2).
fn py_hash(value: i64) -> u64 {
    let v = i128::from(value);
    let mut h = (v.abs() % i128::from(MODULUS)) as i64;
    if v < 0 {
        h = -h;
    }
    if h == -1 {
        h = -2;
    }
    h as u64
}

fn insert_clean(table: &mut [Option<(i64, u64)>], mask: usize, key: i64, hash: u64) {
    let mut perturb = hash;
    let mut i = (hash as usize) & mask;
    loop {
        if table[i].is_none() {
            table[i] = Some((key, hash));
            return;
        }
        if i + LINEAR_PROBES <= mask {
            for j in 1..=LINEAR_PROBES {
                if table[i + j].is_none() {
                    table[i + j] = Some((key, hash));
                    return;
                }
            }
        }
        perturb >>= PERTURB_SHIFT;
        i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb as usize)) & mask;
    }
}

/// The distinct values of `values` in the order `for x in set(values)` yields them on CPython 3.11.
pub(crate) fn set_order(values: &[i64]) -> Vec<i64> {
    if values.iter().all(|v| (0..MODULUS).contains(v)) {
        set_order_small(values)
    } else {
        set_order_general(values)
    }
}

/// `hash(x) == x` below the modulus: the usual case (timestamps).
const MODULUS: i64 = (1 << 61) - 1;

/// [`set_order_general`] for non-negative values below the modulus, where a value is its own hash: a flat
/// table with -1 for an empty slot, reused across resizes.
fn set_order_small(values: &[i64]) -> Vec<i64> {
    const EMPTY: i64 = -1;
    let mut table: Vec<i64> = vec![EMPTY; MIN_SIZE];
    let mut old: Vec<i64> = Vec::new();
    let mut used = 0usize;
    for &key in values {
        let mask = table.len() - 1;
        let mut perturb = key as u64;
        let mut i = (key as usize) & mask;
        let slot = 'probe: loop {
            let probes = if i + LINEAR_PROBES <= mask { LINEAR_PROBES } else { 0 };
            for (j, &k) in table.iter().enumerate().skip(i).take(probes + 1) {
                match k {
                    EMPTY => break 'probe Some(j),
                    k if k == key => break 'probe None,
                    _ => {}
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb as usize)) & mask;
        };
        let Some(slot) = slot else { continue };
        table[slot] = key;
        used += 1;
        if let Some(size) = grown_size(used, mask) {
            std::mem::swap(&mut table, &mut old);
            table.clear();
            table.resize(size, EMPTY);
            for &k in old.iter().filter(|&&k| k != EMPTY) {
                insert_clean_small(&mut table, size - 1, k);
            }
        }
    }
    table.retain(|&k| k != EMPTY);
    table
}

/// setobject.c's `set_table_resize` trigger and new size after an insert: at 60 % fill (no deletions here,
/// so fill == used), grow to the smallest power of two above 4× (2× past 50,000) the used slots.
fn grown_size(used: usize, mask: usize) -> Option<usize> {
    if used * 5 < mask * 3 {
        return None;
    }
    let min_used = if used > 50_000 { used * 2 } else { used * 4 };
    let mut size = MIN_SIZE;
    while size <= min_used {
        size <<= 1;
    }
    Some(size)
}

fn insert_clean_small(table: &mut [i64], mask: usize, key: i64) {
    let mut perturb = key as u64;
    let mut i = (key as usize) & mask;
    loop {
        let probes = if i + LINEAR_PROBES <= mask { LINEAR_PROBES } else { 0 };
        if let Some(free) = table[i..=i + probes].iter().position(|&k| k == -1) {
            table[i + free] = key;
            return;
        }
        perturb >>= PERTURB_SHIFT;
        i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb as usize)) & mask;
    }
}

/// Any `i64`: a straight transcription of setobject.c.
fn set_order_general(values: &[i64]) -> Vec<i64> {
    let mut table: Vec<Option<(i64, u64)>> = vec![None; MIN_SIZE];
    let mut used = 0usize;
    for &key in values {
        let hash = py_hash(key);
        let mask = table.len() - 1;
        let mut perturb = hash;
        let mut i = (hash as usize) & mask;
        let slot = 'probe: loop {
            let probes = if i + LINEAR_PROBES <= mask { LINEAR_PROBES } else { 0 };
            for j in 0..=probes {
                match table[i + j] {
                    None => break 'probe Some(i + j),
                    Some((k, _)) if k == key => break 'probe None,
                    Some(_) => {}
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb as usize)) & mask;
        };
        let Some(slot) = slot else { continue };
        table[slot] = Some((key, hash));
        used += 1;
        if let Some(size) = grown_size(used, mask) {
            let old = std::mem::replace(&mut table, vec![None; size]);
            for (k, h) in old.into_iter().flatten() {
                insert_clean(&mut table, size - 1, k, h);
            }
        }
    }
    table.into_iter().flatten().map(|(k, _)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cpython_examples() {
        // Checked with CPython 3.11: list(set([...])).
        assert_eq!(set_order(&[3, 1, 2]), vec![1, 2, 3]);
        assert_eq!(set_order(&[16, 8, 0]), vec![16, 8, 0]);
        assert_eq!(set_order(&[5, 5, 5]), vec![5]);
        assert_eq!(set_order(&[]), Vec::<i64>::new());
    }

    #[test]
    fn small_path_equals_general_path() {
        // Sizes that cross every resize, with collisions (multiples of table sizes) and duplicates.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for n in [1usize, 5, 6, 7, 20, 100, 167, 1000, 5000] {
            for spread in [1i64, 60, 512, 4096, 1 << 40] {
                let values: Vec<i64> = (0..n)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        1_700_000_000 + (seed % (n as u64 * 2)) as i64 * spread
                    })
                    .collect();
                assert_eq!(set_order_small(&values), set_order_general(&values), "n={n} spread={spread}");
            }
        }
    }
}
