//! Test harness: real brokers and stores started on free loopback ports (killed on drop), the
//! bridge started in-process on port 0, and Lark's side played with real encryption/signatures.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use lark_bridge::config::{Config, SecretFiles, SourceKind};
use lark_bridge::simulate::{lark_request, ticket_event, LarkRequest};
use lark_bridge::{Components, StartError};
use lark_protocol::crypto::EncryptKey;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;

pub const KEY: &str = "test key";
pub const TOKEN: &str = "tok_1234567890";

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where `scripts/ensure-tools.sh` puts the brokers.
pub fn cache_bin(name: &str) -> PathBuf {
    let cache = std::env::var("LARK_BRIDGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/lark-bridge")
        });
    let p = cache.join("bin").join(name);
    if !p.exists() {
        panic!(
            "{name} is not installed ({} is missing). The broker tests start their own {name}: \
             run `bash scripts/ensure-tools.sh` once (it installs nats-server, tansu and \
             redis-server into {}), or run the whole suite with `scripts/test.sh`.",
            p.display(),
            cache.display()
        );
    }
    p
}

/// A broker or store process on a loopback port, killed on drop.
pub struct Proc {
    child: Option<Child>,
    pub port: u16,
    argv: Vec<String>,
    pub dir: tempfile::TempDir,
}

impl Proc {
    fn spawn(argv: Vec<String>, port: u16, dir: tempfile::TempDir) -> Proc {
        let mut p = Proc {
            child: None,
            port,
            argv,
            dir,
        };
        p.start_process();
        p
    }

    fn start_process(&mut self) {
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.argv[0]));
        self.child = Some(child);
    }

    /// Wait until the port accepts connections.
    pub async fn ready(&self) {
        let addr = format!("127.0.0.1:{}", self.port);
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} did not open port {}", self.argv[0], self.port);
    }

    /// Kill the process (SIGKILL) and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port with the same data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.start_process();
        self.ready().await;
    }

    /// The process id (to freeze it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Send a signal, e.g. `-STOP` / `-CONT` to freeze and thaw the server.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// nats-server ≥ 2.10 with JetStream (KV needs it).
pub async fn start_nats() -> Proc {
    start_nats_with(&[]).await
}

