//! Observing files by content: digests of files and partition trees, through
//! the stat cache so that unchanged files are not re-read (docs/internals.md).
//!
//! A cached digest is trusted only when size, mtime, ctime and inode all match
//! and the file was not modified within [`RACY_NS`] before the digest was
//! recorded (git's racy-timestamp rule: a write in the same clock tick as the
//! recording could leave the metadata unchanged).
//!
//! Directories have entries too, keyed by their path with a trailing `/`:
//! the directory's stat and a digest of its listing (names and kinds). A
//! directory whose stat matches lists what it listed then (creating,
//! removing or renaming an entry changes the directory's mtime and ctime),
//! so a partition whose files are known from its manifest is checked with a
//! `lstat` per directory and per file, without opening or reading a
//! directory.

use std::collections::BTreeMap;
use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::digest::{ContentDigest, KeyHasher};
use crate::ports::{Catalog, StoreError};
use crate::record::{FileEntry, MODE_BITS, StatEntry, partition_digest};

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
    /// The catalog behind the stat cache failed: the store's error, kept
    /// whole so that callers report it as the store's (exit 3, naming the
    /// catalog) rather than as a problem of the file being observed.
    #[error("{path}: the stat cache could not be read: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
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

/// A stat-cache entry for `metadata` holding `digest`.
pub fn stat_entry(metadata: &Metadata, recorded_ns: i128, digest: ContentDigest) -> StatEntry {
    StatEntry {
        size: metadata.len(),
        mtime_ns: mtime_ns(metadata),
        ctime_ns: ctime_ns(metadata),
        inode: metadata.ino(),
        recorded_ns,
        digest,
    }
}

/// Whether any execute bit is set: the exec bit of a partition's files.
pub fn executable(metadata: &Metadata) -> bool {
    metadata.permissions().mode() & 0o111 != 0
}

/// The manifest entry of a file at `relative`, as observed.
pub fn file_entry(relative: String, metadata: &Metadata, digest: ContentDigest) -> FileEntry {
    FileEntry {
        path: relative,
        executable: executable(metadata),
        size: metadata.len(),
        digest,
        mode: metadata.mode() & MODE_BITS,
    }
}

/// Whether a cached entry still describes a file or directory with `metadata`.
pub fn still_valid(entry: &StatEntry, metadata: &Metadata) -> bool {
    fields_valid(entry, &StatFields::of(metadata))
}

/// The fields of a stat the stat-cache rule looks at, from a [`Metadata`]
/// or straight from `fstatat` (the up-to-date snapshot's check stats
/// millions of paths relative to open directories).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFields {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub inode: u64,
    /// `st_mode`: the kind and the permission bits.
    pub mode: u32,
}

impl StatFields {
    pub fn of(metadata: &Metadata) -> Self {
        StatFields {
            size: metadata.len(),
            mtime_ns: mtime_ns(metadata),
            ctime_ns: ctime_ns(metadata),
            inode: metadata.ino(),
            mode: metadata.mode(),
        }
    }

    #[cfg_attr(
        target_os = "linux",
        expect(
            clippy::useless_conversion,
            reason = "mode_t is u32 here, u16 on other systems"
        )
    )]
    pub fn of_stat(stat: &libc::stat) -> Self {
        StatFields {
            size: stat.st_size as u64,
            mtime_ns: i128::from(stat.st_mtime) * 1_000_000_000 + i128::from(stat.st_mtime_nsec),
            ctime_ns: i128::from(stat.st_ctime) * 1_000_000_000 + i128::from(stat.st_ctime_nsec),
            inode: stat.st_ino,
            mode: u32::from(stat.st_mode),
        }
    }

    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    /// As [`executable`].
    pub fn executable(&self) -> bool {
        self.mode & 0o111 != 0
    }
}

/// The file-kind bits of `st_mode` (POSIX values, the same everywhere;
/// libc's are of the platform's `mode_t`, which is not always `u32`).
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;

/// [`still_valid`] on the fields of a stat.
pub fn fields_valid(entry: &StatEntry, fields: &StatFields) -> bool {
    entry.size == fields.size
        && entry.mtime_ns == fields.mtime_ns
        && entry.ctime_ns == fields.ctime_ns
        && entry.inode == fields.inode
        && fields.mtime_ns < entry.recorded_ns - RACY_NS
}

