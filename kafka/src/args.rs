//! The listener's command-line flags, shared by `shale dev` and `shale gateway`.

use std::io::Write;
use std::sync::Arc;

use clap::Args;
use shale_gateway::AppState;
use shale_gateway::auth::AuthMode;
use shale_gateway::serve::ServeLimits;

/// The Kafka listener of a gateway (or `shale dev`).
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Also speak Kafka's protocol on this address (off unless given; port 0
    /// picks a free port). TLS and tokens (SASL/PLAIN) as for HTTP.
    #[arg(long, env = "SHALE_KAFKA_LISTEN")]
    pub kafka_listen: Option<String>,
    /// HOST:PORT Kafka clients are told to connect to (default: the address
    /// the listener is bound to).
    #[arg(long, env = "SHALE_KAFKA_ADVERTISE")]
    pub kafka_advertise: Option<String>,
    /// A Metadata request naming a topic that does not exist creates it,
    /// with --kafka-default-partitions (Kafka's auto.create.topics.enable).
    /// Off by default: a typo should not create a topic.
    #[arg(long, env = "SHALE_KAFKA_AUTO_CREATE_TOPICS")]
    pub kafka_auto_create_topics: bool,
    /// Partitions of a topic created over Kafka without a count, or created
    /// on first use (Kafka's num.partitions).
    #[arg(long, env = "SHALE_KAFKA_DEFAULT_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub kafka_default_partitions: u32,
}

impl KafkaArgs {
    /// Binds the Kafka listener, if asked for, and serves it until `closing`.
    /// A listener off loopback needs tokens, as the HTTP one does: with auth
    /// off it is refused unless `--insecure-no-auth` says otherwise.
    pub async fn start(
        &self,
        state: Arc<AppState>,
        insecure_no_auth: bool,
        limits: &ServeLimits,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(listen) = &self.kafka_listen else { return Ok(None) };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("listening on --kafka-listen {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        if state.auth.mode() == AuthMode::Off && !addr.ip().is_loopback() && !insecure_no_auth {
            anyhow::bail!(
                "--kafka-listen {addr} is not a loopback address and auth is off: pass --auth (SASL/PLAIN with tokens) or --insecure-no-auth"
            );
        }
        let (host, port) = match &self.kafka_advertise {
            Some(a) => {
                let (host, port) = a
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                    .ok_or_else(|| anyhow::anyhow!("--kafka-advertise {a:?} is not HOST:PORT"))?;
                (host, port)
            }
            None => {
                if addr.ip().is_unspecified() {
                    tracing::warn!(%addr, "kafka listener on all interfaces: set --kafka-advertise to the address clients use");
                }
                (addr.ip().to_string(), addr.port())
            }
        };
        let protocol = match (state.auth.mode() == AuthMode::Tokens, limits.tls.is_some()) {
            (false, false) => "PLAINTEXT",
            (false, true) => "SSL",
            (true, false) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        };
        tracing::info!(%addr, %host, port, protocol, "kafka listener started");
        // after the line that names the HTTP URL; stdout may be closed by then
        let _ = writeln!(std::io::stdout(), "shale kafka listening on {addr} ({protocol})");
        let config = crate::KafkaConfig {
            host,
            port,
            limits: limits.clone(),
            auto_create_topics: self.kafka_auto_create_topics,
            default_partitions: self.kafka_default_partitions,
        };
        let closing = state.closing.clone();
        Ok(Some(tokio::spawn(crate::serve(listener, state, config, closing))))
    }
}
