//! The JobRunner twin: spawns nothing. For each job it is asked to run it
//! records what ran ([`Ran`]: the job, its outputs, the variables it was
//! given) and calls the test's script, which writes the outputs into the
//! `CAIRN_OUTPUT_<i>` directories, fails (a non-zero exit code or an
//! error), or waits until the build is interrupted.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::Duration;

use super::{Children, Ended, JobRun, JobRunner};
use crate::refs::PartitionRef;

/// The script: the job's exit code (0 for success) or an error (the job
/// could not start).
type Script = dyn Fn(&ScriptedJob<'_>) -> io::Result<i32> + Send + Sync;

/// A [`JobRunner`] that runs a test's script instead of processes.
pub struct ScriptedRunner {
    script: Box<Script>,
    ran: Mutex<Vec<Ran>>,
}

/// One job the runner was asked to run (and started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub job: String,
    pub outputs: Vec<PartitionRef>,
    /// The variables it was given beyond the policy's (config env and the
    /// `CAIRN_*` ones), in order.
    pub env: Vec<(String, String)>,
}

/// What a script sees of one job.
pub struct ScriptedJob<'a> {
    pub job: &'a str,
    pub outputs: &'a [PartitionRef],
    /// Its variables beyond the policy's (config env, `CAIRN_*`).
    pub env: &'a [(String, String)],
    /// Where the real runner would run it (the graph file's directory).
    pub cwd: &'a Path,
    children: &'a Children,
}

impl ScriptedJob<'_> {
    /// The value of variable `name` (`CAIRN_OUTPUT_0`), if it was given.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }

    /// Output `index`'s directory (`CAIRN_OUTPUT_<index>`).
    pub fn output_dir(&self, index: usize) -> PathBuf {
        PathBuf::from(
            self.var(&format!("CAIRN_OUTPUT_{index}"))
                .expect("the job was given its output directory"),
        )
    }

    /// Input `index`'s path (`CAIRN_INPUT_<index>`).
    pub fn input(&self, index: usize) -> PathBuf {
        PathBuf::from(
            self.var(&format!("CAIRN_INPUT_{index}"))
                .expect("the job was given its input"),
        )
    }

    /// Writes `bytes` to `file` in output `index`'s directory.
    pub fn write(&self, index: usize, file: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.output_dir(index).join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)
    }

    /// Blocks until the build is interrupted (what a job that runs on
    /// does); returns the exit code of a job that got SIGTERM (143).
    pub fn wait_for_interrupt(&self) -> i32 {
        while self.children.sleep(Duration::from_secs(3600)) {}
        143
    }
}

impl ScriptedRunner {
    pub fn new(
        script: impl Fn(&ScriptedJob<'_>) -> io::Result<i32> + Send + Sync + 'static,
    ) -> Self {
        ScriptedRunner {
            script: Box::new(script),
            ran: Mutex::new(Vec::new()),
        }
    }

    /// Every job started so far, in the order they started.
    pub fn ran(&self) -> Vec<Ran> {
        self.ran.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets what ran (between two builds of one test).
    pub fn clear(&self) {
        self.ran.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The outputs of every job started so far, as strings, sorted: what a
    /// test compares with the set it expects to have run.
    pub fn ran_outputs(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .ran()
            .iter()
            .flat_map(|ran| ran.outputs.iter().map(ToString::to_string))
            .collect();
        out.sort();
        out
    }
}

impl JobRunner for ScriptedRunner {
    fn run(
        &self,
        job: &JobRun<'_>,
        children: &Children,
        poll: Option<&(dyn Fn() + Sync)>,
    ) -> io::Result<Ended> {
        // As the real runner: nothing starts once the build is interrupted.
        if children.is_interrupted() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the build was interrupted",
            ));
        }
        let invocation = &job.invocation;
        std::fs::File::create(invocation.stdout)?;
        std::fs::File::create(invocation.stderr)?;
        self.ran
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Ran {
                job: job.job.to_owned(),
                outputs: job.outputs.to_vec(),
                env: invocation.extra_env.to_vec(),
            });
        let scripted = ScriptedJob {
            job: job.job,
            outputs: job.outputs,
            env: invocation.extra_env,
            cwd: invocation.cwd,
            children,
        };
        let code = (self.script)(&scripted)?;
        if let Some(poll) = poll {
            poll();
        }
        Ok(Ended {
            status: exit_status(code),
            timed_out: false,
            escalated: false,
            stopped: false,
        })
    }
}

/// The wait status of a process that exited with `code`.
fn exit_status(code: i32) -> ExitStatus {
    ExitStatus::from_raw((code & 0xff) << 8)
}
