//! Partition refs (`dataset/key=value/...`) and patterns
//! (`dataset/key={placeholder}/...`).
//!
//! Invariants: a [`PartitionRef`] is canonical and safe by construction. Its
//! text is exactly `dataset(/key=value)*`, every name and value is drawn from a
//! small character set, no segment is `.` or `..` or starts with `.`, so
//! [`PartitionRef::relative_path`] always names a path strictly inside the data
//! root. Refs are never paths: nothing is decoded (`%2e%2e` is refused, not
//! unescaped).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a ref or pattern was refused. The `Display` names the text and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("invalid partition ref {}: {problem}", quoted(.text))]
    Ref { text: String, problem: String },
    #[error("invalid pattern {}: {problem}", quoted(.text))]
    Pattern { text: String, problem: String },
}

/// The most bytes of a ref (or pattern) and so of any value in one.
pub const MAX_REF_BYTES: usize = 4096;

/// The most characters of a text that messages echo.
const ECHOED_CHARS: usize = 64;

/// `text` quoted for a message (`"a\nb"`), cut after its first 64
/// characters when longer (`"aaaa…"… (10485760 bytes)`), so that a
/// megabyte of input never becomes a megabyte of error.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(ECHOED_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// Whether `value` can be a value of a ref, with the problem in plain words:
/// too long, empty, a bad character (the rules of [`PartitionRef`]).
pub fn check_partition_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_REF_BYTES {
        let cut = value
            .char_indices()
            .nth(ECHOED_CHARS)
            .map_or(value.len(), |(at, _)| at);
        return Err(format!(
            "{:?}… is too long ({} bytes, at most {MAX_REF_BYTES})",
            &value[..cut],
            value.len()
        ));
    }
    check_value(value).map_err(|_| {
        format!(
            "{} is not a valid partition value (letters, digits and -_.:+@,~; not starting with '.')",
            quoted(value)
        )
    })
}

/// One partition: a dataset name and ordered `key=value` dimensions.
///
/// Cheap to clone (shared text). Ordered and compared by its canonical text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionRef {
    text: Arc<str>,
}

impl PartitionRef {
    /// Parses and validates `text`.
    pub fn parse(text: &str) -> Result<Self, RefError> {
        if is_valid_ref(text.as_bytes()) {
            return Ok(PartitionRef { text: text.into() });
        }
        Self::parse_slowly(text)
    }

    /// The validation that names what is wrong: the refs that
    /// [`is_valid_ref`] accepts are exactly the ones this accepts.
    fn parse_slowly(text: &str) -> Result<Self, RefError> {
        let fail = |problem: String| RefError::Ref {
            text: text.to_owned(),
            problem,
        };
        check_common(text).map_err(fail)?;
        let mut segments = text.split('/');
        let dataset = segments.next().unwrap_or_default();
        check_name(dataset, "dataset name").map_err(fail)?;
        let mut keys: Vec<&str> = Vec::new();
        for segment in segments {
            check_segment(segment).map_err(fail)?;
            let Some((key, value)) = segment.split_once('=') else {
                return Err(fail(format!(
                    "segment {segment:?} is not of the form key=value"
                )));
            };
            check_name(key, "key").map_err(fail)?;
            check_value(value).map_err(fail)?;
            if keys.contains(&key) {
                return Err(fail(format!("key {key:?} appears twice")));
            }
            keys.push(key);
        }
        Ok(PartitionRef { text: text.into() })
    }

    /// Builds a ref from parts that have not been validated yet.
    pub fn from_parts<'a>(
        dataset: &str,
        dimensions: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, RefError> {
        let mut text = String::from(dataset);
        for (key, value) in dimensions {
            text.push('/');
            text.push_str(key);
            text.push('=');
            text.push_str(value);
        }
        Self::parse(&text)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `other` is this very ref (one shared text, not only an
    /// equal one): a clone of it.
    pub fn is_clone_of(&self, other: &PartitionRef) -> bool {
        Arc::ptr_eq(&self.text, &other.text)
    }

    pub fn dataset(&self) -> &str {
        self.text.split('/').next().unwrap_or_default()
    }

    /// The `(key, value)` dimensions, in order.
    pub fn dimensions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.text
            .split('/')
            .skip(1)
            .filter_map(|segment| segment.split_once('='))
    }

    /// The ref as a relative path (`dataset/key=value/...`): always inside
    /// whatever root it is joined to.
    pub fn relative_path(&self) -> PathBuf {
        PathBuf::from(&*self.text)
    }
}

impl fmt::Display for PartitionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for PartitionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.text)
    }
}

