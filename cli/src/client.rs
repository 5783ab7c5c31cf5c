//! Client commands against a running Shale (`--url`).

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

const DEFAULT_URL: &str = "http://127.0.0.1:7070";

#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Shale gateway URL.
    #[arg(long, env = "SHALE_URL", default_value = DEFAULT_URL, global = true)]
    url: String,
    /// Bearer token for the API (see `shale token create`).
    #[arg(long, env = "SHALE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Trust this CA certificate (PEM) for an https:// gateway, besides the
    /// system's roots.
    #[arg(long, env = "SHALE_CA_CERT", global = true)]
    ca_cert: Option<std::path::PathBuf>,
}

impl Target {
    /// An HTTP client that presents the token, if any, on every request.
    pub fn http(&self) -> anyhow::Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &self.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .context("the token has characters a header cannot carry")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder().default_headers(headers);
        if let Some(pem) = crate::args::read_ca(self.ca_cert.as_deref())? {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(builder.build()?)
    }

    pub fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token; prints it once (needs admin on *).
    Create {
        name: String,
        /// OPERATION:TOPIC, e.g. produce:orders, consume:orders*, admin:*
        /// (operations: produce, consume, describe, admin). Repeatable.
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
    },
    /// List tokens: names, grants, creation times (never the tokens).
    List,
    /// Revoke a token by name.
    Revoke { name: String },
}

/// `OPERATION:TOPIC` as a grant object.
fn parse_grant(text: &str) -> anyhow::Result<Value> {
    let (operation, topic) =
        text.split_once(':').with_context(|| format!("grant {text:?} is not OPERATION:TOPIC"))?;
    Ok(json!({"operation": operation, "topic": topic}))
}

pub async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let http = args.target.http()?;
    let base = args.target.base();
    match args.command {
        TokenCommand::Create { name, grants } => {
            let grants = grants.iter().map(|g| parse_grant(g)).collect::<anyhow::Result<Vec<_>>>()?;
            let body = json!({"name": name, "grants": grants});
            let created = send(http.post(format!("{base}/v1/tokens")).json(&body)).await?;
            println!("{}", created["token"].as_str().unwrap_or_default());
            eprintln!("created token {name}: keep it now, it is not shown again");
        }
        TokenCommand::List => {
            let list = send(http.get(format!("{base}/v1/tokens"))).await?;
            for t in list["tokens"].as_array().into_iter().flatten() {
                let grants: Vec<String> = t["grants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| {
                        format!(
                            "{}:{}",
                            g["operation"].as_str().unwrap_or("?"),
                            g["topic"].as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                println!("{}\t{}", t["name"].as_str().unwrap_or("?"), grants.join(","));
            }
        }
        TokenCommand::Revoke { name } => {
            send(http.delete(format!("{base}/v1/tokens/{name}"))).await?;
            eprintln!("revoked token {name}");
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(subcommand)]
    command: TopicCommand,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, short, env = "SHALE_PARTITIONS", default_value_t = 1)]
        partitions: u32,
        /// Delete records older than this many milliseconds.
        #[arg(long, env = "SHALE_RETENTION_MS")]
        retention_ms: Option<u64>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions and offsets as JSON.
    Describe { name: String },
    /// Delete a topic.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    topic: String,
    /// Split each line at the first SEP into key and value.
    #[arg(long, env = "SHALE_KEY_SEPARATOR")]
    key_separator: Option<String>,
    /// Send every record to this partition.
    #[arg(long, env = "SHALE_PARTITION")]
    partition: Option<u32>,
    /// Records per request.
    #[arg(long, env = "SHALE_BATCH", default_value_t = 500)]
    batch: usize,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    #[arg(long, short, env = "SHALE_PARTITION", default_value_t = 0)]
    partition: u32,
    /// earliest, latest, an offset, or timestamp:TIME (RFC 3339, e.g.
    /// timestamp:2026-11-25T10:00:00Z, or milliseconds since the epoch): the
    /// first record at or after it. With --group: where partitions without
    /// a committed offset start (earliest or latest).
    #[arg(long, env = "SHALE_FROM", default_value = "earliest")]
    pub from: String,
    /// Consume as a member of this group: every partition the group assigns
    /// this member, committing as it goes.
    #[arg(long, env = "SHALE_GROUP")]
    pub group: Option<String>,
    /// The member id in the group (default: a new random one).
    #[arg(long, env = "SHALE_MEMBER_ID", requires = "group")]
    pub member_id: Option<String>,
    /// Static membership: this member's stable instance id.
    #[arg(long, env = "SHALE_INSTANCE_ID", requires = "group")]
    pub instance_id: Option<String>,
    /// A member not heard from for this long loses its partitions.
    #[arg(long, env = "SHALE_SESSION_TIMEOUT_MS", default_value_t = 30_000)]
    pub session_timeout_ms: u64,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long, env = "SHALE_FOLLOW")]
    pub follow: bool,
    /// Print KEY SEP VALUE instead of only the value.
    #[arg(long, env = "SHALE_KEY_SEPARATOR")]
    pub key_separator: Option<String>,
    /// Print offsets before each record (with --group: topic, partition
    /// and offset).
    #[arg(long)]
    pub print_offsets: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub max_records: Option<u64>,
    #[command(flatten)]
    pub target: Target,
}

