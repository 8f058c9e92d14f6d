//! Stage: read the query. Parses the Kusto request body `{"db", "csl", "properties"}` and writes
//! the body that is forwarded, re-serializing only `db`.
//!
//! - `csl` and `properties` are forwarded as the exact JSON text that arrived; `properties` may be
//!   an object or a string holding JSON (the Python and Java SDKs send a string) and keeps its form.
//! - Member names are matched case-insensitively and duplicates are refused, so no second `"DB"`
//!   or `"db"` can ride along to a cluster whose JSON reader picks a different one than we did.
//! - Other top-level members are not part of the protocol and are not forwarded.

use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ProxyError;

#[derive(Debug)]
pub struct QueryBody {
    /// The database the client named; `None` when absent, null or empty.
    pub db: Option<String>,
    /// The query or command text, decoded.
    pub csl: String,
    csl_json: Box<RawValue>,
    properties_json: Option<Box<RawValue>>,
}

impl QueryBody {
    pub fn parse(bytes: &[u8]) -> Result<QueryBody, ProxyError> {
        let members = parse_members(bytes)?;
        let mut db = None;
        let mut csl = None;
        let mut properties = None;
        for (name, value) in members {
            let slot = match name.to_ascii_lowercase().as_str() {
                "db" => &mut db,
                "csl" => &mut csl,
                "properties" => &mut properties,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(bad(format!("the body names {name:?} more than once")));
            }
        }
        let db = match db {
            None => None,
            Some(raw) => match serde_json::from_str::<Option<String>>(raw.get()) {
                Ok(name) => name.filter(|n| !n.is_empty()),
                Err(_) => return Err(bad("\"db\" must be a string".into())),
            },
        };
        let csl_json = csl.ok_or_else(|| bad("the body has no \"csl\" (the query text)".into()))?;
        let csl = match serde_json::from_str::<String>(csl_json.get()) {
            Ok(text) if !text.trim().is_empty() => text,
            Ok(_) => return Err(bad("\"csl\" (the query text) is empty".into())),
            Err(_) => return Err(bad("\"csl\" (the query text) must be a string".into())),
        };
        let properties_json = match properties {
            Some(raw) if raw.get() == "null" => None,
            Some(raw) if raw.get().starts_with(['{', '"']) => Some(raw),
            Some(_) => {
                return Err(bad(
                    "\"properties\" must be an object or a string holding JSON".into(),
                ))
            }
            None => None,
        };
        Ok(QueryBody {
            db,
            csl,
            csl_json,
            properties_json,
        })
    }

    /// `properties` exactly as it arrived (an object, or a string holding JSON).
    pub fn properties_json(&self) -> Option<&RawValue> {
        self.properties_json.as_deref()
    }

