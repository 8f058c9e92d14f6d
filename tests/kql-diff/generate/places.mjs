// Whole 'outside' queries: an outside part (outside.mjs) put in one of many positions of an
// otherwise ordinary query — the main source, a join or lookup leg, a union leg, a let body,
// materialize, toscalar, a fork branch, an in() subquery, a lambda or view body, partition and
// mv-apply subqueries — or identity calls, sandbox plugins, security options, commands and
// macro-expand. Statements the part needs (let, declare, alias) come first.

import { operator, render, newName, decl } from './operators.mjs';
import { tableSource, pipeline, subquery, joinOp, nested } from './tabular.mjs';
import { insideQuery } from './statements.mjs';
import { predicate, ref } from './expressions.mjs';
import { outsideSource, sandboxPlugin, identityCall, securityOption, command, macroExpand } from './outside.mjs';

const paren = (text) => `(${text})`;
/** A source at the start of an in() subquery: a top-level comma there would make a list. */
const inner = (s) => (s.text.includes(',') ? paren(s.text) : s.text);

function ops(ctx, lo, hi) {
  const out = [];
  for (let i = ctx.rng.int(lo, hi); i > 0; i--) out.push(operator(ctx));
  return out;
}

const join = (ctx, parts) => parts.filter(Boolean).join(ctx.pipe);

/** A key both the tenant table and the outside source have (or the source's first column). */
function keyOf(ctx, s) {
  const k = s.shape.find((c) => c.type === 'string') ?? s.shape[0];
  return k.name;
}

/** The outside source S in one position of a query; returns the query text (last statement). */
function placeTabular(ctx) {
  const { rng } = ctx;
  const table = rng.pick(ctx.schema.tables);
  const s = outsideSource(ctx, table);
  const left = () => tableSource(ctx, table);
  const leg = () => subquery(ctx, s, null, rng.int(0, 1));
  return rng.weighted([
    [16, () => pipeline(ctx, s, rng.int(0, 3))],
    [14, () => { const l = pipeline(ctx, left(), rng.int(0, 2)); const j = joinOp(ctx, leg()); return join(ctx, [l, j, ...ops(ctx, 0, 2)]); }],
    [10, () => { const r = leg(); return rng.chance(0.5)
      ? join(ctx, [`union ${rng.chance(0.3) ? `withsource=${newName(ctx, true)} ` : ''}${table.name}, ${paren(r.text)}`, ...(ctx.shape = table.cols, ops(ctx, 0, 2))])
      : join(ctx, [pipeline(ctx, left(), rng.int(0, 2)), `union ${paren(r.text)}`, ...ops(ctx, 0, 1)]); }],
    [9, () => { const n = `Others${newName(ctx, true)}`; const body = leg();
      ctx.pre.push(`let ${n} = ${body.text};`); return pipeline(ctx, { text: n, shape: body.shape }, rng.int(1, 3)); }],
    [8, () => { const n = `M${newName(ctx, true)}`; ctx.used.add('materialize');
      ctx.pre.push(`let ${n} = materialize(${leg().text});`);
      return rng.chance(0.7) ? pipeline(ctx, { text: n, shape: s.shape }, rng.int(1, 2)) : `${n}${ctx.pipe}union ${n}${ctx.pipe}count`; }],
    [10, () => { ctx.used.add('toscalar'); const body = `toscalar(${join(ctx, [s.text, rng.pick(['count', `summarize ${rng.pick(['count()', 'dcount(' + keyOf(ctx, s) + ')', 'take_any(' + keyOf(ctx, s) + ')'])}`])])})`;
      return rng.weighted([
        [3, () => `print ${newName(ctx, true)} = ${body}`],
        [3, () => join(ctx, [pipeline(ctx, left(), rng.int(0, 1)), `extend ${decl(ctx, newName(ctx))} = ${body}`])],
        [2, () => { const v = `_n${newName(ctx, true)}`; ctx.pre.push(`let ${v} = ${body};`); return join(ctx, [left().text, `take ${v}`]); }],
        [1, () => `range x from 1 to ${body} step 1`],
      ]); }],
    [8, () => { const l = pipeline(ctx, left(), rng.int(0, 1)); const outsideBranch = rng.pick([
        `union ${paren(leg().text)}${ctx.pipe}count`, `where ${ref(ctx, keyOf(ctx, s))} in (${join(ctx, [inner(s), `distinct ${keyOf(ctx, s)}`])})`,
        `join kind=${rng.pick(['inner', 'leftsemi', 'leftouter'])} ${paren(s.text)} on ${keyOf(ctx, s)}`]);
      const branches = nested(ctx, () => [paren(outsideBranch), ...Array.from({ length: rng.int(1, 2) }, () => paren(join(ctx, ops(ctx, 1, 2))))]);
      return join(ctx, [l, `fork ${rng.sample(branches, branches.length).join(' ')}`]); }],
    [9, () => { const k = keyOf(ctx, s); const l = pipeline(ctx, left(), rng.int(0, 2));
      return join(ctx, [l, `where ${ref(ctx, k)} ${rng.pick(['in', '!in', 'in~'])} (${join(ctx, [inner(s), rng.chance(0.3) ? `where ${nested(ctx, () => { ctx.shape = s.shape; return predicate(ctx); })}` : '', `distinct ${k}`])})`, ...ops(ctx, 0, 2)]); }],
    [8, () => { const f = `Get${newName(ctx, true)}`; const withN = rng.chance(0.5);
      ctx.pre.push(`let ${f} = (${withN ? 'n: long' : ''}) { ${join(ctx, [s.text, withN ? 'take n' : ''])} };`);
      const call = `${f}(${withN ? rng.int(1, 100) : ''})`;
      return rng.chance(0.6) ? pipeline(ctx, { text: call, shape: s.shape }, rng.int(0, 2)) : join(ctx, [left().text, `union ${call}`, 'count']); }],
    [4, () => { const v = `V${newName(ctx, true)}`; ctx.pre.push(`let ${v} = view () { ${s.text} };`); return join(ctx, [`union ${v}`, ...(ctx.shape = s.shape, ops(ctx, 0, 2))]); }],
    [4, () => { const l = pipeline(ctx, left(), rng.int(0, 1)); const key = ctx.shape.find((c) => c.type === 'string');
      if (!key) return join(ctx, [l, `union ${paren(s.text)}`]);
      return join(ctx, [l, rng.chance(0.5) ? `partition by ${ref(ctx, key.name)} (union ${paren(join(ctx, [s.text, 'take 1']))})`
        : `mv-apply e = pack_array(${ref(ctx, key.name)}) on (where e in (${join(ctx, [inner(s), `distinct ${keyOf(ctx, s)}`])}))`]); }],
  ]);
}

