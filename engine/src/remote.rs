//! The shared remote cache as the executor uses it (docs/remote-cache.md):
//! lookup of an action's result before running it, verified before anything
//! enters the local store, and the upload of what a build produced, in the
//! background. The cache itself is a [`RemoteCache`] port: the network
//! backends live in the `cairn-remote` crate, the twin in
//! `cairn_core::memory`.
//!
//! Degrade, never fail: every remote error is counted, the first one warns
//! (once per build), and after [`TRIP_AFTER`] failures in a row the circuit
//! breaker opens and the build stops asking; the build goes on locally.

use std::collections::HashMap;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::digest::{ActionKey, ContentDigest};
use crate::plan::PlannedAction;
use crate::ports::{
    ActionPut, BlobStore, PutOutcome, RemoteCache, RemoteError, StoreError, remote_error_of,
};
use crate::record::{EventKind, Manifest, partition_digest};

/// Remote failures in a row after which the build stops asking the cache.
pub const TRIP_AFTER: u32 = 3;

/// The version of the AC entry's layout this cairn writes
/// ([`AcEntry::format`]): `cairn-ac/1` with the small blobs inlined.
pub const AC_FORMAT: &str = "cairn-ac/2";

/// The first layout, every blob in `cas/`: still read.
pub const AC_FORMAT_V1: &str = "cairn-ac/1";

/// An AC entry (`ac/<key hex>`): cairn's own manifest as JSON, with the
/// key it answers, who produced it, and the content of its small blobs.
/// Not a REAPI `ActionResult`: cairn's digests are blake3
/// (docs/remote-cache.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcEntry {
    /// [`AC_FORMAT`] (or [`AC_FORMAT_V1`], read only).
    pub format: String,
    pub key: ActionKey,
    pub producer: Producer,
    /// As recorded where it was built (its `build` is that store's).
    pub manifest: Manifest,
    /// `cairn-ac/2`: blobs of the manifest (output files, logs) of at most
    /// [`INLINE_AT_MOST`] bytes, up to [`INLINE_TOTAL`] per entry, carried
    /// here instead of in `cas/`: one request per action instead of two.
    /// Each is checked against its digest before anything is placed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inline: Vec<InlineBlob>,
}

/// A blob carried in its AC entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineBlob {
    /// Its blake3, as the manifest names it.
    pub digest: ContentDigest,
    /// Its bytes, base64 (standard alphabet, padded).
    pub content: String,
}

/// A blob of at most this many bytes is inlined in its AC entry
/// (docs/remote-cache.md, "Layout on the server").
pub const INLINE_AT_MOST: u64 = 64 * 1024;

/// At most this many bytes are inlined in one entry; the result's other
/// blobs go to `cas/`.
pub const INLINE_TOTAL: u64 = 256 * 1024;

/// A reader of the local store that keeps its first error, so that an
/// upload that failed because of it is not taken for the cache's failure.
struct LocalReads<'a, R> {
    inner: R,
    failed: &'a std::cell::RefCell<Option<std::io::Error>>,
}

impl<R: std::io::Read> std::io::Read for LocalReads<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buffer).inspect_err(|error| {
            let mut failed = self.failed.borrow_mut();
            if failed.is_none() {
                *failed = Some(std::io::Error::new(error.kind(), error.to_string()));
            }
        })
    }
}

/// Who uploaded an entry: informative only, never trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer {
    pub host: String,
    pub cairn: String,
    pub build: u64,
}

impl std::fmt::Display for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host {}, cairn {}, build {}",
            self.host, self.cairn, self.build
        )
    }
}

/// What the remote cache did during one build: what the summary shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteSummary {
    /// The cache's URL, without credentials.
    pub url: String,
    /// Actions restored from the cache.
    pub hits: u64,
    /// Actions looked up and not found (or not looked up: breaker open).
    pub misses: u64,
    /// Entries refused: another key, other inputs, a blob failing
    /// verification (each also an event).
    pub refused: u64,
    /// Failed requests (timeouts, refused connections, error statuses).
    pub errors: u64,
    /// Results uploaded (AC entries written or found written).
    pub uploaded: u64,
    /// Bytes of blobs downloaded and uploaded.
    pub downloaded_bytes: u64,
    pub uploaded_bytes: u64,
    /// Uploads left undone because the build did not wait for them.
    pub abandoned: u64,
    /// Whether the circuit breaker opened.
    pub tripped: bool,
}

/// What a lookup found.
pub enum Lookup {
    /// Restorable: every blob is in the local store, verified. The manifest
    /// is the local one to record (this build's id).
    Hit {
        manifest: Box<Manifest>,
        producer: String,
    },
    /// Nothing usable (absent, or the cache failed): run the job.
    Miss,
    /// An entry was there and refused, for this reason: run the job.
    Refused(String),
}

/// Blobs larger than this are sent only if a HEAD finds the cache lacks
/// them; smaller ones are sent at once (docs/remote-cache.md).
pub const ASK_FIRST_ABOVE: u64 = 64 * 1024;

// A log too long to inline (its size known only once read) is asked for
// first (`Remote::prepare_upload`'s last branch): right only while no blob
// too long to inline is short enough to go without asking.
const _: () = assert!(ASK_FIRST_ABOVE <= INLINE_AT_MOST);

/// How long a lookup's "no entry" stands for the entry's absence when the
/// result is uploaded: a cache with no conditional put then writes the
/// entry without looking again (one request fewer per action). A job that
/// ran longer gets the look, which narrows the window in which two
/// machines may both write a key.
const LOOKUP_STAYS_FRESH: Duration = Duration::from_secs(1);

/// A result whose entry is ready to write, with the blobs sent for it
/// (inlined or not) and their bytes.
type Sent<'a> = (&'a Upload, u64, u64);

/// Results whose blobs travel apart from their entries, prepared (their
/// blobs sent, one request at a time each) at once by one batch
/// ([`Remote::upload_many`]): as many as the upload threads that sent one
/// result each before batches.
const BLOB_SENDERS: usize = 4;

/// Whether some of `upload`'s output files will not fit in its entry
/// ([`INLINE_AT_MOST`], [`INLINE_TOTAL`]), going to `cas/` apart (the
/// job's logs, whose sizes the manifest does not hold, are not counted).
fn travels_apart(upload: &Upload) -> bool {
    let mut total = 0;
    for file in upload
        .manifest
        .outputs
        .iter()
        .flat_map(|output| &output.files)
    {
        if file.size > INLINE_AT_MOST {
            return true;
        }
        total += file.size;
    }
    total > INLINE_TOTAL
}

/// One upload queued by the scheduler: the manifest of an action this
/// build ran.
pub struct Upload {
    pub manifest: Box<Manifest>,
    pub outputs: Vec<crate::refs::PartitionRef>,
}

/// Answers asked ahead that may wait for their workers at once: bounds
/// the entries held (a hit's entry carries its inlined blobs) and how far
/// the lookahead runs before the workers.
pub const AHEAD_AT_MOST: usize = 64;

