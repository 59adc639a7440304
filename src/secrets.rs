//! Keeping secrets out of logs, errors and `check-config`: one place that redacts every form a
//! secret takes in a string we print — the user-info of a URL (`nats://user:pass@host`), the
//! query of a URL (Lark's long-connection URL carries its access key there), and configured
//! secret values echoed in a client library's error text.

/// A URL, or a comma-separated list of them, fit for logs: user-info replaced by `***`, the
/// query and fragment by `…`. Text that is not a URL comes back unchanged.
pub fn redact_url(s: &str) -> String {
    s.split(',')
        .map(|u| {
            let u = u.split('#').next().unwrap_or("");
            let (u, had_query) = match u.split_once('?') {
                Some((base, _)) => (base, true),
                None => (u, false),
            };
            let mut out = match (u.find("://"), u.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}***{}", &u[..scheme + 3], &u[at..])
                }
                _ => u.to_string(),
            };
            if had_query {
                out.push_str("?…");
            }
            out
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `msg` with every non-empty value of `secrets` replaced by `***`: for error text from a
/// client library, which may echo what it was given.
pub fn scrub(mut msg: String, secrets: &[String]) -> String {
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        msg = msg.replace(s.as_str(), "***");
    }
    msg
}

/// Milliseconds since the Unix epoch (lease deadlines, receive times, the stall watch).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_url_form_is_redacted() {
        assert_eq!(
            redact_url("redis://:p4ss@h:6379/0,nats://u:p@n:4222"),
            "redis://***@h:6379/0,nats://***@n:4222"
        );
        assert_eq!(
            redact_url("wss://lark/ws?access_key=k&ticket=t#f"),
            "wss://lark/ws?…"
        );
        assert_eq!(redact_url("nats://n:4222"), "nats://n:4222");
        assert_eq!(
            scrub("bad tok3n".into(), &["tok3n".into(), String::new()]),
            "bad ***"
        );
    }
}
