//! The up-to-date snapshot file (`.cairn/up-to-date`): a cache beside the
//! catalog, never a source of truth (engine/src/uptodate.rs says what it
//! holds and when it may be believed).
//!
//! Layout: the 16-byte magic `cairn-uptodate/5` (the older layout,
//! `cairn-up-to-date`, is no snapshot), then a header of the log's
//! last event (seq, build, time: three little-endian u64), blake3 of the
//! body, and blake3 of those two; then the body (postcard), whose last
//! field is the recorded paths (sorted, each a key and a fixed-width
//! entry). A read decodes everything before them and streams them
//! ([`SnapshotReader`], never all in memory), keeping every 256th key and
//! its place ([`SnapshotFile::find`]). A new snapshot is written over the
//! old one in place (header zeroed, body, length, then the header); a
//! build confirmed from it rewrites the header alone, or with touched
//! files or changed inputs writes what changed over the file in place
//! (header zeroed, the fixed-width entries and action keys, then the
//! header over the body hashed again: [`Store::patch_snapshot`]). Nothing
//! is fsynced: a torn or lost file fails a checksum or is missing, and the
//! build that finds it so takes the full path.
//!
//! Beside it, `.cairn/up-to-date.plan`: the 16-byte magic
//! `cairn-kept-plan3` (a plan of an older layout has another magic and is
//! no plan), the blake3 of the body, then the body: the plan (postcard),
//! which the snapshot names by that digest. Written (in place, the head
//! last) before the snapshot that names it; a plan whose body does not hash
//! to its head's digest is altered or torn, and one whose digest is not
//! the snapshot's is stale: either is no plan.
//!
//! And `.cairn/up-to-date.recheck`, what a build that presumed actions
//! from the snapshot and failed left for the next one
//! ([`cairn_engine::uptodate::Recheck`]): the 16-byte magic
//! `cairn-recheck/1\n`, the blake3 of the body, the body (postcard).
//! Written whole to a temporary file and renamed over the old one.
//!
//! All three are verified on every read (an altered file is ignored, and said so
//! at `-v`), and `cairn store verify` checks them ([`check_snapshot`],
//! [`check_plan`]): a file a build would refuse for any reason but an
//! interrupted write, a stale plan or an older layout is a problem, which
//! `--repair` removes ([`check_recheck`] likewise).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cairn_engine::digest::{ActionKey, ContentDigest};
use cairn_engine::plan::{Plan, PlanRecord};
use cairn_engine::uptodate::{
    CurrentAction, LastEvent, PathBatch, Recheck, RecordedPaths, Seen, Snapshot, SnapshotPatch,
    Unconfirmed,
};

use crate::{Store, StoreError};

const FILE: &str = "up-to-date";
const PLAN_FILE: &str = "up-to-date.plan";
const PLAN_MAGIC: &[u8; 16] = b"cairn-kept-plan3";
/// The magic of the kept plan's previous layout (no digest of its own).
const PLAN_MAGIC_V2: &[u8; 16] = b"cairn-kept-plan2";
/// The plan's magic and its body's digest.
const PLAN_HEAD: usize = PLAN_MAGIC.len() + 32;
const RECHECK_FILE: &str = "up-to-date.recheck";
const RECHECK_MAGIC: &[u8; 16] = b"cairn-recheck/1\n";
/// A recheck list holds a varint per action: far less than this.
const RECHECK_AT_MOST: u64 = 64 << 20;
const MAGIC: &[u8; 16] = b"cairn-uptodate/5";
/// The layout before the recorded paths came last (action builds as
/// varints): no snapshot, and no damage either.
const MAGIC_V4: &[u8; 16] = b"cairn-up-to-date";
/// One key of this many recorded paths is kept in [`SnapshotFile::index`].
const INDEX_EVERY: usize = 256;
/// The last event (24 bytes), the body's digest and the header's digest.
const HEADER: usize = 24 + 32 + 32;

impl Store {
    fn snapshot_path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The snapshot of the store at `dir`, if there is a readable one (a
    /// missing, torn or foreign file is no snapshot: the reason goes to the
    /// debug log), all but its recorded paths, which the reader streams
    /// (checking the body's digest at their end: until then nothing read is
    /// vouched for). Reads one file and opens nothing else, so a build can
    /// look before it takes the writer lock; `None` without a catalog
    /// beside it (opening the store would then create one for nothing).
    pub fn read_snapshot_in(dir: &Path) -> Option<(Snapshot, SnapshotReader)> {
        if !dir.join(crate::CATALOG_FILE).is_file() {
            return None;
        }
        let path = dir.join(FILE);
        let file = match cairn_engine::config::open_cache_file(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!("no up-to-date snapshot: {}: {error}", path.display());
                return None;
            }
            Err(error) => {
                tracing::info!("up-to-date snapshot ignored: {}: {error}", path.display());
                return None;
            }
        };
        match read_head(file, path.clone()) {
            Ok(snapshot) => Some(snapshot),
            Err(why @ CacheFileError::Older) => {
                tracing::debug!("up-to-date snapshot ignored: {}: {why}", path.display());
                None
            }
            Err(why) => {
                tracing::info!("up-to-date snapshot ignored: {}: {why}", path.display());
                None
            }
        }
    }

    /// Writes what changed of the snapshot read as `file` (its head `head`,
    /// as read) over it in place (writers only): the header is zeroed, the
    /// changed entries and action keys written at their places, the body
    /// hashed again and the header written last, so a torn patch fails the
    /// header's checksum (no snapshot). The file must still be the one
    /// read (the writer lock held since).
    pub fn patch_snapshot(
        &self,
        file: &SnapshotFile,
        head: &Snapshot,
        patch: &SnapshotPatch,
    ) -> Result<(), StoreError> {
        let _writing = self.snapshot_writes();
        patch_at(&self.snapshot_path(), file, head, patch)
    }

    /// Closes the store (writers), writing `snapshot` meanwhile: closing
    /// syncs the catalog (redb's clean-shutdown writes, four syncs), which
    /// the snapshot need not wait for. The lock is released once both are
    /// done, so the next writer never finds the snapshot half written.
    pub fn close_writing_snapshot(self, snapshot: &SnapshotWrite<'_>) -> Result<(), StoreError> {
        let path = self.snapshot_path();
        let Store {
            catalog,
            blobs,
            dir: _,
            lock,
            snapshot_writes: _,
        } = self;
        let written = std::thread::scope(|scope| {
            // Without a thread, the closure (and with it the catalog) is
            // dropped here: closed before the snapshot is written.
            let _ = std::thread::Builder::new()
                .name("cairn-close".into())
                .spawn_scoped(scope, move || drop((catalog, blobs)));
            snapshot.write_at(&path)
        });
        drop(lock);
        written
    }

    /// Writes `snapshot` with the store left open: what a build of a held
    /// store (app/src/workspace.rs, `Workspace::hold`) leaves, since that
    /// store is not closed after a build. Writers only.
    pub fn write_snapshot(&self, snapshot: &SnapshotWrite<'_>) -> Result<(), StoreError> {
        let _writing = self.snapshot_writes();
        snapshot.write_at(&self.snapshot_path())
    }

