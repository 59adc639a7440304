//! The consumer contract stays in sync with the code: `schemas/asyncapi.yaml` declares the
//! channels the default config publishes to, the headers the sinks really set in each mode, and
//! payload schemas that exist and carry the `dataschema` the events name. Dead letters (issue
//! 17) included: their channels, their headers in both modes, and their envelope schema.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use lark_bridge::config::{Config, ContentMode, SecretFiles};
use lark_bridge::sink::route::{nats_token_char, render_template};
use lark_protocol::event::{EventClass, Outgoing, RouteVars};
use rdkafka::message::Headers;
use serde_yaml_ng::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn asyncapi() -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(root().join("schemas/asyncapi.yaml")).unwrap())
        .unwrap()
}

fn seed_event() -> lark_protocol::event::Outgoing {
    let input = std::fs::read(root().join("tests/golden/seed.input.json")).unwrap();
    let ev = fake_lark::kit::plain_event(&input).unwrap();
    lark_protocol::normalize::ticket_created::normalize(&ev, 0, &mut Vec::new()).unwrap()
}

/// When the bridge received the events built here (the `time` fallback), Unix ms.
const RECEIVED_MS: i64 = 1_700_000_000_123;
/// The normalizer's message for a ticket without `helpdesk_id` (`deadletterreason`).
const REASON: &str = "helpdesk_id is missing";

