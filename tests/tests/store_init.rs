//! `shale store init` against Garage: it creates a missing bucket, keeps
//! its lifecycle rule (read back), reports whether conditional writes
//! work, and runs again harmlessly.

use anyhow::ensure;
use shale_tests::{Backend, process::binary, unique};

fn init(store_args: &[String], extra: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = std::process::Command::new(binary())
        .arg("store")
        .arg("init")
        .args(store_args)
        .args(extra)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    ))
}

#[test]
fn store_init_creates_the_bucket_sets_the_lifecycle_and_checks_conditional_writes() -> anyhow::Result<()> {
    let Some(Backend::S3 { endpoint, region, access_key, secret_key, .. }) =
        Backend::all().into_iter().find(|b| b.name() == "s3")
    else {
        eprintln!("store init needs an S3 server: skipped (scripts/test.sh starts Garage)");
        return Ok(());
    };
    let bucket = unique("init").to_lowercase().replace('_', "-");
    let args = vec![
        format!("--store=s3://{bucket}/shale"),
        format!("--s3-endpoint={endpoint}"),
        format!("--s3-region={region}"),
        format!("--s3-access-key-id={access_key}"),
        format!("--s3-secret-access-key={secret_key}"),
        "--s3-allow-http".to_owned(),
    ];
    let (ok, out, err) = init(&args, &[])?;
    ensure!(ok, "first init failed: {out}{err}");
    ensure!(out.contains(&format!("bucket {bucket}: created")), "{out}");
    ensure!(out.contains("multipart uploads are aborted after 1 day(s) (verified)"), "{out}");
    let conditional = out.contains("conditional writes: work");
    ensure!(conditional || err.contains("lacks conditional writes"), "the check said nothing: {out}{err}");

    let (ok, out, err) = init(&args, &["--abort-multipart-after-days=3"])?;
    ensure!(ok && out.contains(&format!("bucket {bucket}: exists")), "second init: {out}{err}");
    ensure!(out.contains("after 3 day(s) (verified)"), "the rule is replaced, not duplicated: {out}");

    // asked to require them, a store without conditional writes fails clearly
    let (ok, out, err) = init(&args, &["--require-conditional-writes"])?;
    ensure!(
        ok == conditional,
        "--require-conditional-writes: {ok} but conditional={conditional}: {out}{err}"
    );
    if !ok {
        ensure!(err.contains("lacks conditional writes (If-"), "{err}");
    }
    // a URL that is not a store is refused with a message
    let (ok, _, err) = init(&["--store=ftp://x".to_owned()], &[])?;
    ensure!(!ok && err.contains("s3:// buckets and file:// folders"), "{err}");
    Ok(())
}
