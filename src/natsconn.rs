//! NATS connection options from `NatsAuth`, shared by the NATS sink and the NATS KV store so
//! both accept the same credentials and fail (and reconnect) the same way.

use std::time::Duration;

use async_nats::ConnectOptions;

use crate::config::NatsAuth;

/// A dead server must fail a call well inside the 2.5 s response budget.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect quickly after an outage; Lark's next redelivery is 15 s away.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Connect options for `auth`, with our timeouts. The password and token leave their `Secret`
/// only here, into the client.
pub async fn connect_options(auth: &NatsAuth, at: &str) -> Result<ConnectOptions, String> {
    let mut opts = ConnectOptions::new()
        .name("lark-bridge")
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .reconnect_delay_callback(|attempts| {
            let exp = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
            Duration::from_millis(2u64.saturating_pow(exp)).min(MAX_RECONNECT_DELAY)
        });
    match (&auth.user, &auth.password) {
        (Some(user), password) => {
            let password = password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            opts = opts.user_and_password(user.clone(), password);
        }
        (None, Some(_)) => return Err(format!("{at}.password is set without {at}.user")),
        (None, None) => {}
    }
    if let Some(token) = &auth.token {
        opts = opts.token(token.expose().to_string());
    }
    if let Some(path) = &auth.creds_file {
        // The io error names the file and the problem, never the file's contents.
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| format!("{at}.creds_file: cannot use {}: {e}", path.display()))?;
    }
    if auth.tls_required {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &auth.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_password_without_a_user_is_refused() {
        let auth = crate::config::NatsAuth {
            password: Some(crate::config::Secret::new("pw")),
            ..Default::default()
        };
        let Err(e) = crate::natsconn::connect_options(&auth, "dedup.nats").await else {
            panic!("accepted")
        };
        assert_eq!(e, "dedup.nats.password is set without dedup.nats.user");
    }
}
