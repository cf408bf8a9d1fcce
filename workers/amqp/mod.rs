//! RabbitMQ transport: connection, topology, confirmed publishing.

pub mod progress;
pub mod tls;
pub mod topology;
pub mod worker;

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Confirmation, PublisherConfirm};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("broker refused the publish to {exchange}/{routing_key} (nack)")]
    Nacked { exchange: String, routing_key: String },
    #[error("no confirm from the broker within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("the broker did not accept a connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the broker ended every consumer of this connection")]
    ConsumersEnded,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("blob store: {0}")]
    Store(String),
    #[error("broker.url: {0}")]
    Url(String),
    #[error("TLS connection to the broker failed: {0} (the broker's certificate must chain to broker.tls_ca_file or the system's roots and name the URL's host)")]
    Tls(String),
}

impl TransportError {
    /// The broker (or the connection to it) failed, as opposed to docpipe's own configuration
    /// or the blob store: the connection is no longer trusted to settle deliveries.
    pub fn is_broker_fault(&self) -> bool {
        matches!(self, Self::Amqp(_) | Self::ConfirmTimeout(_) | Self::ConnectTimeout(_) | Self::ConsumersEnded)
    }
}

/// An exchange, queue, routing key or reason as the protocol's short string, the form lapin's
/// calls take.
pub fn short(s: &str) -> ShortString {
    ShortString::from(s)
}

/// Message `type` property of jobs, stage-to-stage hand-offs and results.
pub const JOB_TYPE: &str = "docpipe.job.v1";
pub const HANDOFF_TYPE: &str = "docpipe.handoff.v1";
/// A hand-off too large for the broker: the body names the blob holding it.
pub const HANDOFF_REF_TYPE: &str = "docpipe.handoff-ref.v1";
pub const RESULT_TYPE: &str = "docpipe.result.v1";

/// Headers docpipe sets.
pub const H_ATTEMPT: &str = "x-docpipe-attempt";
/// Not `x-` prefixed: the headers exchange ignores such headers when matching.
pub const H_RETRY_STEP: &str = "docpipe-retry-step";
pub const H_STAGE: &str = "x-docpipe-stage";
pub const H_ERROR_KIND: &str = "x-docpipe-error-kind";
pub const H_REASON: &str = "x-docpipe-reason";
pub const H_DEAD_AT: &str = "x-docpipe-dead-lettered-at";

/// Index into the broker addresses of the one that last accepted a connection: reconnection
/// starts there, so a node that is gone costs one refused attempt only until another answers.
static LAST_GOOD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Longest wait for one node to accept a connection: a host that drops packets would otherwise
/// hold the failover to the next node for the operating system's TCP timeout (minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Connect to the broker: `broker.url`, else each of `broker.failover_urls` in turn, starting
/// from the address that worked last. The error is the last address's.
pub async fn connect(config: &Config) -> Result<Connection, TransportError> {
    let urls: Vec<&str> = std::iter::once(config.broker.url.as_str()).chain(config.broker.failover_urls.iter().map(String::as_str)).collect();
    let first = LAST_GOOD.load(std::sync::atomic::Ordering::Relaxed) % urls.len();
    let mut last_error = None;
    for index in (0..urls.len()).map(|i| (first + i) % urls.len()) {
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, connect_to(config, urls[index])).await;
        match attempt.unwrap_or(Err(TransportError::ConnectTimeout(CONNECT_TIMEOUT))) {
            Ok(connection) => {
                if index != first {
                    tracing::info!(node = index, "connected to another broker node");
                }
                LAST_GOOD.store(index, std::sync::atomic::Ordering::Relaxed);
                return Ok(connection);
            }
            // Configuration errors are the same for every node: no use trying the others.
            Err(e @ (TransportError::Url(_) | TransportError::Config(_))) => return Err(e),
            Err(e) => {
                if urls.len() > 1 {
                    tracing::warn!(node = index, error = %e, "broker node unreachable");
                }
                last_error = Some(e);
            }
        }
    }
    Err(last_error.expect("at least broker.url was tried"))
}

