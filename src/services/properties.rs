//! The request properties kqlgate forwards: the options the catalogue refuses are refused, the
//! ones kqlgate sets itself (`rule:forced-option` in `kql/catalogue.tsv`: the security switches,
//! when the cluster's `enforce_request_properties` is on, and attribution the tenant cannot
//! forge) get kqlgate's values, T-SQL is refused, everything else passes in the form it came.

use std::borrow::Cow;
use std::sync::{LazyLock, OnceLock};

use serde_json::{Map, Value};

use crate::config::Tenant;
use crate::error::ProxyError;
use crate::kql::catalogue::{self, Class, Kind, Rule};

/// The properties to forward for a request that sent `raw` (or none), read-only or not.
pub fn forwarded<'d>(
    tenant: &Tenant,
    defaults: &'d DefaultProperties,
    raw: Option<&str>,
    read_only: bool,
) -> Result<Cow<'d, str>, ProxyError> {
    match raw {
        None => Ok(Cow::Borrowed(defaults.get(tenant, read_only))),
        Some(raw) => {
            let (document, as_string) = parse_properties(raw)?;
            let enforce = defaults.enforce;
            Ok(Cow::Owned(rewrite(
                document, as_string, tenant, enforce, read_only,
            )?))
        }
    }
}

/// The value kqlgate gives an option it sets itself (`rule:forced-option` in the catalogue),
/// for a tenant and a request that is (or is not) read-only; `None`: not set for this request.
/// The security switches and the read-only flag only when the cluster enforces them.
fn forced_value(name: &str, tenant: &Tenant, enforce: bool, read_only: bool) -> Option<Value> {
    let attribution = || Value::from(format!("kqlgate;tenant={}", tenant.id));
    match name {
        "request_description" | "request_app_name" => Some(attribution()),
        "request_user" => Some(Value::from(tenant.id.clone())),
        "request_remote_entities_disabled"
        | "request_callout_disabled"
        | "request_external_data_disabled"
        | "request_external_table_disabled"
        | "request_sandboxed_execution_disabled"
        | "request_impersonation_disabled" => enforce.then(|| Value::from(true)),
        "query_language" => enforce.then(|| Value::from("kql")),
        "request_readonly" => (enforce && read_only).then(|| Value::from(true)),
        _ => None,
    }
}

/// The options the catalogue says kqlgate sets itself, found once.
fn forced_options() -> impl Iterator<Item = &'static str> {
    static FORCED: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        catalogue::entries()
            .filter(|e| e.kind == Kind::Option && e.class == Class::Rule(Rule::ForcedOption))
            .map(|e| e.name)
            .collect()
    });
    FORCED.iter().copied()
}

/// The properties of requests that bring none, which are the same for all of a tenant's
/// requests: built once, on the tenant's first such request, not per request.
pub struct DefaultProperties {
    enforce: bool,
    read_only: OnceLock<String>,
    read_write: OnceLock<String>,
}

impl DefaultProperties {
    pub fn new(enforce: bool) -> DefaultProperties {
        DefaultProperties {
            enforce,
            read_only: OnceLock::new(),
            read_write: OnceLock::new(),
        }
    }

    fn get(&self, tenant: &Tenant, read_only: bool) -> &str {
        let slot = if read_only {
            &self.read_only
        } else {
            &self.read_write
        };
        slot.get_or_init(|| {
            rewrite(Map::new(), false, tenant, self.enforce, read_only)
                .expect("an empty document has nothing to refuse")
        })
    }
}

fn bad_properties(what: &str) -> ProxyError {
    ProxyError::BadRequest(format!(
        "\"properties\" {what}; send an object such as {{\"Options\": {{…}}}}"
    ))
}

/// `properties` as an object, and whether it came as a string holding JSON.
fn parse_properties(raw: &str) -> Result<(Map<String, Value>, bool), ProxyError> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok((map, false)),
        Ok(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok((map, true)),
            _ => Err(bad_properties(
                "is a string that does not hold a JSON object",
            )),
        },
        _ => Err(bad_properties("is not an object")),
    }
}

/// The request properties to forward, in the form they came in: options the catalogue refuses
/// are refused, those kqlgate sets itself are replaced by its values, the rest pass unchanged.
fn rewrite(
    mut document: Map<String, Value>,
    as_string: bool,
    tenant: &Tenant,
    enforce: bool,
    read_only: bool,
) -> Result<String, ProxyError> {
    let options = match document
        .entry("Options")
        .or_insert_with(|| Value::Object(Map::new()))
    {
        Value::Object(options) => options,
        _ => return Err(bad_properties("has \"Options\" that is not an object")),
    };
    refuse_tsql(options)?;
    refuse_options(options)?;
    // Option names are matched case-insensitively, so no second spelling survives.
    options.retain(|key, _| !forced_options().any(|name| key.eq_ignore_ascii_case(name)));
    for name in forced_options() {
        if let Some(value) = forced_value(name, tenant, enforce, read_only) {
            options.insert(name.to_owned(), value);
        }
    }
    let object = Value::Object(document).to_string();
    Ok(if as_string {
        Value::from(object).to_string()
    } else {
        object
    })
}

