//! `shale store init`: what object_store cannot do for a new bucket, with
//! aws-sdk-s3 — create the bucket when it is missing, add a lifecycle rule
//! that aborts incomplete multipart uploads — and a check, through the same
//! object_store client the servers use, that conditional writes work.

use anyhow::{Context, bail};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    CreateBucketConfiguration, ExpirationStatus, LifecycleRule, LifecycleRuleFilter,
};
use bytes::Bytes;
use clap::{Args, Subcommand};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use shale_core::store::StoreMetrics;

use crate::args::StoreArgs;

#[derive(Debug, Args)]
pub struct StoreCmdArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Make a bucket ready for Shale: create it when missing, abort
    /// incomplete multipart uploads after a day, check conditional writes.
    Init(InitArgs),
}

#[derive(Debug, Args)]
struct InitArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Days after which an incomplete multipart upload is aborted.
    #[arg(long, default_value_t = 1)]
    abort_multipart_after_days: i32,
    /// Fail when the store lacks conditional writes (If-None-Match and
    /// If-Match on PUT) instead of warning.
    #[arg(long)]
    require_conditional_writes: bool,
}

/// An S3 error as its code and message when the service sent them.
fn s3_error<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(s) => format!("{}: {}", s.code().unwrap_or("error"), s.message().unwrap_or("no message")),
        None => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
    }
}

/// The id of Shale's lifecycle rule (other rules of the bucket are kept).
const RULE_ID: &str = "shale-abort-incomplete-multipart-uploads";

pub async fn run(args: StoreCmdArgs) -> anyhow::Result<()> {
    match args.command {
        StoreCommand::Init(args) => init(args).await,
    }
}

async fn init(args: InitArgs) -> anyhow::Result<()> {
    let Some(url) = args.store.store.clone() else {
        bail!("--store is required (s3://BUCKET/PREFIX or file://DIR)")
    };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, _prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("{url:?} names no bucket");
        }
        let s3 = client(&args.store)?;
        ensure_bucket(&s3, bucket, &region(&args.store)).await?;
        abort_incomplete_uploads(&s3, bucket, args.abort_multipart_after_days).await?;
    } else if !url.starts_with("file://") {
        bail!("--store {url:?}: shale store init prepares s3:// buckets and file:// folders");
    }
    match conditional_writes(&args.store, &url).await? {
        Ok(()) => println!("conditional writes: work (If-None-Match and If-Match)"),
        Err(lack) if args.require_conditional_writes => {
            bail!("{url} lacks conditional writes ({lack})")
        }
        Err(lack) => eprintln!(
            "warning: {url} lacks conditional writes ({lack}). Shale does not need them today; \
             stores that have them: AWS S3, MinIO, Cloudflare R2"
        ),
    }
    println!("{url} is ready for Shale");
    Ok(())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn region(store: &StoreArgs) -> String {
    store
        .s3_region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into())
}

/// An S3 client from the same flags and `AWS_*` variables the servers read.
fn client(store: &StoreArgs) -> anyhow::Result<aws_sdk_s3::Client> {
    let key = store.s3_access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
    let secret = store.s3_secret_access_key.clone().or_else(|| env("AWS_SECRET_ACCESS_KEY"));
    let (Some(key), Some(secret)) = (key, secret) else {
        bail!(
            "give --s3-access-key-id and --s3-secret-access-key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        );
    };
    let credentials = Credentials::new(key, secret, env("AWS_SESSION_TOKEN"), None, "shale");
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region(store)))
        .credentials_provider(credentials);
    if let Some(endpoint) = store.s3_endpoint.clone().or_else(|| env("AWS_ENDPOINT")) {
        if endpoint.starts_with("http://") && !store.s3_allow_http {
            bail!("{endpoint} is plain HTTP: pass --s3-allow-http");
        }
        // self-hosted stores (Garage, MinIO, Ceph) address buckets by path
        config = config.endpoint_url(endpoint).force_path_style(true);
    }
    Ok(aws_sdk_s3::Client::from_conf(config.build()))
}

