//! OpenTelemetry traces end to end: the real bridge exports OTLP to a small receiver in the test
//! (decoded with the official `opentelemetry-proto` types, over HTTP and over gRPC), a real
//! client plays Lark, a real broker holds the message. Checked: the span tree of one request
//! (request → verify, dedup.reserve, publish, dedup.commit), its attributes (no secret among
//! them), and that the consumed message's `traceparent` names the publish span — in structured
//! mode (a JSON attribute) and in binary mode (`ce-traceparent` on NATS, `ce_traceparent` on
//! Kafka). The spans are awaited on the receiver's channel after the bridge's shutdown flush,
//! never after a sleep.
//!
//! The trace provider is process-global: each test needs a process of its own (nextest).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use fake_lark::kit::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use tokio::sync::mpsc;

type Requests = mpsc::UnboundedReceiver<ExportTraceServiceRequest>;

/// An OTLP/HTTP receiver (protobuf): returns its base URL and the decoded requests.
async fn http_receiver() -> (String, Requests) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(
                |State(tx): State<mpsc::UnboundedSender<ExportTraceServiceRequest>>,
                 headers: axum::http::HeaderMap,
                 body: Bytes| async move {
                    assert_eq!(
                        headers.get("content-type").unwrap(),
                        "application/x-protobuf"
                    );
                    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let _ = tx.send(req);
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

struct Grpc(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[async_trait::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver: returns its URL and the decoded requests.
async fn grpc_receiver() -> (String, Requests) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Grpc(tx)))
            .serve_with_incoming(incoming),
    );
    (url, rx)
}

/// One exported span, flattened: ids as lowercase hex, attributes as strings.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    kind: i32,
    error: bool,
    attrs: BTreeMap<String, String>,
    resource: BTreeMap<String, String>,
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(kv: &[KeyValue]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn flatten(req: ExportTraceServiceRequest, out: &mut Vec<Span>) {
    for rs in req.resource_spans {
        let resource = attrs(&rs.resource.map(|r| r.attributes).unwrap_or_default());
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Span {
                    name: s.name,
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_id: hex::encode(&s.parent_span_id),
                    kind: s.kind,
                    error: s.status.is_some_and(|st| st.code == 2),
                    attrs: attrs(&s.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
}

/// Spans from the receiver until the request span of `event_id` and its four children are
/// there (bounded by the kit's WAIT).
async fn trace_of(rx: &mut Requests, event_id: &str) -> (Span, Vec<Span>) {
    trace_named(rx, "request", event_id, 4).await
}

/// [`trace_of`] for a root span called `root_name` (`event` for a long-connection frame).
async fn trace_named(
    rx: &mut Requests,
    root_name: &str,
    event_id: &str,
    children: usize,
) -> (Span, Vec<Span>) {
    let want = children;
    let mut all = Vec::new();
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let root = all
            .iter()
            .find(|s: &&Span| {
                s.name == root_name && s.attrs.get("event_id").map(String::as_str) == Some(event_id)
            })
            .cloned();
        if let Some(root) = root {
            let children: Vec<Span> = all
                .iter()
                .filter(|s| s.parent_id == root.span_id)
                .cloned()
                .collect();
            if children.len() >= want {
                return (root, children);
            }
        }
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(req)) => flatten(req, &mut all),
            _ => panic!("no complete trace of {event_id} exported; got {all:#?}"),
        }
    }
}

/// What must never be in a span: the key and token, the encrypted body, every header value of
/// Lark's request, and values of the payload (`data` of the published event).
fn forbidden(r: &lark_bridge::simulate::LarkRequest, data: &serde_json::Value) -> Vec<String> {
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let mut out = vec![
        KEY.to_string(),
        TOKEN.to_string(),
        body["encrypt"].as_str().unwrap().to_string(),
    ];
    out.extend(r.headers.iter().map(|(_, v)| v.to_string()));
    for k in ["ticket_id", "chat_id"] {
        out.push(data[k].as_str().unwrap().to_string());
    }
    out.push(data["guest"]["open_id"].as_str().unwrap().to_string());
    out
}

/// The checks every transport shares: the tree, the attributes, no secret; returns the
/// publish span.
fn assert_tree(root: &Span, children: &[Span], event_id: &str, forbidden: &[String]) -> Span {
    assert_eq!(root.attrs["event_type"], "helpdesk.ticket.created_v1");
    assert_eq!(root.attrs["outcome"], "published");
    assert_eq!(root.attrs["status"], "200");
    if root.name == "request" {
        assert_eq!(root.attrs["source"], "webhook");
    } else {
        assert_eq!(root.attrs["source"], "long_connection");
    }
    assert!(!root.error);
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["dedup.commit", "dedup.reserve", "publish", "verify"],
        "the request's children"
    );
    for c in children {
        assert_eq!(
            c.trace_id, root.trace_id,
            "{} is in the request's trace",
            c.name
        );
        assert!(!c.error, "{} failed: {c:?}", c.name);
    }
    let by = |n: &str| children.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!(by("verify").attrs["outcome"], "ok");
    assert_eq!(by("dedup.reserve").attrs["outcome"], "new");
    assert_eq!(by("dedup.reserve").attrs["dedup.backend"], "memory");
    assert_eq!(by("dedup.commit").attrs["outcome"], "ok");
    let publish = by("publish");
    assert_eq!(publish.attrs["outcome"], "ok");
    assert_eq!(publish.attrs["messaging.message.id"], event_id);
    assert_eq!(publish.kind, 4, "publish is a PRODUCER span");
    assert_eq!(root.resource["service.name"], "lark-bridge-test");
    // Nothing secret, nothing of the payload, no header value of the request.
    for s in std::iter::once(root).chain(children) {
        for (k, v) in s.attrs.iter().chain(&s.resource) {
            for f in forbidden {
                assert!(
                    !v.contains(f.as_str()),
                    "span {} attribute {k} = {v:?} holds a secret or payload value",
                    s.name
                );
            }
        }
    }
    publish
}

