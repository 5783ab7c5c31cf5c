//! The cluster secret on Lambda: from a file like the servers, or from
//! Secrets Manager through the AWS Parameters and Secrets Lambda Extension
//! (a local HTTP endpoint the extension layer serves), read once per cold
//! start. The extension needs no SDK and keeps the secret out of the
//! function's environment.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use shale_controller_client::remote::ClientOptions;
use shale_controller_client::{ClusterSecret, RemoteController};
use shale_flags::ClusterArgs;

#[derive(Debug, Clone, Args)]
pub struct SecretArgs {
    /// Secrets Manager secret (ARN or name) whose string is the cluster
    /// secret; read through the Parameters and Secrets Lambda Extension.
    #[arg(long, env = "SHALE_CLUSTER_SECRET_ARN")]
    pub cluster_secret_arn: Option<String>,
    /// Where the extension listens (its default port is 2773).
    #[arg(long, env = "SHALE_SECRETS_EXTENSION_URL", default_value = "http://localhost:2773", hide = true)]
    pub secrets_extension_url: String,
}

#[derive(serde::Deserialize)]
struct SecretValue {
    #[serde(rename = "SecretString")]
    secret_string: String,
}

/// The client of the controllers at `nodes`, presenting the cluster secret.
pub async fn controllers(
    nodes: &[String],
    cluster: &ClusterArgs,
    args: &SecretArgs,
) -> anyhow::Result<RemoteController> {
    let options =
        ClientOptions { secret: cluster_secret(cluster, args).await?, ca_cert_pem: cluster.ca_cert_pem()? };
    Ok(RemoteController::new(nodes.to_vec(), &options)?)
}

/// The cluster secret, if one is configured.
async fn cluster_secret(cluster: &ClusterArgs, args: &SecretArgs) -> anyhow::Result<Option<ClusterSecret>> {
    let Some(id) = &args.cluster_secret_arn else { return cluster.secret() };
    if cluster.cluster_secret_file.is_some() {
        anyhow::bail!("give SHALE_CLUSTER_SECRET_ARN or SHALE_CLUSTER_SECRET_FILE, not both");
    }
    // the extension authenticates its callers by the function's session token
    let token = std::env::var("AWS_SESSION_TOKEN").unwrap_or_default();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let url = format!("{}/secretsmanager/get", args.secrets_extension_url.trim_end_matches('/'));
    let mut last = None;
    // the extension may still be starting during the first cold start
    for attempt in 0..5u64 {
        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
        let sent = http
            .get(&url)
            .query(&[("secretId", id)])
            .header("X-Aws-Parameters-Secrets-Token", &token)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                let value: SecretValue = r.json().await.context("the extension's answer")?;
                return Ok(Some(ClusterSecret::new(value.secret_string.trim())?));
            }
            Ok(r) if r.status().is_client_error() => {
                anyhow::bail!("reading secret {id}: the extension answered {}", r.status())
            }
            Ok(r) => last = Some(anyhow::anyhow!("the extension answered {}", r.status())),
            Err(e) => last = Some(e.into()),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no answer")).context(format!("reading secret {id} at {url}")))
}
