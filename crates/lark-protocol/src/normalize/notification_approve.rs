//! `helpdesk.notification.approve_v1` → `com.larksuite.helpdesk.notification.approve.v1`
//! (helpdesk-events.md §2): the outcome of a helpdesk push notification's approval, as a label
//! next to Lark's own string so a status Lark adds later is never lost.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields;
use super::{helpdesk_event, NormalizeError, Warnings};
use crate::event::{EventClass, Outgoing};
use crate::VerifiedEvent;

/// The `data` object, v1. Deserializable by consumers
/// ([`crate::consumer::NotificationApprove`]); unknown keys are ignored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotificationApproveData {
    /// Lark's `notification_id`, a number turned into its decimal string; the subject.
    pub notification_id: String,
    /// Lark's `helpdesk_id`, same rule; the partition key.
    pub helpdesk_id: String,
    /// `rejected`, `approved`, `canceled`, `deleted`, or `unknown` for another value; `None`
    /// when Lark sent none.
    pub approve_status: Option<Cow<'static, str>>,
    /// Lark's `approve_status` string as sent (e.g. `APPROVED`); `None` when not a string.
    pub approve_status_raw: Option<String>,
}

/// Build the `data` object from Lark's `event`.
pub fn notification_approve_data(event: &Value) -> Result<NotificationApproveData, NormalizeError> {
    let e = fields::object(Some(event));
    let notification_id =
        fields::id_string(e.get("notification_id")).ok_or(NormalizeError::MissingNotificationId)?;
    let helpdesk_id =
        fields::id_string(e.get("helpdesk_id")).ok_or(NormalizeError::MissingHelpdeskId)?;
    let raw = e.get("approve_status");
    let approve_status = match raw {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "REJECTED" => "rejected",
            "APPROVED" => "approved",
            "CANCELED" => "canceled",
            "DELETED" => "deleted",
            _ => "unknown",
        }),
        Some(_) => Some("unknown"),
    };
    Ok(NotificationApproveData {
        notification_id,
        helpdesk_id,
        approve_status: approve_status.map(Cow::Borrowed),
        approve_status_raw: fields::opt_str(raw),
    })
}

/// Normalize a verified `helpdesk.notification.approve_v1` event: subject `notification_id`,
/// partition key `helpdesk_id`.
pub fn normalize(
    ev: &VerifiedEvent,
    received_ms: i64,
    warnings: &mut Warnings,
) -> Result<Outgoing, NormalizeError> {
    let data = notification_approve_data(ev.event())?;
    helpdesk_event(
        ev,
        received_ms,
        warnings,
        EventClass::NotificationApprove,
        data.notification_id.clone(),
        data.helpdesk_id.clone(),
        &data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_map_and_unknown_ones_keep_their_string() {
        let d = |s: Value| {
            notification_approve_data(
                &json!({"notification_id": 1, "helpdesk_id": "2", "approve_status": s}),
            )
            .unwrap()
        };
        let a = d(json!("APPROVED"));
        assert_eq!(a.notification_id, "1");
        assert_eq!(a.approve_status.as_deref(), Some("approved"));
        let u = d(json!("ESCALATED"));
        assert_eq!(u.approve_status.as_deref(), Some("unknown"));
        assert_eq!(u.approve_status_raw.as_deref(), Some("ESCALATED"));
        let n = d(json!(3));
        assert_eq!(
            (n.approve_status.as_deref(), n.approve_status_raw),
            (Some("unknown"), None)
        );
        let m = d(Value::Null);
        assert_eq!((m.approve_status, m.approve_status_raw), (None, None));
        assert_eq!(
            notification_approve_data(&json!({"helpdesk_id": "2"})),
            Err(NormalizeError::MissingNotificationId)
        );
        assert_eq!(
            notification_approve_data(&json!({"notification_id": "1"})),
            Err(NormalizeError::MissingHelpdeskId)
        );
    }
}
