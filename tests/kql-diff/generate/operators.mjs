// Pipeline operators over a shape (ctx.shape: the columns in scope, [{name, type}]): each one
// returns its text after `|` and leaves ctx.shape as the operator's output.

import { expr, predicate, aggregate, ref, columnOf } from './expressions.mjs';
import { literal, str } from './literals.mjs';
import { NUMERIC, SCALAR_TYPES } from './schema.mjs';
import { callOf, pickFn, candidatesFor } from './calls.mjs';

const windowCache = new Map();

const WORDS = ['Total', 'Ratio', 'Value', 'Score', 'Bucket', 'Label', 'Flag', 'Metric', 'Span', 'When',
  'Part', 'Item', 'Key', 'Extra', 'Rank', 'Level', 'Delta', 'Share', 'Peak', 'Avg'];

/** The type a shape records: dynamic for arrays, bags and types the generator does not know. */
export const norm = (t) => (SCALAR_TYPES.includes(t) ? t : 'dynamic');

/** A fresh column name; sometimes one that needs brackets (['Total 3']). */
export function newName(ctx, plain = false) {
  const { rng } = ctx;
  ctx.seq = (ctx.seq ?? 0) + 1;
  const w = rng.pick(WORDS);
  return !plain && rng.chance(0.04) ? `${w} ${ctx.seq}` : `${w}${ctx.seq}`;
}

/** `name` as a declaration target: brackets when it is not an identifier. */
export const decl = (ctx, name) => (/^[A-Za-z_]\w*$/.test(name) ? (ctx.rng.chance(0.05) ? `['${name}']` : name) : `['${name}']`);

function assignments(ctx, n) {
  const { rng } = ctx;
  const out = [];
  const added = [];
  for (let i = 0; i < n; i++) {
    const name = newName(ctx);
    const type = rng.chance(0.7) ? rng.pick(['string', 'long', 'real', 'bool', 'datetime', 'timespan', 'dynamic', 'int']) : 'any';
    out.push(`${decl(ctx, name)} = ${expr(ctx, type)}`);
    added.push({ name, type: norm(type) });
  }
  return { text: out.join(', '), added };
}

const some = (ctx, cols, lo, hi) => ctx.rng.sample(cols, ctx.rng.int(lo, Math.max(lo, Math.min(hi, cols.length))));
const names = (ctx, cols) => cols.map((c) => ref(ctx, c.name)).join(', ');
const merge = (shape, added) => [...shape.filter((c) => !added.some((a) => a.name === c.name)), ...added];

function timeCol(ctx) {
  return columnOf(ctx, 'datetime');
}

/** A `by` group: a column, bin(column, size) or a named computed key; returns {text, col}. */
function groupKey(ctx) {
  const { rng } = ctx;
  const t = timeCol(ctx);
  const num = columnOf(ctx, NUMERIC);
  return rng.weighted([
    [t ? 30 : 0, () => ({ text: `bin(${t.text}, ${literal(rng, 'timespan')})`, col: { name: t.name, type: 'datetime' } })],
    [t ? 8 : 0, () => { const n = newName(ctx); return { text: `${decl(ctx, n)} = bin(${t.text}, ${rng.pick(['1d', '1h', '7d', '15m'])})`, col: { name: n, type: 'datetime' } }; }],
    [num ? 8 : 0, () => ({ text: `bin(${num.text}, ${rng.pick(['10', '100', '0.5', '1000'])})`, col: { name: num.name, type: num.type } })],
    [40, () => { const c = columnOf(ctx, ['string', 'int', 'long', 'bool']) ?? columnOf(ctx, SCALAR_TYPES); return { text: c.text, col: { name: c.name, type: c.type } }; }],
    [8, () => { const n = newName(ctx); return { text: `${decl(ctx, n)} = ${expr(ctx, 'string', 1)}`, col: { name: n, type: 'string' } }; }],
  ]);
}

export function summarize(ctx) {
  const { rng } = ctx;
  const aggs = [];
  const out = [];
  for (let i = rng.int(1, 3); i > 0; i--) {
    const a = aggregate(ctx);
    if (rng.chance(0.75) || (i === 1 && !out.length)) {
      const name = newName(ctx);
      aggs.push(`${decl(ctx, name)} = ${a.text}`);
      out.push({ name, type: norm(a.type) });
    } else aggs.push(a.text);
  }
  const keys = [];
  if (rng.chance(0.85)) for (let i = rng.int(1, 2); i > 0; i--) keys.push(groupKey(ctx));
  const hint = rng.chance(0.05) ? `${rng.pick(['hint.shufflekey = ' + ref(ctx, ctx.shape[0].name), 'hint.strategy=shuffle', 'hint.num_partitions = 4'])} ` : '';
  const by = keys.length ? ` by ${keys.map((k) => k.text).join(', ')}` : '';
  const keyCols = keys.map((k) => k.col).filter((c, i, a) => a.findIndex((d) => d.name === c.name) === i);
  ctx.shape = merge(keyCols, out);
  ctx.serialized = false;
  return `summarize ${hint}${aggs.join(', ')}${by}`;
}

