//! Golden tests of the normalizer (normalized-schema.md): every `tests/golden/NAME.input.json`
//! normalizes to exactly the JSON value of `NAME.normalized.json`, and every output (and every
//! golden file) validates against the published JSON Schemas, which reject an extra field.

use std::path::{Path, PathBuf};

use lark_protocol::event::{EventClass, Outgoing};
use lark_protocol::normalize::{self, deadletter, raw, ticket_created, NormalizeError};
use serde_json::{json, Value};

/// Stands in for the receive time; no golden input lacks Lark's own time.
const RECEIVED_MS: i64 = 1_700_000_000_123;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn schema(name: &str) -> Value {
    read_json(&root().join("schemas").join(name))
}

/// What a golden input must give.
enum Expected {
    /// `NAME.normalized.json`: exactly this structured event.
    Normalized(Value),
    /// `NAME.refused.json` (`{"kind": …}`): refused with this [`NormalizeError::kind`].
    Refused(String),
}

/// Every golden pair: (name, input bytes, what it must give).
fn golden_cases() -> Vec<(String, Vec<u8>, Expected)> {
    let dir = root().join("tests/golden");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(name) = file.strip_suffix(".input.json") else {
            continue;
        };
        let normalized = dir.join(format!("{name}.normalized.json"));
        let refused = dir.join(format!("{name}.refused.json"));
        let expected = match (normalized.exists(), refused.exists()) {
            (true, false) => Expected::Normalized(read_json(&normalized)),
            (false, true) => Expected::Refused(
                read_json(&refused)["kind"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}.refused.json has no kind"))
                    .to_string(),
            ),
            _ => panic!("{name} needs exactly one of .normalized.json and .refused.json"),
        };
        out.push((name.to_string(), std::fs::read(&path).unwrap(), expected));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    // Per helpdesk type after ticket.created: full, minimal, unknown codes, numbers as strings,
    // a missing required field.
    for prefix in ["ticket-updated", "ticket-message", "notification-approve"] {
        let n = out.iter().filter(|c| c.0.starts_with(prefix)).count();
        assert!(n >= 5, "golden cases of {prefix} went missing");
    }
    assert!(
        out.len() >= 24,
        "golden pairs went missing: {:?}",
        out.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    out
}

/// The normalized pairs only: (name, input bytes, expected value).
fn golden_pairs() -> Vec<(String, Vec<u8>, Value)> {
    golden_cases()
        .into_iter()
        .filter_map(|(name, input, e)| match e {
            Expected::Normalized(v) => Some((name, input, v)),
            Expected::Refused(_) => None,
        })
        .collect()
}

/// The validators of a CloudEvents `type`.
fn validators_of(ty: &str) -> Validators {
    let class = EventClass::HELPDESK
        .into_iter()
        .find(|c| c.cloudevents_type() == ty)
        .unwrap_or_else(|| panic!("not a helpdesk type: {ty}"));
    let name = class
        .dataschema()
        .strip_prefix("urn:lark-bridge:schema:")
        .unwrap()
        .replace(":v1", ".v1.json");
    validators(&format!("cloudevent.{name}"), &name)
}

/// Normalize a golden input with the normalizer of its Lark event type.
fn normalize_input(
    name: &str,
    input: &[u8],
) -> (Result<Outgoing, NormalizeError>, Vec<&'static str>) {
    let ev =
        fake_lark::kit::plain_event(input).unwrap_or_else(|e| panic!("{name}: input refused: {e}"));
    let normalize = normalize::normalizer(ev.event_type())
        .unwrap_or_else(|| panic!("{name}: {} is not normalized", ev.event_type()));
    let mut warnings = Vec::new();
    (normalize(&ev, RECEIVED_MS, &mut warnings), warnings)
}

/// Validates against the schema `main` with `data` registered by its `$id`.
struct Validators {
    structured: jsonschema::Validator,
    data: jsonschema::Validator,
}

fn validators(main: &str, data: &str) -> Validators {
    let structured = fake_lark::kit::schema_validator(main, data);
    let data = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema(data))
        .expect("data schema compiles");
    Validators { structured, data }
}

