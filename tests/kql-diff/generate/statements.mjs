// Whole 'inside' queries: `set` of harmless options, declare query_parameters, let statements
// (scalars, dynamic lists, tabular lets, materialize, toscalar, scalar and tabular lambdas with
// typed parameters, views), restrict access to, then the query: a pipeline that may end in
// fork, facet or render, a graph query, or several queries in one batch.

import { expr, predicate, aggregate, ref } from './expressions.mjs';
import { literal } from './literals.mjs';
import { operator, render, newName, decl, norm } from './operators.mjs';
import { source, tableSource, pipeline, nested } from './tabular.mjs';
import { evaluate, dcountIntersect } from './plugins.mjs';
import { graphQuery } from './graph.mjs';

const SCALAR_TYPES = ['string', 'long', 'int', 'real', 'bool', 'datetime', 'timespan', 'dynamic', 'guid', 'decimal'];

const OPTIONS = [
  (rng) => `set query_now = ${rng.pick([literal(rng, 'datetime'), 'now()', `ago(${literal(rng, 'timespan')})`])}`,
  (rng) => `set truncationmaxrecords = ${rng.int(1, 500000)}`,
  (rng) => `set maxoutputcolumns = ${rng.int(1, 500)}`,
  (rng) => rng.pick(['set notruncation', 'set notruncation = true', 'set notruncation=false']),
  (rng) => `set query_results_cache_max_age = ${rng.pick([literal(rng, 'timespan'), 'time(1.00:00:00)'])}`,
  (rng) => `set truncationmaxsize = ${rng.int(1000, 67108864)}`,
  (rng) => `set servertimeout = ${rng.pick(['1m', '10m', 'time(00:05:00)'])}`,
  (rng) => `set query_take_max_records = ${rng.int(1, 10000)}`,
];

/** A scalar let (literal, expression, toscalar, dynamic list); records it in ctx.scalars. */
function scalarBinding(ctx) {
  const { rng } = ctx;
  const name = `_${newName(ctx, true).toLowerCase()}`;
  const choice = rng.weighted([
    [40, () => { const t = rng.pick(SCALAR_TYPES); return { text: literal(rng, t), type: t }; }],
    [20, () => { const t = rng.pick(['string', 'long', 'datetime', 'timespan', 'real']); return { text: nested(ctx, () => { ctx.shape = []; return expr(ctx, t); }), type: t }; }],
    [15, () => { const s = tableSource(ctx); return nested(ctx, () => { ctx.shape = s.shape; const a = aggregate(ctx, rng.pick(['long', 'real', 'datetime', 'any']));
      ctx.used.add('toscalar'); return { text: `toscalar(${s.text}${ctx.pipe}summarize ${a.text})`, type: norm(a.type) }; }); }],
    [10, () => ({ text: `dynamic([${Array.from({ length: rng.int(1, 4) }, () => literal(rng, 'string')).join(', ')}])`, type: 'dynamic' })],
  ]);
  ctx.scalars.push({ name, type: choice.type });
  return `let ${name} = ${choice.text};`;
}

/** A tabular let (plain or materialize, or a view): the name becomes a source. */
function tabularLet(ctx) {
  const { rng } = ctx;
  const name = `${rng.pick(['Recent', 'Base', 'Filtered', 'Top', 'Slice'])}${newName(ctx, true)}`;
  const body = nested(ctx, () => { const t = pipeline(ctx, source(ctx), rng.int(0, 3)); return { text: t, shape: ctx.shape }; });
  const form = rng.weighted([[5, 'plain'], [3, 'materialize'], [1, 'view']]);
  if (form === 'materialize') ctx.used.add('materialize');
  const text = form === 'plain' ? body.text : form === 'materialize' ? `materialize(${body.text})` : `view () { ${body.text} }`;
  ctx.sources.push({ text: name, shape: body.shape });
  return `let ${name} = ${text};`;
}

const PARAM_TYPES = ['string', 'long', 'int', 'real', 'datetime', 'timespan', 'bool', 'dynamic'];

/** A scalar lambda with typed (sometimes defaulted) parameters, called in an extend. */
function scalarLambda(ctx) {
  const { rng } = ctx;
  const name = `${rng.pick(['f', 'Calc', 'Fmt', 'Score'])}${newName(ctx, true)}`;
  const params = Array.from({ length: rng.int(1, 3) }, (_, i) => ({ name: `${rng.pick(['x', 'y', 'v', 'p'])}${i}`, type: rng.pick(PARAM_TYPES) }));
  const decls = params.map((p, i) => `${p.name}:${p.type}${i === params.length - 1 && rng.chance(0.3) ? ` = ${literal(rng, p.type)}` : ''}`);
  const bodyType = rng.pick(['string', 'long', 'real', 'bool']);
  const body = nested(ctx, () => { ctx.shape = params; return expr(ctx, bodyType); });
  ctx.calls.push(() => `${name}(${params.map((p) => expr(ctx, p.type, 2)).join(', ')})`);
  return `let ${name} = (${decls.join(', ')}) { ${body} };`;
}

