//! `kqlgate tenant …`: the tenant lifecycle, editing the config file in place — comments and
//! layout kept (`toml_edit`) — and never writing a file `kqlgate check` would refuse. The running
//! process picks the change up by itself (`watch_config`), or on the SIGHUP sent to the process
//! named in `[server] pid_file`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kqlgate::config::credential::UpstreamCredential;
use kqlgate::config::tenant::{is_valid_tenant_id, key_fingerprint};
use kqlgate::config::{Config, Environment};
use kqlgate::kql::Role;
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

/// What a tenant command changes.
pub enum Change {
    Add {
        id: String,
        database: String,
        cluster: Option<String>,
        aliases: Vec<String>,
        admin: bool,
    },
    RotateKey {
        id: String,
    },
    RevokeKey {
        id: String,
        which: Revoke,
    },
    Remove {
        id: String,
    },
}

pub enum Revoke {
    /// Every key but the newest (the last in `key_hashes`).
    OlderThanNewest,
    /// The one key whose hash starts with this prefix.
    HashPrefix(String),
}

/// Validation at the operator's desk: cluster secrets live in the server's environment, not
/// the operator's, so a variable that is not set here counts as set.
struct DeskEnvironment;

impl Environment for DeskEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| Some("set-in-the-server-environment".into()))
    }
}

/// Applies `change` to the config at `path`; returns what to print.
pub fn apply(path: &Path, change: Change) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut document: DocumentMut = text
        .parse()
        .map_err(|e| format!("{} is not valid TOML: {e}", path.display()))?;
    let mut out = String::new();
    let new_tenant = match &change {
        Change::Add { id, .. } => Some(id.clone()),
        _ => None,
    };
    match change {
        Change::Add {
            id,
            database,
            cluster,
            aliases,
            admin,
        } => add(
            &mut document,
            &id,
            &database,
            cluster,
            &aliases,
            admin,
            &mut out,
        )?,
        Change::RotateKey { id } => {
            let key = kqlgate::keys::new_key();
            let hash = hash(&key)?;
            key_hashes(tenant_mut(&mut document, &id)?)?.push(hash.as_str());
            let _ = writeln!(out, "{key}");
            let _ = writeln!(
                out,
                "new key for {id} (shown once; kqlgate keeps only its hash), fingerprint {}",
                key_fingerprint(&hash)
            );
        }
        Change::RevokeKey { id, which } => revoke(&mut document, &id, which, &mut out)?,
        Change::Remove { id } => {
            let tenants = tenants_mut(&mut document)?;
            let index = position(tenants, &id)?;
            tenants.remove(index);
            let _ = writeln!(out, "tenant {id} removed");
        }
    }
    let new_text = document.to_string();
    let config = Config::parse(&new_text, &DeskEnvironment)
        .map_err(|e| format!("not written: the result would be an invalid config: {e}"))?;
    write_in_place(path, &new_text)?;
    if let Some(grant) = new_tenant.and_then(|id| grant_hint(&config, &id)) {
        out.push_str(&grant);
    }
    let _ = writeln!(
        out,
        "{} updated; {}",
        path.display(),
        signal_running(&config)
    );
    Ok(out)
}

/// `kqlgate tenant list`: every tenant, its database, limits and key count — never a hash.
pub fn list(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config = Config::parse(&text, &DeskEnvironment).map_err(|e| e.to_string())?;
    Ok(config
        .tenants
        .iter()
        .map(|t| format!("{}\n", crate::summary::tenant_line(t)))
        .collect())
}

fn add(
    document: &mut DocumentMut,
    id: &str,
    database: &str,
    cluster: Option<String>,
    aliases: &[String],
    admin: bool,
    out: &mut String,
) -> Result<(), String> {
    if !is_valid_tenant_id(id) {
        return Err(format!(
            "{id:?} is not a valid tenant id (1-128 of A-Z a-z 0-9 - _ .)"
        ));
    }
    let cluster = match cluster {
        Some(cluster) => cluster,
        None => only_cluster(document)?,
    };
    let tenants = tenants_mut(document)?;
    if position(tenants, id).is_ok() {
        return Err(format!("tenant {id} already exists"));
    }
    let key = kqlgate::keys::new_key();
    let hash = hash(&key)?;
    let mut table = Table::new();
    table["id"] = value(id);
    table["key_hashes"] = value(Array::from_iter([hash.as_str()]));
    table["cluster"] = value(cluster.as_str());
    table["database"] = value(database);
    if !aliases.is_empty() {
        table["aliases"] = value(Array::from_iter(aliases.iter().map(String::as_str)));
    }
    if admin {
        table["role"] = value("admin");
    }
    tenants.push(table);
    let _ = writeln!(out, "{key}");
    let _ = writeln!(
        out,
        "new tenant {id}: give it the key above (shown once; kqlgate keeps only its hash), fingerprint {}",
        key_fingerprint(&hash)
    );
    Ok(())
}