/// nats-server with `extra` arguments (e.g. `--auth TOKEN`).
pub async fn start_nats_with(extra: &[&str]) -> Proc {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut argv = vec![
        cache_bin("nats-server").display().to_string(),
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-js".into(),
        "-sd".into(),
        dir.path().display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let p = Proc::spawn(argv, port, dir);
    p.ready().await;
    p
}

pub async fn start_redis() -> Proc {
    start_redis_with(&[]).await
}

/// redis-server with `extra` arguments (e.g. `--requirepass PW`).
pub async fn start_redis_with(extra: &[&str]) -> Proc {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut argv = vec![
        "redis-server".into(),
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.path().display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let p = Proc::spawn(argv, port, dir);
    p.ready().await;
    p
}

/// tansu, a Kafka-protocol broker, storing in memory.
pub async fn start_tansu() -> Proc {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("tcp://127.0.0.1:{port}");
    let argv = vec![
        cache_bin("tansu").display().to_string(),
        "broker".into(),
        "--listener-url".into(),
        url.clone(),
        "--advertised-listener-url".into(),
        url,
        "--storage-engine".into(),
        "memory://tansu/".into(),
    ];
    let p = Proc::spawn(argv, port, dir);
    p.ready().await;
    p
}

/// A config from `LARK_BRIDGE__…`-style pairs, e.g. `("sink.kind", "nats")`, over test defaults
/// (key and token set, loopback listeners on port 0).
pub fn config(pairs: &[(&str, &str)]) -> Config {
    let mut env: Vec<(String, String)> = vec![
        ("lark.encrypt_key".into(), KEY.into()),
        ("lark.verification_token".into(), TOKEN.into()),
        ("server.listen".into(), "127.0.0.1:0".into()),
        ("admin.listen".into(), "127.0.0.1:0".into()),
    ];
    for (k, v) in pairs {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| {
            (
                format!("LARK_BRIDGE__{}", k.replace('.', "__").to_uppercase()),
                v,
            )
        })
        .collect();
    Config::load_from(None, &env, SecretFiles::Read).expect("test config is valid")
}

/// A bridge over the channel sink and a memory store, as most webhook tests want it: what it
/// published arrives on `rx`, faults are injected through `sink`, reservations are visible in
/// `dedup`, and the store counts its evictions in the bridge's metrics.
pub struct Channeled {
    /// The running bridge.
    pub bridge: Bridge,
    /// The sink (delays and failures on cue).
    pub sink: Arc<crate::sink::ChannelSink>,
    /// Every published event.
    pub rx: tokio::sync::mpsc::UnboundedReceiver<lark_protocol::event::Outgoing>,
    /// The dedup store.
    pub dedup: Arc<lark_bridge::dedup::memory::MemoryStore>,
}

impl Channeled {
    /// Start `cfg` over a channel sink and a memory store of 1000 ids.
    pub async fn start(cfg: Config) -> Channeled {
        Self::with_capacity(cfg, 1000).await
    }

    /// Start `cfg` over a channel sink and a memory store of `capacity` ids.
    pub async fn with_capacity(cfg: Config, capacity: usize) -> Channeled {
        let (sink, rx) = crate::sink::ChannelSink::new();
        let metrics = Arc::new(lark_bridge::metrics::Metrics::new(
            lark_bridge::metrics_source(cfg.source.kind),
            "channel",
            "memory",
        ));
        let dedup = lark_bridge::dedup::memory::MemoryStore::with_evictions(
            capacity,
            metrics.evictions_counter(),
        );
        let components = Components {
            sink: sink.clone(),
            dedup: dedup.clone(),
            metrics,
        };
        let bridge = Bridge::start(cfg, components).await;
        Channeled {
            bridge,
            sink,
            rx,
            dedup,
        }
    }
}

/// A fake Lark (long connection and open API) on a free loopback port.
pub async fn start_fake_lark(b: crate::longconn::Behaviour) -> crate::longconn::FakeLark {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    crate::longconn::FakeLark::start(l, b).await.unwrap()
}

/// A long-connection config against `fake` with these app credentials, over the test defaults
/// of [`config`] (stdout sink, memory dedup) and quick reconnects: no jitter, every second,
/// pings every 5 s; `extra` pairs win.
pub fn longconn_config(
    fake: &crate::longconn::FakeLark,
    app: (&str, &str),
    extra: &[(&str, &str)],
) -> Config {
    let domain = fake.base_url();
    let mut pairs: Vec<(&str, &str)> = vec![
        ("source.kind", "long_connection"),
        ("lark.app_id", app.0),
        ("lark.app_secret", app.1),
        ("lark.domain", domain.as_str()),
        ("source.long_connection.reconnect_nonce_secs", "0"),
        ("source.long_connection.reconnect_interval_secs", "1"),
        ("source.long_connection.ping_interval_secs", "5"),
    ];
    pairs.extend_from_slice(extra);
    config(&pairs)
}

/// A fresh Lark-style event id.
pub fn new_event_id() -> String {
    format!("ev_{:016x}", rand::random::<u64>())
}

/// How long the kit waits for a bridge to reach a state before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// A bridge running in-process, with either entrance and any components: the one launcher
/// every black-box test uses. In webhook mode it binds the webhook on a free port (`url`); in
/// long-connection mode there is no webhook listener (`url` is empty) and the bridge dials the
/// `lark.domain` of its config. The admin listener is always bound (`admin`).
pub struct Bridge {
    /// The webhook URL (empty in long-connection mode).
    pub url: String,
    /// The admin listener's base URL.
    pub admin: String,
    /// The bridge's metrics, read in-process.
    pub metrics: Arc<lark_bridge::metrics::Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), StartError>>>,
}

impl Bridge {
    /// Start `cfg`'s entrance over `components`.
    pub async fn start(cfg: Config, components: Components) -> Bridge {
        let log = std::env::var("LARK_BRIDGE_TEST_LOG").ok();
        if cfg.otel.enabled() {
            install_telemetry(&cfg.otel, log);
        } else if let Some(level) = log {
            lark_bridge::logging::init(&lark_bridge::config::LogConfig {
                format: lark_bridge::config::LogFormat::Text,
                level,
            });
        }
        let webhook = match cfg.source.kind {
            SourceKind::Webhook => {
                Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
            }
            SourceKind::LongConnection => None,
        };
        let url = webhook.as_ref().map_or(String::new(), |w| {
            format!("http://{}{}", w.local_addr().unwrap(), cfg.server.path)
        });
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_url = format!("http://{}", admin.local_addr().unwrap());
        let metrics = components.metrics.clone();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(lark_bridge::run(
            cfg,
            components,
            lark_bridge::Listeners { webhook, admin },
            async move {
                let _ = rx.await;
            },
        ));
        Bridge {
            url,
            admin: admin_url,
            metrics,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Start with the sink and store the config names.
    pub async fn from_config(cfg: Config) -> Bridge {
        let c = Components::from_config(&cfg)
            .await
            .expect("components start");
        Bridge::start(cfg, c).await
    }

    /// Signal shutdown and return what `run` returned (within [`WAIT`]).
    pub async fn stop(mut self) -> Result<(), StartError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => tokio::time::timeout(WAIT, t)
                .await
                .expect("run returns after shutdown")
                .expect("run did not panic"),
            None => Ok(()),
        }
    }

    /// What `run` returned on its own, without a shutdown signal (a start-up refusal), within
    /// [`WAIT`].
    pub async fn exit(mut self) -> Result<(), StartError> {
        let t = self.task.take().expect("still running");
        tokio::time::timeout(WAIT, t)
            .await
            .expect("run returned by itself")
            .expect("run did not panic")
    }

    /// `/readyz`: status and body.
    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        match reqwest::get(format!("{}/readyz", self.admin)).await {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
            Err(_) => (0, serde_json::Value::Null),
        }
    }

    /// Poll `/readyz` until its status is `want` and `pred` holds for the body (bounded).
    pub async fn wait_ready_where(
        &self,
        want: u16,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let until = std::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self.readyz().await;
            if status == want && pred(&body) {
                return body;
            }
            assert!(
                std::time::Instant::now() < until,
                "/readyz never answered {want} as wanted; last {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Poll `/readyz` until its status is `want` (bounded).
    pub async fn wait_ready(&self, want: u16) -> serde_json::Value {
        self.wait_ready_where(want, |_| true).await
    }

    /// The `/metrics` text, over HTTP as Prometheus reads it.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// One series' value, read in-process.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics.render(), name, labels)
    }

    /// Metrics have no change signal: poll until `pred` holds for the series (bounded).
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let until = std::time::Instant::now() + WAIT;
        loop {
            let v = self.metric(name, labels);
            if pred(v) {
                return v;
            }
            assert!(
                std::time::Instant::now() < until,
                "{name}{labels:?} stuck at {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Install the bridge's trace export, once per process (the subscriber and the provider are
/// process-global, as in the product). A second bridge with another endpoint in the same
/// process cannot get its own: nextest runs each test in a process of its own.
fn install_telemetry(otel: &lark_bridge::config::OtelConfig, log: Option<String>) {
    static INSTALLED: std::sync::OnceLock<Option<url::Url>> = std::sync::OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        let log = lark_bridge::config::LogConfig {
            format: lark_bridge::config::LogFormat::Text,
            level: log.unwrap_or_else(|| "off".into()),
        };
        lark_bridge::telemetry::init(&log, otel).expect("traces set up");
        otel.export_url.clone()
    });
    assert_eq!(
        installed, &otel.export_url,
        "one OTLP endpoint per test process: run the OTel tests with cargo nextest"
    );
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The value of one sample in Prometheus text, e.g.
/// `metric(&text, "lark_bridge_requests_total", &[("outcome","published"),("source","webhook")])`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (lbl, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        if labels
            .iter()
            .all(|(k, v)| lbl.split(',').any(|p| p == format!("{k}=\"{v}\"")))
        {
            return value.trim().parse().unwrap();
        }
    }
    panic!("no sample {name}{labels:?}");
}

/// A signed, encrypted ticket.created request with a fresh event id.
pub fn ticket(helpdesk_id: &str) -> LarkRequest {
    let id = format!("ev_{:016x}", rand::random::<u64>());
    ticket_with_id(&id, helpdesk_id)
}

pub fn ticket_with_id(id: &str, helpdesk_id: &str) -> LarkRequest {
    let plain = ticket_event(id, helpdesk_id, Some(TOKEN), false);
    lark_request(
        id,
        &serde_json::to_vec(&plain).unwrap(),
        Some(&EncryptKey::new(KEY)),
    )
}

/// Post a request as Lark would; returns status and JSON body.
pub async fn post(url: &str, r: &LarkRequest) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let mut req = client.post(url).body(r.body.clone());
    for (k, v) in &r.headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("bridge answers");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// The workspace root (where `schemas/`, `tests/fixtures/` and `scripts/` live).
pub fn repo_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A schema from `schemas/`.
pub fn read_schema(name: &str) -> serde_json::Value {
    let p = repo_root().join("schemas").join(name);
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

/// The structured-event schema `main` as a consumer loads it from the files: its `$ref` to the
/// data schema `data` is a relative file reference (`./<data>`), resolved against `main`'s own
/// location; formats checked.
pub fn schema_validator(main: &str, data: &str) -> jsonschema::Validator {
    let dir = repo_root()
        .join("schemas")
        .canonicalize()
        .expect("schemas/ exists");
    let uri = |name: &str| format!("file://{}/{name}", dir.display());
    let registry = jsonschema::Registry::new()
        .add(uri(data), read_schema(data))
        .unwrap()
        .prepare()
        .unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .with_base_uri(uri(main))
        .with_registry(&registry)
        .build(&read_schema(main))
        .expect("schema compiles")
}

/// A plaintext body as the event a bridge with neither key nor token accepts (the
/// `allow_unverified` path): for tests of the layers below verification, through the one
/// constructor of `VerifiedEvent` there is.
pub fn plain_event(body: &[u8]) -> Result<lark_protocol::VerifiedEvent, String> {
    let open = lark_protocol::Verifier::new(Vec::new(), Vec::new(), 0);
    match open.verify(lark_protocol::SignatureHeaders::default(), body, 0) {
        Ok(lark_protocol::Inbound::Event(ev)) => Ok(ev),
        Ok(lark_protocol::Inbound::Challenge(_)) => Err("a URL verification, not an event".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Every message of a JetStream stream, in order (read by sequence; no consumer).
pub async fn stream_messages(
    url: &str,
    stream: &str,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut s = js.get_stream(stream).await.unwrap();
    let info = s.info().await.unwrap().clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if info.state.messages == 0 {
            break;
        }
        if let Ok(m) = s.get_raw_message(seq).await {
            out.push(m);
        }
    }
    out
}

/// Create `topic` with `partitions` partitions (tansu never auto-creates topics).
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let r = admin
        .create_topics([&t], &AdminOptions::new())
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
}

/// Read `n` messages from every partition of `topic`, from the beginning (no consumer group).
pub fn consume(
    brokers: &str,
    topic: &str,
    partitions: i32,
    n: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "lark-bridge-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    while out.len() < n && Instant::now() < until {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(m.detach());
        }
    }
    // Anything beyond n would be a duplicate: drain briefly to catch it.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    out
}

/// The CloudEvent id in a structured message's body.
pub fn payload_id(m: &rdkafka::message::OwnedMessage) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(m.payload()?).ok()?;
    v["id"].as_str().map(str::to_owned)
}

