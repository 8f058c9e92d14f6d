//! The query policy: deny by default every construct that can leave the tenant's database,
//! grounded in the [`catalogue`] of everything Kusto.Language knows.
//!
//! Every plain word is looked up as a keyword, every name followed by `(` as a function or
//! aggregate, the name after `evaluate` as a plugin, the name after `set` as an option. An
//! entry the catalogue allows passes; a refused one is refused with its reason; a ruled one goes
//! through its rule:
//!
//! | rule | construct | what passes |
//! |---|---|---|
//! | `database` | `database(…)` | a literal (joined literals) naming the tenant's GUID or an alias, which is rewritten to the GUID; `database()` |
//! | `entity-name` | `table(…)`, `materialized_view(…)`, `stored_query_result(…)`, `graph(…)` | a literal or a variable: Kusto resolves them in the current database (`Binder.GetTableFunctionResult`); a literal that holds an expression is refused |
//! | `set-option` | `set NAME` | options the catalogue allows; unknown options are refused |
//! | `evaluate-plugin` | `evaluate NAME` | plugins the catalogue allows; unknown plugins are refused |
//! | `macro-expand` | `macro-expand G` | an inline `entity_group […]` or a name bound by `let G = entity_group […]` |
//! | `alias-database` | `alias database …` | nothing: it names another database or cluster |
//! | `restrict-access` | `restrict access to (…)` | allowed (its entities are checked like any text) unless kqlgate adds its own |
//!
//! A name the catalogue does not know is, as a call, a function of the tenant's own database;
//! anywhere else, a table, column or variable. A `.command` inside a query is refused.
//! Names are compared without regard to ASCII case, plain or bracketed (`['database']`), so a
//! spelling Kusto would not even accept is refused rather than waved through.

use std::collections::HashSet;
use std::ops::Range;

use super::catalogue::{self, Class, Entry, Kind, Rule};
use super::lexer::TokenKind;
use super::{Edit, Options, Refusal, Scope, Source};

/// Checks the tokens in `range` (a whole query, or the query part of a command).
pub fn check(
    source: &Source,
    range: Range<usize>,
    scope: &Scope,
    options: Options,
) -> Result<Vec<Edit>, Refusal> {
    let policy = Policy {
        source,
        scope,
        options,
        statements_start: range.start,
        let_groups: let_bound_groups(source, range.clone()),
    };
    let mut edits = Vec::new();
    for index in range {
        match source.kind(index) {
            Some(TokenKind::Punct) if starts_command(source, index) => {
                return Err(source.refuse(
                    index,
                    source.excerpt(index, index + 1),
                    "is a control command inside a query, which kqlgate does not allow",
                    "command",
                ))
            }
            Some(TokenKind::Ident | TokenKind::Bracketed) => {}
            _ => continue,
        }
        if source.is_punct(index + 1, '(') {
            if let Some(edit) = policy.call(index)? {
                edits.push(edit);
            }
        }
        if source.kind(index) == Some(TokenKind::Ident) {
            policy.keyword(index)?;
        }
    }
    Ok(edits)
}

struct Policy<'s, 'a> {
    source: &'s Source<'a>,
    scope: &'s Scope<'s>,
    options: Options,
    statements_start: usize,
    let_groups: HashSet<String>,
}

impl Policy<'_, '_> {
    /// `name(` at `index`: a function or aggregate of the catalogue, or the tenant's own.
    /// Returns the rewrite of a database alias, if any.
    fn call(&self, index: usize) -> Result<Option<Edit>, Refusal> {
        let source = self.source;
        let Some(name) = source.name(index) else {
            return Ok(None);
        };
        let entry =
            catalogue::lookup_first(&[Kind::Function, Kind::Aggregate, Kind::Internal], &name);
        let Some(entry) = entry else {
            return Ok(None); // a function of the tenant's database, or a `let` function
        };
        match entry.class {
            Class::Allow => Ok(None),
            Class::Refuse(_) => Err(refused(source, index, format!("{}(…)", entry.name), entry)),
            Class::Rule(Rule::Database) => self.database(index),
            Class::Rule(Rule::EntityName) => self.entity_name(index, entry).map(|()| None),
            Class::Rule(rule) => Err(no_rule_here(source, index, entry, rule)),
        }
    }