fn revoke(
    document: &mut DocumentMut,
    id: &str,
    which: Revoke,
    out: &mut String,
) -> Result<(), String> {
    let keys = key_hashes(tenant_mut(document, id)?)?;
    let hashes: Vec<String> = keys
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let remove: Vec<usize> = match which {
        Revoke::OlderThanNewest => (0..hashes.len().saturating_sub(1)).collect(),
        Revoke::HashPrefix(prefix) => {
            let matching: Vec<usize> = (0..hashes.len())
                .filter(|&i| {
                    let hash = hashes[i].rsplit('$').next().unwrap_or("");
                    !prefix.is_empty() && hash.starts_with(prefix.as_str())
                })
                .collect();
            if matching.len() != 1 {
                return Err(format!(
                    "--hash-prefix {prefix} matches {} of {id}'s keys; give a prefix that matches one",
                    matching.len()
                ));
            }
            matching
        }
    };
    if remove.is_empty() {
        return Err(format!("{id} has no key older than its newest"));
    }
    for &index in remove.iter().rev() {
        keys.remove(index);
        let _ = writeln!(
            out,
            "revoked {id}'s key {}",
            key_fingerprint(&hashes[index])
        );
    }
    Ok(())
}

fn hash(key: &str) -> Result<String, String> {
    kqlgate::keys::hash_key(key).map_err(|e| format!("cannot hash the key: {e}"))
}

fn tenants_mut(document: &mut DocumentMut) -> Result<&mut ArrayOfTables, String> {
    document
        .entry("tenants")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| "tenants is not an array of [[tenants]] tables".to_owned())
}

fn position(tenants: &ArrayOfTables, id: &str) -> Result<usize, String> {
    tenants
        .iter()
        .position(|t| t.get("id").and_then(Item::as_str) == Some(id))
        .ok_or_else(|| format!("no tenant {id}"))
}

fn tenant_mut<'d>(document: &'d mut DocumentMut, id: &str) -> Result<&'d mut Table, String> {
    let tenants = tenants_mut(document)?;
    let index = position(tenants, id)?;
    tenants
        .get_mut(index)
        .ok_or_else(|| format!("no tenant {id}"))
}

fn key_hashes(tenant: &mut Table) -> Result<&mut Array, String> {
    tenant
        .entry("key_hashes")
        .or_insert(value(Array::new()))
        .as_array_mut()
        .ok_or_else(|| "key_hashes is not an array".to_owned())
}

fn only_cluster(document: &DocumentMut) -> Result<String, String> {
    let names: Vec<&str> = document
        .get("clusters")
        .and_then(Item::as_table_like)
        .map(|t| t.iter().map(|(name, _)| name).collect())
        .unwrap_or_default();
    match names.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err("the config has no [clusters.NAME]".into()),
        _ => Err(format!(
            "several clusters ({}): name one with --cluster",
            names.join(", ")
        )),
    }
}

/// The Kusto command that gives the cluster identity the role a new tenant needs on its
/// database.
fn grant_hint(config: &Config, id: &str) -> Option<String> {
    let tenant = config.tenants.iter().find(|t| t.id == id)?;
    let cluster = config.cluster(&tenant.cluster)?;
    let identity = match tenant.upstream.as_ref().unwrap_or(&cluster.credential) {
        UpstreamCredential::Aad(identity) => Some(identity),
        _ => None,
    };
    let principal = match identity {
        Some(identity) => format!(
            "aadapp={};{}",
            identity.client_id.as_deref().unwrap_or("<client id>"),
            if identity.tenant_id.is_empty() {
                "<aad tenant>"
            } else {
                &identity.tenant_id
            }
        ),
        None => "aadapp=<kqlgate's client id>;<its aad tenant>".into(),
    };
    let role = match tenant.role {
        Role::Admin => "admins",
        Role::Viewer => "viewers",
    };
    Some(format!(
        "grant kqlgate's cluster identity access (run on cluster {}):\n  .add database ['{}'] {role} ('{principal}')\n",
        cluster.name, tenant.database
    ))
}

