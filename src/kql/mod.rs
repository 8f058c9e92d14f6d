//! The tenant-isolation guard: KQL text in, a verdict out. No HTTP here.
//!
//! Every tenant reaches the cluster as the proxy's one identity, so pinning the request's `db` is
//! not isolation: KQL can name another database, another cluster or the outside world from inside
//! the query text. The guard lexes the text exactly (see [`lexer`]) and applies a deny-by-default
//! policy to what it finds:
//! - [`query_policy`] for queries: every keyword, call, plugin and option is looked up in the
//!   [`catalogue`] of everything Kusto.Language knows, and is allowed, guarded by a rule
//!   (`database(…)` only with a literal naming the tenant's own database, aliases rewritten to
//!   the GUID) or refused; an unknown plugin or option is refused;
//! - [`command_policy`] for control commands (`.show …` on any endpoint, everything on mgmt):
//!   each allowed command is parsed far enough to know every database and table it names.
//!
//! A refusal names the construct and its line and column, so the user can fix the query.

pub mod catalogue;
pub mod command_policy;
pub mod lexer;
pub mod query_policy;

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use lexer::{Token, TokenKind};

/// What a tenant may do with control commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Schema and metadata of its own database.
    #[default]
    Viewer,
    /// Also the table and policy management the platform team delegates.
    Admin,
}

/// The databases a tenant owns: the GUID forwarded to the cluster, and every name for it.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub database: &'a str,
    /// Lower-cased: the GUID and each alias.
    pub database_names: &'a [String],
}

impl Scope<'_> {
    pub fn owns(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        self.database_names.contains(&name)
    }
}

/// The labels of refusals that are the guard's own rules rather than catalogue entries (whose
/// labels are their names): with the catalogue's names, every `Refusal::label` there is.
pub const RULE_LABELS: [&str; 12] = [
    "tsql",
    "lexer",
    "limit",
    "directive",
    "command",
    "database",
    "entity-name",
    "set",
    "evaluate",
    "macro-expand",
    "alias",
    "restrict",
];

/// Why a text was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The construct as written (shortened), e.g. `database("other")`.
    pub construct: String,
    /// What is wrong with it, e.g. "names a database outside this tenant".
    pub reason: String,
    pub line: usize,
    pub column: usize,
    /// What was refused, from a bounded set (catalogue names and the guard's own rules), for
    /// metrics: never the text of the query.
    pub label: &'static str,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} at {}:{}",
            self.construct, self.reason, self.line, self.column
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Query,
    Command,
}

/// An accepted text, and the text to forward when the guard rewrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub kind: TextKind,
    pub rewritten: Option<String>,
}

/// Options of the guard that come from the cluster's configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Prefix queries with Kusto's own `restrict access to (…)` naming the tenant's database.
    pub restrict_statement: bool,
}

/// Checks `text` for a tenant with `scope` and `role`.
pub fn guard(text: &str, scope: &Scope, role: Role, options: Options) -> Result<Verdict, Refusal> {
    if let Some(offset) = tsql_start(text) {
        return Err(refusal_at(
            text,
            offset,
            "T-SQL",
            "is not accepted (text starting with `--` is T-SQL to Kusto); send KQL",
            "tsql",
        ));
    }
    let tokens = lexer::lex_significant(text).map_err(|e| {
        let (reason, label) = if e.over_limit {
            (e.message, "limit")
        } else {
            (
                format!("cannot be read with certainty: {}", e.message),
                "lexer",
            )
        };
        refusal_at(text, e.offset, "query text", &reason, label)
    })?;
    if let Some(directive) = tokens.iter().find(|t| t.kind == TokenKind::Directive) {
        return Err(refusal_at(
            text,
            directive.start(),
            "`#` directive",
            "is not accepted",
            "directive",
        ));
    }
    let source = Source {
        text,
        tokens: &tokens,
    };
    let is_command = source.is_punct(0, '.');
    let (kind, mut edits) = if is_command {
        (
            TextKind::Command,
            command_policy::check(&source, scope, role, options)?,
        )
    } else {
        (
            TextKind::Query,
            query_policy::check(&source, 0..tokens.len(), scope, options)?,
        )
    };
    if kind == TextKind::Query && options.restrict_statement {
        let at = query_policy::restrict_insertion_point(&source);
        edits.push(Edit {
            span: at..at,
            replacement: format!("restrict access to (database(\"{}\").*);\n", scope.database),
        });
    }
    Ok(Verdict {
        kind,
        rewritten: apply(text, edits),
    })
}