    fn snapshot_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.snapshot_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `plan` beside the snapshot (writers only), in place like the
    /// snapshot; the digest a snapshot names it by.
    pub fn write_plan(&self, plan: &Plan) -> Result<ContentDigest, StoreError> {
        let path = self.dir.join(PLAN_FILE);
        let _writing = self.snapshot_writes();
        let digest = write_in_place(&path, PLAN_HEAD, &PlanRecord::of(plan), |digest| {
            let mut head = PLAN_MAGIC.to_vec();
            head.extend_from_slice(digest);
            head
        })?;
        Ok(ContentDigest(digest))
    }

    /// The plan kept beside the snapshot, if it is the one `digest` names
    /// (else, or unreadable, none: the reason goes to the debug log).
    pub fn read_plan(&self, digest: &ContentDigest) -> Option<Plan> {
        let path = self.dir.join(PLAN_FILE);
        match read_plan_at(&path, Some(digest)) {
            Ok((plan, _)) => Some(plan),
            // Stale (a newer plan whose snapshot was not written) or
            // interrupted: expected after a crash.
            Err(why @ (PlanError::Stale | PlanError::Interrupted | PlanError::Older)) => {
                tracing::debug!("kept plan ignored: {}: {why}", path.display());
                None
            }
            Err(why) => {
                tracing::info!("kept plan ignored: {}: {why}", path.display());
                None
            }
        }
    }

    /// Moves the snapshot read as `file` on to `last_event` without
    /// rewriting its body (writers only): what a build confirmed from it,
    /// that changed no stat, leaves behind. Torn, the header fails its
    /// checksum and the next build takes the full path.
    pub fn advance_snapshot(
        &self,
        file: &SnapshotFile,
        last_event: &LastEvent,
    ) -> Result<(), StoreError> {
        let path = self.snapshot_path();
        let header = header(last_event, &file.body_digest);
        let _writing = self.snapshot_writes();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|opened| opened.write_all_at(&header, MAGIC.len() as u64))
            .map_err(|error| StoreError::io(&path, error))
    }

    /// Keeps what a failed build that presumed actions from the snapshot
    /// left to check (writers only), replacing any earlier one.
    pub fn write_recheck(&self, recheck: &Recheck) -> Result<(), StoreError> {
        let path = self.dir.join(RECHECK_FILE);
        let body = postcard::to_allocvec(recheck)
            .map_err(|error| StoreError::io(&path, std::io::Error::other(error.to_string())))?;
        cairn_engine::config::write_sealed_cache_file(&path, RECHECK_MAGIC, &[], &body)
            .map_err(|error| StoreError::io(&path, error))
    }

    /// What a failed build left to check, if a sound file holds it (a
    /// damaged one is said at `-v` and is none).
    pub fn read_recheck(&self) -> Option<Recheck> {
        let path = self.dir.join(RECHECK_FILE);
        match read_recheck_at(&path) {
            Ok(recheck) => recheck,
            Err(why) => {
                tracing::info!("recheck list ignored: {}: {why}", path.display());
                None
            }
        }
    }

    /// Removes the recheck list, if any (writers only).
    pub fn forget_recheck(&self) {
        let _ = std::fs::remove_file(self.dir.join(RECHECK_FILE));
    }

    /// Removes the snapshot (writers only), for whatever changes the
    /// catalog without appending an event (`cairn replay`).
    pub fn forget_snapshot(&self) -> Result<(), StoreError> {
        let path = self.snapshot_path();
        // The kept plan and the recheck list are only ever used through a
        // snapshot.
        let _ = std::fs::remove_file(self.dir.join(PLAN_FILE));
        self.forget_recheck();
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::io(&path, error))
            }
            _ => Ok(()),
        }
    }

    /// The log's last event, if any.
    pub fn last_event(&self) -> Result<Option<LastEvent>, StoreError> {
        let seq = self.catalog.last_seq()?;
        if seq == 0 {
            return Ok(None);
        }
        Ok(self.catalog.event(seq)?.as_ref().map(LastEvent::of))
    }
}

/// What a build leaves of the up-to-date snapshot.
pub enum SnapshotWrite<'a> {
    /// A new one, written whole.
    Whole(&'a Snapshot),
    /// What changed of the one read as `file` (see [`Store::patch_snapshot`]).
    Patch {
        file: &'a SnapshotFile,
        head: &'a Snapshot,
        patch: &'a SnapshotPatch,
    },
}

impl SnapshotWrite<'_> {
    fn write_at(&self, path: &Path) -> Result<(), StoreError> {
        match *self {
            SnapshotWrite::Whole(snapshot) => write_snapshot_at(path, snapshot),
            SnapshotWrite::Patch { file, head, patch } => patch_at(path, file, head, patch),
        }
    }
}

/// See [`Store::patch_snapshot`].
fn patch_at(
    path: &Path,
    file: &SnapshotFile,
    head: &Snapshot,
    patch: &SnapshotPatch,
) -> Result<(), StoreError> {
    let io = |error: std::io::Error| StoreError::io(path, error);
    let stale = |what: &str| StoreError::Catalog {
        path: path.to_owned(),
        message: format!("the up-to-date snapshot is not the one read: {what}"),
    };
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let mut found = [0u8; MAGIC.len() + HEADER];
    opened.read_exact_at(&mut found, 0).map_err(io)?;
    if found[..MAGIC.len()] != MAGIC[..]
        || found[MAGIC.len() + 24..MAGIC.len() + 56] != file.body_digest
    {
        return Err(stale("another body"));
    }
    let length = opened.metadata().map_err(io)?.len();
    let body_at = (MAGIC.len() + HEADER) as u64;
    // Where each patched action sits: the actions follow the fields before
    // them, and each the ones before it.
    let mut actions: Vec<(u64, &ActionKey, u64, &ActionKey)> = Vec::new();
    if !patch.actions.is_empty() {
        let before =
            postcard::to_stdvec(&(&head.fingerprint, head.sources, &head.codes, &head.jobs))
                .map_err(|error| stale(&error.to_string()))?;
        let mut wanted: Vec<&(usize, ActionKey, u64)> = patch.actions.iter().collect();
        wanted.sort_by_key(|(position, _, _)| *position);
        let mut at = body_at + before.len() as u64 + varint_len(head.actions.len() as u64);
        let mut next = wanted.into_iter().peekable();
        for (position, action) in head.actions.iter().enumerate() {
            while let Some(&&(wanted, ref key, built_by)) = next.peek() {
                if wanted != position {
                    break;
                }
                actions.push((at + action.key_offset(), key, built_by, &action.key));
                next.next();
            }
            if next.peek().is_none() {
                break;
            }
            at += action.encoded_len();
        }
        if next.peek().is_some() {
            return Err(stale("an action beyond its actions"));
        }
    }
    // The old keys where the patch will write the new ones: the layout is
    // the one computed.
    for &(at, _, _, old) in &actions {
        let mut key = [0u8; 32];
        opened.read_exact_at(&mut key, at).map_err(io)?;
        if key != old.0 {
            return Err(stale("an action key elsewhere"));
        }
    }
    for &(at, _) in &patch.entries {
        let mut length_byte = [0u8; 1];
        if at < body_at + 1 || at + Seen::BYTES as u64 > length {
            return Err(stale("an entry beyond the body"));
        }
        opened.read_exact_at(&mut length_byte, at - 1).map_err(io)?;
        if usize::from(length_byte[0]) != Seen::BYTES {
            return Err(stale("an entry elsewhere"));
        }
    }
    // Zeroed first: a patch torn from here on leaves an interrupted write.
    opened
        .write_all_at(&[0u8; MAGIC.len() + HEADER], 0)
        .map_err(io)?;
    for &(at, key, built_by, _) in &actions {
        opened.write_all_at(&key.0, at).map_err(io)?;
        opened
            .write_all_at(&built_by.to_le_bytes(), at + 33)
            .map_err(io)?;
    }
    for (at, seen) in &patch.entries {
        opened.write_all_at(&seen.to_bytes(), *at).map_err(io)?;
    }
    // The body hashed again, in large pieces on every core (458 MB at 1M
    // partitions, in the page cache: about a tenth of a second).
    let mut hasher = blake3::Hasher::new();
    let mut piece = vec![0u8; 16 << 20];
    let mut at = body_at;
    while at < length {
        let count = piece
            .len()
            .min(usize::try_from(length - at).unwrap_or(usize::MAX));
        opened.read_exact_at(&mut piece[..count], at).map_err(io)?;
        hasher.update_rayon(&piece[..count]);
        at += count as u64;
    }
    let digest = *hasher.finalize().as_bytes();
    let mut head_bytes = MAGIC.to_vec();
    head_bytes.extend_from_slice(&header(&patch.last_event, &digest));
    opened.write_all_at(&head_bytes, 0).map_err(io)
}

