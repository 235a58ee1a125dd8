//! fuzz (docs/reliability.md, promise 5): the properties the cargo-fuzz
//! targets under `fuzz/` check (`fuzz/checks.rs`, shared with this file),
//! run in the normal suite without cargo-fuzz:
//!
//! - over every input in `fuzz/regressions/<target>/` (each crash, timeout
//!   or memory blow-up the fuzzers ever found, kept once fixed) and
//!   `fuzz/seeds/<target>/`;
//! - over a few thousand inputs mutated from the seeds by a seeded xorshift
//!   generator (byte flips, insertions, deletions, splices, duplicated
//!   runs), for the five cheap targets. The backfill config runs only its
//!   seeds and regressions here: a mutated date range can legitimately
//!   expand to a million partitions, which is slow in a debug build.
//!
//! The commands that fuzz each target for a fixed time, and their last
//! results, are in docs/reliability.md.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 6] = [
    ("ref_parser", checks::ref_parser),
    ("pattern_matcher", checks::pattern_matcher),
    ("graph_file", checks::graph_file),
    ("job_config", checks::job_config),
    ("backfill_config", checks::backfill_config),
    ("event_decoder", checks::event_decoder),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read a fuzz input");
            (path, bytes)
        })
        .collect()
}

/// Runs `check` on `bytes`; the panic message if it panicked.
fn run(check: Check, bytes: &[u8]) -> Option<String> {
    catch_unwind(AssertUnwindSafe(|| check(bytes)))
        .err()
        .map(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        })
}

#[test]
fn fuzz_regressions_and_seeds_hold_every_property() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (target, check) in TARGETS {
        let seeds = inputs("seeds", target);
        assert!(!seeds.is_empty(), "fuzz/seeds/{target} is empty");
        for (path, bytes) in seeds.iter().chain(&inputs("regressions", target)) {
            count += 1;
            if let Some(message) = run(check, bytes) {
                failures.push(format!("{target}: {}: {message}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(count > 6);
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

/// Bytes that matter to the parsers, for insertions.
const INTERESTING: &[&[u8]] = &[
    b"/",
    b"=",
    b"{",
    b"}",
    b"..",
    b".",
    b"%2e",
    b"\0",
    b"\\",
    b"\n",
    b"\"",
    b"[",
    b"]",
    b",",
    b":",
    b"\xff",
    b"\xc3\xa9",
    b"0",
    b"-1",
    b"99999999999999999999",
    b"\x01",
    b"\x03",
];

fn mutate(rng: &mut Rng, seeds: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = seeds[rng.below(seeds.len())].1.clone();
    for _ in 0..=rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            0 if !bytes.is_empty() => {
                let index = at.min(bytes.len() - 1);
                bytes[index] ^= 1 << rng.below(8);
            }
            1 => {
                let insert = INTERESTING[rng.below(INTERESTING.len())];
                bytes.splice(at..at, insert.iter().copied());
            }
            2 if !bytes.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            3 => {
                let other = &seeds[rng.below(seeds.len())].1;
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(32)).min(other.len());
                bytes.splice(at..at, other[from..to].iter().copied());
            }
            4 if !bytes.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(bytes.len());
                let run: Vec<u8> = bytes[at.min(end)..end].to_vec();
                bytes.splice(at.min(end)..at.min(end), run);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

#[test]
fn fuzz_mutated_seeds_never_break_a_property() {
    let rounds: usize = std::env::var("CAIRN_FUZZ_SMOKE_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(5000);
    let mut failures = Vec::new();
    for (index, (target, check)) in TARGETS.into_iter().enumerate() {
        if target == "backfill_config" {
            continue;
        }
        let seeds = inputs("seeds", target);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
        for round in 0..rounds {
            let bytes = mutate(&mut rng, &seeds);
            if let Some(message) = run(check, &bytes) {
                failures.push(format!(
                    "{target} round {round}: {message}\ninput: {:?}",
                    String::from_utf8_lossy(&bytes)
                ));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
