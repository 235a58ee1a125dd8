//! What a submit announces (`expected`, docs/api.md "The Operation
//! resource"), worked out once for the submits that ask for the same
//! partitions at the same time.
//!
//! The accepted answer carries the plan's counts, which takes a dry run (a
//! plan and the verdict of every action). A hundred CI jobs submitting the
//! same backfill at once would run a hundred identical dry runs on a
//! machine that is building. Submits of one kind for the same partitions
//! that arrive while such a dry run is under way wait for it and share its
//! answer (a single flight, as Go's `singleflight`); one that arrives after
//! it ended starts a new one, so no answer is older than the submit that
//! receives it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use crate::error::ApiError;
use crate::registry::{Expected, lock};

type Flight = Shared<BoxFuture<'static, Result<Expected, ApiError>>>;

/// The dry runs under way, by what they count.
#[derive(Default)]
pub struct Expecting {
    flights: Mutex<HashMap<[u8; 32], (u64, Flight)>>,
    next: Mutex<u64>,
}

impl Expecting {
    /// The counts for `key` (see [`key`]): those of the dry run for `key`
    /// under way, or of the one `count` starts now.
    pub async fn counts<F>(self: &Arc<Self>, key: [u8; 32], count: F) -> Result<Expected, ApiError>
    where
        F: Future<Output = Result<Expected, ApiError>> + Send + 'static,
    {
        let (id, flight) = {
            let mut flights = lock(&self.flights);
            match flights.get(&key) {
                Some((id, flight)) => (*id, flight.clone()),
                None => {
                    let id = {
                        let mut next = lock(&self.next);
                        *next += 1;
                        *next
                    };
                    let flight = count.boxed().shared();
                    flights.insert(key, (id, flight.clone()));
                    (id, flight)
                }
            }
        };
        let counted = flight.await;
        // Landed: the next submit for `key` counts afresh. Only this
        // flight's entry goes (a newer one may have taken its place).
        let mut flights = lock(&self.flights);
        if flights.get(&key).is_some_and(|(current, _)| *current == id) {
            flights.remove(&key);
        }
        counted
    }

    /// Dry runs under way (tests).
    #[cfg(test)]
    fn under_way(&self) -> usize {
        lock(&self.flights).len()
    }
}

/// What a dry run counts: the kind of submit and the partitions it names
/// (sorted, so that the order of the request does not matter).
pub fn key(kind: &str, partitions: &mut [String]) -> [u8; 32] {
    partitions.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    hasher.update(kind.as_bytes());
    for partition in partitions.iter() {
        hasher.update(b"\n");
        hasher.update(partition.as_bytes());
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn expected(actions: u64) -> Expected {
        Expected {
            partitions: 1,
            actions,
            current: 0,
            to_run: actions,
        }
    }

    #[tokio::test]
    async fn submits_at_the_same_time_share_one_dry_run_and_later_ones_count_afresh() {
        let expecting = Arc::new(Expecting::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let key = key("build", &mut ["b".to_owned(), "a".to_owned()]);
        assert_eq!(
            key,
            super::key("build", &mut ["a".to_owned(), "b".to_owned()])
        );
        let counting = {
            let runs = Arc::clone(&runs);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let _ = released.await;
                Ok(expected(5))
            }
        };
        let first = tokio::spawn({
            let expecting = Arc::clone(&expecting);
            async move { expecting.counts(key, counting).await }
        });
        while expecting.under_way() == 0 {
            tokio::task::yield_now().await;
        }
        // Arrives while the first dry run is under way: its own count
        // never runs.
        let second = tokio::spawn({
            let expecting = Arc::clone(&expecting);
            let runs = Arc::clone(&runs);
            async move {
                expecting
                    .counts(key, async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok(expected(7))
                    })
                    .await
            }
        });
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().actions, 5);
        assert_eq!(second.await.unwrap().unwrap().actions, 5);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(expecting.under_way(), 0);
        // After it landed: a new dry run.
        let later = expecting.counts(key, async { Ok(expected(9)) }).await;
        assert_eq!(later.unwrap().actions, 9);
        // Another key never shares.
        let other = super::key("backfill", &mut ["a".to_owned(), "b".to_owned()]);
        assert_ne!(other, key);
    }
}
