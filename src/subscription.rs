//! Subscribing to the helpdesk events through Lark's API (helpdesk-events.md §3): without that
//! call Lark sends nothing, whatever the console says. At start the bridge subscribes to
//! `lark.events` in the background — `/readyz` names the reason until Lark accepts, and failures
//! are retried with backoff, never fatal — and `lark-bridge subscribe` does it once by hand.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LarkConfig};
use crate::health::Health;
use crate::lark_api::{subscription_body, LarkApi};

/// The `/readyz` dependency name.
pub const HEALTH_NAME: &str = "lark_subscription";

/// Backoff between failed subscription attempts: from this, doubling, up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Subscribe in the background when `lark.subscribe` is on and the credentials are set; log
/// once that the subscription is left to the operator otherwise.
pub fn start(
    cfg: &LarkConfig,
    api: Arc<LarkApi>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !cfg.subscribe {
        tracing::info!("lark.subscribe = false: subscribing to the helpdesk events is left to the operator (lark-bridge subscribe)");
        return None;
    }
    if !api.can_call_helpdesk() {
        tracing::info!("lark.app_id/app_secret and lark.helpdesk_id/helpdesk_token are not all set: subscribing to the helpdesk events is left to the operator (lark-bridge subscribe)");
        return None;
    }
    let events = cfg.events.clone();
    health.set(
        HEALTH_NAME,
        Some("not subscribed to the helpdesk events yet".into()),
    );
    Some(tokio::spawn(async move {
        let mut wait = FIRST_RETRY;
        loop {
            match api.subscribe(&events).await {
                Ok(()) => {
                    health.set(HEALTH_NAME, None);
                    tracing::info!(events = %events.join(","), "subscribed to the helpdesk events");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "subscribing to the helpdesk events failed");
                    health.set(
                        HEALTH_NAME,
                        Some(format!("subscribing to the helpdesk events failed: {e}")),
                    );
                }
            }
            // Jitter, so that many replicas restarted together do not call Lark in step.
            let jittered = wait.mul_f64(0.5 + rand::random::<f64>() / 2.0);
            tokio::select! {
                _ = tokio::time::sleep(jittered) => {}
                _ = stop.cancelled() => return,
            }
            wait = (wait * 2).min(MAX_RETRY);
        }
    }))
}

/// `lark-bridge subscribe`.
#[derive(Debug, Clone, Args)]
pub struct SubscribeArgs {
    /// Unsubscribe from `lark.events` instead.
    #[arg(long)]
    pub unsubscribe: bool,
    /// Print the calls that would be made (secrets as ***) and make none.
    #[arg(long)]
    pub dry_run: bool,
}

/// Run `lark-bridge subscribe` with `cfg`: print each call and its result; `Err` when a call
/// failed (the message says why).
pub async fn run_command(cfg: &Config, args: &SubscribeArgs) -> Result<(), String> {
    let l = &cfg.lark;
    let path = if args.unsubscribe {
        "unsubscribe"
    } else {
        "subscribe"
    };
    let base = l.domain.trim_end_matches('/');
    let body = subscription_body(&l.events);
    if args.dry_run {
        println!(
            "POST {base}/open-apis/auth/v3/tenant_access_token/internal {{\"app_id\":{},\"app_secret\":\"***\"}}",
            Value::from(l.app_id.clone().unwrap_or_default())
        );
        println!(
            "POST {base}/open-apis/helpdesk/v1/events/{path} {body} (Authorization: Bearer ***, X-Lark-Helpdesk-Authorization: ***)"
        );
        return Ok(());
    }
    if l.app_credentials().is_none() {
        return Err("lark.app_id and lark.app_secret (or _file) must be set".into());
    }
    if l.helpdesk_credentials().is_none() {
        return Err("lark.helpdesk_id and lark.helpdesk_token (or _file) must be set".into());
    }
    let metrics = Arc::new(crate::metrics::Metrics::new(
        crate::metrics_source(cfg.source.kind),
        cfg.sink.kind.as_str(),
        cfg.dedup.backend.as_str(),
    ));
    let api = LarkApi::new(l, metrics).map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    match api.tenant_token(api.deadline()).await {
        Ok(_) => println!("tenant_access_token: ok"),
        Err(e) => {
            println!("tenant_access_token: failed: {e}");
            return Err(e.to_string());
        }
    }
    let r = if args.unsubscribe {
        api.unsubscribe(&l.events).await
    } else {
        api.subscribe(&l.events).await
    };
    match r {
        Ok(()) => {
            println!("{path} {}: ok", l.events.join(", "));
            Ok(())
        }
        Err(e) => {
            println!("{path}: failed: {e}");
            Err(e.to_string())
        }
    }
}
