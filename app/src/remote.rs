//! The shared remote cache of a build (docs/remote-cache.md): which one,
//! from the graph file's `[cache]` and the command line's overrides, opened
//! through `cairn-remote` for the engine (`cairn_engine::remote`).

use cairn_engine::graph::{CacheMode, check_cache_url};
use cairn_engine::remote::Remote;

use crate::{AppError, Workspace};

pub use crate::workspace::{RemoteChoice, RemoteMode};

/// The remote cache at `url` as a bare port (a cache-mode Slurm worker's,
/// docs/slurm.md): credentials from this process's environment.
pub fn open_url(url: &str) -> Result<Box<dyn cairn_engine::ports::RemoteCache>, AppError> {
    let url = url.trim_end_matches('/');
    check_cache_url(url).map_err(AppError::Usage)?;
    let cache =
        cairn_remote::open(url, None).map_err(|error| AppError::Usage(error.to_string()))?;
    Ok(Box::new(cache))
}

/// The remote cache the Slurm workers of a build of `workspace` use
/// without a shared filesystem (`[executor] data = "cache"`): the build's
/// own (`--remote-cache`, else `[cache] url`), with its URL. A usage error
/// when there is none or it is off.
pub fn open_for_workers(
    workspace: &Workspace,
) -> Result<(String, Box<dyn cairn_engine::ports::RemoteCache>), AppError> {
    let choice = &workspace.remote_cache;
    let config = workspace.graph.cache.as_ref();
    let url = match (&choice.url, config) {
        _ if choice.mode == Some(RemoteMode::Off) => None,
        (Some(url), _) => Some(url.trim_end_matches('/').to_owned()),
        (None, Some(config)) => Some(config.url.clone()),
        (None, None) => None,
    };
    let Some(url) = url else {
        return Err(AppError::Usage(
            "executor.data = \"cache\" needs a remote cache: [cache] url in the graph file or --remote-cache URL (and not --remote-cache-mode off)".to_owned(),
        ));
    };
    check_cache_url(&url)
        .map_err(|message| AppError::Usage(format!("--remote-cache: {message}")))?;
    let timeout = config.and_then(|config| config.timeout);
    let cache = cairn_remote::open(&url, timeout)
        .map_err(|error| AppError::Usage(format!("executor.data = \"cache\": {error}")))?;
    Ok((url, Box::new(cache)))
}

/// The remote cache a build of `workspace` uses, opened; `None` when none
/// is configured or it is off. A bad URL is a usage error naming where it
/// came from: `cairn.toml:LINE: cache.url: ...` or `--remote-cache: ...`.
pub fn open(workspace: &Workspace) -> Result<Option<Remote>, AppError> {
    let choice = &workspace.remote_cache;
    if choice.mode == Some(RemoteMode::Off) {
        return Ok(None);
    }
    let config = workspace.graph.cache.as_ref();
    let (url, origin) = match (&choice.url, config) {
        (Some(url), _) => {
            let url = url.trim_end_matches('/').to_owned();
            check_cache_url(&url)
                .map_err(|message| AppError::Usage(format!("--remote-cache: {message}")))?;
            (url, "--remote-cache".to_owned())
        }
        (None, Some(config)) => (config.url.clone(), format!("{}: cache.url", config.at)),
        (None, None) => {
            if choice.mode.is_some() {
                return Err(AppError::Usage(
                    "--remote-cache-mode: no remote cache is configured (give --remote-cache URL or [cache] url in the graph file)".to_owned(),
                ));
            }
            return Ok(None);
        }
    };
    let write = match choice.mode {
        Some(mode) => mode == RemoteMode::Write,
        None => config.is_none_or(|config| config.mode == CacheMode::ReadWrite),
    };
    let timeout = config.and_then(|config| config.timeout);
    let cache = cairn_remote::open(&url, timeout)
        .map_err(|error| AppError::Usage(format!("{origin}: {error}")))?;
    let notes = workspace.notes_handle();
    Ok(Some(Remote::new(
        Box::new(cache),
        write,
        !choice.no_upload_wait,
        Box::new(move |message| notes.warning(message)),
    )))
}
