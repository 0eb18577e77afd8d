//! Finding the whisper files under the paths an operator gives, the way buckytools' tools walk a tree:
//! lexical order, `.wsp` regular files only, symlinks not followed, hidden directories skipped.
//!
//! Go's tools skip a directory when its *full path* starts with a dot, so a walk of `./whisper` (or of
//! `.`) finds nothing while `/data/.snapshot` is walked; here a directory is skipped when its own name
//! starts with a dot, and a root given on the command line is always walked.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the walk found.
#[derive(Debug)]
pub(crate) enum Found<'a> {
    /// A whisper file to look at.
    File(&'a Path),
    /// A path that could not be looked at (a missing root, an unreadable directory).
    Problem(&'a Path, io::Error),
}

/// Calls `each` with every whisper file under `roots`, in order. A root that is a file is visited whatever
/// its name (the operator named it); directories are walked for `*.wsp`. Problems are reported the same
/// way and the walk goes on.
pub(crate) fn whisper_files(roots: &[PathBuf], each: &mut dyn FnMut(Found<'_>)) {
    for root in roots {
        match std::fs::metadata(root) {
            Ok(meta) if meta.is_dir() => walk_dir(root, each),
            Ok(_) => each(Found::File(root)),
            Err(e) => each(Found::Problem(root, e)),
        }
    }
}

fn walk_dir(dir: &Path, each: &mut dyn FnMut(Found<'_>)) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return each(Found::Problem(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name()),
            Err(e) => each(Found::Problem(dir, e)),
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let path = dir.join(&name);
        let kind = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta.file_type(),
            Err(e) => {
                each(Found::Problem(&path, e));
                continue;
            }
        };
        if kind.is_dir() {
            if !name.as_bytes().starts_with(b".") {
                walk_dir(&path, each);
            }
        } else if kind.is_file() && name.as_bytes().ends_with(b".wsp") {
            each(Found::File(&path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_in_lexical_order_skipping_hidden_dirs_symlinks_and_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(".root"); // a hidden root is still walked
        for p in ["b/z.wsp", "b/a.wsp", "a.wsp", ".hidden/x.wsp", "c/.k.wsp", "c/notes.txt", "c/d/e.wsp"] {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        std::os::unix::fs::symlink(root.join("a.wsp"), root.join("link.wsp")).unwrap();
        std::os::unix::fs::symlink(root.join("b"), root.join("linkdir")).unwrap();
        let mut seen = Vec::new();
        let mut problems = Vec::new();
        let roots = [root.clone(), root.join("c/notes.txt"), root.join("missing")];
        whisper_files(&roots, &mut |found| match found {
            Found::File(p) => seen.push(p.strip_prefix(&root).unwrap().to_owned()),
            Found::Problem(p, _) => problems.push(p.to_owned()),
        });
        let seen: Vec<&str> = seen.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(seen, ["a.wsp", "b/a.wsp", "b/z.wsp", "c/.k.wsp", "c/d/e.wsp", "c/notes.txt"]);
        assert_eq!(problems, [root.join("missing")]);
    }
}