    /// The body to forward: `db` set to `database`, and `csl` and `properties` as they came
    /// unless the [`Rewrite`] replaces them.
    pub fn forwarded(&self, database: &str, rewrite: &Rewrite) -> Bytes {
        let db = serde_json::to_string(database).expect("a string always serializes");
        let csl = match &rewrite.csl {
            Some(text) => serde_json::to_string(text).expect("a string always serializes"),
            None => self.csl_json.get().to_owned(),
        };
        let properties = rewrite
            .properties_json
            .as_deref()
            .or(self.properties_json.as_deref().map(RawValue::get));
        let mut out =
            Vec::with_capacity(32 + db.len() + csl.len() + properties.map_or(0, str::len));
        out.extend_from_slice(b"{\"db\":");
        out.extend_from_slice(db.as_bytes());
        out.extend_from_slice(b",\"csl\":");
        out.extend_from_slice(csl.as_bytes());
        if let Some(properties) = properties {
            out.extend_from_slice(b",\"properties\":");
            out.extend_from_slice(properties.as_bytes());
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

/// What the guard changed: replacement query text and properties (serialized JSON), and
/// whether the request can only read.
#[derive(Debug, Default)]
pub struct Rewrite<'a> {
    pub csl: Option<String>,
    pub properties_json: Option<std::borrow::Cow<'a, str>>,
    pub read_only: bool,
}

fn bad(message: String) -> ProxyError {
    ProxyError::BadRequest(message)
}

/// The members of a JSON object in arrival order, values kept as raw JSON text.
fn parse_members(bytes: &[u8]) -> Result<Vec<(String, Box<RawValue>)>, ProxyError> {
    struct Members;

    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(String, Box<RawValue>)>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                members.push(member);
            }
            Ok(members)
        }
    }

    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let members = deserializer
        .deserialize_map(Members)
        .and_then(|members| deserializer.end().map(|()| members))
        .map_err(|e| {
            bad(format!(
                "the body is not a JSON object {{\"db\": …, \"csl\": …}}: {e}"
            ))
        })?;
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<QueryBody, ProxyError> {
        QueryBody::parse(body.as_bytes())
    }

    fn refused(body: &str) -> String {
        match parse(body) {
            Err(ProxyError::BadRequest(message)) => message,
            other => panic!("expected 400 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn db_is_rewritten_and_everything_else_kept_byte_for_byte() {
        let body = parse(r#"{"db":"Samples","csl":"T | where x == \"\u00e9\"","properties":{"Options":{"servertimeout":"00:04:00"}}}"#).unwrap();
        assert_eq!(body.db.as_deref(), Some("Samples"));
        assert_eq!(body.csl, "T | where x == \"é\"");
        assert_eq!(
            body.forwarded("1111", &Rewrite::default()),
            r#"{"db":"1111","csl":"T | where x == \"\u00e9\"","properties":{"Options":{"servertimeout":"00:04:00"}}}"#
        );
    }

    #[test]
    fn properties_as_a_string_keep_their_form() {
        let body = parse(r#"{"db":"x","csl":"print 1","properties":"{\"Options\":{}}"}"#).unwrap();
        assert_eq!(
            body.forwarded("g", &Rewrite::default()),
            r#"{"db":"g","csl":"print 1","properties":"{\"Options\":{}}"}"#
        );
    }

    #[test]
    fn rewritten_csl_and_properties_replace_the_originals() {
        let body =
            parse(r#"{"db":"x","csl":"database('Samples').T","properties":{"a":1}}"#).unwrap();
        let rewrite = Rewrite {
            csl: Some("database(\"g\").T".into()),
            properties_json: Some(r#"{"b":2}"#.into()),
            read_only: true,
        };
        assert_eq!(
            body.forwarded("g", &rewrite),
            r#"{"db":"g","csl":"database(\"g\").T","properties":{"b":2}}"#
        );
    }

    #[test]
    fn missing_null_or_empty_db_means_the_default() {
        for body in [
            r#"{"csl":"print 1"}"#,
            r#"{"db":null,"csl":"print 1"}"#,
            r#"{"db":"","csl":"print 1"}"#,
        ] {
            assert_eq!(parse(body).unwrap().db, None, "{body}");
        }
    }

    #[test]
    fn csl_must_be_a_non_empty_string() {
        assert!(refused(r#"{"db":"x"}"#).contains("csl"));
        assert!(refused(r#"{"csl":""}"#).contains("csl"));
        assert!(refused(r#"{"csl":"   "}"#).contains("csl"));
        assert!(refused(r#"{"csl":42}"#).contains("csl"));
        assert!(refused(r#"{"csl":null}"#).contains("csl"));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            "",
            "[]",
            "\"csl\"",
            "{\"csl\":\"x\"",
            "{\"csl\":\"x\"} trailing",
            "\u{0}",
        ] {
            refused(body);
        }
        refused(r#"{"db":5,"csl":"x"}"#);
        refused(r#"{"csl":"x","properties":[1]}"#);
    }

    #[test]
    fn duplicate_members_in_any_case_are_refused() {
        assert!(refused(r#"{"db":"a","csl":"x","DB":"b"}"#).contains("more than once"));
        refused(r#"{"csl":"x","Csl":"y"}"#);
        refused(r#"{"csl":"x","properties":{},"Properties":{}}"#);
    }

    #[test]
    fn unknown_members_are_not_forwarded_and_case_is_normalised() {
        let body = parse(r#"{"DB":"a","CSL":"print 1","extra":{"db":"b"}}"#).unwrap();
        assert_eq!(body.db.as_deref(), Some("a"));
        assert_eq!(
            body.forwarded("g", &Rewrite::default()),
            r#"{"db":"g","csl":"print 1"}"#
        );
    }
}