/// The stat-cache key of the directory at `path` (files are keyed by their
/// path, so the trailing `/` keeps the two apart).
pub fn directory_key(path: &Path) -> String {
    let mut key = path.to_string_lossy().into_owned();
    key.push('/');
    key
}

/// Recipe of [`listing_digest`].
const LISTING_RECIPE: &str = "cairn/listing/v1";

/// The digest of a directory's listing: its entries' names, each with
/// whether it is a directory, in byte order of the names.
pub fn listing_digest(entries: &mut [(&str, bool)]) -> ContentDigest {
    entries.sort_unstable();
    let mut hasher = KeyHasher::new(LISTING_RECIPE);
    hasher.u64("entries", entries.len() as u64);
    for (name, directory) in entries.iter() {
        hasher
            .str("name", name)
            .u64("directory", u64::from(*directory));
    }
    ContentDigest(hasher.finish())
}

/// The directories a partition's files imply, relative to its root (`""` is
/// the root), each with its listing: the files directly in it and the
/// directories on the way to deeper files.
fn implied_directories(files: &[FileEntry]) -> BTreeMap<&str, Vec<(&str, bool)>> {
    let mut directories: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new();
    directories.insert("", Vec::new());
    for file in files {
        let mut parent_end = 0;
        let mut start = 0;
        let path = file.path.as_str();
        for (position, _) in path.match_indices('/') {
            let parent = &path[..parent_end];
            let name = &path[start..position];
            let listing = directories.entry(parent).or_default();
            if !listing.contains(&(name, true)) {
                listing.push((name, true));
            }
            directories.entry(&path[..position]).or_default();
            parent_end = position;
            start = position + 1;
        }
        directories
            .entry(&path[..parent_end])
            .or_default()
            .push((&path[start..], false));
    }
    directories
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
    /// How many partition trees this observer listed (the tests check
    /// which answers came from the cache alone).
    #[cfg(test)]
    walks: std::sync::atomic::AtomicUsize,
}

