//! `shale consume --group` and `shale group list|describe|reset-offsets|delete`.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{ConsumeArgs, Target, parse_timestamp, print_record, send};

#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List groups: name, state, members.
    List,
    /// Show members, assignment, committed offsets and lag.
    Describe {
        group: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reset a group's offsets (the group must have no live members).
    ResetOffsets {
        group: String,
        /// earliest, latest, or timestamp:TIME (RFC 3339 or milliseconds).
        #[arg(long, conflicts_with = "offsets")]
        to: Option<String>,
        /// Explicit offsets: TOPIC:PARTITION:OFFSET, repeatable.
        #[arg(long = "offset")]
        offsets: Vec<String>,
        /// Topics to reset with --to (default: those the group has offsets for).
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
    /// Delete a group and its offsets (it must have no live members).
    Delete { group: String },
}

pub async fn run(args: GroupArgs) -> anyhow::Result<()> {
    let http = args.target.http()?;
    let base = format!("{}/v1/groups", args.target.base());
    match args.command {
        GroupCommand::List => {
            let list = send(http.get(&base)).await?;
            for g in list["groups"].as_array().into_iter().flatten() {
                println!("{}\t{}\t{} member(s)", str_of(&g["group"]), str_of(&g["state"]), g["members"]);
            }
        }
        GroupCommand::Describe { group, json } => {
            let g = send(http.get(format!("{base}/{group}"))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&g)?);
                return Ok(());
            }
            println!("group {} ({}, epoch {})", str_of(&g["group"]), str_of(&g["state"]), g["group_epoch"]);
            for m in g["members"].as_array().into_iter().flatten() {
                let n = m["assignment"].as_array().map_or(0, Vec::len);
                println!("member {}\tepoch {}\t{n} partition(s)", str_of(&m["member_id"]), m["member_epoch"]);
            }
            println!("TOPIC\tPARTITION\tOWNER\tCOMMITTED\tHIGH-WATERMARK\tLAG");
            for p in g["partitions"].as_array().into_iter().flatten() {
                let committed = if p["committed_offset"].is_null() {
                    "-".to_owned()
                } else {
                    p["committed_offset"].to_string()
                };
                let owner = p["owner"].as_str().unwrap_or("-");
                println!(
                    "{}\t{}\t{owner}\t{committed}\t{}\t{}",
                    str_of(&p["topic"]),
                    p["partition"],
                    p["high_watermark"],
                    p["lag"]
                );
            }
            println!("total lag {}", g["total_lag"]);
        }
        GroupCommand::ResetOffsets { group, to, offsets, topics } => {
            let mut body = match to.as_deref() {
                Some("earliest" | "latest") => json!({ "to": to }),
                Some(other) => match parse_timestamp(other)? {
                    Some(ms) => json!({ "timestamp_ms": ms }),
                    None => bail!("--to is earliest, latest or timestamp:TIME, not {other:?}"),
                },
                None if !offsets.is_empty() => {
                    let offsets =
                        offsets.iter().map(|o| parse_position(o)).collect::<anyhow::Result<Vec<_>>>()?;
                    json!({ "offsets": offsets })
                }
                None => bail!("give --to or --offset"),
            };
            if !topics.is_empty() {
                body["topics"] = json!(topics);
            }
            let answer = send(http.post(format!("{base}/{group}/offsets/reset")).json(&body)).await?;
            for o in answer["offsets"].as_array().into_iter().flatten() {
                println!("{}\t{}\t{}", str_of(&o["topic"]), o["partition"], o["offset"]);
            }
        }
        GroupCommand::Delete { group } => {
            send(http.delete(format!("{base}/{group}"))).await?;
            eprintln!("deleted group {group}");
        }
    }
    Ok(())
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// `TOPIC:PARTITION:OFFSET` as an offset object.
fn parse_position(text: &str) -> anyhow::Result<Value> {
    let mut parts = text.rsplitn(3, ':');
    let (Some(offset), Some(partition), Some(topic)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("{text:?} is not TOPIC:PARTITION:OFFSET");
    };
    let partition: u32 = partition.parse().with_context(|| format!("partition in {text:?}"))?;
    let offset: u64 = offset.parse().with_context(|| format!("offset in {text:?}"))?;
    Ok(json!({"topic": topic, "partition": partition, "offset": offset}))
}

