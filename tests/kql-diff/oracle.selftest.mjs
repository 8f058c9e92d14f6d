// Self-test of the semantic oracle (oracle.mjs): node oracle.selftest.mjs
// Each case is a query, whether it stays inside the tenant's database, and for an outside case
// words the reason must contain (so the right check is the one that fires). Every case must
// parse without syntax errors. Exit status 1 when a case fails.
//
// The cases use a small classification table of their own (TABLE below), not
// src/kql/catalogue.tsv, so that they test the oracle rather than the table's current content.

import { createOracle } from './oracle.mjs';
import { parseTable } from './catalogue.mjs';
import { K, readSchema } from './kusto.mjs';

const TABLE = parseTable([
  'function\tcluster\trefuse:other-cluster\taddresses a cluster',
  'function\tdatabase\trule:database',
  'function\ttable\trule:entity-name',
  'function\tmaterialized_view\trule:entity-name',
  'function\texternal_table\trefuse:external-storage\treads external storage',
  'function\tentity_group\trefuse:other-database\tnames stored entities',
  'function\tcurrent_principal\trefuse:identity\treveals who is asking',
  'function\tstrcat\tallow',
  'aggregate\tdcount\trefuse:resources\trefused here only to test the aggregate path',
  'internal\t__blackbox\trefuse:internal\tis internal to Kusto',
  'plugin\tbag_unpack\tallow',
  'plugin\tgeo_polygon_lookup\tallow',
  'plugin\tautocluster\tallow',
  'plugin\tpython\trefuse:sandbox\truns sandboxed code',
  'plugin\thttp_request\trefuse:callout\tcalls a service',
  'plugin\tsql_request\trefuse:callout\tcalls a service',
  'option\tquery_now\tallow',
  'option\tnotruncation\tallow',
  'option\trequest_readonly\trule:forced-option',
  'keyword\texternaldata\trefuse:external-storage\treads external storage',
  'keyword\texternal_data\trefuse:external-storage\treads external storage',
  'keyword\tinline_external_table\trefuse:external-storage\treads external storage',
  'keyword\t__crossCluster\trefuse:other-cluster\tis internal cross-cluster syntax',
].join('\n'));

const IN = 'inside';
const OUT = 'outside';

