//! `[aad]`: Bearer-token callers. Absent, Bearer callers are refused with 401.

use std::time::Duration;

use serde::Deserialize;

use super::credential::{authority, check_login_url};
use super::{problem, ConfigError, Environment};

/// The public client the Kusto SDKs use unless told otherwise.
const KUSTO_CLIENT_APP_ID: &str = "db662dc1-0cfe-4e1c-a843-19a68e65be58";
/// The Microsoft first-party tenant the metadata endpoint names, as Kusto's does.
const FIRST_PARTY_TENANT: &str = "f8cdef31-a31e-4b4a-93e4-5f571e91255a";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AadSection {
    pub openid_config_url: Option<String>,
    #[serde(default)]
    pub openid_config_urls: Vec<String>,
    /// AAD tenants whose v2.0 discovery documents are used when no URL is given; when set, a
    /// token's `tid` must be one of them.
    #[serde(default)]
    pub tenants: Vec<String>,
    pub audiences: Vec<String>,
    /// Accepted `iss` values; default: the `issuer` of each discovery document.
    #[serde(default)]
    pub issuers: Vec<String>,
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
    #[serde(default = "default_jwks_refresh_seconds")]
    pub jwks_refresh_seconds: u64,
    /// At most one extra key fetch per this many seconds for tokens with an unknown `kid`.
    #[serde(default = "default_jwks_min_refetch_seconds")]
    pub jwks_min_refetch_seconds: u64,
    /// `LoginEndpoint` in `/v1/rest/auth/metadata`; default `AZURE_AUTHORITY_HOST` or public cloud.
    pub login_endpoint: Option<String>,
    /// `KustoClientAppId` in `/v1/rest/auth/metadata`: the public client SDKs sign in with.
    pub client_app_id: Option<String>,
}

fn default_leeway_seconds() -> u64 {
    60
}
fn default_jwks_refresh_seconds() -> u64 {
    3600
}
fn default_jwks_min_refetch_seconds() -> u64 {
    30
}

#[derive(Debug, Clone, PartialEq)]
pub struct AadSettings {
    pub discovery_urls: Vec<reqwest::Url>,
    pub tenants: Vec<String>,
    pub audiences: Vec<String>,
    pub issuers: Vec<String>,
    pub leeway: Duration,
    pub jwks_refresh: Duration,
    pub jwks_min_refetch: Duration,
    pub login_endpoint: String,
    pub client_app_id: String,
}

impl AadSettings {
    /// The `AzureAD` object of `/v1/rest/auth/metadata`. Its `KustoServiceResourceId` is
    /// kqlgate's own first audience, so tokens SDKs get for kqlgate are never Kusto tokens.
    pub fn metadata(&self) -> serde_json::Value {
        serde_json::json!({
            "AzureAD": {
                "LoginEndpoint": self.login_endpoint,
                "LoginMfaRequired": false,
                "KustoClientAppId": self.client_app_id,
                "KustoClientRedirectUri": "http://localhost",
                "KustoServiceResourceId": self.audiences[0],
                "FirstPartyAuthorityUrl": format!("{}/{FIRST_PARTY_TENANT}", self.login_endpoint),
            }
        })
    }
}

impl AadSection {
    pub fn validate(self, env: &dyn Environment) -> Result<AadSettings, ConfigError> {
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(problem(
                "aad.audiences",
                "at least one non-empty audience is required",
            ));
        }
        let login_endpoint = authority(self.login_endpoint.as_deref(), env)
            .map_err(|m| problem("aad.login_endpoint", m))?;
        let (path, urls): (&str, Vec<String>) =
            match (&self.openid_config_url, self.openid_config_urls.is_empty()) {
                (Some(_), false) => {
                    return Err(problem(
                        "aad.openid_config_urls",
                        "give openid_config_url or openid_config_urls, not both",
                    ))
                }
                (Some(url), true) => ("aad.openid_config_url", vec![url.clone()]),
                (None, false) => ("aad.openid_config_urls", self.openid_config_urls.clone()),
                (None, true) if !self.tenants.is_empty() => (
                    "aad.tenants",
                    self.tenants
                        .iter()
                        .map(|tid| {
                            format!("{login_endpoint}/{tid}/v2.0/.well-known/openid-configuration")
                        })
                        .collect(),
                ),
                (None, true) => {
                    return Err(problem(
                        "aad.openid_config_url",
                        "name the discovery document (openid_config_url) or the allowed tenants",
                    ))
                }
            };
        let discovery_urls = urls
            .iter()
            .map(|url| check_login_url(url))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| problem(path, m))?;
        if self.jwks_min_refetch_seconds == 0 {
            return Err(problem(
                "aad.jwks_min_refetch_seconds",
                "must be at least 1",
            ));
        }
        if self.jwks_refresh_seconds == 0 {
            return Err(problem("aad.jwks_refresh_seconds", "must be at least 1"));
        }
        Ok(AadSettings {
            discovery_urls,
            tenants: self.tenants,
            audiences: self.audiences,
            issuers: self.issuers,
            leeway: Duration::from_secs(self.leeway_seconds),
            jwks_refresh: Duration::from_secs(self.jwks_refresh_seconds),
            jwks_min_refetch: Duration::from_secs(self.jwks_min_refetch_seconds),
            login_endpoint,
            client_app_id: self
                .client_app_id
                .unwrap_or_else(|| KUSTO_CLIENT_APP_ID.to_owned()),
        })
    }
}

