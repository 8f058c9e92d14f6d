//! A KQL lexer that sees query text the way Kusto's own lexer does (`Kusto.Language`
//! `Parser/TokenParser.cs`), for the one purpose of the isolation guard: knowing with certainty
//! where string literals, comments, directives and names begin and end, and what each literal
//! and bracketed name *means* after escapes are decoded.
//!
//! - `'…'` and `"…"` with backslash escapes; a raw line break ends (and so breaks) them;
//! - verbatim `@'…'` / `@"…"`, where a doubled quote stands for one quote;
//! - multi-line ```` ```…``` ```` and `~~~…~~~`;
//! - the `h`/`H` obfuscation prefix on every form of literal;
//! - `//` comments to the end of the line, `#` directives to the end of the line;
//! - bracketed names `['…']` / `["…"]`, whose inside may be any literal form, joined;
//! - identifiers (letters, digits, `_`, `$`), numbers, and punctuation.
//!
//! Anything it cannot lex with certainty — an unterminated literal, an unknown escape, a
//! character KQL has no use for — is an error, so the guard refuses rather than guesses. It is a
//! single forward pass (linear in the input) and it never panics: all indexing is by `char`
//! boundaries found through `char_indices`-style scanning.

use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// A name: a plain identifier, or a bracketed name (`['…']`) with its decoded text.
    Ident { name: String, bracketed: bool },
    /// A string literal, escapes decoded.
    Str { value: String },
    /// A number, timespan or other token starting with a digit (`10`, `1.5`, `1d`, `1e6`).
    Number,
    /// One punctuation character; `=~` and `!~` are kept together as two-character operators.
    Punct(char),
    /// `// …` to the end of the line.
    Comment,
    /// `# …` to the end of the line.
    Directive,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    /// Byte range in the text.
    pub span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub message: String,
    /// Byte offset where the problem starts.
    pub offset: usize,
}

/// Punctuation KQL uses; any other character outside literals and comments is refused.
const PUNCTUATION: &[char] = &[
    '(', ')', '[', ']', '{', '}', ',', ';', ':', '.', '|', '=', '!', '<', '>', '+', '-', '*', '/',
    '%', '?',
];

pub fn lex(text: &str) -> Result<Vec<Token>, LexError> {
    let mut lexer = Lexer {
        text,
        pos: 0,
        tokens: Vec::new(),
    };
    lexer.run()?;
    Ok(lexer.tokens)
}

/// 1-based line and column (in characters) of a byte offset, for messages.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    tokens: Vec<Token>,
}

fn error<T>(message: impl Into<String>, offset: usize) -> Result<T, LexError> {
    Err(LexError {
        message: message.into(),
        offset,
    })
}

/// Kusto's identifiers are ASCII (`TextFacts.IsLetter`); any other character outside a literal
/// or comment is refused, since older Kusto versions read Unicode letters differently.
fn is_ident_start(c: char) -> bool {
    c == '_' || c == '$' || c.is_ascii_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Type keywords whose parenthesised value Kusto scans raw, up to `)` (`TokenParser.ScanGoo`):
/// `datetime(2020-01-01)` is one token, whatever the parentheses hold.
const RAW_VALUE_KEYWORDS: &[&str] = &[
    "long", "int64", "int", "int32", "real", "double", "decimal", "bool", "datetime", "date",
    "time", "timespan", "guid",
];

/// Keywords older Kusto versions also scanned raw. Today's lexer reads their parentheses as
/// ordinary tokens, so kqlgate does too — but only when both readings agree, that is when the
/// parentheses hold nothing a raw scan would swallow differently.
const FORMERLY_RAW_KEYWORDS: &[&str] = &["typeof", "uuid", "uniqueid"];

/// Timespan units Kusto accepts after a number (`1d`, `10ms`, `2.5hours`).
const TIMESPAN_UNITS: &[&str] = &[
    "d",
    "day",
    "days",
    "h",
    "hr",
    "hrs",
    "hour",
    "hours",
    "m",
    "min",
    "minute",
    "minutes",
    "s",
    "sec",
    "second",
    "seconds",
    "ms",
    "milli",
    "millis",
    "millisec",
    "millisecond",
    "milliseconds",
    "microsec",
    "microsecond",
    "microseconds",
    "tick",
    "ticks",
];

/// What a raw value may hold; anything else (a quote, a comment, a bracket…) is refused, as
/// the two lexers would read it differently.
fn is_raw_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | ':' | '.' | '+' | '*' | ',' | '_')
}

