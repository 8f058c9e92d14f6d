// Surface variation: the query is split into tokens by Kusto.Language's own lexer and the
// whitespace between tokens is rewritten — line breaks in odd places, `//` comments at line
// ends and on lines of their own, tabs, form feeds and Unicode whitespace (U+00A0, U+200B,
// U+202F, U+2000–U+200A, U+3000, U+FEFF, U+1680, U+205F). Only trivia changes: a token's text
// (names, literals, datetime(…), guid(…)) is never touched, nor the inside of dynamic(…)
// literals and bracketed names.

import { K, kindName } from '../kusto.mjs';

const UNICODE_SPACES = [0x00a0, 0x200b, 0x202f, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006,
  0x2007, 0x2008, 0x2009, 0x200a, 0x3000, 0xfeff, 0x1680, 0x205f, 0x000c].map((c) => String.fromCharCode(c));
const COMMENTS = ['note', 'filter first', 'TODO: tune', 'see runbook', 'keys', 'ok', 'per day', 'größe', 'naïve café',
  'x | y', "it's fine", '"quoted"', 'database("Fabrikam") is not used', 'tabs\tinside', '日本語'];

/** Tokens between which added whitespace cannot change the lexing. */
const SAFE = new Set(['OpenParenToken', 'CloseParenToken', 'CommaToken', 'BarToken', 'SemicolonToken',
  'EqualToken', 'EqualEqualToken', 'BangEqualToken', 'LessThanToken', 'GreaterThanToken',
  'LessThanOrEqualToken', 'GreaterThanOrEqualToken', 'OpenBraceToken', 'CloseBraceToken', 'PlusToken',
  'SlashToken', 'EqualTildeToken', 'BangTildeToken', 'DotDotToken']);

function comment(rng) {
  return `//${rng.chance(0.8) ? ' ' : ''}${rng.pick(COMMENTS)}`;
}

function unicodeSpace(rng) {
  const u = rng.pick(UNICODE_SPACES);
  return rng.weighted([[4, u], [3, ` ${u}`], [2, `${u} `], [1, `${u}${rng.pick(UNICODE_SPACES)}`]]);
}

const indent = (rng) => rng.pick(['', ' ', '    ', '\t', '  ']);

/** New trivia for one gap between tokens. */
function variant(rng, atLineEnd) {
  return rng.weighted([
    [14, () => `\n${indent(rng)}`],
    [12, () => ` ${comment(rng)}\n${indent(rng)}`],
    [4, () => `\n${indent(rng)}${comment(rng)}\n${indent(rng)}`],
    [16, () => unicodeSpace(rng)],
    [5, () => rng.pick(['  ', '\t', ' \t '])],
    [2, () => (atLineEnd ? '\r\n' : '\n')],
    [1, () => '\f'],
  ]);
}

/** `text` with varied whitespace between its tokens; `level` is the share of gaps changed. */
export function surface(rng, text, level = 0.15) {
  const tokens = K.Parsing.TokenParser.ParseTokens(text, null);
  const out = [];
  let prev = null;
  let dynamicDepth = 0;
  let depth = 0;
  for (let i = 0; i < tokens.length; i++) {
    const tok = tokens[i];
    const kind = kindName(tok.Kind);
    let trivia = tok.Trivia;
    if (kind === 'OpenParenToken') depth++;
    const inside = dynamicDepth > 0 || prev === 'DynamicKeyword' || prev === 'OpenBracketToken' || kind === 'CloseBracketToken';
    const isEnd = kind === 'EndOfTextToken';
    if (i > 0 && !isEnd && !inside && rng.chance(level)) {
      if (/^[ ]+$/.test(trivia)) trivia = variant(rng, false);
      // Not next to a minus: graph patterns (a)-[e]->(b) and --> are runs of glued tokens.
      else if (trivia === '' && (SAFE.has(kind) || SAFE.has(prev)) && kind !== 'MinusToken' && prev !== 'MinusToken' && rng.chance(0.5)) trivia = variant(rng, false);
      else if (/^\n[ ]*$/.test(trivia) && rng.chance(0.5)) trivia = ` ${comment(rng)}${trivia}`;
    }
    if (isEnd && rng.chance(level / 3)) trivia = ` ${comment(rng)}`;
    out.push(trivia, tok.Text);
    if (prev === 'DynamicKeyword' && kind === 'OpenParenToken') dynamicDepth = depth;
    if (kind === 'CloseParenToken') {
      if (dynamicDepth === depth) dynamicDepth = 0;
      depth--;
    }
    prev = kind;
  }
  return out.join('');
}
