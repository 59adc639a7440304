//! Read lark-bridge's helpdesk tickets from Kafka with rdkafka, as typed events of the
//! `lark-protocol` crate.
//!
//! Handles both content modes the bridge publishes (`sink.mode`): structured (the whole
//! CloudEvent as JSON, header `content-type` only) and binary (`data` as the value, attributes
//! in `ce_` headers). `TicketCreated::from_message` tells them apart by the `ce_` headers, as
//! the CloudEvents SDKs do.
//!
//! ```sh
//! cargo run --example kafka_consumer -- --brokers 127.0.0.1:9092 --count 10
//! ```
//!
//! Prints one line per ticket and exits after `--count` events or `--timeout` seconds (status 1
//! when fewer arrived). Kafka delivers at least once: a real consumer is idempotent on the
//! event id.
//!
//! In your own service: depend on `lark-protocol` (for the types), `rdkafka` (features
//! `tokio`), `tokio`, `clap` and `anyhow`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lark_protocol::consumer::{Binding, TicketCreated};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::ClientConfig;
use tokio::time::{timeout_at, Instant};

/// Read lark-bridge's helpdesk tickets from Kafka (either content mode).
#[derive(Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic the bridge publishes tickets to (`sink.kafka.topic`).
    #[arg(
        long,
        env = "KAFKA_TOPIC",
        default_value = "lark.helpdesk.ticket.created.v1"
    )]
    topic: String,
    /// Consumer group: a new group starts at the oldest event.
    #[arg(long, env = "KAFKA_GROUP", default_value = "helpdesk-tickets-example")]
    group: String,
    /// Stop after N events.
    #[arg(long, env = "COUNT", default_value_t = 10)]
    count: usize,
    /// Give up after S seconds.
    #[arg(long, env = "TIMEOUT", default_value_t = 60.0)]
    timeout: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest") // a new group starts at the oldest event
        .set("enable.auto.commit", "false") // commit after handling: at-least-once
        .set("session.timeout.ms", "6000")
        .create()?;
    consumer.subscribe(&[&args.topic])?;

    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let mut seen = 0;
    while seen < args.count {
        let msg = match timeout_at(deadline, consumer.recv()).await {
            Err(_) => break, // deadline passed
            Ok(msg) => msg?,
        };
        let event = TicketCreated::from_message(
            Binding::Kafka,
            |name| header(&msg, name),
            msg.payload().unwrap_or_default(),
        )?;
        handle(&event);
        consumer.commit_message(&msg, CommitMode::Sync)?;
        seen += 1;
    }
    if seen < args.count {
        eprintln!(
            "only {seen} of {} events within {} s",
            args.count, args.timeout
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The value of the Kafka header `name` (ASCII case-insensitive), as UTF-8.
fn header(msg: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Your business logic. `event.data` is the normalized ticket
/// (schemas/helpdesk.ticket.created.v1.json) as `lark_protocol`'s `TicketData`.
fn handle(event: &TicketCreated) {
    println!(
        "ticket id={} type={} ticket_id={} helpdesk_id={}",
        event.id, event.ty, event.data.ticket_id, event.data.helpdesk_id
    );
}