// [expected, query, words of the reason (outside only)]
const CASES = [
  // Everyday queries
  [IN, 'StormEvents | take 10'],
  [IN, 'StormEvents | where StartTime between (datetime(2007-01-01) .. datetime(2007-12-31)) | count'],
  [IN, 'print d = datetime("2015-01-01")'],
  [IN, 'StormEvents | summarize Events = count() by State | top 5 by Events'],
  [IN, 'range x from 1 to 10 step 1 | extend y = x * 2'],
  [IN, 'datatable(a:int, b:string) [1, "x", 2, "y"] | count'],
  [IN, 'print s = strcat("database(", "\'Fabrikam\')")'],
  [IN, 'StormEvents | where EventNarrative has "cluster(\'help\')" | count'],
  [IN, 'StormEvents | project ["database"] = State, ["cluster"] = EventType'],
  [IN, 'let cluster = 1; print cluster'],
  [IN, 'let Fabrikam = StormEvents; Fabrikam | count'],
  [IN, 'StormEvents | evaluate bag_unpack(StormSummary)'],
  [IN, 'Telemetry | evaluate geo_polygon_lookup(Regions, Polygon, Lon, Lat)'],
  [IN, 'Exceptions | project Type, CloudRoleName | evaluate autocluster()'],
  [IN, 'union * | count'],
  [IN, 'union withsource=T Storm* | count'],
  [IN, 'find where State == "TEXAS"'],
  [IN, 'search "Texas" | take 5'],
  [IN, 'DailyStorms | summarize sum(Events) by State'],
  // database()
  [IN, 'database("Samples").StormEvents | count'],
  [IN, "database('samples').StormEvents | count"],
  [IN, 'database("11111111-1111-1111-1111-111111111111").StormEvents | count'],
  [IN, 'database().StormEvents | count'],
  [IN, 'database(h"Samples").StormEvents | take 1'],
  [IN, '[\'database\']("Samples").StormEvents | take 1'],
  [IN, 'let D = "Samples"; database(D).StormEvents | count'],
  [OUT, 'database("Fabrikam").StormEvents | count', 'Fabrikam'],
  [OUT, "database('FABRIKAM').Requests | count", 'Fabrikam'],
  [OUT, 'database("22222222-2222-2222-2222-222222222222").StormEvents | count', 'Fabrikam'],
  [OUT, 'database(h"Fabrikam").StormEvents | count', 'Fabrikam'],
  [OUT, '[\'database\']("Fabrikam").StormEvents | take 1', 'Fabrikam'],
  [OUT, '[h\'database\']("Fabrikam").StormEvents | take 1', 'Fabrikam'],
  [OUT, "database('Fab' 'rikam').StormEvents | count", 'Fabrikam'],
  [OUT, 'database("Fab\\u0072ikam").StormEvents | count', 'Fabrikam'],
  [OUT, 'let D = "Fabrikam"; database(D).StormEvents | count', 'Fabrikam'],
  [OUT, 'database("*").StormEvents | count', 'pattern'],
  [OUT, 'database("Sam*").StormEvents | count', 'pattern'],
  [OUT, 'database(strcat("Fab", "rikam")).StormEvents | count', 'not a constant'],
  [OUT, 'database("Nowhere").StormEvents | count', 'no known database'],
  [OUT, 'database("Fabrikam").TexasEvents | count', 'TexasEvents'],
  [OUT, 'database("Fabrikam").DailyStorms | count', 'DailyStorms'],
  [OUT, 'let StormEvents = database("Fabrikam").StormEvents; StormEvents | count', 'Fabrikam'],
  // Functions: bodies are analysed at each call with its arguments
  [IN, 'TexasEvents | count'],
  [IN, 'EventsIn("TEXAS") | count'],
  [IN, 'FailedSignins(1d) | summarize count() by UserPrincipalName'],
  [IN, 'let f = (d:string) { database(d).StormEvents | count }; f("Samples")'],
  [IN, 'let f = (d:string) { database(d).StormEvents }; StormEvents | count'],
  [IN, 'let g = (e:string) { database(e).StormEvents }; let f = (d:string) { g(d) | count }; f("Samples")'],
  [IN, 'let f = (t:string) { table(t) | count }; f("StormEvents")'],
  [IN, 'let f = (n:int) { StormEvents | take n }; let c = (T:(*)) { T | count }; f(3) | invoke c()'],
  [OUT, 'let f = (d:string) { database(d).StormEvents | count }; f("Fabrikam")', 'in the body of f'],
  [OUT, 'let f = (d:string) { database(d).StormEvents | count }; f(tostring(now()))', 'not a constant'],
  [OUT, 'let g = (e:string) { database(e).StormEvents }; let f = (d:string) { g(d) | count }; f("Fabrikam")', 'f → g'],
  [OUT, 'let f = (t:string) { table(t) | count }; f(tostring(now()))', 'not a constant'],
  [OUT, 'let f = (x:int) { database("Fabrikam").StormEvents | take x }; print 1', 'Fabrikam'],
  [OUT, 'let f = (d:string = "Fabrikam") { database(d).StormEvents }; f() | count', 'Fabrikam'],
  [OUT, 'let f = (d:string) { let g = () { database(d).StormEvents }; g() }; f("Fabrikam")', 'Fabrikam'],
  [IN, 'let f = (d:string) { let g = () { database(d).StormEvents }; g() }; f("Samples")'],
  [OUT, 'let f = (T:(*)) { T | count }; f(database("Fabrikam").StormEvents)', 'Fabrikam'],
  // A query parameter's default is what the binder sees; the request may set another value.
  [OUT, 'declare query_parameters(d:string = "Samples"); database(d).StormEvents | count', 'query parameters'],
  [OUT, 'declare query_parameters(t:string = "StormEvents"); table(t) | count', 'query parameters'],
  [IN, 'declare query_parameters(n:long = 10); database("Samples").StormEvents | take n'],
  // Joins, unions, lookups with a remote leg
  [IN, 'StormEvents | join kind=inner (PopulationData) on State'],
  [IN, 'StormEvents | lookup PopulationData on State'],
  [OUT, 'StormEvents | join kind=inner (database("Fabrikam").StormEvents) on EventId', 'Fabrikam'],
  [OUT, 'StormEvents | lookup (database("Fabrikam").PopulationData) on State', 'Fabrikam'],
  [OUT, 'union StormEvents, database("Fabrikam").StormEvents | count', 'Fabrikam'],
  [OUT, 'union database("Fabrikam").* | count', 'Fabrikam'],
  [OUT, 'find in (database("Fabrikam").StormEvents) where State == "TEXAS"', 'Fabrikam'],
  [OUT, 'search in (database("Fabrikam").StormEvents) "Texas"', 'Fabrikam'],
  // materialize, fork, facet, toscalar, view
  [IN, 'let m = materialize(StormEvents | take 10); m | count'],
  [IN, 'StormEvents | fork (count) (take 1)'],
  [IN, 'StormEvents | facet by State with (take 1)'],
  [IN, 'print n = toscalar(StormEvents | count)'],
  [IN, 'let v = view () { StormEvents | take 1 }; union v'],
  [OUT, 'let m = materialize(database("Fabrikam").StormEvents | take 10); m | count', 'Fabrikam'],
  [OUT, 'StormEvents | fork (where State == "TEXAS") (join (database("Fabrikam").StormEvents) on EventId)', 'Fabrikam'],
  [OUT, 'StormEvents | facet by State with (where EventId in ((database("Fabrikam").StormEvents | project EventId)))', 'Fabrikam'],
  [OUT, 'print n = toscalar(database("Fabrikam").StormEvents | count)', 'Fabrikam'],
  [OUT, 'let v = view () { database("Fabrikam").StormEvents }; v | count', 'Fabrikam'],
  // Clusters
  [OUT, 'cluster("kqlgate-test.westeurope.kusto.windows.net").database("Samples").StormEvents | count', 'cluster'],
  [OUT, "cluster('help').database('Samples').StormEvents | take 1", 'cluster'],
  [OUT, 'union __crossCluster=true StormEvents', '__crossCluster'],
  // External data
  [OUT, 'externaldata (a:string) [@"https://example.com/a.csv"]', 'external storage'],
  [OUT, 'external_data (a:string) [@"https://example.com/a.csv"]', 'external storage'],
  [OUT, "inline_external_table (a:string) kind=storage dataformat=csv ( h@'https://example.com/a.csv' )", 'external storage'],
  [OUT, 'external_table("Archive") | take 1', 'external table'],
  // table(), materialized_view(), stored_query_result(), graph()
  [IN, 'table("StormEvents") | count'],
  [IN, 'table("Storm*") | count'],
  [IN, 'let n = "StormEvents"; table(n) | count'],
  [IN, 'table("NoSuchTable") | count'],
  [IN, 'materialized_view("DailyStorms") | count'],
  [IN, 'stored_query_result("Snapshot") | count'],
  [IN, 'graph("Org") | graph-match (a)-[e]->(b) project a'],
  [OUT, 'table(strcat("Storm", "Events")) | count', 'not a constant'],
  [OUT, 'materialized_view(tostring(now())) | count', 'not a constant'],
  [OUT, 'database("Fabrikam").table("StormEvents") | count', 'Fabrikam'],
  // evaluate, functions, options
  [OUT, 'evaluate python(typeof(*), "result = df")', 'python'],
  [OUT, 'evaluate http_request("https://example.com")', 'http_request'],
  [OUT, 'evaluate sql_request("Server=x", "select 1")', 'sql_request'],
  [OUT, 'StormEvents | evaluate no_such_plugin()', 'does not list'],
  [OUT, 'print current_principal()', 'current_principal'],
  [OUT, 'print __blackbox(1)', '__blackbox'],
  [OUT, 'StormEvents | summarize dcount(State)', 'dcount'],
  [IN, 'set query_now = datetime(2020-01-01); StormEvents | where StartTime > ago(1d) | count'],
  [IN, 'set notruncation; StormEvents | take 1'],
  [OUT, 'set request_readonly = false; print 1', 'request_readonly'],
  [OUT, 'set no_such_option = 1; print 1', 'not in the table'],
  // macro-expand and entity groups
  [IN, 'macro-expand entity_group [StormEvents, Requests] as X (X | count)'],
  [IN, 'let g = entity_group [StormEvents, PopulationData]; macro-expand g as X (X | count)'],
  [OUT, 'macro-expand entity_group [StormEvents, database("Fabrikam").StormEvents] as X (X | count)', 'Fabrikam'],
  [OUT, 'let g = entity_group [database("Fabrikam").StormEvents]; macro-expand g as X (X | count)', 'Fabrikam'],
  [OUT, 'macro-expand StoredGroup as X (X | count)', 'entity group'],
  [OUT, 'macro-expand entity_group("G") as X (X | count)', 'entity group'],
  // alias, restrict, directives
  [OUT, 'alias database F = cluster("kqlgate-test.westeurope.kusto.windows.net").database("Fabrikam"); StormEvents | count', 'alias'],
  [IN, 'restrict access to (StormEvents); StormEvents | count'],
  [IN, 'let T = StormEvents | take 1; restrict access to (T); T | count'],
  [OUT, 'restrict access to (database("Fabrikam").*); StormEvents | count', 'Fabrikam'],
  [OUT, "#connect cluster('help').database('Samples')\nStormEvents | take 1", 'directive'],
  // Control commands
  [IN, '.show tables'],
  [IN, '.show tables (StormEvents, Requests)'],
  [IN, '.show table StormEvents schema as json'],
  [IN, '.show table StormEvents details'],
  [IN, '.show table StormEvents policy retention'],
  [IN, '.show database Samples schema'],
  [IN, '.show database ["11111111-1111-1111-1111-111111111111"] schema as json'],
  [IN, '.show database schema'],
  [IN, '.show functions'],
  [IN, '.show function EventsIn'],
  [IN, '.show materialized-views | project Name'],
  [IN, '.show tables | where TableName startswith "S"'],
  [OUT, '.show tables | join (database("Fabrikam").StormEvents) on $left.TableName == $right.State', 'Fabrikam'],
  [OUT, '.show database Fabrikam schema', 'Fabrikam'],
  [OUT, '.show database ["22222222-2222-2222-2222-222222222222"] schema as json', 'Fabrikam'],
  [OUT, '.show databases', 'control command'],
  [OUT, '.show table StormEvents principals', 'control command'],
  [IN, '.show table StormEvents extents'],
  [IN, '.show table StormEvents ingestion json mappings'],
  [IN, '.show table * policy caching'],
  [IN, '.show database Samples policy caching'],
  [IN, '.show function EventsIn schema as json'],
  [IN, '.show table Samples.StormEvents policy retention'],
  [OUT, '.show table Fabrikam.StormEvents policy caching', 'Fabrikam'],
  [OUT, '.show function EventsIn principal roles', 'control command'],
  [OUT, '.drop table StormEvents', 'control command'],
  [OUT, '.set-or-append StormEvents <| StormEvents | take 1', 'control command'],
  [OUT, '.execute database script <| .show tables', 'control command'],
  [OUT, '.show queries', 'control command'],
];

