//! The grids' answers (`GET /v1/datasets/{name}/grid`), computed once per
//! change of the store and shared (docs/web.md, "How fresh the grid is").
//!
//! A grid is the `cairn status` of every partition of a dataset, which
//! plans and evaluates its whole upstream, or the up-to-date snapshot's
//! word for it (`cairn_app::status::states`): seconds at 10⁶ partitions
//! either way (every source and output observed). Asking it again when nothing
//! changed gives the same answer, so each dataset's answer is kept with
//! the [`Generation`] it was computed at: the store's last event seq and
//! the server's change counter (server/src/expect.rs), both read *before*
//! the computation starts. An answer is given only to a request whose
//! generation it covers: a build's progress, an operation's end and an
//! invalidation each move the generation, so no request made after them
//! is given an answer computed before them.
//!
//! One computation per dataset runs at a time (a single flight): requests
//! arriving while it runs share it when it covers them, else wait for it
//! and share the next one, so a page refreshing during a build costs the
//! server at most one status at a time per dataset, however many viewers.
//!
//! What changes outside cairn (a source file edited, a data path deleted)
//! moves no generation: an answer that landed more than
//! [`REVALIDATE_AFTER`] ago (or ten times its computation's time, if
//! longer) is still given once, and computed again in the background for
//! the next request (stale-while-revalidate). After an operation ends, the grids
//! asked for in the last [`WARM_FOR`] are computed again in the background
//! (when no other operation runs), so the next page load finds them ready.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use cairn_engine::digest::ContentDigest;

use crate::error::ApiError;
use crate::registry::lock;

/// An answer older than this is computed again (in the background) when
/// asked: how long a change made outside cairn may go unseen, plus one
/// computation.
pub const REVALIDATE_AFTER: Duration = Duration::from_secs(5);

/// After an operation ends, the grids asked for within this long are
/// computed again at once.
pub const WARM_FOR: Duration = Duration::from_secs(600);

/// The store's last event seq and the server's change counter: an answer
/// computed at `a` may be given to a request at `b` if `covers(a, b)`.
pub type Generation = (u64, u64);

fn covers(have: Generation, want: Generation) -> bool {
    have.0 >= want.0 && have.1 >= want.1
}

/// A grid's answer, computed at generation `generation`: started `at`,
/// it took `took`.
#[derive(Clone)]
struct Computed {
    generation: Generation,
    at: Instant,
    took: Duration,
    body: Bytes,
    /// Kept on disk by an earlier server ([`Grids::adopt`]): given once,
    /// and computed again behind at once.
    adopted: bool,
}

impl Computed {
    /// Whether to compute it again in the background when asked: it
    /// landed [`REVALIDATE_AFTER`] ago, or ten times its computation's
    /// time when that is longer (at 10⁶ partitions a computation takes
    /// seconds: revalidating sooner would keep a core busy for a page).
    fn old(&self, revalidate_after: Duration) -> bool {
        if self.adopted {
            return true;
        }
        let landed = self.at + self.took;
        Instant::now().saturating_duration_since(landed) >= revalidate_after.max(self.took * 10)
    }
}

type Flight = Shared<BoxFuture<'static, Result<Computed, ApiError>>>;

#[derive(Default)]
struct Entry {
    computed: Option<Computed>,
    /// The computation under way, and the generation it started at.
    flight: Option<(Generation, Flight)>,
    /// When a request last asked for it.
    asked: Option<Instant>,
}

/// What one request waits on.
enum Waiting {
    /// A computation that covers the request.
    Answer(Flight),
    /// An older one: wait for it to land, then look again.
    Older(Flight),
}

/// The datasets' grids, computed or under way.
pub struct Grids {
    entries: Mutex<HashMap<String, Entry>>,
    revalidate_after: Duration,
    /// Computations started (`cairn_grid_computations_total`).
    computations: AtomicU64,
}

