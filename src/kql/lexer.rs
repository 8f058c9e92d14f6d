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
//! - typed literals `datetime(…)`, `timespan(…)`, `guid(…)`… scanned raw up to `)`, as Kusto does;
//! - identifiers (letters, digits, `_`, `$`), numbers and timespans, punctuation, the range `..`;
//! - whitespace exactly as Kusto's `TextFacts.IsWhitespace` (U+00A0, U+200B, U+3000… included).
//!
//! Anything it cannot lex with certainty — an unterminated literal, an unknown escape, a
//! character KQL has no use for — is an error, so the guard refuses rather than guesses. It is a
//! single forward pass (linear in the input) and it never panics: all indexing is by `char`
//! boundaries. A token is 12 bytes: its kind and its span. The decoded value of a literal or a
//! bracketed name is made only when a rule asks for it ([`value`]), so lexing allocates nothing
//! but the token list, and that list is bounded by [`MAX_TOKENS`].

use std::borrow::Cow;
use std::ops::Range;

/// Tokens in one text, at most. A 50 KB dashboard query has about 10,000; this bounds the
/// guard's memory for a pathological text (1 MB of `(`) at 12 bytes a token.
pub const MAX_TOKENS: usize = 200_000;
/// Nesting of `(`, `[` and `{`, at most: far beyond any real query, and a bound on what Kusto's
/// own recursive parser is asked to take on.
pub const MAX_DEPTH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A plain identifier; its name is the text of its span.
    Ident,
    /// A bracketed name (`['…']`); [`value`] decodes it.
    Bracketed,
    /// A string literal; [`value`] decodes it.
    Str,
    /// A number, timespan, typed literal (`datetime(…)`) or raw GUID.
    Number,
    /// One punctuation character, or `=~` / `!~` (whose first character tells them apart).
    Punct,
    /// The range operator `..`.
    DotDot,
    /// `// …` to the end of the line.
    Comment,
    /// `# …` to the end of the line.
    Directive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    /// Byte offsets in the text (`u32`: texts are bounded far below 4 GiB by the body limit).
    start: u32,
    end: u32,
}

impl Token {
    pub fn span(&self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    pub fn start(&self) -> usize {
        self.start as usize
    }

    pub fn end(&self) -> usize {
        self.end as usize
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub message: String,
    /// Byte offset where the problem starts.
    pub offset: usize,
    /// The text breaks one of kqlgate's size limits, rather than being unreadable.
    pub over_limit: bool,
}

/// Punctuation KQL uses; any other character outside literals and comments is refused.
const PUNCTUATION: &[char] = &[
    '(', ')', '[', ']', '{', '}', ',', ';', ':', '.', '|', '=', '!', '<', '>', '+', '-', '*', '/',
    '%', '?',
];

/// Every token of `text`, comments included.
pub fn lex(text: &str) -> Result<Vec<Token>, LexError> {
    Lexer::new(text, true).run()
}

/// The tokens the guard's policies look at: comments left out (directives kept, to be refused).
pub fn lex_significant(text: &str) -> Result<Vec<Token>, LexError> {
    Lexer::new(text, false).run()
}

/// The meaning of a token: the decoded value of a string literal or bracketed name, the text of
/// anything else.
pub fn value<'t>(text: &'t str, token: &Token) -> Cow<'t, str> {
    let source = &text[token.span()];
    let mut decoded = String::new();
    let mut lexer = Lexer::new(source, false);
    let ok = match token.kind {
        TokenKind::Str => {
            if matches!(lexer.peek(), Some('h' | 'H')) {
                lexer.pos += 1;
            }
            lexer.literal(Some(&mut decoded)).is_ok()
        }
        TokenKind::Bracketed => {
            lexer.pos += 1; // `[`
            matches!(lexer.bracketed_name(Some(&mut decoded)), Ok(true))
        }
        _ => return Cow::Borrowed(source),
    };
    // The token was lexed from this very text, so decoding it again cannot fail.
    debug_assert!(ok, "re-decoding {source:?} failed");
    Cow::Owned(decoded)
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

/// Kusto's whitespace (`TextFacts.IsWhitespace`, read off Kusto.Language 12.4.1 for every UTF-16
/// code unit): tab, LF, FF, CR, space, and the Unicode spaces pasted from web pages. U+000B,
/// U+0085, U+2028 and U+2029 are not whitespace to Kusto (the last two end a comment).
pub fn is_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{180e}' | '\u{2000}'
            ..='\u{200b}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}'
    )
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

