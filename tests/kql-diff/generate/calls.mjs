// Calls of catalogue functions and aggregates, written from their signatures: the number of
// arguments follows the parameters' occurrences (optional ones as a prefix, repeatable ones
// and blocks of them repeated), each argument an expression of a fitting type.

import { expr, columnOf, fits } from './expressions.mjs';
import { literal, hintFor, str, typeofLit } from './literals.mjs';
import { NUMERIC, INTEGER, SCALAR_TYPES } from './schema.mjs';

const NOT_DYNAMIC = ['string', 'long', 'int', 'real', 'datetime', 'timespan', 'guid', 'bool', 'decimal'];
const ORDERABLE = ['long', 'int', 'real', 'string', 'datetime', 'timespan', 'decimal'];

/** The types an argument of parameter kind `tk` may have. */
export function typesOfKind(tk, declared) {
  switch (tk) {
    case 'Declared': return declared.map((t) => (t === 'dynamic' ? 'dynamic' : t));
    case 'Integer': return INTEGER;
    case 'RealOrDecimal': return ['real', 'decimal'];
    case 'StringOrDynamic': return ['string', 'dynamic'];
    case 'StringOrArray': return ['string', 'array'];
    case 'IntegerOrArray': return ['long', 'array'];
    case 'DynamicArray': return ['array'];
    case 'DynamicBag': return ['bag'];
    case 'Number': case 'CommonNumber': return NUMERIC;
    case 'NumberOrBool': return [...NUMERIC, 'bool'];
    case 'Summable': case 'CommonSummable': return [...NUMERIC, 'timespan'];
    case 'Orderable': case 'CommonOrderable': return ORDERABLE;
    case 'NotRealOrBool': return ['string', 'long', 'int', 'datetime', 'guid'];
    case 'NotDynamic': return NOT_DYNAMIC;
    case 'NotBool': return SCALAR_TYPES.filter((t) => t !== 'bool');
    case 'CommonScalarOrDynamic': return SCALAR_TYPES;
    default: return SCALAR_TYPES.filter((t) => t !== 'guid');
  }
}

const isCommon = (tk) => tk.startsWith('Common');

/** Parameters of `sig` expanded to one entry per argument: optional prefix, repeated blocks. */
export function layout(rng, sig) {
  const out = [];
  const ps = sig.params;
  let optionalOpen = true;
  for (let i = 0; i < ps.length;) {
    const p = ps[i];
    if (p.max > 1) {
      const block = [p];
      while (i + block.length < ps.length && ps[i + block.length].max > 1) block.push(ps[i + block.length]);
      const lo = p.min === 0 ? 0 : Math.max(1, p.min);
      const reps = rng.int(lo, Math.max(lo, Math.min(p.max, 3)));
      for (let r = 0; r < reps; r++) out.push(...block);
      i += block.length;
      continue;
    }
    if (p.min === 0) {
      optionalOpen = optionalOpen && rng.chance(0.55);
      if (!optionalOpen) { i++; continue; }
    }
    out.push(p);
    i++;
  }
  return out;
}