/// The `traceparent` naming `span`, sampled.
fn traceparent_of(span: &Span) -> String {
    format!("00-{}-{}-01", span.trace_id, span.span_id)
}

fn nats_cfg(nats: &Proc, otel: &str, extra: &[(&str, &str)]) -> lark_bridge::config::Config {
    let url = nats.url("nats");
    let mut pairs = vec![
        ("sink.kind", "nats"),
        ("sink.nats.url", url.as_str()),
        ("otel.endpoint", otel),
        ("otel.service_name", "lark-bridge-test"),
    ];
    pairs.extend_from_slice(extra);
    config(&pairs)
}

/// OTLP/HTTP, NATS in structured mode: the tree, and `traceparent` in the JSON envelope (which
/// the published schema accepts), no `ce-` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_export_and_the_structured_message_names_the_publish_span() {
    let (otel, mut spans) = http_receiver().await;
    let nats = start_nats().await;
    let bridge = Bridge::from_config(nats_cfg(&nats, &otel, &[])).await;
    bridge.wait_ready(200).await;
    let r = ticket("6626871355780366330");
    let (status, body) = post(&bridge.url, &r).await;
    assert_eq!((status, body["msg"].as_str()), (200, Some("success")));
    // The shutdown path flushes the batch exporter.
    bridge.stop().await.unwrap();
    let (root, children) = trace_of(&mut spans, &r.event_id).await;
    assert_eq!(
        root.parent_id, "",
        "the request span is a root (no traceparent came in)"
    );

    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert!(
        m.headers
            .iter()
            .all(|(k, _)| !k.to_string().to_ascii_lowercase().starts_with("ce-")),
        "structured mode carries no ce- header: {:?}",
        m.headers
    );
    let ce: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    let publish = assert_tree(&root, &children, &r.event_id, &forbidden(&r, &ce["data"]));
    assert_eq!(
        ce["traceparent"],
        traceparent_of(&publish),
        "the message names the publish span"
    );
    assert!(
        ce.get("tracestate").is_none(),
        "no tracestate when it is empty"
    );
    let v = schema_validator(
        "cloudevent.helpdesk.ticket.created.v1.json",
        "helpdesk.ticket.created.v1.json",
    );
    let errors: Vec<String> = v.iter_errors(&ce).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "the envelope with traceparent is valid: {errors:?}"
    );
    // A consumer reads it with the protocol crate.
    let read: lark_protocol::consumer::TicketCreated = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(
        read.traceparent.as_deref(),
        Some(traceparent_of(&publish).as_str())
    );
}