/// A Kafka header's value as UTF-8.
pub fn header<'a>(m: &'a rdkafka::message::OwnedMessage, key: &str) -> Option<&'a str> {
    let h = m.headers()?;
    (0..h.count())
        .map(|i| h.get(i))
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| std::str::from_utf8(v).unwrap())
}

// ---------------------------------------------------------------- Redis over TLS, Cluster, Sentinel

/// Run a command line tool to completion; panic with its stderr when it fails.
fn run_tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test PKI made with the `openssl` CLI in a temp dir: a CA, a server certificate for
/// `127.0.0.1`/`localhost`, one for another name, a client certificate, and a second CA that
/// signed none of them. Keys are PKCS#8 EC P-256 (fast to generate).
pub struct TestPki {
    pub dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            let (key, crt, subj) = (
                p(&format!("{ca}.key")),
                p(&format!("{ca}.crt")),
                format!("/CN=lark-bridge test {ca}"),
            );
            args.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
            run_tool("openssl", &args);
        }
        for (name, ext) in [
            ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"),
            ("wrong-name", "subjectAltName=DNS:not-this-host.example\nextendedKeyUsage=serverAuth\n"),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let (key, csr, crt, extf) = (p(&format!("{name}.key")), p(&format!("{name}.csr")), p(&format!("{name}.crt")), p(&format!("{name}.ext")));
            std::fs::write(&extf, ext).unwrap();
            let mut args = vec!["req"];
            args.extend(ec);
            let subj = format!("/CN={name}");
            args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            run_tool("openssl", &args);
            let (ca_crt, ca_key) = (p("ca.crt"), p("ca.key"));
            run_tool(
                "openssl",
                &["x509", "-req", "-in", &csr, "-CA", &ca_crt, "-CAkey", &ca_key, "-CAcreateserial", "-out", &crt, "-days", "2", "-extfile", &extf],
            );
        }
        TestPki { dir }
    }

    /// A file of the PKI, e.g. `ca.crt`, `server.key`, `client.crt`.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// redis-server speaking only TLS on its port, with `cert` (`server` or `wrong-name`) of