/// The seed ticket without `helpdesk_id`, which the normalizer refuses.
fn unnormalizable_seed() -> Vec<u8> {
    let input = std::fs::read(root().join("tests/golden/seed.input.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&input).unwrap();
    v["event"].as_object_mut().unwrap().remove("helpdesk_id");
    serde_json::to_vec(&v).unwrap()
}

/// The dead letter the bridge publishes for [`unnormalizable_seed`].
fn deadletter_event() -> Outgoing {
    let ev = fake_lark::kit::plain_event(&unnormalizable_seed()).unwrap();
    let refused =
        lark_protocol::normalize::ticket_created::normalize(&ev, RECEIVED_MS, &mut Vec::new())
            .expect_err("the normalizer refuses a ticket without helpdesk_id");
    assert_eq!(refused.to_string(), REASON);
    let out = lark_protocol::normalize::deadletter::normalize(
        &ev,
        &refused.to_string(),
        RECEIVED_MS,
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(out.class, EventClass::DeadLetter);
    out
}

/// A message's declared headers, from `#/components/messages/{name}`: following `$ref`s into
/// `#/components/schemas` and merging `allOf`: the required and declared names, and each
/// declared `const` and `pattern`.
struct Declared {
    required: BTreeSet<String>,
    props: BTreeSet<String>,
    consts: BTreeMap<String, String>,
    patterns: BTreeMap<String, String>,
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => {
            let path = r.strip_prefix("#/").expect("a local $ref");
            let mut cur = doc;
            for seg in path.split('/') {
                cur = &cur[seg];
            }
            assert!(!cur.is_null(), "unresolvable $ref {r}");
            resolve(doc, cur)
        }
        None => v,
    }
}

fn collect(doc: &Value, schema: &Value, out: &mut Declared) {
    let schema = resolve(doc, schema);
    if let Some(parts) = schema["allOf"].as_sequence() {
        for part in parts {
            collect(doc, part, out);
        }
    }
    if let Some(req) = schema["required"].as_sequence() {
        out.required
            .extend(req.iter().map(|v| v.as_str().unwrap().to_string()));
    }
    if let Some(props) = schema["properties"].as_mapping() {
        for (k, v) in props {
            let k = k.as_str().unwrap().to_string();
            if let Some(c) = v["const"].as_str() {
                out.consts.insert(k.clone(), c.to_string());
            }
            if let Some(p) = v["pattern"].as_str() {
                out.patterns.insert(k.clone(), p.to_string());
            }
            out.props.insert(k);
        }
    }
}

/// The headers declared for the message `mode` ("structured"/"binary") of `channel`.
fn declared_headers(doc: &Value, channel: &str, mode: &str) -> Declared {
    let msg = resolve(doc, &doc["channels"][channel]["messages"][mode]);
    assert!(!msg.is_null(), "channel {channel} has no {mode} message");
    let mut d = Declared {
        required: BTreeSet::new(),
        props: BTreeSet::new(),
        consts: BTreeMap::new(),
        patterns: BTreeMap::new(),
    };
    collect(doc, &msg["headers"], &mut d);
    d
}

/// The payload `$ref` of the message `mode` of `channel`.
fn declared_payload(doc: &Value, channel: &str, mode: &str) -> String {
    let msg = resolve(doc, &doc["channels"][channel]["messages"][mode]);
    msg["payload"]["$ref"].as_str().unwrap().to_string()
}

/// What a sink sent against what the channel declares: every required header sent, nothing
/// undeclared sent, every `const` header sent with that value, every `pattern` matched (the
/// patterns used here are `^prefix` only).
fn assert_headers_declared(what: &str, sent: &BTreeMap<String, String>, d: &Declared) {
    let names: BTreeSet<String> = sent.keys().cloned().collect();
    assert!(
        d.required.is_subset(&names),
        "{what}: required {:?} not sent; sent {names:?}",
        d.required.difference(&names).collect::<Vec<_>>()
    );
    assert!(
        names.is_subset(&d.props),
        "{what}: sent {:?} not declared",
        names.difference(&d.props).collect::<Vec<_>>()
    );
    for (k, want) in &d.consts {
        if let Some(got) = sent.get(k) {
            assert_eq!(got, want, "{what}: header {k} is declared const {want:?}");
        }
    }
    for (k, pattern) in &d.patterns {
        let prefix = pattern
            .strip_prefix('^')
            .filter(|p| !p.contains(['*', '+', '?', '[', '(', '$', '\\']))
            .unwrap_or_else(|| panic!("{what}: pattern {pattern:?} of {k} is not a plain ^prefix"));
        if let Some(got) = sent.get(k) {
            assert!(
                got.starts_with(prefix),
                "{what}: {k} = {got:?} does not match {pattern:?}"
            );
        }
    }
}

fn nats_sent(ev: &Outgoing, mode: ContentMode) -> BTreeMap<String, String> {
    let h = lark_bridge::sink::nats::headers(ev, mode);
    h.iter()
        .map(|(k, _)| {
            let k = k.to_string();
            let v = h.get(k.as_str()).unwrap().as_str().to_string();
            (k, v)
        })
        .collect()
}

fn kafka_sent(ev: &Outgoing, mode: ContentMode) -> BTreeMap<String, String> {
    let h = lark_bridge::sink::kafka::headers(ev, mode);
    h.iter()
        .map(|x| {
            let v = std::str::from_utf8(x.value.unwrap()).unwrap().to_string();
            (x.key.to_string(), v)
        })
        .collect()
}

fn header_schema(doc: &Value, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let s = &doc["components"]["schemas"][name];
    let required = s["required"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let props = s["properties"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    (required, props)
}

fn defaults() -> Config {
    Config::load_from(
        None,
        &[("LARK_BRIDGE__LARK__ENCRYPT_KEY".into(), "k".into())],
        SecretFiles::Read,
    )
    .unwrap()
}

#[test]
fn channel_addresses_are_the_default_topics_and_subjects() {
    let doc = asyncapi();
    let addresses: BTreeSet<String> = doc["channels"]
        .as_mapping()
        .unwrap()
        .values()
        .map(|c| c["address"].as_str().unwrap().to_string())
        .collect();
    let cfg = defaults();
    // Every class's default topic and subject, the helpdesk family's included.
    let kafka = cfg.sink.kafka.topic_templates();
    let nats = cfg.sink.nats.subject_templates();
    assert_eq!(kafka.len() + nats.len(), 12);
    for (key, want) in kafka.iter().chain(nats.iter()) {
        assert!(
            addresses.contains(&want.to_string()),
            "asyncapi.yaml has no channel {want} ({key}): {addresses:?}"
        );
    }
    assert_eq!(addresses.len(), 12, "a channel no default publishes to");
    // The family's channels are named after their type and carry its schemas.
    for (class, channel) in [
        (EventClass::TicketCreated, "ticketCreated"),
        (EventClass::TicketUpdated, "ticketUpdated"),
        (EventClass::TicketMessageCreated, "ticketMessageCreated"),
        (EventClass::NotificationApprove, "notificationApprove"),
    ] {
        let address = |c: &str| doc["channels"][c]["address"].as_str().unwrap().to_string();
        assert_eq!(
            address(&format!("{channel}Kafka")),
            cfg.sink.kafka.topic_for(class).to_string()
        );
        assert_eq!(
            address(&format!("{channel}Nats")),
            cfg.sink.nats.subject_for(class).to_string()
        );
        // The default topic is the CloudEvents type with `lark.` for `com.larksuite.`, inside
        // the stream's `lark.helpdesk.>`.
        let topic = format!(
            "lark.{}",
            class
                .cloudevents_type()
                .strip_prefix("com.larksuite.")
                .unwrap()
        );
        assert_eq!(cfg.sink.kafka.topic_for(class).to_string(), topic);
        assert_eq!(
            cfg.sink.nats.subject_for(class).to_string(),
            format!("{topic}.{{helpdesk_id}}")
        );
        assert!(topic.starts_with("lark.helpdesk."));
        let file = class
            .dataschema()
            .strip_prefix("urn:lark-bridge:schema:")
            .unwrap()
            .replace(":v1", ".v1.json");
        for c in [format!("{channel}Kafka"), format!("{channel}Nats")] {
            assert_eq!(
                declared_payload(&doc, &c, "structured"),
                format!("./cloudevent.{file}")
            );
            assert_eq!(declared_payload(&doc, &c, "binary"), format!("./{file}"));
        }
    }
    assert!(cfg
        .sink
        .nats
        .stream_subjects
        .contains(&"lark.helpdesk.>".to_string()));
    // The NATS subject the seed event really goes to matches the templated address.
    let vars = RouteVars {
        helpdesk_id: Some("6626871355780366330".into()),
        ..Default::default()
    };
    assert_eq!(
        render_template(&cfg.sink.nats.subject, &vars, nats_token_char),
        "lark.helpdesk.ticket.created.v1.6626871355780366330"
    );
}

#[test]
fn nats_headers_match_the_declared_headers_in_both_modes() {
    let doc = asyncapi();
    let ev = seed_event();
    for (mode, schema) in [
        (ContentMode::Structured, "natsStructuredHeaders"),
        (ContentMode::Binary, "natsBinaryHeaders"),
    ] {
        let h = lark_bridge::sink::nats::headers(&ev, mode);
        let sent: BTreeSet<String> = h.iter().map(|(k, _)| k.to_string()).collect();
        if mode == ContentMode::Structured {
            // A `ce-` header makes CloudEvents readers take the message as binary mode.
            assert_eq!(
                sent,
                BTreeSet::from(["Nats-Msg-Id".to_string(), "Content-Type".to_string()]),
                "structured mode carries Nats-Msg-Id and Content-Type only"
            );
        }
        let (required, props) = header_schema(&doc, schema);
        assert!(
            required.is_subset(&sent),
            "{schema}: required {required:?}, sent {sent:?}"
        );
        assert!(
            sent.is_subset(&props),
            "{schema}: sent {sent:?} not all declared {props:?}"
        );
    }
}

#[test]
fn kafka_headers_match_the_declared_headers_in_both_modes() {
    let doc = asyncapi();
    let ev = seed_event();
    for (mode, schema) in [
        (ContentMode::Structured, "kafkaStructuredHeaders"),
        (ContentMode::Binary, "kafkaBinaryHeaders"),
    ] {
        let h = lark_bridge::sink::kafka::headers(&ev, mode);
        let sent: BTreeSet<String> = h.iter().map(|x| x.key.to_string()).collect();
        if mode == ContentMode::Structured {
            // A `ce_` header makes the CloudEvents SDKs' from_kafka read the record as binary.
            assert_eq!(
                sent,
                BTreeSet::from(["content-type".to_string()]),
                "structured mode carries content-type only"
            );
        }
        let (required, props) = header_schema(&doc, schema);
        assert!(
            required.is_subset(&sent),
            "{schema}: required {required:?}, sent {sent:?}"
        );
        assert!(
            sent.is_subset(&props),
            "{schema}: sent {sent:?} not all declared {props:?}"
        );
    }
}

#[test]
fn payload_schemas_exist_and_carry_the_dataschema_urns() {
    let text = std::fs::read_to_string(root().join("schemas/asyncapi.yaml")).unwrap();
    let refs: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("$ref: './"))
        .map(|r| r.trim_end_matches('\''))
        .collect();
    assert!(refs.len() >= 4, "{refs:?}");
    for r in &refs {
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root().join("schemas").join(r)).unwrap())
                .unwrap();
        assert!(schema["$id"].is_string(), "{r} has no $id");
    }
    let data: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/helpdesk.ticket.created.v1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(data["$id"], seed_event().attrs.dataschema);
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("schemas/raw.v1.json")).unwrap())
            .unwrap();
    assert_eq!(raw["$id"], lark_protocol::event::RAW_SCHEMA);
}