/// Timespan units Kusto accepts after a number (`TokenParser.TimespanSuffixes`).
const TIMESPAN_UNITS: &[&str] = &[
    "m",
    "min",
    "minute",
    "minutes",
    "s",
    "sec",
    "second",
    "seconds",
    "d",
    "day",
    "days",
    "h",
    "hr",
    "hrs",
    "hour",
    "hours",
    "ms",
    "milli",
    "millis",
    "millisec",
    "millisecond",
    "milliseconds",
    "micro",
    "micros",
    "microsec",
    "microsecond",
    "microseconds",
    "nano",
    "nanos",
    "nanosec",
    "nanosecond",
    "nanoseconds",
    "tick",
    "ticks",
];

/// What an unquoted raw value may hold; anything else (a quote, a comment, a bracket…) is
/// refused, as a raw scan and a token-by-token reading would disagree. Kusto's whitespace other
/// than line breaks (a tab or U+3000 pasted into `datetime(2024-01-01\t10:00)`) separates
/// nothing differently in either reading, so it is taken too.
fn is_raw_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '-' | ':' | '.' | '+' | '*' | ',' | '_')
        || is_raw_blank(c)
}

/// Whitespace inside a typed literal's parentheses: Kusto's whitespace, but not a line break,
/// which ends the raw scan (`TokenParser.ScanGoo`).
fn is_raw_blank(c: char) -> bool {
    is_whitespace(c) && !matches!(c, '\n' | '\r')
}

/// What a quoted raw value (`datetime("2015-01-01")`, as the docs write it) may hold between
/// its quotes: anything on one line but a quote, a backslash or `)`, so that the raw scan up to
/// `)` and a reading as a string literal end at the same place.
fn is_quoted_raw_value_char(c: char) -> bool {
    !matches!(
        c,
        '\'' | '"' | '\\' | ')' | '\n' | '\r' | '\u{2028}' | '\u{2029}'
    )
}

