//! Definitions from external sources (docs/defs.md): what a `[sources.NAME]`
//! command must print, and how its output becomes dimension values.
//!
//! A source prints JSON on stdout: a list of strings (`["NL01497",
//! "NL01912"]`) or an object with a `values` list (`{"values": [...]}`,
//! other keys ignored). Every value must be a valid partition value, no
//! value may appear twice, and the list may not be empty (an unreliable API
//! that answers `[]` is treated as broken, not as "no stations"). The bytes
//! are stored as they were printed; their order is the dimension's order.

use crate::refs::PartitionRef;

/// The values of a source's output, validated; an error says what is wrong
/// in plain words (`value 3 "a/b" is not a valid partition value ...`).
pub fn parse_values(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the output is not UTF-8".to_owned())?;
    if text.trim().is_empty() {
        return Err("the source printed nothing".into());
    }
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|error| format!("the output is not JSON: {error}"))?;
    let list = match &json {
        serde_json::Value::Array(list) => list,
        serde_json::Value::Object(object) => match object.get("values") {
            Some(serde_json::Value::Array(list)) => list,
            Some(_) => return Err("`values` is not a list".into()),
            None => {
                return Err(
                    "expected a list of strings or an object with a `values` list, got an \
                     object without `values`"
                        .into(),
                );
            }
        },
        _ => {
            return Err("expected a list of strings or an object with a `values` list".into());
        }
    };
    if list.is_empty() {
        return Err("the list of values is empty".into());
    }
    let mut values: Vec<String> = Vec::with_capacity(list.len());
    let mut seen = std::collections::HashSet::new();
    for (index, value) in list.iter().enumerate() {
        let number = index + 1;
        let Some(value) = value.as_str() else {
            return Err(format!("value {number} is not a string: {value}"));
        };
        check_value(value).map_err(|message| format!("value {number} {message}"))?;
        if !seen.insert(value) {
            return Err(format!("value {number} {value:?} appears twice"));
        }
        values.push(value.to_owned());
    }
    Ok(values)
}

/// Whether `value` can be a partition value (the rules of refs).
pub fn check_value(value: &str) -> Result<(), String> {
    crate::refs::check_partition_value(value)?;
    // The rules of a whole ref too (a key and a dataset around it).
    PartitionRef::from_parts("d", [("k", value)])
        .map(drop)
        .map_err(|_| {
            format!(
                "{} is too long ({} bytes, at most {} in a ref)",
                crate::refs::quoted(value),
                value.len(),
                crate::refs::MAX_REF_BYTES
            )
        })
}

/// `(added, removed)`: the values of `new` not in `old`, and of `old` not in
/// `new`, each sorted.
pub fn diff(old: &[String], new: &[String]) -> (Vec<String>, Vec<String>) {
    let old_set: std::collections::BTreeSet<&String> = old.iter().collect();
    let new_set: std::collections::BTreeSet<&String> = new.iter().collect();
    let added = new_set.difference(&old_set).map(|v| (*v).clone()).collect();
    let removed = old_set.difference(&new_set).map(|v| (*v).clone()).collect();
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_objects_are_accepted() {
        assert_eq!(parse_values(br#"["a", "b"]"#).unwrap(), ["a", "b"]);
        assert_eq!(
            parse_values(br#"{"values": ["NL01", "NL02"], "fetched": "now"}"#).unwrap(),
            ["NL01", "NL02"]
        );
    }

    #[test]
    fn malformed_output_is_refused_with_a_reason() {
        let error = |bytes: &[u8]| parse_values(bytes).unwrap_err();
        assert_eq!(error(b""), "the source printed nothing");
        assert!(error(b"<html>503</html>").starts_with("the output is not JSON"));
        assert_eq!(error(b"[]"), "the list of values is empty");
        assert_eq!(error(br#"["a", 3]"#), "value 2 is not a string: 3");
        assert!(error(br#"["a", "../x"]"#).starts_with("value 2 \"../x\" is not a valid"));
        assert_eq!(error(br#"["a", "a"]"#), "value 2 \"a\" appears twice");
        assert!(error(br#"{"data": []}"#).contains("without `values`"));
        assert!(error(b"42").starts_with("expected a list"));
    }

    #[test]
    fn diff_lists_added_and_removed_values() {
        let old = ["a".to_owned(), "b".to_owned()];
        let new = ["c".to_owned(), "a".to_owned()];
        assert_eq!(
            diff(&old, &new),
            (vec!["c".to_owned()], vec!["b".to_owned()])
        );
    }
}
