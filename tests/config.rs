//! Configuration as an operator meets it: every example parses, `examples/full.toml` is the
//! complete reference with the defaults, a bad value fails naming its key, environment variables
//! win over the file, `_file` secrets load, and no secret is ever printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use lark_bridge::config::{Config, SecretFiles};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A config file with `text`, loaded with `env`.
fn load_text(
    text: &str,
    env_pairs: &[(&str, &str)],
    mode: SecretFiles,
) -> Result<Config, lark_bridge::config::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, text).unwrap();
    Config::load_from(Some(&path), &env(env_pairs), mode)
}

const KEYS: &str = "[lark]\nencrypt_key = \"k\"\nverification_token = \"t\"\n";

/// Loading `text` (with a key and token) fails, and the message names `key`.
fn assert_fails_naming(text: &str, key: &str) {
    let e = load_text(&format!("{KEYS}{text}"), &[], SecretFiles::Skip)
        .expect_err(&format!("accepted:\n{text}"));
    let msg = e.to_string();
    assert!(
        msg.contains(key),
        "error for\n{text}\ndoes not name {key}: {msg}"
    );
}

// ---------------------------------------------------------------- examples

#[test]
fn every_example_config_loads() {
    let files = examples();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"minimal.toml".to_string()), "{names:?}");
    assert!(names.contains(&"full.toml".to_string()), "{names:?}");
    for f in &files {
        Config::load_from(Some(f), &[], SecretFiles::Skip)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    let minimal = Config::load_from(
        Some(&root().join("examples/minimal.toml")),
        &[],
        SecretFiles::Read,
    )
    .unwrap();
    assert_eq!(minimal.sink.kind, lark_bridge::config::SinkKind::Stdout);
    assert!(minimal.lark.encrypt_key.is_some() && minimal.lark.verification_token.is_some());
}

/// Every leaf of a TOML table as `a.b.c` → value.
fn leaves(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match v {
        toml::Value::Table(t) if !t.is_empty() => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// Keys mentioned in full.toml, set or commented out (`# key = …`), as `section.key`, each with
/// whether the line before it is a comment.
fn documented_keys(text: &str) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    let mut section = String::new();
    let mut prev_is_comment = false;
    for line in text.lines() {
        let l = line.trim();
        if let Some(s) = l.strip_prefix('[') {
            section = s.trim_end_matches(']').to_string();
            prev_is_comment = false;
            continue;
        }
        let body = l.strip_prefix('#').map(str::trim_start).unwrap_or(l);
        let key_line = body.split_once(" = ").and_then(|(k, _)| {
            // A quoted key that is set may hold dots (`"helpdesk.ticket.updated_v1" = …`);
            // commented-out examples of pass-through maps (`# "linger.ms" = …`) are not keys.
            let quoted =
                !l.starts_with('#') && k.len() > 1 && k.starts_with('"') && k.ends_with('"');
            let k = k.trim_matches('"');
            (!k.is_empty()
                && k.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (quoted && c == '.')
                }))
            .then(|| k.to_string())
        });
        match key_line {
            Some(k) => {
                out.insert(format!("{section}.{k}"), prev_is_comment);
                prev_is_comment = false;
            }
            None => prev_is_comment = l.starts_with('#'),
        }
    }
    out
}

#[test]
fn full_example_is_the_complete_reference_with_defaults() {
    let text = std::fs::read_to_string(root().join("examples/full.toml")).unwrap();
    let file: toml::Value = toml::from_str(&text).unwrap();
    let defaults: toml::Value = toml::from_str(&Config::default().to_redacted_toml()).unwrap();
    let mut want = BTreeMap::new();
    leaves("", &defaults, &mut want);
    let mut got = BTreeMap::new();
    leaves("", &file, &mut got);
    // Every key with a default is set in full.toml, to that default.
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "examples/full.toml: {k} should be {v}");
    }
    // Keys without a default are documented (commented out), every key with a comment line.
    let documented = documented_keys(&text);
    let without_default = [
        "lark.encrypt_key",
        "lark.encrypt_key_file",
        "lark.verification_token",
        "lark.verification_token_file",
        "lark.app_id",
        "lark.app_secret",
        "lark.app_secret_file",
        "lark.helpdesk_id",
        "lark.helpdesk_token",
        "lark.helpdesk_token_file",
        "sink.kafka.properties_file",
        "dedup.redis.password",
        "dedup.redis.password_file",
        "otel.endpoint",
        "otel.protocol",
        "otel.service_name",
        "otel.sample_ratio",
    ];
    for k in want
        .keys()
        .map(String::as_str)
        .chain(without_default)
        // An empty map: documented by its own section.
        .filter(|k| *k != "sink.kafka.properties")
    {
        assert!(documented.contains_key(k), "examples/full.toml misses {k}");
    }
    for at in ["sink.nats", "dedup.nats"] {
        for k in [
            "user",
            "password",
            "password_file",
            "token",
            "token_file",
            "creds_file",
            "tls_required",
            "tls_ca_file",
        ] {
            assert!(
                documented.contains_key(&format!("{at}.{k}")),
                "examples/full.toml misses {at}.{k}"
            );
        }
    }
    for (k, commented) in &documented {
        assert!(commented, "examples/full.toml: {k} has no comment line");
    }
    // And nothing in it is unknown (deny_unknown_fields) or invalid.
    let cfg = Config::load_from(
        Some(&root().join("examples/full.toml")),
        &[],
        SecretFiles::Skip,
    )
    .unwrap();
    assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:8080");
}