/// The length of `value` as a postcard varint.
fn varint_len(value: u64) -> u64 {
    u64::from((64 - (value | 1).leading_zeros()).div_ceil(7))
}

/// Replaces the snapshot at `path` (writers only), in place: the body
/// first, then the header that names its digest, so a torn write is a
/// checksum mismatch (no snapshot). Overwriting the old file's blocks,
/// rather than writing a new file and renaming it over the old one, saves
/// allocating new blocks and freeing (on this kind of file system:
/// discarding) the old ones: 0.75 ms against 0.03 ms for 0.7 MB.
fn write_snapshot_at(path: &Path, snapshot: &Snapshot) -> Result<(), StoreError> {
    write_in_place(path, MAGIC.len() + HEADER, snapshot, |body_digest| {
        let mut head = Vec::with_capacity(MAGIC.len() + HEADER);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&header(&snapshot.last_event, body_digest));
        head
    })
    .map(|_| ())
}

/// Writes a head of `head_len` bytes and `value` (postcard) to `path` over
/// its old content: the body first, streamed (a million-action snapshot is
/// 400 MB: it is never held encoded in memory), then the length, then the
/// head `head` makes from the body's blake3 (which makes the file valid),
/// so a torn write leaves a file whose checksums fail. Returns the body's
/// blake3.
fn write_in_place<T: serde::Serialize>(
    path: &Path,
    head_len: usize,
    value: &T,
    head: impl FnOnce(&[u8; 32]) -> Vec<u8>,
) -> Result<[u8; 32], StoreError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|error| StoreError::io(path, error))?;
    // An old header that still names an old body digest fails against the
    // new body; zeroing it first also covers a crash after the length.
    file.write_all_at(&vec![0; head_len], 0)
        .map_err(|error| StoreError::io(path, error))?;
    let mut body = std::io::BufWriter::with_capacity(
        1 << 20,
        BodyWriter {
            file: &file,
            at: head_len as u64,
            hasher: blake3::Hasher::new(),
            error: None,
        },
    );
    let encoded = postcard::to_io(value, &mut body).map(|_| ());
    let flushed = std::io::Write::flush(&mut body);
    let body = body
        .into_inner()
        .map_err(|error| StoreError::io(path, error.into_error()))?;
    if let Some(error) = body.error {
        return Err(StoreError::io(path, error));
    }
    flushed.map_err(|error| StoreError::io(path, error))?;
    encoded.map_err(|error| StoreError::Catalog {
        path: path.to_owned(),
        message: format!("cannot encode: {error}"),
    })?;
    let digest = *body.hasher.finalize().as_bytes();
    let head = head(&digest);
    debug_assert_eq!(head.len(), head_len);
    file.set_len(body.at)
        .and_then(|()| file.write_all_at(&head, 0))
        .map_err(|error| StoreError::io(path, error))?;
    Ok(digest)
}

/// Writes a body at its offset in the file, hashing what it writes; keeps
/// the first I/O error (postcard reports its own).
struct BodyWriter<'f> {
    file: &'f std::fs::File,
    at: u64,
    hasher: blake3::Hasher,
    error: Option<std::io::Error>,
}

impl std::io::Write for BodyWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Err(error) = self.file.write_all_at(bytes, self.at) {
            let kind = error.kind();
            self.error.get_or_insert(error);
            return Err(kind.into());
        }
        self.hasher.update(bytes);
        self.at += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The header for `last_event` over a body with `body_digest`.
fn header(last_event: &LastEvent, body_digest: &[u8; 32]) -> [u8; HEADER] {
    let mut out = [0u8; HEADER];
    out[..8].copy_from_slice(&last_event.seq.to_le_bytes());
    out[8..16].copy_from_slice(&last_event.build.to_le_bytes());
    out[16..24].copy_from_slice(&last_event.time_ms.to_le_bytes());
    out[24..56].copy_from_slice(body_digest);
    let digest = blake3::hash(&out[..56]);
    out[56..].copy_from_slice(digest.as_bytes());
    out
}

/// Which snapshot file was read, its body verified: what
/// [`Store::advance_snapshot`] needs to rewrite its header, and every
/// [`INDEX_EVERY`]th recorded path with the place of its encoding, to find
/// the others ([`SnapshotFile::find`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    body_digest: [u8; 32],
    path: PathBuf,
    index: Vec<(String, u64)>,
}

impl SnapshotFile {
    /// Each of `keys` (sorted) as the file records it: the place of its
    /// entry (as [`PathBatch::get`] gives it) and the entry, or `None` for
    /// a key it does not record. Reads at most [`INDEX_EVERY`] paths per
    /// key, from where the kept key before it starts.
    pub fn find(&self, keys: &[&str]) -> Result<Vec<Option<(u64, Seen)>>, StoreError> {
        let io = |error: std::io::Error| StoreError::io(&self.path, error);
        let file = std::fs::File::open(&self.path).map_err(io)?;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let after = self
                .index
                .partition_point(|(kept, _)| kept.as_str() <= *key);
            let Some((_, start)) = after.checked_sub(1).map(|before| &self.index[before]) else {
                found.push(None);
                continue;
            };
            let mut reader = std::io::BufReader::with_capacity(64 << 10, &file);
            std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(*start)).map_err(io)?;
            let mut at = *start;
            let mut hit = None;
            for _ in 0..=INDEX_EVERY {
                let Some((recorded, seen, seen_at, next)) =
                    read_entry_at(&mut reader, at).map_err(io)?
                else {
                    break;
                };
                at = next;
                match recorded.as_str().cmp(key) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        hit = Some((seen_at, seen));
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            found.push(hit);
        }
        Ok(found)
    }

    /// The whole snapshot again, recorded paths included, if the file is
    /// still the one read (for a change a patch cannot write: a path
    /// recorded anew).
    pub fn read_whole(&self) -> Option<Snapshot> {
        let file = cairn_engine::config::open_cache_file(&self.path).ok()?;
        let (snapshot, file) = decode(file, self.path.clone()).ok()?;
        (file.body_digest == self.body_digest).then_some(snapshot)
    }
}