/// Request options the catalogue refuses (row-level security switches, sandbox debugging…).
/// Options it does not know pass: SDKs send framing options of their own.
fn refuse_options(options: &Map<String, Value>) -> Result<(), ProxyError> {
    for key in options.keys() {
        if let Some(entry) = catalogue::lookup(Kind::Option, key) {
            if matches!(entry.class, Class::Refuse(_)) {
                return Err(ProxyError::Forbidden(format!(
                    "the request option {key} {}",
                    entry.reason
                )));
            }
        }
    }
    Ok(())
}

/// `query_language` other than KQL makes Kusto read the text as T-SQL, which the guard cannot.
fn refuse_tsql(options: &Map<String, Value>) -> Result<(), ProxyError> {
    for (key, value) in options {
        if !key.eq_ignore_ascii_case("query_language") {
            continue;
        }
        let kql = value
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case("kql") || v.eq_ignore_ascii_case("csl"));
        if !kql {
            return Err(ProxyError::Forbidden(
                "query_language other than KQL (T-SQL) is not accepted; send KQL".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(raw: Option<&str>, enforce: bool, read_only: bool) -> Result<Value, ProxyError> {
        let defaults = DefaultProperties::new(enforce);
        let sent = forwarded(&Tenant::example(), &defaults, raw, read_only)?;
        let value: Value = serde_json::from_str(&sent).unwrap();
        let document = match value {
            Value::String(inner) => serde_json::from_str(&inner).unwrap(),
            object => object,
        };
        Ok(document["Options"].clone())
    }

    #[test]
    fn every_forced_option_of_the_catalogue_has_a_value() {
        let tenant = Tenant::example();
        let mut forced: Vec<_> = forced_options().collect();
        assert!(forced.len() >= 11, "{forced:?}");
        forced.retain(|name| forced_value(name, &tenant, true, true).is_none());
        assert!(forced.is_empty(), "no value for {forced:?}");
        assert_eq!(forced_value("servertimeout", &tenant, true, true), None);
    }

    #[test]
    fn security_options_are_forced_whatever_the_client_sent() {
        let raw = r#"{"Options":{"request_readonly":false,"REQUEST_CALLOUT_DISABLED":false,"servertimeout":"00:01:00"}}"#;
        let options = options(Some(raw), true, true).unwrap();
        assert_eq!(options["request_readonly"], true);
        assert_eq!(options["request_callout_disabled"], true);
        assert!(options.get("REQUEST_CALLOUT_DISABLED").is_none());
        assert_eq!(options["request_remote_entities_disabled"], true);
        assert_eq!(options["request_impersonation_disabled"], true);
        assert_eq!(options["query_language"], "kql");
        assert_eq!(
            options["servertimeout"], "00:01:00",
            "other options are kept"
        );
    }

    #[test]
    fn string_properties_stay_a_string() {
        let raw = r#""{\"Options\":{\"request_description\":\"fabrikam\"},\"Parameters\":{}}""#;
        let defaults = DefaultProperties::new(true);
        let sent = forwarded(&Tenant::example(), &defaults, Some(raw), true).unwrap();
        let inner: Value = serde_json::from_str(
            serde_json::from_str::<Value>(&sent)
                .unwrap()
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            inner["Options"]["request_description"],
            "kqlgate;tenant=contoso"
        );
        assert_eq!(
            inner["Options"]["request_app_name"],
            "kqlgate;tenant=contoso"
        );
        assert_eq!(inner["Options"]["request_user"], "contoso");
        assert_eq!(inner["Parameters"], serde_json::json!({}));
    }

    #[test]
    fn attribution_is_added_even_without_enforcement() {
        let options_sent = options(None, false, true).unwrap();
        assert_eq!(
            options_sent["request_description"],
            "kqlgate;tenant=contoso"
        );
        assert!(options_sent.get("request_readonly").is_none());
        // Without enforcement the client's own values of the forced options are dropped.
        let raw = r#"{"Options":{"request_callout_disabled":false}}"#;
        let options_sent = options(Some(raw), false, true).unwrap();
        assert!(options_sent.get("request_callout_disabled").is_none());
    }

    #[test]
    fn writes_are_not_forced_read_only() {
        let options_sent = options(None, true, false).unwrap();
        assert!(options_sent.get("request_readonly").is_none());
        assert_eq!(options_sent["request_callout_disabled"], true);
    }

    #[test]
    fn options_the_catalogue_refuses_are_refused_unknown_ones_pass() {
        let raw = r#"{"Options":{"query_force_row_level_security":false}}"#;
        match options(Some(raw), true, true) {
            Err(ProxyError::Forbidden(message)) => {
                assert!(message.contains("row-level security"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let raw = r#"{"Options":{"results_v2_newlines_between_frames":true,"some_sdk_option":1}}"#;
        assert_eq!(
            options(Some(raw), true, true).unwrap()["some_sdk_option"],
            1
        );
    }

    #[test]
    fn tsql_and_bad_properties_are_refused() {
        for language in ["sql", "SQL", "tsql"] {
            let raw = format!(r#"{{"Options":{{"query_language":"{language}"}}}}"#);
            assert!(matches!(
                options(Some(&raw), false, true),
                Err(ProxyError::Forbidden(_))
            ));
        }
        for raw in [r#""not json""#, r#""[1]""#, r#"{"Options":[]}"#, "[1]"] {
            assert!(
                matches!(
                    options(Some(raw), true, true),
                    Err(ProxyError::BadRequest(_))
                ),
                "{raw}"
            );
        }
    }
}
