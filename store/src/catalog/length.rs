//! The length a catalog file records for itself, checked when a read-only
//! handle opens it.
//!
//! redb's read-only open in `ConcurrencyMode::SingleWriter` reads the header
//! without comparing the file's length with the region layout the header
//! records: it reads pages by the region geometry alone, and only a read of
//! a page past the end of the file fails. redb grows a file by whole regions
//! and leaves the tail free, so a file cut inside that tail (a torn copy, a
//! full disk) read as if whole: `cairn log` printed the history and exited 0
//! where a writer (whose open compares the two) refused the same file.
//! [`check`] makes every reader refuse it too, at the cost of one small read
//! of the header and one stat, never a scan.
//!
//! The header is redb's file format (redb 4.6, Cargo.lock): the magic number,
//! a flags byte, then little-endian `u32`s: page size, pages of each region's
//! header, data pages of a full region, full regions, data pages of the
//! trailing partial region. The file is one page of super-header, then the
//! full regions, then the trailing region (its header pages and its data
//! pages). `catalog::tests` pins this against files redb writes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use cairn_engine::ports::StoreError;

use super::catalog_error;

const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
/// The flags byte's bit set while a writer has the file open (and left set
/// by one that died): the layout fields may then be stale or torn, and the
/// live writer, or the recovery the next open runs, owns them.
const FLAGS_OFFSET: usize = 9;
const RECOVERY_REQUIRED: u8 = 2;
const PAGE_SIZE_OFFSET: usize = 12;
const REGION_HEADER_PAGES_OFFSET: usize = 16;
const REGION_DATA_PAGES_OFFSET: usize = 20;
const FULL_REGIONS_OFFSET: usize = 24;
const TRAILING_DATA_PAGES_OFFSET: usize = 28;
/// The header and its two commit slots: a commit rewrites at least one slot.
const HEADER_BYTES: usize = 320;
/// How many times a header that changes under the check is read again
/// before the check gives way to the writer changing it.
const ATTEMPTS: usize = 3;

/// Refuses a catalog file shorter than the layout its header records, with
/// the error naming the file. A file redb cannot read as a header at all
/// (empty, short, not redb) is left to redb, which has already opened it
/// and reports those itself.
pub(super) fn check(path: &Path) -> Result<(), StoreError> {
    let file = File::open(path).map_err(|error| catalog_error(path, error))?;
    for _ in 0..ATTEMPTS {
        let Some(before) = read_header(&file, path)? else {
            return Ok(());
        };
        let file_bytes = file
            .metadata()
            .map_err(|error| catalog_error(path, error))?
            .len();
        // redb grows a file before its header records the larger layout and
        // shrinks it only after writing the smaller one, so the file is never
        // shorter than the header on disk: a header that did not change
        // around the stat holds against the length stat'ed. One that changed
        // (a writer committed meanwhile) is read again.
        if read_header(&file, path)? != Some(before) {
            continue;
        }
        if before[FLAGS_OFFSET] & RECOVERY_REQUIRED != 0 {
            return Ok(());
        }
        let recorded = recorded_length(&before).ok_or_else(|| {
            catalog_error(path, "its header records a layout too large to address")
        })?;
        if file_bytes < recorded {
            return Err(catalog_error(
                path,
                format!(
                    "truncated: the file is {file_bytes} bytes, but its header records \
                     {recorded} bytes of pages"
                ),
            ));
        }
        return Ok(());
    }
    // A writer kept committing: it holds the file, and its open checked it.
    Ok(())
}

/// The first [`HEADER_BYTES`] of the file, or `None` when they are not a
/// redb header.
fn read_header(file: &File, path: &Path) -> Result<Option<[u8; HEADER_BYTES]>, StoreError> {
    let mut header = [0; HEADER_BYTES];
    match file.read_exact_at(&mut header, 0) {
        Ok(()) => Ok((header[..MAGIC.len()] == MAGIC).then_some(header)),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(error) => Err(catalog_error(path, error)),
    }
}

