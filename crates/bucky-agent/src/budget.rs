//! The agent's one memory budget (`--request-memory`): every byte it holds for a request (an upload or a
//! batch body as it arrives, a file read for an answer, a decompressed copy) is charged here first, and
//! given back when the bytes are dropped — for an answer, when the server has written them to the socket.
//!
//! Charges grow with the bytes actually received or read, never with what a client *announces*: a client
//! that claims a 1 GiB upload and trickles it holds what it sent so far, not 1 GiB. A charge that cannot
//! grow waits at most `--memory-wait` (async code), or reports [`Wait::Memory`] (blocking code, which must
//! not wait while it holds an I/O slot); either way the request ends as a 503 with `Retry-After` rather than
//! waiting without bound. Requests that hold no data (HEAD, DELETE without `If-Match`, listings) never
//! touch the budget, so they are never slowed by it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::error::AgentError;
use crate::wait::Wait;

/// Granularity of the budget: one semaphore permit per KiB.
const UNIT: u64 = 1024;

/// The memory all requests may hold together.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    permits: Arc<Semaphore>,
    /// The whole budget, in units: also the most one charge can take.
    units: u32,
    /// How many charges hold memory, now and at most: lets tests see requests wait for each other.
    #[cfg(test)]
    holders: Arc<Holders>,
}

/// Charges holding at least one unit: now, and the most at once since the budget was made.
#[cfg(test)]
#[derive(Debug, Default)]
struct Holders {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

/// Bytes of the budget held by one request; given back on drop.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Budget,
    units: u32,
}

impl Budget {
    /// A budget of `bytes` (at least one unit).
    pub(crate) fn new(bytes: u64) -> Budget {
        let units = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX).clamp(1, Semaphore::MAX_PERMITS as u32);
        Budget {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
            #[cfg(test)]
            holders: Arc::default(),
        }
    }

    /// A budget nothing can exhaust (stores used outside an agent, tests).
    pub(crate) fn unlimited() -> Budget {
        Budget::new(u64::MAX)
    }

    /// Units needed for `bytes`; a single charge larger than the whole budget takes all of it (and so waits
    /// until nothing else is held) rather than never fitting.
    fn units(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).min(self.units)
    }

    /// An empty charge, grown as bytes arrive.
    pub(crate) fn charge(&self) -> Charge {
        Charge { budget: self.clone(), units: 0 }
    }

    /// `bytes` charged now, or [`Wait::Memory`] when the budget has no room (blocking code).
    pub(crate) fn try_charge(&self, bytes: u64) -> Result<Charge, Wait> {
        let mut charge = self.charge();
        charge.grow_now(bytes)?;
        Ok(charge)
    }

    /// Waits until `bytes` could be charged, at most `patience` (then `false`). Takes nothing: the caller
    /// tries again, and may find the room taken meanwhile (then it waits again, within its own deadline).
    pub(crate) async fn room_for(&self, bytes: u64, patience: Duration) -> bool {
        let units = self.units(bytes);
        match tokio::time::timeout(patience, self.permits.acquire_many(units)).await {
            Ok(Ok(permits)) => {
                drop(permits);
                true
            }
            _ => false,
        }
    }

    /// Bytes free in the budget now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }

    /// The most charges that held memory at the same time.
    #[cfg(test)]
    pub(crate) fn most_holders_at_once(&self) -> usize {
        self.holders.most.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Charge {
    /// Grows the charge to cover `bytes` in all, waiting at most `patience` for room; 503 beyond.
    pub(crate) async fn grow_to(&mut self, bytes: u64, patience: Duration) -> Result<(), AgentError> {
        let want = self.budget.units(bytes);
        if want <= self.units {
            return Ok(());
        }
        let more = want - self.units;
        match tokio::time::timeout(patience, self.budget.permits.acquire_many(more)).await {
            Ok(Ok(permits)) => permits.forget(),
            _ => return Err(out_of_memory(bytes, patience)),
        }
        self.set_units(want);
        Ok(())
    }

    /// Grows the charge to cover `bytes` in all if the budget has room now; [`Wait::Memory`] otherwise.
    pub(crate) fn try_grow_to(&mut self, bytes: u64) -> Result<(), AgentError> {
        self.grow_now(bytes).map_err(AgentError::Wait)
    }

    /// [`Charge::try_grow_to`], answering the [`Wait`] itself.
    fn grow_now(&mut self, bytes: u64) -> Result<(), Wait> {
        let want = self.budget.units(bytes);
        if want <= self.units {
            return Ok(());
        }
        let more = want - self.units;
        match self.budget.permits.try_acquire_many(more) {
            Ok(permits) => permits.forget(),
            Err(_) => return Err(Wait::Memory { bytes }),
        }
        self.set_units(want);
        Ok(())
    }

    /// Gives back what is beyond `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: u64) {
        let keep = self.budget.units(bytes);
        if keep < self.units {
            let freed = self.units - keep;
            self.set_units(keep);
            self.budget.permits.add_permits(freed as usize);
        }
    }

    /// Records the units now held (after permits were taken, before any are given back).
    fn set_units(&mut self, units: u32) {
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering::SeqCst;
            let holders = &self.budget.holders;
            match (self.units, units) {
                (0, 1..) => {
                    let now = holders.now.fetch_add(1, SeqCst) + 1;
                    holders.most.fetch_max(now, SeqCst);
                }
                (1.., 0) => {
                    holders.now.fetch_sub(1, SeqCst);
                }
                _ => {}
            }
        }
        self.units = units;
    }

    /// `bytes`, holding this charge until the last clone of the returned buffer is dropped (for an answer
    /// body: until the server has written it).
    pub(crate) fn hold(self, bytes: Vec<u8>) -> Bytes {
        Bytes::from_owner(Held { bytes, _charge: self })
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.units > 0 {
            // Counted as released before the permits go back, so the next holder is never counted with it.
            let units = self.units;
            self.set_units(0);
            self.budget.permits.add_permits(units as usize);
        }
    }
}