// ---------------------------------------------------------------- bad values name their key

#[test]
fn bad_listen_address_names_the_key() {
    assert_fails_naming("[server]\nlisten = \"nope\"\n", "server.listen");
    assert_fails_naming("[admin]\nlisten = \"0.0.0.0\"\n", "admin.listen");
}

#[test]
fn lease_not_above_budget_names_the_key() {
    assert_fails_naming("[dedup]\nlease_ms = 2500\n", "dedup.lease_ms");
    assert_fails_naming(
        "[server]\nresponse_budget_ms = 1000\n[dedup]\nlease_ms = 900\n",
        "dedup.lease_ms",
    );
    // Just above is fine.
    load_text(
        &format!("{KEYS}[server]\nresponse_budget_ms = 1000\n[dedup]\nlease_ms = 1001\n"),
        &[],
        SecretFiles::Skip,
    )
    .unwrap();
}

#[test]
fn unknown_key_names_it() {
    assert_fails_naming("[server]\nlisen = \"127.0.0.1:1\"\n", "lisen");
    // …and the section it is in.
    assert_fails_naming("[server]\nlisen = \"127.0.0.1:1\"\n", "server");
    assert_fails_naming("[dedup.redis]\nurll = \"redis://x\"\n", "dedup.redis");
}

#[test]
fn unknown_section_names_it() {
    assert_fails_naming("[servr]\nlisten = \"127.0.0.1:1\"\n", "servr");
}

#[test]
fn unknown_sink_kind_names_the_key_and_value() {
    assert_fails_naming("[sink]\nkind = \"kafak\"\n", "kafak");
    assert_fails_naming("[sink]\nkind = \"kafak\"\n", "sink.kind");
}

#[test]
fn other_bad_values_name_their_key() {
    assert_fails_naming("[server]\npath = \"webhook\"\n", "server.path");
    assert_fails_naming(
        "[server]\nresponse_budget_ms = 3000\n",
        "server.response_budget_ms",
    );
    assert_fails_naming("[server]\nmax_body_bytes = 0\n", "server.max_body_bytes");
    assert_fails_naming("[dedup]\nttl_secs = 0\n", "dedup.ttl_secs");
    assert_fails_naming(
        "[sink.nats]\nsubject = \"lark.{helpdeskid}\"\n",
        "sink.nats.subject",
    );
    let e = load_text("[lark]\nencrypt_key = \"a,,b\"\n", &[], SecretFiles::Skip).unwrap_err();
    assert!(e.to_string().contains("lark.encrypt_key"), "{e}");
    assert!(
        !e.to_string().contains("a,,b"),
        "the secret is in the error: {e}"
    );
}

#[test]
fn per_type_templates_route_the_family_and_keep_the_other_defaults() {
    let text = format!(
        "{KEYS}[sink.kafka]\ntopic = \"lark.helpdesk.tickets.v1\"\n\
         [sink.kafka.topics]\n\"helpdesk.ticket.updated_v1\" = \"lark.helpdesk.tickets.v1\"\n\
         [sink.nats.subjects]\n\"helpdesk.notification.approve_v1\" = \"n.{{helpdesk_id}}\"\n"
    );
    let cfg = load_text(&text, &[], SecretFiles::Skip).unwrap();
    let k = &cfg.sink.kafka.topics;
    assert_eq!(k.ticket_updated.to_string(), "lark.helpdesk.tickets.v1");
    // A key left out keeps its default.
    assert_eq!(
        k.ticket_message_created.to_string(),
        "lark.helpdesk.ticket_message.created.v1"
    );
    let n = &cfg.sink.nats.subjects;
    assert_eq!(n.notification_approve.to_string(), "n.{helpdesk_id}");
    assert_eq!(
        n.ticket_updated.to_string(),
        "lark.helpdesk.ticket.updated.v1.{helpdesk_id}"
    );
    // ticket.created keeps its own key; an unknown type is refused by name.
    assert_fails_naming(
        "[sink.kafka.topics]\n\"helpdesk.ticket.created_v1\" = \"x\"\n",
        "helpdesk.ticket.created_v1",
    );
    assert_fails_naming(
        "[sink.nats.subjects]\n\"helpdesk.ticket.updated_v1\" = \"a b\"\n",
        "sink.nats.subjects.\"helpdesk.ticket.updated_v1\"",
    );
    assert_fails_naming(
        "[sink.kafka.topics]\n\"helpdesk.ticket.updated_v1\" = \"t.{helpdeskid}\"\n",
        "helpdeskid",
    );
}

// ---------------------------------------------------------------- layers