function identityQuery(ctx) {
  const { rng } = ctx;
  const t = tableSource(ctx);
  return rng.weighted([
    [3, () => `print ${newName(ctx, true)} = ${identityCall(ctx)}`],
    [4, () => join(ctx, [pipeline(ctx, t, rng.int(0, 2)), `extend ${decl(ctx, newName(ctx))} = ${identityCall(ctx)}`, ...ops(ctx, 0, 1)])],
    [2, () => join(ctx, [pipeline(ctx, t, rng.int(0, 1)), `where tostring(${identityCall(ctx)}) != ''`])],
    [2, () => { const f = `Me${newName(ctx, true)}`; ctx.pre.push(`let ${f} = () { ${identityCall(ctx)} };`); return `print ${f}()`; }],
  ]);
}

function macroQuery(ctx) {
  const { rng } = ctx;
  const t = rng.pick(ctx.schema.tables);
  const body = (x) => nested(ctx, () => { ctx.shape = t.cols; return join(ctx, [`${x}.${t.name}`, ...ops(ctx, 0, 2), rng.chance(0.5) ? 'count' : '']); });
  if (rng.chance(0.3)) {
    const g = `Dbs${newName(ctx, true)}`;
    ctx.pre.push(`let ${g} = entity_group [database('${ctx.schema.other.alias}')];`);
    return `macro-expand ${g} as X (${body('X')})`;
  }
  if (rng.chance(0.1)) { ctx.used.add('entity_group'); return `entity_group(${rng.pick(["'g'", '"AllTenants"', "h'g'"])})`; }
  const m = macroExpand(ctx, body);
  return rng.chance(0.7) ? m : join(ctx, [tableSource(ctx, t).text, `union (${m})`]);
}

/** A whole outside query. */
export function outsideQuery(ctx) {
  const { rng } = ctx;
  ctx.pre = [];
  const body = rng.weighted([
    [62, () => placeTabular(ctx)],
    [8, () => identityQuery(ctx)],
    [6, () => join(ctx, [pipeline(ctx, tableSource(ctx), rng.int(0, 2)), sandboxPlugin(ctx), rng.chance(0.3) ? `take ${rng.int(1, 9)}` : ''])],
    [8, () => `${securityOption(ctx)}${ctx.stmtSep}${insideQuery(ctx)}`],
    [5, () => { ctx.noSurface = true; const c = command(ctx); return rng.chance(0.6) && !c.includes('|') ? `${c}; ${pipeline(ctx, tableSource(ctx), rng.int(0, 2))}` : c; }],
    [7, () => macroQuery(ctx)],
  ]);
  const last = ctx.noSurface || rng.chance(0.85) ? body : join(ctx, [body, render(ctx)]);
  return [...ctx.pre, last].join(ctx.stmtSep);
}
