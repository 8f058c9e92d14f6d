// kqlgate's guard against Microsoft's own KQL parser, Kusto.Language (@kusto/language-service-next):
// the four checks of README.md, run by `run` (part of scripts/test).
//
//   1. catalogue  catalogue.mjs's check: every name Kusto.Language knows is classified in
//                 src/kql/catalogue.tsv (nothing missing, stale, duplicate or malformed).
//   2. lexer      over corpus.txt and corpus/*.kql: kqlgate's lexer (the kql_tokens example) and
//                 Microsoft's agree on every string literal (boundaries and decoded value),
//                 comment, directive and name; a text kqlgate refuses to lex is marked
//                 `%lex-refused`, and a marked text kqlgate lexes is a stale marker.
//   3. corpus     over corpus/*.kql: the semantic oracle (oracle.mjs) against the guard's verdict.
//                 Outside → the guard must refuse (an outside query allowed is always a
//                 failure); inside → the guard should allow, and an inside query it refuses (a
//                 false positive) must be listed in stricter.tsv with the reason. `%outside`
//                 must agree with the oracle. False positives ≤ 0.1 % of the inside queries.
//   4. generated  the same over generate.mjs's queries (env KQL_DIFF_GENERATED, default 10000;
//                 KQL_DIFF_SEED, default 1), in chunks of 1000 that worker threads start on at
//                 once and the main thread helps with after checks 1–3. An inside query refused
//                 counts towards the 0.1 % (stricter.tsv may list it); the generator's intent
//                 must agree with the oracle.
//
// Microsoft's view and the oracle's analysis of each text are kept in .cache/ between runs.
//
// Usage: node diff.mjs [1] [2] [3] [4]   (no argument: all four). Env: KQL_TOKENS_BIN (the
// kql_tokens binary), KQL_DIFF_GENERATED, KQL_DIFF_SEED, KQL_DIFF_WORKERS (worker threads for
// check 4), KQL_DIFF_CACHE=0 (no .cache/), KQL_DIFF_VERBOSE=1 (every note and listed case).
// Exit status: 0 every check passed; 1 a check failed; 2 a check could not run (parser not
// loadable, binary unusable, corpus malformed or too small).

import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, existsSync, mkdirSync, writeFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.KQL_TOKENS_BIN ?? join(here, '../../target/debug/examples/kql_tokens');
const VERBOSE = process.env.KQL_DIFF_VERBOSE === '1';
/** The most false positives a check accepts, as a share of its inside queries. */
const FP_LIMIT = 0.001;
const MIN_LEXER_CORPUS = 300;
const MIN_CORPUS = 1000;
/** Failures and listed cases printed per kind; the rest are counted (KQL_DIFF_VERBOSE=1: all). */
const SHOW = VERBOSE ? Infinity : 25;

class Fatal extends Error {}
const fatal = (message) => {
  throw new Fatal(message);
};

const q = (s) => JSON.stringify(s);
const seconds = (start) => Number(process.hrtime.bigint() - start) / 1e9;
const secs = (s) => (s < 10 ? s.toFixed(2) : s.toFixed(1));
const pct = (n, d) => (d === 0 ? 0 : (100 * n) / d);
/** The stable key of a query text in stricter.tsv: the first 16 hex digits of its SHA-256. */
export const queryKey = (text) => createHash('sha256').update(text, 'utf8').digest('hex').slice(0, 16);

// Loaded in main(): a broken installation is reported (exit 2), not an uncaught import error.
let K;
let kusto;

async function loadKusto() {
  try {
    kusto = await import('./kusto.mjs');
  } catch (e) {
    fatal(`cannot load Kusto.Language (run npm ci in ${here}): ${e?.stack ?? e}`);
  }
  K = kusto.K;
}

/** One check's outcome: detail lines, a one-line summary, failed or not, its time. */
class Check {
  constructor(number, name) {
    Object.assign(this, { number, name, lines: [], summary: '', failed: false, seconds: 0 });
    this.start = process.hrtime.bigint();
  }

  fail(message) {
    this.failed = true;
    this.lines.push(`FAIL ${message}`);
  }

  line(message) {
    this.lines.push(message);
  }

  /** Up to SHOW of `items`, each through `format`, then how many were left out. */
  list(items, format) {
    for (const item of items.slice(0, SHOW)) this.lines.push(format(item));
    if (items.length > SHOW) this.lines.push(`  … and ${items.length - SHOW} more (KQL_DIFF_VERBOSE=1 lists them)`);
  }

  done(summary) {
    this.summary = summary;
    this.seconds = seconds(this.start);
    return this.result();
  }

  result() {
    const { number, name, lines, summary, failed } = this;
    return { number, name, lines, summary, failed, seconds: this.seconds };
  }
}

// ---------------------------------------------------------------------------------------------
// The corpus (format: README.md, "Corpus format")

const MARKERS = new Set(['%outside', '%lex-refused']);

/** The queries of one corpus file: [{where, file, line, text, markers}]. */
function readCorpus(file) {
  const name = relative(here, file);
  const queries = [];
  let lines = [];
  let firstLine = 1;
  const flush = (lineNo) => {
    const start = firstLine;
    const block = lines;
    lines = [];
    firstLine = lineNo + 1;
    const markers = new Set();
    const body = [];
    for (const l of block) {
      if (l.startsWith('%#')) continue;
      if (MARKERS.has(l.trimEnd())) markers.add(l.trimEnd());
      else if (l.startsWith('%') && !l.startsWith('%json ')) fatal(`${name}:${start}: unknown % line ${q(l)}`);
      else body.push(l);
    }
    // Drop blank lines around the query, keep everything in between verbatim.
    while (body.length && body[0].trim() === '') body.shift();
    while (body.length && body[body.length - 1].trim() === '') body.pop();
    if (body.length === 0) {
      if (markers.size) fatal(`${name}:${start}: markers without a query`);
      return;
    }
    let text;
    if (body.some((l) => l.startsWith('%json '))) {
      if (body.length !== 1) fatal(`${name}:${start}: a %json line must be the only line of its query`);
      try {
        text = JSON.parse(body[0].slice(6));
      } catch (e) {
        fatal(`${name}:${start}: bad %json line: ${e.message}`);
      }
      if (typeof text !== 'string') fatal(`${name}:${start}: %json must hold a string`);
    } else {
      text = body.join('\n');
    }
    queries.push({ where: `${name}:${start}`, file: name, line: start, text, markers });
  };
  const all = readFileSync(file, 'utf8').split('\n');
  if (all.length && all[all.length - 1] === '') all.pop();
  all.forEach((l, i) => {
    if (l === '%%') flush(i + 1);
    else {
      if (lines.length === 0) firstLine = i + 1;
      lines.push(l);
    }
  });
  flush(all.length);
  return queries;
}

