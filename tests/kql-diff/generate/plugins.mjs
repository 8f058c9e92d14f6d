// `evaluate` with the plugins that run inside the database (the catalogue table classifies
// them allow): arguments from each plugin's signature, typed by what the parameter is for
// (a time column, a start date, a window, a threshold …); the lookups and dcount_intersect,
// which need particular inputs, are written from templates.

import { expr, predicate, aggregate, columnOf, ref } from './expressions.mjs';
import { literal, str } from './literals.mjs';
import { layout } from './calls.mjs';
import { newName } from './operators.mjs';

export const INSIDE_PLUGINS = ['active_users_count', 'activity_counts_metrics', 'activity_engagement', 'activity_metrics',
  'autocluster', 'bag_unpack', 'basket', 'diffpatterns', 'estimate_rows_count', 'funnel_sequence',
  'funnel_sequence_completion', 'identity', 'narrow', 'new_activity_metrics', 'pivot', 'preview',
  'rolling_percentile', 'rows_near', 'sequence_detect', 'session_count', 'sliding_window_counts'];

const TIMESPAN = /window|step|bin|period|lookback|span|activeperiods/i;
const INTEGER = /^(num|max|binsper|numberof)|rows/i;

function pluginArg(ctx, p) {
  const { rng } = ctx;
  const n = p.name;
  if (p.ak === 'Aggregate') return aggregate(ctx).text;
  if (p.ak.startsWith('Column')) {
    const want = /timeline|index/i.test(n) ? ['datetime'] : /value|weight/i.test(n) ? ['real', 'long', 'int']
      : /^column$/.test(n) ? ['dynamic'] : ['string', 'long', 'int'];
    return (columnOf(ctx, want) ?? columnOf(ctx, ['string', 'long', 'datetime', 'real', 'dynamic']) ?? { text: ref(ctx, ctx.shape[0]?.name ?? 'x') }).text;
  }
  if (/^(start|end)$/i.test(n)) return rng.chance(0.7) ? literal(rng, 'datetime') : rng.pick(['now()', `ago(${literal(rng, 'timespan')})`]);
  if (TIMESPAN.test(n)) return literal(rng, 'timespan');
  if (/percentile/i.test(n)) return rng.pick(['50', '95', '99', '90.5']);
  if (INTEGER.test(n) || p.tk === 'Integer') return `${rng.int(1, 20)}`;
  if (/threshold|sizeweight/i.test(n)) return rng.pick(['0.05', '0.1', '0.5', 'real(0.2)']);
  if (/sequence/i.test(n)) return `dynamic([${rng.sample(["'login'", "'view'", "'cart'", "'pay'"], rng.int(2, 4)).join(', ')}])`;
  if (/periods/i.test(n)) return `dynamic([${literal(rng, 'timespan')}, ${literal(rng, 'timespan')}])`;
  if (p.types[0] === 'bool' || /condition|expr/i.test(n)) return predicate(ctx);
  if (/prefix/i.test(n)) return str(rng, rng.pick(['p_', 'bag_', 'x']), { joined: false, multiline: false });
  if (/cohort|split|wildcard/i.test(n)) return str(rng, rng.pick(['A', 'B', 'cohort1', '*']), { joined: false, multiline: false });
  return expr(ctx, p.types[0] ?? 'string', 1);
}

/** `evaluate plugin(…)` from the plugin's signature. */
function fromSignature(ctx, name) {
  const { rng } = ctx;
  const plugin = ctx.cat.plugins.get(name);
  const sig = rng.pick(plugin.sigs);
  const args = layout(rng, sig).map((p) => pluginArg(ctx, p));
  return `${name}(${args.join(', ')})`;
}

function lookupPlugin(ctx) {
  const { rng, schema } = ctx;
  const ip = ctx.shape.find((c) => c.type === 'string' && /ip/i.test(c.name));
  const lat = ctx.shape.find((c) => c.type === 'real' && /lat/i.test(c.name));
  const lon = ctx.shape.find((c) => c.type === 'real' && /lon/i.test(c.name));
  if (ip && rng.chance(0.6)) {
    const which = rng.chance(0.8) ? 'ipv4_lookup' : 'ipv6_lookup';
    ctx.shape = [...ctx.shape, ...schema.byName.get('IpRanges').cols.filter((c) => c.name !== 'Network')];
    return `${which}(IpRanges, ${ref(ctx, ip.name)}, Network${rng.chance(0.3) ? `, ${rng.pick(['true', 'false'])}` : ''})`;
  }
  if (lat && lon) {
    const which = rng.chance(0.75) ? 'geo_polygon_lookup' : 'geo_line_lookup';
    const radius = which === 'geo_line_lookup' || rng.chance(0.3) ? `, ${rng.int(1, 500)}.0` : '';
    ctx.shape = [...ctx.shape, { name: 'Name', type: 'string' }];
    return `${which}(Regions, Polygon, ${ref(ctx, lon.name)}, ${ref(ctx, lat.name)}${radius})`;
  }
  return null;
}

/** The text after `evaluate`, for a plugin that fits the current shape; updates ctx.shape. */
export function evaluate(ctx) {
  const { rng } = ctx;
  const hint = rng.chance(0.08) ? `${rng.pick(['hint.distribution = per_node', 'hint.distribution=single', 'hint.distribution = per_shard', 'hint.pass_filters = true'])} ` : '';
  const lookup = rng.chance(0.4) ? lookupPlugin(ctx) : null;
  if (lookup) return `evaluate ${hint}${lookup}`;
  const time = columnOf(ctx, 'datetime');
  const dyn = columnOf(ctx, 'dynamic');
  const names = INSIDE_PLUGINS.filter((n) => (time || !/activ|session|sliding|funnel|rolling|sequence/.test(n)) && (dyn || n !== 'bag_unpack'));
  const name = rng.pick(names);
  const text = fromSignature(ctx, name);
  ctx.usedPlugins?.add(name);
  if (name === 'bag_unpack') ctx.shape = ctx.shape.filter((c) => c.type !== 'dynamic');
  else if (name === 'narrow') ctx.shape = [{ name: 'Row', type: 'long' }, { name: 'Column', type: 'string' }, { name: 'Value', type: 'string' }];
  else if (!['identity', 'preview', 'rows_near'].includes(name)) {
    ctx.shape = [...(time ? [{ name: time.name, type: 'datetime' }] : []), { name: 'Count', type: 'long' }];
  }
  return `evaluate ${hint}${text}`;
}

/** summarize two hll() columns, then dcount_intersect over them. */
export function dcountIntersect(ctx) {
  const { rng } = ctx;
  const cols = ctx.shape.filter((c) => ['string', 'long', 'int'].includes(c.type));
  if (cols.length < 1) return null;
  const [a, b] = [rng.pick(cols), rng.pick(cols)];
  const h1 = newName(ctx, true);
  const h2 = newName(ctx, true);
  ctx.used.add('hll');
  ctx.shape = [{ name: h1, type: 'dynamic' }, { name: h2, type: 'dynamic' }, { name: 's0', type: 'long' }, { name: 's1', type: 'long' }];
  return `summarize ${h1} = hll(${ref(ctx, a.name)}), ${h2} = hll(${ref(ctx, b.name)})${ctx.pipe}evaluate dcount_intersect(${h1}, ${h2})`;
}
