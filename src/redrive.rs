//! `lark-bridge redrive`: move dead letters back to their normal destination once the
//! normalizer accepts them. It reads the dead letters (a durable JetStream consumer, or a Kafka
//! consumer group; names in `[deadletter]`), rebuilds each event from the letter's raw
//! envelope, runs the *current* normalizer over it, and:
//!
//! - publishes what now normalizes to its normal destination with its normal broker id (the
//!   event id: JetStream drops a second copy, so a redrive run twice publishes once) — not
//!   through the request path's dedup store, where the id is committed as dead-lettered;
//! - re-files what still fails as a new dead letter with its new reason;
//! - leaves letters of another reason alone with `--reason` (JetStream: handed back with a
//!   nak, so the next run sees them at once; Kafka: re-filed unchanged, since an offset
//!   cannot skip). A dry run hands every letter back the same way.
//!
//! A letter is acknowledged (committed) only after its publish or re-filing succeeded. A run
//! reads the letters that were on file when it started, not those it re-files itself.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use lark_protocol::consumer::{Binding, CloudEvent};
use lark_protocol::event::{EventClass, Outgoing};
use lark_protocol::normalize::{self, deadletter};
use lark_protocol::{Inbound, SignatureHeaders, Verifier};
use serde_json::{json, Value};

use crate::config::{Config, SinkKind};
use crate::secrets::now_ms;
use crate::sink::Sink;

/// Which broker holds the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedriveSink {
    /// NATS JetStream (`sink.nats.*`, consumer `deadletter.nats_consumer`).
    Nats,
    /// Kafka (`sink.kafka.*`, group `deadletter.kafka_group`).
    Kafka,
}

/// `lark-bridge redrive`.
#[derive(Debug, Clone, clap::Args)]
pub struct RedriveArgs {
    /// The broker that holds the dead letters (the config's `sink.nats` / `sink.kafka`).
    #[arg(long, value_enum)]
    pub sink: RedriveSink,
    /// Read and judge every letter, print what would happen; publish and acknowledge nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop after this many letters.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Only letters of this reason kind (missing_ticket_id, missing_helpdesk_id, serialize).
    #[arg(long)]
    pub reason: Option<String>,
    /// Stop once no letter arrived for this long, in ms.
    #[arg(long, default_value_t = 3000)]
    pub idle_ms: u64,
}

/// What a run did, per outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Letters read.
    pub read: u64,
    /// Published to their normal destination.
    pub redriven: u64,
    /// Still refused by the normalizer: re-filed with the new reason.
    pub still_failing: u64,
    /// Of another reason than `--reason`: left alone.
    pub skipped: u64,
    /// Not a dead letter this version can read: left alone (not acknowledged).
    pub unreadable: u64,
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// The arguments or the config do not allow a run.
    #[error("{0}")]
    Usage(String),
    /// The broker failed (read, publish or acknowledge); the message is scrubbed.
    #[error("broker: {0}")]
    Broker(String),
}

/// What to do with one letter.
#[derive(Debug)]
pub enum Verdict {
    /// It normalizes now: publish this to the normal destination.
    Redrive(Box<Outgoing>),
    /// It still fails: file this new dead letter.
    StillFailing(Box<Outgoing>),
    /// Another reason than asked for.
    Skip,
    /// Not a readable dead letter.
    Unreadable(String),
}

/// Judge one letter (pure): rebuild the event from its raw envelope and normalize it again.
pub fn judge(letter: &CloudEvent<Value>, reason: Option<&str>, forward_unknown: bool) -> Verdict {
    let Some(old_reason) = letter.deadletterreason.as_deref() else {
        return Verdict::Unreadable("no deadletterreason: not a dead letter".into());
    };
    if let Some(want) = reason {
        if deadletter::reason_kind(old_reason) != Some(want) {
            return Verdict::Skip;
        }
    }
    let Some(plain) = envelope(letter) else {
        return Verdict::Unreadable("data is not a raw envelope".into());
    };
    // The letter was verified when it arrived and comes from our own topic: read it as a
    // bridge without keys reads a plaintext event (the `allow_unverified` path).
    let open = Verifier::new(Vec::new(), Vec::new(), 0);
    let ev = match open.verify(SignatureHeaders::default(), &plain, 0) {
        Ok(Inbound::Event(ev)) => ev,
        Ok(Inbound::Challenge(_)) => return Verdict::Unreadable("a challenge".into()),
        Err(e) => return Verdict::Unreadable(e.to_string()),
    };
    let now = now_ms();
    let mut warnings = Vec::new();
    let normalized = if let Some(normalize) = normalize::normalizer(ev.event_type()) {
        normalize(&ev, now, &mut warnings)
    } else if forward_unknown {
        normalize::raw::normalize(&ev, now, &mut warnings)
    } else {
        return Verdict::Unreadable(format!(
            "event type {} is neither normalized nor forwarded (routing.forward_unknown)",
            ev.event_type()
        ));
    };
    match normalized {
        Ok(out) => Verdict::Redrive(Box::new(out)),
        Err(e) => match deadletter::normalize(&ev, &e.to_string(), now, &mut warnings) {
            Ok(mut refiled) => {
                // A new broker id: JetStream would drop it as a copy of the letter it replaces.
                refiled.msg_id_override = Some(format!(
                    "{}{}:{now}",
                    lark_protocol::event::DEADLETTER_ID_PREFIX,
                    refiled.attrs.id
                ));
                Verdict::StillFailing(Box::new(refiled))
            }
            Err(e) => Verdict::Unreadable(e.to_string()),
        },
    }
}

