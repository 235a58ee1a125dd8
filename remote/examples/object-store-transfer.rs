//! What `object_store` itself reaches against a server: the baseline of
//! the remote cache's large-blob rows (issue 24, benches/remote_cache.sh).
//!
//! `object-store-transfer URL FILE NAME OUT` puts FILE under NAME at URL
//! (an `http://host:port/prefix` cache, as `cairn build --remote-cache`
//! takes) the way a user of `object_store` would over HTTP, whose PUT
//! takes its body whole: the file read into memory, then one `put`. Then
//! it gets NAME back into OUT, chunk by chunk, and syncs OUT. It prints
//! one line of seconds: `read PUT GET sync`. No timeout, no retry, no
//! check: the transfer alone, and the sync that makes a download durable
//! (which cairn's restore does before it records it).

use std::io::Write;
use std::time::Instant;

use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, file, name, out] = args.as_slice() else {
        return Err("usage: object-store-transfer URL FILE NAME OUT".into());
    };
    let (base, prefix) = split(url)?;
    let store = object_store::http::HttpBuilder::new()
        .with_url(base)
        .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
        .build()?;
    let path = Path::from(format!("{prefix}{name}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let started = Instant::now();
    let body = bytes::Bytes::from(std::fs::read(file)?);
    let read = started.elapsed();
    let started = Instant::now();
    runtime.block_on(store.put(&path, body.into()))?;
    let put = started.elapsed();

    let started = Instant::now();
    let mut written = std::fs::File::create(out)?;
    runtime.block_on(async {
        let mut stream = store.get(&path).await?.into_stream();
        while let Some(chunk) = stream.next().await {
            written.write_all(&chunk?)?;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let get = started.elapsed();
    let started = Instant::now();
    written.sync_all()?;
    let sync = started.elapsed();
    writeln!(
        std::io::stdout().lock(),
        "{:.3} {:.3} {:.3} {:.3}",
        read.as_secs_f64(),
        put.as_secs_f64(),
        get.as_secs_f64(),
        sync.as_secs_f64()
    )?;
    Ok(())
}

/// `http://host:port/prefix` as the store's base URL and the names'
/// prefix (ending in `/` when not empty).
fn split(url: &str) -> Result<(String, String), Box<dyn std::error::Error>> {
    let (scheme, rest) = url.split_once("://").ok_or("URL: not a URL")?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("URL: {scheme}:// is not an HTTP cache").into());
    }
    let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((format!("{scheme}://{host}"), prefix))
}
