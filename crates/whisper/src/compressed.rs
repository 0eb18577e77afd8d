//! go-whisper's compressed files (go-carbon's `[whisper] compressed = true`): recognised by their header, never
//! parsed. Their archives are Gorilla-compressed blocks with per-archive buffers and CRCs, rewritten in
//! place or replaced by a larger copy ("extend") as they fill; bucky cannot read their points, so it never
//! fills, merges or rewrites one. It can only copy one whole, as bytes, to a path that has no file.
//!
//! Every parse of a file as standard whisper ([`crate::Header::parse`], hence [`crate::WhisperFile`] and
//! [`crate::WhisperBuf`]) refuses one with [`crate::Error::Compressed`], which says what can be done instead.
//! [`crate::WhisperData`] is what carries either kind of file between the nodes.

use crate::error::{Error, Result};

/// The first bytes of every compressed file (go-whisper's `compressedMagicString`).
pub const COMPRESSED_MAGIC: &[u8] = b"whisper_compressed";

/// Whether `bytes` (a file's beginning, at least [`COMPRESSED_MAGIC`]'s length) is a compressed file's.
pub fn is_compressed(bytes: &[u8]) -> bool {
    bytes.starts_with(COMPRESSED_MAGIC)
}

/// [`Error::Compressed`] for `path` if `bytes` begin as a compressed file does.
pub(crate) fn refuse(bytes: &[u8], path: &std::path::Path) -> Result<()> {
    match is_compressed(bytes) {
        true => Err(Error::Compressed { path: path.to_owned() }),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{create, CreateOptions, Retention, WhisperBuf, WhisperData, WhisperFile};

    /// The first bytes go-whisper 0.17's `CreateWithOptions(..., Compressed: true)` writes: the magic, then
    /// version 1, then the aggregation method (big-endian 1, average).
    fn compressed_file() -> Vec<u8> {
        let mut bytes = COMPRESSED_MAGIC.to_vec();
        bytes.push(1);
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.resize(4096, 0);
        bytes
    }

    #[test]
    fn a_compressed_file_is_recognised_everywhere_a_file_is_parsed() {
        let bytes = compressed_file();
        assert!(is_compressed(&bytes));
        assert!(WhisperData::from_bytes(bytes.clone()).unwrap().is_compressed());
        let err = WhisperBuf::from_bytes(bytes.clone()).unwrap_err();
        assert!(matches!(err, Error::Compressed { .. }), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wsp");
        std::fs::write(&path, &bytes).unwrap();
        for err in [
            WhisperFile::open(&path).unwrap_err(),
            WhisperFile::open_rw(&path).unwrap_err(),
            WhisperFile::open_locked(&path, crate::LockMode::Exclusive, std::time::Duration::ZERO).unwrap_err(),
            crate::check_file(&path).unwrap_err(),
        ] {
            let message = err.to_string();
            assert!(matches!(err, Error::Compressed { .. }), "{message}");
            assert!(message.starts_with(&format!("{}: compressed whisper file", path.display())), "{message}");
            assert!(!message.contains('\n'), "one line: {message}");
            assert!(!err.is_invalid_file(), "a compressed file is not a corrupt one");
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing changed");
    }

    #[test]
    fn standard_files_and_near_misses_are_not_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wsp");
        create(&path, &Retention::parse_list("1m:1h").unwrap(), &CreateOptions::default()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(!is_compressed(&bytes));
        assert!(WhisperData::from_bytes(bytes).unwrap().standard().is_some());
        // A shorter prefix of the magic (a file being created) is not recognised: it is a truncated file.
        let partial = COMPRESSED_MAGIC[..10].to_vec();
        assert!(!is_compressed(&partial));
        assert!(WhisperBuf::from_bytes(partial).unwrap_err().is_invalid_file());
        let mut other = compressed_file();
        other[0] = b'W';
        assert!(matches!(WhisperBuf::from_bytes(other).unwrap_err(), Error::Corrupt { .. }));
    }
}