impl Default for Grids {
    fn default() -> Self {
        Grids::revalidating_after(REVALIDATE_AFTER)
    }
}

impl Grids {
    fn revalidating_after(revalidate_after: Duration) -> Self {
        Grids {
            entries: Mutex::new(HashMap::new()),
            revalidate_after,
            computations: AtomicU64::new(0),
        }
    }

    /// How many computations started.
    pub fn computations(&self) -> u64 {
        self.computations.load(Ordering::Relaxed)
    }

    /// Whether `name` has no answer, kept or under way: nothing asked for
    /// it since the server started (or its computations failed).
    pub fn is_new(&self, name: &str) -> bool {
        lock(&self.entries)
            .get(name)
            .is_none_or(|entry| entry.computed.is_none() && entry.flight.is_none())
    }

    /// Takes `body`, the answer an earlier server kept on disk for the
    /// store as it is now ([`kept_answer`]), as computed at `generation`,
    /// unless `name` has an answer already. It is given once and computed
    /// again behind at once, as an old answer is: the store is as it was,
    /// but a file may have changed while no server watched.
    pub fn adopt(&self, name: &str, generation: Generation, body: Bytes) {
        let mut entries = lock(&self.entries);
        let entry = entries.entry(name.to_owned()).or_default();
        if entry.computed.is_none() {
            entry.computed = Some(Computed {
                generation,
                at: Instant::now(),
                took: Duration::ZERO,
                body,
                adopted: true,
            });
        }
    }

    /// The grid of dataset `name` for a request made at generation
    /// `now()`: the kept answer if it covers it, else the one `compute`
    /// (blocking, on tokio's blocking pool) works out.
    pub async fn answer<N, C>(
        self: &Arc<Self>,
        name: &str,
        now: N,
        compute: C,
    ) -> Result<Bytes, ApiError>
    where
        N: Fn() -> Generation,
        C: Fn() -> Result<Bytes, ApiError> + Clone + Send + Sync + 'static,
    {
        loop {
            let generation = now();
            let waiting = {
                let mut entries = lock(&self.entries);
                let entry = entries.entry(name.to_owned()).or_default();
                entry.asked = Some(Instant::now());
                if let Some(computed) = &entry.computed
                    && covers(computed.generation, generation)
                {
                    let body = computed.body.clone();
                    if computed.old(self.revalidate_after) && entry.flight.is_none() {
                        let flight = self.start(name, generation, compute.clone());
                        entry.flight = Some((generation, flight));
                    }
                    return Ok(body);
                }
                match &entry.flight {
                    Some((started, flight)) if covers(*started, generation) => {
                        Waiting::Answer(flight.clone())
                    }
                    Some((_, flight)) => Waiting::Older(flight.clone()),
                    None => {
                        let flight = self.start(name, generation, compute.clone());
                        entry.flight = Some((generation, flight.clone()));
                        Waiting::Answer(flight)
                    }
                }
            };
            match waiting {
                Waiting::Answer(flight) => return flight.await.map(|computed| computed.body),
                Waiting::Older(flight) => {
                    let _ = flight.await;
                }
            }
        }
    }

