//! The payload writer: one thread per server that takes records from a bounded buffer and
//! writes them to Parquet files, Hive-partitioned as
//! `<destination>/ep=<url with / as _>/date=YYYY-MM-DD/hour=HH/<unique>.parquet`, one open file
//! per destination and endpoint, rolled over by size, by age, at the turn of the hour and when
//! the endpoint's columns change. Object-storage destinations are written to a local spool
//! folder first and uploaded by a second thread that retries until the upload succeeds (a file
//! stays in the spool until then, across restarts).
//!
//! Nothing here blocks a request: [`PayloadWriter::offer`] either queues the record or says it
//! was dropped (the buffer is full, or the writer has stopped).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::MonitorError;
use crate::file::{PARTIAL, PayloadFile};
use crate::record::{Record, Schema};

/// Records the buffer holds at most, and bytes.
const BUFFER_RECORDS: usize = 16_384;
const BUFFER_BYTES: usize = 64 << 20;
/// The largest record the buffer can take (a larger one is dropped before it is copied).
pub const MAX_RECORD_BYTES: usize = BUFFER_BYTES;
/// How often the writer takes what the buffer holds (and checks open files' age). It sleeps in
/// between rather than waiting on the channel: a request's offer then never wakes a thread
/// (measured: waking the writer for every record cost a third of the throughput at sample 1.0).
const DRAIN: Duration = Duration::from_millis(10);
/// How often open files are checked for age.
const TICK: Duration = Duration::from_millis(200);
/// Waits between upload attempts of one file: doubled from the first to the last.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_LAST: Duration = Duration::from_secs(30);

/// Where a payload log's files go: a local folder (`file:///…`) or object storage
/// (`s3://`, `gs://`, `azure://`, `az://`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    uri: String,
    /// The folder of a `file://` destination.
    local: Option<PathBuf>,
}

impl Destination {
    /// Checks a `--destination`.
    pub fn parse(uri: &str) -> Result<Destination, MonitorError> {
        let invalid = |why: String| MonitorError::InvalidInput(why);
        if let Some(path) = uri.strip_prefix("file://") {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(invalid(format!(
                    "--destination '{uri}' must name an absolute folder (file:///path/to/logs)"
                )));
            }
            return Ok(Destination {
                uri: uri.trim_end_matches('/').to_string(),
                local: Some(path.to_path_buf()),
            });
        }
        let url = serval_artifacts::parse_uri(uri).map_err(|e| invalid(e.to_string()))?;
        if matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "--destination '{uri}': payload logs are written to file://, s3://, gs:// or azure:// destinations"
            )));
        }
        Ok(Destination {
            uri: uri.trim_end_matches('/').to_string(),
            local: None,
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The folder files are written in: the destination itself, or its spool folder.
    fn root(&self, spool: &Path) -> PathBuf {
        match &self.local {
            Some(path) => path.clone(),
            None => spool.join(spool_name(&self.uri)),
        }
    }
}

/// The spool folder of an object-storage destination: named by its URI's hash, with the URI
/// written beside the files (`destination`), so files left by a stopped server are uploaded by
/// the next.
fn spool_name(uri: &str) -> String {
    let hash = Sha256::digest(uri.as_bytes());
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// When a payload log's files are closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    pub max_bytes: u64,
    pub max_age: Duration,
}

/// A payload log as the writer sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub destination: Destination,
    pub rolling: Rolling,
}

/// What became of one endpoint's records (read at scrape time).
#[derive(Debug, Default)]
pub struct Tally {
    /// Queued for writing.
    pub accepted: AtomicU64,
    /// In a complete file.
    pub written: AtomicU64,
    /// Not logged: the buffer was full, the writer had stopped, or the file could not be written.
    pub dropped: AtomicU64,
}

enum Message {
    Record {
        target: Arc<Target>,
        schema: Schema,
        tally: Arc<Tally>,
        record: Record,
        size: usize,
    },
    /// Close every file and stop.
    Close,
}

/// The server's payload writer.
pub struct PayloadWriter {
    sender: SyncSender<Message>,
    closed: std::sync::atomic::AtomicBool,
    queued: Arc<AtomicUsize>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    uploads: Arc<Uploads>,
}

