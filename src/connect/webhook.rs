//! Provider webhooks: Cloudbeds' `integration/appstate_changed`. Parsed leniently (JSON or
//! form body; `newState`, `new_state`, `app_state` or `state`; `clientID` or `client_id`;
//! `propertyID`, `propertyId`, `property_id` or `propertyID_str`). Webhooks are unsigned, so
//! an event is only a hint: [`confirm`] asks the provider before anything changes.

pub mod confirm;

use serde_json::Value;

/// What an app-state webhook says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppStateEvent {
    pub client_id: Option<String>,
    pub new_state: Option<String>,
    pub event: Option<String>,
    /// A Cloudbeds property id: ASCII digits only, so it can go into a query as is.
    pub property_id: Option<String>,
}

/// Parses a webhook body; `None` if it is neither a JSON object nor a form.
pub fn parse(content_type: &str, body: &[u8]) -> Option<AppStateEvent> {
    let fields: Vec<(String, String)> =
        if content_type.contains("json") || body.first().is_some_and(|b| *b == b'{') {
            let json: serde_json::Map<String, Value> = serde_json::from_slice(body).ok()?;
            json.into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    Value::Number(n) => Some((k, n.to_string())),
                    _ => None,
                })
                .collect()
        } else {
            let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
            if pairs.is_empty() {
                return None;
            }
            pairs
        };
    let first = |names: &[&str]| {
        names.iter().find_map(|name| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        })
    };
    Some(AppStateEvent {
        client_id: first(&["clientID", "client_id"]),
        new_state: first(&["newState", "new_state", "app_state", "state"]),
        event: first(&["event", "action"]),
        property_id: first(&["propertyID", "property_id", "propertyID_str"])
            .filter(|id| (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_envelope() {
        let body =
            br#"{"version":"1.0","event":"integration/appstate_changed","timestamp":1700000000.5,
            "propertyID":12,"clientID":"live_abc","oldState":"enabled","newState":"disabled"}"#;
        let e = parse("application/json", body).unwrap();
        assert_eq!(e.client_id.as_deref(), Some("live_abc"));
        assert_eq!(e.new_state.as_deref(), Some("disabled"));
        assert_eq!(e.event.as_deref(), Some("integration/appstate_changed"));
        assert_eq!(e.property_id.as_deref(), Some("12"));
    }

    #[test]
    fn a_property_id_is_digits_or_nothing() {
        let e = parse("application/json", br#"{"propertyId":"12&x=1"}"#).unwrap();
        assert_eq!(e.property_id, None);
        let e = parse("application/json", br#"{"propertyID_str":"0042"}"#).unwrap();
        assert_eq!(e.property_id.as_deref(), Some("0042"));
    }

    #[test]
    fn form_and_other_spellings() {
        let e = parse(
            "application/x-www-form-urlencoded",
            b"client_id=live_abc&app_state=disabled",
        )
        .unwrap();
        assert_eq!(e.client_id.as_deref(), Some("live_abc"));
        assert_eq!(e.new_state.as_deref(), Some("disabled"));
        let e = parse("application/json", br#"{"clientID":"x","state":"enabled"}"#).unwrap();
        assert_eq!(e.new_state.as_deref(), Some("enabled"));
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(parse("application/json", b"{not json"), None);
        assert_eq!(parse("text/plain", b""), None);
    }
}