function corpusFiles() {
  const dir = join(here, 'corpus');
  return readdirSync(dir).filter((f) => f.endsWith('.kql')).sort().map((f) => join(dir, f));
}

// ---------------------------------------------------------------------------------------------
// kqlgate: the kql_tokens example, one process for many texts

function kqlgate(texts) {
  if (!existsSync(BIN)) fatal(`kqlgate's kql_tokens binary not found at ${BIN} (cargo build --example kql_tokens)`);
  const input = texts.map((t) => JSON.stringify(t)).join('\n') + '\n';
  const run = spawnSync(BIN, [], { input, encoding: 'utf8', maxBuffer: 1 << 30 });
  if (run.error) fatal(`cannot run ${BIN}: ${run.error.message}`);
  if (run.status !== 0) fatal(`${BIN} exited with ${run.status}: ${run.stderr}`);
  const lines = run.stdout.split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== texts.length) fatal(`${BIN} answered ${lines.length} lines for ${texts.length} texts`);
  return lines.map((l, i) => {
    let answer;
    try {
      answer = JSON.parse(l);
    } catch {
      fatal(`${BIN} answered a non-JSON line for text ${i + 1}: ${l}`);
    }
    const guard = answer.guard;
    if (!guard || typeof guard.allowed !== 'boolean' || (!guard.allowed && typeof guard.label !== 'string')) {
      fatal(`${BIN} answered no guard verdict for text ${i + 1}: ${l}`);
    }
    if (!('error' in answer) && !Array.isArray(answer.tokens)) fatal(`${BIN} answered neither tokens nor error for text ${i + 1}`);
    return answer;
  });
}

// ---------------------------------------------------------------------------------------------
// Check 1: the catalogue

async function catalogueCheck() {
  const check = new Check(1, 'catalogue');
  const { check: compareTable, DEFAULT_TABLE } = await import('./catalogue.mjs');
  let result;
  try {
    result = compareTable(DEFAULT_TABLE);
  } catch (e) {
    fatal(`catalogue check: ${e?.code ? e.message : e?.stack ?? e}`);
  }
  const { missing, stale, duplicates, malformed } = result;
  for (const m of missing) check.fail(`catalogue: ${m.kind}\t${m.name}: the parser knows it, catalogue.tsv does not classify it`);
  for (const s of stale) check.fail(`catalogue: line ${s.line}: ${s.kind}\t${s.name}: source parser, but the parser does not know it (mark it docs or remove it)`);
  for (const d of duplicates) check.fail(`catalogue: line ${d.line}: ${d.kind}\t${d.name}: already on line ${d.first}`);
  for (const m of malformed) check.fail(`catalogue: line ${m.line}: ${m.problem}: ${q(m.text)}`);
  return check.done(`${result.catalogue} parser entries, ${result.rows} table rows: ${missing.length} unclassified, ${stale.length} stale, ${duplicates.length} duplicate, ${malformed.length} malformed`);
}

// ---------------------------------------------------------------------------------------------
// Check 2: the lexer differential
//
// Microsoft's view of a text: `KustoCode.Parse(text).Syntax`, walked node by node — the syntax
// tokens (TextStart/End, Text, ValueText: the decoded value of a string literal), the comments
// in their trivia (found with `TokenParser.ScanComment`, the scanner Kusto's own trivia parser
// uses), and the name nodes (TokenName, BracketedName, WildcardedName, BracketedWildcardedName)
// with their SimpleName. kqlgate's view: the tokens of the kql_tokens example. For every text
// kqlgate accepts, both ways: every string literal begins and ends at the same offsets and
// decodes to the same value; every comment and directive begins and ends at the same offsets;
// every name (plain or bracketed) begins and ends at the same offsets, with the same value.

const kindName = (kind) => kusto.kindName(kind);

/** Comments in a trivia string that starts at offset `base`: `//` up to the line break. */
function triviaComments(trivia, base) {
  const { TokenParser, TextFacts } = K.Parsing;
  const comments = [];
  let pos = 0;
  while (pos < trivia.length) {
    const ch = trivia.charCodeAt(pos);
    if (TextFacts.IsWhitespace(ch)) {
      pos += 1;
      continue;
    }
    const len = TokenParser.ScanComment(trivia, pos);
    if (len <= 0) {
      // Trivia holds only whitespace and comments; anything else means this script is wrong.
      throw new Error(`unexpected trivia character U+${ch.toString(16)} in ${q(trivia)}`);
    }
    // ScanComment's length runs to the start of the next line; the comment itself stops at
    // the line break (as Kusto's own classifier, KustoCodeService.GetClassifications, does).
    let end = pos + len;
    while (end > pos && TextFacts.IsLineBreakStart(trivia.charCodeAt(end - 1))) end -= 1;
    comments.push({ start: base + pos, end: base + end, text: trivia.slice(pos, end) });
    pos += len;
  }
  return comments;
}

const NAME_NODES = {
  TokenName: 'name',
  BracketedName: 'bracketed',
  WildcardedName: 'wildcarded',
  BracketedWildcardedName: 'bracketed',
};

/** Microsoft's view of a text: tokens, strings, comments, directives and names. */
function msView(text) {
  const code = K.KustoCode.Parse(text, kusto.parseGlobals);
  const allTokens = [];
  const names = [];
  const diagnostics = [];
  const walk = (el, parentKind) => {
    if (el == null) return;
    const kind = kindName(el.Kind);
    // Error recovery inserts zero-width "missing" tokens and names: nothing in the text.
    const missing = el.IsMissing || (el.Width === 0 && kind !== 'EndOfTextToken' && el.ChildCount === 0);
    if (el.HasSyntaxDiagnostics) {
      const list = el.SyntaxDiagnostics;
      for (let i = 0; i < list.Count; i++) diagnostics.push(`${list.getItem(i).Message} @${el.TextStart}`);
    }
    if (el.IsToken) {
      allTokens.push({
        kind, missing, parentKind, start: el.TextStart, end: el.End, text: el.Text, value: el.ValueText,
        triviaStart: el.TriviaStart, trivia: el.Trivia,
      });
      return;
    }
    if (NAME_NODES[kind] && el.Width > 0) {
      names.push({ type: NAME_NODES[kind], node: kind, start: el.TextStart, end: el.End, value: el.SimpleName });
    }
    for (let i = 0; i < el.ChildCount; i++) walk(el.GetChild(i), kind);
  };
  walk(code.Syntax, null);
  const comments = allTokens.flatMap((t) => triviaComments(t.trivia, t.triviaStart));
  const tokens = allTokens.filter((t) => !t.missing).map(({ kind, parentKind, start, end, text: tokenText, value }) => ({ kind, parentKind, start, end, text: tokenText, value }));
  return withSubsets({ tokens, comments, names, diagnostics });
}

