//! The real binary end to end: `lark-bridge` configured from the environment with the stdout
//! sink, fed by `lark-bridge simulate` as a second process, stopped with SIGTERM. What an operator
//! sees: CloudEvents on stdout, JSON logs on stderr without a secret, a clean exit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const KEY: &str = "bin-test-encrypt-key-8c1f";
const TOKEN: &str = "bin-test-token-5d2a";

/// The bridge process, killed if a test fails before it stops on its own.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lark-bridge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LARK_BRIDGE") || k.starts_with("LARK_SIMULATE") {
            c.env_remove(k);
        }
    }
    c
}

/// Lines of `r`, sent one by one; the channel closes at end of file.
fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn validator() -> jsonschema::Validator {
    fake_lark::kit::schema_validator(
        "cloudevent.helpdesk.ticket.created.v1.json",
        "helpdesk.ticket.created.v1.json",
    )
}

#[test]
fn simulate_against_the_binary_publishes_to_stdout_and_stops_on_sigterm() {
    let child = bin()
        .env("LARK_BRIDGE__SERVER__LISTEN", "127.0.0.1:0")
        .env("LARK_BRIDGE__ADMIN__LISTEN", "127.0.0.1:0")
        .env("LARK_BRIDGE__LOG__FORMAT", "json")
        .env("LARK_BRIDGE__LOG__LEVEL", "debug")
        .env("LARK_BRIDGE__LARK__ENCRYPT_KEY", KEY)
        .env("LARK_BRIDGE__LARK__VERIFICATION_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the bridge starts");
    let mut running = Running(Some(child));
    let child = running.0.as_mut().unwrap();
    let pid = child.id();
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());

    // Find both listeners in the JSON logs.
    let mut logs: Vec<String> = Vec::new();
    let (mut webhook, mut admin) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while webhook.is_none() || admin.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = stderr
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no \"listening\" logs; stderr so far:\n{logs:#?}"));
        logs.push(line.clone());
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("log line is not JSON: {line}"));
        if v["message"] == "listening" {
            let addr = v["addr"].as_str().expect("addr").to_string();
            match v["listener"].as_str() {
                Some("webhook") => {
                    assert_eq!(v["path"], "/webhook/event");
                    webhook = Some(addr)
                }
                Some("admin") => admin = Some(addr),
                other => panic!("unknown listener {other:?}"),
            }
        }
    }
    let webhook = webhook.unwrap();
    assert!(!webhook.ends_with(":0"), "bound port: {webhook}");

    let sim = bin()
        .args(["simulate", "--url"])
        .arg(format!("http://{webhook}/webhook/event"))
        .args(["--encrypt-key", KEY, "--token", TOKEN, "--count", "3"])
        .output()
        .expect("simulate runs");
    let sim_out = String::from_utf8_lossy(&sim.stdout);
    assert!(
        sim.status.success(),
        "simulate failed: {sim_out}{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    // One line per event: "<event id> <status> <body>".
    let mut acked: Vec<String> = sim_out
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (id, status) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert_eq!(status, "200", "simulate line: {l}");
            assert_eq!(parts.next(), Some(r#"{"msg":"success"}"#), "{l}");
            id.to_string()
        })
        .collect();
    assert_eq!(acked.len(), 3, "simulate printed:\n{sim_out}");

    // Each 200 was answered after its line was written: three CloudEvents on stdout.
    let schema = validator();
    let mut published = Vec::new();
    for _ in 0..3 {
        let line = stdout
            .recv_timeout(Duration::from_secs(5))
            .expect("a CloudEvent line on stdout");
        let ev: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        let errors: Vec<String> = schema.iter_errors(&ev).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{line}");
        assert_eq!(ev["partitionkey"], "7090000000000000001");
        published.push(ev["id"].as_str().unwrap().to_string());
    }
    acked.sort();
    published.sort();
    assert_eq!(
        published, acked,
        "published ids differ from acknowledged ids"
    );

    // SIGTERM: a clean exit within a few seconds.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
    running.0 = None;

    // Nothing more on stdout: exactly three events.
    let rest: Vec<String> = stdout.iter().collect();
    assert!(rest.is_empty(), "unexpected stdout: {rest:?}");
    logs.extend(stderr.iter());
    let all = logs.join("\n");
    assert!(!all.contains(KEY), "the encrypt key is in the logs");
    assert!(
        !all.contains(TOKEN),
        "the verification token is in the logs"
    );
    let finished: Vec<Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request finished")
        .collect();
    assert_eq!(finished.len(), 3, "request logs: {finished:?}");
    for v in &finished {
        assert_eq!(v["outcome"], "published", "{v}");
        assert_eq!(v["status"], 200, "{v}");
    }
    assert!(
        logs.iter().any(|l| l.contains("\"stopped\"")),
        "no \"stopped\" log:\n{all}"
    );
}