/// One recorded path read at `at` (the start of its encoding): its key,
/// entry, the place of its entry and where the next path starts; `None` at
/// the end of the file.
fn read_entry_at(
    reader: &mut impl std::io::Read,
    at: u64,
) -> std::io::Result<Option<(String, Seen, u64, u64)>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let Some((length, width)) = read_varint(reader)? else {
        return Ok(None);
    };
    let mut key = vec![0u8; usize::try_from(length).map_err(|_| bad("a key too long"))?];
    reader.read_exact(&mut key)?;
    let key = String::from_utf8(key).map_err(|_| bad("a key not UTF-8"))?;
    let mut seen = [0u8; Seen::BYTES + 1];
    reader.read_exact(&mut seen)?;
    if usize::from(seen[0]) != Seen::BYTES {
        return Err(bad("an entry of another width"));
    }
    let seen_at = at + width + length + 1;
    let seen = Seen::from_bytes(&seen[1..]).ok_or_else(|| bad("an entry that is none"))?;
    Ok(Some((key, seen, seen_at, seen_at + Seen::BYTES as u64)))
}

/// A varint and its width; `None` at the end of the input.
fn read_varint(reader: &mut impl std::io::Read) -> std::io::Result<Option<(u64, u64)>> {
    let mut value = 0u64;
    for width in 0..10u32 {
        let mut byte = [0u8; 1];
        if reader.read(&mut byte)? == 0 {
            return if width == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * width);
        if byte[0] & 0x80 == 0 {
            return Ok(Some((value, u64::from(width) + 1)));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "a varint too long",
    ))
}

/// Everything of a snapshot before its recorded paths, in its order.
#[derive(serde::Deserialize)]
struct Head {
    fingerprint: ContentDigest,
    sources: u64,
    codes: Vec<(String, Option<ContentDigest>)>,
    jobs: Vec<String>,
    actions: Vec<CurrentAction>,
    directories: Vec<String>,
    plan: Option<ContentDigest>,
}

/// A snapshot file's recorded paths, streamed after its head was read
/// ([`Store::read_snapshot_in`]); [`SnapshotReader::finish`] checks the
/// body against the header's digest.
pub struct SnapshotReader {
    body: Streamed<std::fs::File>,
    body_digest: [u8; 32],
    path: PathBuf,
    /// Paths not read yet.
    left: u64,
    read: usize,
    index: Vec<(String, u64)>,
    failed: Option<String>,
}

impl SnapshotReader {
    /// The file, once every path was read and its body hashes to its
    /// header's digest; else why not.
    pub fn finish(self) -> Result<SnapshotFile, String> {
        let path = self.path.clone();
        self.finish_checked()
            .map_err(|why| format!("{}: {why}", path.display()))
    }

    /// Whether reading the paths failed (a damaged file, which
    /// [`SnapshotReader::finish`] then names).
    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }

    fn finish_checked(mut self) -> Result<SnapshotFile, CacheFileError> {
        let mut batch = PathBatch::default();
        while self.left > 0 && self.failed.is_none() {
            if !matches!(self.next_batch(&mut batch), Ok(true)) {
                break;
            }
        }
        // Nothing after the paths; the digest covers the whole body, and a
        // torn or altered body is reported as such whatever failed to read.
        let trailing = self.body.at < self.body.end || self.body.refill();
        self.body.at = self.body.end;
        while self.body.refill() {
            self.body.at = self.body.end;
        }
        if let Some(error) = self.body.error.take() {
            return Err(error.into());
        }
        if self.body.hasher.finalize().as_bytes()[..] != self.body_digest {
            return Err(CacheFileError::Altered("checksum mismatch"));
        }
        if let Some(why) = self.failed.take() {
            return Err(CacheFileError::Undecodable(why));
        }
        if trailing || self.left > 0 {
            return Err(CacheFileError::Undecodable("bytes after its paths".into()));
        }
        Ok(SnapshotFile {
            body_digest: self.body_digest,
            path: self.path,
            index: self.index,
        })
    }

    fn next_path(&mut self, batch: &mut PathBatch) -> Result<(), String> {
        let start = self.body.position();
        let length = varint(&mut self.body)?;
        let length = usize::try_from(length).map_err(|_| "a key too long".to_owned())?;
        let key = self
            .body
            .take(length)
            .ok_or_else(|| "a truncated key".to_owned())?;
        let key = std::str::from_utf8(key)
            .map_err(|_| "a key not UTF-8".to_owned())?
            .to_owned();
        if varint(&mut self.body)? != Seen::BYTES as u64 {
            return Err("an entry of another width".into());
        }
        let at = self.body.position();
        let seen = self
            .body
            .take(Seen::BYTES)
            .and_then(Seen::from_bytes)
            .ok_or_else(|| "an entry that is none".to_owned())?;
        if self.read.is_multiple_of(INDEX_EVERY) {
            self.index.push((key.clone(), start));
        }
        self.read += 1;
        batch.push(&key, seen, at);
        Ok(())
    }
}

impl RecordedPaths for SnapshotReader {
    fn next_batch(&mut self, batch: &mut PathBatch) -> Result<bool, Unconfirmed> {
        batch.clear();
        if let Some(why) = &self.failed {
            return Err(Unconfirmed(why.clone()));
        }
        while self.left > 0 && batch.len() < cairn_engine::uptodate::PATH_BATCH {
            if let Err(why) = self.next_path(batch) {
                let why = format!("{}: cannot read its paths: {why}", self.path.display());
                self.failed = Some(why.clone());
                return Err(Unconfirmed(why));
            }
            self.left -= 1;
        }
        Ok(!batch.is_empty())
    }
}

/// A varint from the stream.
fn varint(body: &mut Streamed<std::fs::File>) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in 0..10u32 {
        let byte = body
            .next_byte()
            .ok_or_else(|| "a truncated varint".to_owned())?;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint too long".into())
}

