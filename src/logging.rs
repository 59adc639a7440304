//! Logs go to stderr (stdout belongs to the stdout sink), as JSON or text. Nothing logged ever
//! holds a body, a header value or a secret: the request span carries ids, type and outcome only.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber. Safe to call once; later calls are ignored.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match cfg.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Every line passes through the scrubber: configured secret values never leave the
        // process, whatever a client library put in an error we log.
        .with_writer(|| crate::secrets::Scrubbing(std::io::stderr()))
        .with_target(false);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}
