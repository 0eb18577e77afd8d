//! go-carbon's file-list-cache (`[carbonserver] file-list-cache`): the list of files its carbonserver wrote
//! at the end of its last scan of the data dir, read instead of walking the store (`--file-list-cache`).
//!
//! Two formats, told apart as go-carbon 0.17.1 tells them (`carbonserver/flc.go`), by the first bytes of
//! the decompressed stream:
//! - **v2**: gzip; the magic `\x7fflc02`, then per entry the path's length (u64 big-endian), the path, four
//!   u64 big-endian stats (logical size, physical size, data points, first seen) and one `\n`.
//! - **v1**: gzip text, one path per line (go-carbon's default `file-list-cache-version = 1`).
//!
//! Paths are relative to go-carbon's data-dir with a leading `/`. Without `trie-index` go-carbon lists the
//! directories too (the root as an empty path); only `*.wsp` entries are metrics, and they go through the
//! walk's rules (`walk.rs`): hidden parts are skipped, names that cannot be addressed through the API are
//! counted and skipped. What the walk also skips but a list of names cannot show (a symlink named `*.wsp`)
//! is listed, as go-carbon lists it.
//!
//! The file is decoded as a stream (a 64 KiB buffer; only the names are kept) and read to its end before
//! a list is returned: any error — a gzip stream cut short, a bad CRC, an entry cut or out of shape — rejects
//! the whole file, so a half list is never served. Path lengths are bounded (go-carbon's own bound), so a
//! hostile length field cannot make it allocate.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bucky_wire::MAX_NAME_LEN;
use flate2::read::MultiGzDecoder;

use crate::names::Packed;

/// The first bytes of a v2 file-list-cache (decompressed): 0x7f and `flc02`, six bytes.
pub(crate) const MAGIC_V2: &[u8; 6] = b"\x7fflc02";

/// Longest path accepted in an entry: go-carbon's own reader's bound (twice Linux's `PATH_MAX`).
pub(crate) const MAX_PATH_LEN: usize = 2 * 4096;

/// Bytes after a v2 entry's path: four u64 stats and the separator.
const V2_TAIL: usize = 4 * 8 + 1;

/// Size of the buffer the decompressed stream is read through.
const BUFFER: usize = 64 * 1024;

/// How many listed files are looked for under the prefix before the list is trusted.
const SAMPLE: usize = 8;

/// The format of a file-list-cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Version {
    /// Plain text, one path per line.
    #[default]
    V1,
    /// Binary entries after the magic.
    V2,
}

impl Version {
    /// go-carbon's number for it (`file-list-cache-version`).
    pub(crate) fn number(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }
}

/// Why a file-list-cache was not used. The walk is used instead.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FlcError {
    /// The file does not exist (go-carbon has not finished a scan yet, or the path is wrong).
    #[error("it does not exist")]
    Missing,
    /// The file cannot be opened or read.
    #[error("cannot read it: {0}")]
    Read(io::Error),
    /// Written longer ago than the list's lifetime: go-carbon is not rescanning (stopped, or a
    /// `scan-frequency` longer than `--timeout`).
    #[error("it was last written {age_secs} s ago, longer than --timeout ({limit_secs} s): is go-carbon rescanning?")]
    Stale {
        /// Seconds since it was written.
        age_secs: u64,
        /// `--timeout`.
        limit_secs: u64,
    },
    /// It ends in the middle of the gzip stream or of an entry.
    #[error("it is truncated after {entries} entries")]
    Truncated {
        /// Entries read whole.
        entries: u64,
    },
    /// It is not a gzip stream, fails its CRC, or holds an entry out of shape.
    #[error("it is corrupt after {entries} entries: {what}")]
    Corrupt {
        /// Entries read whole.
        entries: u64,
        /// What is wrong.
        what: String,
    },
    /// None of the files it lists exist under the prefix: it is another tree's.
    #[error("none of the {sampled} files sampled from it exist under {prefix}: is --prefix go-carbon's data-dir?")]
    Foreign {
        /// Files looked for.
        sampled: usize,
        /// The agent's prefix.
        prefix: PathBuf,
    },
}

