//! How kqlgate proves itself to a cluster: the credential keys shared by `[clusters.NAME]` and
//! `[tenants.upstream]`, validated into an [`UpstreamCredential`]. Secrets come only from the
//! environment or a file, never from the TOML.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::{problem, ConfigError, Environment};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    #[default]
    None,
    BearerEnv,
    ClientSecret,
    WorkloadIdentity,
    ManagedIdentity,
}

/// The credential keys as written. `[clusters.NAME]` carries them flat beside its other keys,
/// `[tenants.upstream]` alone.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSection {
    #[serde(default)]
    pub auth: CredentialKind,
    pub token_env: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub authority_host: Option<String>,
    pub scope: Option<String>,
    pub federated_token_file: Option<PathBuf>,
    pub imds_endpoint: Option<String>,
}

/// What the proxy presents to the cluster. Never the caller's credential.
#[derive(PartialEq)]
pub enum UpstreamCredential {
    None,
    Bearer(Secret),
    Aad(AadIdentity),
}

/// An AAD identity of the proxy's: who asks for tokens, where, and for what scope.
#[derive(Debug, Clone, PartialEq)]
pub struct AadIdentity {
    pub flow: AadFlow,
    /// `https://login.microsoftonline.com`, without a trailing slash.
    pub authority: String,
    pub tenant_id: String,
    pub client_id: Option<String>,
    /// `<resource>/.default`.
    pub scope: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AadFlow {
    /// Client-credentials grant with a client secret.
    ClientSecret(SecretSource),
    /// Client-credentials grant with a federated token as `client_assertion`, re-read each time.
    WorkloadIdentity { token_file: PathBuf },
    /// The instance metadata endpoint.
    ManagedIdentity { endpoint: reqwest::Url },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SecretSource {
    /// Read from the environment at load.
    Value(Secret),
    /// Re-read at every token request, so a rotated secret is picked up.
    File(PathBuf),
}

/// A secret string that never prints itself.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl fmt::Debug for UpstreamCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamCredential::None => f.write_str("None"),
            UpstreamCredential::Bearer(_) => f.write_str("Bearer(MASKED)"),
            UpstreamCredential::Aad(identity) => write!(f, "Aad({identity:?})"),
        }
    }
}

impl UpstreamCredential {
    pub fn kind_name(&self) -> &'static str {
        match self {
            UpstreamCredential::None => "none",
            UpstreamCredential::Bearer(_) => "bearer-env",
            UpstreamCredential::Aad(identity) => match identity.flow {
                AadFlow::ClientSecret(_) => "client-secret",
                AadFlow::WorkloadIdentity { .. } => "workload-identity",
                AadFlow::ManagedIdentity { .. } => "managed-identity",
            },
        }
    }
}

impl AadIdentity {
    /// Identities with the same key share one token cache.
    pub fn cache_key(&self) -> String {
        let flow = match &self.flow {
            AadFlow::ClientSecret(_) => "client-secret".to_string(),
            AadFlow::WorkloadIdentity { token_file } => {
                format!("workload:{}", token_file.display())
            }
            AadFlow::ManagedIdentity { endpoint } => format!("managed:{endpoint}"),
        };
        format!(
            "{flow}|{}|{}|{}|{}",
            self.authority,
            self.tenant_id,
            self.client_id.as_deref().unwrap_or("-"),
            self.scope
        )
    }
}

