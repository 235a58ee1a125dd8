//! `cairn worker run SPEC...`: the step of a Slurm job (docs/slurm.md). The
//! engine runs the specs (engine/src/slurm/worker.rs); here SIGTERM and
//! SIGINT (`scancel`) stop them as an interrupt stops a local build: the
//! running job gets SIGTERM, then SIGKILL after the grace, and no further
//! spec starts.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_engine::job::Children;

use crate::Failure;

pub fn run(specs: &[PathBuf]) -> Result<u8, Failure> {
    with_signals(|children| cairn_engine::slurm::run_specs(specs, children))
}

pub fn pull(dir: &std::path::Path, most: usize) -> Result<u8, Failure> {
    with_signals(|children| {
        let (_, errors) = cairn_engine::slurm::pull(dir, most, children);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    })
}

pub fn cached(url: &str, specs: &[String]) -> Result<u8, Failure> {
    let digests = specs
        .iter()
        .map(|spec| {
            spec.parse::<cairn_engine::ContentDigest>()
                .map_err(|error| Failure::usage(format!("SPEC_DIGEST {spec:?}: {error}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cache =
        cairn_app::remote::open_url(url).map_err(|error| Failure::usage(error.to_string()))?;
    let scratch = std::env::temp_dir();
    let ran = with_signals(|children| {
        cairn_engine::slurm::cached::run_batch(&*cache, &digests, &scratch, children)
    });
    // After its errors were printed there, if any.
    cairn_engine::slurm::remove_empty_node_log();
    ran
}

/// Runs `work` with SIGTERM and SIGINT interrupting its children (a
/// second one SIGKILLs them), and SIGCONT announcing the SIGTERM that
/// Slurm sends right after it (engine/src/slurm/worker.rs, `run_job`).
fn with_signals(
    work: impl FnOnce(&Children) -> Result<(), Vec<cairn_engine::slurm::worker::WorkerError>>,
) -> Result<u8, Failure> {
    let children = Arc::new(Children::default());
    // Set in the handler itself: the job, signalled before its worker,
    // may exit before a watching thread would have noted it.
    for (signal, flag) in [
        (signal_hook::consts::SIGCONT, children.stop_announced()),
        (signal_hook::consts::SIGTERM, children.stop_signalled()),
        (signal_hook::consts::SIGINT, children.stop_signalled()),
    ] {
        signal_hook::flag::register(signal, flag)
            .map_err(|error| Failure::store(format!("cannot watch for signals: {error}")))?;
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|error| Failure::store(format!("cannot watch for signals: {error}")))?;
    let handle = signals.handle();
    let watched = Arc::clone(&children);
    let watcher = std::thread::spawn(move || {
        let mut count = 0;
        for _ in signals.forever() {
            count += 1;
            if count == 1 {
                watched.interrupt();
            } else {
                watched.kill_now();
            }
        }
    });
    let result = work(&children);
    handle.close();
    let _ = watcher.join();
    match result {
        Ok(()) => Ok(0),
        Err(errors) => {
            for error in &errors[..errors.len() - 1] {
                crate::report::error_line(&error.to_string());
            }
            Err(Failure::store(
                errors.last().map(ToString::to_string).unwrap_or_default(),
            ))
        }
    }
}
