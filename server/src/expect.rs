//! What a submit announces (`expected`, docs/api.md "The Operation
//! resource"), worked out once for the submits that ask for the same
//! partitions at about the same time.
//!
//! The accepted answer carries the plan's counts, which takes a dry run (a
//! plan and the verdict of every action: tens of milliseconds at 1,830
//! actions, several times that on a machine that is building). A hundred CI
//! jobs submitting the same backfill at once would run a hundred identical
//! dry runs. Submits of one kind for the same partitions share one: the
//! one under way (a single flight, as Go's `singleflight`), or one that
//! ended less than [`REUSED_FOR`] ago, unless an operation ended or
//! partitions were invalidated since it started ([`Expecting::changed`]):
//! a submit after its previous build finished is told what is left now.
//! An announcement is a prediction anyway (an operation may queue, and the
//! builds running beside it make actions current); the build's own counts
//! are what happened.
//!
//! A build's dry run plans as the build does
//! (`cairn_app::build::dry_run_for_build`; after a change it takes the plan
//! kept with the up-to-date snapshot, which a build made), and the
//! operation's build takes
//! that plan instead of planning again (a backfill's too) when it starts at
//! the generation its dry run was asked at ([`Given::plan`]): no operation
//! ended and nothing was invalidated in between. The plan itself is a
//! function of the graph file (read once, at start), the refs and the
//! configure answers, so no event between could change it; the build
//! evaluates every action afresh anyway. An operation that queued behind
//! another one therefore always plans afresh (the other one's end changed
//! the generation), and so does one submitted before an invalidation.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use crate::error::ApiError;
use crate::registry::{Expected, lock};
use cairn_engine::plan::Plan;

type Flight = Shared<BoxFuture<'static, Result<Dry, ApiError>>>;

/// What a dry run found: the counts a submit announces and, when it
/// planned, its plan.
#[derive(Debug, Clone)]
pub struct Dry {
    pub expected: Expected,
    pub plan: Option<Arc<Plan>>,
}

impl From<Expected> for Dry {
    fn from(expected: Expected) -> Dry {
        Dry {
            expected,
            plan: None,
        }
    }
}

/// A dry run's answer given to one submit.
#[derive(Debug, Clone)]
pub struct Given {
    pub dry: Dry,
    /// The generation the submit asked at (the dry run's key).
    pub generation: u64,
}

impl Given {
    /// The plan, with the generation its build may take it at.
    pub fn plan(&self) -> Option<(Arc<Plan>, u64)> {
        self.dry
            .plan
            .as_ref()
            .map(|plan| (Arc::clone(plan), self.generation))
    }
}

/// How long a dry run's answer is given to later submits for the same
/// partitions.
pub const REUSED_FOR: Duration = Duration::from_secs(1);

/// A dry run under way or landed (`landed`: when).
struct Counted {
    id: u64,
    flight: Flight,
    landed: Option<Instant>,
}

/// The dry runs under way or landed less than `reused_for` ago, by what
/// they count.
pub struct Expecting {
    flights: Mutex<HashMap<([u8; 32], u64), Counted>>,
    next: Mutex<u64>,
    reused_for: Duration,
    /// Bumped by [`Expecting::changed`]: part of every flight's key, so a
    /// dry run started before a change is never given after it.
    generation: AtomicU64,
}

impl Default for Expecting {
    fn default() -> Self {
        Expecting::reusing_for(REUSED_FOR)
    }
}

impl Expecting {
    fn reusing_for(reused_for: Duration) -> Self {
        Expecting {
            flights: Mutex::new(HashMap::new()),
            next: Mutex::new(0),
            reused_for,
            generation: AtomicU64::new(0),
        }
    }

