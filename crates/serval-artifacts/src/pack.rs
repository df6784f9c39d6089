//! Deterministic folder packing: the same files always give the same bytes (sorted entries,
//! zero timestamps and owners, fixed modes), so a packed folder's sha256 changes only when its
//! content does. Caches (`__pycache__`, `*.pyc`) and VCS folders are left out.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::{ArtifactError, Result, io_error};

/// File name suffix of a packed folder.
pub const PACKAGE_SUFFIX: &str = ".tar.gz";

fn skipped(name: &str) -> bool {
    matches!(name, "__pycache__" | ".git" | ".hg" | ".svn" | ".DS_Store") || name.ends_with(".pyc")
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<(String, bool)>) -> Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| io_error("folder", &dir, e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| io_error("folder", &dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(ArtifactError::InvalidInput(format!(
                "'{}' has a file name that is not UTF-8",
                entry.path().display()
            )));
        };
        if skipped(name) {
            continue;
        }
        let rel_path = rel.join(name);
        let kind = entry
            .file_type()
            .map_err(|e| io_error("file", &entry.path(), e))?;
        let meta =
            std::fs::metadata(entry.path()).map_err(|e| io_error("file", &entry.path(), e))?;
        let rel_text = rel_path.to_string_lossy().replace('\\', "/");
        if meta.is_dir() && !kind.is_symlink() {
            out.push((rel_text, true));
            collect(root, &rel_path, out)?;
        } else if meta.is_file() {
            out.push((rel_text, false));
        }
    }
    Ok(())
}

/// Packs a folder into tar.gz bytes with the folder's content at the archive root.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(dir).map_err(|e| io_error("folder", dir, e))?;
    if !meta.is_dir() {
        return Err(ArtifactError::InvalidInput(format!(
            "'{}' is not a folder",
            dir.display()
        )));
    }
    let mut entries = Vec::new();
    collect(dir, Path::new(""), &mut entries)?;
    let encoder = GzEncoder::new(Vec::new(), Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for (rel, is_dir) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let tar_err =
            |e: std::io::Error| ArtifactError::Unavailable(format!("packing '{rel}': {e}"));
        if is_dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, format!("{rel}/"), std::io::empty())
                .map_err(tar_err)?;
        } else {
            let path = dir.join(&rel);
            let data = std::fs::read(&path).map_err(|e| io_error("file", &path, e))?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            builder
                .append_data(&mut header, &rel, data.as_slice())
                .map_err(tar_err)?;
        }
    }
    let encoder = builder
        .into_inner()
        .map_err(|e| ArtifactError::Unavailable(format!("packing '{}': {e}", dir.display())))?;
    let mut bytes = encoder
        .finish()
        .map_err(|e| ArtifactError::Unavailable(format!("packing '{}': {e}", dir.display())))?;
    bytes.flush().ok();
    Ok(bytes)
}

/// Unpacks a packed folder into `dest`, refusing entries that would land outside it.
pub fn unpack(bytes: &[u8], dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(|e| io_error("folder", dest, e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let bad = |e: std::io::Error| ArtifactError::InvalidInput(format!("not a packed folder: {e}"));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(ArtifactError::InvalidInput(format!(
                "packed folder has an unsafe path '{}'",
                path.display()
            )));
        }
        entry.unpack_in(dest).map_err(bad)?;
    }
    Ok(())
}

/// Unpacks a packed folder into `dest` unless it is there already, atomically: into a staging
/// folder of its own (unique per call, so two loads of the same folder at once never share one),
/// then renamed into place. A staging folder is removed whatever happens; when another load got
/// there first, its folder is kept.
pub fn unpack_once(bytes: &[u8], dest: &Path) -> Result<()> {
    static STAGING: AtomicU64 = AtomicU64::new(0);
    if dest.is_dir() {
        return Ok(());
    }
    let mut staging = dest.as_os_str().to_owned();
    staging.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        STAGING.fetch_add(1, Ordering::Relaxed)
    ));
    let staging = PathBuf::from(staging);
    let _ = std::fs::remove_dir_all(&staging);
    let unpacked = unpack(bytes, &staging).and_then(|()| {
        match std::fs::rename(&staging, dest) {
            Ok(()) => Ok(()),
            // Another load moved the same folder into place first.
            Err(_) if dest.is_dir() => Ok(()),
            Err(e) => Err(io_error("folder", dest, e)),
        }
    });
    let _ = std::fs::remove_dir_all(&staging);
    unpacked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) {
        std::fs::create_dir_all(root.join("pkg/sub")).unwrap();
        std::fs::create_dir_all(root.join("pkg/__pycache__")).unwrap();
        std::fs::write(root.join("pkg/__init__.py"), "from .helper import f\n").unwrap();
        std::fs::write(root.join("pkg/helper.py"), "def f(): return 1\n").unwrap();
        std::fs::write(root.join("pkg/sub/data.txt"), "x").unwrap();
        std::fs::write(root.join("pkg/__pycache__/helper.cpython-311.pyc"), "junk").unwrap();
    }

    #[test]
    fn packing_is_deterministic_and_round_trips() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        tree(a.path());
        tree(b.path());
        let packed_a = pack_dir(&a.path().join("pkg")).unwrap();
        // Different mtimes and an extra cache file must not change the bytes.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(b.path().join("pkg/helper.py"), "def f(): return 1\n").unwrap();
        std::fs::write(b.path().join("pkg/x.pyc"), "junk").unwrap();
        let packed_b = pack_dir(&b.path().join("pkg")).unwrap();
        assert_eq!(packed_a, packed_b);

        let out = tempfile::tempdir().unwrap();
        unpack(&packed_a, out.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("helper.py")).unwrap(),
            "def f(): return 1\n"
        );
        assert!(out.path().join("sub/data.txt").exists());
        assert!(!out.path().join("__pycache__").exists());

        std::fs::write(b.path().join("pkg/helper.py"), "def f(): return 2\n").unwrap();
        assert_ne!(pack_dir(&b.path().join("pkg")).unwrap(), packed_a);
    }

    /// Loads of the same packed folder at once (two endpoints, an empty cache) each unpack into
    /// a staging folder of their own: all succeed, the folder is whole, no staging folder stays.
    #[test]
    fn loads_at_once_unpack_the_same_folder_without_clashing() {
        let src = tempfile::tempdir().unwrap();
        tree(src.path());
        for file in 0..200 {
            std::fs::write(src.path().join(format!("pkg/sub/{file}.txt")), "data").unwrap();
        }
        let packed = pack_dir(&src.path().join("pkg")).unwrap();
        for _ in 0..10 {
            let cache = tempfile::tempdir().unwrap();
            let dest = cache.path().join("unpacked");
            std::thread::scope(|scope| {
                let loads: Vec<_> = (0..4)
                    .map(|_| scope.spawn(|| unpack_once(&packed, &dest)))
                    .collect();
                for load in loads {
                    load.join().unwrap().unwrap();
                }
            });
            assert!(dest.join("helper.py").is_file());
            assert_eq!(std::fs::read_dir(dest.join("sub")).unwrap().count(), 201);
            let left: Vec<_> = std::fs::read_dir(cache.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left, vec![std::ffi::OsString::from("unpacked")]);
        }
        let cache = tempfile::tempdir().unwrap();
        assert!(unpack_once(b"not gzip", &cache.path().join("x")).is_err());
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    }

    #[test]
    fn unpack_rejects_garbage() {
        let out = tempfile::tempdir().unwrap();
        assert_eq!(
            unpack(b"not gzip", out.path()).unwrap_err().kind(),
            "invalid_input"
        );
    }
}