/// The plaintext Lark sent (minus the token), rebuilt from a raw envelope's `data`.
fn envelope(letter: &CloudEvent<Value>) -> Option<Vec<u8>> {
    let data = letter.data.as_object()?;
    let event = data.get("event")?;
    let body = match data.get("schema").and_then(Value::as_str) {
        Some(schema) => json!({
            "schema": schema,
            "header": data.get("header").cloned().unwrap_or(Value::Null),
            "event": event,
        }),
        // Legacy v1: the event carries its type, app and tenant; the id is the letter's.
        None => json!({"uuid": letter.id, "type": "event_callback", "event": event}),
    };
    serde_json::to_vec(&body).ok()
}

/// Progress on a terminal (stderr), every 100 letters.
struct Progress {
    on: bool,
}

impl Progress {
    fn tick(&self, c: &Counts) {
        if self.on && c.read.is_multiple_of(100) {
            eprint!(
                "\rread {}  redriven {}  still failing {}  skipped {}",
                c.read, c.redriven, c.still_failing, c.skipped
            );
        }
    }
    fn done(&self) {
        if self.on {
            eprintln!();
        }
    }
}

/// Run a redrive with `cfg` (its sink section names the broker; its `[deadletter]` the
/// consumer names). Prints one line per letter and returns the counts.
pub async fn run(cfg: &Config, args: &RedriveArgs) -> Result<Counts, RedriveError> {
    let want = match args.sink {
        RedriveSink::Nats => SinkKind::Nats,
        RedriveSink::Kafka => SinkKind::Kafka,
    };
    let mut cfg = cfg.clone();
    cfg.sink.kind = want;
    if let Some(r) = &args.reason {
        if !normalize::NormalizeError::KINDS.contains(&r.as_str()) {
            return Err(RedriveError::Usage(format!(
                "--reason {r}: not a reason kind (known: {})",
                normalize::NormalizeError::KINDS.join(", ")
            )));
        }
    }
    let sink = crate::build_sink(&cfg)
        .await
        .map_err(|e| RedriveError::Broker(e.to_string()))?;
    let progress = Progress {
        on: std::io::stderr().is_terminal(),
    };
    let counts = match args.sink {
        RedriveSink::Nats => nats::run(&cfg, args, sink.clone(), &progress).await,
        RedriveSink::Kafka => kafka::run(&cfg, args, sink.clone(), &progress).await,
    };
    progress.done();
    let _ = tokio::time::timeout(Duration::from_secs(10), sink.flush()).await;
    counts
}

/// Apply a verdict: publish (unless a dry run), print the line, count. `Ok(true)` means the
/// letter may be acknowledged.
async fn apply(
    sink: &Arc<dyn Sink>,
    letter: &CloudEvent<Value>,
    verdict: Verdict,
    dry_run: bool,
    counts: &mut Counts,
) -> Result<bool, RedriveError> {
    let id = &letter.id;
    let publish = |out: Box<Outgoing>| async move {
        if dry_run {
            return Ok(());
        }
        sink.publish(&out)
            .await
            .map(|_| ())
            .map_err(|e| RedriveError::Broker(e.to_string()))
    };
    let ack = match verdict {
        Verdict::Redrive(out) => {
            debug_assert_ne!(out.class, EventClass::DeadLetter);
            publish(out).await?;
            counts.redriven += 1;
            println!("{id} redriven");
            true
        }
        Verdict::StillFailing(out) => {
            let reason = out.attrs.deadletterreason.clone().unwrap_or_default();
            publish(out).await?;
            counts.still_failing += 1;
            println!("{id} still failing: {reason}");
            true
        }
        Verdict::Skip => {
            counts.skipped += 1;
            false
        }
        Verdict::Unreadable(why) => {
            counts.unreadable += 1;
            println!("{id} unreadable: {why}");
            false
        }
    };
    Ok(ack && !dry_run)
}

