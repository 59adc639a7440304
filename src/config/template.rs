//! Topic and subject templates, parsed once at the config boundary: literal text and
//! `{placeholder}`s from the one list of names in [`Placeholder`]. The sinks render them with
//! their broker's charset rules (`sink::route`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value an event offers to a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// The ticket's helpdesk (the partition key).
    HelpdeskId,
    /// Lark's event type, e.g. `helpdesk.ticket.created_v1`.
    EventType,
    /// The tenant's key.
    TenantKey,
    /// The app's id.
    AppId,
}

impl Placeholder {
    /// Every placeholder, by its name in a template.
    pub const ALL: [(&'static str, Placeholder); 4] = [
        ("helpdesk_id", Placeholder::HelpdeskId),
        ("event_type", Placeholder::EventType),
        ("tenant_key", Placeholder::TenantKey),
        ("app_id", Placeholder::AppId),
    ];

    fn parse(name: &str) -> Option<Placeholder> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("", |(n, _)| n)
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Copied as is.
    Literal(String),
    /// Replaced by the event's value, reduced to the broker's charset.
    Value(Placeholder),
}

/// A parsed template; prints (and serializes) as written.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Template {
    parts: Vec<Part>,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Nothing to publish to.
    #[error("must not be empty")]
    Empty,
    /// A `{` without its `}`.
    #[error("unclosed '{{' in '{0}'")]
    Unclosed(String),
    /// A name outside [`Placeholder::ALL`].
    #[error("unknown placeholder {{{0}}} (known: helpdesk_id, event_type, tenant_key, app_id)")]
    Unknown(String),
}

impl Template {
    /// Parse `text`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        if text.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                return Err(TemplateError::Unclosed(text.to_string()));
            };
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let name = &rest[open + 1..open + close];
            let p = Placeholder::parse(name).ok_or_else(|| TemplateError::Unknown(name.into()))?;
            parts.push(Part::Value(p));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// True when no placeholder is used (a fixed topic, which the Kafka sink can create).
    pub fn is_fixed(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The text before the first placeholder.
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Literal(s)) => s,
            _ => "",
        }
    }
}

impl TryFrom<String> for Template {
    type Error = TemplateError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Template::parse(&s)
    }
}

impl From<Template> for String {
    fn from(t: Template) -> String {
        t.to_string()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.parts {
            match p {
                Part::Literal(s) => f.write_str(s)?,
                Part::Value(p) => write!(f, "{{{}}}", p.name())?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_print_as_written() {
        let t = Template::parse("lark.helpdesk.ticket.created.v1.{helpdesk_id}").unwrap();
        assert_eq!(
            t.to_string(),
            "lark.helpdesk.ticket.created.v1.{helpdesk_id}"
        );
        assert!(!t.is_fixed());
        assert!(Template::parse("fixed").unwrap().is_fixed());
        assert_eq!(Template::parse(""), Err(TemplateError::Empty));
        assert!(matches!(Template::parse("a.{x}"), Err(TemplateError::Unknown(n)) if n == "x"));
        assert!(matches!(
            Template::parse("a.{b"),
            Err(TemplateError::Unclosed(_))
        ));
    }
}
