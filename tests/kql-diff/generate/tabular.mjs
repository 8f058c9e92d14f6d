// Tabular sources of the tenant's database (tables, ['T'], database('Samples').T, table('T'),
// materialized views, stored functions, range, print, datatable, union with wildcards) and the
// operators that take another table: join, lookup, union, in (subquery), toscalar, mv-apply.

import { expr, predicate, aggregate, ref, columnOf } from './expressions.mjs';
import { literal, str } from './literals.mjs';
import { operator, newName, decl, norm } from './operators.mjs';

/** The tenant's own database, named in one of the ways that resolve to it. */
export function ownDatabase(ctx) {
  const { rng, schema } = ctx;
  const name = rng.chance(0.5) ? schema.tenant.alias : schema.tenant.name;
  const fn = rng.chance(0.9) ? 'database' : rng.pick(["['database']", '["database"]']);
  return `${fn}(${str(rng, name, { joined: rng.chance(0.2) })})`;
}

/** A column name after $left. / $right.: bracketed only when it must be. */
const plainRef = (name) => (/^[A-Za-z_]\w*$/.test(name) ? name : `['${name}']`);

const tableName = (ctx, t) => (ctx.rng.chance(0.06) ? `['${t.name}']` : t.name);

/** A table of the tenant's database, written in one of its forms; {text, shape}. */
export function tableSource(ctx, table = ctx.rng.pick(ctx.schema.tables)) {
  const { rng } = ctx;
  const text = rng.weighted([
    [80, () => tableName(ctx, table)],
    [8, () => `${ownDatabase(ctx)}.${tableName(ctx, table)}`],
    [5, () => { ctx.used.add('table'); return `table(${str(rng, table.name, { joined: false })})`; }],
  ]);
  return { text, shape: table.cols };
}

/** Any inside source: tables, views, stored functions, range, print, datatable, union. */
export function source(ctx) {
  const { rng, schema } = ctx;
  return rng.weighted([
    [70, () => tableSource(ctx)],
    [3, () => { const v = rng.pick(schema.views); ctx.used.add('materialized_view');
      return { text: rng.chance(0.5) ? v.name : `materialized_view(${str(rng, v.name, { joined: false })})`, shape: v.cols }; }],
    [4, () => { const f = rng.pick(schema.functions);
      const args = f.params.map((p) => literal(rng, p.type)).join(', ');
      return { text: f.params.length || rng.chance(0.5) ? `${f.name}(${args})` : f.name, shape: f.cols }; }],
    [4, () => { const n = newName(ctx, true);
      const [lo, hi, step] = rng.chance(0.6) ? [rng.int(0, 5), rng.int(10, 100), rng.int(1, 5)] : [`ago(${literal(rng, 'timespan')})`, 'now()', literal(rng, 'timespan')];
      return { text: `range ${n} from ${lo} to ${hi} step ${step}`, shape: [{ name: n, type: typeof lo === 'number' ? 'long' : 'datetime' }] }; }],
    [4, () => { const shape = []; ctx.shape = [];
      const items = Array.from({ length: rng.int(1, 3) }, () => { const n = newName(ctx); const t = rng.pick(['string', 'long', 'real', 'datetime', 'dynamic', 'bool']);
        shape.push({ name: n, type: t }); return `${decl(ctx, n)} = ${expr(ctx, t)}`; });
      return { text: `print ${items.join(', ')}`, shape }; }],
    [1, () => { ctx.used.add('column_names_of'); const n = newName(ctx, true);
      return { text: `print ${n} = column_names_of(${rng.pick(schema.tables).name})`, shape: [{ name: n, type: 'dynamic' }] }; }],
    [4, () => datatable(ctx)],
    [5, () => unionSource(ctx)],
    [1, () => { ctx.used.add('stored_query_result'); return { text: `stored_query_result(${str(rng, 'Cached' + rng.int(1, 3), { joined: false })})`, shape: [{ name: 'x', type: 'string' }] }; }],
  ]);
}

export function datatable(ctx) {
  const { rng } = ctx;
  const cols = Array.from({ length: rng.int(1, 3) }, () => ({ name: newName(ctx, true), type: rng.pick(['string', 'long', 'int', 'real', 'datetime', 'bool', 'dynamic', 'timespan', 'guid']) }));
  const rows = [];
  for (let r = rng.int(0, 3); r > 0; r--) for (const c of cols) rows.push(literal(rng, c.type));
  return { text: `datatable(${cols.map((c) => `${c.name}:${c.type}`).join(', ')}) [${rows.join(', ')}]`, shape: cols };
}