/// OTLP/gRPC, Kafka (tansu) in binary mode: the `ce_traceparent` header names the publish span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_and_the_binary_kafka_header_names_the_publish_span() {
    let (otel, mut spans) = grpc_receiver().await;
    let kafka = start_tansu().await;
    let brokers = format!("127.0.0.1:{}", kafka.port);
    let cfg = config(&[
        ("sink.kind", "kafka"),
        ("sink.mode", "binary"),
        ("sink.kafka.brokers", brokers.as_str()),
        // Every topic an event may go to is required for readiness: create them all.
        ("sink.kafka.create_topics", "true"),
        ("sink.kafka.topic_partitions", "1"),
        ("otel.endpoint", otel.as_str()),
        ("otel.protocol", "grpc"),
        ("otel.service_name", "lark-bridge-test"),
    ]);
    let bridge = Bridge::from_config(cfg).await;
    bridge.wait_ready(200).await;
    let r = ticket("6626871355780366330");
    let (status, _) = post(&bridge.url, &r).await;
    assert_eq!(status, 200);
    bridge.stop().await.unwrap();
    let (root, children) = trace_of(&mut spans, &r.event_id).await;

    let msgs = tokio::task::spawn_blocking(move || {
        consume(&brokers, "lark.helpdesk.ticket.created.v1", 1, 1)
    })
    .await
    .unwrap();
    assert_eq!(msgs.len(), 1);
    let data: serde_json::Value =
        serde_json::from_slice(rdkafka::Message::payload(&msgs[0]).unwrap()).unwrap();
    let publish = assert_tree(&root, &children, &r.event_id, &forbidden(&r, &data));
    assert_eq!(header(&msgs[0], "ce_id"), Some(r.event_id.as_str()));
    assert_eq!(
        header(&msgs[0], "ce_traceparent"),
        Some(traceparent_of(&publish).as_str())
    );
    assert_eq!(header(&msgs[0], "ce_tracestate"), None);
    drop(kafka);
}

/// NATS in binary mode, behind a gateway that traces (`otel.parent_from_request`): the request
/// span continues the incoming trace, and `ce-traceparent` names the publish span in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_traceparent_is_the_parent_and_binary_nats_carries_the_header() {
    let (otel, mut spans) = http_receiver().await;
    let nats = start_nats().await;
    let cfg = nats_cfg(
        &nats,
        &otel,
        &[
            ("sink.mode", "binary"),
            ("otel.parent_from_request", "true"),
        ],
    );
    let bridge = Bridge::from_config(cfg).await;
    bridge.wait_ready(200).await;
    let mut r = ticket("6626871355780366330");
    let gateway_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let gateway_span = "00f067aa0ba902b7";
    r.headers.push((
        "traceparent",
        format!("00-{gateway_trace}-{gateway_span}-01"),
    ));
    r.headers.push(("tracestate", "gw=1".into()));
    let (status, _) = post(&bridge.url, &r).await;
    assert_eq!(status, 200);
    bridge.stop().await.unwrap();
    let (root, children) = trace_of(&mut spans, &r.event_id).await;
    assert_eq!(root.trace_id, gateway_trace);
    assert_eq!(root.parent_id, gateway_span);

    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    assert_eq!(msgs.len(), 1);
    let h = &msgs[0].headers;
    let data: serde_json::Value = serde_json::from_slice(&msgs[0].payload).unwrap();
    let mut forbid = forbidden(&r, &data);
    // The gateway's own values are the trace's, not secrets.
    forbid.retain(|f| !f.contains(gateway_trace) && f != "gw=1");
    let publish = assert_tree(&root, &children, &r.event_id, &forbid);
    assert_eq!(
        h.get("ce-traceparent").map(|v| v.as_str().to_string()),
        Some(traceparent_of(&publish))
    );
    // `=` is left as it is by the NATS binding's percent-encoding.
    assert_eq!(
        h.get("ce-tracestate").map(|v| v.as_str().to_string()),
        Some("gw=1".to_string())
    );
    let read = lark_protocol::consumer::TicketCreated::from_message(
        lark_protocol::consumer::Binding::Nats,
        |name| {
            h.iter()
                .find(|(k, _)| k.to_string().eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.first().map(|v| v.as_str().to_string()))
        },
        &msgs[0].payload,
    )
    .unwrap();
    assert_eq!(read.traceparent, Some(traceparent_of(&publish)));
    assert_eq!(read.tracestate.as_deref(), Some("gw=1"));
}

/// Not sampled (`otel.sample_ratio = 0`): no span is exported, and the message still carries
/// the trace context, with flags `00`, as W3C asks (a consumer does not start a sampled trace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_request_exports_nothing_and_propagates_flags_00() {
    let (otel, mut spans) = http_receiver().await;
    let nats = start_nats().await;
    let bridge = Bridge::from_config(nats_cfg(&nats, &otel, &[("otel.sample_ratio", "0")])).await;
    bridge.wait_ready(200).await;
    let r = ticket("6626871355780366330");
    let (status, _) = post(&bridge.url, &r).await;
    assert_eq!(status, 200);
    // The flush has returned when stop does: anything exported has arrived by now.
    bridge.stop().await.unwrap();
    let mut got = Vec::new();
    while let Ok(req) = spans.try_recv() {
        flatten(req, &mut got);
    }
    assert!(got.is_empty(), "nothing exported: {got:#?}");
    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    let ce: serde_json::Value = serde_json::from_slice(&msgs[0].payload).unwrap();
    let tp = ce["traceparent"].as_str().expect("propagated unsampled");
    assert!(
        tp.len() == 55 && tp.starts_with("00-") && tp.ends_with("-00"),
        "{tp}"
    );
}

