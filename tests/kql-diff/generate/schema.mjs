// schema.json as the generator needs it: the tenant's tables with typed columns, its stored
// functions and materialized views, and the names of both tenants' databases.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** "(a:string, b:long)" → [{name, type}] */
export function parseColumns(text) {
  return text
    .replace(/^\(|\)$/g, '')
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean)
    .map((c) => {
      const [name, type] = c.split(':').map((s) => s.trim());
      return { name, type };
    });
}

/** The schema: {tables: [{name, cols}], views, functions, tenant, other, cluster}. */
export function loadSchema(path = join(here, '..', 'schema.json')) {
  const raw = JSON.parse(readFileSync(path, 'utf8'));
  const tables = Object.entries(raw.tables).map(([name, cols]) => ({ name, cols: parseColumns(cols) }));
  const views = Object.entries(raw.materialized_views ?? {}).map(([name, cols]) => ({ name, cols: parseColumns(cols) }));
  const functions = Object.entries(raw.functions ?? {}).map(([name, f]) => ({
    name,
    params: parseColumns(f.params),
    // A stored function returns rows of the table its body reads.
    cols: parseColumns(raw.tables[/\{\s*(\w+)/.exec(f.body)[1]]),
  }));
  const byName = new Map(tables.map((t) => [t.name, t]));
  return { tables, views, functions, byName, tenant: raw.tenant, other: raw.other, cluster: raw.cluster };
}

/** Columns of a shape whose type is one of `types` ('*' for all). */
export function colsOf(shape, types) {
  if (types === '*') return shape;
  const set = new Set(Array.isArray(types) ? types : [types]);
  return shape.filter((c) => set.has(c.type));
}

/** Pairs of tables sharing a column of the same name and type (join and lookup keys). */
export function joinableTables(schema) {
  const pairs = [];
  for (const a of schema.tables) {
    for (const b of schema.tables) {
      const keys = a.cols.filter((c) => b.cols.some((d) => d.name === c.name && d.type === c.type && c.type !== 'dynamic'));
      if (keys.length) pairs.push({ left: a, right: b, keys });
    }
  }
  return pairs;
}

export const NUMERIC = ['int', 'long', 'real', 'decimal'];
export const INTEGER = ['int', 'long'];
export const ORDERABLE = ['int', 'long', 'real', 'decimal', 'string', 'datetime', 'timespan'];
export const SCALAR_TYPES = ['string', 'int', 'long', 'real', 'decimal', 'bool', 'datetime', 'timespan', 'dynamic', 'guid'];
