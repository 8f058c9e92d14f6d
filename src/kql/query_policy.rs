//! The query policy: deny by default each construct that can leave the tenant's database.
//!
//! | construct | rule |
//! |---|---|
//! | `database(…)` | only a literal (joined literals) naming the tenant's GUID or an alias; aliases are rewritten to the GUID; `database()` is the current database |
//! | `cluster(…)`, `external_table(…)`, `entity_group(…)`, `externaldata` | refused |
//! | `table(…)`, `materialized_view(…)`, `stored_query_result(…)`, `graph(…)` | only a literal plain name (no dots, quotes or wildcards) |
//! | `alias database …`, `restrict access …` | refused: kqlgate owns scoping |
//! | `set NAME` | only the options in [`SETTABLE_OPTIONS`] |
//! | `evaluate PLUGIN` | only the plugins in [`ALLOWED_PLUGINS`] |
//! | `macro-expand G` | only an inline `entity_group […]` or a name bound by `let G = entity_group […]` |
//! | `.command` inside a query | refused (`; .show databases`, `(.show …)`) |
//!
//! Names are compared case-insensitively, whether plain or bracketed (`['database']`), so a
//! spelling Kusto would not even accept is refused rather than waved through.

use std::collections::HashSet;
use std::ops::Range;

use super::lexer::TokenKind;
use super::{Edit, Refusal, Scope, Source};

/// `set` options a tenant may use: result caching, the query clock, result-size caps and time
/// scoping. Everything else — above all the `request_*` security switches — is refused.
pub const SETTABLE_OPTIONS: &[&str] = &[
    "query_results_cache_max_age",
    "query_results_cache_per_shard",
    "query_now",
    "truncationmaxrecords",
    "query_take_max_records",
    "query_datetimescope_column",
    "query_datetimescope_from",
    "query_datetimescope_to",
    "query_bin_auto_size",
    "query_bin_auto_at",
];

/// In-database analytics plugins. Callout, sandbox and cross-cluster plugins are not here, and
/// neither is anything unknown.
pub const ALLOWED_PLUGINS: &[&str] = &[
    "active_users_count",
    "activity_counts_metrics",
    "activity_engagement",
    "activity_metrics",
    "autocluster",
    "bag_unpack",
    "basket",
    "dcount_intersect",
    "diffpatterns",
    "diffpatterns_text",
    "funnel_sequence",
    "funnel_sequence_completion",
    "ipv4_lookup",
    "ipv6_lookup",
    "narrow",
    "new_activity_metrics",
    "pivot",
    "preview",
    "rolling_percentile",
    "rows_near",
    "schema_merge",
    "sequence_detect",
    "session_count",
    "sliding_window_counts",
];

/// Every name a rule below looks at. A rule for a name missing here never runs: add the name
/// with the rule (the table tests in `tests.rs` exercise each rule, so a miss shows there).
const WATCHED: &[&str] = &[
    "set",
    "alias",
    "restrict",
    "database",
    "cluster",
    "external_table",
    "entity_group",
    "table",
    "materialized_view",
    "stored_query_result",
    "graph",
    "externaldata",
    "evaluate",
    "macro",
];

/// Plugins refused by name, with the reason in the message.
fn plugin_reason(name: &str) -> &'static str {
    let calls_out = name.starts_with("http_request")
        || name.ends_with("_request")
        || name.starts_with("ai_")
        || matches!(
            name,
            "execute_query" | "execute_show_command" | "dax_request" | "infer_storage_schema"
        );
    if calls_out || name.starts_with("infer_storage_schema") {
        "calls out of the cluster or queries elsewhere, which kqlgate does not allow"
    } else if matches!(name, "python" | "r" | "csharp") {
        "runs sandboxed code, which kqlgate does not allow"
    } else {
        "is not on kqlgate's allow-list of in-database plugins"
    }
}