/** A tabular lambda: (T:(*)) invoked, or (n:long) used as a source. */
function tabularLambda(ctx) {
  const { rng } = ctx;
  const name = `${rng.pick(['Top', 'Pick', 'Only', 'Get'])}${newName(ctx, true)}`;
  if (rng.chance(0.5)) {
    const t = rng.pick(ctx.schema.tables);
    const col = rng.pick(t.cols);
    const schema = rng.chance(0.5) ? '*' : `${col.name}:${col.type}`;
    const body = nested(ctx, () => { ctx.shape = [col]; return [`T`, operator(ctx)].join(ctx.pipe); });
    ctx.invokes.push({ name, table: t, text: `invoke ${name}()` });
    return `let ${name} = (T:(${schema})) { ${body} };`;
  }
  const s = tableSource(ctx);
  const body = nested(ctx, () => { ctx.shape = s.shape; return [s.text, `where ${predicate(ctx)}`, 'take n'].join(ctx.pipe); });
  ctx.sources.push({ text: `${name}(${rng.int(1, 100)})`, shape: s.shape });
  return `let ${name} = (n:long${rng.chance(0.3) ? ' = 10' : ''}) { ${body} };`;
}

function declareParams(ctx) {
  const { rng } = ctx;
  const ps = Array.from({ length: rng.int(1, 3) }, () => ({ name: `p_${newName(ctx, true).toLowerCase()}`, type: rng.pick(['string', 'long', 'datetime', 'timespan', 'real', 'bool']) }));
  ps.forEach((p) => ctx.scalars.push(p));
  return `declare query_parameters(${ps.map((p) => `${p.name}:${p.type}${rng.chance(0.5) ? ` = ${literal(rng, p.type)}` : ''}`).join(', ')});`;
}

/** The end of a query: nothing, render, fork, facet, evaluate, dcount_intersect. */
function ending(ctx) {
  const { rng } = ctx;
  return rng.weighted([
    [60, () => null],
    [8, () => render(ctx)],
    [6, () => `fork ${Array.from({ length: rng.int(2, 3) }, () => { const b = nested(ctx, () => Array.from({ length: rng.int(1, 2) }, () => operator(ctx)).join(ctx.pipe));
      return rng.chance(0.3) ? `${newName(ctx, true)} = (${b})` : `(${b})`; }).join(' ')}`],
    [3, () => { const cols = ctx.shape.filter((c) => c.type === 'string').slice(0, 2); if (!cols.length) return null;
      return `facet by ${cols.map((c) => ref(ctx, c.name)).join(', ')}${rng.chance(0.5) ? ` with (take ${rng.int(1, 10)})` : ''}`; }],
    [16, () => evaluate(ctx)],
    [3, () => dcountIntersect(ctx)],
  ]);
}

/** One query statement over the sources in scope. */
function queryStatement(ctx) {
  const { rng } = ctx;
  if (rng.chance(0.04)) return graphQuery(ctx).text;
  const src = ctx.sources.length && (ctx.restricted || rng.chance(0.6)) ? rng.pick(ctx.sources) : source(ctx);
  const parts = [pipeline(ctx, src, rng.int(0, 5))];
  for (const c of ctx.calls.splice(0)) { const n = newName(ctx); parts.push(`extend ${decl(ctx, n)} = ${c()}`); ctx.shape = [...ctx.shape, { name: n, type: 'dynamic' }]; }
  for (const i of ctx.invokes.splice(0)) parts.push(i.text);
  const end = ending(ctx);
  if (end) parts.push(end);
  if (rng.chance(0.1)) parts.push(`${rng.pick(['take', 'limit'])} ${rng.int(1, 100)}`);
  return parts.join(ctx.pipe);
}

/** A whole inside query. */
export function insideQuery(ctx) {
  const { rng } = ctx;
  const stmts = [];
  if (rng.chance(0.08)) for (const f of rng.sample(OPTIONS, rng.int(1, 3))) stmts.push(`${f(rng)};`);
  if (rng.chance(0.06)) stmts.push(declareParams(ctx));
  for (let i = rng.weighted([[55, 0], [25, 1], [14, 2], [6, 3]]); i > 0; i--) {
    stmts.push(rng.weighted([[30, () => scalarBinding(ctx)], [30, () => tabularLet(ctx)], [20, () => scalarLambda(ctx)], [15, () => tabularLambda(ctx)]]));
  }
  if (rng.chance(0.04)) {
    // restrict access to the tenant's tables and the let-bound tables; the query reads them.
    const ts = rng.sample(ctx.schema.tables, rng.int(1, 3)).map((t) => ({ text: t.name, shape: t.cols }));
    const lets = ctx.sources.filter((s) => /^[A-Za-z]\w*$/.test(s.text));
    ctx.sources = [...ts, ...lets];
    ctx.restricted = true;
    stmts.push(`restrict access to (${ctx.sources.map((s) => s.text).join(', ')});`);
  }
  stmts.push(queryStatement(ctx));
  if (rng.chance(0.04)) stmts[stmts.length - 1] += `;${ctx.stmtSep}${queryStatement(ctx)}`;
  return stmts.join(ctx.stmtSep);
}