function sortKeys(ctx, n) {
  const { rng } = ctx;
  return Array.from({ length: n }, () => {
    const c = columnOf(ctx, ['long', 'int', 'real', 'datetime', 'string', 'timespan', 'decimal']);
    const key = c ? c.text : expr(ctx, 'long', 1);
    const dir = rng.pick(['', ' asc', ' desc', ' desc', ' asc nulls last', ' desc nulls first']);
    return key + dir;
  }).join(', ');
}

function mvExpand(ctx) {
  const { rng } = ctx;
  const c = columnOf(ctx, 'dynamic');
  if (!c) return `extend ${assignments(ctx, 1).text}`;
  const alias = rng.chance(0.3) ? newName(ctx) : null;
  const to = rng.chance(0.3) ? ` to typeof(${rng.pick(['string', 'long', 'real', 'dynamic'])})` : '';
  const opts = rng.pick(['', '', 'bagexpansion=array ', 'bagexpansion=bag ', `with_itemindex=${newName(ctx, true)} `, 'kind=array ']);
  const limit = rng.chance(0.2) ? ` limit ${rng.int(1, 100)}` : '';
  if (alias) ctx.shape = [...ctx.shape, { name: alias, type: 'dynamic' }];
  return `mv-expand ${opts}${alias ? `${decl(ctx, alias)} = ` : ''}${c.text}${to}${limit}`;
}

function parseOp(ctx) {
  const { rng } = ctx;
  const c = columnOf(ctx, 'string');
  if (!c) return `take ${rng.int(1, 100)}`;
  const a = newName(ctx, true);
  const b = newName(ctx, true);
  const ta = rng.pick(['', ':string', ':long', ':int', ':real', ':datetime']);
  const kind = rng.weighted([[6, ''], [2, 'kind=simple '], [1, 'kind=relaxed ']]);
  const sep = () => str(rng, rng.pick(['=', ' ', ': ', 'id=', ' from ', ',']), { joined: false, multiline: false });
  const op = rng.pick(['parse', 'parse', 'parse-where']);
  ctx.shape = [...ctx.shape, { name: a, type: norm(ta.slice(1) || 'string') }, { name: b, type: 'string' }];
  if (rng.chance(0.2)) {
    return `${op} kind=regex ${c.text} with ${str(rng, '(\\w+)', { joined: false })} ${a}${ta} ${str(rng, '\\s', { joined: false })} ${b}`;
  }
  return `${op} ${kind}${c.text} with ${rng.chance(0.5) ? '* ' : ''}${sep()} ${a}${ta} ${sep()} ${b}${rng.chance(0.4) ? ' *' : ''}`;
}

function makeSeries(ctx) {
  const { rng } = ctx;
  const t = timeCol(ctx);
  if (!t) return summarize(ctx);
  const a = aggregate(ctx, rng.pick(['long', 'real', 'any']));
  const name = newName(ctx);
  const range = rng.chance(0.7) ? ` from ${rng.pick([`ago(${literal(rng, 'timespan')})`, literal(rng, 'datetime')])} to ${rng.pick(['now()', literal(rng, 'datetime')])}` : '';
  const key = columnOf(ctx, 'string');
  const def = rng.chance(0.5) ? ` default = ${rng.int(0, 1)}` : '';
  ctx.shape = [...(key ? [{ name: key.name, type: 'string' }] : []), { name, type: 'dynamic' }, { name: t.name, type: 'dynamic' }];
  return `make-series ${decl(ctx, name)} = ${a.text}${def} on ${t.text}${range} step ${rng.pick(['1h', '1d', '30m', '7d'])}${key ? ` by ${key.text}` : ''}`;
}

function serialize(ctx) {
  const { rng } = ctx;
  ctx.serialized = true;
  const order = rng.chance(0.5) ? `sort by ${sortKeys(ctx, 1)} | ` : '';
  // One window function for sure (row_number, prev, next, row_cumsum …), then free assignments.
  const w = pickFn(ctx, candidatesFor(ctx.cat.window, 'any', windowCache));
  const wname = newName(ctx);
  const wcall = callOf(ctx, w.fn, w.sig, undefined, 1);
  const { text, added } = assignments(ctx, rng.int(0, 2));
  ctx.shape = merge(ctx.shape, [{ name: wname, type: norm(wcall.type) }, ...added]);
  const first = `${decl(ctx, wname)} = ${wcall.text}`;
  const rest = text ? `, ${text}` : '';
  return rng.chance(0.5) ? `${order}serialize ${first}${rest}` : `${order}serialize | extend ${first}${rest}`;
}