/// The dead-letter channels are the default dead-letter topic and subject (of
/// `Config::default()` and of a loaded config alike); the subject a dead letter really goes to
/// is the channel's address with `{event_type}` filled in; the stream a bridge creates by
/// default captures it.
#[test]
fn deadletter_channels_are_the_default_topic_and_subject() {
    let doc = asyncapi();
    let address = |c: &str| doc["channels"][c]["address"].as_str().unwrap().to_string();
    for cfg in [Config::default(), defaults()] {
        assert_eq!(
            address("deadLetterKafka"),
            cfg.sink.kafka.deadletter_topic.to_string()
        );
        assert_eq!(
            address("deadLetterNats"),
            cfg.sink.nats.deadletter_subject.to_string()
        );
        assert!(
            cfg.sink
                .nats
                .stream_subjects
                .iter()
                .any(|s| s == "lark.deadletter.v1.>"),
            "the created stream does not capture dead letters: {:?}",
            cfg.sink.nats.stream_subjects
        );
    }
    assert_eq!(
        doc["channels"]["deadLetterKafka"]["bindings"]["kafka"]["topic"].as_str(),
        Some(address("deadLetterKafka").as_str())
    );
    let cfg = Config::default();
    let ev = deadletter_event();
    assert_eq!(
        render_template(
            &cfg.sink.nats.deadletter_subject,
            &ev.route,
            nats_token_char
        ),
        "lark.deadletter.v1.helpdesk_ticket_created_v1"
    );
    // The `{event_type}` parameter is declared.
    assert!(doc["channels"]["deadLetterNats"]["parameters"]["event_type"].is_mapping());
    // Both are sent to by an operation.
    let sent_to: BTreeSet<String> = doc["operations"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|o| o["action"].as_str() == Some("send"))
        .filter_map(|o| o["channel"]["$ref"].as_str())
        .map(str::to_owned)
        .collect();
    for c in ["deadLetterKafka", "deadLetterNats"] {
        assert!(
            sent_to.contains(&format!("#/channels/{c}")),
            "no send operation on {c}"
        );
    }
}

