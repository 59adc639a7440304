//! Logs go to stderr (stdout belongs to the stdout sink), as JSON or text. Nothing logged ever
//! holds a body, a header value or a secret: the request span carries ids, type and outcome only.
//! Two guards against a peer that writes our logs for us (issue 15 item 16): every value a peer
//! chose is escaped where it is logged (`lark_protocol::endpoint::printable`), and text lines go
//! through [`LineWriter`], which escapes any control character left (JSON escapes them itself);
//! warnings a peer can trigger per frame are rate-limited per call site ([`warn_limited!`]).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber. Safe to call once; later calls are ignored.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if is_json(cfg) {
        // Every line passes through the scrubber: configured secret values never leave the
        // process, whatever a client library put in an error we log.
        builder
            .with_writer(|| crate::secrets::Scrubbing(std::io::stderr()))
            .fmt_fields(JsonFields::new())
            .event_format(JsonLine)
            .try_init()
    } else {
        // No colours: a line must hold no escape sequence at all, so that any ESC a peer
        // smuggled in is visibly escaped rather than mistaken for ours.
        builder
            .with_ansi(false)
            .with_writer(|| LineWriter(crate::secrets::Scrubbing(std::io::stderr())))
            .try_init()
    };
}

fn is_json(cfg: &LogConfig) -> bool {
    match cfg.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    }
}

/// A layer beside the logs (the OpenTelemetry one), with its own filter.
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// [`init`] with `extra` beside the log lines: the same lines, the log filter applied to them
/// alone (per-layer), and the trace-only spans ([`crate::telemetry::TARGET`]) never in them, so
/// a line's span is still the request's. False when a subscriber was installed before.
pub fn init_with(cfg: &LogConfig, extra: Option<ExtraLayer>) -> bool {
    let Some(extra) = extra else {
        init(cfg);
        return true;
    };
    let off = format!("{}=off", crate::telemetry::TARGET);
    let filter = EnvFilter::try_new(&cfg.level)
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(off.parse().expect("a valid directive"));
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let fmt: Box<dyn Layer<_> + Send + Sync> = if is_json(cfg) {
        fmt.with_writer(|| crate::secrets::Scrubbing(std::io::stderr()))
            .fmt_fields(JsonFields::new())
            .event_format(JsonLine)
            .with_filter(filter)
            .boxed()
    } else {
        fmt.with_ansi(false)
            .with_writer(|| LineWriter(crate::secrets::Scrubbing(std::io::stderr())))
            .with_filter(filter)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(extra)
        .with(fmt)
        .try_init()
        .is_ok()
}

/// The JSON log line, in the shape of tracing-subscriber's JSON format with the event's fields
/// flattened and the current span (`{"timestamp":…,"level":"INFO",<fields>,"span":{<its
/// fields>,"name":…}}`), written straight into the line buffer. tracing-subscriber's own
/// formatter builds a `serde_json` map of the span's fields for every line by re-parsing their
/// stored JSON text; here that text is spliced in as it is (issue 19: the per-request line was
/// about 8 % of the bridge's CPU, its formatting most of it).
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w)?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(event.metadata().level().as_str())?;
        w.write_char('"')?;
        let mut fields = JsonFieldsVisitor {
            w: &mut w,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            w.write_str(",\"span\":")?;
            let ext = span.extensions();
            // `JsonFields` stores a span's fields as the text of a JSON object.
            match ext
                .get::<FormattedFields<N>>()
                .and_then(|f| f.fields.strip_suffix('}'))
                .filter(|head| head.len() > 1)
            {
                Some(head) => {
                    w.write_str(head)?;
                    w.write_char(',')?;
                }
                None => w.write_char('{')?,
            }
            w.write_str("\"name\":")?;
            json_str(&mut w, span.name())?;
            w.write_char('}')?;
        }
        w.write_str("}\n")
    }
}