fn ident_kind(name: &str) -> TokenKind {
    TokenKind::Ident {
        name: name.to_owned(),
        bracketed: false,
    }
}

/// `8-4-4-4-12` hex digits: Kusto's raw GUID token, taken before identifiers and numbers.
fn raw_guid_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.len() < 36 {
        return None;
    }
    let ok = (0..36).all(|i| match i {
        8 | 13 | 18 | 23 => bytes[i] == b'-',
        _ => bytes[i].is_ascii_hexdigit(),
    });
    ok.then_some(36)
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn push(&mut self, kind: TokenKind, start: usize) {
        self.tokens.push(Token {
            kind,
            span: start..self.pos,
        });
    }

    fn run(&mut self) -> Result<(), LexError> {
        while let Some(c) = self.peek() {
            let start = self.pos;
            match c {
                ' ' | '\t' | '\n' | '\r' => self.pos += 1,
                '/' if self.rest().starts_with("//") => {
                    self.skip_to_line_end();
                    self.push(TokenKind::Comment, start);
                }
                '#' => {
                    self.skip_to_line_end();
                    self.push(TokenKind::Directive, start);
                }
                '[' => self.bracket(start)?,
                '=' | '!' if self.peek_at(1) == Some('~') => {
                    self.pos += 2;
                    self.push(TokenKind::Punct(c), start);
                }
                // The case-insensitive operators `in~`, `!in~`, `has_any~`…: a `~` touching
                // the word before it is part of that operator, not the start of a `~~~` string.
                '~' if self.follows_word(start) => {
                    self.pos += 1;
                    self.push(TokenKind::Punct('~'), start);
                }
                _ if self.starts_literal() => {
                    let value = self.literal()?;
                    self.push(TokenKind::Str { value }, start);
                }
                c if c.is_ascii_hexdigit() && raw_guid_len(self.rest()).is_some() => {
                    self.pos += 36;
                    self.push(TokenKind::Number, start);
                }
                c if is_ident_start(c) => {
                    let name = self.identifier();
                    if self.peek() == Some('$') {
                        // `x$`: Kusto's lexer splits it, its parser reads one name; refuse.
                        return error("`$` inside a name", self.pos);
                    }
                    if RAW_VALUE_KEYWORDS.contains(&name) && self.peek() == Some('(') {
                        self.raw_value(start)?;
                        self.push(TokenKind::Number, start);
                    } else if FORMERLY_RAW_KEYWORDS.contains(&name) && self.peek() == Some('(') {
                        let keyword_end = self.pos;
                        self.raw_value(start)?;
                        self.pos = keyword_end;
                        self.push(ident_kind(name), start);
                    } else if matches!(name, "h" | "H") && self.starts_literal() {
                        let value = self.literal()?;
                        self.push(TokenKind::Str { value }, start);
                    } else {
                        self.push(ident_kind(name), start);
                    }
                }
                c if c.is_ascii_digit() => {
                    let kind = self.number_or_name(start);
                    self.push(kind, start);
                }
                c if PUNCTUATION.contains(&c) => {
                    self.pos += 1;
                    self.push(TokenKind::Punct(c), start);
                }
                c => {
                    return error(
                        format!("unexpected character {c:?} (U+{:04X})", c as u32),
                        start,
                    )
                }
            }
        }
        Ok(())
    }

    /// Whether a `~` at `at` completes the keyword `in~` (also in `!in~`).
    fn follows_word(&self, at: usize) -> bool {
        self.tokens.last().is_some_and(|t| {
            t.span.end == at
                && matches!(&t.kind, TokenKind::Ident { name, bracketed: false } if name == "in")
        })
    }

    /// `keyword(raw value)`: the parentheses and what they hold, as one token.
    fn raw_value(&mut self, start: usize) -> Result<(), LexError> {
        let body = &self.rest()[1..];
        let Some(end) = body.find(|c: char| !is_raw_value_char(c)) else {
            return error("typed literal is never closed", start);
        };
        if !body[end..].starts_with(')') {
            return error(
                "typed literal holds characters kqlgate cannot read with certainty",
                self.pos + 1 + end,
            );
        }
        self.pos += 1 + end + 1;
        Ok(())
    }

    /// Kusto's line breaks (`TextFacts.IsLineBreakStart`) include U+2028 and U+2029, which
    /// end a comment; outside comments and literals they are then refused as characters.
    fn skip_to_line_end(&mut self) {
        let len = self
            .rest()
            .find(['\n', '\r', '\u{2028}', '\u{2029}'])
            .unwrap_or(self.rest().len());
        self.pos += len;
    }

    fn identifier(&mut self) -> &'a str {
        let start = self.pos;
        let mut chars = self.rest().char_indices();
        chars.next(); // the start character, already checked
        let end = chars
            .find(|&(_, c)| !is_ident_char(c))
            .map_or(self.rest().len(), |(i, _)| i);
        self.pos += end;
        &self.text[start..self.pos]
    }

    /// A number (`10`, `1.5`, `1e6`, `1.e5`), a timespan (`1d`, `10ms`, `1.5h`), or a name
    /// that starts with digits (`1abc`, `3rdParty`), as Kusto's lexer tells them apart.
    fn number_or_name(&mut self, start: usize) -> TokenKind {
        self.digits();
        let integer_end = self.pos;
        let mut fraction = false;
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
            self.digits();
            fraction = true;
        } else if self.peek() == Some('.') && self.exponent_at(1) > 0 {
            self.pos += 1; // `1.e5`
            fraction = true;
        }
        self.pos += self.exponent_at(0);
        let suffix_start = self.pos;
        while self.peek().is_some_and(is_ident_char) {
            self.pos += 1;
        }
        let suffix = &self.text[suffix_start..self.pos];
        if suffix.is_empty() || TIMESPAN_UNITS.contains(&suffix) {
            return TokenKind::Number;
        }
        if fraction {
            // `1.5abc` is `1`, `.`, `5abc` to Kusto.
            self.pos = integer_end;
            return TokenKind::Number;
        }
        TokenKind::Ident {
            name: self.text[start..self.pos].to_owned(),
            bracketed: false,
        }
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    /// The length of an exponent (`e5`, `E-3`) starting `n` characters ahead, or 0.
    fn exponent_at(&self, n: usize) -> usize {
        if !matches!(self.peek_at(n), Some('e' | 'E')) {
            return 0;
        }
        let sign = usize::from(matches!(self.peek_at(n + 1), Some('+' | '-')));
        let mut len = 1 + sign;
        while self.peek_at(n + len).is_some_and(|c| c.is_ascii_digit()) {
            len += 1;
        }
        if len > 1 + sign {
            len
        } else {
            0
        }
    }

    /// Whether a string literal (without `h` prefix) starts here.
    fn starts_literal(&self) -> bool {
        let rest = self.rest();
        rest.starts_with(['\'', '"'])
            || rest.starts_with("@'")
            || rest.starts_with("@\"")
            || rest.starts_with("```")
            || rest.starts_with("~~~")
    }

    /// One literal (its `h` prefix, if any, already consumed); returns its value.
    fn literal(&mut self) -> Result<String, LexError> {
        let start = self.pos;
        let rest = self.rest();
        if let Some(fence) = ["```", "~~~"].into_iter().find(|f| rest.starts_with(f)) {
            let body = &rest[3..];
            let Some(end) = body.find(fence) else {
                return error(format!("multi-line string {fence} is never closed"), start);
            };
            self.pos += 3 + end + 3;
            return Ok(body[..end].to_owned());
        }
        if let Some(quote_char) = rest.strip_prefix('@').and_then(|r| r.chars().next()) {
            self.pos += 1;
            return self.verbatim(quote_char, start);
        }
        let quote_char = rest.chars().next().unwrap_or('\'');
        self.quoted(quote_char, start)
    }

    /// `@'…'`: no escapes; a doubled quote is one quote; no line breaks.
    fn verbatim(&mut self, quote_char: char, start: usize) -> Result<String, LexError> {
        self.pos += 1; // opening quote
        let mut value = String::new();
        loop {
            match self.peek() {
                None | Some('\n' | '\r') => return error("string literal is never closed", start),
                Some(c) if c == quote_char => {
                    self.pos += 1;
                    if self.peek() == Some(quote_char) {
                        value.push(quote_char);
                        self.pos += 1;
                    } else {
                        return Ok(value);
                    }
                }
                Some(c) => {
                    value.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// `'…'` or `"…"` with backslash escapes; no line breaks.
    fn quoted(&mut self, quote_char: char, start: usize) -> Result<String, LexError> {
        self.pos += 1;
        let mut value = String::new();
        loop {
            match self.peek() {
                None | Some('\n' | '\r') => return error("string literal is never closed", start),
                Some('\\') => {
                    let escape_at = self.pos;
                    self.pos += 1;
                    value.push(self.escape(escape_at)?);
                }
                Some(c) => {
                    self.pos += c.len_utf8();
                    if c == quote_char {
                        return Ok(value);
                    }
                    value.push(c);
                }
            }
        }
    }

    /// The character an escape sequence stands for (the backslash is consumed).
    fn escape(&mut self, escape_at: usize) -> Result<char, LexError> {
        let Some(c) = self.peek() else {
            return error("string literal is never closed", escape_at);
        };
        self.pos += c.len_utf8();
        let simple = match c {
            '\\' => Some('\\'),
            '\'' => Some('\''),
            '"' => Some('"'),
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            _ => None,
        };
        if let Some(decoded) = simple {
            return Ok(decoded);
        }
        let malformed = || LexError {
            message: format!("malformed escape sequence \\{c}"),
            offset: escape_at,
        };
        let code = match c {
            'u' => {
                let unit = self.hex_digits(4).ok_or_else(malformed)?;
                if (0xDC00..0xE000).contains(&unit) {
                    return Err(malformed());
                }
                if (0xD800..0xDC00).contains(&unit) {
                    // A high surrogate must be followed by `\u` and a low one, as in UTF-16.
                    if !self.rest().starts_with("\\u") {
                        return Err(malformed());
                    }
                    self.pos += 2;
                    let low = self.hex_digits(4).ok_or_else(malformed)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(malformed());
                    }
                    0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    unit
                }
            }
            'x' => self.hex_digits(2).ok_or_else(malformed)?,
            // Kusto's lexer and its decoder disagree on these (`\\400`, `\\U00000041`), so
            // what the cluster would read is not certain: refuse them.
            'U' | '0'..='7' => {
                return Err(LexError {
                    message: format!(
                        "the escape \\{c}… is ambiguous in Kusto; write the character or use \\u"
                    ),
                    offset: escape_at,
                })
            }
            _ => return error(format!("unknown escape sequence \\{c}"), escape_at),
        };
        char::from_u32(code).ok_or_else(malformed)
    }

    /// Exactly `len` hex digits.
    fn hex_digits(&mut self, len: usize) -> Option<u32> {
        let digits = self.rest().get(..len)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += len;
        u32::from_str_radix(digits, 16).ok()
    }

    /// `[` starts a bracketed name when a literal (or joined literals) and `]` follow;
    /// otherwise it is punctuation (array and index syntax).
    fn bracket(&mut self, start: usize) -> Result<(), LexError> {
        self.pos += 1;
        let after_bracket = self.pos;
        if let Some(name) = self.bracketed_name()? {
            self.push(
                TokenKind::Ident {
                    name,
                    bracketed: true,
                },
                start,
            );
        } else {
            self.pos = after_bracket;
            self.push(TokenKind::Punct('['), start);
        }
        Ok(())
    }

    fn bracketed_name(&mut self) -> Result<Option<String>, LexError> {
        let mut name = String::new();
        let mut literals = 0;
        loop {
            self.skip_blank();
            let literal_start = self.pos;
            if self.rest().starts_with(['h', 'H']) {
                self.pos += 1;
                if !self.starts_literal() {
                    self.pos = literal_start;
                    break;
                }
            }
            if !self.starts_literal() {
                break;
            }
            name.push_str(&self.literal()?);
            literals += 1;
        }
        if literals > 0 && self.peek() == Some(']') {
            self.pos += 1;
            Ok(Some(name))
        } else {
            Ok(None)
        }
    }

    /// Whitespace and `//` comments between the parts of a bracketed name.
    fn skip_blank(&mut self) {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\n' | '\r') => self.pos += 1,
                Some('/') if self.rest().starts_with("//") => self.skip_to_line_end(),
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        lex(text)
            .unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    fn strings(text: &str) -> Vec<String> {
        kinds(text)
            .into_iter()
            .filter_map(|k| match k {
                TokenKind::Str { value } => Some(value),
                _ => None,
            })
            .collect()
    }

    fn ident(name: &str) -> TokenKind {
        TokenKind::Ident {
            name: name.into(),
            bracketed: false,
        }
    }

    fn bracketed(name: &str) -> TokenKind {
        TokenKind::Ident {
            name: name.into(),
            bracketed: true,
        }
    }

    fn refused(text: &str) -> LexError {
        match lex(text) {
            Err(e) => e,
            Ok(tokens) => panic!("{text:?} should not lex: {tokens:?}"),
        }
    }

    /// One line per case: the text and the decoded literal values it must yield.
    #[test]
    fn literal_forms_decode_as_kusto_reads_them() {
        let cases: &[(&str, &[&str])] = &[
            (r#"'abc'"#, &["abc"]),
            (r#""abc""#, &["abc"]),
            (r#"'it\'s'"#, &["it's"]),
            (r#""say \"hi\"""#, &["say \"hi\""]),
            (r#"'a\\b'"#, &["a\\b"]),
            (r#"'\n\t\r'"#, &["\n\t\r"]),
            (r#"'\u0041\x42'"#, &["AB"]),
            (r#"@'C:\path'"#, &["C:\\path"]),
            (r#"@"C:\path""#, &["C:\\path"]),
            (r#"@'it''s'"#, &["it's"]),
            (r#"@"say ""hi""""#, &["say \"hi\""]),
            (r#"h'secret'"#, &["secret"]),
            (r#"H"secret""#, &["secret"]),
            (r#"h@'sec\ret'"#, &["sec\\ret"]),
            ("```multi\nline```", &["multi\nline"]),
            ("~~~multi\n'line'~~~", &["multi\n'line'"]),
            ("h```hidden```", &["hidden"]),
            (r#"'a' "b" @'c'"#, &["a", "b", "c"]),
            (r#"'// not a comment'"#, &["// not a comment"]),
            (r##""# not a directive""##, &["# not a directive"]),
            (r#"'database(\"x\")'"#, &["database(\"x\")"]),
            ("'tab\tinside'", &["tab\tinside"]),
            ("'ünïcödé'", &["ünïcödé"]),
        ];
        for (text, expected) in cases {
            assert_eq!(strings(text), *expected, "{text}");
        }
    }

    #[test]
    fn comments_and_directives_run_to_the_end_of_the_line() {
        assert_eq!(
            kinds("a // database('x')\nb"),
            [ident("a"), TokenKind::Comment, ident("b")]
        );
        assert_eq!(kinds("// only"), [TokenKind::Comment]);
        assert_eq!(
            kinds("a // c\rb"),
            [ident("a"), TokenKind::Comment, ident("b")]
        );
        assert_eq!(kinds("#connect x\nT"), [TokenKind::Directive, ident("T")]);
        assert_eq!(
            kinds("T | where x == 1 # trailing"),
            [
                ident("T"),
                TokenKind::Punct('|'),
                ident("where"),
                ident("x"),
                TokenKind::Punct('='),
                TokenKind::Punct('='),
                TokenKind::Number,
                TokenKind::Directive
            ]
        );
    }

    #[test]
    fn bracketed_names_decode_every_literal_form() {
        let cases = [
            ("['My Table']", "My Table"),
            (r#"["My Table"]"#, "My Table"),
            ("[@'a\\b']", "a\\b"),
            ("[h'hidden']", "hidden"),
            ("['data' 'base']", "database"),
            ("[ 'spaced' ]", "spaced"),
            ("['a' // c\n 'b']", "ab"),
            ("[```x```]", "x"),
        ];
        for (text, name) in cases {
            assert_eq!(kinds(text), [bracketed(name)], "{text}");
        }
    }

    #[test]
    fn brackets_that_are_not_names_stay_punctuation() {
        assert_eq!(
            kinds("dynamic(['a', 'b'])"),
            [
                ident("dynamic"),
                TokenKind::Punct('('),
                TokenKind::Punct('['),
                TokenKind::Str { value: "a".into() },
                TokenKind::Punct(','),
                TokenKind::Str { value: "b".into() },
                TokenKind::Punct(']'),
                TokenKind::Punct(')'),
            ]
        );
        assert_eq!(
            kinds("x[0]"),
            [
                ident("x"),
                TokenKind::Punct('['),
                TokenKind::Number,
                TokenKind::Punct(']')
            ]
        );
    }

    #[test]
    fn identifiers_numbers_and_operators() {
        assert_eq!(kinds("$left"), [ident("$left")]);
        assert_eq!(kinds("_x1"), [ident("_x1")]);
        assert_eq!(kinds("10ms 1.5 1e-6 1d"), vec![TokenKind::Number; 4]);
        assert_eq!(
            kinds("1.database"),
            [TokenKind::Number, TokenKind::Punct('.'), ident("database")]
        );
        assert_eq!(
            kinds("x =~ 'a'"),
            [
                ident("x"),
                TokenKind::Punct('='),
                TokenKind::Str { value: "a".into() }
            ]
        );
        assert_eq!(
            kinds("x !~ 'a'"),
            [
                ident("x"),
                TokenKind::Punct('!'),
                TokenKind::Str { value: "a".into() }
            ]
        );
        // `=~` then a fence: the operator is taken first, as Kusto's longest-match does.
        assert_eq!(strings("x =~~~~a~~~"), ["a"]);
        assert_eq!(strings("x in~~~~a~~~"), ["a"]);
        assert_eq!(kinds("x in~ ('a')")[2], TokenKind::Punct('~'));
        assert_eq!(kinds("h"), [ident("h")]);
        assert_eq!(kinds("hx'a'").len(), 2);
    }

    #[test]
    fn uncertain_text_is_refused() {
        for text in [
            "'never closed",
            "\"never closed",
            "'line\nbreak'",
            "@'line\rbreak'",
            "```never closed",
            "~~~never closed",
            "'\\q'",
            "'\\u12'",
            "'\\xZZ'",
            "'\\",
            "a ` b",
            "a ~ b",
            "a & b",
            "a \\ b",
            "a @ b",
            "a\u{0}b",
            "a\u{a0}b",
            "a\u{200b}b",
            "a ^ b",
            "Straße",
            "ßdatabase('o')",
            "T // c\u{2028}| union database('o').T",
            "#x\u{2029}database('o')",
            "'\\uD83D'",
            "'\\uDE00'",
            "'\\U00110000'",
            "print d=datetime(//) | union database('o').T",
            "print d=datetime('2014) | union database('o').T //'",
            "print g=guid(x\ny)",
            "T | extend x$ = 1",
        ] {
            refused(text);
        }
    }

    #[test]
    fn typed_literals_and_raw_guids_are_single_tokens() {
        for text in [
            "datetime(2020-01-01)",
            "datetime(2020-01-01 10:00:00.123)",
            "guid(74be27de-1e4e-49d9-b579-fe0b331d3642)",
            "timespan(1.02:03:04)",
            "real(nan)",
            "int(-1)",
            "74be27de-1e4e-49d9-b579-fe0b331d3642",
        ] {
            assert_eq!(kinds(text), [TokenKind::Number], "{text}");
        }
        // A raw GUID is taken whole, so what touches it is a separate token.
        assert_eq!(
            kinds("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaadatabase")[1],
            ident("database")
        );
        // Only the exact lower-case keywords are typed literals.
        assert_eq!(kinds("Datetime(1)").len(), 4);
    }

    #[test]
    fn escapes_follow_kustos_rules() {
        assert_eq!(strings(r"'\uD83D\uDE00'"), ["\u{1F600}"]);
        assert_eq!(strings(r"'\x41\u0042'"), ["AB"]);
        // Octal and \U escapes are read differently by Kusto's lexer and decoder: refused.
        for text in [r"'\0'", r"'\12'", r"'\101'", r"'\400'", r"'\U00000041'"] {
            refused(text);
        }
    }

    #[test]
    fn digits_start_numbers_timespans_or_names() {
        assert_eq!(kinds("1abc"), [ident("1abc")]);
        assert_eq!(kinds("3rdParty"), [ident("3rdParty")]);
        assert_eq!(kinds("1d2h"), [ident("1d2h")]);
        assert_eq!(kinds("1e"), [ident("1e")]);
        assert_eq!(kinds("100ns"), [ident("100ns")]);
        assert_eq!(
            kinds("10ms 1.5d 2hours 1e5 1.e5 1E-3"),
            vec![TokenKind::Number; 6]
        );
        assert_eq!(
            kinds("1.5abc"),
            [TokenKind::Number, TokenKind::Punct('.'), ident("5abc")]
        );
    }

    #[test]
    fn formerly_raw_keywords_lex_normally_when_both_readings_agree() {
        assert_eq!(
            kinds("typeof(a:string)")[..3],
            [ident("typeof"), TokenKind::Punct('('), ident("a")]
        );
        refused("print typeof('x) | union database('o').T //')");
        refused("print uuid(// ) database('o')\n)");
    }

    #[test]
    fn spans_cover_the_source_text() {
        let text = "T | where s == h@'x' // c\n| take 1";
        let tokens = lex(text).unwrap();
        let literal = tokens
            .iter()
            .find(|t| matches!(t.kind, TokenKind::Str { .. }))
            .unwrap();
        assert_eq!(&text[literal.span.clone()], "h@'x'");
        let comment = tokens
            .iter()
            .find(|t| t.kind == TokenKind::Comment)
            .unwrap();
        assert_eq!(&text[comment.span.clone()], "// c");
    }

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let text = "let x = 1;\nT | where é == database('y')";
        let offset = text.find("database").unwrap();
        assert_eq!(line_column(text, offset), (2, 16));
        assert_eq!(line_column(text, 0), (1, 1));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let samples = [
            "\u{FFFF}",
            "'\\U0011FFFF'",
            "'\\uD800'",
            "[",
            "['",
            "['a'",
            "h",
            "@",
            "1e",
            "1e+",
            "datetime(",
            "aaaaaaaa-",
        ];
        for text in samples {
            let _ = lex(text);
        }
    }
}