/// A buffer that keeps its charge for as long as it lives.
struct Held {
    bytes: Vec<u8>,
    _charge: Charge,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The 503 of a request that found no room in the budget in time.
pub(crate) fn out_of_memory(bytes: u64, patience: Duration) -> AgentError {
    AgentError::Unavailable(format!(
        "the agent's request memory (--request-memory) had no room for {bytes} more bytes within {} s \
         (--memory-wait): other requests hold it; retry",
        patience.as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_grow_shrink_and_come_back_on_drop() {
        let budget = Budget::new(10 * UNIT);
        let mut a = budget.charge();
        a.grow_to(3 * UNIT + 1, Duration::ZERO).await.unwrap();
        assert_eq!(budget.available(), 6 * UNIT);
        let b = budget.try_charge(6 * UNIT).unwrap();
        assert!(matches!(budget.try_charge(1), Err(Wait::Memory { bytes: 1 })));
        let refused = budget.charge().grow_to(UNIT, Duration::from_millis(20)).await.unwrap_err();
        assert!(matches!(refused, AgentError::Unavailable(_)), "{refused}");
        a.shrink_to(UNIT);
        assert_eq!(budget.available(), 3 * UNIT);
        let held = b.hold(vec![7; 10]);
        let clone = held.clone();
        drop(held);
        assert_eq!(budget.available(), 3 * UNIT, "still held by a clone");
        drop(clone);
        assert_eq!(budget.available(), 9 * UNIT);
        drop(a);
        assert_eq!(budget.available(), 10 * UNIT);
        assert_eq!(budget.most_holders_at_once(), 2, "a and b held memory together");
    }

    #[tokio::test]
    async fn a_charge_larger_than_the_budget_takes_all_of_it() {
        let budget = Budget::new(4 * UNIT);
        let big = budget.try_charge(1 << 30).unwrap();
        assert_eq!(budget.available(), 0);
        assert!(!budget.room_for(1, Duration::from_millis(10)).await);
        drop(big);
        assert!(budget.room_for(1 << 40, Duration::from_millis(10)).await);
    }
}
