//! serval's artifact storage: model files and preprocess code, content-addressed by sha256.
//!
//! The default home is a local folder (`<home>/artifacts/<sha256>/<file name>`); `--destination`
//! URIs (`s3://`, `gs://`, `azure://`, `http(s)://`, `file://`) go through the `object_store`
//! crate to `<destination>/<sha256>/<file name>`. Folders are packed into a deterministic tar.gz
//! first, so the same content always gives the same hash and unpacks with its sibling files.

mod cache;
mod pack;

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

pub use cache::{Evicted, cached, evict, fetch};
pub use pack::{PACKAGE_SUFFIX, pack_dir, unpack, unpack_once};

/// What went wrong with an artifact, named by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The source file or object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The URI or file cannot be used as given.
    #[error("{0}")]
    InvalidInput(String),
    /// The storage could not be reached or written.
    #[error("{0}")]
    Unavailable(String),
    /// The content is not what the registry recorded.
    #[error("{0}")]
    Corrupt(String),
}

impl ArtifactError {
    pub fn kind(&self) -> &'static str {
        match self {
            ArtifactError::NotFound(_) => "not_found",
            ArtifactError::InvalidInput(_) => "invalid_input",
            ArtifactError::Unavailable(_) => "unavailable",
            ArtifactError::Corrupt(_) => "corrupt",
        }
    }
}

pub type Result<T, E = ArtifactError> = std::result::Result<T, E>;

/// An artifact after it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    /// Where it is: `file:///...` for the local home, else under the destination URI.
    pub uri: String,
    pub sha256: String,
    pub size: u64,
}

/// Reports bytes processed so far (for progress bars).
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

const CHUNK: usize = 1 << 20;

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ArtifactError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ArtifactError::NotFound(format!("{what} '{}' not found", path.display()))
    } else {
        ArtifactError::Unavailable(format!("{what} '{}': {e}", path.display()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 and size of a file, reporting progress.
pub fn hash_file(path: &Path, progress: Progress<'_>) -> Result<(String, u64)> {
    let file = File::open(path).map_err(|e| io_error("file", path, e))?;
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| io_error("file", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok((hex(&hasher.finalize()), done))
}

/// sha256 of bytes in memory.
pub fn hash_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A file name safe to use as the last path segment of a stored artifact.
fn checked_name(name: &str) -> Result<&str> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(ArtifactError::InvalidInput(format!(
            "'{name}' cannot be used as an artifact file name"
        )));
    }
    Ok(name)
}

/// The local content-addressed artifact folder.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

impl ArtifactStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ArtifactStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn prepare(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| io_error("artifact folder", &self.root, e))?;
        std::path::absolute(&self.root).map_err(|e| io_error("artifact folder", &self.root, e))
    }

    /// Moves a finished temporary file to `<root>/<sha256>/<name>`; an existing copy wins.
    fn settle(
        &self,
        root: &Path,
        tmp: tempfile::NamedTempFile,
        sha: &str,
        name: &str,
        size: u64,
    ) -> Result<StoredArtifact> {
        let dir = root.join(sha);
        std::fs::create_dir_all(&dir).map_err(|e| io_error("artifact folder", &dir, e))?;
        let target = dir.join(name);
        if !target.exists() {
            tmp.persist(&target)
                .map_err(|e| io_error("artifact", &target, e.error))?;
        }
        Ok(StoredArtifact {
            uri: file_uri(&target)?,
            sha256: sha.to_string(),
            size,
        })
    }

    /// Copies a file into the store, hashing it on the way.
    pub fn put_file(
        &self,
        src: &Path,
        name: &str,
        progress: Progress<'_>,
    ) -> Result<StoredArtifact> {
        let name = checked_name(name)?;
        let root = self.prepare()?;
        let file = File::open(src).map_err(|e| io_error("file", src, e))?;
        if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(ArtifactError::InvalidInput(format!(
                "'{}' is a folder, not a file",
                src.display()
            )));
        }
        let mut reader = BufReader::with_capacity(CHUNK, file);
        let mut tmp = tempfile::NamedTempFile::new_in(&root)
            .map_err(|e| io_error("artifact folder", &root, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| io_error("file", src, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| io_error("artifact", tmp.path(), e))?;
            size += n as u64;
            progress(size);
        }
        tmp.flush()
            .map_err(|e| io_error("artifact", tmp.path(), e))?;
        self.settle(&root, tmp, &hex(&hasher.finalize()), name, size)
    }

    /// Stores bytes (a packed folder, a code file) under `name`.
    pub fn put_bytes(&self, bytes: &[u8], name: &str) -> Result<StoredArtifact> {
        let name = checked_name(name)?;
        let root = self.prepare()?;
        let mut tmp = tempfile::NamedTempFile::new_in(&root)
            .map_err(|e| io_error("artifact folder", &root, e))?;
        tmp.write_all(bytes)
            .map_err(|e| io_error("artifact", tmp.path(), e))?;
        self.settle(&root, tmp, &hash_bytes(bytes), name, bytes.len() as u64)
    }
}