/// Milliseconds since the epoch from `timestamp:TIME` (RFC 3339 or ms).
pub fn parse_timestamp(from: &str) -> anyhow::Result<Option<i64>> {
    let Some(time) = from.strip_prefix("timestamp:") else { return Ok(None) };
    if let Ok(ms) = time.parse::<i64>() {
        return Ok(Some(ms));
    }
    let at = humantime::parse_rfc3339_weak(time)
        .with_context(|| format!("{time:?} is neither RFC 3339 (2026-11-25T10:00:00Z) nor milliseconds"))?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).context("a time before 1970")?.as_millis();
    Ok(Some(ms as i64))
}

/// Sends a request; returns the JSON body, or the API error as an error.
pub async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await.context("cannot reach shale")?;
    let status = response.status();
    let body = response.text().await?;
    let value: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    };
    if !status.is_success() {
        let code = value["error_code"].as_str().unwrap_or("error");
        let message = value["message"].as_str().unwrap_or("");
        bail!("{status}: {code}: {message}");
    }
    Ok(value)
}

pub async fn topic(args: TopicArgs) -> anyhow::Result<()> {
    let http = args.target.http()?;
    let base = args.target.base();
    match args.command {
        TopicCommand::Create { name, partitions, retention_ms } => {
            let mut config = json!({});
            if let Some(ms) = retention_ms {
                config["retention_ms"] = json!(ms);
            }
            let body = json!({"name": name, "partitions": partitions, "config": config});
            send(http.post(format!("{base}/v1/topics")).json(&body)).await?;
            eprintln!("created topic {name} with {partitions} partition(s)");
        }
        TopicCommand::List => {
            let list = send(http.get(format!("{base}/v1/topics"))).await?;
            for t in list["topics"].as_array().into_iter().flatten() {
                let partitions = t["partitions"].as_array().map_or(0, Vec::len);
                println!("{}\t{partitions}", t["name"].as_str().unwrap_or("?"));
            }
        }
        TopicCommand::Describe { name } => {
            let info = send(http.get(format!("{base}/v1/topics/{name}"))).await?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        TopicCommand::Delete { name } => {
            send(http.delete(format!("{base}/v1/topics/{name}"))).await?;
            eprintln!("deleted topic {name}");
        }
    }
    Ok(())
}

pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let http = args.target.http()?;
    let base = args.target.base();
    let url = match args.partition {
        Some(p) => format!("{base}/v1/topics/{}/partitions/{p}/records", args.topic),
        None => format!("{base}/v1/topics/{}/records", args.topic),
    };
    let mut batch = Vec::new();
    let mut total = 0usize;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let record = match args.key_separator.as_deref().and_then(|sep| line.split_once(sep)) {
            Some((key, value)) => json!({"key": STANDARD.encode(key), "value": STANDARD.encode(value)}),
            None => json!({"value": STANDARD.encode(&line)}),
        };
        batch.push(record);
        if batch.len() >= args.batch.max(1) {
            total += flush(&http, &url, &mut batch).await?;
        }
    }
    total += flush(&http, &url, &mut batch).await?;
    eprintln!("produced {total} record(s)");
    Ok(())
}

async fn flush(http: &reqwest::Client, url: &str, batch: &mut Vec<Value>) -> anyhow::Result<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    let body = json!({"encoding": "base64", "records": std::mem::take(batch)});
    let answer = send(http.post(url).json(&body)).await?;
    Ok(answer["offsets"].as_array().map_or(0, Vec::len))
}

/// Writes a fetched record (base64 fields) as `[KEY SEP] VALUE` and a newline.
pub fn print_record(out: &mut impl Write, r: &Value, key_separator: Option<&str>) -> anyhow::Result<()> {
    if let Some(sep) = key_separator {
        if !r["key"].is_null() {
            out.write_all(&decode_field(&r["key"])?)?;
        }
        out.write_all(sep.as_bytes())?;
    }
    out.write_all(&decode_field(&r["value"])?)?;
    out.write_all(b"\n")?;
    Ok(())
}

fn decode_field(v: &Value) -> anyhow::Result<Vec<u8>> {
    Ok(STANDARD.decode(v.as_str().unwrap_or_default())?)
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    if args.group.is_some() {
        return crate::group::consume(args).await;
    }
    let http = args.target.http()?;
    let base = args.target.base();
    let partition_url = format!("{base}/v1/topics/{}/partitions/{}", args.topic, args.partition);
    let url = format!("{partition_url}/records");
    let mut offset = match parse_timestamp(&args.from)? {
        Some(ms) => {
            let at =
                send(http.get(format!("{partition_url}/offsets")).query(&[("timestamp_ms", ms)])).await?;
            at["offset"].to_string()
        }
        None => args.from.clone(),
    };
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let wait = if args.follow { "10000" } else { "0" };
        let query = [("offset", offset.as_str()), ("encoding", "base64"), ("wait_ms", wait)];
        let page = send(http.get(&url).query(&query)).await?;
        let records = page["records"].as_array().cloned().unwrap_or_default();
        for r in &records {
            if args.print_offsets {
                write!(out, "{}\t", r["offset"])?;
            }
            print_record(&mut out, r, args.key_separator.as_deref())?;
            printed += 1;
            if args.max_records.is_some_and(|max| printed >= max) {
                return Ok(());
            }
        }
        out.flush()?;
        offset = page["next_offset"].to_string();
        let at_end = page["next_offset"] == page["high_watermark"];
        if records.is_empty() && at_end && !args.follow {
            return Ok(());
        }
    }
}