/// Checks the tokens in `range` (a whole query, or the query part of a command).
pub fn check(source: &Source, range: Range<usize>, scope: &Scope) -> Result<Vec<Edit>, Refusal> {
    let let_groups = let_bound_groups(source, range.clone());
    let mut edits = Vec::new();
    for index in range.clone() {
        if starts_command(source, index) {
            return Err(source.refuse(
                index,
                source.excerpt(index, index + 1),
                "is a control command inside a query, which kqlgate does not allow",
            ));
        }
        // Only the names the policy watches are worth a closer look (and no allocation).
        let Some(name) = source
            .name(index)
            .and_then(|written| WATCHED.iter().find(|w| written.eq_ignore_ascii_case(w)))
        else {
            continue;
        };
        let statement_start = index == range.start
            || source.is_punct(index - 1, ';')
            || source.is_punct(index - 1, '{');
        if statement_start {
            check_statement(source, index, name)?;
        }
        if source.is_punct(index + 1, '(') {
            if let Some(edit) = check_call(source, index, name, scope)? {
                edits.push(edit);
            }
        }
        match *name {
            "externaldata" => {
                return Err(source.refuse(
                    index,
                    "externaldata".into(),
                    "reads external storage, which kqlgate does not allow",
                ))
            }
            "evaluate" => check_evaluate(source, index)?,
            "macro" if source.is_punct(index + 1, '-') && source.is_ident(index + 2, "expand") => {
                check_macro_expand(source, index, &let_groups)?
            }
            _ => {}
        }
    }
    Ok(edits)
}

fn check_statement(source: &Source, index: usize, name: &str) -> Result<(), Refusal> {
    match name {
        "set" => match source.ident(index + 1) {
            Some(option) if SETTABLE_OPTIONS.contains(&option.as_str()) => Ok(()),
            Some(option) => Err(source.refuse(
                index,
                format!("set {option}"),
                "is not an option tenants may set",
            )),
            None => Err(source.refuse(index, "set".into(), "must name an option")),
        },
        "alias" if source.is_ident(index + 1, "database") => Err(source.refuse(
            index,
            "alias database".into(),
            "is not allowed: it names another database or cluster",
        )),
        "restrict" if source.is_ident(index + 1, "access") => Err(source.refuse(
            index,
            "restrict access".into(),
            "is applied by kqlgate, not by queries",
        )),
        _ => Ok(()),
    }
}

/// `name(` at `index`: the entity functions. Returns the rewrite of an alias, if any.
fn check_call(
    source: &Source,
    index: usize,
    name: &str,
    scope: &Scope,
) -> Result<Option<Edit>, Refusal> {
    match name {
        "database" => check_database(source, index, scope),
        "cluster" => Err(source.refuse(
            index,
            "cluster(…)".into(),
            "reaches another cluster, which kqlgate does not allow",
        )),
        "external_table" => Err(source.refuse(
            index,
            "external_table(…)".into(),
            "reads external storage, which kqlgate does not allow",
        )),
        "entity_group" => Err(source.refuse(
            index,
            "entity_group(…)".into(),
            "names a stored entity group, which can reach other databases",
        )),
        "table" | "materialized_view" | "stored_query_result" | "graph" => {
            check_entity_name(source, index, name).map(|()| None)
        }
        _ => Ok(None),
    }
}

fn check_database(source: &Source, index: usize, scope: &Scope) -> Result<Option<Edit>, Refusal> {
    let argument = index + 2;
    if source.is_punct(argument, ')') {
        return Ok(None); // database(): the current database
    }
    let not_literal = || {
        source.refuse(
            index,
            "database(…)".into(),
            "takes only a literal name of this tenant's database (not a variable, parameter or expression)",
        )
    };
    let (value, after) = source.literals(argument).ok_or_else(not_literal)?;
    if !source.is_punct(after, ')') {
        return Err(not_literal());
    }
    if !scope.owns(&value) {
        return Err(source.refuse(
            index,
            format!("database({:?})", super::shorten(&value)),
            "names a database outside this tenant",
        ));
    }
    if value.eq_ignore_ascii_case(scope.database) {
        return Ok(None);
    }
    let first = &source.tokens[argument];
    let last = &source.tokens[after - 1];
    Ok(Some(Edit {
        span: first.span.start..last.span.end,
        replacement: format!("\"{}\"", scope.database),
    }))
}