impl PayloadWriter {
    /// Starts the writer; `spool` holds object-storage destinations' files until uploaded
    /// (files left there by an earlier run are uploaded now), `instance` makes file names unique
    /// across servers.
    pub fn start(spool: PathBuf, instance: &str) -> PayloadWriter {
        PayloadWriter::start_held(spool, instance, None)
    }

    /// [`start`](PayloadWriter::start), with a writer that takes nothing from the buffer until
    /// `hold` gives a value (or closes): a stalled destination, for tests.
    fn start_held(spool: PathBuf, instance: &str, hold: Option<Receiver<()>>) -> PayloadWriter {
        let (sender, receiver) = std::sync::mpsc::sync_channel(BUFFER_RECORDS);
        let queued = Arc::new(AtomicUsize::new(0));
        let uploads = Arc::new(Uploads::default());
        let mut threads = Vec::new();
        let writer = Writer {
            spool: spool.clone(),
            instance: instance
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(12)
                .collect(),
            files: HashMap::new(),
            sequence: 0,
            queued: queued.clone(),
            uploads: uploads.clone(),
        };
        if let Ok(thread) = std::thread::Builder::new()
            .name("payload-writer".into())
            .spawn(move || {
                if let Some(hold) = hold {
                    let _ = hold.recv();
                }
                writer.run(receiver)
            })
        {
            threads.push(thread);
        }
        let uploader = uploads.clone();
        if let Ok(thread) = std::thread::Builder::new()
            .name("payload-upload".into())
            .spawn(move || uploader.run(&spool))
        {
            threads.push(thread);
        }
        PayloadWriter {
            sender,
            closed: std::sync::atomic::AtomicBool::new(false),
            queued,
            threads: Mutex::new(threads),
            uploads,
        }
    }

    /// Queues `record` for `target`'s files; `false`: dropped (counted in `tally`).
    pub fn offer(
        &self,
        target: &Arc<Target>,
        schema: &Schema,
        tally: &Arc<Tally>,
        record: Record,
    ) -> bool {
        let size = record.size();
        let dropped = || {
            tally.dropped.fetch_add(1, Ordering::Relaxed);
            false
        };
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > BUFFER_BYTES {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            return dropped();
        }
        let message = Message::Record {
            target: target.clone(),
            schema: schema.clone(),
            tally: tally.clone(),
            record,
            size,
        };
        if self.closed.load(Ordering::Relaxed) {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            return dropped();
        }
        match self.sender.try_send(message) {
            Ok(()) => {
                tally.accepted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(size, Ordering::Relaxed);
                dropped()
            }
        }
    }