#[test]
fn environment_wins_over_the_file() {
    let text = format!("{KEYS}[server]\npath = \"/from-file\"\nmax_in_flight = 7\n");
    let cfg = load_text(&text, &[], SecretFiles::Skip).unwrap();
    assert_eq!(cfg.server.path, "/from-file");
    let cfg = load_text(
        &text,
        &[
            ("LARK_BRIDGE__SERVER__PATH", "/from-env"),
            ("LARK_BRIDGE__DEDUP__LEASE_MS", "6000"),
        ],
        SecretFiles::Skip,
    )
    .unwrap();
    assert_eq!(cfg.server.path, "/from-env");
    assert_eq!(cfg.server.max_in_flight, 7, "file value kept");
    assert_eq!(cfg.dedup.lease, std::time::Duration::from_millis(6000));
    // A bad value from the environment still names the key.
    let e = load_text(
        &text,
        &[("LARK_BRIDGE__SERVER__LISTEN", "nope")],
        SecretFiles::Skip,
    )
    .unwrap_err();
    assert!(e.to_string().contains("server.listen"), "{e}");
}

// ---------------------------------------------------------------- secrets

#[test]
fn secret_files_are_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let token = dir.path().join("token");
    std::fs::write(&key, "file key one\n").unwrap();
    std::fs::write(&token, "tok-a\ntok-b\n").unwrap();
    let text = format!(
        "[lark]\nencrypt_key_file = {:?}\nverification_token_file = {:?}\n",
        key.display().to_string(),
        token.display().to_string()
    );
    let cfg = load_text(&text, &[], SecretFiles::Read).unwrap();
    assert_eq!(cfg.lark.encrypt_key.unwrap().expose(), "file key one");
    assert_eq!(
        cfg.lark.verification_token.unwrap().expose(),
        "tok-a\ntok-b"
    );
}

#[test]
fn secret_file_and_value_both_set_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "hunter2\n").unwrap();
    let text = format!(
        "{KEYS}[dedup.redis]\npassword = \"x\"\npassword_file = {:?}\n",
        pw.display().to_string()
    );
    for mode in [SecretFiles::Read, SecretFiles::Skip] {
        let e = load_text(&text, &[], mode).unwrap_err();
        assert!(e.to_string().contains("dedup.redis.password"), "{e}");
    }
    let text = format!(
        "[lark]\nencrypt_key = \"k\"\nencrypt_key_file = {:?}\n",
        pw.display().to_string()
    );
    let e = load_text(&text, &[], SecretFiles::Read).unwrap_err();
    assert!(e.to_string().contains("lark.encrypt_key"), "{e}");
}

#[test]
fn missing_secret_file_is_an_error_unless_skipped() {
    let text = "[lark]\nencrypt_key_file = \"/nonexistent/lark-bridge/key\"\n";
    let e = load_text(text, &[], SecretFiles::Read).unwrap_err();
    assert!(e.to_string().contains("lark.encrypt_key_file"), "{e}");
    load_text(text, &[], SecretFiles::Skip).expect("structure only");
}

const SECRETS: [&str; 6] = [
    "sekret-key-1111",
    "sekret-token-2222",
    "sekret-redis-3333",
    "sekret-kafka-4444",
    "sekret-nats-5555",
    "sekret-app-6666",
];

fn config_with_every_secret() -> Config {
    let text = format!(
        r#"
[lark]
encrypt_key = "{}"
verification_token = "{}"
app_secret = "{}"
[dedup]
backend = "redis"
[dedup.redis]
url = "redis://bridge:{}@127.0.0.1:6379"
[sink.kafka.properties]
"sasl.username" = "bridge"
"sasl.password" = "{}"
[sink.nats]
user = "bridge"
password = "{}"
"#,
        SECRETS[0], SECRETS[1], SECRETS[5], SECRETS[2], SECRETS[3], SECRETS[4]
    );
    load_text(&text, &[], SecretFiles::Read).unwrap()
}

fn assert_no_secret(what: &str, s: &str) {
    for secret in SECRETS {
        assert!(!s.contains(secret), "{what} shows {secret}:\n{s}");
    }
    assert!(s.contains("***"), "{what} shows no redaction:\n{s}");
}

#[test]
fn debug_never_shows_a_secret() {
    let cfg = config_with_every_secret();
    assert_no_secret("Debug", &format!("{cfg:?}"));
    assert_no_secret("Debug (pretty)", &format!("{cfg:#?}"));
}

#[test]
fn redacted_toml_never_shows_a_secret() {
    let cfg = config_with_every_secret();
    let text = cfg.to_redacted_toml();
    assert_no_secret("to_redacted_toml", &text);
    // Not secrets: still shown, so the output stays useful.
    assert!(text.contains("sasl.username"), "{text}");
    assert!(text.contains("127.0.0.1:6379"), "{text}");
}

#[test]
fn refuses_no_key_and_no_token_unless_allowed() {
    let e = Config::load_from(None, &[], SecretFiles::Read).unwrap_err();
    assert!(e.to_string().contains("lark.encrypt_key"), "{e}");
    assert!(e.to_string().contains("lark.allow_unverified"), "{e}");
    let cfg = Config::load_from(
        None,
        &env(&[("LARK_BRIDGE__LARK__ALLOW_UNVERIFIED", "true")]),
        SecretFiles::Read,
    )
    .unwrap();
    assert!(cfg.lark.allow_unverified);
    // A token alone, or a key alone, is enough.
    for (k, v) in [
        ("LARK_BRIDGE__LARK__VERIFICATION_TOKEN", "t"),
        ("LARK_BRIDGE__LARK__ENCRYPT_KEY", "k"),
    ] {
        Config::load_from(None, &env(&[(k, v)]), SecretFiles::Read).unwrap();
    }
}