/// `file://` URI of a local path.
pub fn file_uri(path: &Path) -> Result<String> {
    let abs = std::path::absolute(path).map_err(|e| io_error("path", path, e))?;
    url::Url::from_file_path(&abs)
        .map(String::from)
        .map_err(|_| ArtifactError::InvalidInput(format!("'{}' has no file URI", abs.display())))
}

/// The URI schemes `--destination` and `--url` accept.
pub const SUPPORTED_SCHEMES: &[&str] = &[
    "file", "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl", "http", "https",
];

/// Parses and checks a storage URI.
pub fn parse_uri(uri: &str) -> Result<url::Url> {
    let url = url::Url::parse(uri).map_err(|e| {
        ArtifactError::InvalidInput(format!(
            "'{uri}' is not a URI ({e}); expected e.g. s3://bucket/models"
        ))
    })?;
    if !SUPPORTED_SCHEMES.contains(&url.scheme()) {
        return Err(ArtifactError::InvalidInput(format!(
            "unsupported storage scheme '{}' in '{uri}' (supported: {})",
            url.scheme(),
            SUPPORTED_SCHEMES.join(", ")
        )));
    }
    // object_store knows `azure://` as `az://`.
    if url.scheme() == "azure" {
        let rewritten = format!("az{}", &uri["azure".len()..]);
        return url::Url::parse(&rewritten).map_err(|e| ArtifactError::InvalidInput(e.to_string()));
    }
    Ok(url)
}

/// Opens the object store a URI points into, configured from the environment (`AWS_*`,
/// `GOOGLE_*`, `AZURE_*`, as the cloud SDKs read them).
fn object_store_for(url: &url::Url) -> Result<(Box<dyn object_store::ObjectStore>, ObjectPath)> {
    let options = std::env::vars().filter(|(k, _)| {
        k.starts_with("AWS_")
            || k.starts_with("GOOGLE_")
            || k.starts_with("AZURE_")
            || k.starts_with("AZURITE_")
    });
    object_store::parse_url_opts(url, options)
        .map_err(|e| ArtifactError::InvalidInput(format!("cannot use storage '{url}': {e}")))
}

fn storage_error(uri: &str, e: object_store::Error) -> ArtifactError {
    match e {
        object_store::Error::NotFound { .. } => {
            ArtifactError::NotFound(format!("'{uri}' not found"))
        }
        other => ArtifactError::Unavailable(format!("storage '{uri}': {other}")),
    }
}

/// Uploads a file to `<destination>/<sha256>/<name>` through `object_store`, reporting progress
/// while hashing (first half) and while uploading (second half) as bytes of `2 * size`.
pub async fn upload(
    destination: &str,
    src: &Path,
    name: &str,
    progress: Progress<'_>,
) -> Result<StoredArtifact> {
    let name = checked_name(name)?;
    let dest = parse_uri(destination)?;
    let (sha, size) = hash_file(src, progress)?;
    let (store, base) = object_store_for(&dest)?;
    let location = ObjectPath::from_iter(base.parts().chain([sha.as_str().into(), name.into()]));
    // The URI as the user wrote it (`azure://` stays `azure://`).
    let target_uri = join_uri(destination, &sha, name);

    write_object(&*store, &location, src, &target_uri, &|done| {
        progress(size + done)
    })
    .await?;
    Ok(StoredArtifact {
        uri: target_uri,
        sha256: sha,
        size,
    })
}

