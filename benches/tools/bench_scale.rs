//! Helpers of `benches/compare.sh` for the scale benchmarks (not a test):
//!
//! - `bench-scale populate GRAPH`: records every partition of the graph as
//!   built, through the library — keys computed by the engine's own recipe
//!   (`Context::key`), a tiny data file written for every produced
//!   partition (one the podcast fixture's jobs accept as their input, so
//!   that a changed input can be built on top: `podcast_output`), `ActionSucceeded` and `PartitionMaterialized` appended in
//!   large batches, and the stat cache filled (after a second, so no entry is
//!   racy). Jobs never run and no blob is written (a no-op check never reads
//!   blobs). Afterwards `cairn build --dry-run` finds everything up to date.
//! - `bench-scale ingest [--init] [--sync] [--copy] STORE FILE`: stores FILE
//!   in the blob CAS of the store at STORE the way a build stores a job's
//!   output (`adopt_file`: a large FILE is hard-linked into the store and
//!   made read-only, so give each run a fresh copy), or with `--copy` the
//!   way `put_file` does (copied, FILE untouched). `--init` only creates the
//!   store; `--sync` also makes the blob durable.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_engine::action::{Context, ResolvedInput, now_ms};
use cairn_engine::config::CachingConfigurer;
use cairn_engine::digest::ContentDigest;
use cairn_engine::exec::code_digests;
use cairn_engine::graph::Graph;
use cairn_engine::observe::{self, Observer, StatUpdate};
use cairn_engine::plan::{InputSource, plan};
use cairn_engine::ports::{BlobStore, EventLog};
use cairn_engine::record::{
    BuildCounts, EventKind, FileEntry, InputRecord, Manifest, OutputRecord, partition_digest,
};
use cairn_engine::runner::{Children, JobEnvironment, ProcessConfigurer};
use cairn_store::{OpenMode, Store};
use rayon::prelude::*;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("populate") if args.len() == 2 => populate(Path::new(&args[1])),
        Some("ingest") => {
            let flags: Vec<&str> = args[1..]
                .iter()
                .map(String::as_str)
                .filter(|a| a.starts_with("--"))
                .collect();
            let rest: Vec<&str> = args[1..]
                .iter()
                .map(String::as_str)
                .filter(|a| !a.starts_with("--"))
                .collect();
            let [store, file] = rest[..] else {
                return Err(
                    "usage: bench-scale ingest [--init] [--sync] [--copy] STORE FILE".into(),
                );
            };
            if let Some(unknown) = flags
                .iter()
                .find(|flag| !["--init", "--sync", "--copy"].contains(flag))
            {
                return Err(format!("bench-scale ingest: unknown option {unknown}").into());
            }
            ingest(
                Path::new(store),
                Path::new(file),
                flags.contains(&"--init"),
                flags.contains(&"--sync"),
                flags.contains(&"--copy"),
            )
        }
        _ => Err(
            "usage: bench-scale populate GRAPH | ingest [--init] [--sync] [--copy] STORE FILE"
                .into(),
        ),
    }
}

fn ingest(store: &Path, file: &Path, init: bool, sync: bool, copy: bool) -> Result<(), Error> {
    let store = Store::open(store, OpenMode::Write { wait: false }, &mut |_| {})?;
    if init {
        return Ok(());
    }
    let clock = Instant::now();
    let digest = if copy {
        store.blobs().put_file(file)?
    } else {
        store.blobs().adopt_file(file)?
    };
    if sync {
        store.blobs().sync()?;
    }
    let elapsed = clock.elapsed();
    #[expect(clippy::print_stdout, reason = "a benchmark tool reports on stdout")]
    {
        println!("{digest} {:.3} s", elapsed.as_secs_f64());
    }
    Ok(())
}

fn note(message: &str) {
    #[expect(clippy::print_stderr, reason = "a benchmark tool reports progress")]
    {
        eprintln!("bench-scale: {message}");
    }
}