/// Why a snapshot or kept plan file is not believed.
#[derive(Debug, thiserror::Error)]
enum CacheFileError {
    /// Its head is zero (or it is shorter than its head and zero): a write
    /// that was interrupted. Expected after a crash.
    #[error("an interrupted write")]
    Interrupted,
    #[error("not an up-to-date snapshot")]
    Foreign,
    /// Written in the older layout, by an older cairn.
    #[error("an older layout")]
    Older,
    #[error("{0} (altered or torn)")]
    Altered(&'static str),
    /// Its checksums hold but its body does not decode: written by another
    /// version of cairn.
    #[error("cannot decode: {0} (written by another version of cairn?)")]
    Undecodable(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Why a kept plan is not used.
#[derive(Debug, thiserror::Error)]
enum PlanError {
    #[error("an interrupted write")]
    Interrupted,
    #[error("an older layout")]
    Older,
    #[error("not a kept plan")]
    Foreign,
    #[error("checksum mismatch (altered or torn)")]
    Altered,
    #[error("not the snapshot's plan")]
    Stale,
    #[error("cannot decode: {0}")]
    Undecodable(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads the kept plan at `path`, checking its body against its head's
/// digest, and that digest against `named` (the snapshot's) if given; with
/// the digest.
fn read_plan_at(
    path: &Path,
    named: Option<&ContentDigest>,
) -> Result<(Plan, ContentDigest), PlanError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    cairn_engine::config::open_cache_file(path)?.read_to_end(&mut bytes)?;
    let (head, body) = bytes.split_at(PLAN_HEAD.min(bytes.len()));
    if head.iter().all(|&byte| byte == 0) {
        return Err(PlanError::Interrupted);
    }
    if head.starts_with(PLAN_MAGIC_V2) {
        return Err(PlanError::Older);
    }
    if head.len() < PLAN_HEAD || !head.starts_with(PLAN_MAGIC) {
        return Err(PlanError::Foreign);
    }
    let digest = &head[PLAN_MAGIC.len()..];
    // A stale plan is told from an altered one without hashing it (a
    // million-action plan is 100 MB).
    if named.is_some_and(|named| named.0[..] != *digest) {
        return Err(PlanError::Stale);
    }
    if blake3::hash(body).as_bytes()[..] != *digest {
        return Err(PlanError::Altered);
    }
    let record: PlanRecord =
        postcard::from_bytes(body).map_err(|error| PlanError::Undecodable(error.to_string()))?;
    let mut named_by = [0u8; 32];
    named_by.copy_from_slice(digest);
    // The encoded plan (134 MB at 1M partitions) is let go before the plan
    // is made from the record: the three at once were the changed-input
    // build's peak.
    drop(bytes);
    let plan = record
        .into_plan()
        .ok_or_else(|| PlanError::Undecodable("it does not hold together".into()))?;
    Ok((plan, ContentDigest(named_by)))
}

/// What `cairn store verify` finds of a cache file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheCheck {
    /// Absent, or sound.
    Sound,
    /// Not used by any build, for a reason that is no damage (an
    /// interrupted write, a stale plan, an older layout).
    Unused(String),
    /// A file a build would refuse: altered, torn, foreign.
    Bad(String),
}

/// Checks the snapshot in store directory `dir`, returning with the
/// verdict the digest of the plan a sound one names.
pub fn check_snapshot(dir: &Path) -> (CacheCheck, Option<ContentDigest>) {
    let path = dir.join(FILE);
    let file = match cairn_engine::config::open_cache_file(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return (CacheCheck::Sound, None);
        }
        Err(error) => return (CacheCheck::Bad(format!("unreadable: {error}")), None),
    };
    match decode(file, path) {
        Ok((snapshot, _)) => (CacheCheck::Sound, snapshot.plan),
        Err(
            why @ (CacheFileError::Interrupted
            | CacheFileError::Older
            | CacheFileError::Undecodable(_)),
        ) => (CacheCheck::Unused(why.to_string()), None),
        Err(why) => (CacheCheck::Bad(why.to_string()), None),
    }
}

/// Checks the kept plan in store directory `dir` against `named`, the
/// digest the snapshot names (none: no sound snapshot names one).
pub fn check_plan(dir: &Path, named: Option<&ContentDigest>) -> CacheCheck {
    match read_plan_at(&dir.join(PLAN_FILE), None) {
        Ok((_, digest)) if named == Some(&digest) => CacheCheck::Sound,
        Ok(_) => CacheCheck::Unused(PlanError::Stale.to_string()),
        Err(PlanError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => {
            CacheCheck::Sound
        }
        Err(why @ (PlanError::Interrupted | PlanError::Older)) => {
            CacheCheck::Unused(why.to_string())
        }
        Err(why) => CacheCheck::Bad(why.to_string()),
    }
}

/// The snapshot, kept plan and recheck files of store directory `dir`.
pub fn snapshot_files(dir: &Path) -> [PathBuf; 3] {
    [dir.join(FILE), dir.join(PLAN_FILE), dir.join(RECHECK_FILE)]
}

/// Checks the recheck list in store directory `dir` (absent or sound:
/// [`CacheCheck::Sound`]; whether it matches the snapshot is the build's
/// business, and a stale one is harmless). An empty file is what a crash
/// can leave of an unsynced write: unused, no damage.
pub fn check_recheck(dir: &Path) -> CacheCheck {
    let path = dir.join(RECHECK_FILE);
    match read_recheck_at(&path) {
        Ok(_) => CacheCheck::Sound,
        Err(_)
            if std::fs::symlink_metadata(&path)
                .is_ok_and(|meta| meta.is_file() && meta.len() == 0) =>
        {
            CacheCheck::Unused("empty (a write cut short)".into())
        }
        Err(why) => CacheCheck::Bad(why),
    }
}

/// The recheck list at `path`: `None` if there is no file, `Err` why a
/// file is not one.
fn read_recheck_at(path: &Path) -> Result<Option<Recheck>, String> {
    use cairn_engine::config::Unsealed;
    use std::io::Read;
    let file = match cairn_engine::config::open_cache_file(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("unreadable: {error}")),
    };
    let mut bytes = Vec::new();
    file.take(RECHECK_AT_MOST)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("unreadable: {error}"))?;
    let body = match cairn_engine::config::unseal(&bytes, RECHECK_MAGIC, 0) {
        Ok((_, body)) => body,
        Err(Unsealed::OtherMagic) => {
            return Err("not a recheck list (another magic, or cut short)".into());
        }
        Err(Unsealed::Altered) => {
            return Err("its body does not match its digest (altered or cut short)".into());
        }
    };
    let recheck: Recheck =
        postcard::from_bytes(body).map_err(|error| format!("undecodable: {error}"))?;
    if !recheck.actions.is_sorted() {
        return Err("its actions are not in order".into());
    }
    Ok(Some(recheck))
}

/// Reads a whole snapshot file, recorded paths included, checking its
/// body (what `cairn store verify` does).
fn decode(file: std::fs::File, path: PathBuf) -> Result<(Snapshot, SnapshotFile), CacheFileError> {
    let (mut snapshot, mut reader) = read_head(file, path)?;
    let mut batch = PathBatch::default();
    while let Ok(true) = reader.next_batch(&mut batch) {
        for index in 0..batch.len() {
            let (key, seen, _) = batch.get(index);
            snapshot.entries.push((key.to_owned(), *seen));
        }
    }
    let file = reader.finish_checked()?;
    Ok((snapshot, file))
}

/// Reads a snapshot file's header and everything of its body before the
/// recorded paths, which the reader it returns streams (the encoded paths
/// of a million actions, 400 MB, are never held whole).
fn read_head(
    mut file: std::fs::File,
    path: PathBuf,
) -> Result<(Snapshot, SnapshotReader), CacheFileError> {
    use std::io::Read;
    let mut head = [0u8; MAGIC.len() + HEADER];
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(count) => read += count,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    if head[..read].iter().all(|&byte| byte == 0) {
        return Err(CacheFileError::Interrupted);
    }
    if head[..read].starts_with(MAGIC_V4) {
        return Err(CacheFileError::Older);
    }
    if read < head.len() || &head[..MAGIC.len()] != MAGIC {
        return Err(CacheFileError::Foreign);
    }
    let head = &head[MAGIC.len()..];
    if blake3::hash(&head[..56]).as_bytes()[..] != head[56..] {
        return Err(CacheFileError::Altered("header checksum mismatch"));
    }
    let mut body_digest = [0u8; 32];
    body_digest.copy_from_slice(&head[24..56]);
    let mut streamed = Streamed::new(file);
    streamed.consumed = (MAGIC.len() + HEADER) as u64;
    let mut deserializer = postcard::Deserializer::from_flavor(streamed);
    let decoded: Result<Head, _> = serde::Deserialize::deserialize(&mut deserializer);
    let mut body = deserializer
        .finalize()
        .map_err(|error| CacheFileError::Undecodable(error.to_string()))?;
    let decoded = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            // A torn or altered body is reported as such even when it
            // fails to decode.
            body.at = body.end;
            while body.refill() {
                body.at = body.end;
            }
            if let Some(error) = body.error {
                return Err(error.into());
            }
            if body.hasher.finalize().as_bytes()[..] != body_digest {
                return Err(CacheFileError::Altered("checksum mismatch"));
            }
            return Err(CacheFileError::Undecodable(error.to_string()));
        }
    };
    let left = varint(&mut body).map_err(CacheFileError::Undecodable)?;
    let word = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let snapshot = Snapshot {
        fingerprint: decoded.fingerprint,
        last_event: LastEvent {
            seq: word(0),
            build: word(8),
            time_ms: word(16),
        },
        sources: decoded.sources,
        codes: decoded.codes,
        jobs: decoded.jobs,
        actions: decoded.actions,
        directories: decoded.directories,
        plan: decoded.plan,
        entries: Vec::new(),
    };
    Ok((
        snapshot,
        SnapshotReader {
            body,
            body_digest,
            path,
            left,
            read: 0,
            index: Vec::new(),
            failed: None,
        },
    ))
}