/** The string and directive tokens of a view (not stored in the cache: they are its tokens). */
function withSubsets(view) {
  view.strings = view.tokens.filter((t) => t.kind === 'StringLiteralToken');
  view.directives = view.tokens.filter((t) => t.kind === 'DirectiveToken');
  return view;
}

/**
 * Microsoft's view of a text (msView) and where its own lexer disagrees with its parser
 * (`inconsistency`, or null), from the parse cache when an earlier run made it.
 */
function microsoft(text, cache) {
  const cached = cache.get(text);
  if (cached) return withSubsets(cached);
  const ms = msView(text);
  const lexical = msLexical(text);
  const sig = (list) => list.map(span).join(',');
  const differ = [
    ['strings', lexical.strings, ms.strings],
    ['comments', lexical.comments, ms.comments],
    ['identifiers', lexical.identifiers, ms.tokens.filter((t) => t.kind === 'IdentifierToken')],
  ].filter(([, a, b]) => sig(a) !== sig(b));
  const inconsistency = differ.length ? differ.map(([what, a, b]) => `${what}: lexer [${sig(a)}] parser [${sig(b)}]`).join('; ') : null;
  const { tokens, comments, names, diagnostics } = ms;
  cache.set(text, { tokens, comments, names, diagnostics, inconsistency });
  return withSubsets({ tokens, comments, names, diagnostics, inconsistency });
}

/** Microsoft's lexer alone (TokenParser.ParseTokens), for a consistency check with the tree. */
function msLexical(text) {
  const list = K.Parsing.TokenParser.ParseTokens(text);
  const strings = [];
  const comments = [];
  const identifiers = [];
  let pos = 0;
  for (const t of list) {
    comments.push(...triviaComments(t.Trivia, pos));
    pos += t.Trivia.length;
    const kind = kindName(t.Kind);
    if (kind === 'StringLiteralToken') strings.push({ start: pos, end: pos + t.Text.length });
    if (kind === 'IdentifierToken') identifiers.push({ start: pos, end: pos + t.Text.length });
    pos += t.Text.length;
  }
  return { strings, comments, identifiers };
}

/** If this does not come out right, nothing the lexer check says can be trusted. */
function smokeTest() {
  const text = "T | where a == h'x\\'y' // c\n| project ['b c']";
  const probe = msView(text);
  const at = (s) => text.indexOf(s);
  const ok =
    probe.strings.length === 2 &&
    probe.strings[0].value === "x'y" && probe.strings[0].start === at("h'") &&
    probe.comments.length === 1 &&
    probe.comments[0].start === at('//') && probe.comments[0].end === at('\n') &&
    probe.names.some((n) => n.type === 'bracketed' && n.value === 'b c' && n.start === at('[') && n.end === text.length);
  if (!ok) fatal(`${kusto.PACKAGE} ${kusto.version} loaded but gave unexpected results: ${q(probe)}`);
}

const span = (t) => `${t.start}..${t.end}`;
const within = (inner, outer) => inner.start >= outer.start && inner.end <= outer.end;
const isKeyword = (kind) => kind.endsWith('Keyword');

/**
 * A word Microsoft makes one token of and kqlgate reads as identifiers joined by touching `-`
 * or `.` (`create-or-alter` in a command, the keyword `hint.strategy`): the same text and outer
 * boundaries in another token model (kqlgate's policies join hyphenated words themselves).
 * Returns kqlgate's pieces, or null when that is not exactly what kqlgate has there.
 */
function joinedWord(text, kTokens, start, end) {
  const word = text.slice(start, end);
  if (!/^[A-Za-z_$][A-Za-z0-9_]*([-.][A-Za-z_][A-Za-z0-9_]*)+$/.test(word)) return null;
  const pieces = kTokens.filter((t) => t.start < end && t.end > start);
  if (!pieces.length || pieces[0].start !== start || pieces[pieces.length - 1].end !== end) return null;
  for (let i = 0; i < pieces.length; i++) {
    const p = pieces[i];
    if (i > 0 && pieces[i - 1].end !== p.start) return null;
    const piece = text.slice(p.start, p.end);
    const ok = i % 2 === 0 ? p.kind === 'ident' && p.value === piece : p.kind === 'punct' && (piece === '-' || piece === '.');
    if (!ok) return null;
  }
  return pieces;
}

function describeKqlgate(tokens, start, end) {
  const over = tokens.filter((t) => t.start < end && t.end > start);
  if (over.length === 0) return 'nothing there';
  return over.map((t) => `${t.kind} ${span(t)}${t.value != null ? ` value ${q(t.value)}` : ''}`).join(', ');
}

function describeMs(ms, start, end) {
  const parts = [];
  for (const t of ms.tokens) {
    if (t.start < end && t.end > start) {
      parts.push(`${t.kind} ${span(t)} ${q(t.text)}${t.kind === 'StringLiteralToken' ? ` value ${q(t.value)}` : ''}`);
    }
  }
  for (const c of ms.comments) if (c.start < end && c.end > start) parts.push(`comment ${span(c)}`);
  return parts.length ? parts.join(', ') : 'nothing there';
}