function unionSource(ctx) {
  const { rng, schema } = ctx;
  const legs = rng.sample(schema.tables, rng.int(1, 3)).map((t) => t.name);
  const wild = rng.chance(0.4) ? [rng.pick(['Storm*', 'Device*', 'Sign*', '*Logs', 'Req*', 'Sec*'])] : [];
  const src = rng.chance(0.5) ? `withsource=${newName(ctx, true)} ` : '';
  const opts = rng.pick(['', '', 'kind=outer ', 'kind=inner ', 'isfuzzy=true ']);
  const first = schema.byName.get(legs[0]);
  return { text: `union ${opts}${src}${[...legs, ...wild].join(', ')}`, shape: first.cols };
}

/** Runs fn with its own shape (a subquery), then restores the outer scope. */
export function nested(ctx, fn) {
  const saved = { shape: ctx.shape, serialized: ctx.serialized };
  ctx.nest = (ctx.nest ?? 0) + 1;
  try {
    return fn();
  } finally {
    ctx.nest -= 1;
    Object.assign(ctx, saved);
  }
}

/** A short pipeline over `src` that keeps column `keep`; {text, shape}. */
export function subquery(ctx, src, keep, n = ctx.rng.int(0, 2)) {
  const { rng } = ctx;
  return nested(ctx, () => {
    ctx.shape = src.shape;
    const ops = [];
    for (let i = 0; i < n; i++) {
      ops.push(rng.weighted([
        [5, () => `where ${predicate(ctx)}`],
        [2, () => `take ${rng.int(1, 500)}`],
        [2, () => { const n2 = newName(ctx, true); ctx.shape = [...ctx.shape, { name: n2, type: 'string' }]; return `extend ${n2} = ${expr(ctx, 'string')}`; }],
        [keep ? 2 : 0, () => { const a = aggregate(ctx); const n2 = newName(ctx, true); const k = ctx.shape.find((c) => c.name === keep);
          ctx.shape = [k, { name: n2, type: norm(a.type) }]; return `summarize ${n2} = ${a.text} by ${ref(ctx, keep)}`; }],
        [keep ? 0 : 2, () => operator(ctx)],
      ]));
    }
    return { text: [src.text, ...ops].join(ctx.pipe), shape: ctx.shape };
  });
}

/** A table sharing a column with the current shape: {table, key}, or null. */
function partner(ctx) {
  const { rng, schema } = ctx;
  const keys = ctx.shape.filter((c) => c.type !== 'dynamic');
  for (const k of rng.sample(keys, 4)) {
    const ts = schema.tables.filter((t) => t.cols.some((c) => c.name === k.name && c.type === k.type));
    if (ts.length) return { table: rng.pick(ts), key: k };
  }
  return null;
}

function joinOn(ctx, key, right) {
  const { rng } = ctx;
  const other = right.shape.find((c) => c.type === key.type && c.name !== key.name);
  return rng.weighted([
    [6, () => ref(ctx, key.name)],
    [3, () => `$left.${plainRef(key.name)} == $right.${plainRef(key.name)}`],
    [other ? 1 : 0, () => `${ref(ctx, key.name)}, $left.${plainRef(key.name)} == $right.${plainRef(other.name)}`],
  ]);
}

const JOIN_KINDS = ['inner', 'leftouter', 'leftanti', 'leftsemi', 'rightsemi', 'rightouter', 'rightanti', 'innerunique', 'fullouter', 'leftantisemi'];