/// The lookups asked ahead of the workers.
#[derive(Default)]
struct Ahead {
    keys: HashMap<ActionKey, AheadState>,
    /// Answers not taken yet.
    waiting: usize,
    /// The build's workers are done: nothing more is asked.
    ended: bool,
}

enum AheadState {
    /// The request is under way: a worker that needs it waits for it.
    Asking,
    /// What the cache answered ([`Remote::call`]), and when.
    Answered(Option<Option<Vec<u8>>>, Instant),
    /// A worker looked the key up: not asked (again).
    Taken,
}

/// The remote cache of one workspace, with this build's counters.
pub struct Remote {
    cache: Box<dyn RemoteCache>,
    write: bool,
    wait_uploads: bool,
    /// Who we are, for the entries we write.
    host: String,
    failures_in_a_row: AtomicU32,
    /// A request succeeded this build ([`Remote::batch_at_most`]).
    reached: AtomicBool,
    tripped: AtomicBool,
    warned: AtomicBool,
    /// Set when the build ends without waiting: queued uploads are dropped.
    abandon: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    uploaded: AtomicU64,
    abandoned: AtomicU64,
    downloaded_bytes: AtomicU64,
    uploaded_bytes: AtomicU64,
    /// `ActionUploaded` events of finished uploads, for the build's log.
    upload_events: Mutex<Vec<EventKind>>,
    /// When this build's lookup found no entry for a key it may upload: an
    /// upload soon after need not ask again ([`LOOKUP_STAYS_FRESH`]).
    missed_at: Mutex<HashMap<ActionKey, Instant>>,
    /// Lookups asked ahead of the workers ([`Remote::ask_ahead`]).
    ahead: Mutex<Ahead>,
    /// Signalled when a lookup asked ahead is answered or taken.
    answered: Condvar,
    /// Warnings already given (one for failures, one for refused entries).
    warnings: Mutex<Vec<String>>,
    /// Where warnings go (the workspace's notes: stderr on the command line).
    warn: Box<dyn Fn(&str) + Send + Sync>,
}

impl Remote {
    /// `write`: upload what the build runs (read-write mode); `wait_uploads`:
    /// the build waits for its uploads at its end (`--no-upload-wait`
    /// clears it).
    /// Warnings go to `warn`.
    pub fn new(
        cache: Box<dyn RemoteCache>,
        write: bool,
        wait_uploads: bool,
        warn: Box<dyn Fn(&str) + Send + Sync>,
    ) -> Self {
        Remote {
            cache,
            write,
            wait_uploads,
            host: hostname(),
            failures_in_a_row: AtomicU32::new(0),
            reached: AtomicBool::new(false),
            tripped: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            downloaded_bytes: AtomicU64::new(0),
            uploaded_bytes: AtomicU64::new(0),
            upload_events: Mutex::new(Vec::new()),
            missed_at: Mutex::new(HashMap::new()),
            ahead: Mutex::new(Ahead::default()),
            answered: Condvar::new(),
            warnings: Mutex::new(Vec::new()),
            warn,
        }
    }

    pub fn url(&self) -> &str {
        self.cache.url()
    }

    pub fn writes(&self) -> bool {
        self.write
    }

    pub fn waits_for_uploads(&self) -> bool {
        self.wait_uploads
    }

    /// The counters so far.
    pub fn summary(&self) -> RemoteSummary {
        RemoteSummary {
            url: self.url().to_owned(),
            hits: self.hits.load(Ordering::SeqCst),
            misses: self.misses.load(Ordering::SeqCst),
            refused: self.refused.load(Ordering::SeqCst),
            errors: self.errors.load(Ordering::SeqCst),
            uploaded: self.uploaded.load(Ordering::SeqCst),
            downloaded_bytes: self.downloaded_bytes.load(Ordering::SeqCst),
            uploaded_bytes: self.uploaded_bytes.load(Ordering::SeqCst),
            abandoned: self.abandoned.load(Ordering::SeqCst),
            tripped: self.tripped.load(Ordering::SeqCst),
        }
    }

