//! The command policy: control commands (`.verb …`) on `/v1/rest/mgmt`, and `.show` on the query
//! endpoints. Each allowed command is parsed far enough to know its verb, its object and every
//! database and table it names; anything not recognised is refused.
//!
//! | role | commands |
//! |---|---|
//! | viewer | `.show tables [details]`, `.show table T` and its schema, details, extents, policies, ingestion mappings and statistics, `.show table * policy …`, `.show database [own] schema …`, `.show database own policy …`, `.show functions`, `.show function F [schema as json]`, `.show materialized-views [details]` |
//! | admin | also `.alter`/`.alter-merge table T policy caching\|retention …`, `.alter`/`.alter-merge database own policy caching\|retention …`, `.create`/`.create-merge`/`.alter table T (…)`, `.drop table T`, `.create-or-alter function …` (its body goes through the query policy) |
//! | nobody | everything else: cluster scope, other databases, principals and roles (of the database, a table or a function), `.show databases`, `.show queries`, `.show commands`, `.show journal`, `.show cluster …`, `.cancel query`, ingestion, export |
//!
//! A `.show` command may be followed by `| query`, which goes through the query policy.
//! A database named in a command must be the tenant's own; an alias is rewritten to the GUID.

use super::lexer::TokenKind;
use super::{query_policy, Edit, Options, Refusal, Role, Scope, Source};

/// Why commands outside the allow-list are refused: everything runs as one identity.
const NOT_ALLOWED: &str =
    "is not allowed through kqlgate (it reaches beyond this tenant's database)";

/// What `.show table T` may show (the first word after the table, from Kusto.Language's
/// command grammar): its schema (`schema as json`, `cslschema`), `details`, `extents`, a
/// `policy …`, `ingestion … mappings`, `data statistics`, `column statistics`, `columns
/// classification`, `dimensions`, row stores, `operations mirroring-…`. Not `principals` or
/// `principal roles`.
const SHOW_TABLE: &[&str] = &[
    "schema",
    "cslschema",
    "details",
    "extents",
    "policy",
    "ingestion",
    "data",
    "column",
    "columns",
    "dimensions",
    "rowstores",
    "rowstore_references",
    "rowstore_sealinfo",
    "operations",
];

pub fn check(
    source: &Source,
    scope: &Scope,
    role: Role,
    options: Options,
) -> Result<Vec<Edit>, Refusal> {
    let (verb, mut at) = hyphenated(source, 1);
    let verb = verb
        .ok_or_else(|| source.refuse(0, ".".into(), "must be followed by a command", "command"))?;
    let mut parser = Command {
        source,
        scope,
        options,
        edits: Vec::new(),
    };
    let (object, next) = hyphenated(source, at);
    let object = object.unwrap_or_default();
    at = next;
    let named = format!(".{verb} {object}");
    let admin_only = |p: &Command| {
        if role == Role::Admin {
            Ok(())
        } else {
            Err(p
                .source
                .refuse(0, named.clone(), "requires the admin role", "command"))
        }
    };
    let rest = match (verb.as_str(), object.as_str()) {
        ("show", "tables") => parser
            .names_list(at)
            .and_then(|at| parser.show_what(at, &["details", "column"])),
        ("show", "table") => parser.show_table(at),
        ("show", "database") => parser.show_database(at),
        ("show", "functions") => parser.show_what(at, &[]),
        ("show", "materialized-views") => parser.show_what(at, &["details"]),
        ("show", "function") => parser
            .table_name(at)
            .and_then(|at| parser.show_what(at, &["schema"])),
        ("alter" | "alter-merge", "table") => {
            admin_only(&parser)?;
            parser.alter_table(at, verb == "alter")
        }
        ("alter" | "alter-merge", "database") => {
            admin_only(&parser)?;
            parser.alter_database(at)
        }
        ("create" | "create-merge", "table") => {
            admin_only(&parser)?;
            parser.table_with_schema(at)
        }
        ("drop", "table") => {
            admin_only(&parser)?;
            parser.table_name(at)
        }
        ("create-or-alter", "function") => {
            admin_only(&parser)?;
            // The body is a query: it is checked below like any other query text.
            return parser.function_definition(at);
        }
        _ => Err(parser.refuse(at, NOT_ALLOWED)),
    }?;
    parser.tail(rest, verb == "show")?;
    Ok(parser.edits)
}