/// The headers the NATS sink sets on a dead letter are the ones its channel declares, in both
/// modes; `Nats-Msg-Id` is `deadletter:{id}`; binary mode carries the reason.
#[test]
fn deadletter_nats_headers_match_the_declared_headers_in_both_modes() {
    let doc = asyncapi();
    let ev = deadletter_event();
    for (mode, name) in [
        (ContentMode::Structured, "structured"),
        (ContentMode::Binary, "binary"),
    ] {
        let sent = nats_sent(&ev, mode);
        let d = declared_headers(&doc, "deadLetterNats", name);
        assert_headers_declared(&format!("deadLetterNats {name}"), &sent, &d);
        assert_eq!(
            sent["Nats-Msg-Id"],
            format!("deadletter:{}", ev.attrs.id),
            "{name}: a dead letter's Nats-Msg-Id"
        );
        if mode == ContentMode::Structured {
            assert_eq!(
                sent.keys().cloned().collect::<BTreeSet<_>>(),
                BTreeSet::from(["Nats-Msg-Id".to_string(), "Content-Type".to_string()]),
                "structured mode carries Nats-Msg-Id and Content-Type only"
            );
        } else {
            assert!(
                d.required.contains("ce-deadletterreason"),
                "{:?}",
                d.required
            );
            assert_eq!(
                lark_protocol::consumer::percent_decode(&sent["ce-deadletterreason"]).as_deref(),
                Some(REASON)
            );
            assert_eq!(sent["ce-type"], lark_protocol::event::RAW_TYPE);
            assert_eq!(sent["ce-dataschema"], lark_protocol::event::RAW_SCHEMA);
        }
    }
}

