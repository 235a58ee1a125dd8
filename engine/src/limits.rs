//! Bounds on what one input may make cairn read or allocate
//! (docs/reliability.md, "Limits"): the size of the graph file, of a
//! backfill config and of a defs source's output, and the number of
//! partitions one request may expand to. Each has a default and an
//! environment variable that raises (or lowers) it; an input past a limit
//! is refused with an error naming the limit and the variable.

use std::io::Read;
use std::path::Path;

/// One limit: its environment variable, its default and what it bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The environment variable that overrides the default.
    pub variable: &'static str,
    pub default: u64,
    /// What is counted, for messages (`bytes`, `partitions`).
    pub unit: &'static str,
}

/// The graph file (`cairn.toml`), in bytes.
pub const GRAPH_FILE_BYTES: Limit = Limit {
    variable: "CAIRN_MAX_GRAPH_BYTES",
    default: 16 * 1024 * 1024,
    unit: "bytes",
};

/// A backfill config, in bytes.
pub const BACKFILL_CONFIG_BYTES: Limit = Limit {
    variable: "CAIRN_MAX_BACKFILL_BYTES",
    default: 16 * 1024 * 1024,
    unit: "bytes",
};

/// What a defs source prints on stdout, in bytes.
pub const DEFS_OUTPUT_BYTES: Limit = Limit {
    variable: "CAIRN_MAX_DEFS_BYTES",
    default: 64 * 1024 * 1024,
    unit: "bytes",
};

/// The partitions one request expands to: the graph's dimensions (a plain
/// `cairn build`), a pattern on the command line, one backfill target.
pub const PARTITIONS: Limit = Limit {
    variable: "CAIRN_MAX_PARTITIONS",
    default: 2_000_000,
    unit: "partitions",
};

/// The most jobs run at once (`-j`); larger requests are clamped with a
/// note. Each slot is a thread.
pub const MAX_JOBS: usize = 256;

impl Limit {
    /// The value in force: the environment variable if set and valid, else
    /// the default. A set but invalid value is an error naming it.
    pub fn value(&self) -> Result<u64, String> {
        match std::env::var(self.variable) {
            Err(std::env::VarError::NotPresent) => Ok(self.default),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("{} is not a whole number", self.variable))
            }
            Ok(text) => text.trim().replace('_', "").parse::<u64>().map_err(|_| {
                format!(
                    "{}={text:?} is not a whole number of {}",
                    self.variable, self.unit
                )
            }),
        }
    }

    /// How to say that `what` is past this limit: `… (more than N bytes, the
    /// limit CAIRN_MAX_…; set CAIRN_MAX_…=M to raise it)`.
    pub fn exceeded(&self, what: &str, limit: u64) -> String {
        format!(
            "{what} is over the limit of {limit} {} ({}; set {}=N to raise it)",
            self.unit, self.variable, self.variable
        )
    }
}

/// Reads the regular file at `path`, refusing one larger than `limit`
/// (read with that bound, so a file that grows meanwhile cannot make this
/// allocate more) and anything that is not a regular file (a FIFO, a device
/// such as `/dev/zero`, a directory), without blocking on it: the file is
/// opened with `O_NONBLOCK` and its type checked before any read.
/// `what` names the file in errors ("the graph file").
pub fn read_regular_file(path: &Path, what: &str, limit: &Limit) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let max = limit.value()?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|error| format!("cannot read {what}: {error}"))?;
    let metadata = file
        .metadata()
        .map_err(|error| format!("cannot read {what}: {error}"))?;
    if !metadata.is_file() {
        let kind = file_kind(&metadata);
        return Err(format!(
            "cannot read {what}: it is {kind}, not a regular file"
        ));
    }
    if metadata.len() > max {
        return Err(limit.exceeded(&format!("{what} ({} bytes)", metadata.len()), max));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot read {what}: {error}"))?;
    if bytes.len() as u64 > max {
        return Err(limit.exceeded(&format!("{what} (it grew while read)"), max));
    }
    Ok(bytes)
}

/// `a directory`, `a FIFO`, `a character device`, ... for messages.
pub fn file_kind(metadata: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = metadata.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_devices_fifos_and_directories_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let message =
            read_regular_file(Path::new("/dev/zero"), "the config", &GRAPH_FILE_BYTES).unwrap_err();
        assert_eq!(
            message,
            "cannot read the config: it is a character device, not a regular file"
        );
        let message = read_regular_file(dir.path(), "the config", &GRAPH_FILE_BYTES).unwrap_err();
        assert!(message.contains("a directory"), "{message}");
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let message = read_regular_file(&fifo, "the config", &GRAPH_FILE_BYTES).unwrap_err();
        assert!(message.contains("a FIFO, not a regular file"), "{message}");
    }

    #[test]
    fn refuses_a_file_over_the_limit_naming_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        let small = Limit {
            variable: "CAIRN_TEST_NEVER_SET",
            default: 99,
            unit: "bytes",
        };
        assert_eq!(
            read_regular_file(&path, "the config", &small).unwrap_err(),
            "the config (100 bytes) is over the limit of 99 bytes (CAIRN_TEST_NEVER_SET; set CAIRN_TEST_NEVER_SET=N to raise it)"
        );
        let enough = Limit {
            default: 100,
            ..small
        };
        assert_eq!(
            read_regular_file(&path, "the config", &enough)
                .unwrap()
                .len(),
            100
        );
    }
}
