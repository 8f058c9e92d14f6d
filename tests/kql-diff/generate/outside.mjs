// What 'outside' queries reach, in varied surfaces: tabular sources beyond the tenant's
// database (the other tenant's database by GUID, alias, case, wildcard, h'…' and joined
// literals, bracketed ['database'], let-bound names, lambda and query parameters; cluster();
// externaldata / external_data; inline_external_table; external_table; callout plugins) and
// the pieces that are not tables: identity functions, sandbox plugins, security options,
// control commands, macro-expand. Positions are chosen by places.mjs.

import { str, literal } from './literals.mjs';
import { newName } from './operators.mjs';

/** The other tenant's database name in one of its spellings (a string value). */
export function otherName(ctx) {
  const { rng, schema } = ctx;
  const alias = schema.other.alias;
  return rng.weighted([
    [30, alias], [25, schema.other.name], [5, alias.toLowerCase()], [3, alias.toUpperCase()],
    [2, 'fAbRiKaM'], [4, 'Fab*'], [3, '*'], [3, '2222*'], [2, 'F*m'], [1, '22222222-*'],
  ]);
}

/** A string literal for `value`, sometimes obfuscated (h'…', joined, \u escape). */
function lit(ctx, value) {
  const { rng } = ctx;
  if (rng.chance(0.08) && /r/.test(value)) return `'${value.replace('r', '\\u0072')}'`;
  return str(rng, value, { joined: rng.chance(0.5) });
}

const dbFn = (rng) => rng.weighted([[20, 'database'], [2, "['database']"], [2, '["database"]'], [1, "['data' 'base']"], [1, "[h'database']"]]);

/** The part after the database: a table, ['T'], table('T'), a view or a stored function. */
function member(ctx, table) {
  const { rng, schema } = ctx;
  return rng.weighted([
    [20, () => ({ text: table.name, shape: table.cols })],
    [2, () => ({ text: `['${table.name}']`, shape: table.cols })],
    [2, () => ({ text: `table(${str(rng, table.name, { joined: false })})`, shape: table.cols })],
    [1, () => ({ text: `materialized_view('${schema.views[0].name}')`, shape: schema.views[0].cols })],
    [1, () => { const f = rng.pick(schema.functions); return { text: `${f.name}(${f.params.map((p) => literal(rng, p.type)).join(', ')})`, shape: f.cols }; }],
  ]);
}

const CLUSTERS = ['help', 'help.kusto.windows.net', 'https://help.kusto.windows.net', 'fabrikam.westeurope',
  'https://fabrikam.westeurope.kusto.windows.net:443', 'kqlgate-test.westeurope.kusto.windows.net', 'kqlgate-test.westeurope'];
const URLS = ['https://fabrikamlogs.blob.core.windows.net/export/data.csv', 'https://a.blob.core.windows.net/c/x.txt?sv=2022-11-02&sig=abc',
  'abfss://c@fabrikamlake.dfs.core.windows.net/delta/events', 'https://raw.githubusercontent.com/contoso/lists/main/ips.txt'];

function urlLit(ctx) {
  const { rng } = ctx;
  const u = rng.pick(URLS);
  return rng.weighted([[4, `h@'${u}'`], [2, `@'${u}'`], [2, `'${u}'`], [1, `h'${u}'`]]);
}

function columnsDecl(ctx, table) {
  const cols = ctx.rng.sample(table.cols, ctx.rng.int(1, 3));
  return { decl: `(${cols.map((c) => `${c.name}: ${c.type}`).join(', ')})`, cols };
}

/**
 * A tabular source outside the tenant: {text, shape}; statements it needs (let, declare,
 * alias) are pushed on ctx.pre. `table` is the tenant table whose shape it mirrors.
 */
