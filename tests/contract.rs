//! The consumer contract stays in sync with the code: `schemas/asyncapi.yaml` declares the
//! channels the default config publishes to, the headers the sinks really set in each mode, and
//! payload schemas that exist and carry the `dataschema` the events name.

use std::collections::BTreeSet;
use std::path::Path;

use lark_bridge::config::{Config, ContentMode, SecretFiles};
use lark_bridge::sink::route::{nats_token_char, render_template};
use lark_protocol::event::RouteVars;
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
    for want in [
        &cfg.sink.kafka.topic,
        &cfg.sink.kafka.raw_topic,
        &cfg.sink.nats.subject,
        &cfg.sink.nats.raw_subject,
    ] {
        assert!(
            addresses.contains(&want.to_string()),
            "asyncapi.yaml has no channel {want}: {addresses:?}"
        );
    }
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
        ("cloudevent.raw.v1.json", "raw.v1.json"),
    ] {
        let env = read(envelope);
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
