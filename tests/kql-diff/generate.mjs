// The grammar-driven generator: queries composed from Kusto.Language's operator and function
// catalogue over schema.json's tables (the grammar is in generate/). Every query it returns
// parses without syntax errors in Kusto.Language; the others are dropped and counted.
//
//   generate({count, seed}) → [{text, intent}], intent 'inside' (only the tenant's database and
//   in-database functions) or 'outside' (written to reach outside the tenant); the same seed
//   gives the same queries.
//
// Usage: node generate.mjs [count=12000] [seed=1]   prints the queries in the corpus format
// (README.md) on stdout and a summary on stderr.

import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { syntaxErrors } from './kusto.mjs';
import { Rng } from './generate/rng.mjs';
import { catalogue } from './generate/catalogue.mjs';
import { loadSchema } from './generate/schema.mjs';
import { insideQuery } from './generate/statements.mjs';
import { outsideQuery } from './generate/places.mjs';
import { surface } from './generate/surface.mjs';

const OUTSIDE_SHARE = 0.15;
/** Functions the sources write directly (database('Samples').T, cluster(…) …), for the coverage count. */
const NAMED_IN_TEXT = ['database', 'cluster', 'external_table', 'entity_group', 'table', 'materialized_view', 'toscalar', 'materialize']
  .map((name) => ({ name, re: new RegExp(`(\\b${name}|\\['${name}'\\]|\\["${name}"\\])\\s*\\(`) }));

function context(rng, shared) {
  return {
    rng, ...shared, used: new Set(), shape: [], scalars: [], sources: [], calls: [], invokes: [],
    pipe: rng.weighted([[5, '\n| '], [4, ' | '], [1, '\n    | ']]), stmtSep: rng.chance(0.7) ? '\n' : ' ',
  };
}

/**
 * {queries, stats}: stats = {generated, rejected, seconds, used, inside, names, examples}; used
 * and inside are the catalogue names (of `names`) called in all queries and in inside ones.
 * `check(text)` gives a text's syntax errors (default: kusto.mjs syntaxErrors); diff.mjs passes
 * one that runs the oracle and keeps its analysis, so each query is parsed once.
 */
export function run({ count = 12000, seed = 1, check = syntaxErrors } = {}) {
  const start = process.hrtime.bigint();
  const rng = new Rng(seed);
  const shared = { cat: catalogue(), schema: loadSchema(), usage: new Map() };
  const queries = [];
  const examples = [];
  const usedInside = new Set();
  let rejected = 0;
  while (queries.length < count) {
    const ctx = context(rng, shared);
    const intent = rng.chance(OUTSIDE_SHARE) ? 'outside' : 'inside';
    let text = intent === 'outside' ? outsideQuery(ctx) : insideQuery(ctx);
    for (const n of NAMED_IN_TEXT) if (n.re.test(text)) ctx.used.add(n.name);
    if (!ctx.noSurface && rng.chance(0.4)) text = surface(rng, text, rng.pick([0.05, 0.15, 0.3]));
    text = text.trim();
    const errors = check(text);
    if (errors.length) {
      rejected += 1;
      if (examples.length < 20) examples.push({ text, errors });
      continue;
    }
    for (const n of ctx.used) shared.usage.set(n, (shared.usage.get(n) ?? 0) + 1);
    if (intent === 'inside') for (const n of ctx.used) usedInside.add(n);
    queries.push({ text, intent });
  }
  const names = shared.cat.names;
  const used = [...names].filter((n) => shared.usage.has(n));
  const inside = [...names].filter((n) => usedInside.has(n));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { queries, stats: { generated: queries.length, rejected, seconds, used, inside, names, examples } };
}

/** The queries only (see run). */
export function generate(options) {
  return run(options).queries;
}

/** The query as corpus text: plain, or a %json line when it holds what an editor hides. */
export function corpusBlock({ text, intent }) {
  const lines = text.split('\n');
  const hidden = /[^\x20-\x7e\n]/.test(text) || lines.some((l) => l.startsWith('%') || l.trim() === '') || text !== text.trim();
  const body = hidden
    ? `%json ${JSON.stringify(text).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}`
    : text;
  return intent === 'outside' ? `%outside\n${body}` : body;
}

function main(args) {
  const count = Number(args[0] ?? 12000);
  const seed = Number(args[1] ?? 1);
  const { queries, stats } = run({ count, seed });
  process.stdout.write(`${queries.map(corpusBlock).join('\n%%\n')}\n`);
  const tried = stats.generated + stats.rejected;
  const outside = queries.filter((q) => q.intent === 'outside').length;
  const log = (s) => process.stderr.write(`${s}\n`);
  log(`generated: ${stats.generated} (${outside} outside), seed ${seed}`);
  log(`rejected for syntax errors: ${stats.rejected} of ${tried} (${(100 * stats.rejected / tried).toFixed(2)} %)`);
  log(`seconds: ${stats.seconds.toFixed(1)}`);
  const share = (n) => `${n} of ${stats.names.size} names (${(100 * n / stats.names.size).toFixed(1)} %)`;
  log(`function catalogue used: ${share(stats.used.length)}; in inside queries: ${share(stats.inside.length)}`);
  if (process.env.GENERATE_DEBUG) {
    log(`unused: ${[...stats.names].filter((n) => !stats.used.includes(n)).join(' ')}`);
    for (const e of stats.examples) log(`REJECTED ${JSON.stringify(e.text)}\n  ${e.errors.join(' / ')}`);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main(process.argv.slice(2));