async fn ensure_bucket(s3: &aws_sdk_s3::Client, bucket: &str, region: &str) -> anyhow::Result<()> {
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => {
            println!("bucket {bucket}: exists");
            return Ok(());
        }
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => {}
        Err(e) => bail!("checking bucket {bucket}: {}", s3_error(&e)),
    }
    let mut create = s3.create_bucket().bucket(bucket);
    // AWS wants the region named everywhere but us-east-1
    if region != "us-east-1" {
        let constraint = BucketLocationConstraint::from(region);
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder().location_constraint(constraint).build(),
        );
    }
    create.send().await.map_err(|e| anyhow::anyhow!("creating bucket {bucket}: {}", s3_error(&e)))?;
    println!("bucket {bucket}: created");
    Ok(())
}

async fn abort_incomplete_uploads(s3: &aws_sdk_s3::Client, bucket: &str, days: i32) -> anyhow::Result<()> {
    if days < 1 {
        bail!("--abort-multipart-after-days must be at least 1");
    }
    // the bucket's other rules stay: a put replaces the whole configuration
    let mut rules: Vec<LifecycleRule> =
        match s3.get_bucket_lifecycle_configuration().bucket(bucket).send().await {
            Ok(current) => current.rules.unwrap_or_default(),
            Err(e) => {
                let missing = e.as_service_error().and_then(|s| s.meta().code())
                    == Some("NoSuchLifecycleConfiguration");
                if !missing {
                    bail!("reading the lifecycle of {bucket}: {}", s3_error(&e));
                }
                Vec::new()
            }
        };
    rules.retain(|r| r.id() != Some(RULE_ID));
    rules.push(
        LifecycleRule::builder()
            .id(RULE_ID)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder().days_after_initiation(days).build(),
            )
            .build()
            .context("the lifecycle rule")?,
    );
    let config =
        BucketLifecycleConfiguration::builder().set_rules(Some(rules)).build().context("lifecycle")?;
    s3.put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(config)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("setting the lifecycle of {bucket}: {}", s3_error(&e)))?;
    // read it back: some stores accept rules they do not keep
    let kept = s3
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("reading back the lifecycle of {bucket}: {}", s3_error(&e)))?;
    let ours = kept.rules().iter().find(|r| r.id() == Some(RULE_ID));
    let after =
        ours.and_then(|r| r.abort_incomplete_multipart_upload()).and_then(|a| a.days_after_initiation());
    if after != Some(days) {
        bail!("{bucket} did not keep the lifecycle rule {RULE_ID}: {:?}", kept.rules());
    }
    println!("lifecycle: incomplete multipart uploads are aborted after {days} day(s) (verified)");
    Ok(())
}

/// Whether create-if-absent refuses an existing key and a put conditional
/// on an old version refuses a newer one; `Err` says which failed and how.
/// Shale does not depend on them today (segment keys are unique and every
/// commit goes through Raft), so their absence is reported, not fatal,
/// unless `--require-conditional-writes`.
async fn conditional_writes(args: &StoreArgs, url: &str) -> anyhow::Result<Result<(), String>> {
    let store = args.open(url, StoreMetrics::default())?;
    let key = object_store::path::Path::from(format!("_shale/init-probe-{}", ulid::Ulid::new()));
    let create = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
    let first = store.put_opts(&key, Bytes::from_static(b"1").into(), create.clone()).await?;
    let outcome = async {
        match store.put_opts(&key, Bytes::from_static(b"2").into(), create).await {
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Ok(_) => return Err("If-None-Match: a second create of one key succeeded".to_owned()),
            Err(e) => return Err(format!("If-None-Match: {e}")),
        }
        let version = UpdateVersion { e_tag: first.e_tag.clone(), version: first.version.clone() };
        let update = PutOptions { mode: PutMode::Update(version), ..PutOptions::default() };
        if let Err(e) = store.put_opts(&key, Bytes::from_static(b"3").into(), update.clone()).await {
            return Err(format!("If-Match: {e}"));
        }
        match store.put_opts(&key, Bytes::from_static(b"4").into(), update).await {
            Err(object_store::Error::Precondition { .. }) => Ok(()),
            Ok(_) => Err("If-Match: a put on a stale ETag succeeded".to_owned()),
            Err(e) => Err(format!("If-Match: {e}")),
        }
    }
    .await;
    if let Err(e) = store.delete(&key).await {
        eprintln!("warning: could not delete the probe {key}: {e}");
    }
    Ok(outcome)
}