/// A word made of identifiers joined by touching hyphens (`create-or-alter`,
/// `materialized-views`), lower-cased, and the index after it.
fn hyphenated(source: &Source, mut at: usize) -> (Option<String>, usize) {
    let Some(name) = source.word(at) else {
        return (None, at);
    };
    let mut word = name.to_lowercase();
    while source.adjacent(at) && source.is_punct(at + 1, '-') && source.adjacent(at + 1) {
        match source.word(at + 2) {
            Some(name) => {
                word.push('-');
                word.push_str(&name.to_lowercase());
                at += 2;
            }
            None => break,
        }
    }
    (Some(word), at + 1)
}

struct Command<'s, 'a> {
    source: &'s Source<'a>,
    scope: &'s Scope<'s>,
    options: Options,
    edits: Vec<Edit>,
}

impl Command<'_, '_> {
    fn refuse(&self, at: usize, reason: &str) -> Refusal {
        self.source
            .refuse(0, self.excerpt_to(at), reason, "command")
    }

    fn excerpt_to(&self, at: usize) -> String {
        let last = at.min(self.source.tokens.len().saturating_sub(1));
        self.source.excerpt(0, last)
    }

    fn is_name(&self, at: usize) -> bool {
        self.source.is_name(at)
    }

    /// A database name the command gives explicitly: the tenant's own, rewritten to the GUID.
    fn own_database(&mut self, at: usize) -> Result<usize, Refusal> {
        let value = match self.source.kind(at) {
            Some(TokenKind::Ident | TokenKind::Bracketed | TokenKind::Str) => {
                super::lexer::value(self.source.text, &self.source.tokens[at])
            }
            _ => return Err(self.refuse(at, "must name a database")),
        };
        if !self.scope.owns(&value) {
            return Err(self.source.refuse(
                at,
                format!("database {:?}", super::shorten(&value)),
                "names a database outside this tenant",
                "database",
            ));
        }
        if !value.eq_ignore_ascii_case(self.scope.database) {
            self.edits.push(Edit {
                span: self.source.tokens[at].span(),
                replacement: format!("[\"{}\"]", self.scope.database),
            });
        }
        Ok(at + 1)
    }

    /// A table (or function) name, optionally qualified by the tenant's own database.
    fn table_name(&mut self, at: usize) -> Result<usize, Refusal> {
        if self.source.is_punct(at, '*') {
            return Ok(at + 1);
        }
        if !self.is_name(at) {
            return Err(self.refuse(at, "must name a table or function"));
        }
        if self.source.is_punct(at + 1, '.') {
            self.own_database(at)?;
            if !self.is_name(at + 2) || self.source.is_punct(at + 3, '.') {
                return Err(self.refuse(at + 2, "names an entity outside this tenant's database"));
            }
            return Ok(at + 3);
        }
        Ok(at + 1)
    }

    /// `.show tables`, optionally `(T1, T2)`.
    fn names_list(&mut self, mut at: usize) -> Result<usize, Refusal> {
        if !self.source.is_punct(at, '(') {
            return Ok(at);
        }
        at += 1;
        loop {
            at = self.table_name(at)?;
            if self.source.is_punct(at, ',') {
                at += 1;
            } else if self.source.is_punct(at, ')') {
                return Ok(at + 1);
            } else {
                return Err(self.refuse(at, "has a malformed table list"));
            }
        }
    }

    /// `.show table T …`: schema, details, extents, policies, ingestion mappings and statistics
    /// of one table; `.show table * policy …` of every table of the database. Not its
    /// principals or roles.
    fn show_table(&mut self, at: usize) -> Result<usize, Refusal> {
        let every_table = self.source.is_punct(at, '*');
        let at = self.table_name(at)?;
        if every_table {
            return self.show_what(at, &["policy", "operations"]);
        }
        self.show_what(at, SHOW_TABLE)
    }

    /// What a `.show` command shows of its object: the object itself (nothing more, or a
    /// `| query`, left to [`Self::tail`] with a `<|`), or what a first word from `allowed`
    /// names. Anything else is refused, so a command Kusto adds for an object (or its
    /// principals and roles) does not pass unseen.
    fn show_what(&self, at: usize, allowed: &[&str]) -> Result<usize, Refusal> {
        let source = self.source;
        if at >= source.tokens.len() || source.is_punct(at, '|') || source.is_punct(at, '<') {
            return Ok(at);
        }
        let word = source.word(at).unwrap_or_default();
        if allowed.iter().any(|w| word.eq_ignore_ascii_case(w)) {
            return Ok(at + 1);
        }
        let reason = if ["principals", "principal"]
            .iter()
            .any(|w| word.eq_ignore_ascii_case(w))
        {
            "is not allowed through kqlgate (it lists principals and roles, which kqlgate does not show)"
        } else {
            NOT_ALLOWED
        };
        Err(self.refuse(at, reason))
    }

