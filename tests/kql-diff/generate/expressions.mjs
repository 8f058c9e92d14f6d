// Typed scalar expressions over the columns in scope: columns (sometimes as ['Col']), literals,
// let-bound scalars, calls of catalogue functions, and the operators of each type (comparisons,
// string operators, in, between, arithmetic, dynamic member access). And aggregates.

import { literal, str, stringValue } from './literals.mjs';
import { callOf, pickFn, candidatesFor } from './calls.mjs';
import { NUMERIC } from './schema.mjs';

const scalarCache = new Map();
const windowCache = new Map();
const aggCache = new Map();

/** A column name as written: mostly plain, sometimes bracketed ['Col'] or ["Col"]. */
export function ref(ctx, name) {
  const { rng } = ctx;
  if (!/^[A-Za-z_][A-Za-z_0-9]*$/.test(name) || rng.chance(0.08)) {
    return rng.chance(0.7) ? `['${name}']` : `["${name}"]`;
  }
  return name;
}

/** Does a value of type `have` fit where `want` is expected? */
export function fits(have, want) {
  if (want === 'any' || have === want) return true;
  if (have === 'dynamic') return want === 'array' || want === 'bag' || want === 'dynamic';
  if ((have === 'int' && want === 'long') || (have === 'long' && want === 'int')) return true;
  return false;
}

/** A column of the shape of one of `types`, as {text, type}, or null. */
export function columnOf(ctx, types) {
  const list = Array.isArray(types) ? types : [types];
  const cols = ctx.shape.filter((c) => list.some((t) => fits(c.type, t)));
  if (!cols.length) return null;
  const c = ctx.rng.pick(cols);
  return { text: ref(ctx, c.name), type: c.type, name: c.name };
}

function scalarVar(ctx, want) {
  const vars = (ctx.scalars ?? []).filter((v) => fits(v.type, want));
  return vars.length ? ctx.rng.pick(vars).name : null;
}

/** A call of a scalar function returning `want` (window functions too on serialized rows). */
export function call(ctx, want, depth) {
  const pools = [candidatesFor(ctx.cat.scalar, want, scalarCache)];
  if (ctx.serialized) pools.push(candidatesFor(ctx.cat.window, want, windowCache));
  const all = pools.length > 1 ? [...pools[0], ...pools[1]] : pools[0];
  const c = pickFn(ctx, all);
  if (!c) return null;
  return callOf(ctx, c.fn, c.sig, want, depth).text;
}

const STRING_OPS = ['==', '!=', '=~', '!~', 'has', '!has', 'has_cs', '!has_cs', 'hasprefix', '!hasprefix',
  'hassuffix', '!hassuffix', 'contains', '!contains', 'contains_cs', '!contains_cs', 'startswith',
  '!startswith', 'startswith_cs', 'endswith', '!endswith', 'endswith_cs', 'hasprefix_cs', 'hassuffix_cs'];
const CMP = ['==', '!=', '<', '<=', '>', '>='];

function between(ctx, a, type, depth) {
  const { rng } = ctx;
  const lo = expr(ctx, type, depth + 1);
  const hi = type === 'datetime' && rng.chance(0.4) ? literal(rng, 'timespan') : expr(ctx, type, depth + 1);
  const neg = rng.chance(0.2) ? '!' : '';
  return rng.chance(0.5) ? `${a} ${neg}between (${lo} .. ${hi})` : `${a} ${neg}between(${lo}..${hi})`;
}

function listOf(ctx, type, depth) {
  const n = ctx.rng.int(1, 4);
  return Array.from({ length: n }, () => (ctx.rng.chance(0.8) ? literal(ctx.rng, type) : expr(ctx, type, depth + 1))).join(', ');
}

function boolOp(ctx, depth) {
  const { rng } = ctx;
  const kinds = [
    [25, () => { const c = columnOf(ctx, 'string'); const a = c ? c.text : expr(ctx, 'string', depth + 1); return `${a} ${rng.pick(STRING_OPS)} ${literal(rng, 'string')}`; }],
    [20, () => { const t = rng.pick([...NUMERIC, 'datetime', 'timespan']); return `${expr(ctx, t, depth + 1)} ${rng.pick(CMP)} ${expr(ctx, t, depth + 1)}`; }],
    [10, () => `${expr(ctx, 'bool', depth + 1)} ${rng.pick(['and', 'or'])} ${expr(ctx, 'bool', depth + 1)}`],
    [5, () => `not(${expr(ctx, 'bool', depth + 1)})`],
    [8, () => `${expr(ctx, 'string', depth + 1)} ${rng.pick(['in', '!in', 'in~', '!in~'])} (${listOf(ctx, 'string', depth)})`],
    [4, () => `${expr(ctx, 'long', depth + 1)} ${rng.pick(['in', '!in'])} (${listOf(ctx, 'long', depth)})`],
    [5, () => `${expr(ctx, 'string', depth + 1)} ${rng.pick(['has_any', 'has_all'])} (${listOf(ctx, 'string', depth)})`],
    [8, () => { const t = rng.pick(['long', 'real', 'datetime', 'int']); return between(ctx, expr(ctx, t, depth + 1), t, depth); }],
    [4, () => `${expr(ctx, 'string', depth + 1)} matches regex ${str(rng, stringValue(rng, 'regex'), { joined: false })}`],
    [3, () => `(${expr(ctx, 'bool', depth + 1)})`],
  ];
  return rng.weighted(kinds);
}