/// Now, as tracing-subscriber writes it: RFC 3339 UTC with microseconds.
fn write_timestamp(w: &mut impl std::fmt::Write) -> std::fmt::Result {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let Some(date) = lark_protocol::time::rfc3339_seconds(now.as_secs() as i64) else {
        return w.write_str("9999-12-31T23:59:59.999999Z");
    };
    let micros = lark_protocol::time::digits::<6>(now.subsec_micros());
    // Both are ASCII digits and separators.
    w.write_str(std::str::from_utf8(&date).unwrap_or_default())?;
    w.write_char('.')?;
    w.write_str(std::str::from_utf8(&micros).unwrap_or_default())?;
    w.write_char('Z')
}

/// A JSON string literal of `s`: `"`, `\\` and control characters escaped as serde_json does.
fn json_str(w: &mut impl std::fmt::Write, s: &str) -> std::fmt::Result {
    w.write_char('"')?;
    JsonEscaped(&mut *w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given JSON-escaped (the inside of a string literal), so that a `Debug` or
/// `Display` value is escaped as it is formatted, without a `String` in between.
struct JsonEscaped<'a, W: std::fmt::Write>(&'a mut W);

impl<W: std::fmt::Write> std::fmt::Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let esc: &str = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            // Only ASCII bytes are escaped, so these slices stay on char boundaries.
            self.0.write_str(&s[start..i])?;
            if esc.is_empty() {
                write!(self.0, "\\u{:04x}", b)?;
            } else {
                self.0.write_str(esc)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

/// The event's fields as `,"name":value` pairs.
struct JsonFieldsVisitor<'a, W: std::fmt::Write> {
    w: &'a mut W,
    result: std::fmt::Result,
}

impl<W: std::fmt::Write> JsonFieldsVisitor<'_, W> {
    fn key(&mut self, field: &Field) -> std::fmt::Result {
        let name = field.name();
        self.w.write_char(',')?;
        json_str(self.w, name.strip_prefix("r#").unwrap_or(name))?;
        self.w.write_char(':')
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut W) -> std::fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|_| value(self.w));
        }
    }
}

