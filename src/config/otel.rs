//! `[otel]` — OpenTelemetry traces over OTLP, off by default. Each key may also come from the
//! standard `OTEL_*` variable beside it; **an explicit key wins** (TOML or
//! `LARK_BRIDGE__OTEL__…`), as a programmatic setting does over the environment in every OTel
//! SDK, so an `OTEL_*` variable a platform injects into every pod cannot override what the
//! operator wrote for this service. `OTEL_SDK_DISABLED=true` turns the export off whatever else
//! is set. The resolved values replace the unset ones, so `check-config` prints what is used.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Url};

/// The OTLP transport.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OtelProtocol {
    /// OTLP/gRPC (the receiver's port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies, posted to `{endpoint}/v1/traces` (port 4318).
    #[default]
    Http,
}

impl OtelProtocol {
    /// From `OTEL_EXPORTER_OTLP_PROTOCOL`'s values.
    fn from_env(v: &str) -> Option<OtelProtocol> {
        match v.trim() {
            "grpc" => Some(OtelProtocol::Grpc),
            "http/protobuf" | "http" => Some(OtelProtocol::Http),
            _ => None,
        }
    }
}

/// Traces (the `[otel]` section).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelConfig {
    /// Base URL of the OTLP receiver (a collector), as `OTEL_EXPORTER_OTLP_ENDPOINT`: over HTTP
    /// the spans are posted to `{endpoint}/v1/traces`; gRPC uses it as it is. Unset (default) =
    /// no export, no trace context in messages. Else from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// (a full URL, used as it is) or `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<Url>,
    /// `http` (http/protobuf) or `grpc`. Default `http`, else from
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub protocol: Option<OtelProtocol>,
    /// The resource's `service.name`. Default `lark-bridge`, else from `OTEL_SERVICE_NAME` or
    /// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`.
    pub service_name: Option<String>,
    /// Share of new traces recorded, 0 to 1 (a parent-based ratio sampler: a request that
    /// arrives with a sampled parent follows its parent's decision). Default 1.0, else from
    /// `OTEL_TRACES_SAMPLER_ARG`.
    pub sample_ratio: Option<f64>,
    /// Continue the trace of a W3C `traceparent` header on the webhook request (a gateway in
    /// front that traces). Default false: Lark sends none, and the header of an unverified
    /// request must not choose our trace ids or sampling.
    pub parent_from_request: bool,
    /// `OTEL_RESOURCE_ATTRIBUTES`, parsed (`key=value` pairs, percent-decoded); not a key.
    #[serde(skip)]
    pub resource_attributes: Vec<(String, String)>,
    /// The URL the exporter sends to (`{endpoint}/v1/traces` over HTTP); not a key.
    #[serde(skip)]
    pub export_url: Option<url::Url>,
    /// The values of `OTEL_EXPORTER_OTLP_HEADERS` / `_TRACES_HEADERS` (which the exporter reads
    /// itself): often a backend's API key, so scrubbed from logs like every secret; not a key.
    #[serde(skip)]
    pub header_values: Vec<String>,
}

/// Default `otel.service_name`.
pub const DEFAULT_SERVICE_NAME: &str = "lark-bridge";

fn lookup<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.trim().is_empty())
}

