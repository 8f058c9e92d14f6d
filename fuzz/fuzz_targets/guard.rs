//! Fuzz target: the KQL lexer and both policies must never panic or hang on any text, and a
//! text the guard accepted and rewrote must be accepted again, unchanged, once rewritten.
#![no_main]

// The guard depends on nothing but std: compiled here from its source, so the fuzz build is
// the guard and libFuzzer only, not the whole proxy.
#[allow(dead_code)]
#[path = "../../src/kql/mod.rs"]
mod kql;

use kql::{guard, Options, Role, Scope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let names = [
        "11111111-1111-1111-1111-111111111111".to_string(),
        "samples".to_string(),
    ];
    let scope = Scope {
        database: "11111111-1111-1111-1111-111111111111",
        database_names: &names,
    };
    for role in [Role::Viewer, Role::Admin] {
        let _ = guard(
            text,
            &scope,
            role,
            Options {
                restrict_statement: true,
            },
        );
        if let Ok(verdict) = guard(text, &scope, role, Options::default()) {
            if let Some(rewritten) = verdict.rewritten {
                let again = guard(&rewritten, &scope, role, Options::default())
                    .expect("a rewritten text must pass the guard again");
                assert_eq!(again.rewritten, None, "rewriting must be idempotent");
            }
        }
    }
});