impl std::str::FromStr for PartitionRef {
    type Err = RefError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl Serialize for PartitionRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for PartitionRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Parses the text where the format lends it (a kept plan, a
        /// snapshot: no `String` in between), else from a copy.
        struct RefVisitor;
        impl serde::de::Visitor<'_> for RefVisitor {
            type Value = PartitionRef;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a partition ref")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<PartitionRef, E> {
                PartitionRef::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(RefVisitor)
    }
}

/// Whether `text` is a valid ref, in one pass over its bytes and without
/// allocating: planning a million partitions parses a few million refs.
/// Says nothing of what is wrong; [`PartitionRef::parse_slowly`] does.
fn is_valid_ref(text: &[u8]) -> bool {
    if text.is_empty() || text.len() > 4096 {
        return false;
    }
    let name_byte = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-';
    let is_name = |name: &[u8]| {
        name.first()
            .is_some_and(|first| first.is_ascii_alphanumeric() || *first == b'_')
            && name.iter().all(|byte| name_byte(*byte))
    };
    let value_byte = |byte: u8| {
        byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b':' | b'+' | b'@' | b',' | b'~')
    };
    let mut segments = text.split(|byte| *byte == b'/');
    if !segments.next().is_some_and(is_name) {
        return false;
    }
    // Keys seen so far, for the duplicate check: refs have a few.
    let mut keys: [&[u8]; 8] = [&[]; 8];
    for (count, segment) in segments.enumerate() {
        let Some(equals) = segment.iter().position(|byte| *byte == b'=') else {
            return false;
        };
        let (key, value) = (&segment[..equals], &segment[equals + 1..]);
        if !is_name(key)
            || value.first().is_none_or(|first| *first == b'.')
            || !value.iter().all(|byte| value_byte(*byte))
        {
            return false;
        }
        if count == keys.len() || keys[..count].contains(&key) {
            return false;
        }
        keys[count] = key;
    }
    true
}

fn check_common(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("it is empty".into());
    }
    if text.len() > MAX_REF_BYTES {
        return Err(format!(
            "it is too long ({} bytes, at most {MAX_REF_BYTES})",
            text.len()
        ));
    }
    if text.contains('\0') {
        return Err("it contains a NUL byte".into());
    }
    if text.starts_with('/') {
        return Err("absolute paths are not allowed".into());
    }
    if text.contains('\\') {
        return Err("backslashes are not allowed".into());
    }
    if text.contains('%') {
        return Err("percent-encoding is not allowed ('%')".into());
    }
    if text.ends_with('/') {
        return Err("it ends with '/'".into());
    }
    Ok(())
}

fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("it has an empty segment ('//')".into());
    }
    if segment == "." || segment == ".." {
        return Err(format!("segment {segment:?} is not allowed"));
    }
    Ok(())
}

/// Dataset names and keys: `[A-Za-z0-9_][A-Za-z0-9_-]*`.
fn check_name(name: &str, what: &str) -> Result<(), String> {
    check_segment(name)?;
    let mut chars = name.chars();
    let first = chars.next().unwrap_or('-');
    if !(first.is_ascii_alphanumeric() || first == '_') {
        return Err(format!(
            "{what} {name:?} must start with a letter, digit or '_'"
        ));
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(format!("{what} {name:?} contains {bad:?}"));
    }
    Ok(())
}

/// Values: letters, digits and `-_.:+@,~`, not starting with `.`, no `=`.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("a value is empty".into());
    }
    if value.starts_with('.') {
        return Err(format!("value {} must not start with '.'", quoted(value)));
    }
    if value.contains('=') {
        return Err(format!("value {} contains '='", quoted(value)));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:+@,~".contains(*c)))
    {
        return Err(format!("value {} contains {bad:?}", quoted(value)));
    }
    Ok(())
}