/// The headers the Kafka sink sets on a dead letter are the ones its channel declares, in
/// both modes; binary mode carries the reason.
#[test]
fn deadletter_kafka_headers_match_the_declared_headers_in_both_modes() {
    let doc = asyncapi();
    let ev = deadletter_event();
    for (mode, name) in [
        (ContentMode::Structured, "structured"),
        (ContentMode::Binary, "binary"),
    ] {
        let sent = kafka_sent(&ev, mode);
        let d = declared_headers(&doc, "deadLetterKafka", name);
        assert_headers_declared(&format!("deadLetterKafka {name}"), &sent, &d);
        if mode == ContentMode::Structured {
            assert_eq!(
                sent.keys().cloned().collect::<BTreeSet<_>>(),
                BTreeSet::from(["content-type".to_string()]),
                "structured mode carries content-type only"
            );
        } else {
            assert!(
                d.required.contains("ce_deadletterreason"),
                "{:?}",
                d.required
            );
            assert_eq!(sent["ce_deadletterreason"], REASON);
            assert_eq!(sent["ce_type"], lark_protocol::event::RAW_TYPE);
        }
    }
    // The key: the tenant key (the seed has one).
    assert_eq!(ev.key(), "2ca1d211f64f6438");
}

/// The other channels' declared headers, `const`s included, match what the sinks set too
/// (the dead-letter ones extend the same header schemas).
#[test]
fn every_channel_declares_what_the_sinks_set() {
    let doc = asyncapi();
    let ticket = seed_event();
    let raw = {
        let input = std::fs::read(root().join("tests/golden/seed.input.json")).unwrap();
        let ev = fake_lark::kit::plain_event(&input).unwrap();
        lark_protocol::normalize::raw::normalize(&ev, RECEIVED_MS, &mut Vec::new()).unwrap()
    };
    let dead = deadletter_event();
    let family = |name: &str| {
        let input =
            std::fs::read(root().join(format!("tests/golden/{name}.full.input.json"))).unwrap();
        let ev = fake_lark::kit::plain_event(&input).unwrap();
        lark_protocol::normalize::normalizer(ev.event_type()).unwrap()(
            &ev,
            RECEIVED_MS,
            &mut Vec::new(),
        )
        .unwrap()
    };
    let updated = family("ticket-updated");
    let message = family("ticket-message");
    let approve = family("notification-approve");
    for (channel, ev) in [
        ("ticketCreated", &ticket),
        ("ticketUpdated", &updated),
        ("ticketMessageCreated", &message),
        ("notificationApprove", &approve),
        ("raw", &raw),
        ("deadLetter", &dead),
    ] {
        for (mode, name) in [
            (ContentMode::Structured, "structured"),
            (ContentMode::Binary, "binary"),
        ] {
            let c = format!("{channel}Nats");
            assert_headers_declared(
                &format!("{c} {name}"),
                &nats_sent(ev, mode),
                &declared_headers(&doc, &c, name),
            );
            let c = format!("{channel}Kafka");
            assert_headers_declared(
                &format!("{c} {name}"),
                &kafka_sent(ev, mode),
                &declared_headers(&doc, &c, name),
            );
        }
    }
    // Only a dead letter carries the reason.
    assert!(!kafka_sent(&raw, ContentMode::Binary).contains_key("ce_deadletterreason"));
    assert!(!nats_sent(&ticket, ContentMode::Binary).contains_key("ce-deadletterreason"));
}