// ---------------------------------------------------------------- the binary

fn bridge_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lark-bridge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LARK_BRIDGE") || k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn check_config_prints_the_config_with_secrets_hidden() {
    let out = bridge_bin()
        .arg("check-config")
        .arg("--config")
        .arg(root().join("examples/full.toml"))
        .arg("--skip-secret-files")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(stdout.contains("encrypt_key = \"***\""), "{stdout}");
    assert!(stdout.contains("verification_token = \"***\""), "{stdout}");
    for secret in ["example-encrypt-key", "example-verification-token"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }
    assert!(stdout.contains("listen = \"0.0.0.0:8080\""), "{stdout}");
}

#[test]
fn check_config_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, format!("{KEYS}[dedup]\nlease_ms = 10\n")).unwrap();
    let out = bridge_bin()
        .arg("check-config")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("dedup.lease_ms"), "{stderr}");
    assert!(!stderr.contains("\"k\""));
    // Environment variables count too, and win over the file.
    let out = bridge_bin()
        .arg("check-config")
        .arg("--config")
        .arg(root().join("examples/minimal.toml"))
        .env("LARK_BRIDGE__SERVER__LISTEN", "nope")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("server.listen"), "{stderr}");
}

#[test]
fn check_config_reads_secret_files_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[lark]\nencrypt_key_file = \"/nonexistent/lark-bridge/key\"\n",
    )
    .unwrap();
    let run = |skip: bool| {
        let mut c = bridge_bin();
        c.arg("check-config").arg("--config").arg(&cfg);
        if skip {
            c.arg("--skip-secret-files");
        }
        c.output().unwrap()
    };
    let out = run(false);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lark.encrypt_key_file"));
    assert!(run(true).status.success());
}

// ---------------------------------------------------------------- exact strings (issue 15)

/// Values that look like numbers or booleans, as Lark's console or an operator may produce them.
const NUMERIC_LOOKING: &[&str] = &[
    "007",
    "1e3",
    "1.50",
    "12345678901234567890123",
    "-0",
    "true",
    "0x1F",
    " 42",
];

#[test]
fn string_settings_keep_the_exact_string_from_the_environment() {
    for v in NUMERIC_LOOKING {
        let cfg = Config::load_from(
            None,
            &env(&[
                ("LARK_BRIDGE__LARK__ENCRYPT_KEY", &format!("{v}x,{v}")),
                ("LARK_BRIDGE__LARK__VERIFICATION_TOKEN", v),
                ("LARK_BRIDGE__LARK__APP_SECRET", v),
                ("LARK_BRIDGE__DEDUP__REDIS__PASSWORD", v),
                ("LARK_BRIDGE__SINK__NATS__TOKEN", v),
                ("LARK_BRIDGE__SERVER__PATH", &format!("/{v}")),
            ]),
            SecretFiles::Read,
        )
        .unwrap_or_else(|e| panic!("{v:?}: {e}"));
        let l = &cfg.lark;
        assert_eq!(
            l.encrypt_key.as_ref().unwrap().expose(),
            format!("{v}x,{v}")
        );
        assert_eq!(l.verification_token.as_ref().unwrap().expose(), *v);
        assert_eq!(l.app_secret.as_ref().unwrap().expose(), *v);
        assert_eq!(cfg.dedup.redis.password.as_ref().unwrap().expose(), *v);
        assert_eq!(cfg.sink.nats.auth.token.as_ref().unwrap().expose(), *v);
        assert_eq!(cfg.server.path, format!("/{v}"));
        // And the verifier signs with exactly that key.
        let verifier = format!("{:?}", lark_bridge::verifier(&cfg).unwrap());
        assert!(verifier.contains("keys: 2"), "{verifier}");
    }
    // Typed settings still read their numbers and booleans from the environment's strings.
    let cfg = Config::load_from(
        None,
        &env(&[
            ("LARK_BRIDGE__LARK__ENCRYPT_KEY", "k"),
            ("LARK_BRIDGE__SERVER__MAX_IN_FLIGHT", "007"),
            ("LARK_BRIDGE__ROUTING__FORWARD_UNKNOWN", "true"),
            ("LARK_BRIDGE__SINK__NATS__STREAM_SUBJECTS", "a.>,b.>"),
        ]),
        SecretFiles::Read,
    )
    .unwrap();
    assert_eq!(cfg.server.max_in_flight, 7);
    assert!(cfg.routing.forward_unknown);
    assert_eq!(cfg.sink.nats.stream_subjects, ["a.>", "b.>"]);
}