fn ticket_validators() -> Validators {
    validators(
        "cloudevent.helpdesk.ticket.created.v1.json",
        "helpdesk.ticket.created.v1.json",
    )
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn assert_valid(v: &jsonschema::Validator, instance: &Value, what: &str) {
    let errs = errors(v, instance);
    assert!(
        errs.is_empty(),
        "{what} is invalid: {errs:#?}\n{instance:#}"
    );
}

#[test]
fn every_golden_input_normalizes_to_its_golden_output() {
    let bless = std::env::var_os("GOLDEN_BLESS").is_some();
    for (name, input, expected) in golden_cases() {
        let (out, _) = normalize_input(&name, &input);
        let expected = match expected {
            Expected::Refused(kind) => {
                let e = out.expect_err(&format!("{name}: must be refused"));
                assert_eq!(e.kind(), kind, "{name}: refused for another reason: {e}");
                continue;
            }
            Expected::Normalized(v) => v,
        };
        let out = out.unwrap_or_else(|e| panic!("{name}: not normalized: {e}"));
        let got: Value = serde_json::from_slice(&out.structured).unwrap();
        if bless && got != expected {
            // GOLDEN_BLESS=1 rewrites the file; review the diff before committing it.
            let path = root().join(format!("tests/golden/{name}.normalized.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
            continue;
        }
        assert_eq!(
            got, expected,
            "{name}: normalized output differs\n got: {got:#}\nwant: {expected:#}"
        );
        let v = validators_of(got["type"].as_str().unwrap());
        assert_valid(&v.structured, &got, &format!("{name} output"));
        // Binary mode: the message value is `data` alone, valid against the data schema.
        let data: Value = serde_json::from_slice(&out.data).unwrap();
        assert_eq!(data, expected["data"], "{name}: binary-mode data differs");
        assert_valid(&v.data, &data, &format!("{name} data"));
        // The attributes the sinks use for headers and keys match the body.
        assert_eq!(out.attrs.id, expected["id"].as_str().unwrap(), "{name}");
        assert_eq!(
            out.key(),
            expected["partitionkey"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            out.route.helpdesk_id.as_deref(),
            Some(out.key()),
            "{name}: routed by helpdesk_id"
        );
    }
}

#[test]
fn a_refused_golden_input_becomes_a_valid_dead_letter() {
    let v = validators("cloudevent.deadletter.v1.json", "raw.v1.json");
    let mut refused = 0;
    for (name, input, expected) in golden_cases() {
        let Expected::Refused(kind) = expected else {
            continue;
        };
        let (out, _) = normalize_input(&name, &input);
        let e = out.unwrap_err();
        let ev = fake_lark::kit::plain_event(&input).unwrap();
        let letter =
            deadletter::normalize(&ev, &e.to_string(), RECEIVED_MS, &mut Vec::new()).unwrap();
        let got: Value = serde_json::from_slice(&letter.structured).unwrap();
        assert_valid(&v.structured, &got, &format!("{name} dead letter"));
        assert_eq!(
            deadletter::reason_kind(got["deadletterreason"].as_str().unwrap()),
            Some(kind.as_str()),
            "{name}"
        );
        refused += 1;
    }
    assert!(refused >= 3, "one refused case per new type");
}

#[test]
fn every_golden_file_is_valid_against_the_schema() {
    for (name, _, expected) in golden_pairs() {
        let v = validators_of(expected["type"].as_str().unwrap());
        assert_valid(&v.structured, &expected, &format!("{name}.normalized.json"));
        assert_valid(
            &v.data,
            &expected["data"],
            &format!("{name}.normalized.json data"),
        );
    }
}

#[test]
fn seed_golden_is_the_documented_example() {
    // normalized-schema.md §2's example, pinned here so the golden file cannot drift from it.
    let seed = read_json(&root().join("tests/golden/seed.normalized.json"));
    assert_eq!(seed["time"], "2020-12-23T12:19:49.000Z");
    assert_eq!(seed["data"]["channel"], "other");
    assert_eq!(seed["data"]["channel_code"], 0);
    assert_eq!(seed["data"]["solved"], false);
    assert_eq!(seed["data"]["score"], "unsatisfied");
    assert_eq!(seed["data"]["guest"]["avatar_url"], Value::Null);
    assert_eq!(seed["data"]["customized_fields"][0]["key_name"], "key");
}

#[test]
fn bad_timestamps_are_counted_as_warnings() {
    // non-numbers: `updated_at` is "soon" (a warning); `closed_at` is null (absent, no warning).
    let input = std::fs::read(root().join("tests/golden/non-numbers.input.json")).unwrap();
    let ev = fake_lark::kit::plain_event(&input).unwrap();
    let mut warnings = Vec::new();
    ticket_created::normalize(&ev, RECEIVED_MS, &mut warnings).unwrap();
    assert_eq!(warnings, vec!["updated_at"]);
    // An unreadable create_time is a `time` warning and falls back to the receive time.
    let input = json!({
        "schema": "2.0",
        "header": {"event_id": "e1", "event_type": "helpdesk.ticket.created_v1", "create_time": "later"},
        "event": {"ticket_id": "1", "helpdesk_id": "2", "created_at": "1616920429000"}
    });
    let ev = fake_lark::kit::plain_event(&serde_json::to_vec(&input).unwrap()).unwrap();
    let mut warnings = Vec::new();
    let out = ticket_created::normalize(&ev, RECEIVED_MS, &mut warnings).unwrap();
    let got: Value = serde_json::from_slice(&out.structured).unwrap();
    assert_eq!(warnings, vec!["time"]);
    assert_eq!(got["time"], "2023-11-14T22:13:20.123Z");
    assert_eq!(got["data"]["created_at"], "2021-03-28T08:33:49.000Z");
}

#[test]
fn absent_create_time_falls_back_to_the_receive_time() {
    let input = json!({
        "schema": "2.0",
        "header": {"event_id": "e1", "event_type": "helpdesk.ticket.created_v1"},
        "event": {"ticket_id": "1", "helpdesk_id": "2"}
    });
    let ev = fake_lark::kit::plain_event(&serde_json::to_vec(&input).unwrap()).unwrap();
    let mut warnings = Vec::new();
    let out = ticket_created::normalize(&ev, RECEIVED_MS, &mut warnings).unwrap();
    let got: Value = serde_json::from_slice(&out.structured).unwrap();
    assert_eq!(got["time"], "2023-11-14T22:13:20.123Z");
    assert_eq!(got["source"], "urn:lark:app:unknown");
    assert!(got.get("larktenantkey").is_none() && got.get("larkappid").is_none());
    assert!(warnings.is_empty());
    assert_valid(&ticket_validators().structured, &got, "minimal output");
}

#[test]
fn schema_rejects_an_extra_field() {
    let v = ticket_validators();
    let seed = read_json(&root().join("tests/golden/seed.normalized.json"));
    assert_valid(&v.structured, &seed, "seed");

    let mut top = seed.clone();
    top["extra"] = json!(1);
    assert!(!errors(&v.structured, &top).is_empty(), "extra attribute");

    let mut in_data = seed.clone();
    in_data["data"]["extra"] = json!("x");
    assert!(
        !errors(&v.structured, &in_data).is_empty(),
        "extra data key"
    );
    assert!(!errors(&v.data, &in_data["data"]).is_empty(), "binary data");

    let mut in_guest = seed.clone();
    in_guest["data"]["guest"]["phone"] = json!("x");
    assert!(
        !errors(&v.structured, &in_guest).is_empty(),
        "extra guest key"
    );

    let mut missing = seed.clone();
    missing["data"].as_object_mut().unwrap().remove("closed_at");
    assert!(
        !errors(&v.structured, &missing).is_empty(),
        "a missing key must be refused: every key is always present"
    );

    let mut bad_time = seed.clone();
    bad_time["time"] = json!("2020-12-23T12:19:49Z");
    assert!(
        !errors(&v.structured, &bad_time).is_empty(),
        "time needs milliseconds"
    );

    let mut wrong_type = seed;
    wrong_type["type"] = json!("com.larksuite.raw.v1");
    assert!(!errors(&v.structured, &wrong_type).is_empty(), "type");
}

fn raw_of(plaintext: &[u8]) -> Value {
    let ev = fake_lark::kit::plain_event(plaintext).unwrap();
    let mut warnings = Vec::new();
    let out = raw::normalize(&ev, RECEIVED_MS, &mut warnings).unwrap();
    let v: Value = serde_json::from_slice(&out.structured).unwrap();
    let data: Value = serde_json::from_slice(&out.data).unwrap();
    assert_eq!(v["data"], data);
    v
}

#[test]
fn raw_envelope_validates_against_its_schema() {
    let v = validators("cloudevent.raw.v1.json", "raw.v1.json");
    // K3: a v2 contact event from Lark's Java SDK tests (create_time in microseconds).
    let fixture = read_json(&root().join("tests/fixtures/lark-push.json"));
    let k3 = fixture["decrypt"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"].as_str().unwrap().starts_with("K3"))
        .unwrap()["plaintext"]
        .as_str()
        .unwrap()
        .to_string();
    let out = raw_of(k3.as_bytes());
    assert_valid(&v.structured, &out, "K3 raw");
    assert_valid(&v.data, &out["data"], "K3 raw data");
    assert_eq!(out["type"], "com.larksuite.raw.v1");
    assert_eq!(out["id"], "f7984f25108f8137722bb63cee927e66");
    assert_eq!(out["subject"], "contact.user.created_v3");
    assert_eq!(out["time"], "2020-10-29T13:14:58.000Z");
    assert_eq!(out["partitionkey"], "xxxxxxx");
    assert_eq!(out["data"]["schema"], "2.0");
    assert_eq!(out["data"]["event"]["object"]["name"], "张三");
    assert!(out["data"]["header"].get("token").is_none(), "token leaked");
    assert_eq!(out["data"]["header"]["app_id"], "cli_xxxxxxxx");

    // Legacy v1: schema and header are null.
    let v1 = json!({
        "uuid": "u1", "token": "secret-token", "ts": "1608725989", "type": "event_callback",
        "event": {"type": "im.message.receive_v1", "text": "hi"}
    });
    let out = raw_of(&serde_json::to_vec(&v1).unwrap());
    assert_valid(&v.structured, &out, "v1 raw");
    assert_eq!(out["data"]["schema"], Value::Null);
    assert_eq!(out["data"]["header"], Value::Null);
    assert_eq!(out["partitionkey"], "im.message.receive_v1");
    assert!(!out.to_string().contains("secret-token"));

    // The raw schema, too, refuses an extra field and a token in the header.
    let mut extra = out.clone();
    extra["data"]["extra"] = json!(1);
    assert!(!errors(&v.structured, &extra).is_empty());
    let mut token = raw_of(k3.as_bytes());
    token["data"]["header"]["token"] = json!("v");
    assert!(!errors(&v.structured, &token).is_empty());
}

#[test]
fn the_helpdesk_family_schemas_reject_an_extra_or_missing_field() {
    let dir = root().join("tests/golden");
    for (name, pointers) in [
        (
            "ticket-updated.full",
            &[
                "/data",
                "/data/ticket",
                "/data/previous",
                "/data/ticket/agents/0",
            ][..],
        ),
        (
            "ticket-message.full",
            &["/data", "/data/sender", "/data/content", "/data/ticket"][..],
        ),
        ("notification-approve.full", &["/data"][..]),
    ] {
        let event = read_json(&dir.join(format!("{name}.normalized.json")));
        let v = validators_of(event["type"].as_str().unwrap());
        assert_valid(&v.structured, &event, name);
        for p in pointers {
            let mut extra = event.clone();
            extra.pointer_mut(p).unwrap()["extra"] = json!(1);
            assert!(
                !errors(&v.structured, &extra).is_empty(),
                "{name}: extra key in {p}"
            );
            let mut missing = event.clone();
            let obj = missing.pointer_mut(p).unwrap().as_object_mut().unwrap();
            let first = obj.keys().next().unwrap().clone();
            obj.remove(&first);
            assert!(
                !errors(&v.structured, &missing).is_empty(),
                "{name}: {p}/{first} may not be missing"
            );
        }
    }
}

/// `lark-bridge redrive` judges a dead letter of every helpdesk type with that type's
/// normalizer: one that normalizes now goes to its own class, one that still fails is re-filed.
#[test]
fn redrive_judges_every_helpdesk_type() {
    use lark_bridge::redrive::{judge, Verdict};
    use lark_protocol::consumer::CloudEvent;
    let letter_of = |input: &[u8], reason: &str| {
        let ev = fake_lark::kit::plain_event(input).unwrap();
        let out = deadletter::normalize(&ev, reason, RECEIVED_MS, &mut Vec::new()).unwrap();
        CloudEvent::<Value>::from_structured(&out.structured).unwrap()
    };
    for (name, class) in [
        ("ticket-updated", EventClass::TicketUpdated),
        ("ticket-message", EventClass::TicketMessageCreated),
        ("notification-approve", EventClass::NotificationApprove),
    ] {
        // Filed under an old reason, normalizable now: redriven to its own class.
        let full =
            std::fs::read(root().join(format!("tests/golden/{name}.full.input.json"))).unwrap();
        match judge(&letter_of(&full, "helpdesk_id is missing"), None, false) {
            Verdict::Redrive(out) => assert_eq!(out.class, class, "{name}"),
            v => panic!("{name}: {v:?}"),
        }
        // Still refused: re-filed as a dead letter with the same reason.
        let (refused, input) = golden_cases()
            .into_iter()
            .find_map(|(n, input, e)| match e {
                Expected::Refused(kind) if n.starts_with(name) => Some((kind, input)),
                _ => None,
            })
            .unwrap();
        let (out, _) = normalize_input(name, &input);
        let reason = out.unwrap_err().to_string();
        match judge(&letter_of(&input, &reason), Some(refused.as_str()), false) {
            Verdict::StillFailing(out) => {
                assert_eq!(out.class, EventClass::DeadLetter);
                assert_eq!(out.attrs.deadletterreason.as_deref(), Some(reason.as_str()));
            }
            v => panic!("{name}: {v:?}"),
        }
    }
}
