// Differential check of kqlgate's KQL lexer (src/kql/lexer.rs) against Microsoft's own KQL
// parser, Kusto.Language, as shipped (compiled to JavaScript) in @kusto/language-service-next.
//
// For every query of corpus.txt it asks:
//   - Microsoft: `Kusto.Language.KustoCode.Parse(text).Syntax`, walked node by node: the
//     syntax tokens (TextStart/End, Text, ValueText — the decoded value of a string literal),
//     the comments in their trivia (found with `TokenParser.ScanComment`, the scanner Kusto's
//     own trivia parser uses), and the name nodes (TokenName, BracketedName, WildcardedName,
//     BracketedWildcardedName) with their SimpleName;
//   - kqlgate: the `kql_tokens` example binary (env KQL_TOKENS_BIN), one JSON line per query.
// and requires, for every text kqlgate accepts:
//   - every string literal to begin and end at the same offsets and decode to the same value;
//   - every comment and directive to begin and end at the same offsets;
//   - every name (plain or bracketed) to begin and end at the same offsets, with the same value;
// in both directions. A text kqlgate refuses to lex is "refused (safe)", not a failure.
//
// Usage: node diff.mjs [corpus-file]   (env KQL_TOKENS_BIN, KQL_DIFF_VERBOSE=1 for notes)
// Exit status: 0 when nothing failed; 1 when something failed; 2 when the check could not run
// (Microsoft's parser not loadable, kqlgate binary unusable, corpus too small or malformed).

import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const MIN_CORPUS = 300;
const PACKAGE = '@kusto/language-service-next';