const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const DEFAULT_IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// `https://…`, or `http://…` to a loopback address (a local test IdP), and nothing else.
pub fn check_login_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback(&parsed) => Ok(parsed),
        "http" => Err(format!(
            "{url:?}: plain http is accepted only for loopback addresses; use https"
        )),
        other => Err(format!("{url:?}: scheme {other} is not http(s)")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The AAD authority: the configured one, else `AZURE_AUTHORITY_HOST` (a URL or a bare host),
/// else the public cloud.
pub fn authority(configured: Option<&str>, env: &dyn Environment) -> Result<String, String> {
    let raw = configured
        .map(str::to_owned)
        .or_else(|| env.var("AZURE_AUTHORITY_HOST"))
        .unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned());
    let with_scheme = if raw.contains("://") {
        raw
    } else {
        format!("https://{raw}")
    };
    let url = check_login_url(&with_scheme)?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

impl CredentialSection {
    pub fn validate(
        self,
        path: &str,
        cluster_url: &reqwest::Url,
        env: &dyn Environment,
    ) -> Result<UpstreamCredential, ConfigError> {
        let key = |name: &str| format!("{path}.{name}");
        self.refuse_foreign_keys(path)?;
        let required = |value: Option<String>, name: &str, env_name: Option<&str>| {
            value
                .or_else(|| env_name.and_then(|n| env.var(n)))
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    let from_env = env_name.map_or(String::new(), |n| format!(" (or {n})"));
                    problem(
                        key(name),
                        format!("required with auth = \"{}\"{from_env}", self.auth_name()),
                    )
                })
        };
        let kind = self.auth;
        if matches!(kind, CredentialKind::None) {
            return Ok(UpstreamCredential::None);
        }
        if matches!(kind, CredentialKind::BearerEnv) {
            let var = required(self.token_env.clone(), "token_env", None)?;
            let token = env
                .var(&var)
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    problem(
                        key("token_env"),
                        format!("environment variable {var} is not set"),
                    )
                })?;
            if http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                return Err(problem(
                    key("token_env"),
                    format!("environment variable {var} does not hold a usable token"),
                ));
            }
            return Ok(UpstreamCredential::Bearer(Secret(token)));
        }
        let authority = authority(self.authority_host.as_deref(), env)
            .map_err(|m| problem(key("authority_host"), m))?;
        let scope = match &self.scope {
            Some(scope) => scope.clone(),
            // The cluster's origin: scheme, host and (unusual for Kusto) port, no path.
            None => format!("{}/.default", cluster_url.origin().ascii_serialization()),
        };
        let flow = match kind {
            CredentialKind::ClientSecret => AadFlow::ClientSecret(self.secret_source(path, env)?),
            CredentialKind::WorkloadIdentity => AadFlow::WorkloadIdentity {
                token_file: required(
                    self.federated_token_file
                        .as_ref()
                        .map(|p| p.display().to_string()),
                    "federated_token_file",
                    Some("AZURE_FEDERATED_TOKEN_FILE"),
                )?
                .into(),
            },
            CredentialKind::ManagedIdentity => {
                let endpoint = self.imds_endpoint.as_deref().unwrap_or(DEFAULT_IMDS);
                let endpoint = reqwest::Url::parse(endpoint)
                    .map_err(|e| problem(key("imds_endpoint"), format!("{endpoint:?}: {e}")))?;
                AadFlow::ManagedIdentity { endpoint }
            }
            CredentialKind::None | CredentialKind::BearerEnv => unreachable!("handled above"),
        };
        let (tenant_id, client_id) = match kind {
            // A user-assigned managed identity is picked by client id; the tenant is implied.
            CredentialKind::ManagedIdentity => (String::new(), self.client_id.clone()),
            _ => (
                required(self.tenant_id.clone(), "tenant_id", Some("AZURE_TENANT_ID"))?,
                Some(required(
                    self.client_id.clone(),
                    "client_id",
                    Some("AZURE_CLIENT_ID"),
                )?),
            ),
        };
        Ok(UpstreamCredential::Aad(AadIdentity {
            flow,
            authority,
            tenant_id,
            client_id,
            scope,
        }))
    }

    fn auth_name(&self) -> &'static str {
        match self.auth {
            CredentialKind::None => "none",
            CredentialKind::BearerEnv => "bearer-env",
            CredentialKind::ClientSecret => "client-secret",
            CredentialKind::WorkloadIdentity => "workload-identity",
            CredentialKind::ManagedIdentity => "managed-identity",
        }
    }

    /// Keys that belong to another kind are mistakes worth pointing out.
    fn refuse_foreign_keys(&self, path: &str) -> Result<(), ConfigError> {
        use CredentialKind::*;
        let present: [(&str, bool, &[CredentialKind]); 9] = [
            ("token_env", self.token_env.is_some(), &[BearerEnv]),
            (
                "tenant_id",
                self.tenant_id.is_some(),
                &[ClientSecret, WorkloadIdentity],
            ),
            (
                "client_id",
                self.client_id.is_some(),
                &[ClientSecret, WorkloadIdentity, ManagedIdentity],
            ),
            (
                "client_secret_env",
                self.client_secret_env.is_some(),
                &[ClientSecret],
            ),
            (
                "client_secret_file",
                self.client_secret_file.is_some(),
                &[ClientSecret],
            ),
            (
                "authority_host",
                self.authority_host.is_some(),
                &[ClientSecret, WorkloadIdentity],
            ),
            (
                "scope",
                self.scope.is_some(),
                &[ClientSecret, WorkloadIdentity, ManagedIdentity],
            ),
            (
                "federated_token_file",
                self.federated_token_file.is_some(),
                &[WorkloadIdentity],
            ),
            (
                "imds_endpoint",
                self.imds_endpoint.is_some(),
                &[ManagedIdentity],
            ),
        ];
        for (name, given, kinds) in present {
            if given && !kinds.contains(&self.auth) {
                return Err(problem(
                    format!("{path}.{name}"),
                    format!("is not used with auth = \"{}\"", self.auth_name()),
                ));
            }
        }
        Ok(())
    }

    fn secret_source(
        &self,
        path: &str,
        env: &dyn Environment,
    ) -> Result<SecretSource, ConfigError> {
        match (&self.client_secret_env, &self.client_secret_file) {
            (Some(var), None) => env
                .var(var)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .map(|s| SecretSource::Value(Secret(s)))
                .ok_or_else(|| {
                    problem(
                        format!("{path}.client_secret_env"),
                        format!("environment variable {var} is not set"),
                    )
                }),
            (None, Some(file)) => match std::fs::read_to_string(file) {
                Ok(secret) if !secret.trim().is_empty() => Ok(SecretSource::File(file.clone())),
                Ok(_) => Err(problem(
                    format!("{path}.client_secret_file"),
                    "the file is empty",
                )),
                Err(e) => Err(problem(
                    format!("{path}.client_secret_file"),
                    format!("cannot read {}: {e}", file.display()),
                )),
            },
            _ => Err(problem(
                format!("{path}.client_secret_env"),
                "give exactly one of client_secret_env and client_secret_file",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cluster() -> reqwest::Url {
        reqwest::Url::parse("https://mycluster.westeurope.kusto.windows.net").unwrap()
    }

    fn section(text: &str) -> CredentialSection {
        toml::from_str(text).unwrap()
    }

    fn validate(text: &str, env: &[(&str, &str)]) -> Result<UpstreamCredential, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        section(text).validate("clusters.main", &cluster(), &env)
    }

    #[test]
    fn client_secret_from_the_environment_with_defaults() {
        let text = "auth = \"client-secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"S\"";
        let Ok(UpstreamCredential::Aad(identity)) = validate(text, &[("S", "shh")]) else {
            panic!("expected an AAD identity")
        };
        assert_eq!(identity.authority, "https://login.microsoftonline.com");
        assert_eq!(
            identity.scope,
            "https://mycluster.westeurope.kusto.windows.net/.default"
        );
        assert!(matches!(
            identity.flow,
            AadFlow::ClientSecret(SecretSource::Value(_))
        ));
        assert!(!format!("{identity:?}").contains("shh"), "secret in Debug");
        let missing = validate(text, &[]).unwrap_err();
        assert_eq!(missing.path, "clusters.main.client_secret_env");
    }

    #[test]
    fn authority_host_comes_from_the_environment_and_must_be_https_or_loopback() {
        let text = "auth = \"client-secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"S\"";
        let Ok(UpstreamCredential::Aad(identity)) = validate(
            text,
            &[
                ("S", "x"),
                ("AZURE_AUTHORITY_HOST", "login.microsoftonline.us"),
            ],
        ) else {
            panic!()
        };
        assert_eq!(identity.authority, "https://login.microsoftonline.us");
        let local = format!("{text}\nauthority_host = \"http://127.0.0.1:9999/\"");
        assert!(validate(&local, &[("S", "x")]).is_ok());
        let remote = format!("{text}\nauthority_host = \"http://login.example.com\"");
        assert_eq!(
            validate(&remote, &[("S", "x")]).unwrap_err().path,
            "clusters.main.authority_host"
        );
    }

    #[test]
    fn workload_identity_reads_the_azure_variables() {
        let env = [
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ];
        let Ok(UpstreamCredential::Aad(identity)) = validate("auth = \"workload-identity\"", &env)
        else {
            panic!()
        };
        assert_eq!(identity.tenant_id, "t");
        assert_eq!(identity.client_id.as_deref(), Some("c"));
        let missing = validate("auth = \"workload-identity\"", &[]).unwrap_err();
        assert_eq!(missing.path, "clusters.main.federated_token_file");
        let no_tenant = validate(
            "auth = \"workload-identity\"\nfederated_token_file = \"/t\"",
            &[],
        )
        .unwrap_err();
        assert_eq!(no_tenant.path, "clusters.main.tenant_id");
    }

    #[test]
    fn managed_identity_needs_nothing_and_takes_an_endpoint_override() {
        let Ok(UpstreamCredential::Aad(identity)) = validate("auth = \"managed-identity\"", &[])
        else {
            panic!()
        };
        assert!(matches!(identity.flow, AadFlow::ManagedIdentity { .. }));
        let text = "auth = \"managed-identity\"\nclient_id = \"u\"\nimds_endpoint = \"http://127.0.0.1:1/token\"";
        assert!(validate(text, &[]).is_ok());
    }

    #[test]
    fn keys_of_another_kind_are_refused() {
        let error = validate("auth = \"none\"\nclient_id = \"c\"", &[]).unwrap_err();
        assert_eq!(error.path, "clusters.main.client_id");
        let error = validate("auth = \"managed-identity\"\ntoken_env = \"X\"", &[]).unwrap_err();
        assert_eq!(error.path, "clusters.main.token_env");
    }
}
