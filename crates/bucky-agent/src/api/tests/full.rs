//! A full device (a small tmpfs as the prefix; the tests run as root, as in CI): heals answer 507 naming the
//! fix, and leave nothing behind.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A tmpfs mounted on a directory, unmounted (lazily: the agent's threads may still hold it) on drop, also
/// when the test fails.
pub(super) struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    pub(super) fn mount(at: &Path, options: &str) -> Tmpfs {
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(at).status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "mount -t tmpfs on {}: {status:?}; these tests need root (CAP_SYS_ADMIN), as in CI",
            at.display()
        );
        Tmpfs { at: at.to_owned() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// Fills what is left of the device with a plain file, to its last block.
fn fill_up(root: &Path) {
    let mut filler = OpenOptions::new().create_new(true).write(true).open(root.join("filler")).unwrap();
    let block = [1u8; 4096];
    let err = loop {
        if let Err(e) = filler.write_all(&block) {
            break e;
        }
    };
    assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
}

#[track_caller]
fn assert_full_message(message: &str) {
    assert!(message.starts_with("no space left on the device holding "), "{message}");
    assert!(message.ends_with(": free space or stop sending heals to this node"), "{message}");
}

#[tokio::test]
async fn a_heal_on_a_full_device_answers_507_and_leaves_nothing_behind() {
    let f = Fixture::on_tmpfs("size=1m");
    let new = wsp(&[(1, 1.0)]);
    // A sparse file of carbon's (`--sparse`): its first two blocks allocated, the rest a hole.
    let sparse = wsp(&[(1000, 1.0)]);
    f.put_file("sparse.m", &sparse[..8192]);
    OpenOptions::new().write(true).open(f.root().join("sparse/m.wsp")).unwrap().set_len(sparse.len() as u64).unwrap();
    assert_eq!(f.file("sparse.m").unwrap(), sparse);

    // Creates until the device is full: the first one refused is a 507 naming the fix.
    let mut created = 0;
    let refused = loop {
        let response = f.send(upload(Method::POST, &format!("full.m{created}"), &new)).await;
        if response.status() != StatusCode::OK {
            break response;
        }
        created += 1;
        assert!(created < 100, "1 MiB holds fewer than 100 files of 17 KB");
    };
    assert!(created > 10, "{created}");
    assert_eq!(refused.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_full_message(text(refused).await.trim_end());
    fill_up(f.root());
    let before = f.tree();
    let response = f.send(upload(Method::POST, "full.late", &new)).await;
    assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_full_message(text(response).await.trim_end());
    assert_eq!(f.tree(), before, "no temp file left, nothing created");

    // A fill into the holes of a sparse file is refused before any byte lands: the point at slot 680
    // straddles the allocated block and the hole (bytes 8188..8200), and half of it must not be written.
    let response = f.send(upload(Method::POST, "sparse.m", &wsp(&[(1000, 1.0), (320, 2.0)]))).await;
    assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_full_message(text(response).await.trim_end());
    assert!(f.file("sparse.m").unwrap() == sparse, "the sparse file is unchanged (no half point written)");

    // A batch: the create is a 507 entry, the fill of an allocated file needs no space and goes through.
    let frames = [heal_frame("full.late", &new), heal_frame("full.m0", &wsp(&[(1, 1.0), (2, 2.0)]))];
    let answers = batch_answer(&f, batch_request(batch::HEAL_PATH, &frames), &["full.late", "full.m0"]).await;
    assert_eq!(statuses(&answers), [507, 200]);
    assert_full_message(error_of(&answers[0]));
    assert_eq!(points(&f.file("full.m0").unwrap()), [(1, 1.0), (2, 2.0)]);
    assert_eq!(f.tree(), before, "no temp file left, nothing created");

    // Once space is freed, the same heal goes through.
    fs::remove_file(f.root().join("filler")).unwrap();
    for i in 1..4 {
        fs::remove_file(f.root().join(format!("full/m{i}.wsp"))).unwrap();
    }
    let response = f.send(upload(Method::POST, "full.late", &new)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(f.file("full.late").unwrap(), new);
    let filled = wsp(&[(1000, 1.0), (320, 2.0)]);
    assert_eq!(f.send(upload(Method::POST, "sparse.m", &filled)).await.status(), StatusCode::OK);
    assert_eq!(points(&f.file("sparse.m").unwrap()), [(320, 2.0), (1000, 1.0)]);
}

#[tokio::test]
async fn no_inode_left_for_a_directory_or_a_temp_file_is_a_507() {
    // The root and one more inode.
    let f = Fixture::on_tmpfs("size=1m,nr_inodes=2");
    let new = wsp(&[(1, 1.0)]);
    // The directory takes the last inode: the temp file cannot be created, and the directory the request
    // made is removed again (a failed request changes nothing).
    let response = f.send(upload(Method::POST, "x.m", &new)).await;
    assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_full_message(text(response).await.trim_end());
    assert_eq!(f.tree(), Vec::<String>::new());
    // No inode for the directory.
    fs::create_dir(f.root().join("x")).unwrap();
    let response = f.send(upload(Method::POST, "y.m", &new)).await;
    assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_full_message(text(response).await.trim_end());
    assert_eq!(f.tree(), ["x"]);
    // A replace (PUT) of a file too: refused, nothing left.
    let response = f.send(upload(Method::PUT, "x.m", &new)).await;
    assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(f.tree(), ["x"]);
}

/// A fill writes into the file's holes only after reserving them: with room for the blocks, a fill of a
/// sparse file is exactly what it is without the reservation.
#[test]
fn a_sparse_fill_with_room_writes_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.wsp");
    let sparse = wsp(&[(1000, 1.0)]);
    let file = OpenOptions::new().create_new(true).read(true).write(true).open(&path).unwrap();
    file.write_all_at(&sparse[..4096], 0).unwrap();
    file.set_len(sparse.len() as u64).unwrap();
    let store = crate::store::Store::new(dir.path(), crate::store::StoreOptions::default());
    let name = bucky_wire::MetricName::parse("s").unwrap();
    let src = whisper::WhisperData::from_bytes(wsp(&[(1000, 1.0), (320, 2.0), (5, 3.0)])).unwrap();
    let healed = store.heal(&name, &src, 0, crate::testutil::now()).unwrap();
    assert_eq!(healed, crate::store::Healed::Filled(2));
    assert_eq!(points(&fs::read(&path).unwrap()), [(5, 3.0), (320, 2.0), (1000, 1.0)]);
}
