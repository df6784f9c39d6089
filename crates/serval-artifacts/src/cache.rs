//! The download cache of remote artifacts, shared by every service of a home:
//! `<cache>/blobs/<sha256>/<file name>`. Downloads stream into a temporary file while hashing
//! (an artifact is never held whole in memory), are checked against the registry's sha256, and
//! are moved into place only when complete and correct. Artifacts registered without a sha256
//! (`--url`) are remembered by URI in `<cache>/uris/<sha256 of the URI>`. A file's mtime is its
//! last use, for least-recently-used eviction ([`evict`]).

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use crate::{
    ArtifactError, Result, checked_name, hash_bytes, hex, io_error, object_store_for, parse_uri,
    storage_error,
};

fn blob_path(cache: &Path, sha256: &str, name: &str) -> PathBuf {
    cache.join("blobs").join(sha256).join(name)
}

fn uri_index(cache: &Path, uri: &str) -> PathBuf {
    cache.join("uris").join(hash_bytes(uri.as_bytes()))
}

/// The file name an artifact keeps in the cache: the URI's last segment.
fn file_name(url: &url::Url) -> Result<String> {
    let name = url
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_string))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "model".to_string());
    Ok(checked_name(&name)?.to_string())
}

/// Marks a cached file as just used.
fn touch(path: &Path) {
    if let Ok(file) = File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// The local path of an artifact if it needs no download: `file://` URIs in place, remote ones
/// if already in the cache. Never touches the network.
pub fn cached(uri: &str, sha256: Option<&str>, cache: &Path) -> Option<PathBuf> {
    let url = parse_uri(uri).ok()?;
    if url.scheme() == "file" {
        return url.to_file_path().ok().filter(|p| p.is_file());
    }
    let name = file_name(&url).ok()?;
    let sha = match sha256 {
        Some(sha) => sha.to_string(),
        None => std::fs::read_to_string(uri_index(cache, uri))
            .ok()?
            .trim()
            .to_string(),
    };
    let path = blob_path(cache, &sha, &name);
    path.is_file().then(|| {
        touch(&path);
        path
    })
}

/// A local path holding the artifact at `uri`. `file://` URIs are used in place; anything else is
/// downloaded once into the cache, streaming and hashing, and checked against `sha256` when the
/// registry has one (a mismatch is an error naming both hashes, and nothing is cached).
pub async fn fetch(uri: &str, sha256: Option<&str>, cache: &Path) -> Result<PathBuf> {
    let url = parse_uri(uri)?;
    if url.scheme() == "file" {
        let path = url
            .to_file_path()
            .map_err(|_| ArtifactError::InvalidInput(format!("'{uri}' is not a local path")))?;
        if !path.is_file() {
            return Err(ArtifactError::NotFound(format!(
                "model file '{}' not found",
                path.display()
            )));
        }
        return Ok(path);
    }
    if let Some(path) = cached(uri, sha256, cache) {
        return Ok(path);
    }
    let name = file_name(&url)?;
    let tmp_dir = cache.join("tmp");
    std::fs::create_dir_all(&tmp_dir).map_err(|e| io_error("cache folder", &tmp_dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
        .map_err(|e| io_error("cache folder", &tmp_dir, e))?;

    let (store, path) = object_store_for(&url)?;
    let mut stream = store
        .get(&path)
        .await
        .map_err(|e| storage_error(uri, e))?
        .into_stream();
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| storage_error(uri, e))?;
        hasher.update(&chunk);
        tmp.write_all(&chunk)
            .map_err(|e| io_error("cache file", tmp.path(), e))?;
    }
    tmp.flush()
        .map_err(|e| io_error("cache file", tmp.path(), e))?;
    let actual = hex(&hasher.finalize());
    if let Some(expected) = sha256
        && actual != expected
    {
        return Err(ArtifactError::Corrupt(format!(
            "'{uri}' does not match the registry: its sha256 is {actual}, the registry says {expected}"
        )));
    }
    let target = blob_path(cache, &actual, &name);
    let dir = target.parent().unwrap_or(cache);
    std::fs::create_dir_all(dir).map_err(|e| io_error("cache folder", dir, e))?;
    tmp.persist(&target)
        .map_err(|e| io_error("cache", &target, e.error))?;
    if sha256.is_none() {
        let index = uri_index(cache, uri);
        let index_dir = index.parent().unwrap_or(cache);
        std::fs::create_dir_all(index_dir).map_err(|e| io_error("cache folder", index_dir, e))?;
        let mut entry = tempfile::NamedTempFile::new_in(index_dir)
            .map_err(|e| io_error("cache folder", index_dir, e))?;
        entry
            .write_all(actual.as_bytes())
            .map_err(|e| io_error("cache", entry.path(), e))?;
        entry
            .persist(&index)
            .map_err(|e| io_error("cache", &index, e.error))?;
    }
    Ok(target)
}

/// What [`evict`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub files: usize,
    pub bytes: u64,
    /// Bytes the cache holds afterwards.
    pub kept: u64,
}

