//! Keeping secrets out of logs, errors and `check-config`: one place that redacts every form a
//! secret takes in a string we print — the user-info of a URL (`nats://user:pass@host`), the
//! query of a URL (Lark's long-connection URL carries its access key there), and configured
//! secret values echoed in a client library's error text.

/// A URL, or a comma-separated list of them, fit for logs: user-info replaced by `***`, the
/// query and fragment by `…`. Text that is not a URL comes back unchanged.
///
/// A password may hold a comma (`redis://:pa,ss@host`), so the list is split only at commas
/// that start a new `scheme://`; within one URL everything from `://` to its last `@` is
/// user-info.
pub fn redact_url(s: &str) -> String {
    split_urls(s)
        .into_iter()
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
                // No scheme but an `@`: treat everything before it as user-info too.
                (None, Some(at)) => format!("***{}", &u[at..]),
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

/// `s` split at the commas followed by a URL scheme (`letters://`).
fn split_urls(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in s.match_indices(',') {
        let rest = &s[i + 1..];
        let scheme_len = rest
            .find("://")
            .filter(|&n| {
                n > 0
                    && rest[..n]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            })
            .is_some();
        if scheme_len {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// `msg` with every non-empty value of `secrets` replaced by `***`: for error text from a
/// client library, which may echo what it was given.
pub fn scrub(mut msg: String, secrets: &[String]) -> String {
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        msg = msg.replace(s.as_str(), "***");
    }
    msg
}

/// Secret values of every configuration loaded in this process (see [`register`]).
static KNOWN: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());
/// The same values as precompiled substring searchers, for the log writer's check of every
/// line. The window-by-window compare it replaces made one `memcmp` call per byte per secret:
/// 2.6 % of the samples in a profile of the stdout row with two secrets registered, growing
/// with every secret configured; `memmem` scans with SIMD. (A same-minutes A/B did not resolve
/// the difference within its ±5 % noise: BENCHMARKS.md.)
static FINDERS: std::sync::RwLock<Vec<memchr::memmem::Finder<'static>>> =
    std::sync::RwLock::new(Vec::new());

/// Remember `values` as secrets, so that [`scrub_known`] (and with it every log line) removes
/// them from any text — a client library's error, a start-up failure. Values shorter than 4
/// characters are not registered: replacing them everywhere would mangle ordinary text and
/// hide nothing worth hiding. Each value is also registered as it appears inside a JSON string
/// (the JSON log format escapes quotes and backslashes).
pub fn register(values: impl IntoIterator<Item = String>) {
    let mut known = KNOWN.write().unwrap_or_else(|p| p.into_inner());
    for v in values {
        if v.chars().count() < 4 {
            continue;
        }
        let escaped = serde_json::to_string(&v).unwrap_or_default();
        let escaped = escaped[1..escaped.len().saturating_sub(1).max(1)].to_string();
        for v in [v, escaped] {
            if !known.contains(&v) {
                known.push(v);
            }
        }
    }
    // Longest first: a secret that contains another is replaced whole.
    known.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let finders = known
        .iter()
        .map(|k| memchr::memmem::Finder::new(k.as_bytes()).into_owned())
        .collect();
    *FINDERS.write().unwrap_or_else(|p| p.into_inner()) = finders;
}

/// `msg` scrubbed of every registered secret value.
pub fn scrub_known(msg: String) -> String {
    let known = KNOWN.read().unwrap_or_else(|p| p.into_inner());
    if known.is_empty() {
        return msg;
    }
    scrub(msg, &known)
}

/// Whether `text` holds a registered secret value (the log writer's fast path).
fn holds_known(text: &[u8]) -> bool {
    let finders = FINDERS.read().unwrap_or_else(|p| p.into_inner());
    finders.iter().any(|f| f.find(text).is_some())
}

/// A log writer that scrubs registered secret values out of each line before it reaches
/// `inner` — the last line of defence behind the typed redaction: whatever a client library
/// puts in an error that is logged, a configured secret does not leave the process.
pub struct Scrubbing<W>(pub W);

impl<W: std::io::Write> std::io::Write for Scrubbing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if !holds_known(buf) {
            return self.0.write_all(buf);
        }
        let text = scrub_known(String::from_utf8_lossy(buf).into_owned());
        self.0.write_all(text.as_bytes())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Milliseconds since the Unix epoch (lease deadlines, receive times, the stall watch).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_scrubbed_of_registered_secrets() {
        use std::io::Write;
        register(["s3cret-\"quoted\"".to_string(), "ab".to_string()]);
        let mut out = Scrubbing(Vec::new());
        // As text, and as the JSON format escapes it.
        out.write_all(b"error: bad s3cret-\"quoted\" ab\n").unwrap();
        out.write_all(br#"{"error":"bad s3cret-\"quoted\""}"#)
            .unwrap();
        let text = String::from_utf8(out.0).unwrap();
        assert_eq!(text, "error: bad *** ab\n{\"error\":\"bad ***\"}");
    }

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
        // A comma inside the password is not a list separator.
        assert_eq!(
            redact_url("redis://:pa,ss@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(
            redact_url("redis://u:p,a@ss,w@h/0,nats://x:y@n:4222"),
            "redis://***@h/0,nats://***@n:4222"
        );
        assert_eq!(
            redact_url("nats://a:4222,nats://b:4222"),
            "nats://a:4222,nats://b:4222"
        );
        assert_eq!(
            scrub("bad tok3n".into(), &["tok3n".into(), String::new()]),
            "bad ***"
        );
    }
}