/// Replaces the file's content in one step (a rename in its directory), following a symlink
/// to the file it names, keeping its permissions.
fn write_in_place(path: &Path, text: &str) -> Result<(), String> {
    let target: PathBuf = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let directory = target.parent().unwrap_or(Path::new("."));
    let temporary = directory.join(format!(
        ".{}.kqlgate-tmp",
        target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config")
    ));
    let failed = |e: std::io::Error| format!("cannot write {}: {e}", target.display());
    std::fs::write(&temporary, text).map_err(failed)?;
    if let Ok(metadata) = std::fs::metadata(&target) {
        let _ = std::fs::set_permissions(&temporary, metadata.permissions());
    }
    std::fs::rename(&temporary, &target).map_err(failed)
}

/// Tells the running process, if the config names its pid file, and says how it reloads.
fn signal_running(config: &Config) -> String {
    match &config.server.pid_file {
        Some(pid_file) => match super::send_hangup(pid_file) {
            Ok(pid) => format!("sent SIGHUP to kqlgate (pid {pid}) to reload it"),
            Err(why) => format!("{why}; a running kqlgate with watch_config reloads it by itself"),
        },
        None if config.server.watch_config => {
            "a running kqlgate reloads it by itself (watch_config)".into()
        }
        None => "reload the running kqlgate: kill -HUP <pid>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"# The gateway's config.
[server]
listen = "127.0.0.1:0" # local only

[clusters.main]
url = "http://127.0.0.1:1"

# The first customer.
[[tenants]]
id = "contoso"
key_hashes = ["$argon2id$v=19$m=7168,t=5,p=1$c29tZXNhbHRzb21lc2FsdA$Kq2AXUZo1kV0ZxV6pB0tRyZ8cJeV7oQOGZ4KxZr6m8o"]
cluster = "main"
database = "11111111-1111-1111-1111-111111111111"
"#;

    fn file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kqlgate.toml");
        std::fs::write(&path, CONFIG).unwrap();
        (dir, path)
    }

    #[test]
    fn add_rotate_revoke_remove_keep_comments_and_stay_valid() {
        let (_dir, path) = file();
        let added = apply(
            &path,
            Change::Add {
                id: "fabrikam".into(),
                database: "22222222-2222-2222-2222-222222222222".into(),
                cluster: None,
                aliases: vec!["Fab".into()],
                admin: false,
            },
        )
        .unwrap();
        let key = added.lines().next().unwrap();
        assert_eq!(key.len(), 43, "{added}");
        assert!(added.contains(".add database ['22222222-2222-2222-2222-222222222222'] viewers"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# The first customer.") && text.contains("# local only"));
        assert!(!text.contains(key), "the key itself is never written");
        let config = Config::parse(&text, &DeskEnvironment).unwrap();
        assert_eq!(config.tenants.len(), 2);

        apply(
            &path,
            Change::RotateKey {
                id: "fabrikam".into(),
            },
        )
        .unwrap();
        let config =
            Config::parse(&std::fs::read_to_string(&path).unwrap(), &DeskEnvironment).unwrap();
        assert_eq!(config.tenants[1].key_hashes.len(), 2);
        let newest = config.tenants[1].key_hashes[1].as_str().to_owned();
        apply(
            &path,
            Change::RevokeKey {
                id: "fabrikam".into(),
                which: Revoke::OlderThanNewest,
            },
        )
        .unwrap();
        let config =
            Config::parse(&std::fs::read_to_string(&path).unwrap(), &DeskEnvironment).unwrap();
        assert_eq!(config.tenants[1].key_hashes.len(), 1);
        assert_eq!(config.tenants[1].key_hashes[0].as_str(), newest);

        apply(
            &path,
            Change::Remove {
                id: "fabrikam".into(),
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text, CONFIG,
            "removing the added tenant gives the file back as it was"
        );
    }

    #[test]
    fn changes_that_would_break_the_config_are_not_written() {
        let (_dir, path) = file();
        let refused = apply(
            &path,
            Change::RevokeKey {
                id: "contoso".into(),
                which: Revoke::HashPrefix("Kq2A".into()),
            },
        )
        .unwrap_err();
        assert!(refused.contains("invalid config"), "{refused}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), CONFIG);
        for change in [
            Change::Remove {
                id: "nobody".into(),
            },
            Change::RotateKey {
                id: "nobody".into(),
            },
            Change::Add {
                id: "contoso".into(),
                database: "33333333-3333-3333-3333-333333333333".into(),
                cluster: None,
                aliases: vec![],
                admin: false,
            },
            Change::Add {
                id: "bad id".into(),
                database: "33333333-3333-3333-3333-333333333333".into(),
                cluster: None,
                aliases: vec![],
                admin: false,
            },
            Change::RevokeKey {
                id: "contoso".into(),
                which: Revoke::HashPrefix("zzz".into()),
            },
        ] {
            assert!(apply(&path, change).is_err());
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), CONFIG);
    }
}