/// A list read from a file-list-cache.
#[derive(Debug)]
pub(crate) struct Listing {
    /// The format it was in.
    pub(crate) version: Version,
    /// Metric names, sorted, without duplicates.
    pub(crate) names: Packed,
    /// Entries in the file (directories included).
    pub(crate) entries: u64,
    /// `*.wsp` entries skipped because their names cannot be metric names.
    pub(crate) unaddressable: u64,
    /// When go-carbon wrote it.
    pub(crate) modified: SystemTime,
}

/// Reads the file-list-cache at `path` if it was written within `max_age`, and checks that its files are
/// under `prefix` (a few of them, see [`SAMPLE`]).
pub(crate) fn load(path: &Path, prefix: &Path, max_age: Duration) -> Result<Listing, FlcError> {
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => FlcError::Missing,
        _ => FlcError::Read(e),
    })?;
    // The open file's own time: go-carbon replaces the file by a rename, and this is the one being read.
    let modified = file.metadata().and_then(|m| m.modified()).map_err(FlcError::Read)?;
    let age = SystemTime::now().duration_since(modified).unwrap_or_default();
    if age > max_age {
        return Err(FlcError::Stale { age_secs: age.as_secs(), limit_secs: max_age.as_secs() });
    }
    let decoded = decode(file)?;
    let names = decoded.names.sorted();
    check_sample(prefix, &names)?;
    Ok(Listing {
        version: decoded.version,
        names,
        entries: decoded.entries,
        unaddressable: decoded.unaddressable,
        modified,
    })
}

/// Whether a few listed files, spread over the list, exist under `prefix`: a list of another tree (a
/// prefix that is not go-carbon's data-dir) would otherwise be served as this one's.
fn check_sample(prefix: &Path, names: &Packed) -> Result<(), FlcError> {
    let sampled = names.len().min(SAMPLE);
    let exists = |name: &str| {
        let path = prefix.join(format!("{}.wsp", name.replace('.', "/")));
        std::fs::symlink_metadata(path).is_ok()
    };
    if sampled == 0 || (0..sampled).any(|i| exists(names.get(i * names.len() / sampled))) {
        return Ok(());
    }
    Err(FlcError::Foreign { sampled, prefix: prefix.to_owned() })
}

/// What the walk would make of a listed file's path (relative to the store, without `.wsp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    /// A part starts with `.`: the walk skips it without counting it.
    Hidden,
    /// Too long, or a part that cannot be part of a metric name ([`crate::walk::addressable_part`]).
    Unaddressable,
    /// A metric: its name is the path with `/` as `.`.
    Metric,
}

/// The walk's rules for one path, in one pass over its bytes: with a million entries, splitting each path
/// once per rule was most of the time a file-list-cache took to read. The same as
/// `hidden if any part starts with '.', else unaddressable if too long or any part is not
/// addressable_part` (tested against that).
fn classify(relative: &str) -> PathKind {
    let bytes = relative.as_bytes();
    let mut addressable = bytes.len() <= MAX_NAME_LEN;
    let mut part_start = true;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'/' => {
                addressable &= !part_start; // an empty part
                part_start = true;
                continue;
            }
            b'.' if part_start => return PathKind::Hidden,
            b'.' => addressable = false,
            // Control characters: C0 and DEL in ASCII, C1 (U+0080 to U+009F) as 0xC2 0x80..=0x9F in UTF-8.
            0..=0x1f | 0x7f => addressable = false,
            0xc2 if bytes.get(i + 1).is_some_and(|next| (0x80..=0x9f).contains(next)) => addressable = false,
            _ => {}
        }
        part_start = false;
    }
    if part_start || !addressable {
        PathKind::Unaddressable
    } else {
        PathKind::Metric
    }
}

/// What a decoded file holds.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// Its format (v1 for an empty stream).
    pub(crate) version: Version,
    /// Metric names, in the file's order.
    pub(crate) names: Packed,
    /// Entries read.
    pub(crate) entries: u64,
    /// `*.wsp` entries skipped because their names cannot be metric names.
    pub(crate) unaddressable: u64,
}

impl Decoded {
    /// Takes one path from the file.
    fn push(&mut self, path: &[u8]) {
        self.entries += 1;
        // Directories (and the root, an empty path) are listed too; only whisper files are metrics.
        let Some(stem) = path.strip_suffix(b".wsp") else { return };
        let Some(relative) = std::str::from_utf8(stem).ok().and_then(|s| s.strip_prefix('/')) else {
            self.unaddressable += 1;
            return;
        };
        match classify(relative) {
            // The walk skips hidden directories and files without counting them.
            PathKind::Hidden => {}
            PathKind::Unaddressable => self.unaddressable += 1,
            PathKind::Metric => self.names.push_path(relative),
        }
    }