/// The file length the layout in `header` needs; `None` if it overflows.
fn recorded_length(header: &[u8; HEADER_BYTES]) -> Option<u64> {
    let field = |offset: usize| {
        let bytes: [u8; 4] = header[offset..offset + 4]
            .try_into()
            .expect("a 4-byte field");
        u64::from(u32::from_le_bytes(bytes))
    };
    let page_size = field(PAGE_SIZE_OFFSET);
    let region_header_pages = field(REGION_HEADER_PAGES_OFFSET);
    let full_regions = field(FULL_REGIONS_OFFSET);
    let full_region_pages = region_header_pages.checked_add(field(REGION_DATA_PAGES_OFFSET))?;
    let trailing_data_pages = field(TRAILING_DATA_PAGES_OFFSET);
    let trailing_pages = if trailing_data_pages == 0 {
        0
    } else {
        region_header_pages.checked_add(trailing_data_pages)?
    };
    // One page of super-header before the regions.
    let pages = full_regions
        .checked_mul(full_region_pages)?
        .checked_add(trailing_pages)?
        .checked_add(1)?;
    pages.checked_mul(page_size)
}

#[cfg(test)]
mod tests {
    use cairn_engine::ports::EventLog;
    use cairn_engine::record::EventKind;

    use super::*;
    use crate::catalog::{ReaderOpen, RedbCatalog};

    fn planned(count: usize) -> Vec<EventKind> {
        vec![
            EventKind::Planned {
                actions: 1,
                sources: 0,
            };
            count
        ]
    }

    fn header(path: &Path) -> [u8; HEADER_BYTES] {
        read_header(&File::open(path).unwrap(), path)
            .unwrap()
            .expect("a redb header")
    }

    /// The layout read from the header is the length of every file redb
    /// leaves behind a clean close, small and grown (this pins the header
    /// format against the redb in Cargo.lock).
    #[test]
    fn the_recorded_length_is_the_length_of_a_cleanly_closed_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.redb");
        let mut lengths = Vec::new();
        for (build, events) in [(1, 1), (2, 100), (3, 20_000)] {
            let catalog = RedbCatalog::open_writer(&path, true).unwrap();
            catalog.append(build, planned(events), Vec::new()).unwrap();
            drop(catalog);
            let file_bytes = std::fs::metadata(&path).unwrap().len();
            assert_eq!(recorded_length(&header(&path)), Some(file_bytes));
            check(&path).unwrap();
            lengths.push(file_bytes);
        }
        assert!(
            lengths[2] > lengths[0],
            "the catalog never grew: {lengths:?}"
        );
    }

    /// A file cut inside the free tail redb keeps at its end: redb's
    /// read-only open serves it (every page the log needs is there), the
    /// check refuses it, naming the file.
    #[test]
    fn a_reader_refuses_a_catalog_cut_inside_its_free_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.redb");
        let catalog = RedbCatalog::open_writer(&path, true).unwrap();
        catalog.append(1, planned(3), Vec::new()).unwrap();
        drop(catalog);
        let page = u64::from(u32::from_le_bytes(
            header(&path)[PAGE_SIZE_OFFSET..PAGE_SIZE_OFFSET + 4]
                .try_into()
                .unwrap(),
        ));
        let file_bytes = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(file_bytes - page)
            .unwrap();
        // What redb alone makes of the cut file: the whole log, read.
        let mut builder = redb::Builder::new();
        builder.set_concurrency_mode(redb::ConcurrencyMode::SingleWriter);
        let database = builder.open_read_only(&path).unwrap();
        let transaction = redb::ReadableDatabase::begin_read(&database).unwrap();
        let events = transaction.open_table(super::super::EVENTS).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&events).unwrap(), 3);
        drop((events, transaction, database));

        let error = match RedbCatalog::open_reader(&path) {
            Err(error) => error,
            Ok(ReaderOpen::Opened(_)) => panic!("a reader opened a catalog cut by one page"),
            Ok(ReaderOpen::NeedsRecovery) => panic!("a clean catalog needs recovery"),
        };
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("catalog {}: truncated: ", path.display())),
            "{message}"
        );
        assert!(
            message.contains(&format!("{} bytes", file_bytes - page))
                && message.contains(&format!("{file_bytes} bytes")),
            "{message}"
        );
    }
}