async fn connect_to(config: &Config, url: &str) -> Result<Connection, TransportError> {
    // Parsed before the password is added, so a parse error quoting the URL cannot quote that
    // password (and one wrongly written into the URL is not repeated: the message is dropped).
    let mut uri: AMQPUri = url.parse().map_err(|e: String| {
        TransportError::Url(if e.contains(url) { "not an AMQP URL with a host".into() } else { e })
    })?;
    // Without a password: the URL's own, else RabbitMQ's `guest` (admitted from localhost only).
    if let Some(password) = config.broker_password()? {
        uri.authority.userinfo.password = password;
    }
    let tls_scheme = uri.scheme == AMQPScheme::AMQPS;
    let tls_configured = [&config.broker.tls_ca_file, &config.broker.tls_cert_file, &config.broker.tls_key_file].iter().any(|f| f.is_some());
    if tls_configured && !tls_scheme {
        // Certificates set for a plain connection: the password would go in clear text.
        return Err(TransportError::Url("broker.tls_* are set but the URL is amqp://, not amqps://".into()));
    }
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(format!("docpipe-{}", std::process::id())));
    let tls = tls::tls_config(&config.broker)?;
    let runtime = lapin::runtime::default_runtime()?;
    match Connection::connect_uri_with_config(uri, properties, tls, runtime).await {
        Ok(connection) => Ok(connection),
        // Over amqps an I/O error at connection time is the handshake: say so.
        Err(e) if tls_scheme && matches!(e.kind(), lapin::ErrorKind::IOError(_)) => Err(TransportError::Tls(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// A channel in confirm mode: every publish waits for the broker's ack.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, TransportError> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// Publish and wait for the broker to confirm it stored the message.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    timeout: Duration,
) -> Result<(), TransportError> {
    let confirm = channel
        .basic_publish(short(exchange), short(routing_key), BasicPublishOptions::default(), body, properties.with_delivery_mode(2))
        .await?;
    confirmed(confirm, timeout, exchange, routing_key).await
}

/// Wait for the broker's verdict on one publish: stored (ack), refused (nack) or silent.
pub async fn confirmed(
    confirm: PublisherConfirm,
    timeout: Duration,
    exchange: &str,
    routing_key: &str,
) -> Result<(), TransportError> {
    match tokio::time::timeout(timeout, confirm).await {
        Err(_) => Err(TransportError::ConfirmTimeout(timeout)),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(Confirmation::Nack(_))) => {
            Err(TransportError::Nacked { exchange: exchange.into(), routing_key: routing_key.into() })
        }
        Ok(Ok(_)) => Ok(()),
    }
}

/// Publishes jobs to the jobs exchange, persistent and confirmed, keeping a window of
/// unconfirmed publishes for throughput: `submit` and `resubmit`.
pub struct JobPublisher {
    channel: Channel,
    exchange: String,
    timeout: Duration,
    pending: Vec<PublisherConfirm>,
}

impl JobPublisher {
    /// Unconfirmed publishes allowed in flight.
    const WINDOW: usize = 256;

    /// On a confirm channel of `connection`, with the topology declared.
    pub async fn open(connection: &Connection, config: &Config) -> Result<Self, TransportError> {
        let channel = confirm_channel(connection).await?;
        topology::declare(&channel, config).await?;
        Ok(Self {
            channel,
            exchange: topology::Names::new(config).jobs_exchange(),
            timeout: Duration::from_secs(config.broker.confirm_timeout_secs),
            pending: Vec::new(),
        })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    pub async fn publish(&mut self, job: &crate::schema::Job) -> Result<(), TransportError> {
        let body = serde_json::to_vec(job).expect("jobs serialize");
        let properties =
            json_properties(JOB_TYPE).with_message_id(ShortString::from(job.job_id.to_string())).with_delivery_mode(2);
        let confirm = self.channel.basic_publish(short(&self.exchange), short(""), BasicPublishOptions::default(), &body, properties).await?;
        self.pending.push(confirm);
        if self.pending.len() >= Self::WINDOW {
            self.wait().await?;
        }
        Ok(())
    }

    /// Wait until the broker confirmed every publish so far.
    pub async fn wait(&mut self) -> Result<(), TransportError> {
        for confirm in self.pending.drain(..) {
            confirmed(confirm, self.timeout, &self.exchange, "").await?;
        }
        Ok(())
    }
}

pub fn json_properties(kind: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_type(ShortString::from(kind))
}

pub fn header_str(headers: &Option<FieldTable>, key: &str) -> Option<String> {
    match headers.as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

pub fn header_u32(headers: &Option<FieldTable>, key: &str) -> Option<u32> {
    match headers.as_ref()?.inner().get(key)? {
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}

/// A message's headers without the broker's dead-letter history, so a republished message
/// starts a fresh history.
pub fn own_headers(headers: &Option<FieldTable>) -> FieldTable {
    let mut own = FieldTable::default();
    for (key, value) in headers.as_ref().map(|h| h.inner().iter()).into_iter().flatten() {
        let k = key.as_str();
        if !(k.starts_with("x-death") || k.starts_with("x-first-death") || k.starts_with("x-last-death")) {
            own.insert(key.clone(), value.clone());
        }
    }
    own
}

pub fn set_header(headers: &mut FieldTable, key: &str, value: impl Into<String>) {
    headers.insert(ShortString::from(key), AMQPValue::LongString(LongString::from(value.into())));
}

/// Routing key of a result: `<case>.<batch>`, each id made one routing word.
pub fn result_routing_key(case_id: &str, batch_id: &str) -> String {
    format!("{}.{}", routing_word(case_id), routing_word(batch_id))
}

/// Ids longer than this (once escaped) are named by their hash: routing keys and queue names
/// are limited to 255 bytes.
const MAX_WORD: usize = 100;

/// An id as one routing word, queue-name part and file name. Injective, so two batches never
/// share a results queue or file: letters, digits, `-` and `_` stay; every other byte becomes
/// `~` and two hex digits; an id whose escaped form is long becomes `~h` and its sha256, which
/// no escaped form can start with.
pub fn routing_word(id: &str) -> String {
    let mut word = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            word.push(byte as char);
        } else {
            word.push_str(&format!("~{byte:02x}"));
        }
    }
    if word.len() > MAX_WORD || word.is_empty() {
        return format!("~h{}", crate::blob::sha256_hex(id.as_bytes()));
    }
    word
}

/// Doubling back-off for reconnection.
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(config: &Config) -> Self {
        Self {
            next: Duration::from_millis(config.broker.reconnect_min_ms),
            max: Duration::from_millis(config.broker.reconnect_max_ms),
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::routing_word;

    #[test]
    fn routing_words_keep_batches_apart() {
        let ids = ["coll2.a", "coll2_a", "coll2~2ea", "coll2 a", "coll2*a", "coll2#a", "../etc/passwd", "", "~h00", "北京.1"];
        let words: std::collections::HashSet<_> = ids.iter().map(|id| routing_word(id)).collect();
        assert_eq!(words.len(), ids.len(), "{words:?}");
        assert_eq!(routing_word("coll2_a"), "coll2_a");
        assert_eq!(routing_word("coll2.a"), "coll2~2ea");
        for word in &words {
            assert!(word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_~".contains(&b)), "{word}");
        }
    }

    #[test]
    fn long_ids_are_hashed_and_stay_distinct() {
        let a = "x".repeat(300);
        let b = format!("{}y", "x".repeat(299));
        assert!(routing_word(&a).starts_with("~h") && routing_word(&a).len() == 66);
        assert_ne!(routing_word(&a), routing_word(&b));
        assert_eq!(routing_word(&"x".repeat(100)), "x".repeat(100));
    }
}
