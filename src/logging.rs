//! Logs go to stderr (stdout belongs to the stdout sink), as JSON or text. Nothing logged ever
//! holds a body, a header value or a secret: the request span carries ids, type and outcome only.
//! Two guards against a peer that writes our logs for us (issue 15 item 16): every value a peer
//! chose is escaped where it is logged (`lark_protocol::endpoint::printable`), and text lines go
//! through [`LineWriter`], which escapes any control character left (JSON escapes them itself);
//! warnings a peer can trigger per frame are rate-limited per call site ([`warn_limited!`]).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::layer::SubscriberExt;
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
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
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
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
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
