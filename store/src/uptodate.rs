//! The up-to-date snapshot file (`.cairn/up-to-date`): a cache beside the
//! catalog, never a source of truth (engine/src/uptodate.rs says what it
//! holds and when it may be believed).
//!
//! Layout: the 16-byte magic `cairn-up-to-date`, blake3 of the body (32
//! bytes), the body (postcard). Written to a temporary name and renamed
//! over the old one; not fsynced: a torn or lost file fails its checksum or
//! is missing, and the build that finds it so takes the full path.

use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_engine::uptodate::{LastEvent, Snapshot};

use crate::{Store, StoreError};

const FILE: &str = "up-to-date";
const MAGIC: &[u8; 16] = b"cairn-up-to-date";

impl Store {
    fn snapshot_path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The snapshot of the store at `dir`, if there is a readable one (a
    /// missing, torn or foreign file is no snapshot: the reason goes to the
    /// debug log). Reads one file and opens nothing else, so a build can
    /// look before it takes the writer lock.
    pub fn read_snapshot_in(dir: &Path) -> Option<Snapshot> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::debug!("no up-to-date snapshot: {}: {error}", path.display());
                return None;
            }
        };
        match decode(&bytes) {
            Ok(snapshot) => Some(snapshot),
            Err(why) => {
                tracing::debug!("up-to-date snapshot ignored: {}: {why}", path.display());
                None
            }
        }
    }

    /// Replaces the snapshot (writers only).
    pub fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let path = self.snapshot_path();
        let temporary = self.dir.join(format!("{FILE}.tmp"));
        let body = postcard::to_stdvec(snapshot).map_err(|error| StoreError::Catalog {
            path: path.clone(),
            message: format!("cannot encode the up-to-date snapshot: {error}"),
        })?;
        let digest = blake3::hash(&body);
        let written = std::fs::File::create(&temporary).and_then(|mut file| {
            file.write_all(MAGIC)?;
            file.write_all(digest.as_bytes())?;
            file.write_all(&body)
        });
        written
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|error| StoreError::io(&temporary, error))
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

fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    let header = MAGIC.len() + 32;
    if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not an up-to-date snapshot".into());
    }
    let body = &bytes[header..];
    if blake3::hash(body).as_bytes()[..] != bytes[MAGIC.len()..header] {
        return Err("checksum mismatch (torn or altered)".into());
    }
    postcard::from_bytes(body).map_err(|error| format!("cannot decode: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_engine::digest::{ActionKey, ContentDigest};
    use cairn_engine::record::StatEntry;
    use cairn_engine::uptodate::{CurrentAction, Seen};

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
                job: 0,
                key: ActionKey([3; 32]),
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
        }
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
    fn a_written_snapshot_reads_back_equal() {
        let (_dir, store) = writer();
        assert_eq!(Store::read_snapshot_in(store.dir()), None);
        store.write_snapshot(&snapshot()).unwrap();
        assert_eq!(Store::read_snapshot_in(store.dir()), Some(snapshot()));
    }

    #[test]
    fn a_torn_or_altered_snapshot_is_no_snapshot() {
        let (_dir, store) = writer();
        store.write_snapshot(&snapshot()).unwrap();
        let path = store.snapshot_path();
        let bytes = std::fs::read(&path).unwrap();
        // Every truncation, and a flipped bit anywhere, is refused.
        for length in [0, 10, MAGIC.len() + 32, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..length]).unwrap();
            assert_eq!(
                Store::read_snapshot_in(store.dir()),
                None,
                "truncated to {length}"
            );
        }
        for position in [0, MAGIC.len() + 3, bytes.len() - 1] {
            let mut altered = bytes.clone();
            altered[position] ^= 0x10;
            std::fs::write(&path, &altered).unwrap();
            assert_eq!(
                Store::read_snapshot_in(store.dir()),
                None,
                "bit flipped at {position}"
            );
        }
    }
}