    /// Computes again, in the background, the grids asked for within
    /// [`WARM_FOR`] that generation `now` does not cover.
    pub fn warm<C>(self: &Arc<Self>, now: Generation, compute: impl Fn(&str) -> C)
    where
        C: Fn() -> Result<Bytes, ApiError> + Send + Sync + 'static,
    {
        let mut entries = lock(&self.entries);
        let names: Vec<String> = entries
            .iter()
            .filter(|(_, entry)| {
                entry.asked.is_some_and(|asked| asked.elapsed() < WARM_FOR)
                    && entry
                        .computed
                        .as_ref()
                        .is_none_or(|computed| !covers(computed.generation, now))
                    && entry.flight.is_none()
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            let flight = self.start(&name, now, compute(&name));
            if let Some(entry) = entries.get_mut(&name) {
                entry.flight = Some((now, flight));
            }
        }
    }

    /// Starts computing `name`'s grid at `generation` (called with the
    /// entries locked: the task stores its answer only after the caller
    /// recorded the flight). The task runs to its end even if every
    /// request waiting on it went away, and keeps its answer.
    fn start<C>(self: &Arc<Self>, name: &str, generation: Generation, compute: C) -> Flight
    where
        C: Fn() -> Result<Bytes, ApiError> + Send + Sync + 'static,
    {
        self.computations.fetch_add(1, Ordering::Relaxed);
        let grids = Arc::clone(self);
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            let at = Instant::now();
            let computed = tokio::task::spawn_blocking(compute)
                .await
                .map_err(|error| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("the grid's computation failed: {error}"),
                    )
                })
                .and_then(|answer| answer)
                .map(|body| Computed {
                    generation,
                    at,
                    took: at.elapsed(),
                    body,
                    adopted: false,
                });
            let mut entries = lock(&grids.entries);
            if let Some(entry) = entries.get_mut(&name) {
                if entry
                    .flight
                    .as_ref()
                    .is_some_and(|(started, _)| *started == generation)
                {
                    entry.flight = None;
                }
                // A failure is not kept: the next request asks again.
                if let Ok(computed) = &computed
                    && entry
                        .computed
                        .as_ref()
                        .is_none_or(|kept| covers(computed.generation, kept.generation))
                {
                    entry.computed = Some(computed.clone());
                }
            }
            computed
        });
        async move {
            task.await.map_err(|error| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the grid's computation failed: {error}"),
                )
            })?
        }
        .boxed()
        .shared()
    }
}

// ------------------------------------------------------ kept between runs

/// The layout of a kept answer: this magic, the stamp it was computed
/// under (`cairn_app::status::stamp`: fingerprint and the log's last
/// event), blake3 of the body, the body (the answer's JSON).
const KEPT_MAGIC: &[u8; 20] = b"cairn-grid-answer/1\n";

/// The file `dataset`'s answer is kept in, under `dir` (the store's
/// `grids/`): named by the name's digest, whatever characters it holds.
fn kept_file(dir: &Path, dataset: &str) -> PathBuf {
    let digest = ContentDigest::of(dataset.as_bytes()).to_hex();
    dir.join(format!("{}.answer", &digest[..32]))
}

/// Keeps `body`, `dataset`'s answer computed under `stamp`, in `dir` for
/// the next server (docs/internals.md, "Cache files"): written to a
/// temporary file, then renamed over the last. Not synced: a cache, and a
/// torn one fails its checksum.
pub fn keep_answer(
    dir: &Path,
    dataset: &str,
    stamp: &ContentDigest,
    body: &[u8],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    cairn_engine::config::write_sealed_cache_file(
        &kept_file(dir, dataset),
        KEPT_MAGIC,
        &stamp.0,
        body,
    )
}