/** Where kqlgate's and Microsoft's views of one text differ: {problems, notes}. */
function compareTokens(text, kq, ms, stats) {
  const problems = [];
  const notes = [];
  const kTokens = kq.tokens;
  const kStrings = kTokens.filter((t) => t.kind === 'string');
  const kComments = kTokens.filter((t) => t.kind === 'comment');
  const kDirectives = kTokens.filter((t) => t.kind === 'directive');
  const kIdents = kTokens.filter((t) => t.kind === 'ident');
  const kBracketed = kTokens.filter((t) => t.kind === 'bracketed');
  const fail = (s) => problems.push(s);

  // kqlgate's bracketed tokens: Microsoft must see exactly `[`, string literal(s), `]` there,
  // whose joined values make kqlgate's name. Those found good cover the strings and comments
  // inside them (kqlgate makes one token of the whole).
  const goodBrackets = [];
  for (const b of kBracketed) {
    const inside = ms.tokens.filter((t) => t.start < b.end && t.end > b.start);
    const straddles = inside.filter((t) => !within(t, b));
    const strs = inside.slice(1, -1);
    const shapeOk =
      straddles.length === 0 &&
      inside.length >= 3 &&
      inside[0].kind === 'OpenBracketToken' && inside[0].start === b.start &&
      inside[inside.length - 1].kind === 'CloseBracketToken' && inside[inside.length - 1].end === b.end &&
      strs.every((t) => t.kind === 'StringLiteralToken');
    const commentsCut = ms.comments.filter((c) => c.start < b.end && c.end > b.start && !within(c, b));
    if (!shapeOk || commentsCut.length) {
      fail(`kqlgate says bracketed name ${span(b)} value ${q(b.value)}, Microsoft says ${describeMs(ms, b.start, b.end)}`);
      continue;
    }
    const joined = strs.map((t) => t.value).join('');
    if (joined !== b.value) {
      fail(`kqlgate says bracketed name ${span(b)} value ${q(b.value)}, Microsoft says its literal(s) ${strs.map((t) => `${span(t)} value ${q(t.value)}`).join(' + ')} = ${q(joined)}`);
      continue;
    }
    goodBrackets.push(b);
    const name = ms.names.find((n) => n.type === 'bracketed' && n.start === b.start && n.end === b.end);
    if (name) {
      if (name.value !== b.value) {
        fail(`kqlgate says bracketed name ${span(b)} value ${q(b.value)}, Microsoft says ${name.node} ${span(name)} value ${q(name.value)}`);
      }
    } else {
      notes.push(`kqlgate's bracketed name ${span(b)} ${q(b.value)} is, to Microsoft's parser, ${q(text.slice(b.start, b.end))} in a ${inside[0].parentKind} (same boundaries and value)`);
    }
  }
  const inGoodBracket = (t) => goodBrackets.some((b) => within(t, b));

  // String literals, both ways.
  for (const s of kStrings) {
    const m = ms.strings.find((t) => t.start === s.start && t.end === s.end);
    if (!m) fail(`kqlgate says string ${span(s)} value ${q(s.value)}, Microsoft says ${describeMs(ms, s.start, s.end)}`);
    else if (m.value !== s.value) fail(`kqlgate says string ${span(s)} value ${q(s.value)}, Microsoft says string ${span(m)} value ${q(m.value)}`);
  }
  for (const m of ms.strings) {
    if (inGoodBracket(m)) continue;
    if (!kStrings.some((s) => s.start === m.start && s.end === m.end)) {
      fail(`Microsoft says string ${span(m)} ${q(m.text)} value ${q(m.value)}, kqlgate says ${describeKqlgate(kTokens, m.start, m.end)}`);
    }
  }

  // Comments, both ways.
  for (const c of kComments) {
    if (!ms.comments.some((m) => m.start === c.start && m.end === c.end)) {
      fail(`kqlgate says comment ${span(c)} ${q(text.slice(c.start, c.end))}, Microsoft says ${describeMs(ms, c.start, c.end)}`);
    }
  }
  for (const m of ms.comments) {
    if (inGoodBracket(m)) continue;
    if (!kComments.some((c) => c.start === m.start && c.end === m.end)) {
      fail(`Microsoft says comment ${span(m)} ${q(m.text)}, kqlgate says ${describeKqlgate(kTokens, m.start, m.end)}`);
    }
  }

  // Directives, both ways.
  for (const d of kDirectives) {
    if (!ms.directives.some((m) => m.start === d.start && m.end === d.end)) {
      fail(`kqlgate says directive ${span(d)}, Microsoft says ${describeMs(ms, d.start, d.end)}`);
    }
  }
  for (const m of ms.directives) {
    if (!kDirectives.some((d) => d.start === m.start && d.end === m.end)) {
      fail(`Microsoft says directive ${span(m)} ${q(m.text)}, kqlgate says ${describeKqlgate(kTokens, m.start, m.end)}`);
    }
  }

  // Names, Microsoft → kqlgate: the parser's name nodes, and every identifier token.
  const checkedNameSpans = new Set();
  for (const n of ms.names) {
    checkedNameSpans.add(span(n));
    if (n.type === 'bracketed') {
      const b = kBracketed.find((t) => t.start === n.start && t.end === n.end);
      if (!b) fail(`Microsoft says ${n.node} ${span(n)} value ${q(n.value)}, kqlgate says ${describeKqlgate(kTokens, n.start, n.end)}`);
      // value compared above, from kqlgate's side
    } else if (n.type === 'wildcarded') {
      // `a*b`: kqlgate sees identifiers and `*` punctuation; each identifier must be one
      // of the name's pieces, at its place, and nothing else may be there.
      const inside = kTokens.filter((t) => t.start < n.end && t.end > n.start);
      let ok = inside.every((t) => within(t, n) && (t.kind === 'ident' || t.kind === 'number' || (t.kind === 'punct' && text.slice(t.start, t.end) === '*')));
      ok = ok && inside.length > 0 && inside[0].start === n.start && inside[inside.length - 1].end === n.end;
      for (let i = 1; ok && i < inside.length; i++) ok = inside[i - 1].end === inside[i].start;
      if (!ok) fail(`Microsoft says ${n.node} ${span(n)} ${q(n.value)}, kqlgate says ${describeKqlgate(kTokens, n.start, n.end)}`);
    } else {
      const k = kIdents.find((t) => t.start === n.start && t.end === n.end);
      if (!k && joinedWord(text, kTokens, n.start, n.end)) {
        notes.push(`joined word: Microsoft's ${n.node} ${span(n)} ${q(n.value)} is kqlgate's ${describeKqlgate(kTokens, n.start, n.end)}`);
        continue;
      }
      if (!k) fail(`Microsoft says name ${span(n)} ${q(n.value)}, kqlgate says ${describeKqlgate(kTokens, n.start, n.end)}`);
      else if (k.value !== text.slice(n.start, n.end)) fail(`Microsoft says name ${span(n)} ${q(n.value)}, kqlgate says ident ${span(k)} ${q(k.value)}`);
    }
  }
  for (const t of ms.tokens) {
    if (t.kind !== 'IdentifierToken' || checkedNameSpans.has(span(t))) continue;
    const k = kIdents.find((i) => i.start === t.start && i.end === t.end);
    if (!k && joinedWord(text, kTokens, t.start, t.end)) {
      notes.push(`joined word: Microsoft's identifier ${span(t)} ${q(t.text)} (in ${t.parentKind}) is kqlgate's ${describeKqlgate(kTokens, t.start, t.end)}`);
      continue;
    }
    if (!k || k.value !== t.text) {
      fail(`Microsoft says identifier ${span(t)} ${q(t.text)} (in ${t.parentKind}), kqlgate says ${describeKqlgate(kTokens, t.start, t.end)}`);
    }
  }

  // Names, kqlgate → Microsoft: each identifier is a Microsoft token of the same text (an
  // identifier or a keyword), or part of a keyword such as `mv-expand`, `!has`, `in~`.
  for (const k of kIdents) {
    const same = ms.tokens.find((t) => t.start === k.start && t.end === k.end && t.text === k.value);
    if (same) continue;
    if (ms.names.some((n) => n.type === 'wildcarded' && within(k, n))) continue;
    const around = ms.tokens.find((t) => within(k, t));
    if (around && isKeyword(around.kind)) continue;
    if (around && around.kind === 'IdentifierToken' && joinedWord(text, kTokens, around.start, around.end)) continue;
    fail(`kqlgate says ident ${span(k)} ${q(k.value)}, Microsoft says ${describeMs(ms, k.start, k.end)}`);
  }

  stats.strings += ms.strings.length;
  stats.comments += ms.comments.length;
  stats.directives += ms.directives.length;
  stats.names += ms.names.length + kBracketed.length;
  stats.identifiers += kIdents.length;
  return { problems, notes };
}

