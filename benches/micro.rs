//! Micro benchmarks (criterion): `cargo bench --bench micro [FILTER]`.
//! CI only compiles them (`cargo bench --no-run`), so they cannot rot.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use cairn_engine::config::{
    ConfigureError, DataDep, DepKind, JobConfig, bindings_of, declarative_config,
};
use cairn_engine::digest::ContentDigest;
use cairn_engine::graph::{Graph, Job};
use cairn_engine::key::{KeyInputs, OutputIdentity, action_key};
use cairn_engine::plan::{Configurer, plan};
use cairn_engine::ports::{BlobStore, EventLog};
use cairn_engine::record::{EventKind, ProgramRecord};
use cairn_engine::refs::PartitionRef;
use cairn_store::{OpenMode, Store};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn refs(c: &mut Criterion) {
    let mut group = c.benchmark_group("refs");
    group.bench_function("parse", |b| {
        b.iter(|| PartitionRef::parse(black_box("clean/date=2024-01-31/station=S0137")).unwrap());
    });
    group.finish();
}

fn config(inputs: usize) -> (JobConfig, Vec<(PartitionRef, ContentDigest)>) {
    let digests: Vec<(PartitionRef, ContentDigest)> = (0..inputs)
        .map(|i| {
            let partition =
                PartitionRef::parse(&format!("clean/date=2024-01-31/station=S{i:04}")).unwrap();
            (partition, ContentDigest::of(&i.to_le_bytes()))
        })
        .collect();
    let config = JobConfig {
        outputs: vec![PartitionRef::parse("daily/date=2024-01-31").unwrap()].into(),
        inputs: digests
            .iter()
            .map(|(partition, _)| DataDep {
                partition: partition.clone(),
                dep: DepKind::Materialize,
            })
            .collect(),
        args: vec!["2024-01-31".into()],
        env: BTreeMap::new(),
    };
    (config, digests)
}

fn keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("action_key");
    let env = vec![
        ("HOME".to_owned(), "/root".to_owned()),
        ("LANG".to_owned(), "C".to_owned()),
    ];
    let program = ProgramRecord {
        path: "/usr/bin/sh".to_owned(),
        digest: Some(ContentDigest::of(b"sh")),
    };
    let datasets = vec![("daily".to_owned(), OutputIdentity::Major(1))];
    let run = vec![
        "sh".to_owned(),
        "jobs/daily.sh".to_owned(),
        "run".to_owned(),
    ];
    for inputs in [1, 30, 1370] {
        let (config, digests) = config(inputs);
        group.bench_function(format!("{inputs} inputs"), |b| {
            b.iter(|| {
                action_key(black_box(&KeyInputs {
                    job: "daily",
                    run: &run,
                    program: &program,
                    config: &config,
                    passed_env: &env,
                    output_datasets: &datasets,
                    inputs: &digests,
                }))
            });
        });
    }
    group.finish();
}

/// Declarative jobs configured in memory: the planner alone, no process.
struct InMemory;

impl Configurer for InMemory {
    fn configure(
        &self,
        job: &Job,
        refs: &[PartitionRef],
        _wave: &[PartitionRef],
    ) -> Result<Vec<JobConfig>, ConfigureError> {
        refs.iter()
            .map(|partition| {
                declarative_config(job, &bindings_of(job, partition)?, &Default::default())
            })
            .collect()
    }
}

fn planning(c: &mut Criterion) {
    // 100 days x 500 stations x 2 jobs = 100,000 actions.
    let text = r#"
[datasets.inputs]
source = "inputs/{date}/{station}.txt"
[datasets.raw]
version = "1.0.0"
[datasets.clean]
version = "1.0.0"
[dimensions.date]
start = "2024-01-01"
end = "2024-04-09"
[dimensions.station]
values = [STATIONS]
[jobs.raw]
outputs = ["raw/date={date}/station={station}"]
inputs = ["inputs/date={date}/station={station}"]
run = ["sh", "-c", "cp \"$CAIRN_IN\" \"$CAIRN_OUT/reviews.csv\""]
[jobs.clean]
outputs = ["clean/date={date}/station={station}"]
inputs = ["raw/date={date}/station={station}"]
run = ["sh", "jobs/clean.sh"]
args = ["{station}"]
"#;
    let stations: Vec<String> = (1..=500).map(|s| format!("\"S{s:03}\"")).collect();
    let text = text.replace("STATIONS", &stations.join(", "));
    let graph = Graph::parse(&text, Path::new("cairn.toml"), Path::new("/bench")).unwrap();
    let requested = graph.all_partitions().unwrap();
    let mut group = c.benchmark_group("plan");
    group.sample_size(10);
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("100k actions", |b| {
        b.iter(|| {
            let plan = plan(&graph, black_box(&requested), &InMemory).unwrap();
            assert_eq!(plan.actions.len(), 100_000);
            plan
        });
    });
    group.finish();
}

fn events(count: usize) -> Vec<EventKind> {
    (0..count)
        .map(|i| EventKind::PartitionMaterialized {
            partition: PartitionRef::parse(&format!("clean/date=2024-01-01/station=S{i:05}"))
                .unwrap(),
            digest: ContentDigest::of(&i.to_le_bytes()),
            key: cairn_engine::digest::ActionKey(*ContentDigest::of(&[1, 2]).as_bytes()),
        })
        .collect()
}

fn open_store(dir: &Path) -> Store {
    Store::open(
        &dir.join(".cairn"),
        OpenMode::Write { wait: false },
        &mut |_| {},
    )
    .unwrap()
}

fn catalog(c: &mut Criterion) {
    let mut group = c.benchmark_group("catalog");
    group.sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    for batch in [100, 1000] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("commit {batch} events"), |b| {
            b.iter_batched(
                || events(batch),
                |events| store.catalog().append(1, events, Vec::new()).unwrap(),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();

    // Replay: decode every event of a 10,000-event log.
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    store
        .catalog()
        .append(1, events(10_000), Vec::new())
        .unwrap();
    let mut group = c.benchmark_group("events");
    group.sample_size(10);
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("scan 10k", |b| {
        b.iter(|| {
            let mut count = 0;
            store
                .catalog()
                .scan_events(1, &mut |event| {
                    black_box(event);
                    count += 1;
                    true
                })
                .unwrap();
            count
        });
    });
    group.bench_function("replay check 10k", |b| {
        b.iter(|| store.catalog().replay_check().unwrap());
    });
    group.finish();
}

fn cas(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut group = c.benchmark_group("cas");
    group.sample_size(10);
    for size in [4 * 1024, 1024 * 1024, 64 * 1024 * 1024] {
        let file = dir.path().join(format!("input-{size}"));
        let mut bytes = vec![0u8; size];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
        }
        std::fs::write(&file, &bytes).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        // The same content each time: hashing and the presence check, the
        // rewrite is skipped (as for every unchanged output).
        group.bench_function(format!("put_file {size} B"), |b| {
            b.iter(|| store.blobs().put_file(&file).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, refs, keys, planning, catalog, cas);
criterion_main!(benches);