    /// What a dry run counts changed beyond the progress of the builds
    /// running: an operation ended, or partitions were invalidated.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// How many changes [`Expecting::changed`] recorded.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The counts for `key` (see [`key`]): those of the dry run for `key`
    /// under way or just landed, or of the one `count` starts now.
    pub async fn counts<F>(self: &Arc<Self>, key: [u8; 32], count: F) -> Result<Given, ApiError>
    where
        F: Future<Output = Result<Dry, ApiError>> + Send + 'static,
    {
        let key = (key, self.generation.load(Ordering::SeqCst));
        let (id, flight) = {
            let mut flights = lock(&self.flights);
            let now = Instant::now();
            // Landed too long ago, or of an older generation (a flight
            // whose every waiter went away never lands): forgotten, so the
            // map holds only what is under way now or fresh. A waiter
            // keeps its own handle on the flight.
            flights.retain(|(_, generation), counted| {
                *generation == key.1
                    && counted
                        .landed
                        .is_none_or(|landed| now.duration_since(landed) < self.reused_for)
            });
            match flights.get(&key) {
                Some(counted) => (counted.id, counted.flight.clone()),
                None => {
                    let id = {
                        let mut next = lock(&self.next);
                        *next += 1;
                        *next
                    };
                    let flight = count.boxed().shared();
                    flights.insert(
                        key,
                        Counted {
                            id,
                            flight: flight.clone(),
                            landed: None,
                        },
                    );
                    (id, flight)
                }
            }
        };
        let counted = flight.await;
        let mut flights = lock(&self.flights);
        if let Some(entry) = flights.get_mut(&key)
            && entry.id == id
        {
            // A failed dry run is not given to anyone else: the next
            // submit asks again.
            if counted.is_err() || self.reused_for.is_zero() {
                flights.remove(&key);
            } else {
                entry.landed.get_or_insert_with(Instant::now);
            }
        }
        counted.map(|dry| Given {
            dry,
            generation: key.1,
        })
    }

    /// Dry runs under way or kept (tests).
    #[cfg(test)]
    fn kept(&self) -> usize {
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

    fn expected(actions: u64) -> Dry {
        Dry::from(Expected {
            partitions: 1,
            actions,
            current: 0,
            to_run: actions,
        })
    }

    #[tokio::test]
    async fn submits_at_the_same_time_share_one_dry_run_and_later_ones_count_afresh() {
        let expecting = Arc::new(Expecting::reusing_for(Duration::ZERO));
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
        crate::yield_until("the first dry run is kept", || expecting.kept() > 0).await;
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
        assert_eq!(first.await.unwrap().unwrap().dry.expected.actions, 5);
        assert_eq!(second.await.unwrap().unwrap().dry.expected.actions, 5);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(expecting.kept(), 0);
        // After it landed (reused for no time here): a new dry run.
        let later = expecting.counts(key, async { Ok(expected(9)) }).await;
        assert_eq!(later.unwrap().dry.expected.actions, 9);
        // Another key never shares.
        let other = super::key("backfill", &mut ["a".to_owned(), "b".to_owned()]);
        assert_ne!(other, key);
    }

    #[tokio::test]
    async fn a_landed_dry_run_is_reused_for_a_while_but_a_failed_one_never() {
        let expecting = Arc::new(Expecting::reusing_for(Duration::from_secs(3600)));
        let key = key("backfill", &mut ["a".to_owned()]);
        let first = expecting.counts(key, async { Ok(expected(5)) }).await;
        assert_eq!(first.unwrap().dry.expected.actions, 5);
        let again = expecting.counts(key, async { Ok(expected(7)) }).await;
        assert_eq!(again.unwrap().dry.expected.actions, 5, "reused");
        let other = super::key("backfill", &mut ["b".to_owned()]);
        let failed = expecting
            .counts(other, async {
                Err(ApiError::new(axum::http::StatusCode::BAD_REQUEST, "no"))
            })
            .await;
        assert!(failed.is_err());
        let retried = expecting.counts(other, async { Ok(expected(9)) }).await;
        assert_eq!(
            retried.unwrap().dry.expected.actions,
            9,
            "a failure is not kept"
        );
    }

    #[tokio::test]
    async fn a_dry_run_is_not_reused_after_a_change() {
        let expecting = Arc::new(Expecting::reusing_for(Duration::from_secs(3600)));
        let key = key("build", &mut ["a".to_owned()]);
        let first = expecting.counts(key, async { Ok(expected(5)) }).await;
        assert_eq!(first.unwrap().dry.expected.actions, 5);
        expecting.changed();
        let after = expecting.counts(key, async { Ok(expected(0)) }).await;
        assert_eq!(
            after.unwrap().dry.expected.actions,
            0,
            "counted afresh after the change"
        );
    }

    #[tokio::test]
    async fn a_flight_nobody_waits_on_is_forgotten_after_a_change() {
        let expecting = Arc::new(Expecting::reusing_for(Duration::from_secs(3600)));
        let key = key("build", &mut ["a".to_owned()]);
        // Its only waiter goes away before it lands (a client hung up).
        let abandoned = expecting.counts(key, std::future::pending());
        let polled = tokio::time::timeout(Duration::from_millis(10), abandoned).await;
        assert!(polled.is_err());
        assert_eq!(expecting.kept(), 1);
        expecting.changed();
        let after = expecting.counts(key, async { Ok(expected(3)) }).await;
        assert_eq!(after.unwrap().dry.expected.actions, 3);
        assert_eq!(expecting.kept(), 1, "the abandoned flight is gone");
    }
}