mod nats {
    use futures::StreamExt;

    use super::*;

    pub(super) async fn run(
        cfg: &Config,
        args: &RedriveArgs,
        sink: Arc<dyn Sink>,
        progress: &Progress,
    ) -> Result<Counts, RedriveError> {
        let n = &cfg.sink.nats;
        let broker = |e: &dyn std::fmt::Display| RedriveError::Broker(e.to_string());
        let opts = crate::natsconn::connect_options(&n.auth, "sink.nats")
            .await
            .map_err(|e| broker(&e))?;
        let client = opts
            .connect(n.url.expose())
            .await
            .map_err(|e| broker(&crate::secrets::redact_url(&e.to_string())))?;
        let js = async_nats::jetstream::new(client.clone());
        let mut stream = js.get_stream(&n.stream).await.map_err(|e| broker(&e))?;
        // The letters on file now; those this run re-files come after and wait for the next.
        let end = stream
            .info()
            .await
            .map_err(|e| broker(&e))?
            .state
            .last_sequence;
        let prefix = n.deadletter_subject.literal_prefix();
        let filter = if n.deadletter_subject.is_fixed() {
            n.deadletter_subject.to_string()
        } else {
            format!("{prefix}>")
        };
        let consumer = stream
            .get_or_create_consumer(
                &cfg.deadletter.nats_consumer,
                async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(cfg.deadletter.nats_consumer.clone()),
                    filter_subject: filter,
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| broker(&e))?;
        let mut counts = Counts::default();
        let idle = Duration::from_millis(args.idle_ms);
        let mut seen = std::collections::HashSet::new();
        // A stop condition does not leave the batch at once: its pull request would stay open
        // on the server and swallow what this run hands back. The rest of the batch is handed
        // back too, until the request ends (at most `idle`).
        let nak = async_nats::jetstream::AckKind::Nak(None);
        let mut stopping = false;
        loop {
            let mut batch = consumer
                .batch()
                .max_messages(100)
                .expires(idle)
                .messages()
                .await
                .map_err(|e| broker(&e))?;
            let mut got = 0;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| broker(&e))?;
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                if stopping || seq > end || !seen.insert(seq) {
                    // Re-filed by this run, handed back earlier in it, or past a stop: for the
                    // next run.
                    m.ack_with(nak).await.map_err(|e| broker(&e))?;
                    stopping = true;
                    continue;
                }
                got += 1;
                counts.read += 1;
                let header = |name: &str| {
                    m.headers.as_ref().and_then(|h| {
                        h.iter()
                            .find(|(k, _)| AsRef::<str>::as_ref(k).eq_ignore_ascii_case(name))
                            .and_then(|(_, v)| v.first())
                            .map(|v| v.as_str().to_string())
                    })
                };
                let ack = match CloudEvent::<Value>::from_message(Binding::Nats, header, &m.payload)
                {
                    Ok(letter) => {
                        let verdict =
                            judge(&letter, args.reason.as_deref(), cfg.routing.forward_unknown);
                        apply(&sink, &letter, verdict, args.dry_run, &mut counts).await?
                    }
                    Err(e) => {
                        counts.unreadable += 1;
                        println!("(seq {seq}) unreadable: {e}");
                        false
                    }
                };
                if ack {
                    m.double_ack().await.map_err(|e| broker(&e))?;
                } else {
                    // Skipped, unreadable or a dry run: back to the consumer at once.
                    m.ack_with(nak).await.map_err(|e| broker(&e))?;
                }
                progress.tick(&counts);
                if args.limit.is_some_and(|l| counts.read >= l) {
                    stopping = true;
                }
            }
            if stopping || got == 0 {
                break;
            }
        }
        // Naks are plain publishes: make sure they left before the connection is dropped.
        client.flush().await.map_err(|e| broker(&e))?;
        Ok(counts)
    }
}