    /// Writes every record accepted so far, closes every file, and gives uploads until
    /// `deadline` (files not uploaded by then stay in the spool for the next start). Records
    /// offered afterwards are dropped.
    pub fn close(&self, deadline: Instant) {
        if !self.closed.swap(true, Ordering::Relaxed) {
            let _ = self.sender.send(Message::Close);
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        let mut threads = threads.into_iter();
        if let Some(writer) = threads.next() {
            let _ = writer.join();
        }
        self.uploads.stop(deadline);
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Files waiting for their upload.
    pub fn pending_uploads(&self) -> usize {
        lock(&self.uploads.state).queue.len()
    }
}

impl Drop for PayloadWriter {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Relaxed) {
            self.close(Instant::now());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The open file of one destination and endpoint.
struct Open {
    file: PayloadFile,
    target: Arc<Target>,
    tally: Arc<Tally>,
    /// `date=…/hour=…` of its records.
    hour: i64,
}

struct Writer {
    spool: PathBuf,
    instance: String,
    /// By destination URI and endpoint url.
    files: HashMap<(String, String), Open>,
    sequence: u64,
    queued: Arc<AtomicUsize>,
    uploads: Arc<Uploads>,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Message>) {
        let mut checked = Instant::now();
        let mut idle = true;
        'run: loop {
            if idle {
                std::thread::sleep(DRAIN);
            }
            // At most a buffer's worth at a time, so that files' ages are checked under load.
            idle = true;
            for _ in 0..BUFFER_RECORDS {
                match receiver.try_recv() {
                    Ok(Message::Record {
                        target,
                        schema,
                        tally,
                        record,
                        size,
                    }) => {
                        self.queued.fetch_sub(size, Ordering::Relaxed);
                        self.add(target, schema, tally, record);
                        idle = false;
                    }
                    // Close comes after every record offered before `close` (FIFO); the server
                    // closes once its requests have drained.
                    Ok(Message::Close) | Err(TryRecvError::Disconnected) => break 'run,
                    Err(TryRecvError::Empty) => {
                        idle = true;
                        break;
                    }
                }
            }
            if checked.elapsed() >= TICK {
                checked = Instant::now();
                let old: Vec<_> = self
                    .files
                    .iter()
                    .filter(|(_, open)| open.file.opened.elapsed() >= open.target.rolling.max_age)
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in old {
                    self.finish(&key);
                }
            }
        }
        let all: Vec<_> = self.files.keys().cloned().collect();
        for key in all {
            self.finish(&key);
        }
    }

    fn add(&mut self, target: Arc<Target>, schema: Schema, tally: Arc<Tally>, record: Record) {
        let key = (
            target.destination.uri().to_string(),
            record.endpoint.clone(),
        );
        let hour = record.time_us.div_euclid(3_600_000_000);
        let stale = self.files.get(&key).is_some_and(|open| {
            open.hour != hour || open.file.schema() != &schema || open.target != target
        });
        if stale {
            self.finish(&key);
        }
        if !self.files.contains_key(&key) {
            let root = target.destination.root(&self.spool);
            if target.destination.local.is_none()
                && let Err(e) = mark_spool(&root, target.destination.uri())
            {
                tracing::warn!("payload log: {e}");
            }
            self.sequence += 1;
            let path = root
                .join(partition(&record.endpoint, record.time_us))
                .join(format!(
                    "{}-{}-{}.parquet",
                    record.time_us / 1000,
                    self.instance,
                    self.sequence
                ));
            match PayloadFile::create(path, schema) {
                Ok(file) => {
                    self.files.insert(
                        key.clone(),
                        Open {
                            file,
                            target: target.clone(),
                            tally: tally.clone(),
                            hour,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!("payload log: cannot start a file: {e}");
                    tally.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        let Some(open) = self.files.get_mut(&key) else {
            return;
        };
        open.tally = tally;
        if let Err(e) = open.file.push(record) {
            tracing::warn!("payload log: {e}");
            if let Some(open) = self.files.remove(&key) {
                let rows = open.file.rows() as u64;
                open.tally.dropped.fetch_add(rows, Ordering::Relaxed);
                open.file.abandon();
            }
            return;
        }
        if open.file.size() as u64 >= open.target.rolling.max_bytes {
            self.finish(&key);
        }
    }

    /// Completes a file (renamed to its final name; queued for upload when remote).
    fn finish(&mut self, key: &(String, String)) {
        let Some(open) = self.files.remove(key) else {
            return;
        };
        let rows = open.file.rows() as u64;
        match open.file.finish() {
            Ok(path) => {
                open.tally.written.fetch_add(rows, Ordering::Relaxed);
                if open.target.destination.local.is_none() {
                    let root = open.target.destination.root(&self.spool);
                    self.uploads
                        .push(open.target.destination.uri().to_string(), root, path);
                }
            }
            Err(e) => {
                tracing::warn!("payload log: {rows} records lost: {e}");
                open.tally.dropped.fetch_add(rows, Ordering::Relaxed);
            }
        }
    }
}

/// `ep=<url with / as _>/date=YYYY-MM-DD/hour=HH` of a record.
pub fn partition(endpoint: &str, time_us: i64) -> PathBuf {
    let seconds = time_us.div_euclid(1_000_000);
    let (year, month, day) = civil_date(seconds.div_euclid(86_400));
    let hour = seconds.rem_euclid(86_400) / 3_600;
    PathBuf::from(format!("ep={}", endpoint.replace('/', "_")))
        .join(format!("date={year:04}-{month:02}-{day:02}"))
        .join(format!("hour={hour:02}"))
}

/// The proleptic Gregorian date of a day counted from 1970-01-01.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn mark_spool(root: &Path, uri: &str) -> Result<(), MonitorError> {
    let marker = root.join("destination");
    if marker.is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(root)
        .and_then(|()| std::fs::write(&marker, uri))
        .map_err(|e| MonitorError::Write(format!("{}: {e}", marker.display())))
}

/// One file to upload.
struct Upload {
    /// The destination URI; the object is `<uri>/<path relative to root>`.
    uri: String,
    root: PathBuf,
    path: PathBuf,
    attempts: u32,
    due: Instant,
}

#[derive(Default)]
struct UploadState {
    queue: Vec<Upload>,
    /// Stop once the queue is empty or this passes.
    stop: Option<Instant>,
}

/// The upload thread's queue.
#[derive(Default)]
struct Uploads {
    state: Mutex<UploadState>,
    wake: std::sync::Condvar,
}

impl Uploads {
    fn push(&self, uri: String, root: PathBuf, path: PathBuf) {
        lock(&self.state).queue.push(Upload {
            uri,
            root,
            path,
            attempts: 0,
            due: Instant::now(),
        });
        self.wake.notify_one();
    }

    fn stop(&self, deadline: Instant) {
        lock(&self.state).stop = Some(deadline);
        self.wake.notify_one();
    }

    /// Files an earlier run left in the spool: complete ones are uploaded, incomplete ones
    /// (the server was killed while writing them) removed.
    fn recover(&self, spool: &Path) {
        let Ok(entries) = std::fs::read_dir(spool) else {
            return;
        };
        for entry in entries.flatten() {
            let root = entry.path();
            let Ok(uri) = std::fs::read_to_string(root.join("destination")) else {
                continue;
            };
            let mut files = Vec::new();
            let mut dirs = vec![root.clone()];
            while let Some(dir) = dirs.pop() {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else if path.extension().is_some_and(|e| e == "parquet") {
                        files.push(path);
                    } else if path.to_string_lossy().ends_with(PARTIAL) {
                        tracing::warn!(
                            "payload log: removing {}, left incomplete by a server that stopped while writing it",
                            path.display()
                        );
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            for path in files {
                self.push(uri.clone(), root.clone(), path);
            }
        }
    }

    fn run(&self, spool: &Path) {
        self.recover(spool);
        loop {
            let next = {
                let mut state = lock(&self.state);
                loop {
                    let now = Instant::now();
                    if let Some(stop) = state.stop
                        && (state.queue.is_empty() || now >= stop)
                    {
                        return;
                    }
                    if let Some(at) = state.queue.iter().position(|u| u.due <= now) {
                        break state.queue.swap_remove(at);
                    }
                    let until = state
                        .queue
                        .iter()
                        .map(|u| u.due)
                        .chain(state.stop)
                        .min()
                        .map_or(Duration::from_secs(3_600), |t| {
                            t.saturating_duration_since(now)
                        });
                    state = self
                        .wake
                        .wait_timeout(state, until)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            };
            let upload = next;
            let Ok(relative) = upload.path.strip_prefix(&upload.root) else {
                continue;
            };
            let key = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let uri = format!("{}/{key}", upload.uri);
            match serval_artifacts::block_on(serval_artifacts::put_file(&uri, &upload.path)) {
                Ok(Ok(())) => {
                    let _ = std::fs::remove_file(&upload.path);
                }
                Ok(Err(e)) => retry(self, upload, &e.to_string()),
                Err(e) => retry(self, upload, &e.to_string()),
            }
        }
    }
}

fn retry(uploads: &Uploads, mut upload: Upload, error: &str) {
    upload.attempts += 1;
    let wait = RETRY_FIRST
        .saturating_mul(1 << upload.attempts.min(5).saturating_sub(1))
        .min(RETRY_LAST);
    tracing::warn!(
        "payload log: upload of {} failed (attempt {}), retrying in {} s: {error}",
        upload.path.display(),
        upload.attempts,
        wait.as_secs()
    );
    upload.due = Instant::now() + wait;
    lock(&uploads.state).queue.push(upload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Column, Kind, Value};

    #[test]
    fn partitions_name_the_endpoint_the_utc_date_and_the_hour() {
        // 2024-02-29T23:59:59.5Z
        let t = 1_709_251_199_500_000;
        assert_eq!(
            partition("iris/2", t),
            PathBuf::from("ep=iris_2/date=2024-02-29/hour=23")
        );
        assert_eq!(
            partition("a", 0),
            PathBuf::from("ep=a/date=1970-01-01/hour=00")
        );
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
    }

    #[test]
    fn destinations_are_checked() {
        assert!(Destination::parse("file:///tmp/logs").is_ok());
        assert!(Destination::parse("s3://bucket/prefix").is_ok());
        for bad in [
            "file://relative/x",
            "https://example.com/x",
            "ftp://x/y",
            "logs",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    fn record(endpoint: &str, time_us: i64) -> Record {
        Record {
            time_us,
            endpoint: endpoint.into(),
            version: None,
            request_id: "r".into(),
            protocol: "clearml",
            status: 200,
            latency_ms: 1.0,
            values: vec![Value::Floats(vec![1.0, 2.0])],
        }
    }

    /// A target writing to `dir`, closing files at `max_bytes`; one float column.
    fn local(dir: &Path, max_bytes: u64) -> (Arc<Target>, Schema) {
        let target = Arc::new(Target {
            destination: Destination::parse(&format!("file://{}", dir.display())).unwrap(),
            rolling: Rolling {
                max_bytes,
                max_age: Duration::from_secs(3_600),
            },
        });
        let schema: Schema = vec![Column {
            name: "in_x".into(),
            kind: Kind::Floats,
        }]
        .into();
        (target, schema)
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    found.push(path);
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn records_go_to_one_file_per_endpoint_and_hour_and_every_accepted_one_is_written_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let spool = tempfile::tempdir().unwrap();
        let writer = PayloadWriter::start(spool.path().to_path_buf(), "instance-1");
        let (target, schema) = local(dir.path(), 64 << 20);
        let tally = Arc::new(Tally::default());
        let hour = 3_600_000_000;
        for i in 0..100 {
            let endpoint = if i % 2 == 0 { "a" } else { "b/1" };
            let time = 1_700_000_000_000_000 / hour * hour + (i / 50) * hour;
            assert!(writer.offer(&target, &schema, &tally, record(endpoint, time)));
        }
        writer.close(Instant::now());
        assert_eq!(tally.accepted.load(Ordering::Relaxed), 100);
        assert_eq!(tally.written.load(Ordering::Relaxed), 100);
        let found = files(dir.path());
        assert_eq!(found.len(), 4, "two endpoints × two hours: {found:?}");
        assert!(found.iter().all(|p| p.extension().unwrap() == "parquet"));
        assert!(
            found[0]
                .to_string_lossy()
                .contains("ep=a/date=2023-11-14/hour=")
        );
        // After close, records are dropped and counted.
        assert!(!writer.offer(&target, &schema, &tally, record("a", 0)));
        assert_eq!(tally.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_stalled_writer_never_blocks_an_offer_and_drops_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = tempfile::tempdir().unwrap();
        let (release, hold) = std::sync::mpsc::channel();
        let writer = PayloadWriter::start_held(spool.path().to_path_buf(), "i", Some(hold));
        let (target, schema) = local(dir.path(), 64 << 20);
        let tally = Arc::new(Tally::default());
        // Nothing is taken from the buffer: past its 16,384 records every offer returns at once
        // with the record dropped.
        let accepted = (0..20_000)
            .filter(|_| writer.offer(&target, &schema, &tally, record("a", 1_700_000_000_000_000)))
            .count();
        assert_eq!(accepted, BUFFER_RECORDS);
        assert_eq!(
            tally.accepted.load(Ordering::Relaxed),
            BUFFER_RECORDS as u64
        );
        assert_eq!(
            tally.dropped.load(Ordering::Relaxed),
            (20_000 - BUFFER_RECORDS) as u64
        );
        release.send(()).unwrap();
        writer.close(Instant::now());
        assert_eq!(tally.written.load(Ordering::Relaxed), BUFFER_RECORDS as u64);
    }

    #[test]
    fn files_roll_over_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let spool = tempfile::tempdir().unwrap();
        let writer = PayloadWriter::start(spool.path().to_path_buf(), "i");
        let (target, schema) = local(dir.path(), 1);
        let tally = Arc::new(Tally::default());
        for _ in 0..5 {
            writer.offer(&target, &schema, &tally, record("a", 1_700_000_000_000_000));
        }
        writer.close(Instant::now());
        assert_eq!(files(dir.path()).len(), 5, "one record per file at 1 byte");
    }
}