/// `pki`; `client_certs` makes it require a client certificate (`tls-auth-clients yes`).
pub async fn start_redis_tls(pki: &TestPki, cert: &str, client_certs: bool) -> Proc {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let argv: Vec<String> = [
        "redis-server",
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.path().display().to_string(),
        "--tls-cert-file",
        &pki.path(&format!("{cert}.crt")),
        "--tls-key-file",
        &pki.path(&format!("{cert}.key")),
        "--tls-ca-cert-file",
        &pki.path("ca.crt"),
        "--tls-auth-clients",
        if client_certs { "yes" } else { "no" },
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = Proc::spawn(argv, port, dir);
    p.ready().await;
    p
}

/// `redis-cli -p port args…` (plain TCP), its stdout.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &port];
    all.extend(args);
    run_tool("redis-cli", &all)
}

/// Poll `check` every 50 ms until it returns `Some` (bounded by `within`).
pub async fn poll<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < until, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the master on `port` has every replica caught up with its replication offset (so a
/// failover loses no write acknowledged so far).
pub fn replicas_caught_up(port: u16) -> bool {
    let info = redis_cli(port, &["info", "replication"]);
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let Some(offset) = field("master_repl_offset:") else {
        return false;
    };
    let replicas: usize = field("connected_slaves:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    replicas > 0
        && (0..replicas).all(|i| {
            field(&format!("slave{i}:")).is_some_and(|v| {
                v.contains(&format!("offset={offset},")) && v.contains("state=online")
            })
        })
}

/// A Redis Cluster on loopback: `masters` masters, each with `replicas` replicas, fast failure
/// detection (`cluster-node-timeout 1000`). `nodes[i]` are the processes; which is master
/// changes with failovers: ask [`RedisCluster::master_of`].
pub struct RedisCluster {
    pub nodes: Vec<Proc>,
}

impl RedisCluster {
    pub async fn start(masters: usize, replicas: usize) -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let bus = free_port();
            let argv: Vec<String> = [
                "redis-server",
                "--port",
                &port.to_string(),
                "--cluster-port",
                &bus.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.path().display().to_string(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &dir.path().join("nodes.conf").display().to_string(),
                "--cluster-node-timeout",
                "1000",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            nodes.push(Proc::spawn(argv, port, dir));
        }
        for n in &nodes {
            n.ready().await;
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        // redis-cli waits for the nodes to agree (it polls, about a second): off the runtime.
        tokio::task::spawn_blocking(move || {
            run_tool(
                "redis-cli",
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
        .await
        .unwrap();
        let c = RedisCluster { nodes };
        c.wait_ok().await;
        c
    }

    /// Poll `CLUSTER INFO` on every live node until each says `cluster_state:ok` and every
    /// master has its replicas attached.
    pub async fn wait_ok(&self) {
        let ports: Vec<u16> = self.live().map(|n| n.port).collect();
        poll("cluster_state:ok on every node", WAIT, || {
            ports
                .iter()
                .all(|p| redis_cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
                .then_some(())
        })
        .await;
    }

    fn live(&self) -> impl Iterator<Item = &Proc> {
        self.nodes.iter().filter(|n| n.pid() != 0)
    }

    /// Seed node URLs (every node).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url("redis")).collect()
    }

    /// The port of the master that serves `key`'s slot now, asked of a live node.
    pub fn master_of(&self, key: &str) -> u16 {
        let any = self.live().next().expect("a live node").port;
        let slot: u16 = redis_cli(any, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        for line in redis_cli(any, &["cluster", "nodes"]).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let port: u16 = f[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap();
            for range in &f[8..] {
                let (lo, hi) = match range.split_once('-') {
                    Some((lo, hi)) => (lo.parse::<u16>().ok(), hi.parse::<u16>().ok()),
                    None => (range.parse().ok(), range.parse().ok()),
                };
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    if (lo..=hi).contains(&slot) {
                        return port;
                    }
                }
            }
        }
        panic!("no master serves slot {slot}")
    }

    /// The process listening on `port`.
    pub fn node(&mut self, port: u16) -> &mut Proc {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node on that port")
    }
}

/// A Sentinel setup on loopback: one master, one replica, one sentinel monitoring the master as
/// `mymaster` (quorum 1, `down-after-milliseconds 1000`).
pub struct RedisSentinel {
    pub master: Proc,
    pub replica: Proc,
    pub sentinel: Proc,
}

impl RedisSentinel {
    pub async fn start() -> RedisSentinel {
        let master = start_redis().await;
        let mp = master.port.to_string();
        let replica = start_redis_with(&["--replicaof", "127.0.0.1", &mp]).await;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {mp} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let argv = vec![
            "redis-server".to_string(),
            conf.display().to_string(),
            "--sentinel".to_string(),
        ];
        let sentinel = Proc::spawn(argv, port, dir);
        sentinel.ready().await;
        let s = RedisSentinel {
            master,
            replica,
            sentinel,
        };
        // The sentinel learns of the replica from the master's INFO; a failover needs it.
        let rp = format!("{}", s.replica.port);
        let sp = s.sentinel.port;
        poll("the sentinel knows the replica", WAIT, || {
            let out = redis_cli(sp, &["sentinel", "replicas", "mymaster"]);
            (out.contains(&rp) && !out.contains("s_down")).then_some(())
        })
        .await;
        s
    }

    /// The master's port as the sentinel reports it now.
    pub fn master_port(&self) -> u16 {
        let out = redis_cli(
            self.sentinel.port,
            &["sentinel", "get-master-addr-by-name", "mymaster"],
        );
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// One replica of a shared-store deployment: a bridge over the dedup store `cfg` names, with
/// its own channel sink (delays on cue) and what it published.
pub struct Replica {
    pub bridge: Bridge,
    pub sink: Arc<crate::sink::ChannelSink>,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<lark_protocol::event::Outgoing>,
}

impl Replica {
    /// Connect `cfg`'s store and start the bridge; ready when this returns.
    pub async fn start(cfg: Config) -> Replica {
        let metrics = Arc::new(lark_bridge::metrics::Metrics::with_dedup_mode(
            lark_bridge::metrics::Source::Webhook,
            "channel",
            cfg.dedup.backend.as_str(),
            cfg.dedup.mode_label(),
        ));
        let dedup = lark_bridge::build_dedup(&cfg, &metrics)
            .await
            .expect("the store connects");
        let (sink, rx) = crate::sink::ChannelSink::new();
        let components = Components {
            sink: sink.clone(),
            dedup,
            metrics,
        };
        let bridge = Bridge::start(cfg, components).await;
        bridge.wait_ready(200).await;
        Replica { bridge, sink, rx }
    }

    /// Ids published since the last call (the bridge answers only after the sink returned, so
    /// everything published is already in the channel).
    pub fn published(&mut self) -> Vec<String> {
        let mut ids = Vec::new();
        while let Ok(ev) = self.rx.try_recv() {
            ids.push(ev.attrs.id);
        }
        ids
    }
}

/// How often each id was published across `replicas` (since their last `published`).
pub fn count_published(replicas: &mut [&mut Replica]) -> std::collections::HashMap<String, u32> {
    let mut count = std::collections::HashMap::new();
    for r in replicas.iter_mut() {
        for id in r.published() {
            *count.entry(id).or_default() += 1;
        }
    }
    count
}

/// What [`race`] sent and saw.
pub struct Race {
    /// The events, in the order sent.
    pub events: Vec<LarkRequest>,
    /// Copies answered 503 (they met the other copy's reservation).
    pub unavailable: u32,
    /// Copies answered 200.
    pub ok: u32,
}

/// Two replicas get the same `n` events at the same moment, each sink holding the winner in
/// flight for 300 ms so that the other copy meets its reservation. Asserts what the shared store
/// promises: every copy is answered 200 or 503, one of each pair 200, some copies overlapped,
/// and each id was published exactly once across both sinks.
pub async fn race(a: &mut Replica, b: &mut Replica, n: usize) -> Race {
    a.sink.set_delay(Duration::from_millis(300));
    b.sink.set_delay(Duration::from_millis(300));
    let events: Vec<_> = (0..n).map(|i| ticket(&format!("hd_{i}"))).collect();
    let answers = futures::future::join_all(events.iter().map(|ev| {
        let (ua, ub) = (a.bridge.url.clone(), b.bridge.url.clone());
        async move { tokio::join!(post(&ua, ev), post(&ub, ev)) }
    }))
    .await;
    a.sink.set_delay(Duration::ZERO);
    b.sink.set_delay(Duration::ZERO);
    let (mut unavailable, mut ok) = (0, 0);
    for (ev, ((sa, ba), (sb, bb))) in events.iter().zip(&answers) {
        for (s, body) in [(sa, ba), (sb, bb)] {
            assert!(*s == 200 || *s == 503, "{}: {s} {body}", ev.event_id);
        }
        assert!(
            *sa == 200 || *sb == 200,
            "{}: nobody published",
            ev.event_id
        );
        unavailable += (*sa == 503) as u32 + (*sb == 503) as u32;
        ok += (*sa == 200) as u32 + (*sb == 200) as u32;
    }
    assert!(unavailable > 0, "the copies never overlapped");
    let mut count = count_published(&mut [&mut *a, &mut *b]);
    for ev in &events {
        assert_eq!(count.remove(&ev.event_id), Some(1), "{}", ev.event_id);
    }
    assert!(count.is_empty(), "published unknown ids: {count:?}");
    Race {
        events,
        unavailable,
        ok,
    }
}

/// Lark's redelivery of `events` to both replicas at once: 200 from each, nothing published.
pub async fn redeliver_to_both(a: &mut Replica, b: &mut Replica, events: &[LarkRequest]) {
    for ev in events {
        let (ra, rb) = tokio::join!(post(&a.bridge.url, ev), post(&b.bridge.url, ev));
        assert_eq!((ra.0, rb.0), (200, 200), "{}: {ra:?} {rb:?}", ev.event_id);
    }
    assert!(count_published(&mut [&mut *a, &mut *b]).is_empty());
}

/// Assert that a published helpdesk CloudEvent (structured JSON) is valid against the schemas of
/// its `dataschema`: the whole event's and, through it, its data's.
pub fn assert_helpdesk_event_valid(ce: &serde_json::Value) {
    let class = lark_protocol::event::EventClass::HELPDESK
        .into_iter()
        .find(|c| c.cloudevents_type() == ce["type"])
        .unwrap_or_else(|| panic!("not a helpdesk type: {}", ce["type"]));
    let data = class
        .dataschema()
        .strip_prefix("urn:lark-bridge:schema:")
        .expect("a lark-bridge schema URN")
        .replace(":v1", ".v1.json");
    let v = schema_validator(&format!("cloudevent.{data}"), &data);
    let errors: Vec<String> = v.iter_errors(ce).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{ce:#}");
}
