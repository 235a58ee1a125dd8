//! Words for the notes the use cases send.

/// `1 partition`, `2 partitions`, `0 partitions`: `noun` is the singular,
/// made plural with an `s`.
pub(crate) fn count<N: TryInto<u64>>(n: N, noun: &str) -> String {
    match n.try_into() {
        Ok(1) => format!("1 {noun}"),
        Ok(n) => format!("{n} {noun}s"),
        Err(_) => format!("? {noun}s"),
    }
}