/// `%XX` sequences decoded (W3C baggage octets, as `OTEL_RESOURCE_ATTRIBUTES` uses them).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl OtelConfig {
    /// Whether traces are exported (an endpoint resolved).
    pub fn enabled(&self) -> bool {
        self.export_url.is_some()
    }

    /// The protocol in use.
    pub fn protocol(&self) -> OtelProtocol {
        self.protocol.unwrap_or_default()
    }

    /// The service name in use.
    pub fn service_name(&self) -> &str {
        self.service_name.as_deref().unwrap_or(DEFAULT_SERVICE_NAME)
    }

    /// The sampling ratio in use.
    pub fn sample_ratio(&self) -> f64 {
        self.sample_ratio.unwrap_or(1.0)
    }

    /// Fill the unset keys from the `OTEL_*` variables of `env`, validate, and compute the
    /// export URL. Errors name the key or the variable the bad value came from.
    pub(super) fn resolve(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        let disabled =
            lookup(env, "OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));

        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(h) = lookup(env, var) {
                self.header_values.extend(
                    h.split(',')
                        .filter_map(|pair| pair.split_once('='))
                        .map(|(_, v)| v.trim().to_string())
                        .flat_map(|v| [percent_decode(&v), v]),
                );
            }
        }
        if let Some(attrs) = lookup(env, "OTEL_RESOURCE_ATTRIBUTES") {
            self.resource_attributes = attrs
                .split(',')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    let k = k.trim();
                    (!k.is_empty()).then(|| (k.to_string(), percent_decode(v.trim())))
                })
                .collect();
        }
        if self.service_name.is_none() {
            self.service_name = lookup(env, "OTEL_SERVICE_NAME")
                .map(str::to_string)
                .or_else(|| {
                    self.resource_attributes
                        .iter()
                        .find(|(k, _)| k == "service.name")
                        .map(|(_, v)| v.clone())
                });
        }
        if self.service_name.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::invalid(
                "otel.service_name",
                "must not be empty",
            ));
        }

        if self.protocol.is_none() {
            for var in [
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ] {
                if let Some(v) = lookup(env, var) {
                    self.protocol = Some(OtelProtocol::from_env(v).ok_or_else(|| {
                        ConfigError::invalid(
                            var,
                            format!("{v:?} is not supported: use grpc or http/protobuf"),
                        )
                    })?);
                    break;
                }
            }
        }

        if self.sample_ratio.is_none() {
            if let Some(v) = lookup(env, "OTEL_TRACES_SAMPLER_ARG") {
                let r = v.trim().parse::<f64>().map_err(|_| {
                    ConfigError::invalid(
                        "OTEL_TRACES_SAMPLER_ARG",
                        format!("{v:?} is not a number"),
                    )
                })?;
                check_ratio("OTEL_TRACES_SAMPLER_ARG", r)?;
                self.sample_ratio = Some(r);
            }
        }
        if let Some(r) = self.sample_ratio {
            check_ratio("otel.sample_ratio", r)?;
        }

        // The endpoint: our key (a base), else the per-signal variable (a full URL), else the
        // general one (a base).
        let protocol = self.protocol();
        let (key, base, full) = match &self.endpoint {
            Some(u) => ("otel.endpoint", Some(u.expose().to_string()), None),
            None => match lookup(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                Some(v) => (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    None,
                    Some(v.to_string()),
                ),
                None => (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    lookup(env, "OTEL_EXPORTER_OTLP_ENDPOINT").map(str::to_string),
                    None,
                ),
            },
        };
        let Some(raw) = base.clone().or(full.clone()) else {
            return Ok(());
        };
        let parsed = url::Url::parse(raw.trim()).map_err(|e| {
            ConfigError::invalid(
                key,
                format!("{} is not a URL: {e}", crate::secrets::redact_url(&raw)),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "{} must be an http:// or https:// URL with a host",
                    crate::secrets::redact_url(&raw)
                ),
            ));
        }
        let export = match (protocol, base.is_some()) {
            (OtelProtocol::Http, true) => {
                let path = parsed.path().trim_end_matches('/');
                let mut u = parsed.clone();
                u.set_path(&format!("{path}/v1/traces"));
                u
            }
            _ => parsed,
        };
        if self.endpoint.is_none() {
            self.endpoint = Some(Url::new(raw.trim()));
        }
        if !disabled {
            self.export_url = Some(export);
            // What is used, printed by `check-config` with the rest.
            self.protocol = Some(protocol);
            self.service_name = Some(self.service_name().to_string());
            self.sample_ratio = Some(self.sample_ratio());
        }
        Ok(())
    }
}

