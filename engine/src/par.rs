//! Parallel helpers whose results do not depend on the pool's schedule.

use rayon::prelude::*;

/// `make(0) .. make(len - 1)` computed in parallel and returned in order,
/// or the first error in that order. Results are collected in place (an
/// `Option` of a ref or a config is its size, where rayon's collect into a
/// `Result<Vec<_>, _>` goes through a linked list of vectors); on a
/// failure the items are made again sequentially to find the first error,
/// which a parallel pass meets in no fixed order.
pub(crate) fn try_map_in_order<T: Send, E>(
    len: usize,
    make: impl Fn(usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    let made: Vec<Option<T>> = (0..len).into_par_iter().map(|i| make(i).ok()).collect();
    match made.into_iter().collect::<Option<Vec<T>>>() {
        Some(made) => Ok(made),
        None => (0..len).map(make).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_order_and_the_first_error_is_named() {
        let squares = try_map_in_order(10_000, |i| Ok::<_, String>(i * i)).unwrap();
        assert_eq!(squares, (0..10_000).map(|i| i * i).collect::<Vec<_>>());
        let failed = try_map_in_order(10_000, |i| {
            if i % 1_000 == 999 {
                Err(format!("item {i}"))
            } else {
                Ok(i)
            }
        });
        assert_eq!(failed, Err("item 999".to_owned()));
        assert_eq!(try_map_in_order(0, Ok::<_, ()>), Ok(Vec::new()));
    }
}
