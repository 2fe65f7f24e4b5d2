//! Tenant ids (SPEC section 9): what a valid one is, and which ones a new grant covers,
//! read from the token response (Cloudbeds `resources[]`), the access token's claims
//! (apaleo `account_code`) or `tenant_claim` (oauth2). Pure functions.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::config::Provider;

/// `[A-Za-z0-9._-]{1,64}`, not starting with `.` (a tenant id names a file in the file
/// store, so `.` and `..` must never be one).
pub fn valid_id(id: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    (1..=64).contains(&id.len()) && !id.starts_with('.') && id.bytes().all(allowed)
}

/// What a token response says about its grant, without any token: every field but the
/// token fields, plus the decoded claims of the access token and id_token when they are
/// JWTs (read as names only; nothing here is trusted as a signature would be).
pub fn grant_facts(response: &Map<String, Value>) -> Value {
    let mut facts = Map::new();
    for (key, value) in response {
        if !matches!(key.as_str(), "access_token" | "refresh_token" | "id_token") {
            facts.insert(key.clone(), value.clone());
        }
    }
    for (field, name) in [
        ("access_token", "access_token_claims"),
        ("id_token", "id_token_claims"),
    ] {
        if let Some(claims) = response
            .get(field)
            .and_then(Value::as_str)
            .and_then(jwt_claims)
        {
            facts.insert(name.to_owned(), claims);
        }
    }
    Value::Object(facts)
}

fn jwt_claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.is_object().then_some(claims)
}

/// The tenant ids a grant covers, as its provider names them. Empty when the response
/// does not say (the install flow then asks the provider, or uses `?tenant=`). `Err` when
/// the provider names an id bearerd cannot use.
pub fn covered_ids(
    provider: Provider,
    claim: Option<&str>,
    facts: &Value,
) -> Result<Vec<String>, String> {
    let raw: Vec<&Value> = match provider {
        // Group grants list every property too; `association` entries name the group.
        Provider::Cloudbeds => facts
            .get("resources")
            .and_then(Value::as_array)
            .map(|resources| {
                resources
                    .iter()
                    .filter(|r| r.get("type").and_then(Value::as_str) == Some("property"))
                    .filter_map(|r| r.get("id"))
                    .collect()
            })
            .unwrap_or_default(),
        Provider::Apaleo => facts
            .pointer("/access_token_claims/account_code")
            .into_iter()
            .collect(),
        Provider::OAuth2 => claim
            .and_then(|pointer| {
                facts
                    .pointer(pointer)
                    .or_else(|| facts.get("id_token_claims")?.pointer(pointer))
                    .or_else(|| facts.get("access_token_claims")?.pointer(pointer))
            })
            .into_iter()
            .collect(),
    };
    let mut ids: Vec<String> = Vec::new();
    for value in raw {
        let id = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err("the provider named a tenant with a value that is not an id".into()),
        };
        if !valid_id(&id) {
            return Err(format!(
                "the provider named tenant `{}`, which is not [A-Za-z0-9._-]{{1,64}}",
                id.chars().take(70).collect::<String>()
            ));
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The property ids in a Cloudbeds `getHotels` answer (`data[].propertyID`), with names.
pub fn hotels(body: &[u8]) -> Vec<(String, Option<String>)> {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let Some(data) = json.get("data").and_then(Value::as_array) else {
        return Vec::new();
    };
    data.iter()
        .filter_map(|hotel| {
            let id = match hotel.get("propertyID")? {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            let name = hotel
                .get("propertyName")
                .and_then(Value::as_str)
                .map(str::to_owned);
            valid_id(&id).then_some((id, name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_ids() {
        for id in ["1001", "a.b_c-D", &"x".repeat(64)] {
            assert!(valid_id(id), "{id}");
        }
        for id in ["", ".", "..", ".hidden", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_id(id), "{id}");
        }
    }

    fn facts(response: Value) -> Value {
        grant_facts(response.as_object().unwrap())
    }

    #[test]
    fn cloudbeds_resources_and_group_grants() {
        let single =
            facts(json!({"access_token": "t", "resources": [{"type": "property", "id": "1001"}]}));
        assert_eq!(
            covered_ids(Provider::Cloudbeds, None, &single),
            Ok(vec!["1001".into()])
        );
        let group = facts(json!({"access_token": "t", "resources": [
            {"type": "association", "id": "77"},
            {"type": "property", "id": 1001},
            {"type": "property", "id": "1002"}]}));
        assert_eq!(
            covered_ids(Provider::Cloudbeds, None, &group),
            Ok(vec!["1001".into(), "1002".into()])
        );
        let none = facts(json!({"access_token": "cbat_x"}));
        assert_eq!(covered_ids(Provider::Cloudbeds, None, &none), Ok(vec![]));
        let bad = facts(json!({"resources": [{"type": "property", "id": "../x"}]}));
        assert!(covered_ids(Provider::Cloudbeds, None, &bad).is_err());
    }

    #[test]
    fn facts_never_hold_tokens_and_read_jwt_claims() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"account_code":"DEMO","sub":"u"}"#);
        let jwt = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        let facts = facts(
            json!({"access_token": jwt, "refresh_token": "r", "id_token": "x.y.z", "expires_in": 60}),
        );
        let text = facts.to_string();
        assert!(!text.contains("sig") && !text.contains("\"r\""), "{text}");
        assert_eq!(
            covered_ids(Provider::Apaleo, None, &facts),
            Ok(vec!["DEMO".into()])
        );
        assert_eq!(
            covered_ids(Provider::OAuth2, Some("/access_token_claims/sub"), &facts),
            Ok(vec!["u".into()])
        );
    }

    #[test]
    fn oauth2_claim_in_the_response_or_id_token() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"org":"acme"}"#);
        let facts = facts(
            json!({"access_token": "opaque", "id_token": format!("h.{payload}.s"), "tenant": "t1"}),
        );
        assert_eq!(
            covered_ids(Provider::OAuth2, Some("/tenant"), &facts),
            Ok(vec!["t1".into()])
        );
        assert_eq!(
            covered_ids(Provider::OAuth2, Some("/org"), &facts),
            Ok(vec!["acme".into()])
        );
        assert_eq!(covered_ids(Provider::OAuth2, None, &facts), Ok(vec![]));
    }

    #[test]
    fn get_hotels_answer() {
        let body = br#"{"success":true,"data":[{"propertyID":"1001","propertyName":"Sea View"},{"propertyID":1002}]}"#;
        assert_eq!(
            hotels(body),
            vec![
                ("1001".into(), Some("Sea View".into())),
                ("1002".into(), None)
            ]
        );
    }
}