/// Whether the parentheses of a formerly raw keyword (`typeof(`, after its `(`), spread over
/// lines, read the same both ways (see [`FORMERLY_RAW_KEYWORDS`]):
/// ```text
/// | mv-expand Tags to typeof(
///     string)
/// | mv-apply v = Values to typeof(real // in metres
///     ) on (…)
/// ```
/// Raw-value characters, line breaks, and `//` comments that hold no `)`, up to the `)`. A raw
/// scan (to the first `)`, or to the line end when it stops there) then takes in nothing but
/// what the token reading also leaves out or reads as plain names, and ends where it does.
fn formerly_raw_over_lines(body: &str) -> bool {
    let mut rest = body;
    loop {
        let Some(c) = rest.chars().next() else {
            return false; // never closed
        };
        if c == ')' {
            return true;
        }
        if rest.starts_with("//") {
            let end = rest
                .find(['\n', '\r', '\u{2028}', '\u{2029}'])
                .unwrap_or(rest.len());
            let ended_by_newline = rest[end..].starts_with(['\n', '\r']);
            if rest[..end].contains(')') || !ended_by_newline {
                return false;
            }
            rest = &rest[end..];
        } else if is_raw_value_char(c) || c == '\n' || c == '\r' {
            rest = &rest[c.len_utf8()..];
        } else {
            return false;
        }
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

fn error<T>(message: impl Into<String>, offset: usize) -> Result<T, LexError> {
    Err(LexError {
        message: message.into(),
        offset,
        over_limit: false,
    })
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    tokens: Vec<Token>,
    keep_comments: bool,
    depth: usize,
    /// Inside a bracketed name (`['…']`), where `\0` is refused: a name has no use for NUL.
    in_name: bool,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str, keep_comments: bool) -> Lexer<'a> {
        Lexer {
            text,
            pos: 0,
            tokens: Vec::new(),
            keep_comments,
            depth: 0,
            in_name: false,
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn push(&mut self, kind: TokenKind, start: usize) -> Result<(), LexError> {
        if self.tokens.len() == MAX_TOKENS {
            return Err(LexError {
                message: format!("has more than {MAX_TOKENS} tokens, kqlgate's limit for a query"),
                offset: start,
                over_limit: true,
            });
        }
        self.tokens.push(Token {
            kind,
            start: start as u32,
            end: self.pos as u32,
        });
        Ok(())
    }

    fn run(mut self) -> Result<Vec<Token>, LexError> {
        if u32::try_from(self.text.len()).is_err() {
            return Err(LexError {
                message: "is too long".into(),
                offset: 0,
                over_limit: true,
            });
        }
        while let Some(c) = self.peek() {
            let start = self.pos;
            match c {
                c if is_whitespace(c) => self.pos += c.len_utf8(),
                '/' if self.rest().starts_with("//") => {
                    self.skip_to_line_end();
                    if self.keep_comments {
                        self.push(TokenKind::Comment, start)?;
                    }
                }
                '#' => {
                    self.skip_to_line_end();
                    self.push(TokenKind::Directive, start)?;
                }
                '[' => self.bracket(start)?,
                '=' | '!' if self.peek_at(1) == Some('~') => {
                    self.pos += 2;
                    self.push(TokenKind::Punct, start)?;
                }
                '.' if self.peek_at(1) == Some('.') => {
                    self.pos += 2;
                    self.push(TokenKind::DotDot, start)?;
                }
                // The case-insensitive operators `in~`, `!in~`, `has_any~`…: a `~` touching
                // the word before it is part of that operator, not the start of a `~~~` string.
                '~' if self.follows_word(start, "in") => {
                    self.pos += 1;
                    self.push(TokenKind::Punct, start)?;
                }
                _ if self.starts_literal() => {
                    self.literal(None)?;
                    self.push(TokenKind::Str, start)?;
                }
                c if c.is_ascii_hexdigit() && raw_guid_len(self.rest()).is_some() => {
                    self.pos += 36;
                    self.push(TokenKind::Number, start)?;
                }
                c if is_ident_start(c) => self.word(start)?,
                c if c.is_ascii_digit() => {
                    let kind = self.number_or_name();
                    self.push(kind, start)?;
                }
                c if PUNCTUATION.contains(&c) => {
                    self.nest(c, start)?;
                    self.pos += 1;
                    self.push(TokenKind::Punct, start)?;
                }
                c => {
                    return error(
                        format!("unexpected character {c:?} (U+{:04X})", c as u32),
                        start,
                    )
                }
            }
        }
        Ok(self.tokens)
    }

    /// Keeps count of open brackets, refusing nesting beyond [`MAX_DEPTH`].
    fn nest(&mut self, c: char, start: usize) -> Result<(), LexError> {
        match c {
            '(' | '[' | '{' => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(LexError {
                        message: format!(
                            "nests brackets more than {MAX_DEPTH} deep, kqlgate's limit for a query"
                        ),
                        offset: start,
                        over_limit: true,
                    });
                }
            }
            ')' | ']' | '}' => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        Ok(())
    }

    /// An identifier, or one of the words that start something else: a typed literal
    /// (`datetime(…)`) or an obfuscated string (`h'…'`).
    fn word(&mut self, start: usize) -> Result<(), LexError> {
        let name = self.identifier();
        if self.peek() == Some('$') {
            // `x$`: Kusto's lexer splits it, its parser reads one name; refuse.
            return error("`$` inside a name", self.pos);
        }
        if RAW_VALUE_KEYWORDS.contains(&name) && self.peek() == Some('(') {
            self.raw_value(start)?;
            self.push(TokenKind::Number, start)
        } else if FORMERLY_RAW_KEYWORDS.contains(&name) && self.peek() == Some('(') {
            let keyword_end = self.pos;
            if let Err(e) = self.raw_value(start) {
                if !formerly_raw_over_lines(&self.rest()[1..]) {
                    return Err(e);
                }
            }
            self.pos = keyword_end;
            self.push(TokenKind::Ident, start)
        } else if matches!(name, "h" | "H") && self.starts_literal() {
            self.literal(None)?;
            self.push(TokenKind::Str, start)
        } else {
            self.push(TokenKind::Ident, start)
        }
    }

    /// Whether the token just before `at` is the word `word`, touching it.
    fn follows_word(&self, at: usize, word: &str) -> bool {
        self.tokens.last().is_some_and(|t| {
            t.end() == at && t.kind == TokenKind::Ident && &self.text[t.span()] == word
        })
    }

    /// `keyword(raw value)`: the parentheses and what they hold, as one token. The value is
    /// either unquoted (`2020-01-01 10:00`) or one quoted string (`"2015-01-01"`).
    fn raw_value(&mut self, start: usize) -> Result<(), LexError> {
        let body = &self.rest()[1..];
        let end = match body.trim_start_matches(is_raw_blank).chars().next() {
            Some(quote @ ('\'' | '"')) => {
                let lead = body.len() - body.trim_start_matches(is_raw_blank).len();
                let inside = &body[lead + 1..];
                let close = inside.find(|c: char| !is_quoted_raw_value_char(c));
                match close {
                    Some(i) if inside[i..].starts_with(quote) => {
                        let after = lead + 1 + i + 1;
                        after
                            + (body[after..].len()
                                - body[after..].trim_start_matches(is_raw_blank).len())
                    }
                    _ => {
                        return error(
                            "typed literal holds a string kqlgate cannot read with certainty",
                            start,
                        )
                    }
                }
            }
            _ => match body.find(|c: char| !is_raw_value_char(c)) {
                Some(end) => end,
                None => return error("typed literal is never closed", start),
            },
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

    /// What a token starting with a digit is, tried in Kusto's order (`TokenParser`): a real
    /// (`1.5`, `1e6`, `1.`), a timespan (`1d`, `1.5h`), a long (`10`, `0x1F`), else a name that
    /// starts with digits (`1abc`, `3rdParty`). Each must not run into an identifier character.
    fn number_or_name(&mut self) -> TokenKind {
        let rest = self.rest().as_bytes();
        let len = real_len(rest)
            .or_else(|| timespan_len(rest))
            .or_else(|| long_len(rest));
        match len {
            Some(len) => {
                self.pos += len;
                TokenKind::Number
            }
            None => {
                let len = rest
                    .iter()
                    .position(|&b| !is_ident_char(b as char))
                    .unwrap_or(rest.len());
                self.pos += len;
                TokenKind::Ident
            }
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

    /// One literal (its `h` prefix, if any, already consumed), its value decoded into `value`
    /// when one is given.
    fn literal(&mut self, value: Option<&mut String>) -> Result<(), LexError> {
        let start = self.pos;
        let rest = self.rest();
        if let Some(fence) = ["```", "~~~"].into_iter().find(|f| rest.starts_with(f)) {
            let body = &rest[3..];
            let Some(end) = body.find(fence) else {
                return error(format!("multi-line string {fence} is never closed"), start);
            };
            if let Some(value) = value {
                value.push_str(&body[..end]);
            }
            self.pos += 3 + end + 3;
            return Ok(());
        }
        if let Some(quote_char) = rest.strip_prefix('@').and_then(|r| r.chars().next()) {
            self.pos += 1;
            return self.verbatim(quote_char, start, value);
        }
        let quote_char = rest.chars().next().unwrap_or('\'');
        self.quoted(quote_char, start, value)
    }

    /// `@'…'`: no escapes; a doubled quote is one quote; no line breaks.
    fn verbatim(
        &mut self,
        quote_char: char,
        start: usize,
        mut value: Option<&mut String>,
    ) -> Result<(), LexError> {
        self.pos += 1; // opening quote
        loop {
            let c = match self.peek() {
                None | Some('\n' | '\r') => return error("string literal is never closed", start),
                Some(c) => c,
            };
            self.pos += c.len_utf8();
            if c == quote_char {
                if self.peek() != Some(quote_char) {
                    return Ok(());
                }
                self.pos += 1;
            }
            if let Some(value) = value.as_deref_mut() {
                value.push(c);
            }
        }
    }

    /// `'…'` or `"…"` with backslash escapes; no line breaks.
    fn quoted(
        &mut self,
        quote_char: char,
        start: usize,
        mut value: Option<&mut String>,
    ) -> Result<(), LexError> {
        self.pos += 1;
        loop {
            let c = match self.peek() {
                None | Some('\n' | '\r') => return error("string literal is never closed", start),
                Some('\\') => {
                    let escape_at = self.pos;
                    self.pos += 1;
                    self.escape(escape_at)?
                }
                Some(c) => {
                    self.pos += c.len_utf8();
                    if c == quote_char {
                        return Ok(());
                    }
                    c
                }
            };
            if let Some(value) = value.as_deref_mut() {
                value.push(c);
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
            over_limit: false,
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
            // `\0` alone (`replace_string(s, "\0", "")`): Kusto's lexer and decoder both read
            // NUL when no digit follows (`ScanOctalCode`, `DecodeOctal`, whose digits are
            // `Char.IsDigit`); a digit after it is an octal sequence, refused below.
            '0' if !self.peek().is_some_and(char::is_numeric) => {
                if self.in_name {
                    return error("the escape \\0 (NUL) has no place in a name", escape_at);
                }
                0
            }
            // Kusto's lexer and its decoder disagree on these (`\\400`, `\\U00000041`), so
            // what the cluster would read is not certain: refuse them.
            'U' | '0'..='7' => {
                return error(
                    format!(
                        "the escape \\{c}… is ambiguous in Kusto; write the character or use \\u"
                    ),
                    escape_at,
                )
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
        if self.bracketed_name(None)? {
            self.push(TokenKind::Bracketed, start)
        } else {
            self.pos = after_bracket;
            self.nest('[', start)?;
            self.push(TokenKind::Punct, start)
        }
    }

    /// After `[`: joined literals and `]`, the name decoded into `name` when one is given.
    fn bracketed_name(&mut self, name: Option<&mut String>) -> Result<bool, LexError> {
        self.in_name = true;
        let found = self.bracketed_name_literals(name);
        self.in_name = false;
        found
    }

    fn bracketed_name_literals(&mut self, mut name: Option<&mut String>) -> Result<bool, LexError> {
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
            self.literal(name.as_deref_mut())?;
            literals += 1;
        }
        if literals > 0 && self.peek() == Some(']') {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Whitespace and `//` comments between the parts of a bracketed name.
    fn skip_blank(&mut self) {
        loop {
            match self.peek() {
                Some(c) if is_whitespace(c) => self.pos += c.len_utf8(),
                Some('/') if self.rest().starts_with("//") => self.skip_to_line_end(),
                _ => return,
            }
        }
    }
}

// === Numbers, as `TokenParser` scans them ===

fn digits_len(text: &[u8]) -> usize {
    text.iter().take_while(|b| b.is_ascii_digit()).count()
}

fn ends_clean(text: &[u8], len: usize) -> Option<usize> {
    let runs_on = text.get(len).is_some_and(|&b| is_ident_char(b as char));
    (!runs_on).then_some(len)
}

/// `e5`, `E-3`: the exponent's length, or 0.
fn exponent_len(text: &[u8]) -> usize {
    if !matches!(text.first(), Some(b'e' | b'E')) {
        return 0;
    }
    let sign = usize::from(matches!(text.get(1), Some(b'+' | b'-')));
    match digits_len(&text[1 + sign..]) {
        0 => 0,
        n => 1 + sign + n,
    }
}

/// `1.5`, `1.`, `1.5e3`, `1e6` (`ScanRealLiteral`); `1..2` is a long and a range.
fn real_len(text: &[u8]) -> Option<usize> {
    let mut len = digits_len(text);
    if text.get(len) == Some(&b'.')
        && (text.get(len + 1) != Some(&b'.') || text.get(len + 2) == Some(&b'.'))
    {
        len += 1;
        len += digits_len(&text[len..]);
        len += exponent_len(&text[len..]);
    } else {
        match exponent_len(&text[len..]) {
            0 => return None,
            n => len += n,
        }
    }
    ends_clean(text, len)
}

/// `1d`, `1.5h`, `10ms` (`ScanTimespanLiteral`): the longest unit that fits.
fn timespan_len(text: &[u8]) -> Option<usize> {
    let mut len = digits_len(text);
    if text.get(len) == Some(&b'.') {
        let fraction = digits_len(&text[len + 1..]);
        if fraction > 0 {
            len += 1 + fraction;
        }
    }
    let unit = TIMESPAN_UNITS
        .iter()
        .filter(|unit| text[len..].starts_with(unit.as_bytes()))
        .map(|unit| unit.len())
        .max()?;
    ends_clean(text, len + unit)
}

/// `10`, `0x1F` (`ScanLongLiteral`).
fn long_len(text: &[u8]) -> Option<usize> {
    if text.starts_with(b"0x") || text.starts_with(b"0X") {
        let hex = text[2..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if hex > 0 {
            if let Some(len) = ends_clean(text, 2 + hex) {
                return Some(len);
            }
        }
    }
    ends_clean(text, digits_len(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<(TokenKind, String)> {
        lex(text)
            .unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
            .iter()
            .map(|t| (t.kind, value(text, t).into_owned()))
            .collect()
    }

    fn kinds(text: &str) -> Vec<TokenKind> {
        tokens(text).into_iter().map(|(k, _)| k).collect()
    }

    fn strings(text: &str) -> Vec<String> {
        tokens(text)
            .into_iter()
            .filter(|(k, _)| *k == TokenKind::Str)
            .map(|(_, v)| v)
            .collect()
    }

    fn ident(name: &str) -> (TokenKind, String) {
        (TokenKind::Ident, name.into())
    }

    fn bracketed(name: &str) -> (TokenKind, String) {
        (TokenKind::Bracketed, name.into())
    }

    fn refused(text: &str) -> LexError {
        match lex(text) {
            Err(e) => e,
            Ok(tokens) => panic!("{text:?} should not lex: {tokens:?}"),
        }
    }

    use TokenKind::{Comment, Directive, DotDot, Number, Punct, Str};

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
            [TokenKind::Ident, Comment, TokenKind::Ident]
        );
        assert_eq!(kinds("// only"), [Comment]);
        assert_eq!(
            kinds("a // c\rb"),
            [TokenKind::Ident, Comment, TokenKind::Ident]
        );
        assert_eq!(kinds("#connect x\nT"), [Directive, TokenKind::Ident]);
        assert_eq!(
            kinds("T | where x == 1 # trailing"),
            [
                TokenKind::Ident,
                Punct,
                TokenKind::Ident,
                TokenKind::Ident,
                Punct,
                Punct,
                Number,
                Directive
            ]
        );
        // The guard's view leaves comments out.
        assert_eq!(lex_significant("a // c\nb").unwrap().len(), 2);
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
            ("[\u{a0}'nbsp'\u{3000}]", "nbsp"),
        ];
        for (text, name) in cases {
            assert_eq!(tokens(text), [bracketed(name)], "{text}");
        }
    }

    #[test]
    fn brackets_that_are_not_names_stay_punctuation() {
        assert_eq!(
            kinds("dynamic(['a', 'b'])"),
            [
                TokenKind::Ident,
                Punct,
                Punct,
                Str,
                Punct,
                Str,
                Punct,
                Punct
            ]
        );
        assert_eq!(kinds("x[0]"), [TokenKind::Ident, Punct, Number, Punct]);
    }

    #[test]
    fn identifiers_numbers_and_operators() {
        assert_eq!(tokens("$left"), [ident("$left")]);
        assert_eq!(tokens("_x1"), [ident("_x1")]);
        assert_eq!(kinds("10ms 1.5 1e-6 1d 0x1F 2micros 1."), vec![Number; 7]);
        assert_eq!(tokens("1.database")[2], ident("database"));
        assert_eq!(tokens("x =~ 'a'")[1], (Punct, "=~".into()));
        assert_eq!(tokens("x !~ 'a'")[1], (Punct, "!~".into()));
        // `=~` then a fence: the operator is taken first, as Kusto's longest-match does.
        assert_eq!(strings("x =~~~~a~~~"), ["a"]);
        assert_eq!(strings("x in~~~~a~~~"), ["a"]);
        assert_eq!(kinds("x in~ ('a')")[2], Punct);
        assert_eq!(tokens("h"), [ident("h")]);
        assert_eq!(kinds("hx'a'").len(), 2);
    }

    #[test]
    fn the_range_operator_is_one_token() {
        assert_eq!(
            kinds("between (a .. b)"),
            [
                TokenKind::Ident,
                Punct,
                TokenKind::Ident,
                DotDot,
                TokenKind::Ident,
                Punct
            ]
        );
        assert_eq!(kinds("1..2"), [Number, DotDot, Number]);
        assert_eq!(kinds("1...2"), [Number, DotDot, Number]);
        assert_eq!(kinds("x.y"), [TokenKind::Ident, Punct, TokenKind::Ident]);
    }

    #[test]
    fn unicode_whitespace_separates_tokens_as_in_kusto() {
        for space in [
            '\u{a0}', '\u{200b}', '\u{202f}', '\u{2000}', '\u{3000}', '\u{feff}', '\u{c}',
        ] {
            let text = format!("T{space}|{space}take{space}1");
            assert_eq!(
                kinds(&text),
                [TokenKind::Ident, Punct, TokenKind::Ident, Number],
                "{text:?}"
            );
        }
        for not_space in ['\u{b}', '\u{85}', '\u{2028}', '\u{2029}', '\u{200c}'] {
            refused(&format!("T{not_space}| take 1"));
        }
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
            "print d=datetime(\")\") | union database('o').T //\")",
            "print d=datetime('a\\') | union database('o').T //')",
            "print d=datetime('a'b') | union database('o').T //')",
            "print g=guid(x\ny)",
            "print d=datetime(2024-01-01\u{2028}10:00)",
            "print d=datetime(2024-01-01\r10:00)",
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
            "datetime(\"2015-01-01\")",
            "datetime('2009-01-01')",
            "datetime( '2009-01-01 10:00' )",
            "datetime(2024-01-01\t10:00)",
            "datetime(\t\"2024-01-01\"\u{3000})",
            "timespan(\u{3000}1d\u{3000})",
            "datetime(2024-01-01\u{a0}10:00\u{200b})",
            "datetime(\"2015-01-01T10:00:00Z\")",
            "guid(74be27de-1e4e-49d9-b579-fe0b331d3642)",
            "timespan(1.02:03:04)",
            "real(nan)",
            "int(-1)",
            "74be27de-1e4e-49d9-b579-fe0b331d3642",
        ] {
            assert_eq!(kinds(text), [Number], "{text}");
        }
        // A raw GUID is taken whole, so what touches it is a separate token.
        assert_eq!(
            tokens("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaadatabase")[1],
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
        for text in [r"'\12'", r"'\101'", r"'\400'", r"'\U00000041'"] {
            refused(text);
        }
    }

    /// `\0` with no digit after it is NUL to Kusto's lexer and decoder alike: everyday in
    /// hunting queries (`replace_string(decoded, "\0", "")` strips UTF-16 padding). Followed by
    /// a digit (any Unicode digit, as `Char.IsDigit` counts them) it is an octal sequence the
    /// two read differently, and a name has no use for NUL: those stay refused.
    #[test]
    fn a_lone_backslash_zero_is_nul() {
        assert_eq!(strings(r#"replace_string(s, "\0", "")"#), ["\0", ""]);
        assert_eq!(strings(r"'a\0b\0'"), ["a\0b\0"]);
        assert_eq!(strings(r"h'\0 x'"), ["\0 x"]);
        for text in [
            r"'\00'",
            r"'\01'",
            r"'\08'",
            r"'\09'",
            "'\\0\u{663}'",
            r"T | project ['a\0']",
            r"['data\0base']('o').T",
        ] {
            refused(text);
        }
    }

    #[test]
    fn digits_start_numbers_timespans_or_names() {
        assert_eq!(tokens("1abc"), [ident("1abc")]);
        assert_eq!(tokens("3rdParty"), [ident("3rdParty")]);
        assert_eq!(tokens("1d2h"), [ident("1d2h")]);
        assert_eq!(tokens("1e"), [ident("1e")]);
        assert_eq!(tokens("100ns"), [ident("100ns")]);
        assert_eq!(tokens("1e5d"), [ident("1e5d")]);
        assert_eq!(tokens("0x1G"), [ident("0x1G")]);
        assert_eq!(
            kinds("10ms 1.5d 2hours 1e5 1.e5 1E-3 1min"),
            vec![Number; 7]
        );
        assert_eq!(
            tokens("1.5abc"),
            [(Number, "1".into()), (Punct, ".".into()), ident("5abc")]
        );
    }

    #[test]
    fn formerly_raw_keywords_lex_normally_when_both_readings_agree() {
        assert_eq!(
            tokens("typeof(a:string)")[..3],
            [ident("typeof"), (Punct, "(".into()), ident("a")]
        );
        // Kusto's whitespace separates nothing differently in either reading.
        assert_eq!(
            tokens("typeof( \u{2008}long\t)")[..3],
            [ident("typeof"), (Punct, "(".into()), ident("long")]
        );
        refused("print typeof('x) | union database('o').T //')");
        // Over lines: raw-value characters, line breaks and comments without `)` only.
        for text in [
            "T | mv-expand x to typeof(\n  real)",
            "T | mv-expand x to typeof(real // \"quoted\", it's\n)",
            "T | mv-expand x to typeof(\r\n\tlong // unit\r\n  )",
        ] {
            assert_eq!(
                tokens(text)[7..9],
                [ident("typeof"), (Punct, "(".into())],
                "{text}"
            );
        }
        for text in [
            "print typeof(real // ) | union database('o').T\n)",
            "print typeof(real, ```\n) | union database('o').T //```)",
            "print typeof(real // comment\u{2028}) | union database('o').T",
            "print typeof(real // never closed",
            "print typeof(\nreal",
        ] {
            refused(text);
        }
        refused("print uuid(// ) database('o')\n)");
    }

    #[test]
    fn limits_bound_the_token_list() {
        let deep = "(".repeat(MAX_DEPTH + 1);
        assert!(refused(&deep).over_limit);
        assert!(lex(&"(".repeat(MAX_DEPTH)).is_ok());
        let wide = "a ".repeat(MAX_TOKENS + 1);
        let error = refused(&wide);
        assert!(
            error.over_limit && error.message.contains("200000"),
            "{error:?}"
        );
        assert_eq!(std::mem::size_of::<Token>(), 12);
    }

    #[test]
    fn spans_cover_the_source_text() {
        let text = "T | where s == h@'x' // c\n| take 1";
        let tokens = lex(text).unwrap();
        let literal = tokens.iter().find(|t| t.kind == Str).unwrap();
        assert_eq!(&text[literal.span()], "h@'x'");
        let comment = tokens.iter().find(|t| t.kind == Comment).unwrap();
        assert_eq!(&text[comment.span()], "// c");
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
            "datetime( '",
            "datetime('a",
            "aaaaaaaa-",
            "0x",
            "1.",
            "..",
            "...",
        ];
        for text in samples {
            if let Ok(tokens) = lex(text) {
                for token in &tokens {
                    let _ = value(text, token);
                }
            }
        }
    }
}