export function outsideSource(ctx, table = ctx.rng.pick(ctx.schema.tables)) {
  const { rng } = ctx;
  const m = () => member(ctx, table);
  return rng.weighted([
    [40, () => { const x = m(); return { text: `${dbFn(rng)}(${lit(ctx, otherName(ctx))}).${x.text}`, shape: x.shape }; }],
    [5, () => { const v = `_${newName(ctx, true).toLowerCase()}`; const name = otherName(ctx);
      ctx.pre.push(`let ${v} = ${rng.chance(0.7) ? lit(ctx, name) : `strcat('${name.slice(0, 3)}', '${name.slice(3)}')`};`);
      const x = m(); return { text: `database(${v}).${x.text}`, shape: x.shape }; }],
    [6, () => { const f = `ReadFrom${newName(ctx, true)}`; const x = m(); const dflt = rng.chance(0.4);
      ctx.pre.push(`let ${f} = (db: string${dflt ? ` = ${lit(ctx, otherName(ctx))}` : ''}) { database(db).${x.text} };`);
      return { text: dflt ? `${f}()` : `${f}(${lit(ctx, otherName(ctx))})`, shape: x.shape }; }],
    [3, () => { const v = `other${newName(ctx, true)}`; ctx.pre.push(`let ${v} = database(${lit(ctx, otherName(ctx))});`);
      const x = m(); return { text: `${v}.${x.text}`, shape: x.shape }; }],
    [3, () => { const d = `p_${newName(ctx, true).toLowerCase()}`;
      ctx.pre.push(`declare query_parameters(${d}: string${rng.chance(0.7) ? ` = ${lit(ctx, otherName(ctx))}` : ''});`);
      const x = m(); return { text: `database(${d}).${x.text}`, shape: x.shape }; }],
    [12, () => { const x = m(); const db = rng.chance(0.5) ? ctx.schema.tenant.alias : otherName(ctx);
      return { text: `cluster(${lit(ctx, rng.pick(CLUSTERS))}).database(${lit(ctx, db)}).${x.text}`, shape: x.shape }; }],
    [3, () => { const a = `x${newName(ctx, true).toLowerCase()}`;
      ctx.pre.push(`alias database ${a} = cluster(${lit(ctx, rng.pick(CLUSTERS))}).database(${lit(ctx, otherName(ctx))});`);
      return { text: rng.chance(0.5) ? `database('${a}').${table.name}` : `${a}.${table.name}`, shape: table.cols }; }],
    [10, () => { const { decl, cols } = columnsDecl(ctx, table); const urls = Array.from({ length: rng.int(1, 2) }, () => urlLit(ctx));
      const w = rng.chance(0.6) ? ` with (format=${rng.pick(["'csv'", "'txt'", "'json'", '"parquet"'])}${rng.chance(0.3) ? ', ignoreFirstRecord=true' : ''})` : '';
      return { text: `${rng.chance(0.8) ? 'externaldata' : 'external_data'} ${decl} [${urls.join(', ')}]${w}`, shape: cols }; }],
    [5, () => { const { decl, cols } = columnsDecl(ctx, table);
      return { text: `inline_external_table ${decl} kind=storage dataformat=${rng.pick(['csv', 'parquet', 'json'])} (${urlLit(ctx)})`, shape: cols }; }],
    [5, () => { ctx.used.add('external_table'); return { text: `external_table(${lit(ctx, rng.pick(['FabrikamExport', 'x', 'Archive']))}${rng.chance(0.3) ? ", 'csvmapping'" : ''})`, shape: table.cols }; }],
    [8, () => ({ text: `evaluate ${calloutPlugin(ctx)}`, shape: [{ name: 'ResponseBody', type: 'dynamic' }] })],
  ]);
}

