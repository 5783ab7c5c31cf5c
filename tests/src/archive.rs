//! Looking at a test run's bucket, and reading its Parquet archive with
//! readers nobody on this project wrote (DuckDB and pyarrow, from PyPI,
//! installed by the test command; `SHALE_PYTHON` names the interpreter).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::TryStreamExt;
use object_store::ObjectStore;
use serde_json::Value;
use shale_core::store::{S3Options, open_raw};

use crate::Backend;

/// How to reach the backend's S3 server (nothing for the local disk).
fn s3_options(backend: &Backend) -> S3Options {
    match backend {
        Backend::Local => S3Options::default(),
        Backend::S3 { endpoint, region, access_key, secret_key, .. } => S3Options {
            endpoint: Some(endpoint.clone()),
            region: Some(region.clone()),
            access_key_id: Some(access_key.clone()),
            secret_access_key: Some(secret_key.clone()),
            allow_http: true,
            sign_payload: false,
        },
    }
}

/// The bucket (or folder) `shale dev` on `data_dir` with `prefix` writes to.
pub fn open_store(backend: &Backend, data_dir: &Path, prefix: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let url = match backend {
        Backend::Local => format!("file://{}", data_dir.join("objects").display()),
        Backend::S3 { url, .. } => format!("{url}/{prefix}"),
    };
    Ok(open_raw(&url, &s3_options(backend))?)
}

/// The store flags among a process's flags (`--store=…`, `--s3-…`).
pub fn store_flags(args: &[String]) -> Vec<String> {
    args.iter().filter(|a| a.starts_with("--store=") || a.starts_with("--s3-")).cloned().collect()
}

/// The bucket a process started with `flags` writes to.
pub fn open_flagged(backend: &Backend, flags: &[String]) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let url = flags.iter().find_map(|a| a.strip_prefix("--store=")).context("no --store flag")?;
    Ok(open_raw(url, &s3_options(backend))?)
}

/// Keys under `prefix`, sorted.
pub async fn list(store: &dyn ObjectStore, prefix: &str) -> anyhow::Result<Vec<String>> {
    let prefix = object_store::path::Path::from(prefix);
    let mut keys: Vec<String> =
        store.list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect().await?;
    keys.sort();
    Ok(keys)
}

/// The interpreter that has duckdb and pyarrow, if the test command installed it.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("SHALE_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "archive readers skipped: SHALE_PYTHON is not set (scripts/test.sh installs duckdb and pyarrow and sets it)"
            );
            None
        }
    }
}

/// Reads the topic's archive with `engine` (`duckdb` or `pyarrow`): one
/// JSON object per record, ordered by partition and offset (see
/// `tests/python/read_archive.py`).
pub async fn read_archive(
    python: &Path,
    engine: &str,
    backend: &Backend,
    data_dir: &Path,
    prefix: &str,
    topic: &str,
) -> anyhow::Result<Vec<Value>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/read_archive.py");
    let mut command = tokio::process::Command::new(python);
    command.arg(script).arg(format!("--engine={engine}")).arg(format!("--topic={topic}"));
    match backend {
        Backend::Local => command.arg(format!("--root={}", data_dir.join("objects").display())),
        Backend::S3 { url, endpoint, region, access_key, secret_key } => command
            .arg(format!("--root={url}/{prefix}"))
            .arg(format!("--endpoint={}", endpoint.trim_start_matches("http://")))
            .arg(format!("--region={region}"))
            .arg(format!("--key-id={access_key}"))
            .arg(format!("--secret={secret_key}")),
    };
    let out = command.output().await.with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("{engine} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rows: Value = serde_json::from_slice(&out.stdout).context("reader output")?;
    Ok(rows.as_array().cloned().unwrap_or_default())
}
