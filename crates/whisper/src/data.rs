//! [`WhisperData`]: a whole file as it travels between nodes, standard (parsed) or compressed (bytes).

use crate::buf::WhisperBuf;
use crate::compressed::is_compressed;
use crate::error::Result;

/// A whole file as received or read: a standard whisper file, validated, or a compressed one, kept as bytes.
#[derive(Debug, Clone)]
pub enum WhisperData {
    /// A standard whisper file: its points can be read, verified and filled.
    Standard(WhisperBuf),
    /// A go-whisper compressed file: only ever copied whole.
    Compressed(Vec<u8>),
}

impl WhisperData {
    /// Recognises a compressed file by its magic; validates anything else as a standard whisper file.
    pub fn from_bytes(data: Vec<u8>) -> Result<WhisperData> {
        if is_compressed(&data) {
            return Ok(WhisperData::Compressed(data));
        }
        WhisperBuf::from_bytes(data).map(WhisperData::Standard)
    }

    /// The file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            WhisperData::Standard(buf) => buf.as_bytes(),
            WhisperData::Compressed(bytes) => bytes,
        }
    }

    /// The standard file, or `None` for a compressed one.
    pub fn standard(&self) -> Option<&WhisperBuf> {
        match self {
            WhisperData::Standard(buf) => Some(buf),
            WhisperData::Compressed(_) => None,
        }
    }

    /// Whether it is a compressed file.
    pub fn is_compressed(&self) -> bool {
        matches!(self, WhisperData::Compressed(_))
    }
}

impl From<WhisperBuf> for WhisperData {
    fn from(buf: WhisperBuf) -> WhisperData {
        WhisperData::Standard(buf)
    }
}
