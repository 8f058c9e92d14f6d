// Loads Microsoft's Kusto.Language (npm @kusto/language-service-next, C# compiled to JavaScript
// with Bridge.NET) once per process and holds the helpers the kql-diff scripts share.
//
// Bridge.NET notes for readers of the C# source
// (https://github.com/microsoft/Kusto-Query-Language, src/Kusto.Language):
//   - C# properties are plain JS properties (`node.Kind`, `symbol.Name`), methods keep their
//     names (`code.GetDiagnostics()`). Overloads get suffixes, listed in
//     Kusto.Language.Bridge.d.ts: constructors `ctor`, `$ctor1`, …, methods `Name`, `Name$1`, …
//     (GlobalState.GetDatabase is the EntityGroupSymbol overload, GetDatabase$2 the Symbol one),
//     so calling the unsuffixed name can silently pick the wrong overload; the ones used here
//     say which overload they are. A C# `params` array is a JS array.
//   - .NET lists (IReadOnlyList, SyntaxList) are not JS arrays: `toArray(list)` converts them;
//     the items of a separated list are SeparatedElements, the item itself is `.Element`.
//   - enums are numbers; `kindName` turns a SyntaxKind into its C# name.
//   - `x instanceof Kusto.Language.Symbols.DatabaseSymbol` works for C# `is` tests.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const PACKAGE = '@kusto/language-service-next';

const require = createRequire(join(here, 'package.json'));
export const version = require(`${PACKAGE}/package.json`).version;
// bridge.js defines the globals `Bridge` and `System` the compiled assembly needs; the assembly
// then defines the global `Kusto`.
require(`${PACKAGE}/bridge.js`);
require(`${PACKAGE}/Kusto.Language.Bridge.js`);

/** The Kusto.Language namespace (KustoCode, GlobalState, Symbols, Syntax, Functions, …). */
export const K = globalThis.Kusto.Language;

/** A .NET list (IReadOnlyList, IEnumerable) as a JS array; null stays an empty array. */
export function toArray(list) {
  return list == null ? [] : Bridge.toArray(list);
}

/** The C# name of a SyntaxKind value, e.g. 'FunctionCallExpression'. */
export function kindName(kind) {
  return System.Enum.toString(K.Syntax.SyntaxKind, kind);
}

/**
 * Kusto's default GlobalState, made once, with the parse option KustoCode.Parse would otherwise
 * set on a new copy per call and its cache on (see globalState below): parsing with it takes
 * half the time of KustoCode.Parse(text).
 */
export const parseGlobals = (() => {
  const d = K.GlobalState.Default;
  return d.WithParseOptions(d.ParseOptions.WithAlwaysProduceEndTokens(true)).WithCache();
})();

/** Messages of the syntax errors of `text` (parse only, no semantic analysis). */
export function syntaxErrors(text) {
  return toArray(K.KustoCode.Parse(text, parseGlobals).GetDiagnostics()).map((d) => d.Message);
}

/** schema.json next to this file, parsed. */
export function readSchema(path = join(here, 'schema.json')) {
  return JSON.parse(readFileSync(path, 'utf8'));
}

/** The members of one database of schema.json: tables, materialized views, stored functions. */
function databaseMembers(schema) {
  const S = K.Symbols;
  const tables = Object.entries(schema.tables).map(
    // TableSymbol(name, schema "(a:string, …)", description)
    ([name, columns]) => new S.TableSymbol.$ctor7(name, columns, null),
  );
  const views = Object.entries(schema.materialized_views ?? {}).map(
    // MaterializedViewSymbol(name, columns "(a:string, …)", query, description); the query
    // is unknown and irrelevant here.
    ([name, columns]) => new S.MaterializedViewSymbol.$ctor3(name, columns, '', null),
  );
  const functions = Object.entries(schema.functions ?? {}).map(
    // FunctionSymbol(name, parameterList "(a:string)", body "{ … }", description)
    ([name, f]) => new S.FunctionSymbol.$ctor16(name, f.params, f.body, null),
  );
  return [...tables, ...views, ...functions];
}

/**
 * The GlobalState of schema.json: Kusto's defaults (functions, plug-ins, options) with one
 * cluster, schema.cluster, holding the tenant's and the other tenant's databases, the tenant's
 * database current. Both databases have the same tables, views and functions, as separate
 * symbols: GlobalState.GetDatabase(symbol) tells which database a resolved symbol is in.
 *
 * Each database's alias is its AlternateName, what Kusto calls the pretty name: the binder
 * resolves database("x") by comparing x, ignoring case, to the current database's Name and
 * AlternateName, then to every database of the cluster (Binder_FunctionCalls.cs,
 * GetMatchingDatabase), so database("Samples") and database("samples") both resolve to the
 * tenant's DatabaseSymbol. Build it once and reuse it: see the end of the function.
 */
export function globalState(schema) {
  const S = K.Symbols;
  // DatabaseSymbol(name, alternateName, params Symbol[] members)
  const database = (db) => new S.DatabaseSymbol.$ctor2(db.name, db.alias, databaseMembers(schema));
  const tenant = database(schema.tenant);
  const other = database(schema.other);
  // ClusterSymbol(name, params DatabaseSymbol[] databases)
  const cluster = new S.ClusterSymbol.ctor(schema.cluster, [tenant, other]);
  const globals = K.GlobalState.Default.WithCluster(cluster).WithDatabase(tenant);
  // KustoCode.Parse and ParseAndAnalyze set ParseOptions.AlwaysProduceEndTokens on the
  // GlobalState they are given; when it is not already set, that makes a new GlobalState per
  // call, which drops its KustoCache (grammar, binding cache, function body facts) and the
  // symbol-to-database maps. Setting it here and enabling the cache makes each call reuse them:
  // a third faster on the corpus, nearly three times on queries calling stored functions.
  return globals.WithParseOptions(globals.ParseOptions.WithAlwaysProduceEndTokens(true)).WithCache();
}