/** A plugin call that leaves the database: callouts, cross-cluster, storage. */
export function calloutPlugin(ctx) {
  const { rng } = ctx;
  const api = lit(ctx, rng.pick(['https://fabrikam.example.com/api/export', 'https://api.example.org/v1/items?k=1']));
  return rng.weighted([
    [5, () => `http_request(${api}${rng.chance(0.4) ? ', dynamic({"Authorization": "Bearer x"})' : ''})`],
    [2, () => `http_request_post(${api}, dynamic({}), dynamic({}), '{"q": 1}')`],
    [3, () => `sql_request(${lit(ctx, 'Server=tcp:fabrikam.database.windows.net,1433;Initial Catalog=Fabrikam;')}, 'select * from dbo.Customers')`],
    [1, () => `mysql_request('Server=fabrikam.mysql.database.azure.com; Database=f;', 'select 1')`],
    [1, () => `cosmosdb_sql_request('AccountEndpoint=https://fabrikam.documents.azure.com:443/;Database=db;Collection=c;', 'SELECT * FROM c')`],
    [3, () => `execute_query(${lit(ctx, rng.pick(CLUSTERS))}, ${str(rng, 'StormEvents | take 1', { joined: false })})`],
    [2, () => `execute_show_command(${lit(ctx, rng.pick(CLUSTERS))}, '.show databases')`],
    [2, () => `${rng.pick(['infer_storage_schema', 'infer_storage_schema_with_suggestions'])}(dynamic({'StorageContainers': ['https://fabrikamlogs.blob.core.windows.net/c'], 'DataFormat': 'csv'}))`],
    [1, () => 'external_datatable()'],
  ]);
}

/** A sandbox plugin over the rows of the pipeline (python, r). */
export function sandboxPlugin(ctx) {
  const { rng } = ctx;
  return rng.chance(0.7)
    ? `evaluate ${rng.chance(0.2) ? 'hint.distribution=single ' : ''}python(typeof(*${rng.chance(0.3) ? ', Extra: string' : ''}), ${rng.pick(["'result = df'", '```\nimport os\nresult = df\n```', '"result = df.head(5)"'])})`
    : `evaluate r(typeof(*), ${rng.pick(["'result <- df'", '"result <- head(df)"'])})`;
}

/** An expression naming the identity kqlgate runs as, or the cluster behind it. */
export function identityCall(ctx) {
  const { rng } = ctx;
  const name = rng.pick(['current_principal', 'current_principal_details', 'current_principal_is_member_of', 'current_cluster_endpoint']);
  ctx.used.add(name);
  if (name === 'current_principal_is_member_of') return `${name}(${str(rng, rng.pick(['aadgroup=ops@fabrikam.com', 'aaduser=admin@contoso.com']), { joined: false })})`;
  return `${name}()`;
}

/** A `set` that weakens a guard, as a statement. */
export function securityOption(ctx) {
  const { rng } = ctx;
  return rng.weighted([
    [5, `set request_remote_entities_disabled=false;`], [2, `set request_callout_disabled = false;`],
    [1, `set request_external_data_disabled=false;`], [1, `set request_sandboxed_execution_disabled=false;`],
    [1, `set request_readonly = false;`], [1, () => `set request_user = ${str(rng, 'admin@fabrikam.com', { joined: false })};`],
    [1, `set REQUEST_REMOTE_ENTITIES_DISABLED = false;`], [1, `set query_force_row_level_security = false;`],
  ]);
}

/** A control command (optionally followed by a query). */
export function command(ctx) {
  return ctx.rng.pick(['.show databases', '.show cluster', '.show database Fabrikam schema', '.show databases | where DatabaseName has "Fab"', '.show principal roles']);
}

/** macro-expand over other databases or a stored entity group. */
export function macroExpand(ctx, body) {
  const { rng } = ctx;
  const group = rng.weighted([
    [3, () => `entity_group [database(${lit(ctx, otherName(ctx))}), database('${ctx.schema.tenant.alias}')]`],
    [3, () => rng.pick(['AllTenants', 'Everyone', 'TenantGroup'])],
    [2, () => { ctx.used.add('entity_group'); return `entity_group(${lit(ctx, rng.pick(['AllTenants', 'g']))})`; }],
    [1, () => `entity_group [cluster(${lit(ctx, rng.pick(CLUSTERS))}).database('Samples')]`],
  ]);
  return `macro-expand ${rng.chance(0.2) ? 'isfuzzy=true ' : ''}${group} as X (${body('X')})`;
}