/// The file a podcast fixture's job writes for output `partition`, with
/// contents its downstream jobs accept, so that a populated store can be
/// built further by the real jobs (an input changed, and its raw, clean
/// and daily partitions run again): `raw` and `clean` write
/// `reviews.csv` (`episode,rating` and `station,episode,rating` lines),
/// `daily` writes `summary.csv`.
fn podcast_output(partition: &str) -> (&'static str, String) {
    let station = partition
        .rsplit_once("station=")
        .map_or("S", |(_, station)| station);
    match partition
        .split_once('/')
        .map_or(partition, |(dataset, _)| dataset)
    {
        "daily" => (
            "summary.csv",
            "station,reviews,mean_rating\nALL,0,0.000\n".to_owned(),
        ),
        "clean" => ("reviews.csv", format!("{station},{partition},3\n")),
        _ => ("reviews.csv", format!("{partition},3\n")),
    }
}

fn populate(graph_file: &Path) -> Result<(), Error> {
    let clock = Instant::now();
    let graph_file = std::path::absolute(graph_file)?;
    let graph = Graph::load(&graph_file)?;
    let environment = JobEnvironment::from_process(&graph.env);
    let refs = graph.all_partitions()?;
    let process = ProcessConfigurer {
        graph: &graph,
        environment: &environment,
    };
    // Caches the configure answers as a build would, so the no-op check
    // that follows spawns no configure process either.
    let configurer = CachingConfigurer {
        inner: &process,
        graph: &graph,
        passed_env: &environment.passed,
        dir: graph.root.join(".cairn").join("configure"),
        write: true,
    };
    let plan = plan(&graph, &refs, &configurer)?;
    note(&format!(
        "planned {} actions, {} sources in {:.1} s",
        plan.actions.len(),
        plan.sources.len(),
        clock.elapsed().as_secs_f64()
    ));
    let store = Store::open(
        &graph.root.join(".cairn"),
        OpenMode::Write { wait: false },
        &mut |_| {},
    )?;
    let catalog = store.catalog();
    let build = catalog.next_build_id()?;
    let children = Children::default();
    let data_root = graph.root.join("data");
    let context = Context {
        graph: &graph,
        data_root: data_root.clone(),
        staging_root: data_root.join(".cairn-tmp"),
        catalog,
        blobs: store.blobs(),
        environment: &environment,
        children: &children,
        runner: &cairn_engine::local::LocalRunner,
        build,
        retries: None,
        real_dirs: Default::default(),
        programs: Default::default(),
        code_changes: Default::default(),
        in_flight: None,
        remote: None,
    };
    let observer = Observer::new(catalog);
    let mut updates: Vec<StatUpdate> = Vec::new();
    let codes = code_digests(
        &graph,
        plan.actions.iter().map(|a| &*a.job),
        &observer,
        &mut updates,
    )?;
    let sources: Vec<(ContentDigest, Vec<StatUpdate>)> = plan
        .sources
        .par_iter()
        .map(|source| {
            let observer = Observer::new(catalog);
            let mut updates = Vec::new();
            let (digest, _) = observer
                .partition(&source.path, &mut updates)
                .expect("source readable")
                .expect("source exists");
            (digest, updates)
        })
        .collect();
    let mut source_digests = Vec::with_capacity(sources.len());
    for (digest, more) in sources {
        source_digests.push(digest);
        updates.extend(more);
    }
    catalog.append(
        build,
        vec![
            EventKind::BuildRequested {
                requested: Vec::new(),
                command: "bench-scale populate".into(),
                reason: None,
                submission: None,
            },
            EventKind::Planned {
                actions: plan.actions.len() as u64,
                sources: plan.sources.len() as u64,
            },
        ],
        std::mem::take(&mut updates),
    )?;
    note(&format!(
        "observed the sources in {:.1} s",
        clock.elapsed().as_secs_f64()
    ));

    // Keys in topological order; the data files are written as we go.
    let mut outputs: Vec<Option<Vec<ContentDigest>>> = vec![None; plan.actions.len()];
    let mut events = Vec::new();
    let mut written: Vec<(PathBuf, ContentDigest)> = Vec::new();
    for &index in &plan.order {
        let action = &plan.actions[index];
        let inputs: Vec<ResolvedInput> = action
            .config
            .inputs
            .iter()
            .zip(&action.inputs)
            .map(|(dep, source)| match *source {
                InputSource::Source { source } => ResolvedInput {
                    partition: dep.partition.clone(),
                    digest: source_digests[source],
                    path: plan.sources[source].path.clone(),
                },
                InputSource::Action { action, output } => ResolvedInput {
                    partition: dep.partition.clone(),
                    digest: outputs[action].as_ref().expect("topological order")[output],
                    path: context.data_path(&dep.partition),
                },
            })
            .collect();
        let code = codes.get(&*action.job).copied().flatten();
        let key = context.key(action, &inputs, code);
        let mut records = Vec::new();
        for partition in &action.config.outputs {
            let directory = context.data_path(partition);
            std::fs::create_dir_all(&directory)?;
            let (name, bytes) = podcast_output(partition.as_str());
            let path = directory.join(name);
            std::fs::write(&path, &bytes)?;
            let digest = ContentDigest::of(bytes.as_bytes());
            written.push((path, digest));
            let files = vec![FileEntry {
                path: name.into(),
                executable: false,
                size: bytes.len() as u64,
                digest,
                mode: 0o644,
            }];
            records.push(OutputRecord {
                partition: partition.clone(),
                digest: partition_digest(&files),
                files,
            });
        }
        outputs[index] = Some(records.iter().map(|record| record.digest).collect());
        let versions = action
            .config
            .outputs
            .iter()
            .filter_map(|output| {
                let version = graph.datasets.get(output.dataset())?.version.as_ref()?;
                Some((output.dataset().to_owned(), version.to_string()))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let now = now_ms();
        let materialized: Vec<EventKind> = records
            .iter()
            .map(|record| EventKind::PartitionMaterialized {
                partition: record.partition.clone(),
                digest: record.digest,
                key,
            })
            .collect();
        events.push(EventKind::ActionSucceeded {
            manifest: Manifest {
                key,
                job: action.job.to_string(),
                outputs: records,
                inputs: inputs
                    .iter()
                    .map(|input| InputRecord {
                        partition: input.partition.clone(),
                        digest: input.digest,
                    })
                    .collect(),
                code_digest: code,
                versions,
                build,
                started_ms: now,
                finished_ms: now,
                stdout: None,
                stderr: None,
                command: None,
            },
        });
        events.extend(materialized);
        if events.len() >= 100_000 {
            catalog.append(build, std::mem::take(&mut events), Vec::new())?;
        }
    }
    let counts = BuildCounts {
        executed: plan.actions.len() as u64,
        ..BuildCounts::default()
    };
    events.push(EventKind::BuildFinished {
        counts,
        interrupted: false,
    });
    catalog.append(build, events, Vec::new())?;
    note(&format!(
        "recorded {} actions in {:.1} s",
        plan.actions.len(),
        clock.elapsed().as_secs_f64()
    ));

    // The stat cache, once the files are old enough not to be racy.
    std::thread::sleep(Duration::from_millis(1100));
    let recorded_ns = cairn_engine::observe::now_ns();
    let mut stats = Vec::with_capacity(100_000);
    for (path, digest) in written {
        let metadata = std::fs::symlink_metadata(&path)?;
        stats.push((
            path.to_string_lossy().into_owned(),
            observe::stat_entry(&metadata, recorded_ns, digest),
        ));
        // And the partition directory's listing (one file), as a no-op
        // build records it.
        if let (Some(directory), Some(name)) = (path.parent(), path.file_name()) {
            let metadata = std::fs::symlink_metadata(directory)?;
            let name = name.to_string_lossy();
            let listing = observe::listing_digest(&mut [(&*name, false)]);
            stats.push((
                observe::directory_key(directory),
                observe::stat_entry(&metadata, recorded_ns, listing),
            ));
        }
        if stats.len() >= 100_000 {
            catalog.append(build, Vec::new(), std::mem::take(&mut stats))?;
        }
    }
    catalog.append(build, Vec::new(), stats)?;
    store.blobs().sync()?;
    note(&format!("done in {:.1} s", clock.elapsed().as_secs_f64()));
    Ok(())
}
