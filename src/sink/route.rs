//! Topic and subject templates rendered for one event: each [`Placeholder`] filled from the
//! event's [`RouteVars`], reduced to the broker's charset (the body still carries the exact
//! value). The templates were parsed at the config boundary; the charset rules live here, with
//! the sinks.

use lark_protocol::event::RouteVars;

use crate::config::template::Part;
use crate::config::{Placeholder, Template};

/// Render `template` for `vars`; each substituted value has every character outside `allowed`
/// replaced by `_` (an empty value becomes `_`).
pub fn render_template(
    template: &Template,
    vars: &RouteVars,
    allowed: impl Fn(char) -> bool,
) -> String {
    let mut out = String::with_capacity(48);
    for part in template.parts() {
        match part {
            Part::Literal(s) => out.push_str(s),
            Part::Value(p) => {
                let value = match p {
                    Placeholder::HelpdeskId => vars.helpdesk_id.as_deref().unwrap_or("unknown"),
                    Placeholder::EventType => vars.event_type.as_str(),
                    Placeholder::TenantKey => vars.tenant_key.as_deref().unwrap_or("unknown"),
                    Placeholder::AppId => vars.app_id.as_deref().unwrap_or("unknown"),
                };
                if value.is_empty() {
                    out.push('_');
                }
                out.extend(value.chars().map(|c| if allowed(c) { c } else { '_' }));
            }
        }
    }
    out
}

/// Characters allowed in a value substituted into a NATS subject.
pub fn nats_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Characters allowed in a Kafka topic name.
pub fn kafka_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    #[test]
    fn templates_sanitize_values_not_the_template() {
        let vars = RouteVars {
            helpdesk_id: Some("66.26 x>".into()),
            event_type: "im.message.receive_v1".into(),
            ..Default::default()
        };
        assert_eq!(
            render_template(
                &t("lark.helpdesk.ticket.created.v1.{helpdesk_id}"),
                &vars,
                nats_token_char
            ),
            "lark.helpdesk.ticket.created.v1.66_26_x_"
        );
        assert_eq!(
            render_template(
                &t("lark.events.raw.v1.{event_type}"),
                &vars,
                nats_token_char
            ),
            "lark.events.raw.v1.im_message_receive_v1"
        );
        assert_eq!(
            render_template(&t("t.{event_type}"), &vars, kafka_topic_char),
            "t.im.message.receive_v1"
        );
        assert_eq!(
            render_template(&t("fixed"), &vars, kafka_topic_char),
            "fixed"
        );
    }
}
