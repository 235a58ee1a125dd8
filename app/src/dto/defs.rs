//! `cairn defs refresh|show|diff --json`: one object per source (docs/cli.md,
//! "cairn defs"; docs/defs.md). Their fields are those of schema
//! [`SCHEMA`](super::SCHEMA), but they carry no `"schema"` field: they are
//! not a stream ending in a summary, and consumers (tests/defs.rs among
//! them) compare them whole.

use cairn_engine::digest::ContentDigest;
use serde::Serialize;

/// `defs refresh --json`, a source recorded:
/// `{"added":[…],"build":3,"digest":"…","ok":true,"removed":[…],"seq":12,"source":"stations","values":2}`.
#[derive(Debug, Clone, Serialize)]
pub struct Refreshed<'a> {
    /// Values the previous record did not have.
    pub added: &'a [String],
    pub build: u64,
    /// The blob holding the source's output.
    pub digest: &'a ContentDigest,
    pub ok: bool,
    /// Values of the previous record gone from this one.
    pub removed: &'a [String],
    /// The `DefsRefreshed` event's seq.
    pub seq: u64,
    pub source: &'a str,
    /// How many values were recorded.
    pub values: u64,
}

/// `defs refresh --json`, a source that failed (nothing recorded):
/// `{"error":"…","in_force":12,"ok":false,"source":"stations"}`.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshFailed<'a> {
    /// Why (redacted of the `[env] secret` values).
    pub error: &'a str,
    /// The seq of the record still in force, null if none (or unreadable).
    pub in_force: Option<u64>,
    pub ok: bool,
    pub source: &'a str,
}

/// `defs show --json`, a source's latest record:
/// `{"build":3,"digest":"…","previous":null,"seq":12,"source":"stations","time_ms":…,"values":[…]}`.
#[derive(Debug, Clone, Serialize)]
pub struct Shown<'a> {
    pub build: u64,
    pub digest: &'a ContentDigest,
    /// The seq of the record before it, null for the first.
    pub previous: Option<u64>,
    pub seq: u64,
    pub source: &'a str,
    pub time_ms: u64,
    pub values: &'a [String],
}

/// `defs show --json`, a source never refreshed:
/// `{"seq":null,"source":"stations"}`.
#[derive(Debug, Clone, Serialize)]
pub struct NoRecord<'a> {
    /// Always null.
    pub seq: Option<u64>,
    pub source: &'a str,
}

impl<'a> NoRecord<'a> {
    pub fn new(source: &'a str) -> Self {
        NoRecord { seq: None, source }
    }
}

/// `defs diff --json`:
/// `{"added":[…],"from":12,"removed":[…],"source":"stations","to":13}`.
#[derive(Debug, Clone, Serialize)]
pub struct Diffed<'a> {
    pub added: &'a [String],
    /// The seq of the record compared from, null for none.
    pub from: Option<u64>,
    pub removed: &'a [String],
    pub source: &'a str,
    /// The seq of the latest record.
    pub to: u64,
}