/// Kusto takes a text whose first line starts with `--` as T-SQL.
fn tsql_start(text: &str) -> Option<usize> {
    let trimmed = text.trim_start_matches(lexer::is_whitespace);
    trimmed
        .starts_with("--")
        .then(|| text.len() - trimmed.len())
}

/// The lexed text, shared by both policies.
pub struct Source<'a> {
    pub text: &'a str,
    /// Significant tokens: comments are left out, directives refused before.
    pub tokens: &'a [Token],
}

#[cfg(test)]
thread_local! {
    /// Every look at a token by the policies, counted in tests: the guard's work, measured
    /// without a clock.
    pub(crate) static LOOKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Source<'_> {
    fn look(&self, index: usize) -> Option<&Token> {
        #[cfg(test)]
        LOOKS.with(|looks| looks.set(looks.get() + 1));
        self.tokens.get(index)
    }

    pub fn kind(&self, index: usize) -> Option<TokenKind> {
        self.look(index).map(|t| t.kind)
    }

    /// Whether the token at `index` is the punctuation `c` (`=~` and `!~` count as `=`, `!`).
    pub fn is_punct(&self, index: usize, c: char) -> bool {
        self.look(index).is_some_and(|t| {
            t.kind == TokenKind::Punct && self.text.as_bytes()[t.start()] == c as u8
        })
    }

    /// The text of a plain identifier (a keyword or a name as written).
    pub fn word(&self, index: usize) -> Option<&str> {
        let token = self.look(index)?;
        (token.kind == TokenKind::Ident).then(|| &self.text[token.span()])
    }

    /// Whether the token at `index` is the plain word `word`, in any ASCII case.
    pub fn is_word(&self, index: usize, word: &str) -> bool {
        self.word(index)
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
    }

    /// The name at `index`, plain or bracketed (decoded).
    pub fn name(&self, index: usize) -> Option<Cow<'_, str>> {
        let token = self.look(index)?;
        matches!(token.kind, TokenKind::Ident | TokenKind::Bracketed)
            .then(|| lexer::value(self.text, token))
    }

    pub fn is_name(&self, index: usize) -> bool {
        matches!(
            self.kind(index),
            Some(TokenKind::Ident | TokenKind::Bracketed)
        )
    }

    /// Whether tokens `index` and `index + 1` touch, with nothing between them.
    pub fn adjacent(&self, index: usize) -> bool {
        match (self.tokens.get(index), self.tokens.get(index + 1)) {
            (Some(a), Some(b)) => a.end() == b.start(),
            _ => false,
        }
    }

    /// The string literals starting at `index`, joined as Kusto joins adjacent literals;
    /// returns the value and the index after the last literal.
    pub fn literals(&self, mut index: usize) -> Option<(String, usize)> {
        let mut value = String::new();
        let start = index;
        while let Some(token) = self.look(index).filter(|t| t.kind == TokenKind::Str) {
            value.push_str(&lexer::value(self.text, token));
            index += 1;
        }
        (index > start).then_some((value, index))
    }

    /// The source text from token `from` to token `to` (inclusive), shortened for messages.
    pub fn excerpt(&self, from: usize, to: usize) -> String {
        let (Some(first), Some(last)) = (self.tokens.get(from), self.tokens.get(to)) else {
            return String::new();
        };
        shorten(&self.text[first.start()..last.end().max(first.start())])
    }

    pub fn refuse(
        &self,
        index: usize,
        construct: String,
        reason: &str,
        label: &'static str,
    ) -> Refusal {
        let offset = self
            .tokens
            .get(index)
            .map_or(self.text.len(), |t| t.start());
        refusal_at(self.text, offset, &construct, reason, label)
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    let one_line: String = text
        .split(lexer::is_whitespace)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if one_line.chars().count() <= MAX {
        one_line
    } else {
        format!("{}…", one_line.chars().take(MAX).collect::<String>())
    }
}

fn refusal_at(
    text: &str,
    offset: usize,
    construct: &str,
    reason: &str,
    label: &'static str,
) -> Refusal {
    let (line, column) = lexer::line_column(text, offset);
    Refusal {
        construct: construct.to_owned(),
        reason: reason.to_owned(),
        line,
        column,
        label,
    }
}

/// A replacement of a byte range of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub span: Range<usize>,
    pub replacement: String,
}

fn apply(text: &str, mut edits: Vec<Edit>) -> Option<String> {
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|e| e.span.start);
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for edit in edits {
        out.push_str(&text[at..edit.span.start]);
        out.push_str(&edit.replacement);
        at = edit.span.end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

#[cfg(test)]
mod tests;
