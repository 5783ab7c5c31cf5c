//! Reading `infra/`'s Terraform with python-hcl2 (nobody here wrote it),
//! for the checks that the Terraform and the binaries agree.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

/// The repository's `infra/` folder.
pub fn infra_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("infra")
}

/// Every `.tf` file under `infra/`, sorted.
pub fn tf_files() -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "tf") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&infra_dir(), &mut out)?;
    out.sort();
    Ok(out)
}

const PARSE: &str = r#"
import json, sys, hcl2
out = {}
for path in sys.argv[1:]:
    with open(path) as f:
        out[path] = hcl2.load(f)
print(json.dumps(out))
"#;

/// Every `.tf` file parsed by python-hcl2: `{path: document}`. `None` (with
/// the reason printed) when the test command did not install it.
pub fn parse_all() -> anyhow::Result<Option<Value>> {
    let Ok(python) = std::env::var("SHALE_PYTHON") else {
        eprintln!("SHALE_PYTHON is not set (scripts/test.sh installs python-hcl2): Terraform not parsed");
        return Ok(None);
    };
    let files = tf_files()?;
    if files.is_empty() {
        bail!("no .tf files under {}", infra_dir().display());
    }
    let out = std::process::Command::new(&python).arg("-c").arg(PARSE).args(&files).output()?;
    if !out.status.success() {
        bail!("python-hcl2 could not parse infra/: {}", String::from_utf8_lossy(&out.stderr));
    }
    let parsed: Value = serde_json::from_slice(&out.stdout).context("python-hcl2's JSON")?;
    Ok(Some(normalize(parsed)))
}

/// python-hcl2 keeps string literals' quotes (`"\"s3:GetObject\""`) and
/// quoted block labels; this drops them, and its `__…__` bookkeeping keys.
fn normalize(v: Value) -> Value {
    fn unquote(s: &str) -> String {
        s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s).to_owned()
    }
    match v {
        Value::String(s) => Value::String(unquote(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| !(k.starts_with("__") && k.ends_with("__")))
                .map(|(k, v)| (unquote(&k), normalize(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The first value under `key` anywhere in `v`.
pub fn find<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(key).or_else(|| m.values().find_map(|x| find(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find(x, key)),
        _ => None,
    }
}

/// `s3_actions` of infra/aws/iam.tf: role -> S3 actions; and which roles list.
pub fn iam_grants(parsed: &Value) -> anyhow::Result<Vec<(String, Vec<String>, bool)>> {
    let iam = parsed
        .as_object()
        .and_then(|m| m.iter().find(|(k, _)| k.ends_with("aws/iam.tf")))
        .map(|(_, v)| v)
        .context("infra/aws/iam.tf")?;
    let actions = find(iam, "s3_actions").and_then(Value::as_object).context("locals.s3_actions")?;
    let lists = find(iam, "lists").and_then(Value::as_object).context("locals.lists")?;
    let mut out = Vec::new();
    for (role, granted) in actions {
        let granted: Vec<String> =
            granted.as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect();
        let lists = lists.get(role).and_then(Value::as_bool).context("lists has every role")?;
        out.push((role.trim_matches('"').to_owned(), granted, lists));
    }
    Ok(out)
}

/// The S3 actions a kind of object_store request needs.
pub fn actions_for(op: &str) -> &'static [&'static str] {
    match op {
        "put" => &["s3:PutObject"],
        "get" => &["s3:GetObject"],
        "delete" => &["s3:DeleteObject"],
        "list" => &["s3:ListBucket"],
        "copy" => &["s3:GetObject", "s3:PutObject"],
        _ => &[],
    }
}