    fn error(&self, e: io::Error) -> FlcError {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => FlcError::Truncated { entries: self.entries },
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
                FlcError::Corrupt { entries: self.entries, what: e.to_string() }
            }
            _ => FlcError::Read(e),
        }
    }

    fn corrupt(&self, what: String) -> FlcError {
        FlcError::Corrupt { entries: self.entries, what }
    }
}

/// Decodes a whole file-list-cache (gzip-compressed, either version) from `gz`.
pub(crate) fn decode(gz: impl Read) -> Result<Decoded, FlcError> {
    // Go's gzip reader reads concatenated members as one stream; so does this one.
    let mut stream = BufReader::with_capacity(BUFFER, MultiGzDecoder::new(gz));
    let mut out = Decoded::default();
    let mut head = [0u8; MAGIC_V2.len()];
    let got = read_up_to(&mut stream, &mut head).map_err(|e| out.error(e))?;
    if &head[..got] == MAGIC_V2 {
        out.version = Version::V2;
        decode_v2(&mut stream, &mut out)?;
    } else {
        out.version = Version::V1;
        decode_v1(&mut (&head[..got]).chain(stream), &mut out)?;
    }
    Ok(out)
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
fn read_up_to(stream: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn decode_v2(stream: &mut impl BufRead, out: &mut Decoded) -> Result<(), FlcError> {
    let mut path = Vec::new();
    let mut length = [0u8; 8];
    let mut tail = [0u8; V2_TAIL];
    loop {
        // The stream may end only between entries (and only after the gzip trailer checked out).
        if stream.fill_buf().map_err(|e| out.error(e))?.is_empty() {
            return Ok(());
        }
        stream.read_exact(&mut length).map_err(|e| out.error(e))?;
        let len = u64::from_be_bytes(length);
        let len = match usize::try_from(len) {
            Ok(len) if len <= MAX_PATH_LEN => len,
            _ => return Err(out.corrupt(format!("a path length of {len} bytes (at most {MAX_PATH_LEN})"))),
        };
        path.resize(len, 0);
        stream.read_exact(&mut path).map_err(|e| out.error(e))?;
        stream.read_exact(&mut tail).map_err(|e| out.error(e))?;
        if tail[V2_TAIL - 1] != b'\n' {
            return Err(out.corrupt("an entry not ended by its separator".to_owned()));
        }
        out.push(&path);
    }
}

fn decode_v1(stream: &mut impl BufRead, out: &mut Decoded) -> Result<(), FlcError> {
    let mut line = Vec::new();
    // A path, a `\r` (Go's scanner drops one) and the `\n`.
    let limit = MAX_PATH_LEN as u64 + 2;
    loop {
        line.clear();
        let read = stream.by_ref().take(limit).read_until(b'\n', &mut line).map_err(|e| out.error(e))?;
        if read == 0 {
            return Ok(());
        }
        match line.last() {
            Some(b'\n') => {
                line.pop();
            }
            // The last line may lack its newline; a longer one is not a path.
            _ if read as u64 == limit => {
                return Err(out.corrupt(format!("a line longer than {MAX_PATH_LEN} bytes")));
            }
            _ => {}
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        out.push(&line);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// A v2 file-list-cache of `paths`, byte for byte as go-carbon 0.17.1 writes one.
    pub(crate) fn v2(paths: &[&str]) -> Vec<u8> {
        gzip(&v2_raw(paths))
    }

    fn v2_raw(paths: &[&str]) -> Vec<u8> {
        let mut raw = MAGIC_V2.to_vec();
        for (i, path) in paths.iter().enumerate() {
            raw.extend_from_slice(&(path.len() as u64).to_be_bytes());
            raw.extend_from_slice(path.as_bytes());
            for stat in [17_308u64, 16_384, 1440, i as u64] {
                raw.extend_from_slice(&stat.to_be_bytes());
            }
            raw.push(b'\n');
        }
        raw
    }

    /// A v1 file-list-cache of `paths`.
    pub(crate) fn v1(paths: &[&str]) -> Vec<u8> {
        gzip(paths.iter().map(|p| format!("{p}\n")).collect::<String>().as_bytes())
    }

    /// What go-carbon lists for a tree: the root, directories, files of every kind, in its walk's order.
    const TREE: &[&str] = &[
        "",
        "/a",
        "/a/b",
        "/a/b/c.wsp",
        "/a/b/f.wsp",
        "/a/b-c.wsp",
        "/a/d.wsp",
        "/a/z.txt",
        "/a/.y.wsp",
        "/.hidden",
        "/.hidden/x.wsp",
        "/a.b",
        "/a.b/c.wsp",
        "/a/b.c.wsp",
        "/e.wsp",
    ];
    const NAMES: &[&str] = &["a.b-c", "a.b.c", "a.b.f", "a.d", "e"];

    fn names(decoded: &Decoded) -> Vec<&str> {
        let mut names: Vec<&str> = decoded.names.iter().collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn both_versions_give_the_walks_names() {
        for (bytes, version) in [(v2(TREE), Version::V2), (v1(TREE), Version::V1)] {
            let decoded = decode(&bytes[..]).unwrap();
            assert_eq!(decoded.version, version);
            assert_eq!(names(&decoded), NAMES, "{version:?}");
            assert_eq!(decoded.entries, TREE.len() as u64);
            // a.b/c.wsp and a/b.c.wsp, as the walk counts them (hidden ones are not counted).
            assert_eq!(decoded.unaddressable, 2);
        }
    }

    #[test]
    fn version_detection_reads_short_and_empty_v1_streams() {
        // Shorter than the magic: a v1 file of one path.
        let decoded = decode(&v1(&["/e.wsp"])[..]).unwrap();
        assert_eq!((decoded.version, names(&decoded)), (Version::V1, vec!["e"]));
        // The last line without its newline, and a CRLF.
        let decoded = decode(&gzip(b"/a/b.wsp\r\n/c.wsp")[..]).unwrap();
        assert_eq!(names(&decoded), ["a.b", "c"]);
        // An empty stream (a tree without files, v1) and a bare magic (the same, v2).
        let decoded = decode(&gzip(b"")[..]).unwrap();
        assert_eq!((decoded.version, decoded.entries), (Version::V1, 0));
        let decoded = decode(&gzip(MAGIC_V2)[..]).unwrap();
        assert_eq!((decoded.version, decoded.entries), (Version::V2, 0));
        // Two gzip members read as one stream, as Go's reader does.
        let mut two = v1(&["/a.wsp"]);
        two.extend(v1(&["/b.wsp"]));
        assert_eq!(names(&decode(&two[..]).unwrap()), ["a", "b"]);
    }

    #[test]
    fn every_cut_of_the_file_is_refused() {
        for bytes in [v2(TREE), v1(TREE)] {
            for cut in 0..bytes.len() {
                let err = decode(&bytes[..cut]).expect_err(&format!("cut at {cut} of {}", bytes.len()));
                assert!(matches!(err, FlcError::Truncated { .. } | FlcError::Corrupt { .. }), "cut at {cut}: {err}");
            }
        }
        // Cut inside the gzip data: truncated.
        let bytes = v2(TREE);
        assert!(matches!(decode(&bytes[..bytes.len() - 4]).unwrap_err(), FlcError::Truncated { .. }));
        // A valid gzip stream of a v2 stream cut in the middle of an entry.
        let raw = v2_raw(TREE);
        for cut in [MAGIC_V2.len() + 3, MAGIC_V2.len() + 8 + 2, raw.len() - 1] {
            let err = decode(&gzip(&raw[..cut])[..]).unwrap_err();
            assert!(matches!(err, FlcError::Truncated { .. }), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn corrupt_files_are_refused() {
        let bytes = v2(TREE);
        // A flipped bit in the compressed data, in the CRC, in the length.
        for at in [bytes.len() / 2, bytes.len() - 6, bytes.len() - 2] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            let err = decode(&bad[..]).expect_err(&format!("flip at {at}"));
            assert!(matches!(err, FlcError::Corrupt { .. }), "flip at {at}: {err}");
        }
        // Not gzip at all (a plain list, longer than a gzip header).
        let err = decode(&b"/a/b/c/d/e.wsp\n/f.wsp\n"[..]).unwrap_err();
        assert!(matches!(err, FlcError::Corrupt { .. }), "{err:?}");
        // An entry whose stats are one byte short: the separator is not where it belongs.
        let mut raw = v2_raw(&["/a.wsp", "/b.wsp"]);
        raw.remove(MAGIC_V2.len() + 8 + 6 + 3);
        let err = decode(&gzip(&raw)[..]).unwrap_err();
        assert!(err.to_string().contains("separator"), "{err}");
    }

    #[test]
    fn hostile_lengths_are_refused_without_allocating() {
        for len in [u64::MAX, 1 << 40, (MAX_PATH_LEN + 1) as u64] {
            let mut raw = MAGIC_V2.to_vec();
            raw.extend_from_slice(&len.to_be_bytes());
            raw.extend_from_slice(b"/a.wsp");
            let err = decode(&gzip(&raw)[..]).unwrap_err();
            assert!(err.to_string().contains(&format!("a path length of {len} bytes")), "{err}");
        }
        // A path at the bound is read (and is too long for a metric name).
        let long = format!("/{}.wsp", "x".repeat(MAX_PATH_LEN - 5));
        let decoded = decode(&v2(&[&long])[..]).unwrap();
        assert_eq!((decoded.names.len(), decoded.unaddressable), (0, 1));
        // A v1 line over the bound, with or without a newline after it.
        for tail in ["", "\n/a.wsp\n"] {
            let text = format!("/{}{tail}", "x".repeat(MAX_PATH_LEN + 5));
            let err = decode(&gzip(text.as_bytes())[..]).unwrap_err();
            assert!(err.to_string().contains("a line longer than"), "{err}");
        }
    }

    #[test]
    fn classify_agrees_with_the_walks_rule_part_by_part() {
        use crate::walk::addressable_part;

        fn by_parts(relative: &str) -> PathKind {
            if relative.split('/').any(|part| part.starts_with('.')) {
                PathKind::Hidden
            } else if relative.len() > MAX_NAME_LEN || !relative.split('/').all(addressable_part) {
                PathKind::Unaddressable
            } else {
                PathKind::Metric
            }
        }
        let seed: u64 = std::env::var("BUCKY_FLC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xf1c_0002);
        let mut state = seed;
        let alphabet = ["a", "b", "/", ".", "-", "_", "\u{1}", "\u{7f}", "\u{85}", "\u{a0}", "é", "\u{9f}", "\u{c2}"];
        for case in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 9) as usize;
            let path: String =
                (0..len).map(|k| alphabet[((state >> (8 + 4 * k)) % alphabet.len() as u64) as usize]).collect();
            assert_eq!(classify(&path), by_parts(&path), "seed {seed:#x}, case {case}: {path:?}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!((classify(&long), by_parts(&long)), (PathKind::Unaddressable, PathKind::Unaddressable));
        assert_eq!(classify(&"x".repeat(MAX_NAME_LEN)), PathKind::Metric);
    }

    #[test]
    fn load_checks_presence_age_and_tree() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("whisper");
        std::fs::create_dir_all(prefix.join("a/b")).unwrap();
        std::fs::write(prefix.join("a/b/c.wsp"), b"").unwrap();
        let path = dir.path().join("flc.bin");
        let hour = Duration::from_secs(3600);
        assert!(matches!(load(&path, &prefix, hour).unwrap_err(), FlcError::Missing));
        std::fs::write(&path, v2(&["", "/a", "/a/b", "/a/b/c.wsp", "/a/b/gone.wsp"])).unwrap();
        let listing = load(&path, &prefix, hour).unwrap();
        assert_eq!(listing.names.iter().collect::<Vec<_>>(), ["a.b.c", "a.b.gone"]);
        assert_eq!((listing.version, listing.entries), (Version::V2, 5));
        // Written two hours ago.
        let file = File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - 2 * hour).unwrap();
        let err = load(&path, &prefix, hour).unwrap_err();
        assert!(matches!(err, FlcError::Stale { limit_secs: 3600, .. }), "{err}");
        assert!(load(&path, &prefix, 3 * hour).is_ok());
        // Another tree's list.
        std::fs::write(&path, v1(&["/x/y.wsp", "/z.wsp"])).unwrap();
        let err = load(&path, &prefix, hour).unwrap_err();
        assert!(matches!(err, FlcError::Foreign { sampled: 2, .. }), "{err}");
        // No metrics at all is an empty list, not another tree's.
        std::fs::write(&path, v2(&["", "/a"])).unwrap();
        assert!(load(&path, &prefix, hour).unwrap().names.is_empty());
    }
}