/** One argument for parameter p; `state` holds the call's common type and argument types. */
function argument(ctx, p, state, depth) {
  const { rng } = ctx;
  if (p.ak === 'StarOnly') return { text: '*', type: 'any' };
  if (p.ak === 'StarAllowed' && rng.chance(0.25)) return { text: '*', type: 'any' };
  if (p.tk === 'Tabular') return { text: rng.pick(ctx.schema.tables).name, type: 'table' };
  let types;
  if (/^Parameter\d$/.test(p.tk)) types = [state.argTypes[Number(p.tk.slice(-1))] ?? 'string'];
  else if (isCommon(p.tk)) types = [state.common ??= rng.pick(typesOfKind(p.tk, p.types))];
  else types = typesOfKind(p.tk, p.types);
  // Mostly a type some column in scope has, so arguments read the rows (more for aggregates).
  const withCols = types.filter((t) => ctx.shape.some((c) => fits(c.type, t)));
  const type = withCols.length && rng.chance(ctx.aggregating ? 0.85 : 0.55) ? rng.pick(withCols) : rng.pick(types);
  if (ctx.aggregating && withCols.includes(type) && !p.values.length && rng.chance(0.7)) {
    const c = columnOf(ctx, type);
    if (c) return { text: c.text, type: c.type };
  }
  if (p.values.length) return { text: str(rng, rng.pick(p.values), { joined: false }), type: 'string' };
  if (type === 'type') return { text: typeofLit(rng), type };
  if (p.ak.startsWith('Column')) {
    const c = columnOf(ctx, types);
    if (c) return { text: c.text, type: c.type };
  }
  if (p.ak === 'Literal' || p.ak === 'LiteralNotEmpty' || p.ak === 'Constant') {
    return { text: literal(rng, type === 'dynamic' ? 'array' : type, hintFor(p.name)), type };
  }
  const hint = type === 'string' ? hintFor(p.name) : null;
  if (hint && rng.chance(0.6)) return { text: literal(rng, 'string', hint), type };
  return { text: expr(ctx, type, depth + 1), type };
}

/** Arguments text and result type of a call of fn with signature sig; `want` pins the type. */
export function callOf(ctx, fn, sig, want, depth = 0) {
  const state = { argTypes: [], common: undefined };
  const ps = layout(ctx.rng, sig);
  if (want && want !== 'any' && sig.ret === 'common') state.common = want;
  const args = ps.map((p, i) => {
    if (i === 0 && sig.ret === 'param0' && want && want !== 'any' && !p.ak.startsWith('Column') && !/^Parameter\d$/.test(p.tk)) {
      state.argTypes[0] = want;
      return expr(ctx, want, depth + 1);
    }
    const a = argument(ctx, p, state, depth);
    state.argTypes[i] = a.type;
    return a.text;
  });
  ctx.used.add(fn.name);
  let type = sig.ret;
  if (type === 'param0') type = state.argTypes[0] ?? 'any';
  if (type === 'common') type = state.common ?? state.argTypes[1] ?? 'any';
  return { text: `${fn.name}(${args.join(', ')})`, type };
}

/** How often a name was used: over accepted queries and in the query being written. */
export function usage(ctx, name) {
  return (ctx.usage.get(name) ?? 0) + (ctx.used.has(name) ? 1 : 0);
}

/** One of candidates, preferring names used least (so the catalogue gets covered). */
export function pickFn(ctx, candidates) {
  const { rng } = ctx;
  if (!candidates.length) return null;
  if (rng.chance(0.45)) return rng.pick(candidates);
  let best = null;
  for (const c of rng.sample(candidates, 6)) {
    if (!best || usage(ctx, c.fn.name) < usage(ctx, best.fn.name)) best = c;
  }
  return best;
}

/** Does a call returning `ret` give a value of type `want`? */
export function returns(ret, want, sig) {
  if (want === 'any') return true;
  if (ret === want) return true;
  if (want === 'dynamic' && (ret === 'array' || ret === 'bag')) return true;
  if ((want === 'array' || want === 'bag') && ret === 'dynamic') return true;
  if (ret === 'param0' || ret === 'common') {
    const p = sig.params[0];
    if (!p || p.ak.startsWith('Column')) return false;
    const t = typesOfKind(p.tk, p.types);
    return t.includes(want);
  }
  return false;
}

/** [{fn, sig}] of `fns` that can return `want`. Cached per (list, type). */
export function candidatesFor(fns, want, cache) {
  const key = want;
  if (cache.has(key)) return cache.get(key);
  const out = [];
  for (const fn of fns) for (const sig of fn.sigs) if (returns(sig.ret, want, sig)) out.push({ fn, sig });
  cache.set(key, out);
  return out;
}
