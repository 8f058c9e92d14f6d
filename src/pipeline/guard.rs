//! Stage: guard. Applies the tenant-isolation guard (`crate::kql`) to the query text, and fixes
//! the request properties: the security switches forced to their safe values (when the cluster's
//! `enforce_request_properties` is on), T-SQL refused, and attribution the tenant cannot forge.
//! A refusal is a 403 naming the construct and its position; it is logged without the query.

use std::borrow::Cow;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::config::Tenant;
use crate::error::ProxyError;
use crate::kql::{self, Role, Scope, TextKind};
use crate::pipeline::forward::ClusterPolicy;
use crate::pipeline::query::{QueryBody, Rewrite};
use crate::pipeline::route::Endpoint;

/// Request options that keep a query inside its database, and their safe values.
const FORCED_OPTIONS: [(&str, bool); 6] = [
    ("request_remote_entities_disabled", true),
    ("request_callout_disabled", true),
    ("request_external_data_disabled", true),
    ("request_external_table_disabled", true),
    ("request_sandboxed_execution_disabled", true),
    ("request_impersonation_disabled", true),
];

pub fn check<'d>(
    tenant: &Tenant,
    defaults: &'d DefaultProperties,
    policy: ClusterPolicy,
    endpoint: Endpoint,
    query: &QueryBody,
) -> Result<Rewrite<'d>, ProxyError> {
    let scope = Scope {
        database: &tenant.database,
        database_names: &tenant.database_names,
    };
    // The query endpoints serve only `.show` commands, which the viewer role covers.
    let role = match endpoint {
        Endpoint::Mgmt => tenant.role,
        Endpoint::QueryV1 | Endpoint::QueryV2 => Role::Viewer,
    };
    let options = kql::Options {
        restrict_statement: policy.restrict_statement,
    };
    let verdict = kql::guard(&query.csl, &scope, role, options).map_err(|refusal| {
        tracing::info!(
            target: "kqlgate::guard",
            tenant = %tenant.id,
            reason = %refusal.reason,
            line = refusal.line,
            column = refusal.column,
            "query refused"
        );
        ProxyError::Forbidden(refusal.to_string())
    })?;
    let read_only = verdict.kind == TextKind::Query || role == Role::Viewer;
    let properties = match query.properties_json() {
        None => Cow::Borrowed(defaults.get(tenant, read_only)),
        Some(raw) => {
            let (document, as_string) = parse_properties(raw.get())?;
            let enforce = policy.enforce_request_properties;
            Cow::Owned(rewrite(document, as_string, tenant, enforce, read_only)?)
        }
    };
    Ok(Rewrite {
        csl: verdict.rewritten,
        properties_json: Some(properties),
    })
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

/// The request properties to forward, in the form they came in.
fn rewrite(
    mut document: Map<String, Value>,
    as_string: bool,
    tenant: &Tenant,
    enforce: bool,
    read_only: bool,
) -> Result<String, ProxyError> {
    let bad = bad_properties;
    let options = match document
        .entry("Options")
        .or_insert_with(|| Value::Object(Map::new()))
    {
        Value::Object(options) => options,
        _ => return Err(bad("has \"Options\" that is not an object")),
    };
    refuse_tsql(options)?;
    let attribution = format!("kqlgate;tenant={}", tenant.id);
    let mut set = |name: &str, value: Value| {
        // Option names are matched case-insensitively, so no second spelling survives.
        options.retain(|key, _| !key.eq_ignore_ascii_case(name));
        options.insert(name.to_owned(), value);
    };
    set("request_description", Value::from(attribution.clone()));
    set("request_app_name", Value::from(attribution));
    set("request_user", Value::from(tenant.id.clone()));
    if enforce {
        for (name, value) in FORCED_OPTIONS {
            set(name, Value::from(value));
        }
        set("query_language", Value::from("kql"));
        if read_only {
            set("request_readonly", Value::from(true));
        }
    }
    let object = Value::Object(document).to_string();
    Ok(if as_string {
        Value::from(object).to_string()
    } else {
        object
    })
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

    fn tenant() -> Tenant {
        Tenant::example()
    }

    fn policy(enforce: bool) -> ClusterPolicy {
        ClusterPolicy {
            enforce_request_properties: enforce,
            restrict_statement: false,
        }
    }

    fn forwarded(body: &str, enforce: bool, endpoint: Endpoint) -> Result<Value, ProxyError> {
        let query = QueryBody::parse(body.as_bytes()).unwrap();
        let defaults = DefaultProperties::new(enforce);
        let rewrite = check(&tenant(), &defaults, policy(enforce), endpoint, &query)?;
        let bytes = query.forwarded("g", &rewrite);
        Ok(serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn security_options_are_forced_whatever_the_client_sent() {
        let body = r#"{"csl":"T","properties":{"Options":{"request_readonly":false,"REQUEST_CALLOUT_DISABLED":false,"servertimeout":"00:01:00"}}}"#;
        let sent = forwarded(body, true, Endpoint::QueryV2).unwrap();
        let options = &sent["properties"]["Options"];
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
        let body = r#"{"csl":"T","properties":"{\"Options\":{\"request_description\":\"fabrikam\"},\"Parameters\":{}}"}"#;
        let sent = forwarded(body, true, Endpoint::QueryV2).unwrap();
        let inner: Value = serde_json::from_str(sent["properties"].as_str().unwrap()).unwrap();
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
        let sent = forwarded(r#"{"csl":"T"}"#, false, Endpoint::QueryV1).unwrap();
        let options = &sent["properties"]["Options"];
        assert_eq!(options["request_description"], "kqlgate;tenant=contoso");
        assert!(options.get("request_readonly").is_none());
    }

    #[test]
    fn admins_commands_are_not_forced_read_only() {
        let mut admin = tenant();
        admin.role = Role::Admin;
        let query = QueryBody::parse(br#"{"csl":".create table T (a:string)"}"#).unwrap();
        let defaults = DefaultProperties::new(true);
        let rewrite = check(&admin, &defaults, policy(true), Endpoint::Mgmt, &query).unwrap();
        let sent: Value =
            serde_json::from_str(rewrite.properties_json.as_deref().unwrap()).unwrap();
        assert!(sent["Options"].get("request_readonly").is_none());
        // The same command on a query endpoint is a viewer's, and refused.
        assert!(check(&admin, &defaults, policy(true), Endpoint::QueryV1, &query).is_err());
    }

    #[test]
    fn tsql_and_bad_properties_are_refused() {
        for language in ["sql", "SQL", "tsql"] {
            let body = format!(
                r#"{{"csl":"select 1","properties":{{"Options":{{"query_language":"{language}"}}}}}}"#
            );
            assert!(matches!(
                forwarded(&body, false, Endpoint::QueryV1),
                Err(ProxyError::Forbidden(_))
            ));
        }
        for body in [
            r#"{"csl":"T","properties":"not json"}"#,
            r#"{"csl":"T","properties":"[1]"}"#,
            r#"{"csl":"T","properties":{"Options":[]}}"#,
        ] {
            assert!(matches!(
                forwarded(body, true, Endpoint::QueryV1),
                Err(ProxyError::BadRequest(_))
            ));
        }
    }

    #[test]
    fn refusals_are_403_with_the_construct_and_position() {
        match forwarded(r#"{"csl":"database('other').T"}"#, true, Endpoint::QueryV2) {
            Err(ProxyError::Forbidden(message)) => assert_eq!(
                message,
                "database(\"other\") names a database outside this tenant at 1:1"
            ),
            other => panic!("{other:?}"),
        }
    }
}
