// Syntax check of corpus files with Microsoft's parser: prints every query that Kusto.Language
// reports a syntax error for. Usage: node check-parse.mjs corpus/*.kql
// (The corpus format: queries separated by lines that are exactly `%%`; `%#` lines are remarks;
// `%json "..."` gives a query as a JSON string; other `%` lines inside a block are markers.)
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, 'package.json'));
require('@kusto/language-service-next/bridge.js');
require('@kusto/language-service-next/Kusto.Language.Bridge.js');
const K = globalThis.Kusto.Language;

function blocks(file) {
  const out = [];
  let lines = [];
  let first = 1;
  const flush = (n) => {
    const markers = lines.filter((l) => l.startsWith('%') && !l.startsWith('%#') && !l.startsWith('%json '));
    let body = lines.filter((l) => !l.startsWith('%') || l.startsWith('%json '));
    while (body.length && body[0].trim() === '') body.shift();
    while (body.length && body[body.length - 1].trim() === '') body.pop();
    if (body.length) {
      const text = body.length === 1 && body[0].startsWith('%json ') ? JSON.parse(body[0].slice(6)) : body.join('\n');
      out.push({ line: first, text, markers });
    }
    lines = [];
    first = n + 1;
  };
  const all = readFileSync(file, 'utf8').split('\n');
  if (all.length && all[all.length - 1] === '') all.pop();
  all.forEach((l, i) => (l === '%%' ? flush(i + 1) : (lines.length === 0 && (first = i + 1), lines.push(l))));
  flush(all.length);
  return out;
}

let bad = 0;
let total = 0;
for (const file of process.argv.slice(2)) {
  for (const q of blocks(file)) {
    total += 1;
    const diagnostics = Bridge.toArray(K.KustoCode.Parse(q.text).GetDiagnostics());
    if (diagnostics.length) {
      bad += 1;
      const d = diagnostics[0];
      console.log(`${file}:${q.line}: ${d.Message} at ${d.Start}: ${JSON.stringify(q.text.slice(0, 200))}`);
    }
  }
}
console.log(`${total} queries, ${bad} with syntax errors`);
process.exit(bad ? 1 : 0);