    /// `.show database [own] schema …` or `.show database own policy …`.
    fn show_database(&mut self, mut at: usize) -> Result<usize, Refusal> {
        let keyword = |c: &Self, i: usize| {
            ["schema", "policy", "cslschema"]
                .iter()
                .any(|word| c.source.is_word(i, word))
        };
        if !keyword(self, at) {
            at = self.own_database(at)?;
        }
        if keyword(self, at) {
            Ok(at + 1)
        } else {
            Err(self.refuse(at, NOT_ALLOWED))
        }
    }

    /// `.alter[-merge] table T policy caching|retention …`, or (`.alter` only) `T (schema)`.
    fn alter_table(&mut self, at: usize, schema_allowed: bool) -> Result<usize, Refusal> {
        let at = self.table_name(at)?;
        if self.source.is_punct(at, '(') && schema_allowed {
            return self.schema(at);
        }
        self.policy(at)
    }

    /// `.alter[-merge] database own policy caching|retention …`.
    fn alter_database(&mut self, at: usize) -> Result<usize, Refusal> {
        let at = self.own_database(at)?;
        self.policy(at)
    }

    fn policy(&self, at: usize) -> Result<usize, Refusal> {
        let kind_ok =
            self.source.is_word(at + 1, "caching") || self.source.is_word(at + 1, "retention");
        if self.source.is_word(at, "policy") && kind_ok {
            Ok(at + 2)
        } else {
            Err(self.refuse(at + 1, "may change only the caching and retention policies"))
        }
    }

    /// `.create[-merge] table T (col:type, …)`.
    fn table_with_schema(&mut self, at: usize) -> Result<usize, Refusal> {
        let at = self.table_name(at)?;
        self.schema(at)
    }

    /// `(name:type, …)`: names, types, colons and commas only.
    fn schema(&self, at: usize) -> Result<usize, Refusal> {
        if !self.source.is_punct(at, '(') {
            return Err(self.refuse(at, "must give the table's columns as (name:type, …)"));
        }
        let mut i = at + 1;
        while i < self.source.tokens.len() {
            if self.source.is_punct(i, ')') {
                return Ok(i + 1);
            }
            if self.is_name(i) || self.source.is_punct(i, ':') || self.source.is_punct(i, ',') {
                i += 1;
            } else {
                return Err(self.refuse(i, "has a malformed column list"));
            }
        }
        Err(self.refuse(i, "has an unclosed column list"))
    }

    /// `.create-or-alter function [with (…)] F(params) { body }`: the whole remainder,
    /// parameters and body, goes through the query policy.
    fn function_definition(mut self, at: usize) -> Result<Vec<Edit>, Refusal> {
        let end = self.source.tokens.len();
        if !(at..end).any(|i| self.source.is_punct(i, '{')) {
            return Err(self.refuse(at, "must define a function body { … }"));
        }
        let body = (at..end)
            .find(|&i| self.source.is_punct(i, '{'))
            .unwrap_or(end);
        if let Some(dot) = (at..body).find(|&i| self.source.is_punct(i, '.')) {
            return Err(self.refuse(dot, "names an entity outside this tenant's database"));
        }
        let body = query_policy::check(self.source, at..end, self.scope, self.options)?;
        self.edits.extend(body);
        Ok(self.edits)
    }

    /// What follows the parsed part: plain words and values (`details`, `as json`,
    /// `hot = 5d`, a JSON policy string), or for `.show`, `| query`. No query input (`<|`),
    /// no further names of databases or clusters.
    fn tail(&mut self, at: usize, show: bool) -> Result<(), Refusal> {
        let end = self.source.tokens.len();
        let mut i = at;
        while i < end {
            let source = self.source;
            if source.is_word(i, "with") && source.is_punct(i + 1, '(') {
                i = self.with_options(i + 2)?;
                continue;
            }
            if source.is_punct(i, '|') && show && !source.is_punct(i.wrapping_sub(1), '<') {
                let edits = query_policy::check(source, i + 1..end, self.scope, self.options)?;
                self.edits.extend(edits);
                return Ok(());
            }
            if source.is_punct(i, '<') && source.is_punct(i + 1, '|') {
                return Err(self.refuse(i, "may not take a query as input (`<|`)"));
            }
            let structure = ['.', '(', ')', '[', ']', '{', '}', ';']
                .iter()
                .any(|&c| source.is_punct(i, c))
                || source.kind(i) == Some(TokenKind::DotDot);
            let names_elsewhere = source.is_word(i, "database") || source.is_word(i, "cluster");
            if structure || names_elsewhere {
                return Err(self.refuse(i, NOT_ALLOWED));
            }
            i += 1;
        }
        Ok(())
    }