/// Removes least-recently-used cached files that are not in `in_use` until the cache holds at
/// most `limit` bytes (files in use are never removed, even if they alone exceed the limit).
pub fn evict(cache: &Path, limit: u64, in_use: &HashSet<PathBuf>) -> Result<Evicted> {
    let blobs = cache.join("blobs");
    let mut files = Vec::new();
    let Ok(dirs) = std::fs::read_dir(&blobs) else {
        return Ok(Evicted::default());
    };
    for dir in dirs.flatten() {
        let Ok(entries) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                files.push((used, meta.len(), entry.path()));
            }
        }
    }
    let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
    files.sort();
    let mut evicted = Evicted::default();
    for (_, size, path) in files {
        if total <= limit {
            break;
        }
        if in_use.contains(&path) {
            continue;
        }
        std::fs::remove_file(&path).map_err(|e| io_error("cached file", &path, e))?;
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        total -= size;
        evicted.files += 1;
        evicted.bytes += size;
    }
    evicted.kept = total;
    Ok(evicted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(cache: &Path, sha: &str, size: usize, age_s: u64) -> PathBuf {
        let path = blob_path(cache, sha, "model.bin");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![0u8; size]).unwrap();
        let used = SystemTime::now() - std::time::Duration::from_secs(age_s);
        File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(used)
            .unwrap();
        path
    }

    #[test]
    fn eviction_removes_least_recently_used_files_not_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let oldest = blob(cache, "a", 100, 300);
        let in_use = blob(cache, "b", 100, 200);
        let newer = blob(cache, "c", 100, 100);
        let newest = blob(cache, "d", 100, 0);
        let keep: HashSet<PathBuf> = [in_use.clone()].into();

        let evicted = evict(cache, 250, &keep).unwrap();
        assert_eq!(evicted.files, 2);
        assert_eq!(evicted.bytes, 200);
        assert_eq!(evicted.kept, 200);
        assert!(!oldest.exists() && !newer.exists());
        assert!(in_use.exists() && newest.exists());
        assert!(!cache.join("blobs/a").exists(), "empty folders go too");

        // A file in use stays even when it alone is over the limit.
        let evicted = evict(cache, 0, &keep).unwrap();
        assert_eq!(evicted.files, 1);
        assert!(in_use.exists() && !newest.exists());
        assert_eq!(evict(cache, 0, &keep).unwrap().kept, 100);
    }

    #[test]
    fn cached_finds_downloads_by_sha256_or_uri_and_never_fetches() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let uri = "s3://bucket/x/model.bin";
        assert_eq!(cached(uri, Some("abc"), cache), None);
        let path = blob_path(cache, "abc", "model.bin");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"m").unwrap();
        assert_eq!(cached(uri, Some("abc"), cache), Some(path.clone()));
        assert_eq!(
            cached(uri, None, cache),
            None,
            "no sha256 and no index entry"
        );
        let index = uri_index(cache, uri);
        std::fs::create_dir_all(index.parent().unwrap()).unwrap();
        std::fs::write(&index, "abc").unwrap();
        assert_eq!(cached(uri, None, cache), Some(path));
    }
}