function numOp(ctx, type, depth) {
  const { rng } = ctx;
  return rng.weighted([
    [50, () => `${expr(ctx, type, depth + 1)} ${rng.pick(['+', '-', '*', '/', '%'])} ${expr(ctx, type, depth + 1)}`],
    [10, () => { const e = expr(ctx, type, depth + 2); return e.startsWith('-') ? `-(${e})` : `-${e}`; }],
    [15, () => `(${expr(ctx, type, depth + 1)})`],
  ]);
}

function dynOp(ctx, depth) {
  const { rng } = ctx;
  const c = columnOf(ctx, 'dynamic');
  const base = c ? c.text : `parse_json(${literal(rng, 'string', 'json')})`;
  return rng.weighted([
    [30, () => `${base}.${rng.pick(['name', 'level', 'a', 'k', 'city', 'x'])}`],
    [20, () => `${base}[${str(rng, rng.pick(['a', 'k', 'id', 'tags']), { joined: false, multiline: false })}]`],
    [20, () => `${base}[${rng.int(0, 3)}]`],
    [10, () => `${base}.${rng.pick(['a', 'n'])}[${rng.int(0, 2)}]`],
  ]);
}

function typedOp(ctx, want, depth) {
  const { rng } = ctx;
  switch (want) {
    case 'bool': return boolOp(ctx, depth);
    case 'int': case 'long': case 'real': case 'decimal': return numOp(ctx, want, depth);
    case 'datetime': return rng.weighted([
      [30, () => `ago(${literal(rng, 'timespan')})`], [15, 'now()'],
      [30, () => `${expr(ctx, 'datetime', depth + 1)} ${rng.pick(['+', '-'])} ${expr(ctx, 'timespan', depth + 1)}`]]);
    case 'timespan': return rng.weighted([
      [30, () => `${expr(ctx, 'datetime', depth + 1)} - ${expr(ctx, 'datetime', depth + 1)}`],
      [20, () => `${expr(ctx, 'timespan', depth + 1)} ${rng.pick(['*', '/'])} ${rng.int(2, 10)}`]]);
    case 'dynamic': case 'array': case 'bag': return dynOp(ctx, depth);
    default: return null;
  }
}

/** An expression of type `want` ('any' for any type). */
export function expr(ctx, want = 'any', depth = 0) {
  const { rng } = ctx;
  if (want === 'any' && rng.chance(0.5)) {
    const text = call(ctx, 'any', depth);
    if (text) return text;
  }
  if (want === 'any') want = rng.pick(['string', 'long', 'real', 'bool', 'datetime', 'timespan', 'dynamic', 'int']);
  const deep = depth >= 3;
  const col = columnOf(ctx, want);
  const v = scalarVar(ctx, want);
  const choice = rng.weighted([
    [col ? 40 : 0, 'col'], [deep ? 40 : 20, 'lit'], [v ? 10 : 0, 'var'],
    [deep ? 0 : 28 - depth * 6, 'call'], [deep ? 0 : 14 - depth * 4, 'op'],
  ]);
  if (choice === 'col') return col.text;
  if (choice === 'var') return v;
  if (choice === 'call') { const t = call(ctx, want, depth); if (t) return t; }
  if (choice === 'op') { const t = typedOp(ctx, want, depth); if (t) return t; }
  return literal(rng, want === 'dynamic' ? 'array' : want);
}

/** A predicate for where/filters. */
export function predicate(ctx, depth = 0) {
  return depth < 1 && ctx.rng.chance(0.6) ? boolOp(ctx, depth) : expr(ctx, 'bool', 0);
}

/** An aggregate call, as {text, type}; `want` restricts the result type. */
export function aggregate(ctx, want = 'any') {
  const c = pickFn(ctx, candidatesFor(ctx.cat.aggregates, want, aggCache));
  if (!c) return { text: 'count()', type: 'long' };
  ctx.aggregating = true;
  const r = callOf(ctx, c.fn, c.sig, want === 'any' ? undefined : want, 1);
  ctx.aggregating = false;
  return { text: r.text, type: r.type === 'any' || r.type === 'common' ? 'dynamic' : r.type };
}
