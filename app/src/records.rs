//! Reading the records `cairn defs refresh` appends (docs/defs.md): what
//! opening a workspace (app/src/workspace.rs) and the defs use cases
//! (app/src/defs.rs) both need.

use cairn_engine::ContentDigest;
use cairn_engine::defs::parse_values;
use cairn_engine::ports::{BlobStore, Projections};
use cairn_engine::record::DefsRecord;
use cairn_store::Store;

/// The latest record of `source` and its values, `None` if it was never
/// refreshed; an error says why an existing record cannot be read.
pub fn read_record(
    store: &Store,
    source: &str,
) -> Result<Option<(DefsRecord, Vec<String>)>, String> {
    let Some(record) = store
        .catalog()
        .defs(source)
        .map_err(|error| error.to_string())?
    else {
        return Ok(None);
    };
    let values = record_values(store, &record.digest, record.seq)?;
    Ok(Some((record, values)))
}

/// The values stored in blob `digest` (the record of event `seq`).
pub fn record_values(
    store: &Store,
    digest: &ContentDigest,
    seq: u64,
) -> Result<Vec<String>, String> {
    let bytes = store
        .blobs()
        .read(digest)
        .map_err(|error| format!("record seq {seq}: {error}"))?;
    parse_values(&bytes).map_err(|error| format!("record seq {seq}: {error}"))
}