#[test]
fn string_settings_keep_the_exact_string_from_a_file() {
    for v in NUMERIC_LOOKING {
        let text = format!(
            "[lark]\nencrypt_key = {v:?}\nverification_token = {v:?}\n[dedup.redis]\npassword = {v:?}\n"
        );
        let cfg = load_text(&text, &[], SecretFiles::Read).unwrap();
        assert_eq!(cfg.lark.encrypt_key.as_ref().unwrap().expose(), *v);
        assert_eq!(cfg.lark.verification_token.as_ref().unwrap().expose(), *v);
        assert_eq!(cfg.dedup.redis.password.as_ref().unwrap().expose(), *v);
        // From a secret file too.
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, format!("{v}\n")).unwrap();
        let cfg = Config::load_from(
            None,
            &env(&[("LARK_BRIDGE__LARK__ENCRYPT_KEY_FILE", key.to_str().unwrap())]),
            SecretFiles::Read,
        )
        .unwrap();
        assert_eq!(cfg.lark.encrypt_key.as_ref().unwrap().expose(), *v);
    }
}

// ---------------------------------------------------------------- redaction (issue 15)

#[test]
fn check_config_masks_commas_in_passwords_and_sasl_config_strings() {
    let text = r#"
[lark]
encrypt_key = "k3y-value"
[dedup]
backend = "redis"
[dedup.redis]
url = "redis://:pa,ss-w0rd@127.0.0.1:6379/0"
[sink]
kind = "kafka"
[sink.kafka]
brokers = "127.0.0.1:9092"
[sink.kafka.properties]
"sasl.jaas.config" = 'org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="jaa5-secret";'
"sasl.oauthbearer.config" = "principal=p extension_tok=0auth-secret"
"sasl.username" = "shown-user"
"#;
    let cfg = load_text(text, &[], SecretFiles::Read).unwrap();
    let shown = cfg.to_redacted_toml();
    for secret in [
        "pa,ss-w0rd",
        "ss-w0rd",
        "jaa5-secret",
        "0auth-secret",
        "k3y-value",
    ] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    assert!(shown.contains("redis://***@127.0.0.1:6379/0"), "{shown}");
    assert!(shown.contains("shown-user"), "{shown}");
    assert!(format!("{cfg:?}").find("jaa5-secret").is_none());
    // Every one of them is registered for scrubbing client libraries' error text.
    let scrubbed = lark_bridge::secrets::scrub_known(
        "x pa,ss-w0rd y jaa5-secret z 0auth-secret w k3y-value".into(),
    );
    assert_eq!(scrubbed, "x *** y *** z *** w ***");
}

#[test]
fn a_type_error_never_echoes_a_secret_value() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "[lark]\nencrypt_key = { nested = \"t0p-secret-1\" }\n",
            &[],
        ),
        (
            "[lark]\nencrypt_key = [\"t0p-secret-1\"]\n",
            &[],
        ),
        (
            "[lark]\nencrypt_key = \"k\"\n[sink.kafka]\nproperties = \"sasl.password=t0p-secret-1\"\n",
            &[],
        ),
        (
            "[lark]\nencrypt_key = \"k\"\n",
            &[("LARK_BRIDGE__SINK__KAFKA__PROPERTIES", "sasl.password=t0p-secret-1")],
        ),
        (
            "[lark]\nencrypt_key = \"k\"\n",
            &[("LARK_BRIDGE__DEDUP__REDIS__PASSWORD__X", "t0p-secret-1")],
        ),
        (
            "[lark]\nencrypt_key = \"k\"\n",
            &[("LARK_BRIDGE__DEDUP__REDIS__URL__X", "redis://:t0p-secret-1@h")],
        ),
    ];
    for (text, env) in cases {
        let e = load_text(text, env, SecretFiles::Read).expect_err(text);
        let msg = e.to_string();
        assert!(!msg.contains("t0p-secret-1"), "{text} {env:?}: {msg}");
    }
}

#[tokio::test]
async fn librdkafka_start_up_errors_do_not_echo_sasl_secrets() {
    let text = r#"
[lark]
encrypt_key = "k3y-value"
[sink]
kind = "kafka"
[sink.kafka]
brokers = "127.0.0.1:1"
[sink.kafka.properties]
"sasl.jaas.config" = 'org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="jaa5-secret";'
"sasl.oauthbearer.config" = "principal=p extension_x=0auth-secret"
"sasl.password" = "pl41n-secret"
"#;
    let cfg = load_text(text, &[], SecretFiles::Read).unwrap();
    let err = match lark_bridge::build_sink(&cfg).await {
        Ok(_) => panic!("an invalid property was accepted"),
        Err(e) => e.to_string(),
    };
    // librdkafka refuses a Java JAAS line, quoting it whole (password included).
    assert!(
        err.starts_with("sink.kafka:") && err.contains("JAAS"),
        "{err}"
    );
    for secret in ["jaa5-secret", "0auth-secret", "pl41n-secret"] {
        assert!(!err.contains(secret), "{secret} in: {err}");
    }
}

#[test]
fn every_key_of_the_full_example_has_a_readme_row() {
    let text = std::fs::read_to_string(root().join("examples/full.toml")).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let missing: Vec<String> = documented_keys(&text)
        .into_keys()
        // Per-type routing maps are described in their own README section.
        .filter(|k| !k.starts_with("sink.kafka.topics.") && !k.starts_with("sink.nats.subjects."))
        .filter(|k| !k.starts_with("sink.kafka.properties."))
        .filter(|k| !readme.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "README's configuration reference misses {missing:?}"
    );
}

