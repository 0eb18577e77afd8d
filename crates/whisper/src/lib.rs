//! The Whisper time-series format, bit-exact with Graphite's whisper 1.1.10.
//!
//! Same operation history ⇒ byte-identical file: `create`, `update`, `update_many` (routing by age,
//! duplicate handling, run packing, propagation with xFilesFactor and all 8 aggregation methods), `fetch`,
//! `merge`, [`resize`] (whisper-resize) and [`set_aggregation_method`] reproduce whisper.py, and [`fill`]
//! in [`FillMode::Carbonate`] reproduces carbonate's `whisper-fill`. Beyond the reference, bucky:
//!
//! - validates every header structurally before trusting it (offsets, overlaps, file length), so garbage or
//!   truncated files give an [`Error`], never a panic or a huge allocation;
//! - is transactional: an operation that fails changes nothing on disk (see [`WhisperBuf`]);
//! - creates files atomically (temp file, fsync, no-replace link) and locks with `flock(2)` through an RAII
//!   guard with a bounded wait, on the inode still at the path once locked ([`WhisperFile::open_locked`],
//!   [`LockedOpen`]);
//! - has a safe heal, [`FillMode::Safe`], that only ever writes empty slots of the same archive;
//! - recognises go-whisper's compressed files (go-carbon's `compressed = true`) by their magic and refuses
//!   to parse them ([`Error::Compressed`]); [`WhisperData`] carries either kind whole.
//!
//! Every operation takes an explicit `now`, so results are deterministic.
//!
//! ```
//! use whisper::{create, CreateOptions, Point, Retention, WhisperFile};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("cpu.wsp");
//! let retentions = Retention::parse_list("1m:1h,5m:1d")?;
//! create(&path, &retentions, &CreateOptions::default())?;
//!
//! let now = 1_699_999_980; // a whole minute, so points land on their own timestamps
//! let file = WhisperFile::open_rw(&path)?;
//! file.update_many(&[Point::new(now - 60, 1.0), Point::new(now - 120, 3.0)], now)?;
//! let series = file.fetch(now - 300, None, now, None)?.expect("inside the retention");
//! assert_eq!(series.step, 60);
//! assert_eq!(series.points().collect::<Vec<_>>(), vec![(now - 120, 3.0), (now - 60, 1.0)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod aggregation;
mod buf;
mod compressed;
mod coverage;
mod create;
mod data;
mod diff;
mod digest;
pub mod durable;
mod engine;
mod error;
mod fetch;
mod file;
mod fill;
mod header;
mod inspect;
mod lock;
mod locked;
mod merge;
mod modify;
mod pyset;
mod ranges;
mod retention;
mod slot;
mod sparse;

pub use aggregation::AggregationMethod;
pub use buf::WhisperBuf;
pub use compressed::{is_compressed, COMPRESSED_MAGIC};
pub use coverage::{count_points, coverage, coverage_exact, Coverage};
pub use create::{create, header_for, CreateOptions};
pub use data::WhisperData;
pub use diff::{diff, ArchiveDiff, DiffOptions, DiffPoint};
pub use digest::{digest, ArchiveDigest, RangeDigest, RANGE_POINTS};
pub use error::{Error, Result};
pub use fetch::Series;
pub use file::{LockedWhisperFile, WhisperFile};
pub use fill::{fill, fill_buf, fill_buf_counted, FillCounts, FillMode, FillOptions, FillReport};
pub use header::{ArchiveInfo, Header, POINT_SIZE};
pub use inspect::{check_file, known_points, KnownPoints};
pub use lock::{LockMode, WhisperLock, DEFAULT_LOCK_TIMEOUT};
pub use locked::{LockedFile, LockedOpen};
pub use merge::{merge, merge_buf};
pub use modify::{
    backup_path, resize, resize_archive, resize_buf, set_aggregation, set_aggregation_method, AggregationChange,
    ResizeOptions,
};
pub use ranges::{coalesce_ranges, MAX_COALESCE_GAP};
pub use retention::{validate_archive_list, Retention};
pub use slot::Point;
pub use sparse::{sparsify, SparsifyOptions, SparsifyReport};
