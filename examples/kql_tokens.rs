//! Prints how kqlgate's KQL lexer reads each query, for the differential check against
//! Microsoft's own parser (tests/kql-diff). Input: one JSON string per line (a query). Output:
//! one JSON object per line: `{"tokens": [{"kind", "start", "end", "value"?}]}` with offsets in
//! UTF-16 code units (as JavaScript counts them), or `{"error", "offset"}`.

use std::io::{BufRead, Write};

use kqlgate::kql::lexer::{lex, TokenKind};
use serde_json::json;

fn utf16_offset(text: &str, byte: usize) -> usize {
    text[..byte].encode_utf16().count()
}

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.expect("stdin is readable");
        if line.trim().is_empty() {
            continue;
        }
        let text: String = serde_json::from_str(&line).expect("each line is a JSON string");
        let answer = match lex(&text) {
            Err(error) => {
                json!({"error": error.message, "offset": utf16_offset(&text, error.offset)})
            }
            Ok(tokens) => {
                let tokens: Vec<_> = tokens
                    .iter()
                    .map(|token| {
                        let (kind, value) = match &token.kind {
                            TokenKind::Ident {
                                name,
                                bracketed: false,
                            } => ("ident", Some(name.clone())),
                            TokenKind::Ident {
                                name,
                                bracketed: true,
                            } => ("bracketed", Some(name.clone())),
                            TokenKind::Str { value } => ("string", Some(value.clone())),
                            TokenKind::Number => ("number", None),
                            TokenKind::Punct(_) => ("punct", None),
                            TokenKind::Comment => ("comment", None),
                            TokenKind::Directive => ("directive", None),
                        };
                        json!({
                            "kind": kind,
                            "start": utf16_offset(&text, token.span.start),
                            "end": utf16_offset(&text, token.span.end),
                            "value": value,
                        })
                    })
                    .collect();
                json!({ "tokens": tokens })
            }
        };
        writeln!(out, "{answer}").expect("stdout is writable");
    }
}