impl<'a> Observer<'a> {
    pub fn new(catalog: &'a dyn Catalog) -> Self {
        Observer {
            catalog,
            #[cfg(test)]
            walks: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The digest of one regular file, given its metadata.
    pub fn file(
        &self,
        path: &Path,
        metadata: &Metadata,
        updates: &mut Vec<StatUpdate>,
    ) -> Result<ContentDigest, ObserveError> {
        let key = path.to_string_lossy().into_owned();
        let executable = executable(metadata);
        if let Some(entry) = self.cached(path, &key)?
            && still_valid(&entry, metadata)
        {
            self.catalog.observed(&key, &entry, executable);
            return Ok(entry.digest);
        }
        let recorded_ns = now_ns();
        let digest = hash_file(path).map_err(io_error(path))?;
        let entry = stat_entry(metadata, recorded_ns, digest);
        self.catalog.observed(&key, &entry, executable);
        updates.push((key, entry));
        Ok(digest)
    }

    fn cached(&self, path: &Path, key: &str) -> Result<Option<StatEntry>, ObserveError> {
        self.catalog
            .stat(key)
            .map_err(|source| ObserveError::Cache {
                path: path.to_owned(),
                source,
            })
    }

    /// Whether the directory at `path` still lists what `listing` digests,
    /// by its stat-cache entry.
    fn listing_unchanged(
        &self,
        path: &Path,
        metadata: &Metadata,
        listing: &ContentDigest,
    ) -> Result<bool, ObserveError> {
        let key = directory_key(path);
        match self.cached(path, &key)? {
            Some(entry) if entry.digest == *listing && still_valid(&entry, metadata) => {
                self.catalog.observed(&key, &entry, false);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Records the listings of the directories a walk saw, where the stat
    /// cache does not hold them already.
    fn record_listings(
        &self,
        directories: &[ListedDirectory],
        updates: &mut Vec<StatUpdate>,
    ) -> Result<(), ObserveError> {
        let recorded_ns = now_ns();
        for directory in directories {
            let mut names: Vec<(&str, bool)> = directory
                .entries
                .iter()
                .map(|(name, is_directory)| (name.as_str(), *is_directory))
                .collect();
            let listing = listing_digest(&mut names);
            if !self.listing_unchanged(&directory.path, &directory.metadata, &listing)? {
                let key = directory_key(&directory.path);
                let entry = stat_entry(&directory.metadata, recorded_ns, listing);
                self.catalog.observed(&key, &entry, false);
                updates.push((key, entry));
            }
        }
        Ok(())
    }

    /// The files of the partition at `root`, when they are expected to be
    /// `expected` (a manifest's, sorted by path): each directory the files
    /// imply is checked by its stat against its cached listing and each file
    /// by its stat against its cached digest, so nothing is listed or read
    /// while they match. Falls back to [`Observer::tree`] (which records the
    /// listings for next time) when anything differs; the answer is the one
    /// `tree` would give either way.
    pub fn tree_expecting(
        &self,
        root: &Path,
        expected: &[FileEntry],
        updates: &mut Vec<StatUpdate>,
    ) -> Result<Option<Vec<FileEntry>>, ObserveError> {
        let metadata = match fs::symlink_metadata(root) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error(root)(error)),
        };
        if !metadata.is_dir() || expected.iter().any(|file| file.path.is_empty()) {
            return self.tree(root, updates);
        }
        for (relative, mut names) in implied_directories(expected) {
            let (path, metadata) = if relative.is_empty() {
                (root.to_owned(), metadata.clone())
            } else {
                let path = root.join(relative);
                match fs::symlink_metadata(&path) {
                    Ok(metadata) if metadata.is_dir() => (path, metadata),
                    _ => return self.tree(root, updates),
                }
            };
            if !self.listing_unchanged(&path, &metadata, &listing_digest(&mut names))? {
                return self.tree(root, updates);
            }
        }
        let mut files = Vec::with_capacity(expected.len());
        let mut observed = Vec::new();
        for file in expected {
            let path = root.join(&file.path);
            let metadata = match fs::symlink_metadata(&path) {
                Ok(metadata) if metadata.is_file() => metadata,
                _ => return self.tree(root, updates),
            };
            let digest = self.file(&path, &metadata, &mut observed)?;
            files.push(file_entry(file.path.clone(), &metadata, digest));
        }
        updates.append(&mut observed);
        Ok(Some(files))
    }

    /// [`Observer::tree_expecting`] with the partition's Merkle digest.
    pub fn partition_expecting(
        &self,
        root: &Path,
        expected: &[FileEntry],
        updates: &mut Vec<StatUpdate>,
    ) -> Result<Option<(ContentDigest, Vec<FileEntry>)>, ObserveError> {
        Ok(self
            .tree_expecting(root, expected, updates)?
            .map(|files| (partition_digest(&files), files)))
    }

    /// The files of a partition at `root` (a directory, or a single file whose
    /// entry gets the empty path), sorted by path. `Ok(None)` if `root` does
    /// not exist.
    pub fn tree(
        &self,
        root: &Path,
        updates: &mut Vec<StatUpdate>,
    ) -> Result<Option<Vec<FileEntry>>, ObserveError> {
        #[cfg(test)]
        self.walks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut directories = Vec::new();
        let Some(listed) = list(root, Some(&mut directories))? else {
            return Ok(None);
        };
        self.record_listings(&directories, updates)?;
        let mut files = Vec::with_capacity(listed.len());
        for file in listed {
            let digest = self.file(&file.path, &file.metadata, updates)?;
            files.push(file_entry(file.relative, &file.metadata, digest));
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
    list(root, None)
}

/// A directory a walk listed: its stat and its entries (name, is a directory).
struct ListedDirectory {
    path: PathBuf,
    metadata: Metadata,
    entries: Vec<(String, bool)>,
}

/// [`list_files`], collecting the directories it listed when asked to.
fn list(
    root: &Path,
    mut directories: Option<&mut Vec<ListedDirectory>>,
) -> Result<Option<Vec<ListedFile>>, ObserveError> {
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
        walk(root, metadata, "", &mut files, &mut directories)?;
        files.sort_by(|a, b| a.relative.cmp(&b.relative));
    } else {
        return Err(refusal(root, &metadata));
    }
    Ok(Some(files))
}

fn walk(
    directory: &Path,
    directory_metadata: Metadata,
    prefix: &str,
    files: &mut Vec<ListedFile>,
    directories: &mut Option<&mut Vec<ListedDirectory>>,
) -> Result<(), ObserveError> {
    let mut entries = Vec::new();
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
        if directories.is_some() {
            entries.push((name.to_owned(), metadata.is_dir()));
        }
        if metadata.is_dir() {
            walk(&path, metadata, &relative, files, directories)?;
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
    if let Some(directories) = directories {
        directories.push(ListedDirectory {
            path: directory.to_owned(),
            metadata: directory_metadata,
            entries,
        });
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

/// A few directories held open, to stat paths below them by a short
/// relative name (`fstatat`): a lookup walks every component of a path,
/// and the snapshot's paths are absolute, ten components deep in a
/// typical layout. A path is stat'ed relative to the directory two
/// components up, or (a walk that knows the next path,
/// [`Bases::lstat_before`]) one component up where the next path shares
/// that directory: a partition's directory (`date=…/station=…/`) and its
/// files (`date=…/station=…/reviews.csv`) then share the base `date=…`.
#[derive(Default)]
pub(crate) struct Bases {
    /// Most recently used first; a base that could not be opened is kept
    /// as `None` (its paths are stat'ed by their full path).
    pub(crate) open: Vec<(String, Option<std::os::fd::OwnedFd>)>,
}

impl Bases {
    pub(crate) const KEEP: usize = 4;

    /// `lstat` of `path` (absolute, no trailing `/`), or `None` if it
    /// cannot be stat'ed this way.
    pub(crate) fn lstat(&mut self, path: &str) -> Option<StatFields> {
        let parent = path.rfind('/')?;
        let base_end = path[..parent].rfind('/').filter(|&at| at > 0)?;
        self.lstat_below(path, base_end)
    }

    /// [`Bases::lstat`], for a walk in sorted order that stats `next`
    /// (absolute, a trailing `/` allowed) right after `path`: relative to
    /// `path`'s parent, one component, when that directory is open or
    /// `next` lies within two components of it (a directory's files; a
    /// partition's directory, then its files from the directory above),
    /// else two components up. Every lookup walks its components through
    /// the kernel's dentry hash, most of a stat's cost on a large tree.
    pub(crate) fn lstat_before(&mut self, path: &str, next: Option<&str>) -> Option<StatFields> {
        let parent_end = path.rfind('/')?;
        let parent = &path[..parent_end];
        let shared = parent_end > 0
            && (self.open.iter().any(|(open, _)| open == parent)
                || next.is_some_and(|next| {
                    let next = next.strip_suffix('/').unwrap_or(next);
                    let Some(next_parent) = next.rfind('/').map(|at| &next[..at]) else {
                        return false;
                    };
                    next_parent == parent
                        || next_parent
                            .rfind('/')
                            .is_some_and(|at| &next_parent[..at] == parent)
                }));
        if shared {
            return self.lstat_below(path, parent_end);
        }
        self.lstat(path)
    }

    /// `lstat` of `path` relative to its leading `path[..base_end]`, a
    /// directory kept open.
    fn lstat_below(&mut self, path: &str, base_end: usize) -> Option<StatFields> {
        let (base, relative) = (&path[..base_end], &path[base_end + 1..]);
        let mut name = [0u8; 256];
        if relative.len() >= name.len() || relative.as_bytes().contains(&0) {
            return None;
        }
        name[..relative.len()].copy_from_slice(relative.as_bytes());
        let position = match self.open.iter().position(|(open, _)| open == base) {
            Some(position) => position,
            None => {
                let opened = open_directory(base);
                if self.open.len() == Self::KEEP {
                    self.open.pop();
                }
                self.open.insert(0, (base.to_owned(), opened));
                0
            }
        };
        if position != 0 {
            let used = self.open.remove(position);
            self.open.insert(0, used);
        }
        let fd = self.open[0].1.as_ref()?;
        lstat_at(fd, &name).map(|stat| StatFields::of_stat(&stat))
    }
}

/// `fstatat(directory, name, AT_SYMLINK_NOFOLLOW)`, `name` NUL-terminated.
#[expect(
    unsafe_code,
    reason = "fstatat(2) relative to an open directory has no Rust wrapper"
)]
fn lstat_at(directory: &std::os::fd::OwnedFd, name: &[u8]) -> Option<libc::stat> {
    use std::os::fd::AsRawFd;
    if !name.contains(&0) {
        return None;
    }
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated within its bounds (checked above),
    // `directory` is an open descriptor, and `stat` is only read after a
    // successful call wrote it.
    unsafe {
        if libc::fstatat(
            directory.as_raw_fd(),
            name.as_ptr().cast(),
            stat.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        ) != 0
        {
            return None;
        }
        Some(stat.assume_init())
    }
}

/// How [`open_directory`] opens: `O_PATH` where there is one (the
/// directory is neither read nor written), else for reading.
#[cfg(target_os = "linux")]
const DIRECTORY_FLAGS: libc::c_int = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
#[cfg(not(target_os = "linux"))]
const DIRECTORY_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;

/// The directory at `path` opened for stat'ing below it; `None` if it
/// cannot be.
#[expect(
    unsafe_code,
    reason = "an O_PATH directory descriptor has no Rust wrapper"
)]
fn open_directory(path: &str) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let path = std::ffi::CString::new(path).ok()?;
    // SAFETY: `path` is NUL-terminated; a non-negative result is an open
    // descriptor that nothing else owns.
    unsafe {
        let fd = libc::open(path.as_ptr(), DIRECTORY_FLAGS);
        (fd >= 0).then(|| std::os::fd::OwnedFd::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MemoryStatCache as StatOnly;

    /// Records `updates` as if they were taken `age_ns` later than they were.
    fn record_aged(catalog: &StatOnly, updates: Vec<StatUpdate>, age_ns: i128) {
        catalog.record(updates.into_iter().map(|(path, mut entry)| {
            entry.recorded_ns += age_ns;
            (path, entry)
        }));
    }

    const LATER: i128 = 10 * RACY_NS;

    /// A partition with a top-level file and a nested one, observed once
    /// and recorded as if long ago: its listings are trusted from then on.
    fn trusted_partition() -> (tempfile::TempDir, PathBuf, StatOnly, Vec<FileEntry>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("clean").join("date=2024-01-01");
        fs::create_dir_all(root.join("parts/a")).unwrap();
        fs::write(root.join("reviews.csv"), "one\n").unwrap();
        fs::write(root.join("parts/a/more.csv"), "two\n").unwrap();
        let catalog = StatOnly::default();
        let mut updates = Vec::new();
        let files = Observer::new(&catalog)
            .tree(&root, &mut updates)
            .unwrap()
            .unwrap();
        let keys: Vec<&str> = updates.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys.iter().filter(|key| key.ends_with('/')).count(),
            3,
            "a walk records the root and both subdirectories: {keys:?}"
        );
        record_aged(&catalog, updates, LATER);
        (dir, root, catalog, files)
    }

    /// `tree_expecting`'s answer, checked against a walk's, with what it
    /// recorded and whether it listed the tree.
    fn both(
        catalog: &StatOnly,
        root: &Path,
        expected: &[FileEntry],
    ) -> (Option<Vec<FileEntry>>, Vec<StatUpdate>, bool) {
        let observer = Observer::new(catalog);
        let mut updates = Vec::new();
        let fast = observer
            .tree_expecting(root, expected, &mut updates)
            .unwrap();
        let walked = observer.walks.load(std::sync::atomic::Ordering::Relaxed) > 0;
        let walk = Observer::new(catalog).tree(root, &mut Vec::new()).unwrap();
        assert_eq!(fast, walk, "tree_expecting and tree disagree");
        (fast, updates, walked)
    }

    #[test]
    fn implied_directories_list_files_and_the_way_to_deeper_ones() {
        let file = |path: &str| FileEntry {
            path: path.into(),
            executable: false,
            size: 0,
            digest: ContentDigest([0; 32]),
            mode: 0o644,
        };
        let files = [file("a/b/c.csv"), file("a/d.csv"), file("top.csv")];
        let directories = implied_directories(&files);
        let mut listed: Vec<(&str, Vec<(&str, bool)>)> = directories.into_iter().collect();
        for (_, names) in &mut listed {
            names.sort_unstable();
        }
        assert_eq!(
            listed,
            vec![
                ("", vec![("a", true), ("top.csv", false)]),
                ("a", vec![("b", true), ("d.csv", false)]),
                ("a/b", vec![("c.csv", false)]),
            ]
        );
    }

    #[test]
    fn an_unchanged_partition_is_answered_from_the_cache_alone() {
        let (_dir, root, catalog, files) = trusted_partition();
        let (fast, updates, walked) = both(&catalog, &root, &files);
        assert_eq!(fast.unwrap(), files);
        assert!(updates.is_empty(), "nothing to record: {updates:?}");
        assert!(!walked, "an unchanged partition was listed");
    }

    #[test]
    fn a_listing_recorded_in_the_same_tick_is_not_trusted() {
        let (_dir, root, catalog, files) = trusted_partition();
        catalog.clear();
        let mut updates = Vec::new();
        Observer::new(&catalog).tree(&root, &mut updates).unwrap();
        record_aged(&catalog, updates, 0);
        let (fast, updates, walked) = both(&catalog, &root, &files);
        assert_eq!(fast.unwrap(), files);
        assert!(walked, "a racy listing must not be trusted");
        assert!(
            updates.iter().any(|(key, _)| key.ends_with('/')),
            "a racy listing is recorded again"
        );
    }

    #[test]
    fn added_removed_and_rewritten_files_are_seen() {
        // An extra file at the top, in a subdirectory, an empty directory.
        for change in ["extra.csv", "parts/a/extra.csv", "parts/empty/"] {
            let (_dir, root, catalog, files) = trusted_partition();
            let path = root.join(change);
            if change.ends_with('/') {
                fs::create_dir(&path).unwrap();
            } else {
                fs::write(&path, "x").unwrap();
            }
            let (fast, updates, walked) = both(&catalog, &root, &files);
            assert!(walked, "{change}");
            let fast = fast.unwrap();
            if change.ends_with('/') {
                assert_eq!(fast, files, "an empty directory holds no file");
            } else {
                assert_eq!(fast.len(), files.len() + 1, "{change}");
            }
            assert!(
                updates.iter().any(|(key, _)| key.ends_with('/')),
                "{change}: the new listing is recorded"
            );
        }
        // A removed file, a removed directory.
        for change in ["reviews.csv", "parts/a/more.csv", "parts"] {
            let (_dir, root, catalog, files) = trusted_partition();
            let path = root.join(change);
            if path.is_dir() {
                fs::remove_dir_all(&path).unwrap();
            } else {
                fs::remove_file(&path).unwrap();
            }
            let (fast, _, walked) = both(&catalog, &root, &files);
            assert!(walked, "{change}");
            assert!(fast.unwrap().len() < files.len(), "{change}");
        }
        // Same size, other bytes: the file's stat changes, not the listing.
        let (_dir, root, catalog, files) = trusted_partition();
        fs::write(root.join("parts/a/more.csv"), "TWO\n").unwrap();
        let (fast, _, walked) = both(&catalog, &root, &files);
        assert!(!walked, "the listing did not change, only the file did");
        assert_ne!(fast.unwrap(), files);
        // A file replaced by a directory of the same name.
        let (_dir, root, catalog, files) = trusted_partition();
        fs::remove_file(root.join("reviews.csv")).unwrap();
        fs::create_dir(root.join("reviews.csv")).unwrap();
        fs::write(root.join("reviews.csv/inner"), "one\n").unwrap();
        let (fast, _, walked) = both(&catalog, &root, &files);
        assert!(walked);
        assert_ne!(fast.unwrap(), files);
        // The whole partition gone.
        let (_dir, root, catalog, files) = trusted_partition();
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(both(&catalog, &root, &files).0, None);
    }

    #[test]
    fn a_symlink_put_in_place_of_a_file_is_refused_as_a_walk_refuses_it() {
        let (dir, root, catalog, files) = trusted_partition();
        fs::write(dir.path().join("elsewhere"), "one\n").unwrap();
        fs::remove_file(root.join("reviews.csv")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join("reviews.csv")).unwrap();
        let observer = Observer::new(&catalog);
        let error = observer
            .tree_expecting(&root, &files, &mut Vec::new())
            .unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
    }
}
