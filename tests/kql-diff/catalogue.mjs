// Kusto.Language's catalogue (every keyword, function, aggregate, plugin, option and internal
// function name the parser knows) and its comparison with kqlgate's classification table,
// src/kql/catalogue.tsv (format: README.md, "Catalogue table format").
//
// Usage: node catalogue.mjs                 prints the parser's catalogue, `kind\tname` lines
//        node catalogue.mjs check [table]   compares it with the table (default
//                                           ../../src/kql/catalogue.tsv from this script)
// Exit status of check: 0 no problem, 1 problems found, 2 the check could not run.

import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const DEFAULT_TABLE = join(here, '../../src/kql/catalogue.tsv');

export const KINDS = ['keyword', 'function', 'aggregate', 'plugin', 'option', 'internal'];
export const REFUSE_CATEGORIES = [
  'other-database', 'other-cluster', 'external-storage', 'callout', 'sandbox',
  'command', 'identity', 'security-option', 'internal', 'resources',
];
const SOURCES = ['parser', 'docs'];
const RULE_NAME = /^[a-z0-9][a-z0-9_-]*$/;

// The parser is loaded here rather than by a static import so that a broken installation is a
// reported failure (exit 2), not an uncaught import error.
let kusto;
let loadError;
try {
  kusto = await import('./kusto.mjs');
} catch (e) {
  loadError = e;
}

const compare = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
const key = (kind, name) => `${kind}\t${name}`;

/**
 * Everything Kusto.Language knows, as [{kind, name}] sorted by kind then name. Hidden functions
 * are included: a hidden function is still callable, only left out of completion lists.
 */
export function parserCatalogue() {
  if (loadError) throw loadError;
  const { K, toArray } = kusto;
  const names = {
    keyword: toArray(K.Syntax.SyntaxFacts.Keywords),
    function: toArray(K.Functions.All).map((f) => f.Name),
    aggregate: toArray(K.Aggregates.All).map((f) => f.Name),
    plugin: toArray(K.PlugIns.All).map((f) => f.Name),
    option: toArray(K.Options.All).map((o) => o.Name),
    internal: toArray(K.KustoFacts.KnownInternalFunctionNames),
  };
  // Keyed by kind and name so that a name listed twice by the parser is one entry.
  const entries = new Map(KINDS.flatMap((kind) => names[kind].map((name) => [key(kind, name), { kind, name }])));
  return [...entries.values()].sort((a, b) => compare(a.kind, b.kind) || compare(a.name, b.name));
}

/** Why a class column is malformed, or null: allow | rule:<name> | refuse:<category>. */
function classProblem(cls) {
  if (cls === 'allow') return null;
  const [head, tail, ...extra] = cls.split(':');
  if (extra.length === 0 && head === 'rule' && RULE_NAME.test(tail ?? '')) return null;
  if (extra.length === 0 && head === 'refuse' && REFUSE_CATEGORIES.includes(tail)) return null;
  if (head === 'refuse') return `unknown refusal category ${JSON.stringify(tail ?? '')} (one of ${REFUSE_CATEGORIES.join(', ')})`;
  return `bad class ${JSON.stringify(cls)} (allow, rule:<name> or refuse:<category>)`;
}

/** One table line as a row, or a string saying why it is malformed. */
function parseRow(line) {
  const cells = line.split('\t');
  if (cells.length < 3 || cells.length > 5) return `${cells.length} columns, expected 3 to 5 (kind, name, class, reason, source)`;
  const [kind, name, cls, reason = '', source = ''] = cells;
  if (!KINDS.includes(kind)) return `unknown kind ${JSON.stringify(kind)} (one of ${KINDS.join(', ')})`;
  if (name === '' || name.trim() !== name) return `bad name ${JSON.stringify(name)}`;
  const problem = classProblem(cls);
  if (problem) return problem;
  if (cls.startsWith('refuse:') && reason.trim() === '') return 'a refusal needs a reason';
  if (source !== '' && !SOURCES.includes(source)) return `unknown source ${JSON.stringify(source)} (parser or docs)`;
  return { kind, name, class: cls, reason, source: source || 'parser' };
}

/**
 * A classification table's text: {rows: [{line, kind, name, class, reason, source}],
 * malformed: [{line, text, problem}]}. `#` lines and blank lines are skipped; a malformed line
 * is reported, not guessed at.
 */
export function parseTable(text) {
  const rows = [];
  const malformed = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '' || line.startsWith('#')) return;
    const row = parseRow(line);
    if (typeof row === 'string') malformed.push({ line: i + 1, text: line, problem: row });
    else rows.push({ line: i + 1, ...row });
  });
  return { rows, malformed };
}

/** The classification table at `path` (see parseTable); throws when it cannot be read. */
export function readTable(path) {
  return parseTable(readFileSync(path, 'utf8'));
}

/**
 * Compares the parser's catalogue with the table at `tablePath`:
 *   missing    parser entries no row classifies (same kind, exact name);
 *   stale      rows with source parser that the parser does not know;
 *   duplicates rows whose kind and name an earlier row already has;
 *   malformed  lines that are not a valid row.
 */
export function check(tablePath = DEFAULT_TABLE) {
  const { rows, malformed } = readTable(tablePath);
  const catalogue = parserCatalogue();
  const known = new Set(catalogue.map((e) => key(e.kind, e.name)));
  const firstRow = new Map();
  const duplicates = [];
  for (const row of rows) {
    const k = key(row.kind, row.name);
    if (firstRow.has(k)) duplicates.push({ ...row, first: firstRow.get(k).line });
    else firstRow.set(k, row);
  }
  const missing = catalogue.filter((e) => !firstRow.has(key(e.kind, e.name)));
  const stale = rows.filter((r) => r.source === 'parser' && !known.has(key(r.kind, r.name)));
  return { catalogue: catalogue.length, rows: rows.length, missing, stale, malformed, duplicates };
}

function printCheck(tablePath, result) {
  const { missing, stale, malformed, duplicates } = result;
  console.log(`catalogue: ${result.catalogue} entries in ${kusto.PACKAGE} ${kusto.version}, ${result.rows} rows in ${tablePath}`);
  console.log(`catalogue: ${missing.length} missing, ${stale.length} stale, ${duplicates.length} duplicate, ${malformed.length} malformed`);
  for (const m of missing) console.log(`missing: ${m.kind}\t${m.name} (the parser knows it, the table does not classify it)`);
  for (const s of stale) console.log(`stale: line ${s.line}: ${s.kind}\t${s.name} (source parser, but the parser does not know it; mark it docs or remove it)`);
  for (const d of duplicates) console.log(`duplicate: line ${d.line}: ${d.kind}\t${d.name} (already on line ${d.first})`);
  for (const m of malformed) console.log(`malformed: line ${m.line}: ${m.problem}: ${JSON.stringify(m.text)}`);
  return missing.length + stale.length + duplicates.length + malformed.length;
}

function main(args) {
  const [command, tableArg] = args;
  if (args.length > 2 || (command !== undefined && command !== 'check')) {
    console.error('usage: node catalogue.mjs [check [table.tsv]]');
    return 2;
  }
  const tablePath = tableArg ? resolve(tableArg) : DEFAULT_TABLE;
  try {
    if (command === undefined) {
      for (const e of parserCatalogue()) console.log(`${e.kind}\t${e.name}`);
      return 0;
    }
    return printCheck(tablePath, check(tablePath)) > 0 ? 1 : 0;
  } catch (e) {
    console.error(`catalogue: FATAL: ${e?.code ? e.message : e?.stack ?? e}`);
    console.log('catalogue: did not run');
    return 2;
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