function topNested(ctx) {
  const { rng } = ctx;
  const levels = [];
  const out = [];
  for (let i = rng.int(1, 3); i > 0; i--) {
    const c = columnOf(ctx, ['string', 'long', 'int']) ?? columnOf(ctx, SCALAR_TYPES);
    const name = newName(ctx);
    const others = rng.chance(0.2) ? ` with others = ${rng.pick(["'Other'", '0', "''"])}` : '';
    levels.push(`top-nested ${rng.chance(0.8) ? rng.int(2, 5) : ''} of ${c.text}${others} by ${decl(ctx, name)} = ${aggregate(ctx, rng.pick(['long', 'real', 'any'])).text}${rng.pick(['', ' desc', ' asc'])}`);
    out.push({ name: c.name, type: c.type }, { name, type: 'long' });
  }
  ctx.shape = out;
  return levels.join(', ');
}

export function render(ctx) {
  const { rng } = ctx;
  const kind = rng.pick(['timechart', 'columnchart', 'barchart', 'piechart', 'table', 'linechart', 'areachart', 'scatterchart', 'anomalychart', 'card', 'stackedareachart']);
  if (!rng.chance(0.4)) return `render ${kind}`;
  const props = rng.sample([
    () => `title=${str(rng, rng.pick(['Events by day', 'Top items', 'Trend']), { joined: false, multiline: false })}`,
    () => `xtitle=${str(rng, 'time', { joined: false, multiline: false })}`, () => `ytitle=${str(rng, 'count', { joined: false, multiline: false })}`,
    () => `legend=${rng.pick(['visible', 'hidden'])}`, () => `kind=${rng.pick(['default', 'stacked', 'unstacked', 'stacked100'])}`,
    () => `ysplit=${rng.pick(['none', 'axes', 'panels'])}`,
  ], rng.int(1, 3));
  return `render ${kind} with (${props.map((p) => p()).join(', ')})`;
}

/** One pipeline operator; `last` allows operators that must end a query (render). */
export function operator(ctx) {
  const { rng } = ctx;
  const s = ctx.shape;
  if (!s.length) {
    const { text, added } = assignments(ctx, 1);
    ctx.shape = added;
    return `extend ${text}`;
  }
  return rng.weighted([
    [22, () => `${rng.chance(0.9) ? 'where' : 'filter'} ${predicate(ctx)}`],
    [16, () => { const { text, added } = assignments(ctx, rng.int(1, 3)); ctx.shape = merge(s, added); return `extend ${text}`; }],
    [8, () => { const keep = some(ctx, s, 1, 5); const { text, added } = rng.chance(0.3) ? assignments(ctx, 1) : { text: '', added: [] };
      ctx.shape = [...keep, ...added]; return `project ${[names(ctx, keep), text].filter(Boolean).join(', ')}`; }],
    [s.length > 2 ? 5 : 0, () => { const gone = some(ctx, s, 1, 3); ctx.shape = s.filter((c) => !gone.includes(c)); return `project-away ${names(ctx, gone)}`; }],
    [s.length > 2 ? 2 : 0, () => { const keep = some(ctx, s, 1, 4); ctx.shape = keep; return `project-keep ${names(ctx, keep)}`; }],
    [4, () => { const c = rng.pick(s); const n = newName(ctx); ctx.shape = s.map((d) => (d === c ? { name: n, type: c.type } : d)); return `project-rename ${decl(ctx, n)} = ${ref(ctx, c.name)}`; }],
    [3, () => `project-reorder ${names(ctx, some(ctx, s, 1, 3))}${rng.pick(['', ' asc', ' desc'])}`],
    [12, () => summarize(ctx)],
    [6, () => `top ${rng.int(1, 50)} by ${sortKeys(ctx, 1)}`],
    [6, () => `${rng.pick(['take', 'limit'])} ${rng.int(1, 1000)}`],
    [6, () => `${rng.pick(['sort', 'order'])} by ${sortKeys(ctx, rng.int(1, 2))}`],
    [4, () => { const keep = some(ctx, s, 1, 3); ctx.shape = keep; return `distinct ${names(ctx, keep)}`; }],
    [2, () => { ctx.shape = [{ name: 'Count', type: 'long' }]; return 'count'; }],
    [2, () => `sample ${rng.int(1, 100)}`],
    [1, () => { const c = rng.pick(s); ctx.shape = [c]; return `sample-distinct ${rng.int(1, 20)} of ${ref(ctx, c.name)}`; }],
    [4, () => mvExpand(ctx)],
    [4, () => parseOp(ctx)],
    [3, () => makeSeries(ctx)],
    [4, () => serialize(ctx)],
    [2, () => topNested(ctx)],
    [2, () => `as ${rng.chance(0.2) ? 'hint.materialized=true ' : ''}${newName(ctx, true)}`],
    [1, () => { ctx.shape = [{ name: 'ColumnName', type: 'string' }, { name: 'ColumnType', type: 'string' }]; return 'getschema'; }],
  ]);
}