/// A postcard flavor over a file: bytes are taken from a 1 MiB buffer,
/// refilled (and hashed) as it runs out. Decoding from it is as fast as
/// from a slice, without the whole body in memory; nothing is borrowed
/// (the snapshot owns its strings), and no string is longer than the
/// buffer (one that is fails to decode).
struct Streamed<R> {
    reader: R,
    /// The file's bytes before the buffer's first.
    consumed: u64,
    buffer: Box<[u8]>,
    /// The next byte to take, and the end of what was read.
    at: usize,
    end: usize,
    hasher: blake3::Hasher,
    error: Option<std::io::Error>,
}

impl<R: std::io::Read> Streamed<R> {
    fn new(reader: R) -> Self {
        Streamed {
            reader,
            consumed: 0,
            buffer: vec![0; 1 << 20].into_boxed_slice(),
            at: 0,
            end: 0,
            hasher: blake3::Hasher::new(),
            error: None,
        }
    }

    /// Moves what is left to the front and reads more after it; `false` at
    /// the end of the file or on an error (kept).
    fn refill(&mut self) -> bool {
        self.buffer.copy_within(self.at..self.end, 0);
        self.consumed += self.at as u64;
        self.end -= self.at;
        self.at = 0;
        loop {
            match self.reader.read(&mut self.buffer[self.end..]) {
                Ok(0) => return false,
                Ok(read) => {
                    self.hasher.update(&self.buffer[self.end..self.end + read]);
                    self.end += read;
                    return true;
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.error = Some(error);
                    return false;
                }
            }
        }
    }
}

impl<R: std::io::Read> Streamed<R> {
    /// The file offset of the next byte.
    fn position(&self) -> u64 {
        self.consumed + self.at as u64
    }

    fn next_byte(&mut self) -> Option<u8> {
        if self.at == self.end && !self.refill() {
            return None;
        }
        self.at += 1;
        Some(self.buffer[self.at - 1])
    }

    /// The next `count` bytes (at most the buffer's length).
    fn take(&mut self, count: usize) -> Option<&[u8]> {
        while self.end - self.at < count {
            if count > self.buffer.len() || !self.refill() {
                return None;
            }
        }
        self.at += count;
        Some(&self.buffer[self.at - count..self.at])
    }
}