function lexerCheck(lexerCorpus, corpus, answers, cache) {
  const check = new Check(2, 'lexer');
  smokeTest();
  const texts = [...lexerCorpus, ...corpus];
  const stats = { strings: 0, comments: 0, directives: 0, names: 0, identifiers: 0 };
  let agree = 0;
  const refusedAsMarked = [];
  const msErrors = [];
  const msInconsistent = [];
  const notes = [];
  let failedTexts = 0;
  texts.forEach((query, i) => {
    const where = `${query.where} ${q(query.text)}`;
    const answer = answers[i];
    const marked = query.markers.has('%lex-refused');
    let ms;
    try {
      ms = microsoft(query.text, cache);
    } catch (e) {
      failedTexts += 1;
      check.fail(`${where}\n  Microsoft's parser threw: ${e?.stack ?? e}`);
      return;
    }
    if (ms.diagnostics.length) msErrors.push(`${where}: ${ms.diagnostics.slice(0, 2).join('; ')}`);
    if (ms.inconsistency) msInconsistent.push(`${where}: ${ms.inconsistency}`);
    if ('error' in answer) {
      if (marked) refusedAsMarked.push(query);
      else {
        failedTexts += 1;
        check.fail(`${where}\n  kqlgate refuses to lex it (${answer.error} at ${answer.offset}), and it is not marked %lex-refused`);
      }
      return;
    }
    const { problems, notes: own } = compareTokens(query.text, answer, ms, stats);
    for (const n of own) notes.push(`${where}: ${n}`);
    if (marked) problems.unshift('marked %lex-refused, but kqlgate lexes it (a stale marker: remove it, or find why kqlgate no longer refuses it)');
    if (problems.length) {
      failedTexts += 1;
      check.fail(`${where}`);
      if (ms.diagnostics.length) check.line(`  (Microsoft's parser also reports syntax errors: ${ms.diagnostics.join('; ')})`);
      for (const p of problems) check.line(`  ${p}`);
    } else {
      agree += 1;
    }
  });
  const joined = notes.filter((n) => n.includes(': joined word: '));
  check.line(`note: ${joined.length} words Microsoft makes one token of and kqlgate reads as identifiers joined by - or . (token model, not failures); ${notes.length - joined.length} bracketed names Microsoft's parser reads as something else with the same boundaries and value`);
  if (VERBOSE) for (const n of notes) check.line(`  ${n}`);
  check.line(`note: ${msErrors.length} texts have syntax errors in Microsoft's parser (lexing is compared all the same)`);
  if (VERBOSE) for (const m of msErrors) check.line(`  ${m}`);
  check.line(`note: in ${msInconsistent.length} texts Microsoft's own lexer (TokenParser.ParseTokens) and parser disagree${VERBOSE ? ':' : ' (KQL_DIFF_VERBOSE=1 lists them)'}`);
  if (VERBOSE) for (const m of msInconsistent) check.line(`  ${m}`);
  check.line(`compared ${stats.strings} string literals, ${stats.comments} comments, ${stats.directives} directives, ${stats.names} name nodes and bracketed names, ${stats.identifiers} kqlgate identifiers`);
  return check.done(`${texts.length} texts (corpus.txt ${lexerCorpus.length}, corpus/ ${corpus.length}): ${agree} agree, ${refusedAsMarked.length} refused as marked %lex-refused, ${failedTexts} failed`);
}

// ---------------------------------------------------------------------------------------------
// stricter.tsv: inside queries kqlgate refuses on purpose

/**
 * [{line, key, label, reason}]. key: a query's queryKey (corpus or generated), or `generated`
 * for every generated query refused with a label matching `label` (`*` matches any run of
 * characters).
 */
function readStricter(path = join(here, 'stricter.tsv')) {
  if (!existsSync(path)) return [];
  const entries = [];
  readFileSync(path, 'utf8').split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '' || line.startsWith('#')) return;
    const cells = line.split('\t');
    const [key, label, reason] = cells;
    if (cells.length !== 3 || !(/^[0-9a-f]{16}$/.test(key) || key === 'generated') || !label || !reason?.trim()) {
      fatal(`stricter.tsv:${i + 1}: expected key (16 hex digits, or generated), label and reason, tab-separated: ${q(line)}`);
    }
    entries.push({ line: i + 1, key, label, reason, pattern: new RegExp(`^${label.split('*').map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`) });
  });
  return entries;
}

// ---------------------------------------------------------------------------------------------
// The cache: Microsoft's view of each text and the oracle's analysis of it, kept between runs in
// .cache/ (KQL_DIFF_CACHE=0: not used). A file's name holds the hash of everything its results
// depend on — the parser's version and the sources below — so a change to any of them starts a
// new file (and the old one is removed). A run with the default seed after a run that filled
// the cache analyses only the texts that are new.

const CACHE_ON = process.env.KQL_DIFF_CACHE !== '0';
const CACHE_DIR = join(here, '.cache');
/** Entries a cache file keeps at most: the texts of this run first, then earlier ones. */
const CACHE_ENTRIES = 50000;
const CACHE_INPUTS = {
  parse: ['diff.mjs', 'kusto.mjs'],
  oracle: ['oracle.mjs', 'kusto.mjs', 'catalogue.mjs', 'schema.json', '../../src/kql/catalogue.tsv'],
};