    /// The warnings this build printed about the cache (at most one for
    /// failures, one for refused entries).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn warn_once(&self, flag: &AtomicBool, message: String) {
        if !flag.swap(true, Ordering::SeqCst) {
            (self.warn)(&message);
            self.warnings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(message);
        }
    }

    /// Whether the breaker is open: no more requests this build.
    fn open(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    fn succeeded(&self) {
        self.reached.store(true, Ordering::SeqCst);
        self.failures_in_a_row.store(0, Ordering::SeqCst);
    }

    fn failed(&self, error: &RemoteError) {
        self.errors.fetch_add(1, Ordering::SeqCst);
        let in_a_row = self.failures_in_a_row.fetch_add(1, Ordering::SeqCst) + 1;
        if in_a_row >= TRIP_AFTER {
            self.tripped.store(true, Ordering::SeqCst);
        }
        self.warn_once(
            &self.warned,
            format!(
                "{error}; building locally (further remote cache errors are counted, not shown)"
            ),
        );
    }

    fn call<T>(&self, request: impl FnOnce() -> Result<T, RemoteError>) -> Option<T> {
        if self.open() {
            return None;
        }
        self.answer(request())
    }

    /// Looks `key` up, and on a hit downloads the blobs the local store
    /// lacks, verifying each one's blake3 before it enters `blobs`.
    pub fn lookup(
        &self,
        blobs: &dyn BlobStore,
        action: &PlannedAction,
        key: &ActionKey,
        inputs: &[(&crate::refs::PartitionRef, ContentDigest)],
        build: u64,
    ) -> Lookup {
        let (found, answered_at) = self.entry_of(key);
        let Some(found) = found else {
            self.misses.fetch_add(1, Ordering::SeqCst);
            return Lookup::Miss;
        };
        let Some(bytes) = found else {
            self.misses.fetch_add(1, Ordering::SeqCst);
            if self.write {
                self.missed_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(*key, answered_at);
            }
            return Lookup::Miss;
        };
        let Checked { entry, inline } = match check_entry(&bytes, action, key, inputs) {
            Ok(checked) => checked,
            Err(reason) => return self.refuse(reason),
        };
        let mut manifest = entry.manifest;
        let mut wanted: Vec<ContentDigest> = manifest
            .outputs
            .iter()
            .flat_map(|output| output.files.iter().map(|file| file.digest))
            .filter(|digest| !blobs.contains(digest))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        // The inlined ones are in hand, verified by `check_entry` (and
        // again by the store as they enter it).
        let mut bytes = 0;
        let mut fetched_inline = Vec::new();
        wanted.retain(|digest| match inline.get(digest) {
            Some(content) => {
                fetched_inline.push(self.place_inline(blobs, digest, content));
                false
            }
            None => true,
        });
        // In parallel (the backend's runtime serves several at once); a
        // failing blob stops nothing else, but the action is not restored.
        let mut fetched: Vec<Result<u64, Fetch>> = wanted
            .par_iter()
            .map(|digest| self.fetch(blobs, digest))
            .collect();
        fetched.append(&mut fetched_inline);
        for result in fetched {
            match result {
                Ok(size) => bytes += size,
                Err(Fetch::Failed) => {
                    self.misses.fetch_add(1, Ordering::SeqCst);
                    return Lookup::Miss;
                }
                Err(Fetch::Missing(digest)) => {
                    self.misses.fetch_add(1, Ordering::SeqCst);
                    tracing::debug!("remote cache {}: blob {digest} is missing", self.url());
                    return Lookup::Miss;
                }
                Err(Fetch::Corrupt(digest, actual)) => {
                    return self.refuse(format!(
                        "blob {digest} failed verification (its content hashes to {actual})"
                    ));
                }
            }
        }
        self.downloaded_bytes.fetch_add(bytes, Ordering::SeqCst);
        // The logs are the producer's: kept if they arrive intact, dropped
        // otherwise (the outputs are what counts).
        for log in [&mut manifest.stdout, &mut manifest.stderr] {
            if let Some(digest) = *log
                && !blobs.contains(&digest)
            {
                let placed = match inline.get(&digest) {
                    Some(content) => self.place_inline(blobs, &digest, content),
                    None => self.fetch(blobs, &digest),
                };
                if placed.is_err() {
                    *log = None;
                }
            }
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        manifest.build = build;
        Lookup::Hit {
            manifest: Box::new(manifest),
            producer: entry.producer.to_string(),
        }
    }

    /// Asks the cache for `key`'s entry ahead of the worker that will look
    /// it up: [`Remote::ask_ahead_many`] with one key (the tests' way).
    #[cfg(test)]
    fn ask_ahead(&self, key: &ActionKey) {
        self.ask_ahead_many(std::slice::from_ref(key));
    }

    /// Asks the cache for the entries of `keys` ahead of the workers that
    /// will look them up ([`Remote::lookup`]), which then find the answers
    /// waiting instead of making the round trips on their own paths
    /// (docs/remote-cache.md, "Lookup"). Run by the build's lookahead thread
    /// as actions become ready, with all those that became ready since its
    /// last batch: the requests are in flight together
    /// ([`RemoteCache::get_actions`]). Waits while [`AHEAD_AT_MOST`] answers
    /// wait for their workers (a batch asks at most as many as there is
    /// room for); skips a key a worker has looked up itself; stops once the
    /// lookahead ended ([`Remote::end_lookahead`]) or the breaker opened.
    pub fn ask_ahead_many(&self, keys: &[ActionKey]) {
        let mut left = keys;
        while !left.is_empty() {
            let mut ahead = self.ahead();
            while ahead.waiting >= AHEAD_AT_MOST && !ahead.ended {
                ahead = self
                    .answered
                    .wait(ahead)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if ahead.ended || self.open() {
                return;
            }
            let room = (AHEAD_AT_MOST - ahead.waiting).min(self.batch_at_most());
            let mut asked = Vec::new();
            while asked.len() < room
                && let Some((key, rest)) = left.split_first()
            {
                left = rest;
                if !ahead.keys.contains_key(key) {
                    ahead.keys.insert(*key, AheadState::Asking);
                    asked.push(*key);
                }
            }
            drop(ahead);
            self.cache.get_actions(&asked, &mut |index, answer| {
                let answer = self.answer(answer);
                let mut ahead = self.ahead();
                if !ahead.ended {
                    ahead
                        .keys
                        .insert(asked[index], AheadState::Answered(answer, Instant::now()));
                    ahead.waiting += 1;
                }
                let go_on = !ahead.ended && !self.open();
                drop(ahead);
                self.answered.notify_all();
                go_on
            });
            // The keys of a batch stopped half-way (the breaker opened, the
            // lookahead ended) were never asked: their workers ask
            // themselves ([`Remote::call`] says no once the breaker is open).
            let mut ahead = self.ahead();
            for key in &asked {
                if matches!(ahead.keys.get(key), Some(AheadState::Asking)) {
                    ahead.keys.remove(key);
                }
            }
            drop(ahead);
            self.answered.notify_all();
        }
    }

    /// A request's answer as [`Remote::call`] gives it, counted.
    fn answer<T>(&self, answer: Result<T, RemoteError>) -> Option<T> {
        match answer {
            Ok(value) => {
                self.succeeded();
                Some(value)
            }
            Err(error) => {
                self.failed(&error);
                None
            }
        }
    }

    /// Whether the lookahead ended: its threads stop taking work.
    pub fn lookahead_ended(&self) -> bool {
        self.ahead().ended
    }

    /// Ends the lookahead (the build's workers are done): answers nobody
    /// took are dropped, and no more are asked.
    pub fn end_lookahead(&self) {
        let mut ahead = self.ahead();
        ahead.ended = true;
        ahead.keys = HashMap::new();
        ahead.waiting = 0;
        drop(ahead);
        self.answered.notify_all();
    }

    fn ahead(&self) -> std::sync::MutexGuard<'_, Ahead> {
        self.ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `key`'s entry as the cache answered ([`Remote::call`]: `None` if
    /// the request failed or the breaker is open), and when: the answer
    /// asked ahead, waited for if under way, else asked now.
    fn entry_of(&self, key: &ActionKey) -> (Option<Option<Vec<u8>>>, Instant) {
        let mut ahead = self.ahead();
        loop {
            match ahead.keys.get(key) {
                Some(AheadState::Answered(..)) => {
                    let Some(AheadState::Answered(answer, at)) =
                        ahead.keys.insert(*key, AheadState::Taken)
                    else {
                        unreachable!("matched just above");
                    };
                    ahead.waiting -= 1;
                    drop(ahead);
                    self.answered.notify_all();
                    return (answer, at);
                }
                Some(AheadState::Asking) => {
                    ahead = self
                        .answered
                        .wait(ahead)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                Some(AheadState::Taken) | None => {
                    if !ahead.ended {
                        ahead.keys.insert(*key, AheadState::Taken);
                    }
                    break;
                }
            }
        }
        drop(ahead);
        (self.call(|| self.cache.get_action(key)), Instant::now())
    }

    fn refuse(&self, reason: String) -> Lookup {
        self.refused.fetch_add(1, Ordering::SeqCst);
        self.warn_refused(&reason);
        Lookup::Refused(reason)
    }

    fn warn_refused(&self, reason: &str) {
        let mut warnings = self
            .warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if warnings.iter().any(|w| w.contains("refused")) {
            return;
        }
        let message = format!(
            "remote cache {}: refused an entry ({reason}); running the job instead (see `cairn log --kind RemoteRefused`)",
            self.url()
        );
        (self.warn)(&message);
        warnings.push(message);
    }

    /// Puts an inlined blob into `blobs`, verified by the store too.
    fn place_inline(
        &self,
        blobs: &dyn BlobStore,
        digest: &ContentDigest,
        content: &[u8],
    ) -> Result<u64, Fetch> {
        match blobs.put_verified(digest, &mut &content[..]) {
            Ok(size) => Ok(size),
            Err(StoreError::CorruptBlob { expected, actual }) => {
                Err(Fetch::Corrupt(expected, actual))
            }
            Err(error) => {
                tracing::warn!("{error}");
                Err(Fetch::Failed)
            }
        }
    }

    /// Downloads one blob into `blobs`, streamed: it enters the store only
    /// if its blake3 is `digest` (`BlobStore::put_verified`).
    fn fetch(&self, blobs: &dyn BlobStore, digest: &ContentDigest) -> Result<u64, Fetch> {
        let Some(found) = self.call(|| self.cache.open_blob(digest)) else {
            return Err(Fetch::Failed);
        };
        let Some(mut body) = found else {
            return Err(Fetch::Missing(*digest));
        };
        match blobs.put_verified(digest, &mut body) {
            Ok(size) => Ok(size),
            Err(StoreError::CorruptBlob { expected, actual }) => {
                Err(Fetch::Corrupt(expected, actual))
            }
            Err(error) => {
                // The body failing half-way is the cache's failure (counted
                // like any other); anything else is the local store's.
                match remote_error_of(&error) {
                    Some(remote) => self.failed(&remote),
                    None => tracing::warn!("{error}"),
                }
                Err(Fetch::Failed)
            }
        }
    }

    /// Uploads one result: [`Remote::upload_many`] with one (the tests'
    /// way).
    #[cfg(test)]
    fn upload(&self, blobs: &dyn BlobStore, upload: &Upload, build: u64) {
        self.upload_many(blobs, std::slice::from_ref(upload), build);
    }

    /// Uploads results: for each, the blobs the cache lacks and that its
    /// entry does not carry, then the AC entries, all of them in flight
    /// together ([`RemoteCache::put_actions`]; create-only: an entry
    /// already there is kept, not an error). Records an `ActionUploaded`
    /// event per result for the build's log.
    pub fn upload_many(&self, blobs: &dyn BlobStore, uploads: &[Upload], build: u64) {
        // The results whose blobs travel apart from their entries are
        // prepared (their blobs sent) by up to BLOB_SENDERS threads at once;
        // the others, one request each, need no thread of their own.
        let (apart, carried): (Vec<&Upload>, Vec<&Upload>) =
            uploads.iter().partition(|upload| travels_apart(upload));
        let prepared: Mutex<Vec<(ActionPut, Sent<'_>)>> = Mutex::new(Vec::new());
        let prepare = |upload| {
            if self.abandon.load(Ordering::SeqCst) {
                self.abandoned.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if self.open() {
                return;
            }
            if let Some((put, sent, bytes)) = self.prepare_upload(blobs, upload, build) {
                prepared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((put, (upload, sent, bytes)));
            }
        };
        let next = AtomicUsize::new(0);
        let send_apart = || {
            while let Some(upload) = apart.get(next.fetch_add(1, Ordering::SeqCst)) {
                prepare(upload);
            }
        };
        std::thread::scope(|threads| {
            // One at a time while the cache has not answered, or failed
            // last (`batch_at_most`).
            for _ in 1..BLOB_SENDERS.min(apart.len()).min(self.batch_at_most()) {
                threads.spawn(send_apart);
            }
            send_apart();
        });
        for upload in carried {
            prepare(upload);
        }
        let (puts, sending): (Vec<ActionPut>, Vec<_>) = prepared
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .into_iter()
            .unzip();
        let mut done = 0;
        while done < puts.len() && !self.open() {
            let batch = self.batch_at_most().min(puts.len() - done);
            let (these, sending) = (&puts[done..done + batch], &sending[done..done + batch]);
            done += batch;
            self.cache.put_actions(these, &mut |index, outcome| {
                self.uploaded_one(sending[index], outcome)
            });
        }
    }

    /// Counts and records one upload's outcome; whether to go on.
    fn uploaded_one(
        &self,
        (upload, sent, bytes): Sent<'_>,
        outcome: Result<PutOutcome, RemoteError>,
    ) -> bool {
        if let Some(outcome) = self.answer(outcome) {
            self.uploaded.fetch_add(1, Ordering::SeqCst);
            self.uploaded_bytes.fetch_add(bytes, Ordering::SeqCst);
            self.upload_events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(EventKind::ActionUploaded {
                    key: upload.manifest.key,
                    job: upload.manifest.job.clone(),
                    outputs: upload.outputs.clone(),
                    url: self.url().to_owned(),
                    blobs: sent,
                    bytes,
                    created: outcome == PutOutcome::Created,
                });
        }
        !self.open()
    }

    /// How many requests a batch may have in flight: one at a time until
    /// the cache has answered one this build, and again after a failure
    /// until one succeeds, so that a cache that is down or hanging fails
    /// as few requests as the breaker needs ([`TRIP_AFTER`]); all of them
    /// otherwise.
    fn batch_at_most(&self) -> usize {
        if self.reached.load(Ordering::SeqCst) && self.failures_in_a_row.load(Ordering::SeqCst) == 0
        {
            usize::MAX
        } else {
            1
        }
    }

    /// Sends the blobs of one result that its entry does not carry, and
    /// makes the entry: what to write, with the blobs sent (inlined or not)
    /// and their bytes. `None` if a request failed or a blob cannot be read.
    fn prepare_upload(
        &self,
        blobs: &dyn BlobStore,
        upload: &Upload,
        build: u64,
    ) -> Option<(ActionPut, u64, u64)> {
        let manifest = &upload.manifest;
        // Each blob with its size where the manifest gives one (the job's
        // logs have none).
        let mut digests: Vec<(ContentDigest, Option<u64>)> = manifest
            .outputs
            .iter()
            .flat_map(|output| {
                output
                    .files
                    .iter()
                    .map(|file| (file.digest, Some(file.size)))
            })
            .chain(manifest.stdout.map(|digest| (digest, None)))
            .chain(manifest.stderr.map(|digest| (digest, None)))
            .collect();
        digests.sort_unstable();
        digests.dedup_by_key(|(digest, _)| *digest);
        let (mut sent, mut bytes) = (0, 0);
        let mut inline = Vec::new();
        let mut inlined = 0;
        let fits =
            |inlined: u64, size: u64| size <= INLINE_AT_MOST && inlined + size <= INLINE_TOTAL;
        for (digest, size) in &digests {
            // A blob the manifest says is too large to inline is asked for
            // before it is read; a small one, inlined or not, is sent
            // without asking: asking is a round trip of its own, and the
            // results a build uploads are mostly new (a blob is named by
            // its content, so sending one the cache has rewrites the same
            // bytes).
            let ask = || self.call(|| self.cache.has_blob(digest));
            if let Some(size) = *size
                && !fits(inlined, size)
                && size > ASK_FIRST_ABOVE
            {
                match ask() {
                    None => return None,
                    Some(true) => continue,
                    Some(false) => {}
                }
            }
            // Read as a stream, verified at its end (a large output is
            // never held whole): its first bytes tell a blob that may be
            // inlined from one that is sent as it is read.
            let not_read = |error: &dyn std::fmt::Display| {
                tracing::warn!("not uploading {}: {error}", manifest.key);
            };
            let mut reader = match blobs.open_verified(digest) {
                Ok(reader) => reader,
                Err(error) => {
                    not_read(&error);
                    return None;
                }
            };
            let mut head = Vec::new();
            if let Err(error) = std::io::Read::read_to_end(
                &mut std::io::Read::take(&mut reader, INLINE_AT_MOST + 1),
                &mut head,
            ) {
                not_read(&error);
                return None;
            }
            // All of it, and verified (the reader's last read checks it).
            let whole = head.len() as u64 <= INLINE_AT_MOST;
            let length = if whole && fits(inlined, head.len() as u64) {
                inlined += head.len() as u64;
                inline.push(InlineBlob {
                    digest: *digest,
                    content: base64::engine::general_purpose::STANDARD.encode(&head),
                });
                head.len() as u64
            } else if whole {
                self.call(|| self.cache.put_blob(digest, &head))?;
                head.len() as u64
            } else {
                // A log (whose size the manifest does not hold) too large
                // to inline is asked for now that it is known to be.
                if size.is_none() {
                    match ask() {
                        None => return None,
                        Some(true) => continue,
                        Some(false) => {}
                    }
                }
                if self.open() {
                    return None;
                }
                // A failed read is the local store's (a blob found
                // corrupt at its end), not the cache's: no failure of the
                // cache's is counted for it.
                let local = std::cell::RefCell::new(None);
                let mut rest = LocalReads {
                    inner: std::io::Read::chain(std::io::Cursor::new(head), reader),
                    failed: &local,
                };
                let put = self.cache.put_blob_from(digest, &mut rest);
                if let Some(error) = local.into_inner() {
                    not_read(&error);
                    return None;
                }
                self.answer(put)?
            };
            sent += 1;
            bytes += length;
        }
        let entry = AcEntry {
            format: AC_FORMAT.to_owned(),
            key: manifest.key,
            producer: Producer {
                host: self.host.clone(),
                cairn: env!("CARGO_PKG_VERSION").to_owned(),
                build,
            },
            manifest: (**manifest).clone(),
            inline,
        };
        let json = serde_json::to_vec(&entry).expect("a manifest serializes");
        let missed_at = self
            .missed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&manifest.key);
        let fresh = missed_at.is_some_and(|at| at.elapsed() < LOOKUP_STAYS_FRESH);
        Some((
            ActionPut {
                key: manifest.key,
                entry: json,
                after_miss: fresh,
            },
            sent,
            bytes,
        ))
    }

    /// Stops taking queued uploads (the build does not wait for them).
    pub fn abandon_uploads(&self) {
        self.abandon.store(true, Ordering::SeqCst);
    }

    /// The `ActionUploaded` events of the uploads finished so far.
    pub fn take_upload_events(&self) -> Vec<EventKind> {
        std::mem::take(
            &mut self
                .upload_events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

enum Fetch {
    /// The request failed (counted and warned by [`Remote::call`]).
    Failed,
    Missing(ContentDigest),
    Corrupt(ContentDigest, ContentDigest),
}

/// An AC entry that passed [`check_entry`], with its inlined blobs
/// decoded and verified.
pub struct Checked {
    pub entry: AcEntry,
    /// Each inlined blob's bytes, whose blake3 is its digest.
    pub inline: HashMap<ContentDigest, Vec<u8>>,
}

/// Decodes an AC entry and checks it against the local action: its key,
/// job, outputs and inputs (by content) must be the action's, each output's
/// digest must be its files' and every file path a plain relative path;
/// each inlined blob must be one the manifest names, and its content must
/// hash to its digest. The reason it is refused otherwise.
pub fn check_entry(
    bytes: &[u8],
    action: &PlannedAction,
    key: &ActionKey,
    inputs: &[(&crate::refs::PartitionRef, ContentDigest)],
) -> Result<Checked, String> {
    let entry: AcEntry = serde_json::from_slice(bytes).map_err(|error| {
        format!(
            "the entry for {} is not a cairn AC entry: {error}",
            key.short()
        )
    })?;
    if entry.format != AC_FORMAT && entry.format != AC_FORMAT_V1 {
        return Err(format!(
            "the entry for {} has format {:?}, this cairn reads {AC_FORMAT:?} and {AC_FORMAT_V1:?}",
            key.short(),
            entry.format
        ));
    }
    let manifest = &entry.manifest;
    if entry.key != *key || manifest.key != *key {
        return Err(format!(
            "the entry stored under {} names key {}",
            key.short(),
            if entry.key == *key {
                manifest.key.short()
            } else {
                entry.key.short()
            }
        ));
    }
    if manifest.job != *action.job {
        return Err(format!(
            "the entry for {} is of job {:?}, not {:?}",
            key.short(),
            manifest.job,
            &*action.job
        ));
    }
    let outputs: Vec<_> = manifest.outputs.iter().map(|o| &o.partition).collect();
    if outputs.len() != action.config.outputs.len()
        || outputs
            .iter()
            .zip(&action.config.outputs)
            .any(|(a, b)| *a != b)
    {
        return Err(format!(
            "the entry for {} has other outputs than the action",
            key.short()
        ));
    }
    let same_inputs = manifest.inputs.len() == inputs.len()
        && manifest
            .inputs
            .iter()
            .zip(inputs)
            .all(|(theirs, (partition, digest))| {
                theirs.partition == **partition && theirs.digest == *digest
            });
    if !same_inputs {
        return Err(format!(
            "the entry for {} was built from other inputs than the local action's",
            key.short()
        ));
    }
    for output in &manifest.outputs {
        if let Some(file) = output.files.iter().find(|file| !plain_relative(&file.path)) {
            return Err(format!(
                "the entry for {} has a file path {:?} outside its partition",
                key.short(),
                file.path
            ));
        }
        if !output
            .files
            .windows(2)
            .all(|pair| pair[0].path < pair[1].path)
            || partition_digest(&output.files) != output.digest
        {
            return Err(format!(
                "the entry for {}: {}'s digest is not its files'",
                key.short(),
                output.partition
            ));
        }
    }
    let inline = check_inline(&entry, key)?;
    Ok(Checked { entry, inline })
}

/// The entry's inlined blobs, decoded, each one the manifest names and
/// whose content hashes to its digest. A `cairn-ac/1` entry has none.
fn check_inline(
    entry: &AcEntry,
    key: &ActionKey,
) -> Result<HashMap<ContentDigest, Vec<u8>>, String> {
    if entry.inline.is_empty() {
        return Ok(HashMap::new());
    }
    if entry.format == AC_FORMAT_V1 {
        return Err(format!(
            "the entry for {} is {AC_FORMAT_V1:?} and inlines blobs",
            key.short()
        ));
    }
    let manifest = &entry.manifest;
    let named: std::collections::HashSet<ContentDigest> = manifest
        .outputs
        .iter()
        .flat_map(|output| output.files.iter().map(|file| file.digest))
        .chain(manifest.stdout)
        .chain(manifest.stderr)
        .collect();
    let mut inline = HashMap::with_capacity(entry.inline.len());
    for blob in &entry.inline {
        if !named.contains(&blob.digest) {
            return Err(format!(
                "the entry for {} inlines blob {}, which its manifest does not name",
                key.short(),
                blob.digest
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&blob.content)
            .map_err(|error| {
                format!(
                    "the entry for {}: inlined blob {} is not base64: {error}",
                    key.short(),
                    blob.digest
                )
            })?;
        let actual = ContentDigest::of(&bytes);
        if actual != blob.digest {
            return Err(format!(
                "blob {} failed verification (its content hashes to {actual})",
                blob.digest
            ));
        }
        inline.insert(blob.digest, bytes);
    }
    Ok(inline)
}

/// A non-empty relative path of normal components only.
fn plain_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::memory::{MemoryBlobs, MemoryRemoteCache};
    use crate::record::{FileEntry, OutputRecord};
    use crate::refs::PartitionRef;

    /// A twin shared between the test and the `Remote` that owns it.
    struct Shared(Arc<MemoryRemoteCache>);

    impl RemoteCache for Shared {
        fn url(&self) -> &str {
            self.0.url()
        }
        fn get_action(&self, key: &ActionKey) -> Result<Option<Vec<u8>>, RemoteError> {
            self.0.get_action(key)
        }
        fn put_action(&self, key: &ActionKey, entry: &[u8]) -> Result<PutOutcome, RemoteError> {
            self.0.put_action(key, entry)
        }
        fn has_blob(&self, digest: &ContentDigest) -> Result<bool, RemoteError> {
            self.0.has_blob(digest)
        }
        fn get_blob(&self, digest: &ContentDigest) -> Result<Option<Vec<u8>>, RemoteError> {
            self.0.get_blob(digest)
        }
        fn put_blob(&self, digest: &ContentDigest, bytes: &[u8]) -> Result<(), RemoteError> {
            self.0.put_blob(digest, bytes)
        }
    }

    fn remote(cache: &Arc<MemoryRemoteCache>, warnings: &Arc<Mutex<Vec<String>>>) -> Remote {
        let warnings = Arc::clone(warnings);
        Remote::new(
            Box::new(Shared(Arc::clone(cache))),
            true,
            true,
            Box::new(move |message| warnings.lock().unwrap().push(message.to_owned())),
        )
    }

    fn upload(blobs: &MemoryBlobs, byte: u8) -> Upload {
        upload_sized(blobs, byte, 10)
    }

    /// A result of one output file of `size` bytes, each `byte`.
    fn upload_sized(blobs: &MemoryBlobs, byte: u8, size: usize) -> Upload {
        let content = vec![byte; size];
        let digest = blobs.put_bytes(&content).unwrap();
        let files = vec![FileEntry {
            path: "part.csv".into(),
            executable: false,
            size: size as u64,
            digest,
            mode: 0o644,
        }];
        let partition = PartitionRef::parse(&format!("clean/n={byte}")).unwrap();
        Upload {
            manifest: Box::new(Manifest {
                key: ActionKey([byte; 32]),
                job: "clean".into(),
                outputs: vec![OutputRecord {
                    partition: partition.clone(),
                    digest: partition_digest(&files),
                    files,
                }],
                inputs: Vec::new(),
                code_digest: None,
                versions: Vec::new(),
                build: 1,
                started_ms: 0,
                finished_ms: 1,
                stdout: None,
                stderr: None,
                command: None,
            }),
            outputs: vec![partition],
        }
    }

    #[test]
    fn uploads_send_missing_blobs_then_the_entry_once() {
        let cache = Arc::new(MemoryRemoteCache::new("memory://team"));
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let blobs = MemoryBlobs::new();
        let first = remote(&cache, &warnings);
        first.upload(&blobs, &upload(&blobs, 1), 7);
        assert_eq!(cache.action_keys(), [ActionKey([1; 32])]);
        // The output is small: inlined in the entry, not in `cas/`.
        assert!(cache.blob_digests().is_empty());
        let events = first.take_upload_events();
        assert!(
            matches!(
                &events[..],
                [EventKind::ActionUploaded {
                    blobs: 1,
                    bytes: 10,
                    created: true,
                    ..
                }]
            ),
            "{events:?}"
        );
        // A second machine uploading the same key: the entry is there
        // (kept, not an error). Its blob is small, so it is inlined again
        // rather than asked for.
        let entry = cache.get_action(&ActionKey([1; 32])).unwrap();
        let second = remote(&cache, &warnings);
        let requests = cache.requests();
        second.upload(&blobs, &upload(&blobs, 1), 9);
        assert!(matches!(
            &second.take_upload_events()[..],
            [EventKind::ActionUploaded {
                blobs: 1,
                bytes: 10,
                created: false,
                ..
            }]
        ));
        // One put of the entry, the blob inside: no question first.
        assert_eq!(cache.requests() - requests, 1);
        assert!(cache.blob_digests().is_empty());
        assert_eq!(cache.get_action(&ActionKey([1; 32])).unwrap(), entry);
        assert_eq!(second.summary().errors, 0);
        assert!(warnings.lock().unwrap().is_empty());
        // The entry is cairn's own, naming its producer.
        let decoded: AcEntry = serde_json::from_slice(&entry.unwrap()).unwrap();
        assert_eq!(decoded.format, AC_FORMAT);
        assert_eq!(decoded.producer.build, 7);
    }

    /// The action `upload(.., byte)` is the result of: job `clean`, one
    /// output, no inputs.
    fn action(byte: u8) -> PlannedAction {
        PlannedAction {
            job: "clean".into(),
            config: crate::config::JobConfig {
                outputs: vec![PartitionRef::parse(&format!("clean/n={byte}")).unwrap()].into(),
                inputs: Default::default(),
                args: Vec::new(),
                env: std::collections::BTreeMap::new(),
            },
            inputs: Default::default(),
            dependents: Default::default(),
        }
    }

    fn lookup(remote: &Remote, blobs: &MemoryBlobs, byte: u8) -> Lookup {
        remote.lookup(blobs, &action(byte), &ActionKey([byte; 32]), &[], 2)
    }

    /// The stored entry of `key`, edited.
    fn edit_entry(cache: &MemoryRemoteCache, key: ActionKey, edit: impl FnOnce(&mut AcEntry)) {
        let bytes = cache.get_action(&key).unwrap().unwrap();
        let mut entry: AcEntry = serde_json::from_slice(&bytes).unwrap();
        edit(&mut entry);
        cache.plant_action(&key, &serde_json::to_vec(&entry).unwrap());
    }

    #[test]
    fn a_small_result_is_restored_from_its_entry_alone() {
        let cache = Arc::new(MemoryRemoteCache::new("memory://team"));
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let built = MemoryBlobs::new();
        let uploaded = upload(&built, 4);
        let digest = uploaded.manifest.outputs[0].files[0].digest;
        remote(&cache, &warnings).upload(&built, &uploaded, 1);
        let entry: AcEntry =
            serde_json::from_slice(&cache.get_action(&ActionKey([4; 32])).unwrap().unwrap())
                .unwrap();
        assert_eq!(entry.format, "cairn-ac/2");
        assert_eq!(
            entry.inline,
            [InlineBlob {
                digest,
                content: base64::engine::general_purpose::STANDARD.encode([4; 10]),
            }]
        );
        // Another machine: one request (the entry), and the blob enters its
        // store from it.
        let blobs = MemoryBlobs::new();
        let other = remote(&cache, &warnings);
        let requests = cache.requests();
        let found = lookup(&other, &blobs, 4);
        assert!(matches!(found, Lookup::Hit { .. }));
        assert_eq!(cache.requests() - requests, 1);
        assert_eq!(blobs.read(&digest).unwrap(), [4; 10]);
        assert_eq!(other.summary().hits, 1);
        assert_eq!(other.summary().downloaded_bytes, 10);
        assert!(warnings.lock().unwrap().is_empty());
    }

    #[test]
    fn an_inlined_blob_that_does_not_hash_to_its_digest_is_refused() {
        let cache = Arc::new(MemoryRemoteCache::new("memory://team"));
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let built = MemoryBlobs::new();
        let uploaded = upload(&built, 5);
        let digest = uploaded.manifest.outputs[0].files[0].digest;
        remote(&cache, &warnings).upload(&built, &uploaded, 1);
        edit_entry(&cache, ActionKey([5; 32]), |entry| {
            entry.inline[0].content = base64::engine::general_purpose::STANDARD.encode([6; 10]);
        });
        let blobs = MemoryBlobs::new();
        let other = remote(&cache, &warnings);
        match lookup(&other, &blobs, 5) {
            Lookup::Refused(reason) => assert!(
                reason.contains(&format!("blob {digest} failed verification")),
                "{reason}"
            ),
            _ => panic!("a tampered inlined blob was not refused"),
        }
        assert!(!blobs.contains(&digest), "nothing of it entered the store");
        assert!(!blobs.contains(&ContentDigest::of(&[6; 10])));
        assert_eq!(other.summary().refused, 1);
        assert_eq!(other.summary().hits, 0);
        assert_eq!(warnings.lock().unwrap().len(), 1);
    }

    #[test]
    fn an_entry_inlining_what_its_manifest_does_not_name_is_refused() {
        let cache = Arc::new(MemoryRemoteCache::new("memory://team"));
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let built = MemoryBlobs::new();
        remote(&cache, &warnings).upload(&built, &upload(&built, 7), 1);
        let stray = [8; 3];
        edit_entry(&cache, ActionKey([7; 32]), |entry| {
            entry.inline.push(InlineBlob {
                digest: ContentDigest::of(&stray),
                content: base64::engine::general_purpose::STANDARD.encode(stray),
            });
        });
        let blobs = MemoryBlobs::new();
        match lookup(&remote(&cache, &warnings), &blobs, 7) {
            Lookup::Refused(reason) => {
                assert!(reason.contains("does not name"), "{reason}");
            }
            _ => panic!("an entry inlining a stray blob was not refused"),
        }
        assert!(!blobs.contains(&ContentDigest::of(&stray)));
    }

    #[test]
    fn a_cairn_ac_1_entry_is_still_read_and_its_blobs_checked() {
        let cache = Arc::new(MemoryRemoteCache::new("memory://team"));
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let built = MemoryBlobs::new();
        let uploaded = upload(&built, 9);
        let digest = uploaded.manifest.outputs[0].files[0].digest;
        remote(&cache, &warnings).upload(&built, &uploaded, 1);
        // What an older cairn wrote: the blob in `cas/`, none inlined.
        edit_entry(&cache, ActionKey([9; 32]), |entry| {
            entry.format = AC_FORMAT_V1.to_owned();
            entry.inline.clear();
        });
        cache.put_blob(&digest, &[9; 10]).unwrap();
        let blobs = MemoryBlobs::new();
        assert!(matches!(
            lookup(&remote(&cache, &warnings), &blobs, 9),
            Lookup::Hit { .. }
        ));
        assert_eq!(blobs.read(&digest).unwrap(), [9; 10]);
        // Its blob corrupted in `cas/`: refused, never placed.
        cache.tamper_blob(&digest, &[0; 10]);
        let blobs = MemoryBlobs::new();
        assert!(matches!(
            lookup(&remote(&cache, &warnings), &blobs, 9),
            Lookup::Refused(_)
        ));
        assert!(!blobs.contains(&digest));
        // A `cairn-ac/1` entry with inlined blobs is not one this cairn wrote.
        edit_entry(&cache, ActionKey([9; 32]), |entry| {
            entry.inline.push(InlineBlob {
                digest,
                content: base64::engine::general_purpose::STANDARD.encode([9; 10]),
            });
        });
        assert!(matches!(
            lookup(&remote(&cache, &warnings), &MemoryBlobs::new(), 9),
            Lookup::Refused(_)
        ));
    }

    #[test]
    fn inlining_stops_at_the_entry_budget() {
        let cache = Arc::new(MemoryRemoteCache::new("memory://team"));
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let blobs = MemoryBlobs::new();
        // Five files of the largest size inlined: four fill the entry's
        // budget, the fifth goes to `cas/` (sent at once: it is small).
        let mut files: Vec<FileEntry> = (0..5u8)
            .map(|index| {
                let content = vec![index; INLINE_AT_MOST as usize];
                FileEntry {
                    path: format!("part-{index}.bin"),
                    executable: false,
                    size: INLINE_AT_MOST,
                    digest: blobs.put_bytes(&content).unwrap(),
                    mode: 0o644,
                }
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut uploaded = upload(&blobs, 11);
        uploaded.manifest.outputs[0].digest = partition_digest(&files);
        uploaded.manifest.outputs[0].files = files;
        let first = remote(&cache, &warnings);
        let requests = cache.requests();
        first.upload(&blobs, &uploaded, 1);
        assert_eq!(cache.requests() - requests, 2, "one blob, then the entry");
        assert_eq!(cache.blob_digests().len(), 1);
        let entry: AcEntry =
            serde_json::from_slice(&cache.get_action(&ActionKey([11; 32])).unwrap().unwrap())
                .unwrap();
        assert_eq!(entry.inline.len(), 4);
        assert!(matches!(
            &first.take_upload_events()[..],
            [EventKind::ActionUploaded { blobs: 5, .. }]
        ));
        // And it is restored whole, from the entry and `cas/`.
        let restored = MemoryBlobs::new();
        assert!(matches!(
            lookup(&remote(&cache, &warnings), &restored, 11),
            Lookup::Hit { .. }
        ));
        for file in &uploaded.manifest.outputs[0].files {
            assert!(restored.contains(&file.digest));
        }
    }

    #[test]
    fn a_lookup_asked_ahead_is_answered_without_another_request() {
        let cache = Arc::new(MemoryRemoteCache::new("memory://team"));
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let built = MemoryBlobs::new();
        remote(&cache, &warnings).upload(&built, &upload(&built, 4), 1);
        let other = remote(&cache, &warnings);
        let requests = cache.requests();
        other.ask_ahead(&ActionKey([4; 32]));
        other.ask_ahead(&ActionKey([5; 32]));
        assert_eq!(cache.requests() - requests, 2);
        // The workers find the answers waiting: a hit and a miss.
        let blobs = MemoryBlobs::new();
        assert!(matches!(lookup(&other, &blobs, 4), Lookup::Hit { .. }));
        assert!(matches!(lookup(&other, &blobs, 5), Lookup::Miss));
        assert_eq!(cache.requests() - requests, 2, "no request of their own");
        let summary = other.summary();
        assert_eq!((summary.hits, summary.misses), (1, 1));
        // Asked once: a second ask (or a worker's second look) asks anew,
        // never reuses an answer twice.
        other.ask_ahead(&ActionKey([5; 32]));
        assert_eq!(
            cache.requests() - requests,
            2,
            "a key taken is not asked ahead"
        );
        assert!(matches!(lookup(&other, &blobs, 5), Lookup::Miss));
        assert_eq!(cache.requests() - requests, 3);
    }

    /// A cache whose lookups take `delay`, counting them.
    struct Slow {
        inner: Arc<MemoryRemoteCache>,
        delay: Duration,
        gets: Arc<AtomicU64>,
    }

    impl RemoteCache for Slow {
        fn url(&self) -> &str {
            self.inner.url()
        }
        fn get_action(&self, key: &ActionKey) -> Result<Option<Vec<u8>>, RemoteError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            self.inner.get_action(key)
        }
        fn put_action(&self, key: &ActionKey, entry: &[u8]) -> Result<PutOutcome, RemoteError> {
            self.inner.put_action(key, entry)
        }
        fn has_blob(&self, digest: &ContentDigest) -> Result<bool, RemoteError> {
            self.inner.has_blob(digest)
        }
        fn get_blob(&self, digest: &ContentDigest) -> Result<Option<Vec<u8>>, RemoteError> {
            self.inner.get_blob(digest)
        }
        fn put_blob(&self, digest: &ContentDigest, bytes: &[u8]) -> Result<(), RemoteError> {
            self.inner.put_blob(digest, bytes)
        }
    }

    fn slow_remote(delay: Duration) -> (Remote, Arc<AtomicU64>) {
        let gets = Arc::new(AtomicU64::new(0));
        let slow = Slow {
            inner: Arc::new(MemoryRemoteCache::new("memory://slow")),
            delay,
            gets: Arc::clone(&gets),
        };
        let remote = Remote::new(Box::new(slow), true, true, Box::new(|_| {}));
        (remote, gets)
    }

    #[test]
    fn a_worker_waits_for_the_lookup_under_way_instead_of_asking_again() {
        let (remote, gets) = slow_remote(Duration::from_millis(300));
        let blobs = MemoryBlobs::new();
        std::thread::scope(|threads| {
            threads.spawn(|| remote.ask_ahead(&ActionKey([6; 32])));
            while gets.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            assert!(matches!(lookup(&remote, &blobs, 6), Lookup::Miss));
        });
        assert_eq!(gets.load(Ordering::SeqCst), 1);
        assert_eq!(remote.summary().misses, 1);
    }

    #[test]
    fn the_lookahead_waits_for_the_workers_and_stops_at_its_end() {
        let (remote, gets) = slow_remote(Duration::ZERO);
        for byte in 0..AHEAD_AT_MOST {
            remote.ask_ahead(&ActionKey([byte as u8; 32]));
        }
        assert_eq!(gets.load(Ordering::SeqCst), AHEAD_AT_MOST as u64);
        let blobs = MemoryBlobs::new();
        std::thread::scope(|threads| {
            // One more waits until a worker takes an answer.
            let more = threads.spawn(|| remote.ask_ahead(&ActionKey([200; 32])));
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(gets.load(Ordering::SeqCst), AHEAD_AT_MOST as u64);
            assert!(matches!(lookup(&remote, &blobs, 0), Lookup::Miss));
            more.join().unwrap();
            assert_eq!(gets.load(Ordering::SeqCst), AHEAD_AT_MOST as u64 + 1);
            // Full again: the end releases a waiting lookahead, which asks
            // nothing more.
            let waiting = threads.spawn(|| remote.ask_ahead(&ActionKey([201; 32])));
            std::thread::sleep(Duration::from_millis(100));
            remote.end_lookahead();
            waiting.join().unwrap();
        });
        assert_eq!(gets.load(Ordering::SeqCst), AHEAD_AT_MOST as u64 + 1);
        assert!(remote.lookahead_ended());
        // A worker still looks up by itself.
        assert!(matches!(lookup(&remote, &blobs, 1), Lookup::Miss));
        assert_eq!(gets.load(Ordering::SeqCst), AHEAD_AT_MOST as u64 + 2);
    }

    #[test]
    fn a_large_blob_is_sent_only_if_the_cache_lacks_it() {
        let cache = Arc::new(MemoryRemoteCache::new("memory://team"));
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let blobs = MemoryBlobs::new();
        let size = ASK_FIRST_ABOVE as usize + 1;
        let first = remote(&cache, &warnings);
        first.upload(&blobs, &upload_sized(&blobs, 3, size), 1);
        assert!(matches!(
            &first.take_upload_events()[..],
            [EventKind::ActionUploaded {
                blobs: 1,
                created: true,
                ..
            }]
        ));
        // Another key whose output has the same content: asked for, found,
        // not sent (only the entry is).
        let mut other = upload_sized(&blobs, 3, size);
        other.manifest.key = ActionKey([9; 32]);
        let second = remote(&cache, &warnings);
        second.upload(&blobs, &other, 2);
        assert!(matches!(
            &second.take_upload_events()[..],
            [EventKind::ActionUploaded {
                blobs: 0,
                bytes: 0,
                created: true,
                ..
            }]
        ));
        assert_eq!(cache.action_keys().len(), 2);
        assert!(warnings.lock().unwrap().is_empty());
    }

    #[test]
    fn a_failing_cache_warns_once_and_the_breaker_stops_the_requests() {
        let cache = Arc::new(MemoryRemoteCache::new("memory://team"));
        cache.set_failing(true);
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let blobs = MemoryBlobs::new();
        let remote = remote(&cache, &warnings);
        for byte in 1..=10 {
            remote.upload(&blobs, &upload(&blobs, byte), 1);
        }
        assert_eq!(
            cache.requests(),
            u64::from(TRIP_AFTER),
            "no request after the breaker opened"
        );
        let summary = remote.summary();
        assert_eq!(summary.errors, u64::from(TRIP_AFTER));
        assert!(summary.tripped);
        assert_eq!(summary.uploaded, 0);
        let warnings = warnings.lock().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("memory://team"), "{warnings:?}");
        assert!(remote.take_upload_events().is_empty());
    }

    #[test]
    fn a_success_resets_the_count_of_failures_in_a_row() {
        let cache = Arc::new(MemoryRemoteCache::new("memory://team"));
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let blobs = MemoryBlobs::new();
        let remote = remote(&cache, &warnings);
        for byte in 1..=4 {
            cache.set_failing(true);
            remote.upload(&blobs, &upload(&blobs, byte), 1);
            remote.upload(&blobs, &upload(&blobs, byte + 100), 1);
            cache.set_failing(false);
            remote.upload(&blobs, &upload(&blobs, byte + 200), 1);
        }
        let summary = remote.summary();
        assert_eq!(summary.errors, 8, "two failures at a time, never three");
        assert!(!summary.tripped);
        assert_eq!(summary.uploaded, 4);
        assert_eq!(warnings.lock().unwrap().len(), 1);
    }
}
