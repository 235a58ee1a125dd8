//! Adoption ([`BlobStore::adopt_file`]): how a job's outputs enter the store.
//!
//! A large file that cairn owns (a finished job's staged output) is hashed in
//! place, and if its content is new it is hard-linked into `cas/tmp/`, its
//! write bits are cleared (and owner read set: its mode becomes its blob
//! mode, `blob_mode`) and the link is renamed onto the blob's name, by
//! the same `commit` as a copied blob: no byte is copied. The output placed
//! in `data/` afterwards is then the blob's inode, read-only. Whoever writes
//! it in place anyway (the superuser ignores the mode) corrupts the blob, and
//! the re-hash on read reports it.
//!
//! Copied instead, and left untouched: small files (one write is as cheap as
//! a link, and an edited small data file then never reaches the store); a
//! file with other names (a job that linked an input into its output), so
//! that neither the mode change nor a later write reaches a name outside
//! cairn's staging; a file the link fails for (another file system, one
//! without hard links).
//!
//! Invariant: a file is linked only after its digest was computed from it
//! through the descriptor that `fstat` showed unchanged before and after,
//! and only while the name linked is still that inode.

use std::fs::{File, Metadata, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cairn_engine::ContentDigest;
use cairn_engine::ports::StoreError;

#[cfg(doc)]
use cairn_engine::ports::BlobStore;

use super::FsBlobStore;

/// How [`FsBlobStore::adopt`] makes a second name for a file: `hard_link`,
/// or a stand-in in tests.
type Link = fn(&Path, &Path) -> std::io::Result<()>;

impl FsBlobStore {
    /// [`BlobStore::adopt_file`], making the second name with `link`.
    pub(super) fn adopt(&self, path: &Path, link: Link) -> Result<ContentDigest, StoreError> {
        self.store_file(path, |source, before| {
            self.adopt_large(source, path, before, link)
        })
    }

    /// Adopts the large file open as `source`, which `before` (its `fstat`
    /// when it was opened) describes.
    pub(super) fn adopt_large(
        &self,
        source: File,
        path: &Path,
        before: &Metadata,
        link: Link,
    ) -> Result<ContentDigest, StoreError> {
        let digest = hash_mapped(&source).map_err(|error| StoreError::io(path, error))?;
        let after = source
            .metadata()
            .map_err(|error| StoreError::io(path, error))?;
        if !same_content_stat(before, &after) {
            return Err(changed_while_stored(path));
        }
        let length = before.len();
        let final_path = self.blob_path(&digest);
        let read_only = super::blob_mode(before);
        if self.keeps(&digest, &final_path, length, read_only) {
            self.written(final_path);
            return Ok(digest);
        }
        // Another name for the inode is outside cairn's staging (a job that
        // linked an input into its output): clearing its write bits, or a
        // later write through it, must not reach it.
        if before.nlink() != 1 {
            return self.put_copy(source, path);
        }
        let temp = self.temp_name();
        if let Err(error) = link(path, &temp.0) {
            if !copy_after_link_error(&error) {
                return Err(StoreError::io(
                    path,
                    std::io::Error::new(
                        error.kind(),
                        format!("cannot link it into {}: {error}", self.temp_dir.display()),
                    ),
                ));
            }
            tracing::debug!(
                "{}: not linked into the store ({error}), copied",
                path.display()
            );
            return self.put_copy(source, path);
        }
        // The name linked must be the inode hashed (the path was not
        // replaced meanwhile); otherwise the temp link goes with `temp`.
        let linked =
            std::fs::symlink_metadata(&temp.0).map_err(|error| StoreError::io(&temp.0, error))?;
        if (linked.dev(), linked.ino()) != (before.dev(), before.ino()) {
            return Err(changed_while_stored(path));
        }
        if read_only != before.mode() & 0o7777 {
            source
                .set_permissions(Permissions::from_mode(read_only))
                .map_err(|error| StoreError::io(path, error))?;
        }
        self.commit(temp, digest, length, read_only)
    }
}

/// Whether what `fstat` says of a file's content is the same in `before`
/// and `after`: size, mtime and ctime (a write changes the mtime, and
/// resetting the mtime afterwards changes the ctime).
fn same_content_stat(before: &Metadata, after: &Metadata) -> bool {
    (
        before.len(),
        before.mtime(),
        before.mtime_nsec(),
        before.ctime(),
        before.ctime_nsec(),
    ) == (
        after.len(),
        after.mtime(),
        after.mtime_nsec(),
        after.ctime(),
        after.ctime_nsec(),
    )
}

fn changed_while_stored(path: &Path) -> StoreError {
    StoreError::io(
        path,
        std::io::Error::other(
            "the file changed while it was being stored (nothing may write to a job's output once the job has exited)",
        ),
    )
}

/// Whether a failed `hard_link` into the store leaves copying the file
/// worth trying: yes for another file system (EXDEV), a file system or
/// policy that refuses the link (EPERM), too many links (EMLINK) and the
/// like; no when the store's file system itself is the problem (full, over
/// quota, read-only, I/O error), which a copy would hit as well.
pub(super) fn copy_after_link_error(error: &std::io::Error) -> bool {
    !matches!(
        error.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::ReadOnlyFilesystem
    ) && error.raw_os_error() != Some(libc::EIO)
}

/// Hashes a file in place through a read-only mapping of `file`, on
/// several threads (as `b3sum` does).
#[expect(
    unsafe_code,
    reason = "mapping the open descriptor hashes exactly the inode that adoption then links; blake3's mapping helper opens a path"
)]
fn hash_mapped(file: &File) -> std::io::Result<ContentDigest> {
    // SAFETY: the mapping is private to this function and only read. Its
    // bytes could change under us if the file were written meanwhile: the
    // caller owns a file it promised not to change, and compares its size,
    // mtime and ctime before and after hashing to refuse one that did. A
    // truncation meanwhile raises SIGBUS, as with any mapping (blake3's
    // `update_mmap_rayon` included), never a wrong digest.
    let map = unsafe { memmap2::Mmap::map(file)? };
    let mut hasher = blake3::Hasher::new();
    hasher.update_rayon(&map);
    Ok(ContentDigest(*hasher.finalize().as_bytes()))
}