class DiskCache {
  constructor(kind) {
    this.kind = kind;
    this.used = new Map();
    this.stored = {};
    this.hits = 0;
    this.misses = 0;
    if (!CACHE_ON) return;
    const hash = createHash('sha256').update(`${kusto.PACKAGE} ${kusto.version}\n`);
    for (const f of CACHE_INPUTS[kind]) hash.update(readFileSync(join(here, f)));
    this.path = join(CACHE_DIR, `${kind}-${hash.digest('hex').slice(0, 16)}.json`);
    try {
      this.stored = JSON.parse(readFileSync(this.path, 'utf8'));
    } catch {
      this.stored = {}; // none yet, or unreadable: start afresh
    }
  }

  static key(text) {
    return createHash('sha256').update(text, 'utf8').digest('hex').slice(0, 24);
  }

  get(text) {
    const key = DiskCache.key(text);
    let value = this.used.get(key);
    if (value === undefined && Object.hasOwn(this.stored, key)) {
      value = this.stored[key];
      this.used.set(key, value);
      this.hits += 1;
    }
    return value;
  }

  set(text, value) {
    this.used.set(DiskCache.key(text), value);
    this.misses += 1;
  }

  /** What this run used, for another thread's cache to take in (merge). */
  entries() {
    return [...this.used];
  }

  merge(entries, hits, misses) {
    for (const [key, value] of entries) this.used.set(key, value);
    this.hits += hits;
    this.misses += misses;
  }

  describe() {
    return `${this.kind} cache ${this.hits} hits, ${this.misses} new`;
  }

  /** Writes what this run used, then what earlier runs stored, up to CACHE_ENTRIES entries. */
  save() {
    if (!this.path || this.misses === 0) return;
    const keep = new Map(this.used);
    for (const [key, value] of Object.entries(this.stored)) {
      if (keep.size >= CACHE_ENTRIES) break;
      if (!keep.has(key)) keep.set(key, value);
    }
    try {
      mkdirSync(CACHE_DIR, { recursive: true });
      const temporary = `${this.path}.${process.pid}.tmp`;
      writeFileSync(temporary, JSON.stringify(Object.fromEntries(keep)));
      renameSync(temporary, this.path);
      for (const f of readdirSync(CACHE_DIR)) {
        if (f.startsWith(`${this.kind}-`) && join(CACHE_DIR, f) !== this.path) rmSync(join(CACHE_DIR, f), { force: true });
      }
    } catch (e) {
      console.error(`kql-diff: note: could not write the cache ${this.path}: ${e.message}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Checks 3 and 4: the semantic oracle against the guard

/** analyse(text) → {syntaxErrors, outside}: the oracle's, through `cache`; the oracle is made when first needed. */
async function makeOracle(cache) {
  const { createOracle } = await import('./oracle.mjs');
  const { readTable, DEFAULT_TABLE } = await import('./catalogue.mjs');
  let oracle;
  return (text) => {
    let result = cache.get(text);
    if (!result) {
      oracle ??= createOracle({ schema: kusto.readSchema(), table: readTable(DEFAULT_TABLE) });
      const { syntaxErrors, outside } = oracle.analyse(text);
      result = { syntaxErrors, outside };
      cache.set(text, result);
    }
    return result;
  };
}

const verdictOf = (answer) => (answer.guard.allowed ? 'allowed' : `refused (${answer.guard.label}): ${answer.guard.refusal}`);
const reasonsOf = (analysis) => analysis.outside.map((o) => `${o.construct}: ${o.reason} @${o.offset}`).join('; ');

/**
 * Compares oracle and guard over `queries` [{where, text, claim}] (claim: what the corpus
 * marker or the generator says, 'inside' or 'outside'). `generated` selects check 4's rules.
 */
function compareVerdicts(check, queries, answers, analyses, stricter, generated) {
  const n = { inside: 0, outside: 0, agree: 0, outsideAllowed: 0, fp: 0, fpListed: 0, claims: 0, syntax: 0 };
  const unlisted = [];
  const listed = [];
  const usedEntries = new Set();
  const claimWord = generated ? 'the generator meant it' : 'the corpus marks it';
  queries.forEach((query, i) => {
    const answer = answers[i];
    const analysis = analyses[i];
    const where = `${query.where} ${q(query.text)}`;
    if (analysis.syntaxErrors.length) {
      n.syntax += 1;
      check.fail(`${where}\n  Microsoft's parser reports syntax errors (${analysis.syntaxErrors.join('; ')}); every query must parse`);
      return;
    }
    const outside = analysis.outside.length > 0;
    const allowed = answer.guard.allowed;
    if (outside) n.outside += 1;
    else n.inside += 1;
    if (query.claim !== (outside ? 'outside' : 'inside')) {
      n.claims += 1;
      const fix = generated ? 'a generator bug, or an oracle bug' : (outside ? 'mark it %outside' : 'a corpus bug: the oracle finds nothing outside; fix the query or the marker');
      check.fail(`${where}\n  ${claimWord} ${query.claim}, the oracle says ${outside ? `outside: ${reasonsOf(analysis)}` : 'inside'} (${fix}); guard: ${verdictOf(answer)}`);
    }
    if (outside && allowed) {
      n.outsideAllowed += 1;
      check.fail(`${where}\n  OUTSIDE QUERY ALLOWED: the oracle says ${reasonsOf(analysis)}; the guard allows it`);
      return;
    }
    if (outside || allowed) {
      n.agree += 1;
      return;
    }
    // Inside, refused: a false positive.
    n.fp += 1;
    const key = queryKey(query.text);
    const label = answer.guard.label;
    const exact = stricter.filter((e) => e.key === key);
    const entry = exact.find((e) => e.label === label) ?? (generated ? stricter.find((e) => e.key === 'generated' && e.pattern.test(label)) : undefined);
    if (entry) {
      n.fpListed += 1;
      usedEntries.add(entry);
      listed.push({ where, key, entry, answer });
    } else if (exact.length) {
      check.fail(`${where}\n  stricter.tsv:${exact[0].line} lists it (key ${key}) for label ${exact[0].label}, but the guard now refuses it with ${label}: ${answer.guard.refusal}`);
      exact.forEach((e) => usedEntries.add(e));
    } else {
      unlisted.push({ where, key, answer });
    }
  });
  if (unlisted.length) {
    const say = (u) => `${generated ? 'false positive' : 'FAIL false positive'} ${u.where}\n  the oracle says inside; the guard refuses it (${u.answer.guard.label}): ${u.answer.guard.refusal}\n  (fix the guard, or, if kqlgate is stricter on purpose, list it in stricter.tsv: ${u.key}\t${u.answer.guard.label}\t<reason>)`;
    if (generated) check.list(unlisted, say);
    else {
      check.failed = true;
      check.list(unlisted, say);
    }
  }
  if (listed.length) {
    check.line(`${listed.length} inside queries refused as stricter.tsv lists them:`);
    check.list(listed, (l) => `  stricter.tsv:${l.entry.line} ${l.entry.label}: ${l.entry.reason}\n    ${l.where}`);
  }
  const rate = pct(n.fp, n.inside);
  if (n.fp > FP_LIMIT * n.inside) {
    check.fail(`false-positive rate ${rate.toFixed(3)} % (${n.fp} of ${n.inside} inside queries refused) is above the limit of ${(100 * FP_LIMIT).toFixed(1)} %`);
  }
  return { n, rate, usedEntries };
}