function runCase(oracle, [expected, text, words], index) {
  const { syntaxErrors, outside } = oracle.analyse(text);
  const where = `case ${index + 1} ${JSON.stringify(text)}`;
  if (syntaxErrors.length) return `${where}: syntax errors: ${syntaxErrors.join('; ')}`;
  const got = outside.length ? OUT : IN;
  if (got !== expected) return `${where}: expected ${expected}, got ${got} ${JSON.stringify(outside)}`;
  if (words && !outside.some((o) => o.reason.includes(words))) {
    return `${where}: no reason mentions ${JSON.stringify(words)}: ${JSON.stringify(outside)}`;
  }
  return null;
}

function main() {
  if (TABLE.malformed.length) throw new Error(`self-test table is malformed: ${JSON.stringify(TABLE.malformed)}`);
  const oracle = createOracle({ schema: readSchema(), table: TABLE });
  const failures = CASES.map((c, i) => runCase(oracle, c, i)).filter(Boolean);
  for (const f of failures) console.log(`FAIL ${f}`);
  const outside = CASES.filter(([expected]) => expected === OUT).length;
  console.log(`oracle self-test: ${CASES.length} cases (${CASES.length - outside} inside, ${outside} outside), ${failures.length} failed`);
  console.log(`oracle self-test: analyse takes ${timing(oracle)}`);
  return failures.length ? 1 : 0;
}

/** Average time of analyse on the cases, queries and commands apart (the first run warmed up). */
function timing(oracle) {
  const groups = { query: [], command: [] };
  for (const [, text] of CASES) {
    const start = process.hrtime.bigint();
    oracle.analyse(text);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    groups[K.KustoCode.GetKind(text) === 'Command' ? 'command' : 'query'].push(ms);
  }
  const average = (list) => (list.reduce((a, b) => a + b, 0) / list.length).toFixed(1);
  return `${average(groups.query)} ms per query (${groups.query.length}), ${average(groups.command)} ms per command (${groups.command.length})`;
}

process.exitCode = main();
