//! Offline checks of `infra/` (no provider download, no apply): every
//! `.tf` file parses (python-hcl2), checkov passes with only the committed,
//! reasoned skips, every `SHALE_*` variable the Terraform sets is a flag's
//! environment name in the binaries, ports agree, and `terraform fmt`
//! (or `tofu fmt`) is clean where either is installed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use shale_tests::infra::{find, infra_dir, parse_all, tf_files};
use shale_tests::lambda::lambda_binary;
use shale_tests::process::binary;

/// `(check, reason)` of infra/checkov-skips.txt.
fn skips() -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(infra_dir().join("checkov-skips.txt"))?;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (check, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        ensure!(reason.trim().len() > 10, "checkov skip {check} has no reason");
        out.push((check.to_owned(), reason.trim().to_owned()));
    }
    Ok(out)
}

#[test]
fn every_terraform_file_parses_and_checkov_passes() -> anyhow::Result<()> {
    let Some(parsed) = parse_all()? else { return Ok(()) };
    let files = parsed.as_object().map_or(0, |m| m.len());
    ensure!(files == tf_files()?.len() && files >= 10, "parsed {files} files");
    let Ok(checkov) = std::env::var("SHALE_CHECKOV") else {
        eprintln!("SHALE_CHECKOV is not set (scripts/test.sh installs checkov): checkov not run");
        return Ok(());
    };
    let skipped: Vec<String> = skips()?.into_iter().map(|(c, _)| c).collect();
    let out = Command::new(&checkov)
        .current_dir(infra_dir())
        .args(["-d", ".", "--framework", "terraform", "dockerfile", "--download-external-modules", "false"])
        .args(["--output", "json", "--quiet", "--skip-check", &skipped.join(",")])
        .env("BC_API_KEY", "")
        .output()
        .context("running checkov")?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("checkov's JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
    // one report per framework; with nothing to report checkov prints a summary only
    let reports: Vec<&Value> = match &report {
        Value::Array(all) => all.iter().collect(),
        one => vec![one],
    };
    let mut checked = BTreeSet::new();
    for r in &reports {
        let summary = r.get("summary").with_context(|| format!("no summary in {r}"))?;
        // checkov exits 0 on files it cannot parse: they show only here
        ensure!(summary["parsing_errors"] == 0, "checkov could not parse: {summary}");
        let failed: Vec<String> = r["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["file_path"]))
            .collect();
        ensure!(failed.is_empty(), "checkov failed: {failed:#?}");
        checked.insert(r["check_type"].as_str().unwrap_or_default().to_owned());
        ensure!(summary["passed"].as_u64().unwrap_or(0) > 0, "checkov passed nothing: {summary}");
    }
    ensure!(checked.contains("terraform") && checked.contains("dockerfile"), "checked {checked:?}");
    ensure!(out.status.success(), "checkov exited {}", out.status);
    Ok(())
}

/// The `SHALE_*` environment names a binary's help lists.
fn env_names(bin: &Path, args: &[&str], handler: Option<&str>) -> anyhow::Result<BTreeSet<String>> {
    let mut command = Command::new(bin);
    command.args(args).arg("--help");
    if let Some(h) = handler {
        command.env("_HANDLER", h);
    }
    let out = command.output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    Ok(help
        .split("env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']', ' ']).next())
        .filter(|name| name.starts_with("SHALE_"))
        .map(str::to_owned)
        .collect())
}

/// Every `SHALE_*` name written in infra/ (Terraform and templates).
fn names_in_infra() -> anyhow::Result<BTreeSet<(String, String)>> {
    let mut out = BTreeSet::new();
    let mut files = tf_files()?;
    files.push(infra_dir().join("aws/controller.sh.tftpl"));
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        let file = path.strip_prefix(infra_dir()).unwrap_or(&path).display().to_string();
        for (i, _) in text.match_indices("SHALE_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            out.insert((name, file.clone()));
        }
    }
    Ok(out)
}

#[test]
fn terraform_sets_only_real_flags_and_its_ports_agree() -> anyhow::Result<()> {
    let (shale, lambda) = (binary(), lambda_binary());
    ensure!(shale.exists() && lambda.exists(), "build shale and shale-lambda first");
    let mut known = BTreeSet::new();
    for command in ["controller", "gateway", "compactor", "dev"] {
        known.extend(env_names(&shale, &[command], None)?);
    }
    ensure!(known.contains("SHALE_CONTROLLERS") && known.contains("SHALE_PEERS"), "{known:?}");
    let mut lambda_names = BTreeSet::new();
    for handler in ["gateway", "compactor"] {
        lambda_names.extend(env_names(&lambda, &[], Some(handler))?);
    }
    ensure!(lambda_names.contains("SHALE_CLUSTER_SECRET_ARN"), "{lambda_names:?}");
    known.extend(lambda_names);
    let used = names_in_infra()?;
    ensure!(used.len() > 10, "{used:?}");
    let unknown: Vec<_> = used.iter().filter(|(n, _)| !known.contains(n)).collect();
    ensure!(unknown.is_empty(), "infra/ sets variables no binary reads: {unknown:?}");

    let Some(parsed) = parse_all()? else { return Ok(()) };
    let doc = |suffix: &str| -> anyhow::Result<&Value> {
        parsed
            .as_object()
            .and_then(|m| m.iter().find(|(k, _)| k.ends_with(suffix)))
            .map(|(_, v)| v)
            .with_context(|| format!("no {suffix}"))
    };
    // AWS: the controllers listen on the port their security group opens
    let network = serde_json::to_string(doc("aws/network.tf")?)?;
    let controllers = serde_json::to_string(doc("aws/controllers.tf")?)?;
    ensure!(network.matches("\"from_port\":\"${var.controller_port}\"").count() >= 3, "security groups");
    ensure!(network.matches("\"to_port\":\"${var.controller_port}\"").count() >= 3, "security groups");
    ensure!(
        controllers.matches(":${var.controller_port}").count() >= 3,
        "SHALE_LISTEN, SHALE_PEERS and the controllers' URLs use controller_port"
    );
    // self-hosted: the gateway listens where its container port points, and
    // the default is shale gateway's own default port
    let minio = doc("minio/main.tf")?;
    let ports = find(minio, "ports").context("gateway ports")?;
    ensure!(serde_json::to_string(ports)?.contains("\"internal\":\"${var.gateway_port}\""), "{ports}");
    ensure!(serde_json::to_string(minio)?.contains("0.0.0.0:${var.gateway_port}"), "SHALE_LISTEN");
    let default_port =
        find(doc("minio/variables.tf")?, "gateway_port").and_then(|v| find(v, "default")).cloned();
    let help = String::from_utf8_lossy(&Command::new(&shale).args(["gateway", "--help"]).output()?.stdout)
        .to_string();
    let listen_default =
        help.split("default: 127.0.0.1:").nth(1).and_then(|r| r.split(']').next()).unwrap_or("");
    ensure!(
        default_port.as_ref().and_then(Value::as_u64).map(|p| p.to_string()).as_deref()
            == Some(listen_default),
        "gateway_port default {default_port:?} vs shale gateway's {listen_default:?}"
    );
    Ok(())
}

#[test]
fn terraform_is_formatted_where_terraform_or_tofu_is_installed() -> anyhow::Result<()> {
    for tool in ["terraform", "tofu"] {
        let Ok(out) = Command::new(tool).arg("fmt").arg("-check").arg("-recursive").arg(infra_dir()).output()
        else {
            eprintln!("{tool} is not on PATH: its fmt -check is not run");
            continue;
        };
        if !out.status.success() {
            bail!(
                "{tool} fmt -check: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}
