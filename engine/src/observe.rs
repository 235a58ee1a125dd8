//! Observing files by content: digests of files and partition trees, through
//! the stat cache so that unchanged files are not re-read (design.md §11).
//!
//! A cached digest is trusted only when size, mtime, ctime and inode all match
//! and the file was not modified within [`RACY_NS`] before the digest was
//! recorded (git's racy-timestamp rule: a write in the same clock tick as the
//! recording could leave the metadata unchanged).

use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::digest::ContentDigest;
use crate::ports::Catalog;
use crate::record::{FileEntry, StatEntry, partition_digest};

/// Files modified this close to the recording time are re-hashed next time.
pub const RACY_NS: i128 = 1_000_000_000;

/// A stat-cache update to record with the next catalog commit.
pub type StatUpdate = (String, StatEntry);

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {what} is not allowed in a partition (only regular files and directories)")]
    Refused { path: PathBuf, what: &'static str },
    #[error("{path}: the stat cache could not be read: {message}")]
    Cache { path: PathBuf, message: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ObserveError + '_ {
    move |source| ObserveError::Io {
        path: path.to_owned(),
        source,
    }
}

pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as i128)
        .unwrap_or(0)
}

fn mtime_ns(metadata: &Metadata) -> i128 {
    i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec())
}

fn ctime_ns(metadata: &Metadata) -> i128 {
    i128::from(metadata.ctime()) * 1_000_000_000 + i128::from(metadata.ctime_nsec())
}

/// Hashes a file's content with blake3, streaming.
pub fn hash_file(path: &Path) -> io::Result<ContentDigest> {
    let mut file = fs::File::open(path)?;
    let length = file.metadata()?.len();
    let mut hasher = blake3::Hasher::new();
    if length > 16 * 1024 * 1024 {
        hasher.update_mmap_rayon(path)?;
    } else {
        let mut buffer = vec![0u8; length.clamp(1, 1024 * 1024) as usize];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
    }
    Ok(ContentDigest(*hasher.finalize().as_bytes()))
}

/// Reads digests through the stat cache and collects the updates to record.
pub struct Observer<'a> {
    catalog: &'a dyn Catalog,
}

impl<'a> Observer<'a> {
    pub fn new(catalog: &'a dyn Catalog) -> Self {
        Observer { catalog }
    }

    /// The digest of one regular file, given its metadata.
    pub fn file(
        &self,
        path: &Path,
        metadata: &Metadata,
        updates: &mut Vec<StatUpdate>,
    ) -> Result<ContentDigest, ObserveError> {
        let key = path.to_string_lossy().into_owned();
        let (size, mtime, ctime, inode) = (
            metadata.len(),
            mtime_ns(metadata),
            ctime_ns(metadata),
            metadata.ino(),
        );
        let cached = self
            .catalog
            .stat(&key)
            .map_err(|error| ObserveError::Cache {
                path: path.to_owned(),
                message: error.to_string(),
            })?;
        if let Some(entry) = cached
            && entry.size == size
            && entry.mtime_ns == mtime
            && entry.ctime_ns == ctime
            && entry.inode == inode
            && mtime < entry.recorded_ns - RACY_NS
        {
            return Ok(entry.digest);
        }
        let recorded_ns = now_ns();
        let digest = hash_file(path).map_err(io_error(path))?;
        updates.push((
            key,
            StatEntry {
                size,
                mtime_ns: mtime,
                ctime_ns: ctime,
                inode,
                recorded_ns,
                digest,
            },
        ));
        Ok(digest)
    }

    /// The files of a partition at `root` (a directory, or a single file whose
    /// entry gets the empty path), sorted by path. `Ok(None)` if `root` does
    /// not exist.
    pub fn tree(
        &self,
        root: &Path,
        updates: &mut Vec<StatUpdate>,
    ) -> Result<Option<Vec<FileEntry>>, ObserveError> {
        let Some(listed) = list_files(root)? else {
            return Ok(None);
        };
        let mut files = Vec::with_capacity(listed.len());
        for file in listed {
            let digest = self.file(&file.path, &file.metadata, updates)?;
            files.push(FileEntry {
                path: file.relative,
                executable: file.metadata.permissions().mode() & 0o111 != 0,
                size: file.metadata.len(),
                digest,
            });
        }
        Ok(Some(files))
    }

    /// The Merkle digest of the partition at `root`, `Ok(None)` if absent.
    pub fn partition(
        &self,
        root: &Path,
        updates: &mut Vec<StatUpdate>,
    ) -> Result<Option<(ContentDigest, Vec<FileEntry>)>, ObserveError> {
        Ok(self
            .tree(root, updates)?
            .map(|files| (partition_digest(&files), files)))
    }
}

/// A regular file found under a partition root.
pub struct ListedFile {
    /// `/`-separated path relative to the root (empty for a single-file root).
    pub relative: String,
    pub path: PathBuf,
    pub metadata: Metadata,
}

/// Lists the regular files under `root` (a directory or a single file),
/// sorted by relative path. Symlinks, FIFOs, devices and sockets are refused:
/// a partition holds only plain files, so nothing in it can point outside the
/// data root. `Ok(None)` if `root` does not exist.
pub fn list_files(root: &Path) -> Result<Option<Vec<ListedFile>>, ObserveError> {
    let metadata = match fs::symlink_metadata(root) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(root)(error)),
    };
    let mut files = Vec::new();
    if metadata.is_file() {
        files.push(ListedFile {
            relative: String::new(),
            path: root.to_owned(),
            metadata,
        });
    } else if metadata.is_dir() {
        walk(root, "", &mut files)?;
        files.sort_by(|a, b| a.relative.cmp(&b.relative));
    } else {
        return Err(refusal(root, &metadata));
    }
    Ok(Some(files))
}

fn walk(directory: &Path, prefix: &str, files: &mut Vec<ListedFile>) -> Result<(), ObserveError> {
    for entry in fs::read_dir(directory).map_err(io_error(directory))? {
        let entry = entry.map_err(io_error(directory))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(ObserveError::Refused {
                path,
                what: "a file name that is not UTF-8",
            });
        };
        let relative = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        // Relative to the open directory (fstatat), not following links.
        let metadata = entry.metadata().map_err(io_error(&path))?;
        if metadata.is_dir() {
            walk(&path, &relative, files)?;
        } else if metadata.is_file() {
            files.push(ListedFile {
                relative,
                path,
                metadata,
            });
        } else {
            return Err(refusal(&path, &metadata));
        }
    }
    Ok(())
}

fn refusal(path: &Path, metadata: &Metadata) -> ObserveError {
    use std::os::unix::fs::FileTypeExt;
    let file_type = metadata.file_type();
    let what = if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "this kind of file"
    };
    ObserveError::Refused {
        path: path.to_owned(),
        what,
    }
}