/// A tenant's AAD principal: which token claim maps a caller to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// `oid:` the caller's object id — the most specific.
    Object(String),
    /// `app:` the calling application (`appid` or `azp`).
    App(String),
    /// `tid:` every caller from an AAD tenant — the least specific.
    Tenant(String),
}

impl Principal {
    pub fn parse(text: &str) -> Result<Principal, String> {
        let (kind, value) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not app:<id>, oid:<id> or tid:<id>"))?;
        let value = value.trim().to_ascii_lowercase();
        if value.is_empty() {
            return Err(format!("{text:?} has no id after the colon"));
        }
        match kind {
            "oid" => Ok(Principal::Object(value)),
            "app" => Ok(Principal::App(value)),
            "tid" => Ok(Principal::Tenant(value)),
            _ => Err(format!("{text:?}: the kind must be app, oid or tid")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn validate(text: &str) -> Result<AadSettings, ConfigError> {
        toml::from_str::<AadSection>(text)
            .unwrap()
            .validate(&HashMap::new())
    }

    #[test]
    fn tenants_give_the_default_discovery_documents() {
        let settings =
            validate("audiences = [\"api://kqlgate\"]\ntenants = [\"t1\", \"t2\"]").unwrap();
        assert_eq!(
            settings.discovery_urls[1].as_str(),
            "https://login.microsoftonline.com/t2/v2.0/.well-known/openid-configuration"
        );
        let metadata = settings.metadata();
        assert_eq!(
            metadata["AzureAD"]["KustoServiceResourceId"],
            "api://kqlgate"
        );
        assert_eq!(
            metadata["AzureAD"]["LoginEndpoint"],
            "https://login.microsoftonline.com"
        );
    }

    #[test]
    fn discovery_must_be_https_or_loopback() {
        assert!(
            validate("audiences = [\"a\"]\nopenid_config_url = \"http://127.0.0.1:8/x\"").is_ok()
        );
        let error =
            validate("audiences = [\"a\"]\nopenid_config_url = \"http://idp.example.com/x\"")
                .unwrap_err();
        assert_eq!(error.path, "aad.openid_config_url");
        let error = validate(
            "audiences = [\"a\"]\nopenid_config_urls = [\"https://a\", \"http://10.0.0.1/x\"]",
        )
        .unwrap_err();
        assert_eq!(error.path, "aad.openid_config_urls");
    }

    #[test]
    fn audiences_and_a_document_are_required() {
        assert_eq!(
            validate("audiences = []\ntenants = [\"t\"]")
                .unwrap_err()
                .path,
            "aad.audiences"
        );
        assert_eq!(
            validate("audiences = [\"a\"]").unwrap_err().path,
            "aad.openid_config_url"
        );
    }

    #[test]
    fn principals_parse_by_kind() {
        assert_eq!(
            Principal::parse("oid:ABC").unwrap(),
            Principal::Object("abc".into())
        );
        assert_eq!(
            Principal::parse("app:x").unwrap(),
            Principal::App("x".into())
        );
        assert_eq!(
            Principal::parse("tid:t").unwrap(),
            Principal::Tenant("t".into())
        );
        for bad in ["x", "upn:a", "oid:", "app"] {
            assert!(Principal::parse(bad).is_err(), "{bad}");
        }
    }
}