/// The dead-letter channels' payloads: the structured message is the dead-letter envelope
/// schema, which validates the event the bridge publishes (and refuses it without the reason
/// or as another type); the binary message is `data` alone, the raw data schema.
#[test]
fn deadletter_schema_validates_the_published_dead_letter() {
    let doc = asyncapi();
    for c in ["deadLetterKafka", "deadLetterNats"] {
        assert_eq!(
            declared_payload(&doc, c, "structured"),
            "./cloudevent.deadletter.v1.json"
        );
        assert_eq!(declared_payload(&doc, c, "binary"), "./raw.v1.json");
    }
    let ev = deadletter_event();
    let validator =
        fake_lark::kit::schema_validator("cloudevent.deadletter.v1.json", "raw.v1.json");
    let structured: serde_json::Value = serde_json::from_slice(&ev.structured).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&structured)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{structured:#}");
    assert_eq!(structured["deadletterreason"], REASON);
    assert_eq!(structured["type"], lark_protocol::event::RAW_TYPE);
    assert_eq!(structured["dataschema"], lark_protocol::event::RAW_SCHEMA);
    // Binary mode's body is the structured event's data.
    let data: serde_json::Value = serde_json::from_slice(&ev.data).unwrap();
    assert_eq!(data, structured["data"]);
    let raw_data = jsonschema::validator_for(&fake_lark::kit::read_schema("raw.v1.json")).unwrap();
    assert!(raw_data.is_valid(&data));
    // The schema is not vacuous: no reason, or a normalized event, is not a dead letter.
    let mut no_reason = structured.clone();
    no_reason
        .as_object_mut()
        .unwrap()
        .remove("deadletterreason");
    assert!(!validator.is_valid(&no_reason));
    let ticket: serde_json::Value = serde_json::from_slice(&seed_event().structured).unwrap();
    assert!(!validator.is_valid(&ticket));
    // A forwarded raw event is not a dead letter either (the envelope schemas are distinct).
    let raw_validator = fake_lark::kit::schema_validator("cloudevent.raw.v1.json", "raw.v1.json");
    assert!(
        !raw_validator.is_valid(&structured),
        "cloudevent.raw.v1.json takes a dead letter"
    );
}

/// The envelope schemas reference their data schema by relative file name (what the AsyncAPI
/// tooling resolves, not the `$id` URN), and that file is the one whose `$id` the events name as
/// `dataschema`.
#[test]
fn envelope_schemas_reference_their_data_schema_by_file() {
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(root().join("schemas").join(name)).unwrap())
            .unwrap()
    };
    for (envelope, data) in [
        (
            "cloudevent.helpdesk.ticket.created.v1.json",
            "helpdesk.ticket.created.v1.json",
        ),
        (
            "cloudevent.helpdesk.ticket.updated.v1.json",
            "helpdesk.ticket.updated.v1.json",
        ),
        (
            "cloudevent.helpdesk.ticket_message.created.v1.json",
            "helpdesk.ticket_message.created.v1.json",
        ),
        (
            "cloudevent.helpdesk.notification.approve.v1.json",
            "helpdesk.notification.approve.v1.json",
        ),
        ("cloudevent.raw.v1.json", "raw.v1.json"),
        ("cloudevent.deadletter.v1.json", "raw.v1.json"),
    ] {
        let env = read(envelope);
        assert_eq!(env["$id"], envelope, "{envelope}: $id is its file name");
        assert_eq!(
            env["properties"]["data"]["$ref"],
            format!("./{data}"),
            "{envelope}: data must $ref ./{data}"
        );
        assert_eq!(
            env["properties"]["dataschema"]["const"],
            read(data)["$id"],
            "{envelope}: dataschema is not the $id of {data}"
        );
    }
}