impl<'de, R: std::io::Read + 'de> postcard::de_flavors::Flavor<'de> for Streamed<R> {
    type Remainder = Self;
    type Source = ();

    #[inline]
    fn pop(&mut self) -> postcard::Result<u8> {
        if self.at == self.end && !self.refill() {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        let byte = self.buffer[self.at];
        self.at += 1;
        Ok(byte)
    }

    fn try_take_n(&mut self, _count: usize) -> postcard::Result<&'de [u8]> {
        // Borrowing from the input: the snapshot does not.
        Err(postcard::Error::DeserializeUnexpectedEnd)
    }

    #[inline]
    fn try_take_n_temp<'a>(&'a mut self, count: usize) -> postcard::Result<&'a [u8]>
    where
        'de: 'a,
    {
        while self.end - self.at < count {
            if count > self.buffer.len() || !self.refill() {
                return Err(postcard::Error::DeserializeUnexpectedEnd);
            }
        }
        let taken = &self.buffer[self.at..self.at + count];
        self.at += count;
        Ok(taken)
    }

    fn finalize(self) -> postcard::Result<Self> {
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_engine::digest::{ActionKey, ContentDigest};
    use cairn_engine::record::StatEntry;
    use cairn_engine::uptodate::{CurrentAction, PathBatch, Seen};

    fn snapshot() -> Snapshot {
        Snapshot {
            fingerprint: ContentDigest::of(b"graph"),
            last_event: LastEvent {
                seq: 7,
                build: 2,
                time_ms: 1_700_000_000_000,
            },
            sources: 1,
            codes: vec![("clean".into(), Some(ContentDigest::of(b"code")))],
            jobs: vec!["clean".into()],
            actions: vec![CurrentAction {
                index: 0,
                job: 0,
                key: ActionKey([3; 32]),
                built_by: 1,
                outputs: vec!["clean/date=2024-01-01".into()],
            }],
            directories: vec!["/data/clean".into()],
            entries: vec![(
                "/data/clean/date=2024-01-01/out.csv".into(),
                Seen {
                    entry: StatEntry {
                        size: 3,
                        mtime_ns: 1,
                        ctime_ns: 2,
                        inode: 4,
                        recorded_ns: 5,
                        digest: ContentDigest::of(b"abc"),
                    },
                    executable: false,
                },
            )],
            plan: Some(ContentDigest::of(b"plan")),
        }
    }

    /// The snapshot in `dir` as a build reads it: its head, then its
    /// paths streamed and its body checked.
    fn read_back(dir: &Path) -> Option<(Snapshot, SnapshotFile)> {
        let (mut snapshot, mut reader) = Store::read_snapshot_in(dir)?;
        let mut batch = PathBatch::default();
        while reader.next_batch(&mut batch).ok()? {
            for index in 0..batch.len() {
                let (key, seen, _) = batch.get(index);
                snapshot.entries.push((key.to_owned(), *seen));
            }
        }
        let file = reader.finish().ok()?;
        Some((snapshot, file))
    }

    fn seen(size: u64) -> Seen {
        Seen {
            entry: StatEntry {
                size,
                mtime_ns: 1,
                ctime_ns: 2,
                inode: 4,
                recorded_ns: 5,
                digest: ContentDigest::of(&size.to_le_bytes()),
            },
            executable: size.is_multiple_of(3),
        }
    }

    /// A snapshot of 1,000 paths (keys of varied lengths) and three actions.
    fn larger() -> Snapshot {
        let mut larger = snapshot();
        larger.entries = (0..1000u64)
            .map(|n| {
                (
                    format!("/data/{}/{n:05}", "d".repeat((n % 7) as usize)),
                    seen(n),
                )
            })
            .collect();
        larger.entries.sort_by(|a, b| a.0.cmp(&b.0));
        for index in 1..3u32 {
            larger.actions.push(CurrentAction {
                index,
                job: 0,
                key: ActionKey([index as u8 + 3; 32]),
                built_by: 200 + u64::from(index),
                outputs: vec![format!("clean/date=2024-01-0{index}"); index as usize],
            });
        }
        larger
    }

    /// Every recorded path is found where a read says it is; a key not
    /// recorded (before the first, between two, after the last) is not.
    #[test]
    fn paths_are_found_by_the_kept_keys() {
        let (_dir, store) = writer();
        let larger = larger();
        write_snapshot_at(&store.snapshot_path(), &larger).unwrap();
        let (mut read, mut reader) = Store::read_snapshot_in(store.dir()).unwrap();
        let mut places = Vec::new();
        let mut batch = PathBatch::default();
        while reader.next_batch(&mut batch).unwrap() {
            for index in 0..batch.len() {
                let (key, seen, at) = batch.get(index);
                read.entries.push((key.to_owned(), *seen));
                places.push(at);
            }
        }
        let file = reader.finish().unwrap();
        assert_eq!(read, larger);
        let keys: Vec<&str> = larger.entries.iter().map(|(key, _)| key.as_str()).collect();
        let found = file.find(&keys).unwrap();
        for ((found, at), (_, seen)) in found.iter().zip(&places).zip(&larger.entries) {
            assert_eq!(*found, Some((*at, *seen)));
        }
        let absent = ["/", "/data/d/00001x", "/data/dd/00003", "/zzz"];
        assert_eq!(file.find(&absent).unwrap(), vec![None; 4]);
    }

    /// A patch writes entries and action keys in place: the file reads back
    /// as the snapshot with those changes, under the new last event; one
    /// torn after zeroing the header is no snapshot, and one of a file
    /// that changed since it was read is refused.
    #[test]
    fn a_patched_snapshot_reads_back_with_the_changes() {
        let (_dir, store) = writer();
        let larger = larger();
        write_snapshot_at(&store.snapshot_path(), &larger).unwrap();
        let (head, mut reader) = Store::read_snapshot_in(store.dir()).unwrap();
        let mut places = Vec::new();
        let mut batch = PathBatch::default();
        while reader.next_batch(&mut batch).unwrap() {
            for index in 0..batch.len() {
                places.push(batch.get(index).2);
            }
        }
        let file = reader.finish().unwrap();
        let later = LastEvent {
            seq: 99,
            build: 9,
            time_ms: 1_700_000_009_000,
        };
        let patch = SnapshotPatch {
            last_event: later,
            entries: vec![(places[0], seen(5000)), (places[999], seen(5001))],
            actions: vec![
                (2, ActionKey([0xee; 32]), 70_000),
                (0, ActionKey([0xdd; 32]), 1),
            ],
        };
        store.patch_snapshot(&file, &head, &patch).unwrap();
        let (patched, patched_file) = read_back(store.dir()).unwrap();
        let mut expected = larger;
        expected.last_event = later;
        expected.entries[0].1 = seen(5000);
        expected.entries[999].1 = seen(5001);
        expected.actions[2].key = ActionKey([0xee; 32]);
        expected.actions[2].built_by = 70_000;
        expected.actions[0].key = ActionKey([0xdd; 32]);
        assert_eq!(patched, expected);
        // The file read before is not this one any more.
        assert!(store.patch_snapshot(&file, &head, &patch).is_err());
        assert_eq!(read_back(store.dir()).unwrap().0, expected);
        // An action beyond the snapshot's: refused, the file untouched.
        let beyond = SnapshotPatch {
            actions: vec![(3, ActionKey([1; 32]), 1)],
            ..patch
        };
        assert!(
            store
                .patch_snapshot(&patched_file, &patched, &beyond)
                .is_err()
        );
        assert_eq!(read_back(store.dir()).unwrap().0, expected);
        // Torn after the header was zeroed: an interrupted write.
        let path = store.snapshot_path();
        let mut torn = std::fs::read(&path).unwrap();
        torn[..MAGIC.len() + HEADER].fill(0);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(read_back(store.dir()), None);
        assert!(matches!(
            check_snapshot(store.dir()).0,
            CacheCheck::Unused(_)
        ));
    }

    /// A snapshot of the layout before this one is no snapshot, and no
    /// damage.
    #[test]
    fn an_older_layout_is_no_snapshot_and_no_damage() {
        let (_dir, store) = writer();
        write_snapshot_at(&store.snapshot_path(), &snapshot()).unwrap();
        let path = store.snapshot_path();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..MAGIC.len()].copy_from_slice(MAGIC_V4);
        std::fs::write(&path, &bytes).unwrap();
        assert!(Store::read_snapshot_in(store.dir()).is_none());
        assert!(matches!(
            check_snapshot(store.dir()).0,
            CacheCheck::Unused(_)
        ));
    }

    fn writer() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join(".cairn"),
            crate::OpenMode::Write { wait: false },
            &mut |_| {},
        )
        .unwrap();
        (dir, store)
    }

    #[test]
    fn a_recheck_list_reads_back_and_a_damaged_one_is_none() {
        let (_dir, store) = writer();
        assert_eq!(store.read_recheck(), None);
        assert_eq!(check_recheck(store.dir()), CacheCheck::Sound);
        let event = |seq| LastEvent {
            seq,
            build: seq,
            time_ms: 7,
        };
        let recheck = Recheck {
            from: event(3),
            to: event(9),
            actions: vec![0, 4, 70_000],
        };
        store.write_recheck(&recheck).unwrap();
        assert_eq!(store.read_recheck(), Some(recheck.clone()));
        assert_eq!(check_recheck(store.dir()), CacheCheck::Sound);
        let path = store.dir().join(RECHECK_FILE);
        let sound = std::fs::read(&path).unwrap();
        // Any byte altered, or cut anywhere: none, and damage to verify.
        for at in 0..sound.len() {
            let mut altered = sound.clone();
            altered[at] ^= 0x10;
            std::fs::write(&path, &altered).unwrap();
            assert_eq!(store.read_recheck(), None, "byte {at}");
            assert!(matches!(check_recheck(store.dir()), CacheCheck::Bad(_)));
            std::fs::write(&path, &sound[..at]).unwrap();
            assert_eq!(store.read_recheck(), None, "cut at {at}");
        }
        // Empty (a crash before the unsynced write reached the disk):
        // none, and no damage.
        std::fs::write(&path, b"").unwrap();
        assert_eq!(store.read_recheck(), None);
        assert!(matches!(check_recheck(store.dir()), CacheCheck::Unused(_)));
        // Well-formed but out of order: refused.
        store
            .write_recheck(&Recheck {
                actions: vec![4, 0],
                ..recheck
            })
            .unwrap();
        assert_eq!(store.read_recheck(), None);
        store.write_recheck(&recheck).unwrap();
        store.forget_snapshot().unwrap();
        assert_eq!(store.read_recheck(), None);
        assert!(!path.exists());
    }

    #[test]
    fn a_written_snapshot_reads_back_equal() {
        let (_dir, store) = writer();
        assert_eq!(read_back(store.dir()), None);
        write_snapshot_at(&store.snapshot_path(), &snapshot()).unwrap();
        let (read, file) = read_back(store.dir()).unwrap();
        assert_eq!(read, snapshot());
        // Moving it on rewrites the header alone.
        let later = LastEvent {
            seq: 10,
            build: 3,
            time_ms: 1_700_000_000_500,
        };
        store.advance_snapshot(&file, &later).unwrap();
        let (moved, _) = read_back(store.dir()).unwrap();
        assert_eq!(moved.last_event, later);
        assert_eq!(
            Snapshot {
                last_event: later,
                ..snapshot()
            },
            moved
        );
    }

    /// Written while the store closes: the snapshot reads back, the
    /// catalog was closed cleanly (stamped), and the lock is free again.
    #[test]
    fn a_snapshot_written_while_closing_reads_back_and_the_store_reopens() {
        let (dir, store) = writer();
        let cairn = store.dir().to_owned();
        store
            .close_writing_snapshot(&SnapshotWrite::Whole(&snapshot()))
            .unwrap();
        assert!(cairn.join("catalog.closed").is_file());
        let (read, _) = read_back(&cairn).unwrap();
        assert_eq!(read, snapshot());
        let again = Store::open(&cairn, crate::OpenMode::Write { wait: false }, &mut |_| {});
        assert!(again.is_ok(), "the lock was not released");
        drop(dir);
    }

    /// One action reading one source.
    fn small_plan() -> Plan {
        use cairn_engine::config::{DataDep, DepKind, JobConfig};
        use cairn_engine::plan::{InputSource, PlannedAction, SourceNode};
        use cairn_engine::refs::PartitionRef;
        let source = PartitionRef::parse("inputs/date=2024-01-01").unwrap();
        Plan {
            actions: vec![PlannedAction {
                job: "clean".into(),
                config: JobConfig {
                    outputs: vec![PartitionRef::parse("clean/date=2024-01-01").unwrap()].into(),
                    inputs: vec![DataDep {
                        partition: source.clone(),
                        dep: DepKind::Materialize,
                    }]
                    .into(),
                    args: vec!["--fast".into()],
                    env: [("TZ".to_owned(), "UTC".to_owned())].into(),
                },
                inputs: vec![InputSource::Source { source: 0 }].into(),
                dependents: Default::default(),
            }],
            sources: vec![SourceNode {
                partition: source,
                path: "/p/inputs/2024-01-01.txt".into(),
            }],
            requested: Vec::new(),
            order: vec![0],
            configure_calls: 1,
        }
    }

    #[test]
    fn a_kept_plan_is_read_only_by_its_digest() {
        let (_dir, store) = writer();
        // The requested refs are not kept (no build of a kept plan reads
        // them); everything else reads back as it was.
        let mut asked = small_plan();
        asked.requested = asked.actions[0].config.outputs.to_vec();
        let digest = store.write_plan(&asked).unwrap();
        let read = store.read_plan(&digest).unwrap();
        assert!(read.requested.is_empty());
        assert_eq!(format!("{read:?}"), format!("{:?}", small_plan()));
        assert!(
            store
                .read_plan(&ContentDigest::of(b"another plan"))
                .is_none()
        );
        // Altered or torn: no plan.
        let path = store.dir().join(PLAN_FILE);
        let bytes = std::fs::read(&path).unwrap();
        let mut altered = bytes.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        std::fs::write(&path, altered).unwrap();
        assert!(store.read_plan(&digest).is_none());
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(store.read_plan(&digest).is_none());
        // Forgetting the snapshot forgets the plan.
        std::fs::write(&path, &bytes).unwrap();
        assert!(store.read_plan(&digest).is_some());
        store.forget_snapshot().unwrap();
        assert!(store.read_plan(&digest).is_none());
    }

    /// `store verify`'s verdicts: damage is a problem; an interrupted
    /// write, a stale plan and an older layout are not.
    #[test]
    fn verify_tells_damage_from_interrupted_writes_and_stale_plans() {
        let (_dir, store) = writer();
        let dir = store.dir().to_owned();
        assert_eq!(check_snapshot(&dir), (CacheCheck::Sound, None));
        assert_eq!(check_plan(&dir, None), CacheCheck::Sound);
        let digest = store.write_plan(&small_plan()).unwrap();
        let mut named = snapshot();
        named.plan = Some(digest);
        write_snapshot_at(&store.snapshot_path(), &named).unwrap();
        assert_eq!(check_snapshot(&dir), (CacheCheck::Sound, Some(digest)));
        assert_eq!(check_plan(&dir, Some(&digest)), CacheCheck::Sound);

        let plan_path = dir.join(PLAN_FILE);
        let plan = std::fs::read(&plan_path).unwrap();
        let bad = |check: CacheCheck| matches!(check, CacheCheck::Bad(_));
        let unused = |check: CacheCheck| matches!(check, CacheCheck::Unused(_));
        // Stale: a sound plan another snapshot does not name.
        assert!(unused(check_plan(&dir, Some(&ContentDigest::of(b"x")))));
        assert!(unused(check_plan(&dir, None)));
        // Altered body, truncated body, foreign head: damage.
        let mut altered = plan.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        std::fs::write(&plan_path, &altered).unwrap();
        assert!(bad(check_plan(&dir, Some(&digest))));
        assert!(store.read_plan(&digest).is_none());
        std::fs::write(&plan_path, &plan[..plan.len() - 1]).unwrap();
        assert!(bad(check_plan(&dir, Some(&digest))));
        std::fs::write(&plan_path, b"something else entirely").unwrap();
        assert!(bad(check_plan(&dir, Some(&digest))));
        // A zeroed head (a write under way when cairn died), an older
        // layout: not damage.
        let mut zeroed = plan.clone();
        zeroed[..PLAN_HEAD].fill(0);
        std::fs::write(&plan_path, &zeroed).unwrap();
        assert!(unused(check_plan(&dir, Some(&digest))));
        std::fs::write(&plan_path, b"").unwrap();
        assert!(unused(check_plan(&dir, Some(&digest))));
        let mut older = PLAN_MAGIC_V2.to_vec();
        older.extend_from_slice(&plan[PLAN_HEAD..]);
        std::fs::write(&plan_path, &older).unwrap();
        assert!(unused(check_plan(&dir, Some(&digest))));

        let path = store.snapshot_path();
        let bytes = std::fs::read(&path).unwrap();
        let mut altered = bytes.clone();
        altered[MAGIC.len() + HEADER + 2] ^= 4;
        std::fs::write(&path, &altered).unwrap();
        assert!(bad(check_snapshot(&dir).0));
        let mut zeroed = bytes.clone();
        zeroed[..MAGIC.len() + HEADER].fill(0);
        std::fs::write(&path, &zeroed).unwrap();
        assert!(unused(check_snapshot(&dir).0));
        std::fs::write(&path, &bytes[..20]).unwrap();
        assert!(bad(check_snapshot(&dir).0));
        // Not a regular file: damage, and never waited on.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(bad(check_snapshot(&dir).0));
        assert_eq!(read_back(&dir), None);
    }

    #[test]
    fn a_torn_or_altered_snapshot_is_no_snapshot() {
        let (_dir, store) = writer();
        write_snapshot_at(&store.snapshot_path(), &snapshot()).unwrap();
        let path = store.snapshot_path();
        let bytes = std::fs::read(&path).unwrap();
        // Every truncation, and a flipped bit anywhere, is refused.
        for length in [0, 10, MAGIC.len() + 32, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..length]).unwrap();
            assert_eq!(read_back(store.dir()), None, "truncated to {length}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert_eq!(read_back(store.dir()), None, "a byte appended");
        for position in [
            0,
            MAGIC.len() + 3,
            MAGIC.len() + 60,
            MAGIC.len() + HEADER,
            bytes.len() - 1,
        ] {
            let mut altered = bytes.clone();
            altered[position] ^= 0x10;
            std::fs::write(&path, &altered).unwrap();
            assert_eq!(read_back(store.dir()), None, "bit flipped at {position}");
        }
    }
}