function corpusCheck(corpus, answers, stricter, analyse) {
  const check = new Check(3, 'corpus');
  const analyses = corpus.map((query) => analyse(query.text));
  const queries = corpus.map((query) => ({ ...query, claim: query.markers.has('%outside') ? 'outside' : 'inside' }));
  const { n, rate, usedEntries } = compareVerdicts(check, queries, answers, analyses, stricter, false);
  // A listed corpus query that is no longer refused while inside: the entry is stale.
  const keys = new Map(corpus.map((query, i) => [queryKey(query.text), i]));
  for (const e of stricter) {
    if (e.key === 'generated' || usedEntries.has(e) || !keys.has(e.key)) continue;
    const i = keys.get(e.key);
    const now = analyses[i].outside.length ? 'the oracle says outside' : `the guard ${verdictOf(answers[i])}`;
    check.fail(`stricter.tsv:${e.line}: ${e.key} (${corpus[i].where}) is no longer an inside query the guard refuses: ${now}; remove the entry`);
  }
  const files = new Set(corpus.map((c) => c.file)).size;
  return check.done(`${corpus.length} queries in ${files} files (${n.inside} inside, ${n.outside} outside): ${n.agree} agree; outside allowed ${n.outsideAllowed}; false positives ${n.fp} (${n.fpListed} in stricter.tsv) = ${rate.toFixed(3)} % (limit ${(100 * FP_LIMIT).toFixed(1)} %); marker disagreements ${n.claims}`);
}

function envCount(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) fatal(`${name}=${q(raw)} is not a whole number`);
  return value;
}

/** Check 4's queries come in chunks of CHUNK, chunk k from generator seed KQL_DIFF_SEED + 10⁶·k. */
const CHUNK = 1000;

function chunksOf(count, seed) {
  const chunks = [];
  for (let k = 0; k * CHUNK < count; k++) chunks.push({ index: k, count: Math.min(CHUNK, count - k * CHUNK), seed: seed + 1000000 * k });
  return chunks;
}

/**
 * Takes chunks of check 4 off the shared counter until none is left (the worker threads and,
 * once checks 1–3 are done, the main thread): generate, analyse, ask the guard.
 */
async function runChunks(chunks, counter, analyse) {
  const { run } = await import('./generate.mjs');
  const done = [];
  for (let k = Atomics.add(counter, 0, 1); k < chunks.length; k = Atomics.add(counter, 0, 1)) {
    const chunk = chunks[k];
    const start = process.hrtime.bigint();
    const analysed = new Map();
    // The generator's syntax check is the oracle's own parse: each query is parsed once.
    const { queries, stats } = run({
      count: chunk.count, seed: chunk.seed, check: (text) => {
        const a = analyse(text);
        analysed.set(text, a);
        return a.syntaxErrors;
      },
    });
    const generation = seconds(start);
    const guardStart = process.hrtime.bigint();
    const answers = kqlgate(queries.map((g) => g.text));
    done.push({
      index: k,
      queries: queries.map((g, i) => {
        const a = analysed.get(g.text) ?? analyse(g.text);
        return { text: g.text, intent: g.intent, guard: answers[i].guard, syntaxErrors: a.syntaxErrors, outside: a.outside };
      }),
      rejected: stats.rejected,
      generation,
      guard: seconds(guardStart),
    });
  }
  return done;
}

/** A worker thread of check 4 (workerData: {chunks, counter}). */
async function workerMain({ chunks, counter }) {
  await loadKusto();
  const cache = new DiskCache('oracle');
  const done = await runChunks(chunks, counter, await makeOracle(cache));
  return { done, cache: { entries: cache.entries(), hits: cache.hits, misses: cache.misses } };
}

/** Starts one worker thread of check 4; resolves to its chunks and cache entries. */
function startWorker(data) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: data });
    let answered = false;
    worker.on('message', (m) => {
      answered = true;
      if (m.fatal) reject(new Fatal(m.fatal));
      else if (m.error) reject(new Error(m.error));
      else resolve(m.result);
    });
    worker.on('error', (e) => reject(e));
    worker.on('exit', (code) => {
      if (!answered) reject(new Error(`a worker thread of check 4 exited with ${code} without an answer`));
    });
  });
}

/**
 * Check 4 under way: KQL_DIFF_WORKERS worker threads (default: one fewer than the CPUs, at least
 * one, at most three) start on the chunks at once; finish() has the main thread help with what
 * is left, then compares everything as one set.
 */
function startGenerated({ count, seed }) {
  const started = process.hrtime.bigint();
  const chunks = chunksOf(count, seed);
  const counter = new Int32Array(new SharedArrayBuffer(4));
  const workers = Math.min(envCount('KQL_DIFF_WORKERS', Math.min(3, Math.max(1, availableParallelism() - 1))), chunks.length);
  const running = Array.from({ length: workers }, () => startWorker({ chunks, counter }));
  const all = Promise.all(running);
  all.catch(() => {}); // awaited in finish(); a rejection before then is not unhandled
  return {
    async finish(analyse, cache, stricter) {
      const mine = await runChunks(chunks, counter, analyse);
      const theirs = await all;
      for (const t of theirs) cache.merge(t.cache.entries, t.cache.hits, t.cache.misses);
      const byWorker = theirs.map((t) => t.done.length);
      const done = [...mine, ...theirs.flatMap((t) => t.done)].sort((a, b) => a.index - b.index);
      return generatedCheck(done, chunks, { count, seed, workers, byWorker, byMain: mine.length }, stricter, started, cache);
    },
  };
}