/// A segment value in a pattern: a literal or a `{placeholder}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternValue {
    Literal(String),
    Placeholder(String),
}

/// A ref with placeholders: `clean/date={date}/station={station}`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    dataset: String,
    dimensions: Vec<(String, PatternValue)>,
}

/// Placeholder name → value: a few entries, sorted by name, their names
/// and values back to back in one string. Planning a million partitions
/// matches a million refs: a `BTreeMap` allocated a node of about half a
/// kilobyte for each, a vector of string pairs five allocations (some 250
/// bytes); this is two.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Bindings {
    /// `name0 value0 name1 value1 ...`, unseparated.
    text: String,
    /// For each entry, where its name and its value end in `text`.
    ends: Vec<(u32, u32)>,
}

impl Bindings {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Bindings {
            text: String::with_capacity(capacity * 16),
            ends: Vec::with_capacity(capacity),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).ok().map(|index| self.entry(index).1)
    }

    /// The entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.ends.len()).map(|index| self.entry(index))
    }

    /// Binds `name`; returns the value it replaced, if any.
    pub fn bind(&mut self, name: &str, value: &str) -> Option<String> {
        let position = self.position(name);
        if position == Err(self.ends.len()) {
            // After every name bound so far (as a pattern's placeholders
            // usually come): appended in place.
            self.text.push_str(name);
            let name_end = self.end();
            self.text.push_str(value);
            let value_end = self.end();
            self.ends.push((name_end, value_end));
            return None;
        }
        let mut entries: Vec<(String, String)> = self
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let replaced = match position {
            Ok(index) => Some(std::mem::replace(&mut entries[index].1, value.to_owned())),
            Err(index) => {
                entries.insert(index, (name.to_owned(), value.to_owned()));
                None
            }
        };
        self.rebuild(&entries);
        replaced
    }

    fn rebuild(&mut self, entries: &[(String, String)]) {
        self.text.clear();
        self.ends.clear();
        for (name, value) in entries {
            self.text.push_str(name);
            let name_end = self.end();
            self.text.push_str(value);
            let value_end = self.end();
            self.ends.push((name_end, value_end));
        }
    }

    fn end(&self) -> u32 {
        u32::try_from(self.text.len()).expect("bindings under 4 GiB")
    }

    /// The name and value of entry `index`.
    fn entry(&self, index: usize) -> (&str, &str) {
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before].1) as usize;
        let (name_end, value_end) = self.ends[index];
        (
            &self.text[start..name_end as usize],
            &self.text[name_end as usize..value_end as usize],
        )
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        let mut low = 0;
        let mut high = self.ends.len();
        while low < high {
            let middle = (low + high) / 2;
            match self.entry(middle).0.cmp(name) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Ok(middle),
            }
        }
        Err(low)
    }
}

impl fmt::Debug for Bindings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(String, String)> for Bindings {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let pairs = pairs.into_iter();
        let mut bindings = Bindings::with_capacity(pairs.size_hint().0);
        for (name, value) in pairs {
            bindings.bind(&name, &value);
        }
        bindings
    }
}

impl<const N: usize> From<[(String, String); N]> for Bindings {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl std::ops::Index<&str> for Bindings {
    type Output = str;

