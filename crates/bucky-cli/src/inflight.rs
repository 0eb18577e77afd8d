//! The run-wide budget of source file bytes in flight (`--inflight-mib`): what bounds the client's memory
//! during a copy, whatever the number of workers and source nodes.
//!
//! Every batch read of the engine first reserves room here, up to its `--batch-mib`, and asks the agent for
//! at most what it reserved; once the answer is in, the reservation shrinks to the bytes of the files
//! actually read, and is held until the worker's batch ends (its heals, read-backs and verifications are
//! done and the files dropped). So the files held at once by all the workers of a run stay within the
//! budget — except that an agent always sends the first file of a read, whatever its size, so that a file
//! larger than what a worker could reserve still moves (the budget is then exceeded by that one file).
//!
//! A read takes what is free, up to what it wants, as long as that is at least a quarter of the budget (or
//! all it wants, if less); otherwise it waits for that much. Small batches thus never wait behind the
//! reservations of large ones for more than they need, and a large batch is cut to the room there is rather
//! than waiting for all of it.
//!
//! With `--offload` the files are held by the destination agents, not the client: each offload request
//! reserves room the same way and gives it back when it is answered, so the budget bounds the files all
//! the destinations hold for the run at once.
//!
//! The pipeline between the read and the end of the batch is not told about the reservation: the worker
//! runs its batch inside [`hold`], and the client, when it has read a batch, leaves its reservation there
//! ([`Reservation::keep`]). Outside [`hold`] (other commands' reads), a reservation lasts as long as the
//! read itself.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Granularity of the budget: one permit per KiB.
const UNIT: u64 = 1024;

/// The bytes all the reads of a run may hold at once.
#[derive(Debug, Clone)]
pub(crate) struct FileBudget {
    permits: Arc<Semaphore>,
    /// The whole budget, in units.
    units: u32,
}

/// Room reserved in a [`FileBudget`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl FileBudget {
    /// A budget of `bytes` (at least one KiB, at most about 4 TiB).
    pub(crate) fn new(bytes: u64) -> FileBudget {
        let units = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX).clamp(1, Semaphore::MAX_PERMITS as u32);
        FileBudget { permits: Arc::new(Semaphore::new(units as usize)), units }
    }

    /// Bytes free now.
    #[cfg(test)]
    fn free(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }

    /// Room for a read of up to `want` bytes: what is free, up to `want`, if that is at least the least a
    /// read takes (a quarter of the budget, or `want` if less); otherwise waits for that least.
    pub(crate) async fn reserve(&self, want: u64) -> Reservation {
        let want = u32::try_from(want.div_ceil(UNIT)).unwrap_or(u32::MAX).clamp(1, self.units);
        let least = want.min((self.units / 4).max(1));
        let free = u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX);
        let take = if free >= least { free.min(want) } else { least };
        // Another read may take the room seen free first: this then waits for `take`, which is at most `want`.
        let permit =
            Arc::clone(&self.permits).acquire_many_owned(take).await.expect("the budget's semaphore is never closed");
        Reservation { permit }
    }
}

impl Reservation {
    /// Bytes reserved.
    pub(crate) fn bytes(&self) -> u64 {
        self.permit.num_permits() as u64 * UNIT
    }

    /// Gives back what exceeds `bytes` (a reservation never grows: a read that got more than it reserved,
    /// its first file being larger, holds what it reserved).
    pub(crate) fn shrink_to(&mut self, bytes: u64) {
        let keep = usize::try_from(bytes.div_ceil(UNIT)).unwrap_or(usize::MAX);
        if keep < self.permit.num_permits() {
            drop(self.permit.split(self.permit.num_permits() - keep));
        }
    }

    /// Holds this reservation until the end of the enclosing [`hold`], if any (else it is dropped now).
    pub(crate) fn keep(self) {
        // Outside `hold` the closure is not run and the reservation is dropped with it.
        let _ = HELD.try_with(|held| held.0.lock().unwrap_or_else(PoisonError::into_inner).push(self));
    }
}

/// The reservations kept by the reads of one [`hold`].
#[derive(Default)]
struct Held(Mutex<Vec<Reservation>>);

tokio::task_local! {
    static HELD: Held;
}

/// Runs `work`, holding every reservation its reads [`keep`](Reservation::keep) until it ends.
pub(crate) async fn hold<T>(work: impl Future<Output = T>) -> T {
    HELD.scope(Held::default(), work).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn a_read_takes_what_is_free_up_to_what_it_wants() {
        runtime().block_on(async {
            let budget = FileBudget::new(16 * MIB);
            let first = budget.reserve(10 * MIB).await;
            assert_eq!((first.bytes(), budget.free()), (10 * MIB, 6 * MIB));
            // 6 MiB free, at least a quarter (4 MiB): cut to what is free rather than waiting.
            let second = budget.reserve(10 * MIB).await;
            assert_eq!((second.bytes(), budget.free()), (6 * MIB, 0));
            // Nothing free: waits for the least a read takes.
            let third = budget.reserve(10 * MIB);
            tokio::pin!(third);
            assert!(tokio::time::timeout(Duration::from_millis(50), &mut third).await.is_err());
            drop(first);
            let third = third.await;
            assert_eq!((third.bytes(), budget.free()), (4 * MIB, 6 * MIB));
            // A small read takes what it wants, however little is free.
            drop(second);
            let small = budget.reserve(1000).await;
            assert_eq!(small.bytes(), 1024);
            // More than the whole budget is the whole budget.
            drop((third, small));
            assert_eq!(budget.reserve(100 * MIB).await.bytes(), 16 * MIB);
        });
    }

    #[test]
    fn a_reservation_shrinks_to_the_bytes_read_and_never_grows() {
        runtime().block_on(async {
            let budget = FileBudget::new(8 * MIB);
            let mut reservation = budget.reserve(8 * MIB).await;
            reservation.shrink_to(MIB + 1);
            assert_eq!((reservation.bytes(), budget.free()), (MIB + 1024, 7 * MIB - 1024));
            reservation.shrink_to(100 * MIB);
            assert_eq!(reservation.bytes(), MIB + 1024);
            drop(reservation);
            assert_eq!(budget.free(), 8 * MIB);
        });
    }

    #[test]
    fn kept_reservations_last_until_the_hold_ends() {
        runtime().block_on(async {
            let budget = FileBudget::new(8 * MIB);
            let during = hold(async {
                budget.reserve(3 * MIB).await.keep();
                budget.reserve(2 * MIB).await.keep();
                budget.free()
            })
            .await;
            assert_eq!((during, budget.free()), (3 * MIB, 8 * MIB));
            // Outside a hold, keeping gives the room back at once.
            budget.reserve(3 * MIB).await.keep();
            assert_eq!(budget.free(), 8 * MIB);
        });
    }
}