/// Streams a local file to `location` in chunks, reporting the bytes sent.
async fn write_object(
    store: &dyn object_store::ObjectStore,
    location: &ObjectPath,
    src: &Path,
    target_uri: &str,
    progress: Progress<'_>,
) -> Result<()> {
    let upload = store
        .put_multipart(location)
        .await
        .map_err(|e| storage_error(target_uri, e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 * CHUNK);
    let file = File::open(src).map_err(|e| io_error("file", src, e))?;
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(io_error("file", src, e));
            }
        };
        if n == 0 {
            break;
        }
        if let Err(e) = writer.wait_for_capacity(4).await {
            return Err(storage_error(target_uri, e));
        }
        writer.write(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    writer
        .finish()
        .await
        .map_err(|e| storage_error(target_uri, e))?;
    Ok(())
}

/// Copies a local file to the object at `uri` (replacing it), as it is: no hash, no folder of
/// its own (payload log files, whose names are unique).
pub async fn put_file(uri: &str, src: &Path) -> Result<()> {
    let url = parse_uri(uri)?;
    let (store, location) = object_store_for(&url)?;
    write_object(&*store, &location, src, uri, &|_| {}).await
}

fn join_uri(base: &str, sha: &str, name: &str) -> String {
    let mut text = base.to_string();
    if !text.ends_with('/') {
        text.push('/');
    }
    format!("{text}{sha}/{name}")
}

/// Size of the object at a URI, if it exists (checks a `--url` before registering it).
pub async fn head(uri: &str) -> Result<u64> {
    let url = parse_uri(uri)?;
    let (store, path) = object_store_for(&url)?;
    let meta = store.head(&path).await.map_err(|e| storage_error(uri, e))?;
    Ok(meta.size)
}

/// Runs an async artifact operation from synchronous code (the CLI).
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ArtifactError::Unavailable(format!("cannot start the I/O runtime: {e}")))?;
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_content_addressed() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("model.json");
        std::fs::write(&src, b"{\"a\": 1}").unwrap();
        let store = ArtifactStore::new(dir.path().join("artifacts"));
        let a = store.put_file(&src, "model.json", &|_| {}).unwrap();
        let b = store.put_file(&src, "model.json", &|_| {}).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.sha256, hash_bytes(b"{\"a\": 1}"));
        assert_eq!(a.size, 8);
        assert!(a.uri.starts_with("file:///"));
        assert!(
            a.uri
                .ends_with(&format!("/artifacts/{}/model.json", a.sha256))
        );
        let path = url::Url::parse(&a.uri).unwrap().to_file_path().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"{\"a\": 1}");
    }

    #[test]
    fn missing_source_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path());
        let err = store
            .put_file(&dir.path().join("nope"), "nope", &|_| {})
            .unwrap_err();
        assert_eq!(err.kind(), "not_found");
    }

    #[test]
    fn uris_are_checked() {
        assert!(parse_uri("s3://bucket/models").is_ok());
        assert_eq!(parse_uri("gs://bucket/models").unwrap().scheme(), "gs");
        assert_eq!(parse_uri("azure://container/x").unwrap().scheme(), "az");
        assert_eq!(parse_uri("ftp://x/y").unwrap_err().kind(), "invalid_input");
        assert_eq!(parse_uri("not a uri").unwrap_err().kind(), "invalid_input");
    }

    #[test]
    fn upload_to_a_file_destination_goes_through_object_store() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("m.txt");
        std::fs::write(&src, b"tree").unwrap();
        let dest_dir = dir.path().join("remote");
        std::fs::create_dir_all(&dest_dir).unwrap();
        let dest = file_uri(&dest_dir).unwrap();
        let stored = block_on(upload(&dest, &src, "m.txt", &|_| {}))
            .unwrap()
            .unwrap();
        assert_eq!(stored.uri, format!("{dest}/{}/m.txt", hash_bytes(b"tree")));
        let on_disk = dest_dir.join(&stored.sha256).join("m.txt");
        assert_eq!(std::fs::read(on_disk).unwrap(), b"tree");
        assert_eq!(block_on(head(&stored.uri)).unwrap().unwrap(), 4);
        assert_eq!(
            block_on(head(&format!("{dest}/nope")))
                .unwrap()
                .unwrap_err()
                .kind(),
            "not_found"
        );
    }
}