    fn index(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("no binding for {{{name}}}"))
    }
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, RefError> {
        let fail = |problem: String| RefError::Pattern {
            text: text.to_owned(),
            problem,
        };
        check_common(text).map_err(fail)?;
        let mut segments = text.split('/');
        let dataset = segments.next().unwrap_or_default();
        if dataset.contains('{') || dataset.contains('}') {
            return Err(fail("the dataset name cannot be a placeholder".into()));
        }
        check_name(dataset, "dataset name").map_err(fail)?;
        let mut dimensions: Vec<(String, PatternValue)> = Vec::new();
        for segment in segments {
            check_segment(segment).map_err(fail)?;
            let Some((key, value)) = segment.split_once('=') else {
                return Err(fail(format!(
                    "segment {segment:?} is not of the form key=value or key={{name}}"
                )));
            };
            check_name(key, "key").map_err(fail)?;
            if dimensions.iter().any(|(existing, _)| existing == key) {
                return Err(fail(format!("key {key:?} appears twice")));
            }
            let value = if let Some(rest) = value.strip_prefix('{') {
                let Some(name) = rest.strip_suffix('}') else {
                    return Err(fail(format!("placeholder {value:?} is not closed")));
                };
                if name.contains('{') || name.contains('}') {
                    return Err(fail(format!("placeholder {value:?} is malformed")));
                }
                check_name(name, "placeholder").map_err(fail)?;
                PatternValue::Placeholder(name.to_owned())
            } else if value.contains('{') || value.contains('}') {
                return Err(fail(format!(
                    "{value:?}: a placeholder must be a whole value, like key={{name}}"
                )));
            } else {
                check_value(value).map_err(fail)?;
                PatternValue::Literal(value.to_owned())
            };
            dimensions.push((key.to_owned(), value));
        }
        Ok(Pattern {
            text: text.to_owned(),
            dataset: dataset.to_owned(),
            dimensions,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    pub fn dimensions(&self) -> &[(String, PatternValue)] {
        &self.dimensions
    }

    /// Placeholder names in order of appearance (each once).
    pub fn placeholders(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for (_, value) in &self.dimensions {
            if let PatternValue::Placeholder(name) = value
                && !names.contains(&name.as_str())
            {
                names.push(name);
            }
        }
        names
    }

    /// Whether the pattern has no placeholder (it names exactly one ref).
    pub fn is_concrete(&self) -> bool {
        self.placeholders().is_empty()
    }

    /// Matches `partition` against the pattern; returns the bindings.
    pub fn matches(&self, partition: &PartitionRef) -> Option<Bindings> {
        if partition.dataset() != self.dataset {
            return None;
        }
        let mut bindings = Bindings::with_capacity(self.dimensions.len());
        let mut actual = partition.dimensions();
        for (key, expected) in &self.dimensions {
            let (actual_key, actual_value) = actual.next()?;
            if actual_key != key {
                return None;
            }
            match expected {
                PatternValue::Literal(literal) => {
                    if literal != actual_value {
                        return None;
                    }
                }
                PatternValue::Placeholder(name) => match bindings.get(name) {
                    Some(bound) if bound != actual_value => return None,
                    Some(_) => {}
                    None => {
                        bindings.bind(name, actual_value);
                    }
                },
            }
        }
        if actual.next().is_some() {
            return None;
        }
        Some(bindings)
    }

    /// Whether `partition` matches the pattern ([`Pattern::matches`]
    /// without building the bindings).
    pub fn is_match(&self, partition: &PartitionRef) -> bool {
        if partition.dataset() != self.dataset {
            return false;
        }
        let mut actual = partition.dimensions();
        for (position, (key, expected)) in self.dimensions.iter().enumerate() {
            let Some((actual_key, actual_value)) = actual.next() else {
                return false;
            };
            if actual_key != key {
                return false;
            }
            let consistent = match expected {
                PatternValue::Literal(literal) => literal == actual_value,
                // A placeholder used twice must have one value: compare with
                // its first use.
                PatternValue::Placeholder(name) => self.dimensions[..position]
                    .iter()
                    .zip(partition.dimensions())
                    .find(|((_, earlier), _)| {
                        matches!(earlier, PatternValue::Placeholder(other) if other == name)
                    })
                    .is_none_or(|(_, (_, bound))| bound == actual_value),
            };
            if !consistent {
                return false;
            }
        }
        actual.next().is_none()
    }

    /// Substitutes `bindings` into the pattern. Fails naming the first
    /// placeholder without a binding, or a bound value that is not valid.
    pub fn substitute(&self, bindings: &Bindings) -> Result<PartitionRef, RefError> {
        self.substitute_by(|name| bindings.get(name))
    }

    /// [`Pattern::substitute`] with each placeholder's value from `lookup`.
    pub fn substitute_by<'v>(
        &self,
        lookup: impl Fn(&str) -> Option<&'v str>,
    ) -> Result<PartitionRef, RefError> {
        let mut text = String::with_capacity(self.text.len() + 16);
        self.write_by(lookup, &mut text)?;
        PartitionRef::parse(&text)
    }

    /// [`Pattern::substitute_by`]'s text, written into `text` (cleared
    /// first) and not validated: for a caller that may find the ref among
    /// refs it holds, and parses it otherwise.
    pub fn write_by<'v>(
        &self,
        lookup: impl Fn(&str) -> Option<&'v str>,
        text: &mut String,
    ) -> Result<(), RefError> {
        text.clear();
        text.push_str(&self.dataset);
        for (key, value) in &self.dimensions {
            text.push('/');
            text.push_str(key);
            text.push('=');
            match value {
                PatternValue::Literal(literal) => text.push_str(literal),
                PatternValue::Placeholder(name) => match lookup(name) {
                    Some(bound) => text.push_str(bound),
                    None => {
                        return Err(RefError::Pattern {
                            text: self.text.clone(),
                            problem: format!("placeholder {{{name}}} has no value"),
                        });
                    }
                },
            }
        }
        Ok(())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

/// Substitutes `{name}` occurrences in free text (job args, env values, source
/// path templates). Unknown placeholders are an error naming them; `{{` and
/// `}}` escape braces.
pub fn substitute_text(template: &str, bindings: &Bindings) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(position) = rest.find(['{', '}']) {
        out.push_str(&rest[..position]);
        let tail = &rest[position..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if let Some(after) = tail.strip_prefix('{') {
            let Some(end) = after.find('}') else {
                return Err(format!("{template:?} has an unclosed placeholder"));
            };
            let name = &after[..end];
            match bindings.get(name) {
                Some(value) => out.push_str(value),
                None => return Err(format!("{template:?} uses {{{name}}}, which has no value")),
            }
            rest = &after[end + 1..];
        } else {
            return Err(format!("{template:?} has an unmatched '}}'"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The placeholder names used in free text, in order (each once).
pub fn text_placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(position) = rest.find(['{', '}']) {
        let tail = &rest[position..];
        if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
            rest = after;
        } else if let Some(after) = tail.strip_prefix('{') {
            let Some(end) = after.find('}') else {
                return Err(format!("{template:?} has an unclosed placeholder"));
            };
            let name = after[..end].to_owned();
            check_name(&name, "placeholder")
                .map_err(|problem| format!("{template:?}: {problem}"))?;
            if !names.contains(&name) {
                names.push(name);
            }
            rest = &after[end + 1..];
        } else {
            return Err(format!("{template:?} has an unmatched '}}'"));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn error(text: &str) -> String {
        PartitionRef::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn accepts_hive_refs() {
        let partition = PartitionRef::parse("clean/date=2024-01-31/station=NL01497").unwrap();
        assert_eq!(partition.dataset(), "clean");
        let dims: Vec<_> = partition.dimensions().collect();
        assert_eq!(dims, [("date", "2024-01-31"), ("station", "NL01497")]);
        assert_eq!(
            PartitionRef::parse("constants").unwrap().dataset(),
            "constants"
        );
    }

    #[test]
    fn traversal_and_hostile_refs_are_refused_with_reasons() {
        assert_eq!(
            error("../../etc"),
            r#"invalid partition ref "../../etc": segment ".." is not allowed"#
        );
        assert!(error("/etc/passwd").contains("absolute paths are not allowed"));
        assert!(error("a/b=x\0y").contains("NUL"));
        assert!(error("a/%2e%2e=x").contains("percent-encoding"));
        assert!(error("a/k=%2e%2e").contains("percent-encoding"));
        assert!(error("a//k=v").contains("empty segment"));
        assert!(error("a/k=v/").contains("ends with '/'"));
        assert!(error("a/k=v=w").contains("contains '='"));
        assert!(error("a/k=..").contains(r#"value "..""#));
        assert!(error("a/k=.hidden").contains("must not start with '.'"));
        assert!(error("a/k").contains("key=value"));
        assert!(error("a/k=1/k=2").contains("appears twice"));
        assert!(error("").contains("empty"));
        assert!(error("a/k=x y").contains("' '"));
    }

    #[test]
    fn patterns_match_and_substitute() {
        let pattern = Pattern::parse("clean/date={date}/station={station}").unwrap();
        let partition = PartitionRef::parse("clean/date=2024-01-01/station=NL01").unwrap();
        let bindings = pattern.matches(&partition).unwrap();
        assert_eq!(&bindings["date"], "2024-01-01");
        assert_eq!(pattern.substitute(&bindings).unwrap(), partition);
        assert!(
            pattern
                .matches(&PartitionRef::parse("clean/date=x").unwrap())
                .is_none()
        );
        assert!(
            pattern
                .matches(&PartitionRef::parse("raw/date=x/station=y").unwrap())
                .is_none()
        );
        let literal = Pattern::parse("daily/date={d}/kind=sum").unwrap();
        assert!(
            literal
                .matches(&PartitionRef::parse("daily/date=1/kind=sum").unwrap())
                .is_some()
        );
        assert!(
            literal
                .matches(&PartitionRef::parse("daily/date=1/kind=avg").unwrap())
                .is_none()
        );
    }

    #[test]
    fn repeated_placeholders_must_agree() {
        let pattern = Pattern::parse("x/a={v}/b={v}").unwrap();
        assert!(
            pattern
                .matches(&PartitionRef::parse("x/a=1/b=1").unwrap())
                .is_some()
        );
        assert!(
            pattern
                .matches(&PartitionRef::parse("x/a=1/b=2").unwrap())
                .is_none()
        );
    }

    #[test]
    fn bad_patterns_are_refused_with_reasons() {
        let error = Pattern::parse("clean/date={date").unwrap_err().to_string();
        assert_eq!(
            error,
            r#"invalid pattern "clean/date={date": placeholder "{date" is not closed"#
        );
        assert!(
            Pattern::parse("{d}/x=1")
                .unwrap_err()
                .to_string()
                .contains("dataset")
        );
        assert!(
            Pattern::parse("x/a=pre{d}")
                .unwrap_err()
                .to_string()
                .contains("whole value")
        );
        let missing = Pattern::parse("x/a={d}")
            .unwrap()
            .substitute(&Bindings::new());
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("{d} has no value")
        );
        let unsafe_value = Pattern::parse("x/a={d}")
            .unwrap()
            .substitute(&Bindings::from([("d".to_owned(), "..".to_owned())]));
        assert!(unsafe_value.is_err());
    }

    #[test]
    fn text_templates() {
        let bindings = Bindings::from([("date".to_owned(), "2024-01-01".to_owned())]);
        assert_eq!(
            substitute_text("in/{date}.txt", &bindings).unwrap(),
            "in/2024-01-01.txt"
        );
        assert_eq!(substitute_text("a{{b}}", &bindings).unwrap(), "a{b}");
        assert!(
            substitute_text("{nope}", &bindings)
                .unwrap_err()
                .contains("{nope}")
        );
        assert!(
            substitute_text("{date", &bindings)
                .unwrap_err()
                .contains("unclosed")
        );
        assert_eq!(
            text_placeholders("in/{date}/{station}.txt").unwrap(),
            ["date", "station"]
        );
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_][A-Za-z0-9_.:+@,~-]{0,12}"
    }

    fn ref_strategy() -> impl Strategy<Value = String> {
        (
            "[a-z_][a-z0-9_-]{0,8}",
            proptest::collection::btree_map("[a-z_][a-z0-9_]{0,6}", value_strategy(), 0..4),
        )
            .prop_map(|(dataset, dims)| {
                let mut text = dataset;
                for (key, value) in dims {
                    text.push('/');
                    text.push_str(&key);
                    text.push('=');
                    text.push_str(&value);
                }
                text
            })
    }

    proptest! {
        #[test]
        fn parse_print_is_identity(text in ref_strategy()) {
            let partition = PartitionRef::parse(&text).unwrap();
            prop_assert_eq!(partition.to_string(), text);
            let again = PartitionRef::parse(partition.as_str()).unwrap();
            prop_assert_eq!(again, partition);
        }

        #[test]
        fn every_accepted_ref_stays_inside_the_root(text in "[ -~]{0,40}") {
            if let Ok(partition) = PartitionRef::parse(&text) {
                let path = partition.relative_path();
                prop_assert!(path.is_relative());
                for component in path.components() {
                    prop_assert!(matches!(component, std::path::Component::Normal(_)), "{:?}", path);
                }
            }
        }

        /// Bindings behave as a map kept in name order, whatever the
        /// order of inserts and however often a name is bound again.
        #[test]
        fn bindings_behave_as_a_sorted_map(
            pairs in proptest::collection::vec(("[a-d]{0,3}", "[0-9x]{0,4}"), 0..12),
        ) {
            let mut model = std::collections::BTreeMap::new();
            let mut bindings = Bindings::new();
            for (name, value) in &pairs {
                let replaced = bindings.bind(name, value);
                prop_assert_eq!(replaced, model.insert(name.clone(), value.clone()));
                prop_assert_eq!(bindings.get(name), Some(value.as_str()));
            }
            let listed: Vec<(&str, &str)> = bindings.iter().collect();
            let expected: Vec<(&str, &str)> =
                model.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            prop_assert_eq!(listed, expected);
            prop_assert_eq!(bindings.get("zz"), None);
            let rebuilt: Bindings = model.clone().into_iter().collect();
            prop_assert_eq!(rebuilt, bindings);
        }

        #[test]
        fn a_pattern_matches_what_it_substitutes(text in ref_strategy()) {
            let partition = PartitionRef::parse(&text).unwrap();
            // Turn every value into a placeholder named after its key.
            let mut pattern_text = partition.dataset().to_owned();
            for (key, _) in partition.dimensions() {
                pattern_text.push_str(&format!("/{key}={{{key}}}"));
            }
            let pattern = Pattern::parse(&pattern_text).unwrap();
            let bindings = pattern.matches(&partition).unwrap();
            prop_assert_eq!(pattern.substitute(&bindings).unwrap(), partition);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The one-pass check accepts exactly what the check that names
        /// the problem accepts: on near-refs (a small alphabet with every
        /// separator and a few forbidden bytes) and on any printable text.
        #[test]
        fn the_fast_check_agrees_with_the_full_one(
            dataset in "[a-c_.-]{0,2}",
            segments in proptest::collection::vec(
                ("[a-c_.-]{0,2}", proptest::option::of("[a-c0-9.:@=_%-]{0,2}")),
                0..10,
            ),
            any in "[ -~]{0,30}",
        ) {
            let mut near = dataset;
            for (key, value) in segments {
                near.push('/');
                near.push_str(&key);
                if let Some(value) = value {
                    near.push('=');
                    near.push_str(&value);
                }
            }
            for text in [near, any] {
                prop_assert_eq!(
                    is_valid_ref(text.as_bytes()),
                    PartitionRef::parse_slowly(&text).is_ok(),
                    "{:?}", text
                );
            }
        }

        /// `is_match` is `matches(..).is_some()`, placeholders used twice
        /// included.
        #[test]
        fn is_match_agrees_with_matches(
            values in proptest::collection::vec("[ab]", 1..4),
            placeholders in proptest::collection::vec(0..3usize, 1..4),
            literal in proptest::option::of(0..3usize),
        ) {
            let keys = ["k0", "k1", "k2", "k3"];
            let mut pattern_text = "d".to_owned();
            for (position, placeholder) in placeholders.iter().enumerate() {
                if literal == Some(position) {
                    pattern_text.push_str(&format!("/{}=a", keys[position]));
                } else {
                    pattern_text.push_str(&format!("/{}={{p{placeholder}}}", keys[position]));
                }
            }
            let mut ref_text = "d".to_owned();
            for (position, value) in values.iter().enumerate() {
                ref_text.push_str(&format!("/{}={value}", keys[position]));
            }
            let pattern = Pattern::parse(&pattern_text).unwrap();
            let partition = PartitionRef::parse(&ref_text).unwrap();
            prop_assert_eq!(
                pattern.is_match(&partition),
                pattern.matches(&partition).is_some(),
                "{} against {}", pattern_text, ref_text
            );
        }
    }
}