function fatal(message) {
  console.error(`kql-diff: FATAL: ${message}`);
  console.log('kql-diff: check did not run');
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Microsoft's parser

function loadKusto() {
  const require = createRequire(join(here, 'package.json'));
  let version;
  try {
    version = require(`${PACKAGE}/package.json`).version;
    // Bridge.NET's runtime (bridge.js) defines the globals `Bridge` and `System` that the
    // compiled Kusto.Language assembly needs; the assembly then defines the global `Kusto`.
    require(`${PACKAGE}/bridge.js`);
    require(`${PACKAGE}/Kusto.Language.Bridge.js`);
  } catch (e) {
    fatal(`cannot load ${PACKAGE} (run npm ci in ${here}): ${e && e.stack ? e.stack : e}`);
  }
  const K = globalThis.Kusto;
  const needed = [
    ['Kusto.Language.KustoCode.Parse', K?.Language?.KustoCode?.Parse],
    ['Kusto.Language.Parsing.TokenParser.ParseTokens', K?.Language?.Parsing?.TokenParser?.ParseTokens],
    ['Kusto.Language.Parsing.TokenParser.ScanComment', K?.Language?.Parsing?.TokenParser?.ScanComment],
    ['Kusto.Language.Parsing.TextFacts.IsWhitespace', K?.Language?.Parsing?.TextFacts?.IsWhitespace],
    ['Kusto.Language.Parsing.TextFacts.IsLineBreakStart', K?.Language?.Parsing?.TextFacts?.IsLineBreakStart],
    ['Kusto.Language.Syntax.SyntaxKind', K?.Language?.Syntax?.SyntaxKind],
  ];
  for (const [name, value] of needed) {
    if (value === undefined || value === null) fatal(`${PACKAGE} ${version} has no ${name}`);
  }
  // Smoke test: if this does not come out right, nothing below can be trusted.
  const text = "T | where a == h'x\\'y' // c\n| project ['b c']";
  const probe = msView(text);
  const at = (s) => text.indexOf(s);
  const ok =
    probe.strings.length === 2 &&
    probe.strings[0].value === "x'y" && probe.strings[0].start === at("h'") &&
    probe.comments.length === 1 &&
    probe.comments[0].start === at('//') && probe.comments[0].end === at('\n') &&
    probe.names.some((n) => n.type === 'bracketed' && n.value === 'b c' && n.start === at('[') && n.end === text.length);
  if (!ok) fatal(`${PACKAGE} ${version} loaded but gave unexpected results: ${JSON.stringify(probe)}`);
  return version;
}

function kindName(kind) {
  return System.Enum.toString(Kusto.Language.Syntax.SyntaxKind, kind);
}

/** Comments in a trivia string that starts at offset `base`: `//` up to the line break. */
function triviaComments(trivia, base) {
  const { TokenParser, TextFacts } = Kusto.Language.Parsing;
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
      throw new Error(`unexpected trivia character U+${ch.toString(16)} in ${JSON.stringify(trivia)}`);
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
  const code = Kusto.Language.KustoCode.Parse(text);
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
      for (let i = 0; i < list.Count; i++) {
        const d = list.getItem(i);
        diagnostics.push(`${d.Message} @${el.TextStart}`);
      }
    }
    if (el.IsToken) {
      allTokens.push({
        kind,
        missing,
        parentKind,
        start: el.TextStart,
        end: el.End,
        text: el.Text,
        value: el.ValueText,
        triviaStart: el.TriviaStart,
        trivia: el.Trivia,
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
  const tokens = allTokens.filter((t) => !t.missing);
  const strings = tokens.filter((t) => t.kind === 'StringLiteralToken');
  const directives = tokens.filter((t) => t.kind === 'DirectiveToken');
  return { tokens, strings, comments, directives, names, diagnostics };
}

/** Microsoft's lexer alone (TokenParser.ParseTokens), for a consistency check with the tree. */
function msLexical(text) {
  const list = Kusto.Language.Parsing.TokenParser.ParseTokens(text);
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

// ---------------------------------------------------------------------------------------------
// The corpus
//
// corpus.txt: queries separated by lines that are exactly `%%`. Lines starting with `%#` are
// remarks. A query written as one line `%json "..."` is that JSON string (for \r, U+2028,
// tabs…). The newline before a `%%` line belongs to the separator, not to the query.

function readCorpus(file) {
  const raw = readFileSync(file, 'utf8');
  const queries = [];
  let lines = [];
  let firstLine = 1;
  const flush = (lineNo) => {
    const body = lines.filter((l) => !l.startsWith('%#'));
    lines = [];
    const start = firstLine;
    firstLine = lineNo + 1;
    if (body.every((l) => l.trim() === '')) return;
    // Drop blank lines around the query, keep everything in between verbatim.
    while (body.length && body[0].trim() === '') body.shift();
    while (body.length && body[body.length - 1].trim() === '') body.pop();
    if (body.length === 1 && body[0].startsWith('%json ')) {
      let value;
      try {
        value = JSON.parse(body[0].slice(6));
      } catch (e) {
        fatal(`${file}:${start}: bad %json line: ${e.message}`);
      }
      if (typeof value !== 'string') fatal(`${file}:${start}: %json must hold a string`);
      queries.push({ line: start, text: value });
      return;
    }
    if (body.some((l) => l.startsWith('%'))) fatal(`${file}:${start}: unknown % line in query`);
    queries.push({ line: start, text: body.join('\n') });
  };
  const all = raw.split('\n');
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

// ---------------------------------------------------------------------------------------------
// kqlgate

function kqlgateView(bin, queries) {
  if (!existsSync(bin)) fatal(`kqlgate's kql_tokens binary not found at ${bin} (cargo build --example kql_tokens)`);
  const input = queries.map((q) => JSON.stringify(q.text)).join('\n') + '\n';
  const run = spawnSync(bin, [], { input, encoding: 'utf8', maxBuffer: 1 << 30 });
  if (run.error) fatal(`cannot run ${bin}: ${run.error.message}`);
  if (run.status !== 0) fatal(`${bin} exited with ${run.status}: ${run.stderr}`);
  const lines = run.stdout.split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== queries.length) {
    fatal(`${bin} answered ${lines.length} lines for ${queries.length} queries`);
  }
  return lines.map((l, i) => {
    try {
      return JSON.parse(l);
    } catch (e) {
      fatal(`${bin} answered a non-JSON line for query ${i + 1}: ${l}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The comparison

const q = (s) => JSON.stringify(s);
const span = (t) => `${t.start}..${t.end}`;
const within = (inner, outer) => inner.start >= outer.start && inner.end <= outer.end;
const isKeyword = (kind) => kind.endsWith('Keyword');

/**
 * A word Microsoft makes one token of and kqlgate reads as identifiers joined by touching `-`
 * or `.` (`create-or-alter` in a command, the keyword `hint.strategy`): the same text and outer
 * boundaries in another token model (kqlgate's command policy joins hyphenated words itself).
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

function compare(text, kq, ms) {
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

  // Names, Microsoft -> kqlgate: the parser's name nodes, and every identifier token.
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

  // Names, kqlgate -> Microsoft: each identifier is a Microsoft token of the same text
  // (an identifier or a keyword), or part of a keyword such as `mv-expand`, `!has`, `in~`.
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
  stats.names += ms.names.length + kBracketed.length;
  stats.identifiers += kIdents.length;
  return { problems, notes };
}

const stats = { strings: 0, comments: 0, names: 0, identifiers: 0 };

// ---------------------------------------------------------------------------------------------

function main() {
  const corpusFile = process.argv[2] ?? join(here, 'corpus.txt');
  const bin = process.env.KQL_TOKENS_BIN ?? join(here, '../../target/debug/examples/kql_tokens');
  const version = loadKusto();
  const queries = readCorpus(corpusFile);
  if (queries.length < MIN_CORPUS) fatal(`corpus ${corpusFile} has ${queries.length} queries, fewer than ${MIN_CORPUS}`);
  const answers = kqlgateView(bin, queries);
  const verbose = process.env.KQL_DIFF_VERBOSE === '1';

  console.log(`kql-diff: Microsoft Kusto.Language from ${PACKAGE} ${version}; kqlgate ${bin}; ${queries.length} queries`);
  let passed = 0;
  let failed = 0;
  const refused = [];
  const withMsErrors = [];
  const msInconsistent = [];
  const allNotes = [];
  queries.forEach((query, i) => {
    const where = `corpus.txt:${query.line} ${q(query.text)}`;
    const answer = answers[i];
    let ms;
    try {
      ms = msView(query.text);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${where}\n  Microsoft's parser threw: ${e && e.stack ? e.stack : e}`);
      return;
    }
    if (ms.diagnostics.length) withMsErrors.push(`${where}: ${ms.diagnostics.slice(0, 2).join('; ')}`);
    const lexical = msLexical(query.text);
    const sig = (list) => list.map(span).join(',');
    const parserIdentifiers = ms.tokens.filter((t) => t.kind === 'IdentifierToken');
    const differ = [
      ['strings', lexical.strings, ms.strings],
      ['comments', lexical.comments, ms.comments],
      ['identifiers', lexical.identifiers, parserIdentifiers],
    ].filter(([, a, b]) => sig(a) !== sig(b));
    if (differ.length) {
      msInconsistent.push(`${where}: ${differ.map(([what, a, b]) => `${what}: lexer [${sig(a)}] parser [${sig(b)}]`).join('; ')}`);
    }
    if ('error' in answer) {
      refused.push(`${where}: ${answer.error} at ${answer.offset}`);
      return;
    }
    if (!Array.isArray(answer.tokens)) fatal(`kqlgate answered neither tokens nor error for ${where}`);
    const { problems, notes } = compare(query.text, answer, ms);
    for (const n of notes) allNotes.push(`${where}: ${n}`);
    if (problems.length) {
      failed += 1;
      console.log(`FAIL ${where}`);
      if (ms.diagnostics.length) console.log(`  (Microsoft's parser also reports syntax errors: ${ms.diagnostics.join('; ')})`);
      for (const p of problems) console.log(`  ${p}`);
    } else {
      passed += 1;
    }
  });

  for (const r of refused) console.log(`refused (safe) ${r}`);
  if (msInconsistent.length) {
    console.log(`note: in ${msInconsistent.length} queries Microsoft's lexer and parser disagree:`);
    for (const m of msInconsistent) console.log(`  ${m}`);
  }
  const joined = allNotes.filter((n) => n.includes(': joined word: '));
  const others = allNotes.filter((n) => !n.includes(': joined word: '));
  console.log(`note: ${joined.length} words Microsoft makes one token of and kqlgate reads as identifiers joined by - or . (token model, not failures):`);
  for (const n of joined) console.log(`  ${n}`);
  console.log(`note: ${others.length} bracketed names that Microsoft's parser reads as something else (same boundaries and value)${verbose ? ':' : ' (KQL_DIFF_VERBOSE=1 lists them)'}`);
  if (verbose) for (const n of others) console.log(`  ${n}`);
  console.log(`note: ${withMsErrors.length} queries have syntax errors in Microsoft's parser${verbose ? ':' : ' (KQL_DIFF_VERBOSE=1 lists them)'}`);
  if (verbose) for (const w of withMsErrors) console.log(`  ${w}`);
  console.log(`kql-diff: in accepted queries, compared ${stats.strings} string literals, ${stats.comments} comments, ${stats.names} name nodes and bracketed names, ${stats.identifiers} kqlgate identifiers`);
  console.log(`kql-diff: ${refused.length} refused by kqlgate (safe)`);
  console.log(`kql-diff: ${passed} passed, ${failed} failed`);
  process.exit(failed > 0 ? 1 : 0);
}

main();
