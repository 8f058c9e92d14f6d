// The function and aggregate catalogue, read from Kusto.Language (Functions.All, Aggregates.All)
// and reduced to what the generator needs to write a call: per signature, its parameters (type
// kind, declared types, argument kind, how often they occur, allowed values) and the type the
// call returns when the signature says so.

import { K, toArray } from '../kusto.mjs';

const S = K.Symbols;
const enumName = (type, value) => System.Enum.toString(type, value);

/** Names that reach outside the tenant: used only in 'outside' queries (outside.mjs). */
export const OUTSIDE_FUNCTIONS = new Set(['cluster', 'database', 'external_table', 'entity_group',
  'current_principal', 'current_principal_details', 'current_principal_is_member_of', 'current_cluster_endpoint']);
/** Entity functions, written by the source generator with constant names of tenant entities. */
const ENTITY = new Set(['table', 'materialized_view', 'stored_query_result', 'graph']);
/** Window functions: only on serialized rows (operators.mjs, serialize). */
const WINDOW = new Set(['row_number', 'row_cumsum', 'row_rank_dense', 'row_rank_min', 'row_window_session', 'prev', 'next']);
/** Graph functions: only inside graph-match (graph.mjs). */
const GRAPH = new Set(['all', 'any', 'map', 'inner_nodes', 'node_id', 'node_degree_in', 'node_degree_out', 'labels']);

const ARRAY_NAMES = /^(array_|set_|pack_array|split|range|zip|bag_keys|extract_all|series_(?!stats|fit_line$|fit_2lines$|pearson|dot|cosine)|make_list|make_set|percentiles_array|repeat|geo_(h3cell|s2cell|geohash)_(neighbors|children|rings)|to_utf8|unicode_codepoints_from|parse_csv|base64_decode_toarray|ipv4_range_to_cidr|tdigest|hll)/;

/** Return type of a call of `sig`: a scalar type name, 'array', 'bag', 'param0', 'common' or 'any'. */
function returnType(fn, sig) {
  const kind = enumName(S.ReturnTypeKind, sig.ReturnKind);
  if (kind === 'Declared') {
    const t = sig.DeclaredReturnType?.Name;
    if (t === 'dynamic') return ARRAY_NAMES.test(fn.Name) ? 'array' : 'bag';
    return t ?? 'any';
  }
  if (kind === 'Parameter0' || kind === 'Parameter0Promoted') return 'param0';
  if (kind === 'Parameter0Array') return 'array';
  if (kind === 'Common' || kind === 'CommonNonDynamic' || kind === 'Widest') return 'common';
  if (kind === 'Custom') return ARRAY_NAMES.test(fn.Name) ? 'array' : 'any';
  return 'any';
}

function param(p) {
  return {
    name: p.Name,
    tk: enumName(S.ParameterTypeKind, p.TypeKind),
    types: toArray(p.DeclaredTypes).map((t) => t.Name),
    ak: enumName(S.ArgumentKind, p.ArgumentKind),
    min: p.MinOccurring,
    max: p.MaxOccurring,
    values: toArray(p.Values).map(String),
  };
}

function model(fn, kind) {
  const name = fn.Name;
  let cls = kind;
  if (kind === 'function') {
    if (OUTSIDE_FUNCTIONS.has(name)) cls = 'outside';
    else if (ENTITY.has(name)) cls = 'entity';
    else if (WINDOW.has(name)) cls = 'window';
    else if (GRAPH.has(name)) cls = 'graph';
    else if (name === 'column_names_of') cls = 'tabular';
    else cls = 'scalar';
  }
  const sigs = toArray(fn.Signatures)
    .filter((s) => !s.IsHidden)
    .map((s) => ({ params: toArray(s.Parameters).map(param), ret: returnType(fn, s) }));
  return { name, kind, cls, hidden: fn.IsHidden || name.startsWith('__'), sigs };
}

let cached;

/**
 * The catalogue: {functions, aggregates, all, names}. `names` are the non-hidden names of
 * both lists (the denominator of the coverage figure); hidden and `__` names are never used.
 */
export function catalogue() {
  if (cached) return cached;
  const functions = toArray(K.Functions.All).map((f) => model(f, 'function')).filter((f) => !f.hidden && f.sigs.length);
  const aggregates = toArray(K.Aggregates.All).map((f) => model(f, 'aggregate')).filter((f) => !f.hidden && f.sigs.length);
  const plugins = toArray(K.PlugIns.All).map((f) => model(f, 'plugin')).filter((f) => f.sigs.length);
  const names = new Set([...functions, ...aggregates].map((f) => f.name));
  const byClass = (cls) => functions.filter((f) => f.cls === cls);
  cached = {
    functions, aggregates, names,
    plugins: new Map(plugins.map((f) => [f.name, f])),
    scalar: byClass('scalar'), window: byClass('window'), graph: byClass('graph'),
    byName: new Map(functions.map((f) => [f.name, f])),
    aggByName: new Map(aggregates.map((f) => [f.name, f])),
  };
  return cached;
}