mod kafka {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};

    use super::*;

    pub(super) async fn run(
        cfg: &Config,
        args: &RedriveArgs,
        sink: Arc<dyn Sink>,
        progress: &Progress,
    ) -> Result<Counts, RedriveError> {
        let k = &cfg.sink.kafka;
        if !k.deadletter_topic.is_fixed() {
            return Err(RedriveError::Usage(
                "sink.kafka.deadletter_topic has placeholders: redrive reads one fixed topic"
                    .into(),
            ));
        }
        let topic = k.deadletter_topic.to_string();
        let secrets: Vec<String> = k
            .properties
            .iter()
            .filter(|(name, _)| crate::config::is_secret_property(name))
            .map(|(_, v)| v.clone())
            .collect();
        let broker = |e: &dyn std::fmt::Display| {
            RedriveError::Broker(crate::secrets::scrub(e.to_string(), &secrets))
        };
        let mut cc = ClientConfig::new();
        for (name, value) in k.properties.iter() {
            cc.set(name, value);
        }
        cc.set("bootstrap.servers", &k.brokers)
            .set("group.id", &cfg.deadletter.kafka_group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        let consumer: StreamConsumer = cc.create().map_err(|e| broker(&e))?;
        // The letters on file now (per partition); those this run re-files come after.
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|e| broker(&e))?;
        let partitions = md
            .topics()
            .first()
            .map(|t| t.partitions().len() as i32)
            .unwrap_or(0);
        let mut ends = std::collections::HashMap::new();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .map_err(|e| broker(&e))?;
            ends.insert(p, (low, high));
            tpl.add_partition(&topic, p);
        }
        // Letters on file past the group's committed position: the run ends when it has seen
        // them all (a group join can take seconds, so "idle" alone cannot tell).
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| broker(&e))?;
        let mut pending: i64 = 0;
        for (p, (low, high)) in &ends {
            let from = match committed.find_partition(&topic, *p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o.max(*low),
                _ => *low,
            };
            pending += (high - from).max(0);
        }
        if pending == 0 {
            return Ok(Counts::default());
        }
        consumer.subscribe(&[&topic]).map_err(|e| broker(&e))?;
        let mut counts = Counts::default();
        let idle = Duration::from_millis(args.idle_ms);
        let join = Duration::from_secs(30).max(idle);
        while (counts.read as i64) < pending {
            let wait = if counts.read == 0 { join } else { idle };
            let m = match tokio::time::timeout(wait, consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(broker(&e)),
                Ok(Ok(m)) => m,
            };
            if m.offset() >= ends.get(&m.partition()).map_or(0, |e| e.1) {
                // Re-filed by this run (or newer): left for the next run, uncommitted.
                continue;
            }
            counts.read += 1;
            let header = |name: &str| {
                m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key.eq_ignore_ascii_case(name))
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            let body = m.payload().unwrap_or_default();
            let commit = match CloudEvent::<Value>::from_message(Binding::Kafka, header, body) {
                Ok(letter) => {
                    let verdict =
                        judge(&letter, args.reason.as_deref(), cfg.routing.forward_unknown);
                    // An offset cannot skip a letter: one of another reason is re-filed as it is.
                    let verdict = match verdict {
                        Verdict::Skip => match refile_unchanged(&letter) {
                            Some(out) => {
                                if !args.dry_run {
                                    sink.publish(&out).await.map_err(|e| broker(&e))?;
                                }
                                counts.skipped += 1;
                                None
                            }
                            None => Some(Verdict::Unreadable("cannot re-file".into())),
                        },
                        v => Some(v),
                    };
                    match verdict {
                        Some(v) => apply(&sink, &letter, v, args.dry_run, &mut counts).await?,
                        None => !args.dry_run,
                    }
                }
                Err(e) => {
                    counts.unreadable += 1;
                    println!("(offset {}) unreadable: {e}", m.offset());
                    false
                }
            };
            if commit {
                consumer
                    .commit_message(&m, CommitMode::Sync)
                    .map_err(|e| broker(&e))?;
            } else if !args.dry_run {
                // Unreadable letters stay where they are: stop rather than commit past them.
                if counts.unreadable > 0 {
                    break;
                }
            }
            progress.tick(&counts);
            if args.limit.is_some_and(|l| counts.read >= l) {
                break;
            }
        }
        Ok(counts)
    }

    /// The same letter, to be re-filed as it is (same reason, a new broker position).
    fn refile_unchanged(letter: &CloudEvent<Value>) -> Option<Box<Outgoing>> {
        let plain = super::envelope(letter)?;
        let open = Verifier::new(Vec::new(), Vec::new(), 0);
        let Ok(Inbound::Event(ev)) = open.verify(SignatureHeaders::default(), &plain, 0) else {
            return None;
        };
        let mut warnings = Vec::new();
        deadletter::normalize(
            &ev,
            letter.deadletterreason.as_deref().unwrap_or_default(),
            now_ms(),
            &mut warnings,
        )
        .ok()
        .map(Box::new)
    }
}
