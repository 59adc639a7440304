//! Filling a ticket event's `customized_fields` from Lark's ticket detail
//! (`enrich.ticket_detail`; helpdesk-events.md §3). Lark's `ticket.created_v1` never carries
//! them, so the service may fetch the ticket and hand the answer here. Pure: the HTTP call is
//! the service's; this module only reads the answer and rebuilds the event around it.

use std::borrow::Cow;

use serde_json::Value;

use super::fields;
use super::ticket_created::{CustomizedField, TicketData, FIELDS_FROM_API, FIELDS_UNAVAILABLE};
use super::ticket_updated::TicketUpdatedData;
use super::NormalizeError;
use crate::event::{EventClass, Outgoing};

/// The ticket whose detail would fill `out`: its `ticket_id` for a ticket created or updated
/// event, `None` for every other class (nothing to enrich).
pub fn ticket_to_enrich(out: &Outgoing) -> Option<&str> {
    match out.class {
        // The subject of both is the ticket id (helpdesk-events.md §1).
        EventClass::TicketCreated | EventClass::TicketUpdated => Some(&out.attrs.subject),
        _ => None,
    }
}

/// The customized fields in the `data` of Lark's ticket-detail answer
/// (`GET /open-apis/helpdesk/v1/tickets/{id}` → `data.ticket.customized_fields`); a ticket
/// without the member has none. `None` when the answer holds no ticket at all.
pub fn detail_customized_fields(data: &Value) -> Option<Vec<CustomizedField>> {
    let ticket = data.get("ticket")?.as_object()?;
    Some(fields::customized_fields(ticket.get("customized_fields")))
}

/// `out` with its ticket's customized fields replaced by `from_api` (`customized_fields_source`
/// `api`), or, when the API gave nothing (`None`), with the event's own fields kept and the
/// source `unavailable`. Every other byte of the event stays as the normalizer made it; an
/// event of another class is returned unchanged.
pub fn with_customized_fields(
    out: &Outgoing,
    from_api: Option<Vec<CustomizedField>>,
) -> Result<Outgoing, NormalizeError> {
    fn fill(t: &mut TicketData, from_api: Option<Vec<CustomizedField>>) {
        match from_api {
            Some(f) => {
                t.customized_fields = f;
                t.customized_fields_source = Cow::Borrowed(FIELDS_FROM_API);
            }
            None => t.customized_fields_source = Cow::Borrowed(FIELDS_UNAVAILABLE),
        }
    }
    match out.class {
        EventClass::TicketCreated => {
            let mut d: TicketData =
                serde_json::from_slice(&out.data).map_err(|_| NormalizeError::Serialize)?;
            fill(&mut d, from_api);
            rebuild(out, &d)
        }
        EventClass::TicketUpdated => {
            let mut d: TicketUpdatedData =
                serde_json::from_slice(&out.data).map_err(|_| NormalizeError::Serialize)?;
            fill(&mut d.ticket.fields, from_api);
            rebuild(out, &d)
        }
        _ => Ok(out.clone()),
    }
}

fn rebuild<D: serde::Serialize>(out: &Outgoing, data: &D) -> Result<Outgoing, NormalizeError> {
    let mut new = Outgoing::new(out.class, out.attrs.clone(), out.route.clone(), data)
        .map_err(|_| NormalizeError::Serialize)?;
    new.msg_id_override.clone_from(&out.msg_id_override);
    new.trace.clone_from(&out.trace);
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::{ticket_created, ticket_updated};
    use crate::{Inbound, SignatureHeaders, VerifiedEvent, Verifier};
    use serde_json::json;

    fn verified(event_type: &str, event: Value) -> VerifiedEvent {
        let body = json!({"schema": "2.0", "header": {"event_id": "e1", "event_type": event_type,
            "create_time": "1700000000000", "app_id": "cli_1", "tenant_key": "t"}, "event": event});
        // No key and no token: a plain body verifies (the unverified mode).
        let got = Verifier::new(Vec::new(), Vec::new(), 0)
            .verify(
                SignatureHeaders::default(),
                &serde_json::to_vec(&body).unwrap(),
                0,
            )
            .unwrap();
        let Inbound::Event(e) = got else {
            panic!("not an event")
        };
        e
    }

    fn data(out: &Outgoing) -> Value {
        serde_json::from_slice(&out.data).unwrap()
    }

    fn api_fields() -> Vec<CustomizedField> {
        detail_customized_fields(&json!({"ticket": {"ticket_id": "1", "customized_fields": [
            {"id": "f1", "value": "\"gold\"", "key_name": "tier", "display_name": "Tier"}]}}))
        .unwrap()
    }

    #[test]
    fn a_created_ticket_gets_the_api_fields_and_keeps_every_other_byte() {
        let ev = verified(
            "helpdesk.ticket.created_v1",
            json!({"ticket_id": "1", "helpdesk_id": "2", "stage": 1}),
        );
        let out = ticket_created::normalize(&ev, 0, &mut Vec::new()).unwrap();
        assert_eq!(ticket_to_enrich(&out), Some("1"));
        assert_eq!(data(&out)["customized_fields_source"], "event");
        let enriched = with_customized_fields(&out, Some(api_fields())).unwrap();
        let mut d = data(&enriched);
        assert_eq!(d["customized_fields_source"], "api");
        assert_eq!(d["customized_fields"][0]["key_name"], "tier");
        assert_eq!(d["customized_fields"][0]["position"], Value::Null);
        d["customized_fields"] = json!([]);
        d["customized_fields_source"] = json!("event");
        assert_eq!(d, data(&out), "nothing else changed");
        let whole: Value = serde_json::from_slice(&enriched.structured).unwrap();
        assert_eq!(whole["data"]["customized_fields_source"], "api");
        assert_eq!(whole["id"], "e1");
    }

    #[test]
    fn an_updated_ticket_is_filled_inside_its_ticket_and_failure_says_unavailable() {
        let ev = verified(
            "helpdesk.ticket.updated_v1",
            json!({"object": {"ticket_id": "1", "helpdesk_id": "2",
                "customized_fields": [{"id": "own"}]}, "old_object": {"stage": 1}}),
        );
        let out = ticket_updated::normalize(&ev, 0, &mut Vec::new()).unwrap();
        let ok = data(&with_customized_fields(&out, Some(api_fields())).unwrap());
        assert_eq!(ok["ticket"]["customized_fields"][0]["id"], "f1");
        assert_eq!(ok["ticket"]["customized_fields_source"], "api");
        let failed = data(&with_customized_fields(&out, None).unwrap());
        assert_eq!(
            failed["ticket"]["customized_fields"][0]["id"], "own",
            "kept"
        );
        assert_eq!(failed["ticket"]["customized_fields_source"], "unavailable");
    }

    #[test]
    fn a_detail_answer_without_a_ticket_gives_nothing_and_without_fields_gives_none() {
        assert_eq!(detail_customized_fields(&json!({})), None);
        assert_eq!(detail_customized_fields(&json!({"ticket": 3})), None);
        assert_eq!(
            detail_customized_fields(&json!({"ticket": {"ticket_id": "1"}})),
            Some(Vec::new())
        );
    }
}
