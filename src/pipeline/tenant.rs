//! Stage: resolve the tenant's database. The body's `db` may name the tenant's database by its
//! GUID or by one of its aliases (case-insensitively), or leave it out; anything else is another
//! tenant's data, or nobody's, and is refused with 403 before anything is forwarded.

use crate::config::Tenant;
use crate::error::ProxyError;

/// The database name to forward for a request that asked for `requested`.
pub fn resolve_database<'t>(
    tenant: &'t Tenant,
    requested: Option<&str>,
) -> Result<&'t str, ProxyError> {
    let Some(requested) = requested else {
        return Ok(&tenant.database);
    };
    let wanted = requested.to_lowercase();
    if tenant.database_names.contains(&wanted) {
        Ok(&tenant.database)
    } else {
        Err(ProxyError::Forbidden(format!(
            "database {requested:?} is not accessible to tenant {:?}",
            tenant.id
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        Tenant::example()
    }

    #[test]
    fn own_names_resolve_to_the_guid() {
        let t = tenant();
        for name in [
            None,
            Some("Samples"),
            Some("SAMPLES"),
            Some("11111111-1111-1111-1111-111111111111"),
        ] {
            assert_eq!(resolve_database(&t, name).unwrap(), t.database, "{name:?}");
        }
    }

    #[test]
    fn other_names_are_forbidden() {
        let t = tenant();
        for name in [
            "22222222-2222-2222-2222-222222222222",
            "Samples2",
            "samples ",
            "*",
            "NetDefaultDB",
        ] {
            match resolve_database(&t, Some(name)) {
                Err(ProxyError::Forbidden(message)) => {
                    assert!(message.contains("is not accessible to tenant"), "{message}")
                }
                other => panic!("{name}: expected 403, got {other:?}"),
            }
        }
    }
}