fn check_ratio(key: &str, r: f64) -> Result<(), ConfigError> {
    if !(0.0..=1.0).contains(&r) {
        return Err(ConfigError::invalid(
            key,
            format!("{r} is not between 0 and 1"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn off_without_an_endpoint() {
        let mut c = OtelConfig::default();
        c.resolve(&[]).unwrap();
        assert!(!c.enabled());
        assert_eq!(c.protocol(), OtelProtocol::Http);
        assert_eq!(c.service_name(), "lark-bridge");
        assert_eq!(c.sample_ratio(), 1.0);
    }

    #[test]
    fn http_appends_the_signal_path_to_a_base_but_not_to_the_traces_variable() {
        let mut c = OtelConfig {
            endpoint: Some(Url::new("http://collector:4318/prefix/")),
            ..Default::default()
        };
        c.resolve(&[]).unwrap();
        assert_eq!(
            c.export_url.as_ref().unwrap().as_str(),
            "http://collector:4318/prefix/v1/traces"
        );
        let mut c = OtelConfig::default();
        c.resolve(&env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/custom",
        )]))
        .unwrap();
        assert_eq!(
            c.export_url.as_ref().unwrap().as_str(),
            "http://c:4318/custom"
        );
        let mut c = OtelConfig {
            protocol: Some(OtelProtocol::Grpc),
            endpoint: Some(Url::new("http://c:4317")),
            ..Default::default()
        };
        c.resolve(&[]).unwrap();
        assert_eq!(c.export_url.as_ref().unwrap().as_str(), "http://c:4317/");
    }

    #[test]
    fn explicit_keys_win_over_the_environment() {
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=a%2Cb",
            ),
        ]);
        let mut c = OtelConfig::default();
        c.resolve(&e).unwrap();
        assert_eq!(c.export_url.as_ref().unwrap().as_str(), "http://env:4318/");
        assert_eq!(c.protocol(), OtelProtocol::Grpc);
        assert_eq!(c.service_name(), "from-env");
        assert_eq!(c.sample_ratio(), 0.25);
        assert_eq!(
            c.resource_attributes,
            vec![
                ("deployment.environment".to_string(), "prod".to_string()),
                ("team".to_string(), "a,b".to_string())
            ]
        );
        let mut c = OtelConfig {
            endpoint: Some(Url::new("http://mine:4318")),
            protocol: Some(OtelProtocol::Http),
            service_name: Some("mine".into()),
            sample_ratio: Some(0.5),
            ..Default::default()
        };
        c.resolve(&e).unwrap();
        assert_eq!(
            c.export_url.as_ref().unwrap().as_str(),
            "http://mine:4318/v1/traces"
        );
        assert_eq!(c.service_name(), "mine");
        assert_eq!(c.sample_ratio(), 0.5);
    }

    #[test]
    fn exporter_header_values_are_kept_as_secrets() {
        let mut c = OtelConfig::default();
        c.resolve(&env(&[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "api-key=abc%3D123,x-tenant = t1",
        )]))
        .unwrap();
        assert!(c.header_values.contains(&"abc=123".to_string()));
        assert!(c.header_values.contains(&"abc%3D123".to_string()));
        assert!(c.header_values.contains(&"t1".to_string()));
    }

    #[test]
    fn sdk_disabled_turns_the_export_off() {
        let mut c = OtelConfig {
            endpoint: Some(Url::new("http://mine:4318")),
            ..Default::default()
        };
        c.resolve(&env(&[("OTEL_SDK_DISABLED", "true")])).unwrap();
        assert!(!c.enabled());
    }

    #[test]
    fn bad_values_name_their_key_or_variable() {
        let bad = |c: &mut OtelConfig, e: &[(&str, &str)]| {
            c.resolve(&env(e)).unwrap_err().key().unwrap().to_string()
        };
        let mut c = OtelConfig {
            endpoint: Some(Url::new("not a url")),
            ..Default::default()
        };
        assert_eq!(bad(&mut c, &[]), "otel.endpoint");
        let mut c = OtelConfig {
            endpoint: Some(Url::new("ftp://c:1")),
            ..Default::default()
        };
        assert_eq!(bad(&mut c, &[]), "otel.endpoint");
        let mut c = OtelConfig::default();
        assert_eq!(
            bad(&mut c, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "::")]),
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        );
        let mut c = OtelConfig {
            sample_ratio: Some(1.5),
            ..Default::default()
        };
        assert_eq!(bad(&mut c, &[]), "otel.sample_ratio");
        let mut c = OtelConfig::default();
        assert_eq!(
            bad(&mut c, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        );
        let mut c = OtelConfig::default();
        assert_eq!(
            bad(&mut c, &[("OTEL_TRACES_SAMPLER_ARG", "half")]),
            "OTEL_TRACES_SAMPLER_ARG"
        );
    }
}
