//! Read lark-bridge's helpdesk tickets from NATS JetStream with async-nats, as typed events of
//! the `lark-protocol` crate.
//!
//! Handles both content modes the bridge publishes (`sink.mode`): structured (the whole
//! CloudEvent as JSON, headers `Nats-Msg-Id` and `Content-Type` only) and binary (`data` as the
//! body, attributes in `ce-` headers, percent-encoded per the CloudEvents NATS binding).
//! `TicketCreated::from_message` tells them apart by the `ce-` headers and percent-decodes the
//! values.
//!
//! ```sh
//! cargo run --example nats_consumer -- --url nats://127.0.0.1:4222 --count 10
//! ```
//!
//! Prints one line per ticket and exits after `--count` events or `--timeout` seconds (status 1
//! when fewer arrived). Uses a durable pull consumer: run it again and it resumes after the last
//! acknowledged event.
//!
//! In your own service: depend on `lark-protocol` (for the types), `async-nats`, `futures`,
//! `tokio`, `clap` and `anyhow`.

use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::HeaderMap;
use clap::Parser;
use futures::StreamExt;
use lark_protocol::consumer::{Binding, TicketCreated};
use tokio::time::{timeout_at, Instant};

/// Read lark-bridge's helpdesk tickets from NATS JetStream (either content mode).
#[derive(Parser)]
struct Args {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// The JetStream stream the bridge publishes to (`sink.nats.stream`).
    #[arg(long, env = "NATS_STREAM", default_value = "LARK_HELPDESK")]
    stream: String,
    /// Subjects to read (the bridge's subject template, per helpdesk).
    #[arg(
        long,
        env = "NATS_SUBJECT",
        default_value = "lark.helpdesk.ticket.created.v1.>"
    )]
    subject: String,
    /// Durable consumer name: a second run resumes where this one stopped.
    #[arg(long, env = "NATS_DURABLE", default_value = "helpdesk-tickets-example")]
    durable: String,
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
    let client = async_nats::connect(&args.url).await?;
    let js = async_nats::jetstream::new(client.clone());
    let consumer = js
        .get_stream(&args.stream)
        .await?
        .get_or_create_consumer(
            &args.durable,
            pull::Config {
                durable_name: Some(args.durable.clone()),
                filter_subject: args.subject.clone(),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;

    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let mut seen = 0;
    while seen < args.count {
        let msg = match timeout_at(deadline, messages.next()).await {
            Err(_) | Ok(None) => break, // deadline passed, or the stream ended
            Ok(Some(msg)) => msg?,
        };
        let headers = msg.headers.as_ref();
        let event = TicketCreated::from_message(
            Binding::Nats,
            |name| headers.and_then(|h| header(h, name)),
            &msg.payload,
        )?;
        handle(&event);
        msg.ack().await.map_err(anyhow::Error::from_boxed)?;
        seen += 1;
    }
    client.drain().await?;
    if seen < args.count {
        eprintln!(
            "only {seen} of {} events within {} s",
            args.count, args.timeout
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The first value of the NATS header `name` (ASCII case-insensitive), as sent: `ce-` values
/// are still percent-encoded (`from_message` decodes them).
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| AsRef::<str>::as_ref(k).eq_ignore_ascii_case(name))
        .and_then(|(_, values)| values.first())
        .map(|v| v.as_str().to_string())
}

/// Your business logic. `event.data` is the normalized ticket
/// (schemas/helpdesk.ticket.created.v1.json) as `lark_protocol`'s `TicketData`.
fn handle(event: &TicketCreated) {
    println!(
        "ticket id={} type={} ticket_id={} helpdesk_id={}",
        event.id, event.ty, event.data.ticket_id, event.data.helpdesk_id
    );
}
