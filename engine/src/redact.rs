//! Redacting secret values (`[env] secret`, docs/graph-file.md) from what
//! cairn stores and prints: a job's captured stdout and stderr before they
//! become blobs, and every message that carries a process's output (a
//! configure step's stderr, a failure).
//!
//! Each secret is searched in the forms a job's log is likely to carry it:
//! raw, hex (lower and upper case) and base64 (standard and URL-safe). In a
//! longer base64 stream the secret starts at one of three alignments, and
//! each alignment has a run of characters that only it produces (the
//! encoding of its whole 3-byte groups): those three runs are the base64
//! forms. A form is replaced by [`REDACTED`].
//!
//! Secrets shorter than [`MIN_SECRET_BYTES`], and derived forms shorter
//! than that, are not redacted: replacing every `ab` in a log would destroy
//! it and hide nothing.
//!
//! Invariant: the streaming [`Redactor::copy`] writes exactly what
//! [`Redactor::redact`] returns for the whole input, however the reads
//! split it (a secret split across two reads is still found): it keeps the
//! last `longest form - 1` bytes of each read until the next one shows
//! whether a form starts there.

use std::borrow::Cow;
use std::io::{self, Read, Write};

use aho_corasick::{AhoCorasick, MatchKind};

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secrets (and derived forms) shorter than this are left alone.
pub const MIN_SECRET_BYTES: usize = 4;

/// Read size of [`Redactor::copy`].
const CHUNK: usize = 64 * 1024;

/// Finds and replaces the forms of a set of secret values.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// `None` when there is nothing to redact.
    matcher: Option<AhoCorasick>,
    /// The length of the longest form, in bytes.
    longest: usize,
}

impl Redactor {
    /// A redactor for `secrets` (their values, not their names).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut forms: Vec<Vec<u8>> = Vec::new();
        for secret in secrets {
            if secret.len() < MIN_SECRET_BYTES {
                continue;
            }
            forms.extend(secret_forms(secret));
        }
        forms.retain(|form| form.len() >= MIN_SECRET_BYTES);
        forms.sort();
        forms.dedup();
        let longest = forms.iter().map(Vec::len).max().unwrap_or(0);
        // Leftmost-longest, so that a secret that contains another is
        // replaced whole. Building fails only past millions of patterns.
        let matcher = (!forms.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&forms)
                    .ok()
            })
            .flatten();
        Redactor { matcher, longest }
    }

    /// Whether nothing would ever be redacted.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `bytes` with every form of every secret replaced by [`REDACTED`].
    pub fn redact<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(matcher) = &self.matcher else {
            return Cow::Borrowed(bytes);
        };
        let mut out = Vec::new();
        let mut written = 0;
        for found in matcher.find_iter(bytes) {
            out.extend_from_slice(&bytes[written..found.start()]);
            out.extend_from_slice(REDACTED.as_bytes());
            written = found.end();
        }
        if written == 0 && out.is_empty() {
            return Cow::Borrowed(bytes);
        }
        out.extend_from_slice(&bytes[written..]);
        Cow::Owned(out)
    }

    /// [`Redactor::redact`] for text. The result is still UTF-8: a raw
    /// secret is UTF-8 (a variable's value) and matches only on character
    /// boundaries, the other forms are ASCII.
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.redact(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(bytes) => Cow::Owned(
                String::from_utf8(bytes)
                    .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned()),
            ),
        }
    }

    /// Copies `reader` to `writer`, redacted, in bounded memory; returns the
    /// number of bytes written.
    pub fn copy(&self, reader: &mut impl Read, writer: &mut impl Write) -> io::Result<u64> {
        let Some(matcher) = &self.matcher else {
            return io::copy(reader, writer);
        };
        let mut total = 0u64;
        let mut emit = |writer: &mut dyn Write, bytes: &[u8]| -> io::Result<()> {
            total += bytes.len() as u64;
            writer.write_all(bytes)
        };
        let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK + self.longest);
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let read = match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            buffer.extend_from_slice(&chunk[..read]);
            // A form starting before `settled` lies wholly in the buffer,
            // so whether (and how long) it matches is already known.
            let settled = buffer.len().saturating_sub(self.longest - 1);
            let mut written = 0;
            for found in matcher.find_iter(&buffer) {
                if found.start() >= settled {
                    break;
                }
                emit(writer, &buffer[written..found.start()])?;
                emit(writer, REDACTED.as_bytes())?;
                written = found.end();
            }
            let kept = written.max(settled);
            emit(writer, &buffer[written..kept])?;
            buffer.drain(..kept);
        }
        let rest = self.redact(&buffer).into_owned();
        emit(writer, &rest)?;
        Ok(total)
    }
}