/// `table("T")` and friends: a literal plain name of an entity in the current database.
fn check_entity_name(source: &Source, index: usize, name: &str) -> Result<(), Refusal> {
    let plain = |value: &str| {
        !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | ' ' | '-'))
    };
    match source.literals(index + 2) {
        Some((value, after))
            if plain(&value) && (source.is_punct(after, ')') || source.is_punct(after, ',')) =>
        {
            Ok(())
        }
        _ => Err(source.refuse(
            index,
            format!("{name}(…)"),
            "takes only a literal plain name of an entity in this database",
        )),
    }
}

fn check_evaluate(source: &Source, index: usize) -> Result<(), Refusal> {
    let mut at = index + 1;
    // Skip hints: `hint.distribution = per_node`.
    while source.ident(at).is_some_and(|h| h == "hint")
        && source.is_punct(at + 1, '.')
        && source.ident(at + 2).is_some()
        && source.is_punct(at + 3, '=')
    {
        at += 5;
    }
    let Some(plugin) = source.ident(at) else {
        return Err(source.refuse(index, "evaluate".into(), "must name a plugin"));
    };
    if ALLOWED_PLUGINS.contains(&plugin.as_str()) {
        Ok(())
    } else {
        Err(source.refuse(at, format!("evaluate {plugin}"), plugin_reason(&plugin)))
    }
}

fn check_macro_expand(
    source: &Source,
    index: usize,
    let_groups: &HashSet<String>,
) -> Result<(), Refusal> {
    let mut at = index + 3;
    // Skip `kind = …` and `isfuzzy = …`.
    while source
        .ident(at)
        .is_some_and(|p| p == "kind" || p == "isfuzzy")
        && source.is_punct(at + 1, '=')
    {
        at += 3;
    }
    let inline = source.is_ident(at, "entity_group") && source.is_punct(at + 1, '[');
    let let_bound = source.ident(at).is_some_and(|g| let_groups.contains(&g));
    if inline || let_bound {
        Ok(())
    } else {
        Err(source.refuse(
            index,
            format!("macro-expand {}", source.excerpt(at, at)),
            "uses a stored entity group, which can name other databases",
        ))
    }
}

/// Names bound to an inline group with `let NAME = entity_group [ … ]`. Any other `let` does
/// not count: a name bound to something else may still resolve to a stored group.
fn let_bound_groups(source: &Source, range: Range<usize>) -> HashSet<String> {
    range
        .filter(|&i| {
            source.is_ident(i, "let")
                && matches!(source.kind(i + 1), Some(TokenKind::Ident { .. }))
                && source.is_punct(i + 2, '=')
                && source.is_ident(i + 3, "entity_group")
                && source.is_punct(i + 4, '[')
        })
        .filter_map(|i| source.ident(i + 1))
        .collect()
}

/// A `.` that does not follow a value starts a control command (`; .show databases`,
/// `(.show …)`), which has no place inside a query.
fn starts_command(source: &Source, index: usize) -> bool {
    let follows_value = index > 0
        && matches!(
            source.kind(index - 1),
            Some(
                TokenKind::Ident { .. }
                    | TokenKind::Str { .. }
                    | TokenKind::Number
                    | TokenKind::Punct(')' | ']')
            )
        );
    source.is_punct(index, '.') && !follows_value && source.name(index + 1).is_some()
}

/// Where a `restrict access to (…);` statement goes: after leading `set` and `declare`
/// statements, which must come first in a query.
pub fn restrict_insertion_point(source: &Source) -> usize {
    let mut index = 0;
    while source.is_ident(index, "set") || source.is_ident(index, "declare") {
        match (index..source.tokens.len()).find(|&i| source.is_punct(i, ';')) {
            Some(semicolon) => index = semicolon + 1,
            None => break,
        }
    }
    source
        .tokens
        .get(index)
        .map_or(source.text.len(), |t| t.span.start)
}