/// Off (no endpoint): no trace context in the message, whatever the mode.
#[tokio::test]
async fn off_puts_no_trace_context_in_messages() {
    let mut c = Channeled::start(config(&[])).await;
    let r = ticket("6626871355780366330");
    let (status, _) = post(&c.bridge.url, &r).await;
    assert_eq!(status, 200);
    let out = c.rx.recv().await.unwrap();
    assert!(!lark_bridge::telemetry::enabled());
    assert_eq!(out.trace, None);
    let ce: serde_json::Value = serde_json::from_slice(&out.structured_body()).unwrap();
    assert!(ce.get("traceparent").is_none());
    assert!(!out
        .binary_pairs()
        .iter()
        .any(|(k, _)| k.starts_with("trace")));
}

/// The long connection: one `event` span per frame, with the same children, and the message
/// names its publish span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_connection_frame_is_traced_like_a_request() {
    use fake_lark::longconn::{ticket_payload, Behaviour, FakeLark};
    let (otel, mut spans) = http_receiver().await;
    let nats = start_nats().await;
    let fake = FakeLark::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Behaviour::default(),
    )
    .await
    .unwrap();
    let domain = fake.base_url();
    let app_secret = "app-secret-for-otel-tests";
    let cfg = nats_cfg(
        &nats,
        &otel,
        &[
            ("source.kind", "long_connection"),
            ("lark.app_id", "cli_test0000000001"),
            ("lark.app_secret", app_secret),
            ("lark.domain", domain.as_str()),
            ("source.long_connection.reconnect_nonce_secs", "0"),
        ],
    );
    let bridge = Bridge::from_config(cfg).await;
    assert!(fake.wait_connections(1, WAIT).await, "bridge connected");
    bridge.wait_ready(200).await;
    let id = format!("ev_{:016x}", rand::random::<u64>());
    fake.deliver(ticket_payload(&id, "6626871355780366330"), None);
    let replies = fake.wait_replies(1, WAIT).await;
    assert_eq!(replies[0].code, Some(200), "{replies:?}");
    bridge.stop().await.unwrap();
    let (root, children) = trace_named(&mut spans, "event", &id, 4).await;
    assert_eq!(root.parent_id, "", "a frame starts its own trace");

    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    assert_eq!(msgs.len(), 1);
    let ce: serde_json::Value = serde_json::from_slice(&msgs[0].payload).unwrap();
    let forbidden = vec![
        KEY.to_string(),
        TOKEN.to_string(),
        app_secret.to_string(),
        ce["data"]["ticket_id"].as_str().unwrap().to_string(),
    ];
    let publish = assert_tree(&root, &children, &id, &forbidden);
    assert_eq!(ce["traceparent"], traceparent_of(&publish));
}

/// A broker that does not answer: the request span says `unavailable` with an error status,
/// the publish span failed, the reservation was released (no commit span).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_is_an_error_in_the_trace() {
    let (otel, mut spans) = http_receiver().await;
    let nats = start_nats().await;
    let cfg = nats_cfg(
        &nats,
        &otel,
        &[
            ("server.response_budget_ms", "500"),
            ("dedup.lease_ms", "1000"),
        ],
    );
    let bridge = Bridge::from_config(cfg).await;
    bridge.wait_ready(200).await;
    nats.signal("-STOP");
    let r = ticket("6626871355780366330");
    let (status, _) = post(&bridge.url, &r).await;
    nats.signal("-CONT");
    assert_eq!(status, 503);
    bridge.stop().await.unwrap();
    let (root, children) = trace_named(&mut spans, "request", &r.event_id, 3).await;
    assert_eq!(root.attrs["outcome"], "unavailable");
    assert_eq!(root.attrs["status"], "503");
    assert!(root.error, "a retry-later answer is an error");
    let mut names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["dedup.reserve", "publish", "verify"]);
    let publish = children.iter().find(|s| s.name == "publish").unwrap();
    assert_eq!(publish.attrs["outcome"], "timeout");
    assert!(publish.error);
}