/// The README's metrics list (the `/metrics` bullet of "Operating it") names exactly the
/// metrics a bridge exports: nothing missing, nothing stale. `_connects_total`-style short
/// names there continue `lark_bridge_longconn_`.
#[test]
fn readme_lists_exactly_the_exported_metrics() {
    use lark_bridge::metrics::{Metrics, Source};
    let exported: BTreeSet<String> = Metrics::new(Source::Webhook, "nats", "redis")
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("`GET :9090/metrics`")
        .expect("the metrics bullet");
    let end = start + readme[start..].find("Alert rules:").expect("its end");
    let mut listed = BTreeSet::new();
    for token in readme[start..end].split('`').skip(1).step_by(2) {
        let name = token.split('{').next().unwrap_or("");
        let name = if let Some(short) = name.strip_prefix('_') {
            format!("lark_bridge_longconn_{short}")
        } else {
            name.to_string()
        };
        if name.starts_with("lark_bridge_") {
            listed.insert(name);
        }
    }
    let missing: Vec<_> = exported.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&exported).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README metrics list: missing {missing:?}, not exported {stale:?}"
    );
}

/// With traces on, the trace context (CloudEvents distributed-tracing extension) travels as
/// declared: `ce_traceparent` / `ce-traceparent` (and tracestate) headers in binary mode, JSON
/// attributes that every envelope schema accepts in structured mode — and never as a header
/// there (a `ce_` header would make the SDKs read the message as binary).
#[test]
fn the_trace_context_travels_as_declared_in_both_modes() {
    use lark_protocol::event::TraceContext;
    let doc = asyncapi();
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let trace = Some(TraceContext {
        traceparent: tp.into(),
        tracestate: Some("congo=t61rcWkgMzE".into()),
    });
    for (mut ev, channel, envelope, data) in [
        (
            seed_event(),
            "ticketCreated",
            "cloudevent.helpdesk.ticket.created.v1.json",
            "helpdesk.ticket.created.v1.json",
        ),
        (
            deadletter_event(),
            "deadLetter",
            "cloudevent.deadletter.v1.json",
            "raw.v1.json",
        ),
    ] {
        ev.trace = trace.clone();
        for (mode, name) in [
            (ContentMode::Structured, "structured"),
            (ContentMode::Binary, "binary"),
        ] {
            let nats = nats_sent(&ev, mode);
            let kafka = kafka_sent(&ev, mode);
            assert_headers_declared(
                &format!("{channel}Nats {name}"),
                &nats,
                &declared_headers(&doc, &format!("{channel}Nats"), name),
            );
            assert_headers_declared(
                &format!("{channel}Kafka {name}"),
                &kafka,
                &declared_headers(&doc, &format!("{channel}Kafka"), name),
            );
            match mode {
                ContentMode::Structured => {
                    assert!(
                        !nats.keys().chain(kafka.keys()).any(|k| k.contains("trace")),
                        "structured mode: no trace header"
                    );
                }
                ContentMode::Binary => {
                    assert_eq!(nats["ce-traceparent"], tp);
                    assert_eq!(kafka["ce_traceparent"], tp);
                    assert_eq!(nats["ce-tracestate"], "congo=t61rcWkgMzE");
                    assert_eq!(kafka["ce_tracestate"], "congo=t61rcWkgMzE");
                }
            }
        }
        let body: serde_json::Value = serde_json::from_slice(&ev.structured_body()).unwrap();
        assert_eq!(body["traceparent"], tp);
        let v = fake_lark::kit::schema_validator(envelope, data);
        let errors: Vec<String> = v.iter_errors(&body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{envelope}: {errors:?}");
        // The pattern is not vacuous.
        let mut bad = body.clone();
        bad["traceparent"] = "00-xyz".into();
        assert!(
            !v.is_valid(&bad),
            "{envelope} accepts a malformed traceparent"
        );
    }
}