const BASE64_STANDARD: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_URL_SAFE: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The base64 of `bytes`' whole 3-byte groups (a trailing partial group is
/// left out: its characters depend on what follows in a stream).
fn base64_groups(bytes: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() / 3 * 4);
    for group in bytes.chunks_exact(3) {
        let n = (u32::from(group[0]) << 16) | (u32::from(group[1]) << 8) | u32::from(group[2]);
        for shift in [18, 12, 6, 0] {
            out.push(alphabet[((n >> shift) & 63) as usize]);
        }
    }
    out
}

/// Raw, hex (both cases), and base64 (both alphabets, three alignments).
fn secret_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let hex: Vec<u8> = secret
        .iter()
        .flat_map(|byte| format!("{byte:02x}").into_bytes())
        .collect();
    let mut forms = vec![secret.to_vec(), hex.to_ascii_uppercase(), hex];
    for skip in 0..3 {
        let aligned = &secret[skip.min(secret.len())..];
        forms.push(base64_groups(aligned, BASE64_STANDARD));
        forms.push(base64_groups(aligned, BASE64_URL_SAFE));
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn redactor(secrets: &[&str]) -> Redactor {
        Redactor::new(secrets.iter().map(|secret| secret.as_bytes()))
    }

    /// Full base64 with padding, to build streams the way a job would.
    fn base64(bytes: &[u8]) -> String {
        let mut padded = bytes.to_vec();
        let extra = (3 - bytes.len() % 3) % 3;
        padded.extend(std::iter::repeat_n(0, extra));
        let mut text = String::from_utf8(base64_groups(&padded, BASE64_STANDARD)).unwrap();
        for _ in 0..extra {
            text.pop();
        }
        text + &"=".repeat(extra)
    }

    #[test]
    fn raw_hex_and_base64_forms_are_replaced() {
        let secret = "hunter2-token-0123";
        let redactor = redactor(&[secret]);
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            redactor.redact_str(&format!("a {secret} b {hex} c {}", hex.to_uppercase())),
            "a [redacted] b [redacted] c [redacted]"
        );
        for prefix in ["", "x", "xy", "xyz"] {
            let stream = base64(format!("{prefix}{secret}!!").as_bytes());
            let url_safe = stream.replace('+', "-").replace('/', "_");
            for encoded in [stream, url_safe] {
                let redacted = redactor.redact_str(&encoded);
                assert!(redacted.contains(REDACTED), "{prefix:?}: {encoded}");
            }
        }
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
    }

    #[test]
    fn short_or_no_secrets_redact_nothing() {
        assert!(redactor(&[]).is_empty());
        assert!(redactor(&["abc", ""]).is_empty());
        let text = "abc abc";
        assert!(matches!(
            redactor(&["abc"]).redact_str(text),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            redactor(&["secret-value"]).redact_str(text),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_longest_overlapping_secret_wins() {
        let redactor = redactor(&["token", "token-extended"]);
        assert_eq!(redactor.redact_str("x token-extended y"), "x [redacted] y");
        assert_eq!(redactor.redact_str("x token-ext y"), "x [redacted]-ext y");
    }

    /// A reader that returns at most `step` bytes per read.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_secret_split_across_reads_is_found() {
        let secret = "split-secret-value";
        let redactor = redactor(&[secret]);
        let text = format!("{}{secret}\n+ echo {secret}{secret}", "x".repeat(CHUNK - 5));
        for step in [1, 3, 7, CHUNK - 1, CHUNK, CHUNK + 1] {
            let mut out = Vec::new();
            let mut reader = Trickle {
                bytes: text.as_bytes(),
                step,
            };
            let written = redactor.copy(&mut reader, &mut out).unwrap();
            assert_eq!(
                out,
                redactor.redact(text.as_bytes()).as_ref(),
                "step {step}"
            );
            assert_eq!(written, out.len() as u64);
            assert!(!String::from_utf8_lossy(&out).contains(secret));
        }
    }

    proptest! {
        #[test]
        fn streaming_equals_whole(
            text in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b's')], 0..300),
            step in 1usize..40,
        ) {
            let redactor = redactor(&["sabs", "ab"]);
            let redactor2 = Redactor::new([b"sabsa".as_slice(), b"bbbb".as_slice()]);
            for redactor in [redactor, redactor2] {
                let mut out = Vec::new();
                redactor
                    .copy(&mut Trickle { bytes: &text, step }, &mut out)
                    .unwrap();
                let whole = redactor.redact(&text).into_owned();
                prop_assert_eq!(out, whole);
            }
        }
    }
}
