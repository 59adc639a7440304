//! Topic and subject templates: `{placeholder}`s filled from an event's [`RouteVars`], each
//! substituted value reduced to the broker's charset (the body still carries the exact value).

use lark_protocol::event::RouteVars;

/// Substitute `{placeholder}`s in a topic/subject template; each substituted value has every
/// character outside `allowed` replaced by `_` (the body still carries the exact value).
pub fn render_template(template: &str, vars: &RouteVars, allowed: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(template.len() + 24);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &rest[open + 1..open + close];
        let value = match name {
            "helpdesk_id" => vars.helpdesk_id.as_deref().unwrap_or("unknown"),
            "event_type" => vars.event_type.as_str(),
            "tenant_key" => vars.tenant_key.as_deref().unwrap_or("unknown"),
            "app_id" => vars.app_id.as_deref().unwrap_or("unknown"),
            _ => "unknown",
        };
        if value.is_empty() {
            out.push('_');
        }
        out.extend(value.chars().map(|c| if allowed(c) { c } else { '_' }));
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
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

    #[test]
    fn templates_sanitize_values_not_the_template() {
        let vars = RouteVars {
            helpdesk_id: Some("66.26 x>".into()),
            event_type: "im.message.receive_v1".into(),
            ..Default::default()
        };
        assert_eq!(
            render_template(
                "lark.helpdesk.ticket.created.v1.{helpdesk_id}",
                &vars,
                nats_token_char
            ),
            "lark.helpdesk.ticket.created.v1.66_26_x_"
        );
        assert_eq!(
            render_template("lark.events.raw.v1.{event_type}", &vars, nats_token_char),
            "lark.events.raw.v1.im_message_receive_v1"
        );
        assert_eq!(
            render_template("t.{event_type}", &vars, kafka_topic_char),
            "t.im.message.receive_v1"
        );
        assert_eq!(render_template("fixed", &vars, kafka_topic_char), "fixed");
    }
}