#[test]
fn the_enrichment_budget_must_leave_time_for_the_publish() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut v = vec![(
            "LARK_BRIDGE__LARK__ENCRYPT_KEY".to_string(),
            "k".to_string(),
        )];
        v.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    };
    let err = Config::load_from(
        None,
        &env(&[
            ("LARK_BRIDGE__ENRICH__TICKET_DETAIL", "true"),
            ("LARK_BRIDGE__ENRICH__BUDGET_MS", "2500"),
        ]),
        SecretFiles::Read,
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("enrich.budget_ms"));
    assert!(
        err.to_string()
            .contains("server.response_budget_ms (2500 ms)"),
        "{err}"
    );
    // Off: not checked (a short response budget need not carry an unused setting).
    Config::load_from(
        None,
        &env(&[("LARK_BRIDGE__SERVER__RESPONSE_BUDGET_MS", "300")]),
        SecretFiles::Read,
    )
    .unwrap();
    let ok = Config::load_from(
        None,
        &env(&[("LARK_BRIDGE__ENRICH__TICKET_DETAIL", "true")]),
        SecretFiles::Read,
    )
    .unwrap();
    assert_eq!(ok.enrich.budget, std::time::Duration::from_millis(800));
}

#[test]
fn lark_events_and_helpdesk_credentials_are_checked() {
    let load = |pairs: &[(&str, &str)]| {
        let mut v = vec![(
            "LARK_BRIDGE__LARK__ENCRYPT_KEY".to_string(),
            "k".to_string(),
        )];
        v.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::load_from(None, &v, SecretFiles::Read)
    };
    let cfg = load(&[]).unwrap();
    assert_eq!(
        cfg.lark.events.len(),
        4,
        "the four helpdesk events by default"
    );
    let two = load(&[(
        "LARK_BRIDGE__LARK__EVENTS",
        "helpdesk.ticket.created_v1,helpdesk.ticket.updated_v1",
    )])
    .unwrap();
    assert_eq!(
        two.lark.events,
        ["helpdesk.ticket.created_v1", "helpdesk.ticket.updated_v1"]
    );
    let err = load(&[("LARK_BRIDGE__LARK__EVENTS", "im.message.receive_v1")]).unwrap_err();
    assert_eq!(err.key(), Some("lark.events"));
    assert!(err.to_string().contains("routing.forward_unknown"), "{err}");
    let err = load(&[("LARK_BRIDGE__LARK__HELPDESK_ID", "1")]).unwrap_err();
    assert_eq!(err.key(), Some("lark.helpdesk_token"));
    let err = load(&[("LARK_BRIDGE__LARK__HELPDESK_TOKEN", "secret-helpdesk-token")]).unwrap_err();
    assert!(!err.to_string().contains("secret-helpdesk-token"));
    let cfg = load(&[
        ("LARK_BRIDGE__LARK__HELPDESK_ID", "1"),
        ("LARK_BRIDGE__LARK__HELPDESK_TOKEN", "secret-helpdesk-token"),
    ])
    .unwrap();
    assert!(!cfg.to_redacted_toml().contains("secret-helpdesk-token"));
    assert!(!format!("{:?}", cfg.lark).contains("secret-helpdesk-token"));
}

// ---------------------------------------------------------------- dedup.redis: TLS, cluster, sentinel

const REDIS: &str = "[dedup]\nbackend = \"redis\"\n[dedup.redis]\n";

#[test]
fn redis_defaults_are_standalone_without_tls() {
    let cfg = load_text(KEYS, &[], SecretFiles::Read).unwrap();
    let r = &cfg.dedup.redis;
    assert_eq!(r.mode, lark_bridge::config::RedisMode::Standalone);
    assert!(r.nodes.is_empty());
    assert_eq!(r.master_name, "mymaster");
    assert!(r.tls_ca_file.is_none() && r.tls_cert_file.is_none() && r.tls_key_file.is_none());
    assert!(!r.tls());
    assert_eq!(cfg.dedup.mode_label(), "in_process");
}

#[test]
fn redis_cluster_and_sentinel_settings_load_from_file_and_environment() {
    let cfg = load_text(
        &format!("{KEYS}{REDIS}mode = \"cluster\"\nnodes = [\"redis://:pw-in-url-77@a:7000\", \"redis://b:7001\"]\n"),
        &[],
        SecretFiles::Read,
    )
    .unwrap();
    let r = &cfg.dedup.redis;
    assert_eq!(r.mode, lark_bridge::config::RedisMode::Cluster);
    assert_eq!(r.entry_urls().len(), 2);
    assert_eq!(cfg.dedup.mode_label(), "cluster");
    // A password in a seed URL is a secret like any URL's.
    assert!(!format!("{cfg:?}").contains("pw-in-url-77"));
    assert!(!cfg.to_redacted_toml().contains("pw-in-url-77"));
    assert!(cfg.secret_values().iter().any(|s| s == "pw-in-url-77"));

    // Cluster without nodes: `url` is the one seed.
    let cfg = load_text(
        &format!("{KEYS}{REDIS}mode = \"cluster\"\n"),
        &[],
        SecretFiles::Read,
    )
    .unwrap();
    assert_eq!(
        cfg.dedup.redis.entry_urls()[0].expose(),
        "redis://127.0.0.1:6379"
    );

    // The environment takes the list comma-separated.
    let cfg = load_text(
        KEYS,
        &[
            ("LARK_BRIDGE__DEDUP__BACKEND", "redis"),
            ("LARK_BRIDGE__DEDUP__REDIS__MODE", "sentinel"),
            (
                "LARK_BRIDGE__DEDUP__REDIS__NODES",
                "rediss://s0:26379,rediss://s1:26379",
            ),
            ("LARK_BRIDGE__DEDUP__REDIS__MASTER_NAME", "dedup"),
        ],
        SecretFiles::Read,
    )
    .unwrap();
    let r = &cfg.dedup.redis;
    assert_eq!(r.mode, lark_bridge::config::RedisMode::Sentinel);
    assert_eq!(r.nodes.len(), 2);
    assert_eq!(r.master_name, "dedup");
    assert!(r.tls());
}

