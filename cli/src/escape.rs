//! Text for humans, made safe to print: every control character (C0, DEL,
//! C1) and every bidirectional-override character in a stored or
//! user-supplied text (a reason, an error, a job's stderr line) is shown
//! escaped, so that the text can neither forge a line of cairn's output
//! (`\n 99 b99 BuildFinished …`) nor drive the terminal (`\e[31m`, `\e]0;…`).
//! Escapes: `\n`, `\r`, `\t`, and `\x1b`, `\u{9b}`, `\u{202e}` for the rest.
//!
//! JSON output needs none of this (serde escapes control characters), and
//! `cairn logs` prints a job's captured output as captured: it is the job's
//! own data, like `cat`.
//!
//! [`escape`] is for one field or one line; [`escape_lines`] for a message
//! made of lines on purpose (an error quoting a step's stderr): it keeps the
//! line breaks and escapes the rest.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal as is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_keeping(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| is_unsafe(c) && !(keep_newlines && c == '\n');
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    Cow::Owned(out)
}

/// `text` with every control character escaped, line breaks included: one
/// field, or one line.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_keeping(text, false)
}

/// `text` with every control character but the line break escaped.
pub fn escape_lines(text: &str) -> Cow<'_, str> {
    escape_keeping(text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_plain_text_borrowed() {
        let forged = "ok\n 99 b99 BuildFinished FORGED \x1b[31m\r\t\u{9b}2J \u{202e}cba é";
        assert_eq!(
            escape(forged),
            "ok\\n 99 b99 BuildFinished FORGED \\x1b[31m\\r\\t\\u{9b}2J \\u{202e}cba é"
        );
        assert_eq!(escape_lines("a\x1b[0m\nb\x07"), "a\\x1b[0m\nb\\x07");
        assert!(matches!(escape("plain: text, é ✓"), Cow::Borrowed(_)));
        assert!(matches!(escape_lines("two\nlines"), Cow::Borrowed(_)));
    }
}