    /// A plain word at `index` (joined with touching hyphens, as `macro-expand` is).
    fn keyword(&self, index: usize) -> Result<(), Refusal> {
        let Some(entry) = keyword_at(self.source, index) else {
            return Ok(());
        };
        let statement_start = index == self.statements_start
            || self.source.is_punct(index - 1, ';')
            || self.source.is_punct(index - 1, '{');
        match entry.class {
            Class::Allow => Ok(()),
            Class::Refuse(_) => Err(refused(self.source, index, entry.name.to_owned(), entry)),
            Class::Rule(Rule::SetOption) if statement_start => self.set(index),
            Class::Rule(Rule::EvaluatePlugin) => self.evaluate(index),
            Class::Rule(Rule::MacroExpand) => self.macro_expand(index),
            Class::Rule(Rule::AliasDatabase)
                if statement_start && self.source.is_word(index + 1, "database") =>
            {
                Err(self.source.refuse(
                    index,
                    "alias database".into(),
                    "is not allowed: it names another database or cluster",
                    "alias",
                ))
            }
            Class::Rule(Rule::RestrictAccess)
                if statement_start
                    && self.options.restrict_statement
                    && self.source.is_word(index + 1, "access") =>
            {
                Err(self.source.refuse(
                    index,
                    "restrict access".into(),
                    "is applied by kqlgate itself on this cluster; leave it out of the query",
                    "restrict",
                ))
            }
            // The rest only matter in their own statement or call form, checked elsewhere:
            // `set` mid-statement, `database` without `(`, words of control commands.
            Class::Rule(_) => Ok(()),
        }
    }

    fn database(&self, index: usize) -> Result<Option<Edit>, Refusal> {
        let source = self.source;
        let argument = index + 2;
        if source.is_punct(argument, ')') {
            return Ok(None); // database(): the current database
        }
        let not_literal = || {
            source.refuse(
                index,
                "database(…)".into(),
                "takes only a literal name of this tenant's database (not a variable, parameter or expression)",
                "database",
            )
        };
        let (value, after) = source.literals(argument).ok_or_else(not_literal)?;
        if !source.is_punct(after, ')') {
            return Err(not_literal());
        }
        if !self.scope.owns(&value) {
            return Err(source.refuse(
                index,
                format!("database({:?})", super::shorten(&value)),
                "names a database outside this tenant",
                "database",
            ));
        }
        if value.eq_ignore_ascii_case(self.scope.database) {
            return Ok(None);
        }
        let first = &source.tokens[argument];
        let last = &source.tokens[after - 1];
        Ok(Some(Edit {
            span: first.start()..last.end(),
            replacement: format!("\"{}\"", self.scope.database),
        }))
    }

    /// `table(T)` and friends name an entity of the current database (a `database(…).table(…)`
    /// path is checked at its `database`): by a literal name or pattern, or by a variable.
    fn entity_name(&self, index: usize, entry: &Entry) -> Result<(), Refusal> {
        let source = self.source;
        let ends_argument = |at: usize| source.is_punct(at, ')') || source.is_punct(at, ',');
        // No entity name holds these; a literal that does is an expression in disguise.
        let plain = |value: &str| {
            !value.is_empty() && !value.contains(['(', ')', '[', ']', '\'', '"', ':', '/', '\\'])
        };
        let argument = index + 2;
        let named = match source.literals(argument) {
            Some((value, after)) => plain(&value) && ends_argument(after),
            None => source.is_name(argument) && ends_argument(argument + 1),
        };
        if named {
            Ok(())
        } else {
            Err(source.refuse(
                index,
                format!("{}(…)", entry.name),
                "takes only a name, or a variable holding one, of an entity in this database",
                "entity-name",
            ))
        }
    }

    /// `set NAME [= value]`: only options the catalogue allows.
    fn set(&self, index: usize) -> Result<(), Refusal> {
        let source = self.source;
        let Some(option) = source.name(index + 1) else {
            return Err(source.refuse(index, "set".into(), "must name an option", "set"));
        };
        let construct = format!("set {option}");
        match catalogue::lookup(Kind::Option, &option) {
            Some(entry) if entry.class == Class::Allow => Ok(()),
            Some(entry) if entry.class == Class::Rule(Rule::ForcedOption) => Err(source.refuse(
                index,
                construct,
                "is set by kqlgate for every request; a query may not change it",
                entry.name,
            )),
            Some(entry) => Err(refused(source, index, construct, entry)),
            None => Err(source.refuse(index, construct, "is not an option Kusto knows", "set")),
        }
    }

    /// `evaluate [hint.x = y …] NAME(…)`: only plugins the catalogue allows.
    fn evaluate(&self, index: usize) -> Result<(), Refusal> {
        let source = self.source;
        let mut at = index + 1;
        while source.is_word(at, "hint")
            && source.is_punct(at + 1, '.')
            && source.word(at + 2).is_some()
            && source.is_punct(at + 3, '=')
        {
            at += 5;
        }
        let Some(plugin) = source.name(at) else {
            return Err(source.refuse(index, "evaluate".into(), "must name a plugin", "evaluate"));
        };
        let construct = format!("evaluate {plugin}");
        match catalogue::lookup(Kind::Plugin, &plugin) {
            Some(entry) if entry.class == Class::Allow => Ok(()),
            Some(entry) => Err(refused(source, at, construct, entry)),
            None => Err(source.refuse(
                at,
                construct,
                "is not a plugin kqlgate knows to stay within the database",
                "evaluate",
            )),
        }
    }