#[test]
fn redis_mode_settings_that_cannot_work_name_their_key() {
    for (text, key) in [
        ("mode = \"sentinel\"\n", "dedup.redis.nodes"),
        (
            "mode = \"standalone\"\nnodes = [\"redis://a:1\"]\n",
            "dedup.redis.nodes",
        ),
        (
            "mode = \"sentinel\"\nnodes = [\"redis://s:26379\"]\nmaster_name = \" \"\n",
            "dedup.redis.master_name",
        ),
        (
            "mode = \"cluster\"\nnodes = [\"redis://a:1\", \"rediss://b:2\"]\n",
            "dedup.redis.nodes",
        ),
        (
            "mode = \"cluster\"\nnodes = [\"http://a:1\"]\n",
            "dedup.redis.nodes",
        ),
        ("mode = \"ring\"\n", "mode"),
        ("url = \"rediss://h:6380/#insecure\"\n", "dedup.redis.url"),
        ("tls_ca_file = \"/x/ca.crt\"\n", "dedup.redis.tls_ca_file"),
        (
            "url = \"rediss://h:6380\"\ntls_cert_file = \"/x/c.crt\"\n",
            "dedup.redis.tls_key_file",
        ),
        (
            "url = \"rediss://h:6380\"\ntls_key_file = \"/x/c.key\"\n",
            "dedup.redis.tls_cert_file",
        ),
    ] {
        assert_fails_naming(&format!("{REDIS}{text}"), key);
    }
}

#[test]
fn redis_tls_files_are_checked_at_load_naming_the_key_never_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a pem sekret-pem-9999\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let base = format!("{KEYS}{REDIS}url = \"rediss://127.0.0.1:6380\"\n");
    for (extra, key) in [
        (
            format!("tls_ca_file = {:?}\n", missing.display().to_string()),
            "dedup.redis.tls_ca_file",
        ),
        (
            format!("tls_ca_file = {:?}\n", junk.display().to_string()),
            "dedup.redis.tls_ca_file",
        ),
    ] {
        let text = format!("{base}{extra}");
        let e = load_text(&text, &[], SecretFiles::Read).expect_err(&text);
        let msg = e.to_string();
        assert!(msg.contains(key), "{msg}");
        assert!(!msg.contains("sekret-pem-9999"), "{msg}");
        // check-config --skip-secret-files checks the structure only.
        load_text(&text, &[], SecretFiles::Skip).expect("structure only");
    }
    // A key file that holds no key: named, its content never shown.
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=t",
            "-days",
            "1",
        ])
        .arg("-keyout")
        .arg(dir.path().join("t.key"))
        .arg("-out")
        .arg(dir.path().join("t.crt"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let crt = dir.path().join("t.crt").display().to_string();
    let key = dir.path().join("t.key").display().to_string();
    let text = format!(
        "{base}tls_ca_file = {crt:?}\ntls_cert_file = {crt:?}\ntls_key_file = {:?}\n",
        junk.display().to_string()
    );
    let msg = load_text(&text, &[], SecretFiles::Read)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("dedup.redis.tls_key_file"), "{msg}");
    assert!(!msg.contains("sekret-pem-9999"), "{msg}");
    // The real files load; Debug shows the paths, not the key.
    let text =
        format!("{base}tls_ca_file = {crt:?}\ntls_cert_file = {crt:?}\ntls_key_file = {key:?}\n");
    let cfg = load_text(&text, &[], SecretFiles::Read).unwrap();
    let files = cfg.dedup.redis.tls_files().unwrap();
    assert!(files.ca.is_some() && files.client.is_some());
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let key_body = key_pem.lines().nth(1).unwrap();
    assert!(!format!("{files:?}").contains(key_body));
    assert!(!format!("{cfg:?}").contains(key_body));
}

// ---------------------------------------------------------------- otel

#[test]
fn otel_is_off_by_default_with_documented_defaults() {
    let cfg = load_text(KEYS, &[], SecretFiles::Skip).unwrap();
    let o = &cfg.otel;
    assert!(!o.enabled());
    assert!(o.endpoint.is_none());
    assert_eq!(o.protocol(), lark_bridge::config::OtelProtocol::Http);
    assert_eq!(o.service_name(), "lark-bridge");
    assert_eq!(o.sample_ratio(), 1.0);
    assert!(!o.parent_from_request);
}