/** Check 4: the chunks' queries, compared as one set. */
function generatedCheck(done, chunks, { count, seed, byWorker, byMain }, stricter, started, cache) {
  const check = new Check(4, 'generated');
  check.start = started;
  const items = [];
  const answers = [];
  const analyses = [];
  for (const chunk of done) {
    chunk.queries.forEach((g, i) => {
      items.push({ where: `generated #${i + 1} of seed ${chunks[chunk.index].seed}`, text: g.text, claim: g.intent });
      answers.push({ guard: g.guard });
      analyses.push(g);
    });
  }
  const { n, rate } = compareVerdicts(check, items, answers, analyses, stricter, true);
  if (check.failed) {
    check.line(`reproduce: KQL_DIFF_SEED=${seed} KQL_DIFF_GENERATED=${count} ./run 4; the queries of seed S: node generate.mjs ${CHUNK} S`);
  }
  const sum = (f) => done.reduce((total, c) => total + f(c), 0);
  check.line(`${chunks.length} chunks of up to ${CHUNK} (generator seeds ${chunks[0].seed}, ${chunks[0].seed + 1000000}, …): ${byWorker.map((c, i) => `worker ${i + 1} ${c}`).join(', ')}${byWorker.length ? ', ' : ''}main thread ${byMain}; generation and oracle ${(1000 * sum((c) => c.generation) / Math.max(1, items.length)).toFixed(1)} ms a query, guard ${(1000 * sum((c) => c.guard) / Math.max(1, items.length)).toFixed(2)} ms; ${sum((c) => c.rejected)} rejected for syntax errors; ${cache.describe()}`);
  return check.done(`${items.length} queries, seed ${seed} (${n.inside} inside, ${n.outside} outside): ${n.agree} agree; outside allowed ${n.outsideAllowed}; false positives ${n.fp} (${n.fpListed} in stricter.tsv) = ${rate.toFixed(3)} % (limit ${(100 * FP_LIMIT).toFixed(1)} %); intent disagreements ${n.claims}`);
}

// ---------------------------------------------------------------------------------------------

function print(result) {
  console.log(`[${result.number}/4] ${result.name}`);
  for (const l of result.lines) console.log(`  ${l.replace(/\n/g, '\n  ')}`);
  if (result.skipped) console.log(`  ${result.summary}`);
  else console.log(`  ${result.failed ? 'FAILED' : 'ok'}: ${result.summary} (${secs(result.seconds)} s)`);
}

function skipped(number, name, why) {
  return { number, name, lines: [], summary: `skipped (${why})`, failed: false, seconds: 0, skipped: true };
}

async function main() {
  const start = process.hrtime.bigint();
  const args = process.argv.slice(2);
  if (args.some((a) => !['1', '2', '3', '4'].includes(a))) {
    console.error('usage: node diff.mjs [1] [2] [3] [4]');
    return 2;
  }
  const want = (n) => args.length === 0 || args.includes(String(n));
  const count = envCount('KQL_DIFF_GENERATED', 10000);
  const seed = envCount('KQL_DIFF_SEED', 1);
  // Check 4's worker threads start at once, while checks 1–3 run here.
  const generated = want(4) && count > 0 ? startGenerated({ count, seed }) : null;
  await loadKusto();
  console.log(`kql-diff: Microsoft Kusto.Language from ${kusto.PACKAGE} ${kusto.version}; kqlgate ${BIN}${CACHE_ON ? '' : '; cache off'}`);
  const stricter = readStricter();
  const parseCache = new DiskCache('parse');
  const oracleCache = new DiskCache('oracle');
  const analyse = await makeOracle(oracleCache);
  const results = [];
  const show = (result) => {
    results.push(result);
    print(result);
  };
  show(want(1) ? await catalogueCheck() : skipped(1, 'catalogue', 'not asked for'));
  if (want(2) || want(3)) {
    const lexerCorpus = readCorpus(join(here, 'corpus.txt'));
    const corpus = corpusFiles().flatMap(readCorpus);
    if (lexerCorpus.length < MIN_LEXER_CORPUS) fatal(`corpus.txt has ${lexerCorpus.length} texts, fewer than ${MIN_LEXER_CORPUS}`);
    if (corpus.length < MIN_CORPUS) fatal(`corpus/*.kql have ${corpus.length} queries, fewer than ${MIN_CORPUS}`);
    const answers = kqlgate([...lexerCorpus, ...corpus].map((c) => c.text));
    show(want(2) ? lexerCheck(lexerCorpus, corpus, answers, parseCache) : skipped(2, 'lexer', 'not asked for'));
    show(want(3) ? corpusCheck(corpus, answers.slice(lexerCorpus.length), stricter, analyse) : skipped(3, 'corpus', 'not asked for'));
  } else {
    show(skipped(2, 'lexer', 'not asked for'));
    show(skipped(3, 'corpus', 'not asked for'));
  }
  show(generated
    ? await generated.finish(analyse, oracleCache, stricter)
    : skipped(4, 'generated', want(4) ? 'KQL_DIFF_GENERATED=0' : 'not asked for'));
  parseCache.save();
  oracleCache.save();

  const failed = results.filter((r) => r.failed);
  console.log('\nkql-diff summary:');
  for (const r of results) {
    console.log(`  ${r.number}. ${r.name.padEnd(9)} ${(r.skipped ? 'skipped' : r.failed ? 'FAILED' : 'ok').padEnd(7)} ${r.skipped ? '' : `${secs(r.seconds).padStart(5)} s  `}${r.summary}`);
  }
  console.log(`kql-diff: ${failed.length ? `FAILED (check ${failed.map((r) => r.number).join(', ')})` : 'all checks passed'} in ${secs(seconds(start))} s (${parseCache.describe()}, ${oracleCache.describe()})`);
  return failed.length ? 1 : 0;
}

function reportFatal(e) {
  if (e instanceof Fatal) {
    console.error(`kql-diff: FATAL: ${e.message}`);
    console.log('kql-diff: the check did not run');
    return 2;
  }
  console.error(`kql-diff: FATAL: ${e?.stack ?? e}`);
  console.log('kql-diff: the check did not run');
  return 2;
}

if (isMainThread) {
  main().then((code) => {
    process.exitCode = code;
  }, (e) => {
    process.exitCode = reportFatal(e);
  }).finally(() => {
    // The worker, if a failure came first, must not keep the process alive.
    if (process.exitCode) setImmediate(() => process.exit(process.exitCode));
  });
} else {
  workerMain(workerData).then(
    (result) => parentPort.postMessage({ result }),
    (e) => parentPort.postMessage(e instanceof Fatal ? { fatal: e.message } : { error: e?.stack ?? String(e) }),
  );
}