    /// `with (name = value, …)` options: names, literals, numbers, `=` and `,` only.
    fn with_options(&self, mut i: usize) -> Result<usize, Refusal> {
        while let Some(kind) = self.source.kind(i) {
            if self.source.is_punct(i, ')') {
                return Ok(i + 1);
            }
            let value = matches!(
                kind,
                TokenKind::Ident | TokenKind::Bracketed | TokenKind::Str | TokenKind::Number
            );
            if value || self.source.is_punct(i, '=') || self.source.is_punct(i, ',') {
                i += 1;
            } else {
                return Err(self.refuse(i, "has a malformed with (…) clause"));
            }
        }
        Err(self.refuse(i, "has an unclosed with (…) clause"))
    }
}

#[cfg(test)]
mod tests {
    use crate::kql::{guard, Options, Role, Scope};

    const OWN: &str = "11111111-1111-1111-1111-111111111111";

    fn check(text: &str, role: Role) -> Result<(), String> {
        let names = [OWN.to_string(), "samples".to_string()];
        let scope = Scope {
            database: OWN,
            database_names: &names,
        };
        guard(text, &scope, role, Options::default())
            .map(|_| ())
            .map_err(|r| r.to_string())
    }

    /// `.show table T` and `.show function F` used to take any words after the name, so
    /// `.show table T principals` listed the cluster's principals to any viewer. What may follow
    /// is now the list of what Kusto shows of a table or function; everything else is refused.
    #[test]
    fn show_commands_show_only_what_the_list_names() {
        for text in [
            ".show table StormEvents",
            ".show table StormEvents details",
            ".show table StormEvents schema as json",
            ".show table StormEvents cslschema",
            ".show table StormEvents extents hot",
            ".show table StormEvents policy update",
            ".show table StormEvents ingestion json mappings",
            ".show table StormEvents data statistics",
            ".show table StormEvents column statistics",
            ".show table StormEvents columns classification",
            ".show table StormEvents dimensions",
            ".show table StormEvents operations mirroring-status",
            ".SHOW TABLE StormEvents DETAILS",
            ".show table * policy caching",
            ".show table StormEvents | project AttributeName",
            ".show tables details",
            ".show tables (StormEvents) details",
            ".show function EventsIn",
            ".show function EventsIn schema as json",
            ".show functions | where Name has 'x'",
            ".show materialized-views details",
        ] {
            for role in [Role::Viewer, Role::Admin] {
                assert_eq!(check(text, role), Ok(()), "{text}");
            }
        }
        for (text, fragment) in [
            (".show table StormEvents principals", "principals and roles"),
            (
                ".show table StormEvents principal roles",
                "principals and roles",
            ),
            (".show table StormEvents PRINCIPALS", "principals and roles"),
            (".show function EventsIn principals", "principals and roles"),
            (
                ".show function EventsIn principal roles",
                "principals and roles",
            ),
            (".show table StormEvents usage statistics", "is not allowed"),
            (".show table StormEvents journal", "is not allowed"),
            (".show table * details", "is not allowed"),
            (".show table * principals", "principals and roles"),
            (".show functions principals", "principals and roles"),
            (".show tables principals", "principals and roles"),
            (
                ".show materialized-views principals",
                "principals and roles",
            ),
            (
                ".show table StormEvents <| print 1",
                "may not take a query as input",
            ),
            (".show table StormEvents ['principals']", "is not allowed"),
            (".show table StormEvents 'details'", "is not allowed"),
            (".show table StormEvents - principals", "is not allowed"),
            (".show function EventsIn = x", "is not allowed"),
        ] {
            for role in [Role::Viewer, Role::Admin] {
                let refusal = check(text, role).expect_err(text);
                assert!(refusal.contains(fragment), "{text}: {refusal}");
            }
        }
    }
}