/// Consumes as a group member: joins, reads the assigned partitions
/// through the member records route (each read commits the cursor of the
/// one before: what was printed), and on the way out commits what it
/// printed and leaves.
pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let Some(group) = args.group.clone() else { bail!("no --group") };
    let reset = match args.from.as_str() {
        "earliest" | "latest" => args.from.clone(),
        other => bail!(
            "with --group, --from is earliest or latest (where uncommitted partitions start), not {other:?}"
        ),
    };
    let http = args.target.http()?;
    let member =
        args.member_id.clone().unwrap_or_else(|| format!("shale-{}", ulid::Ulid::new()).to_lowercase());
    let member_url = format!("{}/v1/groups/{group}/members/{member}", args.target.base());
    let join = json!({
        "topics": [args.topic],
        "session_timeout_ms": args.session_timeout_ms,
        "instance_id": args.instance_id,
    });
    let joined = send(http.put(&member_url).json(&join)).await?;
    let mut epoch = joined["member_epoch"].as_u64().unwrap_or(0);
    let mut cursor = String::new();
    // what was printed, by partition: committed on the way out
    let mut printed_to: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    let wait = if args.follow { "5000" } else { "0" };
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let epoch_text = epoch.to_string();
        let query = [
            ("cursor", cursor.as_str()),
            ("member_epoch", epoch_text.as_str()),
            ("commit", "true"),
            ("wait_ms", wait),
            ("encoding", "base64"),
            ("reset", reset.as_str()),
        ];
        let page = tokio::select! {
            page = send(http.get(format!("{member_url}/records")).query(&query)) => page,
            _ = &mut stop => break,
        };
        let page = match page {
            Ok(page) => page,
            Err(e) if e.to_string().contains("member_not_found") => {
                // the session ended (a long pause): join again, keep the cursor
                let joined = send(http.put(&member_url).json(&join)).await?;
                epoch = joined["member_epoch"].as_u64().unwrap_or(0);
                continue;
            }
            Err(e) => return Err(e),
        };
        // only what the member still holds may be committed; a partition
        // that comes back starts from the group's commit, not from here
        let held: Vec<(String, u64)> = ["assignment", "revoke"]
            .iter()
            .flat_map(|k| page[*k].as_array().cloned().unwrap_or_default())
            .map(|tp| (str_of(&tp["topic"]).to_owned(), tp["partition"].as_u64().unwrap_or(0)))
            .collect();
        printed_to.retain(|tp, _| held.contains(tp));
        let records = page["records"].as_array().cloned().unwrap_or_default();
        for r in &records {
            if args.print_offsets {
                write!(out, "{}\t{}\t{}\t", str_of(&r["topic"]), r["partition"], r["offset"])?;
            }
            print_record(&mut out, r, args.key_separator.as_deref())?;
            let tp = (str_of(&r["topic"]).to_owned(), r["partition"].as_u64().unwrap_or(0));
            printed_to.insert(tp, r["offset"].as_u64().unwrap_or(0) + 1);
            printed += 1;
            if args.max_records.is_some_and(|max| printed >= max) {
                break;
            }
        }
        out.flush()?;
        epoch = page["member_epoch"].as_u64().unwrap_or(epoch);
        cursor = str_of(&page["cursor"]).to_owned();
        let done = args.max_records.is_some_and(|max| printed >= max);
        let assigned = page["assignment"].as_array().is_some_and(|a| !a.is_empty());
        if done || (records.is_empty() && assigned && !args.follow) {
            break;
        }
    }
    let offsets: Vec<Value> = printed_to
        .iter()
        .map(|((topic, partition), offset)| json!({"topic": topic, "partition": partition, "offset": offset}))
        .collect();
    if !offsets.is_empty() {
        let commit = json!({"member_id": member, "member_epoch": epoch, "offsets": offsets});
        let offsets_url = format!("{}/v1/groups/{group}/offsets", args.target.base());
        if let Err(e) = send(http.post(offsets_url).json(&commit)).await {
            eprintln!("the last commit was refused ({e}); the group resumes from its last commit");
        }
    }
    send(http.delete(&member_url)).await?;
    eprintln!("consumed {printed} record(s) as {member} of group {group}");
    Ok(())
}