#[test]
fn otel_keys_come_from_the_file_our_environment_and_the_otel_variables() {
    // The file; an integer ratio (as the chart renders 1.0) reads as a number.
    let text = format!(
        "{KEYS}[otel]\nendpoint = \"http://collector:4318\"\nservice_name = \"helpdesk-bridge\"\nsample_ratio = 1\nparent_from_request = true\n"
    );
    let cfg = load_text(&text, &[], SecretFiles::Skip).unwrap();
    let o = &cfg.otel;
    assert!(o.enabled());
    assert_eq!(
        o.export_url.as_ref().unwrap().as_str(),
        "http://collector:4318/v1/traces"
    );
    assert_eq!(o.service_name(), "helpdesk-bridge");
    assert_eq!(o.sample_ratio(), 1.0);
    assert!(o.parent_from_request);
    // LARK_BRIDGE__OTEL__* over the file.
    let cfg = load_text(
        &text,
        &[
            ("LARK_BRIDGE__OTEL__PROTOCOL", "grpc"),
            ("LARK_BRIDGE__OTEL__SAMPLE_RATIO", "0.1"),
        ],
        SecretFiles::Skip,
    )
    .unwrap();
    assert_eq!(cfg.otel.protocol(), lark_bridge::config::OtelProtocol::Grpc);
    assert_eq!(
        cfg.otel.export_url.as_ref().unwrap().as_str(),
        "http://collector:4318/"
    );
    assert_eq!(cfg.otel.sample_ratio(), 0.1);
    // The standard variables fill what is not set, and never override what is.
    let otel_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env-collector:4318"),
        ("OTEL_SERVICE_NAME", "from-env"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging"),
    ];
    let cfg = load_text(KEYS, &otel_env, SecretFiles::Skip).unwrap();
    assert_eq!(
        cfg.otel.export_url.as_ref().unwrap().as_str(),
        "http://env-collector:4318/v1/traces"
    );
    assert_eq!(cfg.otel.service_name(), "from-env");
    assert_eq!(cfg.otel.sample_ratio(), 0.5);
    assert_eq!(
        cfg.otel.resource_attributes,
        vec![("deployment.environment".to_string(), "staging".to_string())]
    );
    let cfg = load_text(&text, &otel_env, SecretFiles::Skip).unwrap();
    assert_eq!(
        cfg.otel.export_url.as_ref().unwrap().as_str(),
        "http://collector:4318/v1/traces",
        "otel.endpoint wins over OTEL_EXPORTER_OTLP_ENDPOINT"
    );
    assert_eq!(cfg.otel.service_name(), "helpdesk-bridge");
    assert_eq!(cfg.otel.sample_ratio(), 1.0);
    // OTEL_SDK_DISABLED wins over everything.
    let cfg = load_text(&text, &[("OTEL_SDK_DISABLED", "true")], SecretFiles::Skip).unwrap();
    assert!(!cfg.otel.enabled());
}

#[test]
fn bad_otel_values_name_their_key() {
    assert_fails_naming("[otel]\nendpoint = \"collector:4318\"\n", "otel.endpoint");
    assert_fails_naming("[otel]\nendpoint = \"http://\"\n", "otel.endpoint");
    assert_fails_naming("[otel]\nprotocol = \"udp\"\n", "protocol");
    assert_fails_naming("[otel]\nsample_ratio = 2\n", "otel.sample_ratio");
    assert_fails_naming("[otel]\nsample_ratio = -0.5\n", "otel.sample_ratio");
    assert_fails_naming("[otel]\nservice_name = \"\"\n", "otel.service_name");
    assert_fails_naming("[otel]\nendpont = \"http://c:4318\"\n", "endpont");
    let e = load_text(
        KEYS,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")],
        SecretFiles::Skip,
    )
    .unwrap_err();
    assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
}

#[test]
fn check_config_prints_the_resolved_otel_endpoint_without_its_credentials() {
    let out = bridge_bin()
        .arg("check-config")
        .arg("--config")
        .arg(root().join("examples/minimal.toml"))
        .arg("--skip-secret-files")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://tenant:s3cr3t-otlp@collector.example:4318",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("[otel]"), "{stdout}");
    assert!(stdout.contains("collector.example:4318"), "{stdout}");
    // The values in use, defaults included.
    for line in [
        "protocol = \"http\"",
        "service_name = \"lark-bridge\"",
        "sample_ratio = 1.0",
    ] {
        assert!(stdout.contains(line), "{line} missing from\n{stdout}");
    }
    assert!(!stdout.contains("s3cr3t-otlp") && !stderr.contains("s3cr3t-otlp"));
    // And a start with a bad endpoint stops naming the key.
    let out = bridge_bin()
        .arg("check-config")
        .arg("--config")
        .arg(root().join("examples/minimal.toml"))
        .arg("--skip-secret-files")
        .env("LARK_BRIDGE__OTEL__ENDPOINT", "collector:4318")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("otel.endpoint"), "{stderr}");
}
