//! Prints how kqlgate reads each query, for the differential checks against Microsoft's own
//! parser (tests/kql-diff). Input: one JSON string per line (a query). Output: one JSON object per
//! line with
//! - `tokens`: `[{"kind", "start", "end", "value"?}]`, offsets in UTF-16 code units (as
//!   JavaScript counts them) — or `error` and `offset` when the lexer refuses the text;
//! - `guard`: the guard's verdict for tenant `11111111-1111-1111-1111-111111111111` (alias
//!   `Samples`) as a viewer: `{"allowed": true}` or `{"allowed": false, "refusal", "label"}`.

use std::io::{BufRead, Write};

use kqlgate::kql::lexer::{lex, value, TokenKind};
use kqlgate::kql::{guard, Options, Role, Scope};
use serde_json::{json, Value};

const DATABASE: &str = "11111111-1111-1111-1111-111111111111";

fn utf16_offset(text: &str, byte: usize) -> usize {
    text[..byte].encode_utf16().count()
}

fn tokens(text: &str) -> Value {
    match lex(text) {
        Err(error) => json!({"error": error.message, "offset": utf16_offset(text, error.offset)}),
        Ok(tokens) => {
            let tokens: Vec<_> = tokens
                .iter()
                .map(|token| {
                    let kind = match token.kind {
                        TokenKind::Ident => "ident",
                        TokenKind::Bracketed => "bracketed",
                        TokenKind::Str => "string",
                        TokenKind::Number => "number",
                        TokenKind::Punct | TokenKind::DotDot => "punct",
                        TokenKind::Comment => "comment",
                        TokenKind::Directive => "directive",
                    };
                    let decoded = matches!(
                        token.kind,
                        TokenKind::Ident | TokenKind::Bracketed | TokenKind::Str
                    )
                    .then(|| value(text, token));
                    json!({
                        "kind": kind,
                        "start": utf16_offset(text, token.start()),
                        "end": utf16_offset(text, token.end()),
                        "value": decoded,
                    })
                })
                .collect();
            json!({ "tokens": tokens })
        }
    }
}

fn verdict(text: &str, scope: &Scope) -> Value {
    match guard(text, scope, Role::Viewer, Options::default()) {
        Ok(_) => json!({"allowed": true}),
        Err(refusal) => {
            json!({"allowed": false, "refusal": refusal.to_string(), "label": refusal.label})
        }
    }
}

fn main() {
    let names = [DATABASE.to_string(), "samples".to_string()];
    let scope = Scope {
        database: DATABASE,
        database_names: &names,
    };
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lock().lines() {
        let line = line.expect("stdin is readable");
        if line.trim().is_empty() {
            continue;
        }
        let text: String = serde_json::from_str(&line).expect("each line is a JSON string");
        let mut answer = tokens(&text);
        answer["guard"] = verdict(&text, &scope);
        writeln!(out, "{answer}").expect("stdout is writable");
    }
}