/** join / lookup with a right side sharing a key; `right` may be given (outside.mjs). */
export function joinOp(ctx, right) {
  const { rng } = ctx;
  const p = partner(ctx);
  if ((!p && !right) || !ctx.shape.length) return right ? `union (${right.text})` : null;
  const key = p ? p.key : ctx.shape[0];
  const r = right ?? subquery(ctx, tableSource(ctx, p.table), key.name);
  const leftShape = ctx.shape;
  const on = right && !r.shape.some((c) => c.name === key.name) ? `$left.${plainRef(key.name)} == $right.${plainRef(r.shape[0].name)}` : joinOn(ctx, key, r);
  const hint = rng.chance(0.1) ? ` ${rng.pick(['hint.strategy=broadcast', 'hint.strategy=shuffle', 'hint.shufflekey=' + plainRef(key.name), 'hint.remote=local'])}` : '';
  if (rng.chance(0.25)) {
    ctx.shape = [...leftShape, ...r.shape.filter((c) => !leftShape.some((d) => d.name === c.name))];
    return `lookup${rng.chance(0.6) ? ` kind=${rng.pick(['leftouter', 'inner'])}` : ''} (${r.text}) on ${on}`;
  }
  const kind = rng.chance(0.8) ? rng.pick(JOIN_KINDS) : null;
  if (kind && /^right(semi|anti)/.test(kind)) ctx.shape = r.shape;
  else if (!kind || !/^left(semi|anti)/.test(kind)) ctx.shape = [...leftShape, ...r.shape.filter((c) => !leftShape.some((d) => d.name === c.name))];
  const rightText = !/^[A-Za-z_]\w*$/.test(r.text) || rng.chance(0.6) ? `(${r.text})` : r.text;
  return `join${kind ? ` kind=${kind}` : ''}${hint} ${rightText} on ${on}`;
}

/** One operator that reads another table (or an ordinary one when none fits). */
export function tableOp(ctx) {
  const { rng, schema } = ctx;
  return rng.weighted([
    [40, () => joinOp(ctx) ?? operator(ctx)],
    [15, () => { const legs = Array.from({ length: rng.int(1, 2) }, () => { const s = subquery(ctx, tableSource(ctx), null, rng.int(0, 1)); return s.text.includes('|') ? `(${s.text})` : s.text; });
      return `union ${rng.chance(0.3) ? `withsource=${newName(ctx, true)} ` : ''}${legs.join(', ')}`; }],
    [15, () => { const p = partner(ctx); if (!p) return operator(ctx);
      const s = subquery(ctx, tableSource(ctx, p.table), p.key.name, rng.int(0, 1));
      return `where ${ref(ctx, p.key.name)} ${rng.pick(['in', '!in'])} (${s.text}${ctx.pipe}distinct ${ref(ctx, p.key.name)})`; }],
    [15, () => { const n = newName(ctx); const t = rng.pick(schema.tables);
      const body = nested(ctx, () => { ctx.shape = t.cols; const a = aggregate(ctx, rng.pick(['long', 'real', 'any'])); return `${tableName(ctx, t)}${ctx.pipe}summarize ${a.text}`; });
      ctx.used.add('toscalar');
      ctx.shape = [...ctx.shape, { name: n, type: 'dynamic' }];
      return `extend ${decl(ctx, n)} = toscalar(${body})`; }],
    [10, () => { const c = columnOf(ctx, 'dynamic'); if (!c) return operator(ctx); const e = newName(ctx, true);
      const inner = nested(ctx, () => { ctx.shape = [...ctx.shape, { name: e, type: 'dynamic' }];
        return rng.pick([`summarize ${newName(ctx, true)} = ${aggregate(ctx).text}`, `top 1 by tolong(${e})`, `where isnotempty(${e})`, `take ${rng.int(1, 5)}`]); });
      return `mv-apply ${e} = ${c.text}${rng.chance(0.4) ? ` to typeof(${rng.pick(['long', 'string', 'real'])})` : ''} on (${inner})`; }],
    [5, () => { const c = columnOf(ctx, ['string', 'long', 'int']); if (!c) return operator(ctx);
      const inner = nested(ctx, () => operatorNoShapeChange(ctx));
      return `partition${rng.chance(0.3) ? ' hint.strategy=native' : ''} by ${c.text} (${inner})`; }],
  ]);
}

function operatorNoShapeChange(ctx) {
  const { rng } = ctx;
  const c = columnOf(ctx, ['long', 'int', 'real', 'datetime', 'string']);
  return rng.pick([`take ${rng.int(1, 10)}`, `top ${rng.int(1, 5)} by ${c ? c.text : 'rand()'}`, `where ${predicate(ctx)}`]);
}

/** A pipeline over src with n operators (some reading other tables); sets ctx.shape. */
export function pipeline(ctx, src, n) {
  const { rng } = ctx;
  ctx.shape = src.shape;
  const parts = [src.text];
  for (let i = 0; i < n; i++) {
    parts.push((ctx.nest ?? 0) < 2 && rng.chance(0.14) ? tableOp(ctx) : operator(ctx));
  }
  return parts.join(ctx.pipe);
}