impl<W: std::fmt::Write> Visit for JsonFieldsVisitor<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| json_str(w, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, |w| {
            if value.is_finite() {
                // As serde_json writes it (`2.0`, not `2`).
                w.write_str(ryu::Buffer::new().format_finite(value))
            } else {
                w.write_str("null")
            }
        });
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, |w| {
            w.write_char('"')?;
            write!(JsonEscaped(&mut *w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// A text log writer that escapes every control character of a line (as `\u{…}`) except the
/// newline that ends it: one event is one line, whatever its fields hold. The fmt layer
/// formats each event into one buffer and writes it with one `write_all`.
pub struct LineWriter<W: Write>(pub W);

impl<W: Write> Write for LineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.iter().any(|b| b.is_ascii_control()) && !has_c1(body) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let text = String::from_utf8_lossy(body);
        let mut out = String::with_capacity(text.len() + 16);
        for c in text.chars() {
            if c.is_control() {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            } else {
                out.push(c);
            }
        }
        if body.len() < buf.len() {
            out.push('\n');
        }
        self.0.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Whether `b` holds a C1 control character (U+0080–U+009F, UTF-8 `C2 80`–`C2 9F`).
fn has_c1(b: &[u8]) -> bool {
    b.windows(2)
        .any(|w| w[0] == 0xc2 && (0x80..=0x9f).contains(&w[1]))
}

/// Lines a [`Throttle`] lets through per window.
pub const LINES_PER_WINDOW: u32 = 5;
/// The window of a [`Throttle`].
pub const WINDOW: Duration = Duration::from_secs(1);

/// A per-call-site rate limit for warnings a peer can trigger at will (a junk frame, a refused
/// event): at most [`LINES_PER_WINDOW`] lines per [`WINDOW`], and the next line let through
/// says how many were suppressed meanwhile. The metrics still count every one. A std `Mutex`
/// is right here: it is held for a few instructions and never across an await.
pub struct Throttle {
    state: Mutex<ThrottleState>,
}

struct ThrottleState {
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            state: Mutex::new(ThrottleState {
                window: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)`: log now, `n` lines having been suppressed since the last one logged;
    /// `None`: suppress this one.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.window
            .is_none_or(|w| now.saturating_duration_since(w) >= WINDOW)
        {
            s.window = Some(now);
            s.logged = 0;
        }
        if s.logged < LINES_PER_WINDOW {
            s.logged += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

/// `tracing::warn!` through a [`Throttle`] of its own (one per call site), with a
/// `suppressed` field: the lines held back since the last one logged.
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::logging::Throttle = $crate::logging::Throttle::new();
        if let Some(suppressed) = THROTTLE.allow() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}
pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_a_few_lines_through_per_window_and_counts_the_rest() {
        let t = Throttle::new();
        let t0 = Instant::now();
        let first: Vec<Option<u64>> = (0..8).map(|_| t.allow_at(t0)).collect();
        assert_eq!(
            first,
            [
                Some(0),
                Some(0),
                Some(0),
                Some(0),
                Some(0),
                None,
                None,
                None
            ]
        );
        assert_eq!(
            t.allow_at(t0 + WINDOW),
            Some(3),
            "the next line says 3 were held back"
        );
        assert_eq!(t.allow_at(t0 + WINDOW), Some(0));
    }

    /// The same events through tracing-subscriber's JSON format and through [`JsonLine`].
    fn both_formats(emit: impl Fn()) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
        use std::sync::{Arc, Mutex};
        let capture = |json_line: bool| {
            let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
            let out = buf.clone();
            let make = move || SharedBuf(out.clone());
            let builder = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_target(false)
                .with_writer(make);
            if json_line {
                let sub = builder
                    .fmt_fields(JsonFields::new())
                    .event_format(JsonLine)
                    .finish();
                tracing::subscriber::with_default(sub, &emit);
            } else {
                let sub = builder
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .finish();
                tracing::subscriber::with_default(sub, &emit);
            }
            let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect(l))
                .map(|mut v| {
                    let ts = v["timestamp"].as_str().unwrap().to_string();
                    // RFC 3339 UTC with microseconds, in both.
                    assert_eq!(ts.len(), 27, "{ts}");
                    assert!(chrono::DateTime::parse_from_rfc3339(&ts).is_ok(), "{ts}");
                    v.as_object_mut().unwrap().remove("timestamp");
                    v
                })
                .collect::<Vec<_>>()
        };
        (capture(false), capture(true))
    }

    struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_are_tracing_subscribers_json_lines() {
        let (theirs, ours) = both_formats(|| {
            tracing::info!("no span, no fields");
            let span = tracing::info_span!(
                "request",
                source = "webhook",
                event_id = "ev \"1\"\n",
                event_type = "helpdesk.ticket.created_v1"
            );
            let _e = span.enter();
            tracing::info!(
                outcome = "published",
                status = 200u16,
                latency_ms = 1.25,
                "request finished"
            );
            tracing::warn!(
                error = %"bad \u{1b}[31m \\ \u{7f} é",
                code = -3i64,
                ok = true,
                ratio = f64::NAN,
                whole = 2.0,
                r#type = ?Some("x"),
                "something failed"
            );
            let empty = tracing::debug_span!("event");
            let _e = empty.enter();
            tracing::debug!(debug_value = ?vec![1, 2], "in a span without fields");
        });
        assert_eq!(theirs.len(), 4);
        assert_eq!(ours, theirs);
        assert_eq!(ours[1]["span"]["event_id"], "ev \"1\"\n");
        assert_eq!(ours[2]["error"], "bad \u{1b}[31m \\ \u{7f} é");
    }

    #[test]
    fn text_lines_hold_no_control_character_but_their_end() {
        let mut out = LineWriter(Vec::new());
        out.write_all(b"WARN message_id=a\nINFO forged \x1b[31mred\r\t\xc2\x9b\n")
            .unwrap();
        out.write_all(b"plain line\n").unwrap();
        let text = String::from_utf8(out.0).unwrap();
        assert_eq!(
            text,
            "WARN message_id=a\\u{a}INFO forged \\u{1b}[31mred\\u{d}\\u{9}\\u{9b}\nplain line\n"
        );
    }
}