/// `dataset`'s answer kept in `dir` under `stamp`, if its file is there,
/// whole (magic and the body's checksum) and of that stamp; anything else
/// is a miss (the answer is computed as if nothing were kept).
pub fn kept_answer(dir: &Path, dataset: &str, stamp: &ContentDigest) -> Option<Bytes> {
    let bytes = std::fs::read(kept_file(dir, dataset)).ok()?;
    let (kept_stamp, body) = cairn_engine::config::unseal(&bytes, KEPT_MAGIC, 32).ok()?;
    (kept_stamp == stamp.0).then(|| Bytes::copy_from_slice(body))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A computation that counts its runs and answers `answer`'s value.
    fn counting(
        runs: &Arc<AtomicUsize>,
        answer: &Arc<Mutex<&'static str>>,
    ) -> impl Fn() -> Result<Bytes, ApiError> + Clone + Send + Sync + 'static {
        let runs = Arc::clone(runs);
        let answer = Arc::clone(answer);
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(Bytes::from_static(lock(&answer).as_bytes()))
        }
    }

    #[tokio::test]
    async fn an_answer_is_kept_until_the_generation_moves() {
        let grids = Arc::new(Grids::revalidating_after(Duration::from_secs(3600)));
        let runs = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new("missing"));
        let generation = Arc::new(Mutex::new((1, 0)));
        let now = || *lock(&generation);
        let compute = counting(&runs, &answer);
        let first = grids.answer("clean", now, compute.clone()).await.unwrap();
        assert_eq!(first, "missing");
        *lock(&answer) = "built";
        let again = grids.answer("clean", now, compute.clone()).await.unwrap();
        assert_eq!(again, "missing", "kept: nothing moved the generation");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Another dataset is its own entry.
        grids.answer("daily", now, compute.clone()).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // An event appended (a build's progress or end).
        lock(&generation).0 = 2;
        let after = grids.answer("clean", now, compute.clone()).await.unwrap();
        assert_eq!(after, "built");
        // The change counter (an invalidation, an operation's end).
        *lock(&answer) = "stale";
        lock(&generation).1 = 1;
        let after = grids.answer("clean", now, compute.clone()).await.unwrap();
        assert_eq!(after, "stale");
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(grids.computations(), 4);
    }

    #[tokio::test]
    async fn requests_share_one_computation_and_later_ones_wait_for_the_next() {
        let grids = Arc::new(Grids::revalidating_after(Duration::from_secs(3600)));
        let runs = Arc::new(AtomicUsize::new(0));
        let generation = Arc::new(Mutex::new((1, 0)));
        let (release, released) = std::sync::mpsc::channel::<&'static str>();
        let released = Arc::new(Mutex::new(released));
        let compute = {
            let runs = Arc::clone(&runs);
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
                let body = lock(&released).recv().unwrap();
                Ok(Bytes::from_static(body.as_bytes()))
            }
        };
        let ask = |grids: &Arc<Grids>| {
            let grids = Arc::clone(grids);
            let generation = Arc::clone(&generation);
            let compute = compute.clone();
            tokio::spawn(async move {
                grids
                    .answer("clean", || *lock(&generation), compute)
                    .await
                    .unwrap()
            })
        };
        let first = ask(&grids);
        crate::yield_until("the first computation starts", || {
            runs.load(Ordering::SeqCst) > 0
        })
        .await;
        let second = ask(&grids);
        // It joins the first computation before anything changes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A request after a change: it must not be given the first one.
        lock(&generation).0 = 2;
        let third = ask(&grids);
        let fourth = ask(&grids);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one at a time");
        release.send("before").unwrap();
        assert_eq!(first.await.unwrap(), "before");
        assert_eq!(second.await.unwrap(), "before");
        crate::yield_until("the second computation starts", || {
            runs.load(Ordering::SeqCst) != 1
        })
        .await;
        release.send("after").unwrap();
        assert_eq!(third.await.unwrap(), "after");
        assert_eq!(fourth.await.unwrap(), "after");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the later ones shared one");
    }

    #[tokio::test]
    async fn an_old_answer_is_given_once_and_computed_again_behind() {
        let grids = Arc::new(Grids::revalidating_after(Duration::ZERO));
        let runs = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new("built"));
        let now = || (1, 0);
        let compute = counting(&runs, &answer);
        assert_eq!(
            grids.answer("clean", now, compute.clone()).await.unwrap(),
            "built"
        );
        // A data path deleted outside cairn: no generation moves.
        *lock(&answer) = "stale";
        // Landed longer ago than ten times its computation (a fixed 20 ms
        // was not, on a loaded machine: the test then waited forever).
        while !lock(&grids.entries)["clean"]
            .computed
            .as_ref()
            .is_some_and(|computed| computed.old(Duration::ZERO))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            grids.answer("clean", now, compute.clone()).await.unwrap(),
            "built"
        );
        crate::yield_until("the second computation landed", || {
            runs.load(Ordering::SeqCst) >= 2 && lock(&grids.entries)["clean"].flight.is_none()
        })
        .await;
        assert_eq!(
            grids.answer("clean", now, compute.clone()).await.unwrap(),
            "stale"
        );
    }

    #[tokio::test]
    async fn an_adopted_answer_is_given_once_and_computed_again_behind() {
        let grids = Arc::new(Grids::revalidating_after(Duration::from_secs(3600)));
        let runs = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new("stale"));
        let now = || (4, 0);
        let compute = counting(&runs, &answer);
        assert!(grids.is_new("clean"));
        grids.adopt("clean", (4, 0), Bytes::from_static(b"kept"));
        assert!(!grids.is_new("clean"));
        // Another adoption does not replace what is there.
        grids.adopt("clean", (4, 0), Bytes::from_static(b"other"));
        assert_eq!(
            grids.answer("clean", now, compute.clone()).await.unwrap(),
            "kept"
        );
        crate::yield_until("the computation behind landed", || {
            runs.load(Ordering::SeqCst) >= 1 && lock(&grids.entries)["clean"].flight.is_none()
        })
        .await;
        assert_eq!(
            grids.answer("clean", now, compute.clone()).await.unwrap(),
            "stale"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "computed once, behind");
    }

    #[test]
    fn a_kept_answer_is_given_only_under_its_stamp_and_whole() {
        let dir = std::env::temp_dir().join(format!("cairn-kept-grids-{}", std::process::id()));
        let stamp = ContentDigest::of(b"stamp");
        keep_answer(&dir, "clean", &stamp, b"{\"runs\": []}").unwrap();
        assert_eq!(
            kept_answer(&dir, "clean", &stamp).as_deref(),
            Some(b"{\"runs\": []}".as_slice())
        );
        assert_eq!(kept_answer(&dir, "daily", &stamp), None);
        assert_eq!(
            kept_answer(&dir, "clean", &ContentDigest::of(b"other")),
            None
        );
        let file = kept_file(&dir, "clean");
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(kept_answer(&dir, "clean", &stamp), None, "damaged");
        std::fs::write(&file, b"cairn-grid").unwrap();
        assert_eq!(kept_answer(&dir, "clean", &stamp), None, "torn");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_slow_computation_is_revalidated_after_ten_times_its_time() {
        let computed = |ago: u64, took: u64| Computed {
            generation: (1, 0),
            at: Instant::now() - Duration::from_secs(ago),
            took: Duration::from_secs(took),
            body: Bytes::new(),
            adopted: false,
        };
        let after = Duration::from_secs(5);
        assert!(!computed(3, 0).old(after), "landed 3 s ago");
        assert!(computed(6, 0).old(after), "landed 6 s ago");
        // 10 s to compute, landed 50 s ago: not before 100 s.
        assert!(!computed(60, 10).old(after));
        assert!(computed(111, 10).old(after));
    }

    #[tokio::test]
    async fn a_failure_is_not_kept_and_warming_computes_what_was_asked() {
        let grids = Arc::new(Grids::revalidating_after(Duration::from_secs(3600)));
        let failing = || Err(ApiError::invalid("no"));
        assert!(grids.answer("clean", || (1, 0), failing).await.is_err());
        let runs = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new("built"));
        let compute = counting(&runs, &answer);
        assert_eq!(
            grids
                .answer("clean", || (1, 0), compute.clone())
                .await
                .unwrap(),
            "built"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the failure was not kept");
        // An operation ended: warmed in the background, then given as is.
        *lock(&answer) = "stale";
        grids.warm((2, 1), |_| compute.clone());
        crate::yield_until("the warming landed", || {
            lock(&grids.entries)["clean"].flight.is_none()
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(
            grids
                .answer("clean", || (2, 1), compute.clone())
                .await
                .unwrap(),
            "stale"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2, "warmed: not computed again");
        // Warming again at the same generation computes nothing.
        grids.warm((2, 1), |_| compute.clone());
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