    fn macro_expand(&self, index: usize) -> Result<(), Refusal> {
        let source = self.source;
        let mut at = index + 3; // `macro`, `-`, `expand`
        while (source.is_word(at, "kind") || source.is_word(at, "isfuzzy"))
            && source.is_punct(at + 1, '=')
        {
            at += 3;
        }
        let inline = source.is_word(at, "entity_group") && source.is_punct(at + 1, '[');
        let let_bound = source
            .name(at)
            .is_some_and(|g| self.let_groups.contains(&g.to_ascii_lowercase()));
        if inline || let_bound {
            Ok(())
        } else {
            Err(source.refuse(
                index,
                format!("macro-expand {}", source.excerpt(at, at)),
                "uses a stored entity group, which can name other databases",
                "macro-expand",
            ))
        }
    }
}

fn refused(source: &Source, index: usize, construct: String, entry: &'static Entry) -> Refusal {
    source.refuse(index, construct, entry.reason, entry.name)
}

/// A catalogue entry whose rule has no meaning where it stands: refused, never waved through.
fn no_rule_here(source: &Source, index: usize, entry: &'static Entry, rule: Rule) -> Refusal {
    source.refuse(
        index,
        format!("{}(…)", entry.name),
        &format!(
            "is not accepted here (kqlgate's rule {} does not cover it)",
            rule.name()
        ),
        entry.name,
    )
}

/// Words a hyphenated keyword of the catalogue has at most (`commands-and-queries`); joining
/// stops there, so a long `a-b-c-…` chain costs a constant per word.
const MAX_KEYWORD_PARTS: usize = 4;

/// The keyword at `index`: the longest word of the catalogue made of the identifiers there
/// joined by touching hyphens (`macro-expand`, `mv-expand`), or the identifier alone.
fn keyword_at(source: &Source, index: usize) -> Option<&'static Entry> {
    let word = source.word(index)?;
    if source.adjacent(index) && source.is_punct(index + 1, '-') && source.adjacent(index + 1) {
        let mut joined = word.to_owned();
        let mut at = index;
        let mut longest = None;
        while at < index + 2 * (MAX_KEYWORD_PARTS - 1)
            && source.adjacent(at)
            && source.is_punct(at + 1, '-')
            && source.adjacent(at + 1)
        {
            let Some(next) = source.word(at + 2) else {
                break;
            };
            joined.push('-');
            joined.push_str(next);
            at += 2;
            longest = catalogue::lookup(Kind::Keyword, &joined).or(longest);
        }
        if longest.is_some() {
            return longest;
        }
    }
    catalogue::lookup(Kind::Keyword, word)
}

/// Names bound to an inline group with `let NAME = entity_group [ … ]`. Any other `let` does
/// not count: a name bound to something else may still resolve to a stored group.
fn let_bound_groups(source: &Source, range: Range<usize>) -> HashSet<String> {
    range
        .filter(|&i| {
            source.is_word(i, "let")
                && source.is_name(i + 1)
                && source.is_punct(i + 2, '=')
                && source.is_word(i + 3, "entity_group")
                && source.is_punct(i + 4, '[')
        })
        .filter_map(|i| source.name(i + 1).map(|n| n.to_ascii_lowercase()))
        .collect()
}

/// A `.` that does not follow a value starts a control command (`; .show databases`,
/// `(.show …)`), which has no place inside a query. (The range `..` is a token of its own.)
fn starts_command(source: &Source, index: usize) -> bool {
    let follows_value = index > 0
        && (matches!(
            source.kind(index - 1),
            Some(TokenKind::Ident | TokenKind::Bracketed | TokenKind::Str | TokenKind::Number)
        ) || source.is_punct(index - 1, ')')
            || source.is_punct(index - 1, ']'));
    source.is_punct(index, '.') && !follows_value && source.is_name(index + 1)
}

/// Where a `restrict access to (…);` statement goes: after leading `set` and `declare`
/// statements, which must come first in a query.
pub fn restrict_insertion_point(source: &Source) -> usize {
    let mut index = 0;
    while source.is_word(index, "set") || source.is_word(index, "declare") {
        match (index..source.tokens.len()).find(|&i| source.is_punct(i, ';')) {
            Some(semicolon) => index = semicolon + 1,
            None => break,
        }
    }
    source
        .tokens
        .get(index)
        .map_or(source.text.len(), |t| t.start())
}
