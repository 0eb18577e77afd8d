//! `create`: a new whisper file, published atomically.

use std::path::Path;

use crate::aggregation::AggregationMethod;
use crate::buf::WhisperBuf;
use crate::durable::TempFile;
use crate::error::{Error, Result};
use crate::header::Header;
use crate::retention::{validate_archive_list, Retention};

/// Options of [`create`]; the defaults are whisper's (average, xff 0.5, fully allocated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreateOptions {
    /// Aggregation method of the lower archives.
    pub aggregation: AggregationMethod,
    /// xFilesFactor, 0..=1 (stored as f32).
    pub x_files_factor: f64,
    /// Leave the zero-filled archives as holes.
    pub sparse: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions { aggregation: AggregationMethod::Average, x_files_factor: 0.5, sparse: false }
    }
}

/// The header whisper's `create` would write, after the same validation (archives sorted by precision).
pub fn header_for(retentions: &[Retention], options: &CreateOptions) -> Result<Header> {
    let mut archives = retentions.to_vec();
    validate_archive_list(&mut archives)?;
    Ok(Header::for_retentions(&archives, options.aggregation, checked_xff(options.x_files_factor)?))
}

/// An xFilesFactor as whisper stores it (f32), after its range check.
pub(crate) fn checked_xff(xff: f64) -> Result<f32> {
    // `not 0 <= xff <= 1` lets NaN through in whisper and makes an unreadable file; refuse it.
    if xff.is_nan() {
        return Err(Error::Refused(
            "xFilesFactor NaN would make a file no whisper reader accepts; use a value between 0 and 1".into(),
        ));
    }
    if !(0.0..=1.0).contains(&xff) {
        return Err(Error::InvalidXFilesFactor(xff));
    }
    Ok(xff as f32)
}

/// Creates a whisper file byte-identical to whisper's `create(path, archives, xff, agg, sparse)`.
///
/// Unlike the reference, nothing appears at `path` until the file is complete: it is written to a temp file
/// in the same directory, fsynced, and linked into place only if `path` still does not exist; every
/// validation error is raised before anything touches the disk.
pub fn create(path: &Path, retentions: &[Retention], options: &CreateOptions) -> Result<()> {
    let header = header_for(retentions, options)?;
    if path.exists() {
        return Err(Error::AlreadyExists(path.to_owned()));
    }
    let image = WhisperBuf::empty(header);
    let temp = TempFile::new_for(path)?;
    temp.write_content(image.as_bytes(), options.sparse)?;
    if temp.publish_new(path)? {
        Ok(())
    } else {
        Err(Error::AlreadyExists(path.to_owned()))
    }
}
