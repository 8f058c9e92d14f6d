// The semantic oracle: what a query reaches, according to Microsoft's own semantic analysis.
//
// `createOracle({schema, table}).analyse(text)` runs `KustoCode.ParseAndAnalyze(text, globals)`
// with the GlobalState of schema.json and walks the bound syntax tree. It never looks at the
// text: every finding comes from a node kind, a node's ReferencedSymbol or ResultType, a
// constant value the binder computed, or the catalogue table's class for a resolved name.
//
// `outside` lists what reaches beyond the tenant's database; empty means the query sees only
// the tenant's database and in-database functions. Reported:
//   - a symbol of another database or cluster: databases, tables, materialized views,
//     functions, entity groups (GlobalState knows which database holds each symbol);
//   - database(x) unless x is a constant naming the tenant's database (not a pattern);
//   - cluster(), external_table(), entity_group(), externaldata, inline_external_table, and any
//     external table symbol;
//   - table(), materialized_view(), stored_query_result(), graph() with a name that is not a
//     constant, or that resolves to another database's entity (see entityFunctionCall for why
//     a constant naming nothing is inside);
//   - `evaluate` of a plugin the table refuses or does not list; a call of a function or
//     aggregate the table refuses; `set` of an option the table does not classify allow; a
//     keyword the table refuses (internal syntax such as __crossCluster);
//   - control commands, except ALLOWED_COMMANDS as the whole text naming only tenant entities;
//   - macro-expand over anything but an inline or let-bound entity group; alias database;
//     #connect and #database directives.
//
// Function bodies are analysed where they run: at each call, in the expansion Kusto.Language
// binds with the call's arguments (GetCalledFunctionBody), so `let f = (d:string)
// { database(d).T }; f("Samples")` is inside and f("Fabrikam") is outside. Inside the
// declaration of a function with parameters a non-constant entity name is not reported, since
// it depends on the arguments and every call is analysed on its own; a call whose body the
// binder could not expand is reported, so nothing escapes unanalysed.

import { K, toArray, globalState } from './kusto.mjs';

const S = K.Symbols;
const X = K.Syntax;
const SK = K.Syntax.SyntaxKind;
const F = K.Functions;
const SF = K.Syntax.SyntaxFacts;

/**
 * Control commands a text may be (Kusto.Language's CommandSymbol names): what kqlgate's viewer
 * policy (src/kql/command_policy.rs) lets through, each of them metadata of the tenant's own
 * database and its entities:
 *   - `.show tables [(T, …)] [details | column statistics …]`;
 *   - `.show table T` with its schema (`schema as json`, `cslschema`), `details`, `extents`,
 *     `ingestion … mappings`, data / column statistics, `columns classification`,
 *     `dimensions`, row stores, mirroring operations and every `policy …`; `.show table *
 *     policy …` and `.show table * operations mirroring-status` (every table of the database);
 *   - `.show database [tenant] schema …` / `cslschema …` and `.show database [tenant] policy …`;
 *   - `.show functions`, `.show function F [schema as json]`;
 *   - `.show materialized-views [details]`.
 * Principals and roles (ShowTablePrincipals, ShowFunctionPrincipalRoles, …) are not here:
 * they list the cluster's identities, and kqlgate refuses them.
 */
export const ALLOWED_COMMANDS = new Set([
  'ShowTables', 'ShowTablesDetails', 'ShowTablesColumnStatistics',
  'ShowTable', 'ShowTableDetails', 'ShowTableCslSchema', 'ShowTableSchemaAsJson',
  'ShowTableExtents', 'ShowTableExtentsMetadata',
  'ShowTableIngestionMappings', 'ShowTableIngestionMapping',
  'ShowTableDataStatistics', 'ShowTableColumnStatitics', 'ShowTableColumnsClassification',
  'ShowTableDimensions', 'ShowTableRowStores', 'ShowTableRowStoreReferences', 'ShowTableRowStoreSealInfo',
  'ShowTableOperationsMirroringStatus', 'ShowTableOperationsMirroringExportedArtifacts',
  'ShowTableOperationsMirroringFailures',
  'ShowTablePolicyCaching', 'ShowTablePolicyIngestionTime', 'ShowTablePolicyRowId',
  'ShowTablePolicyRetention', 'ShowTablePolicyRowLevelSecurity', 'ShowTablePolicyRowOrder',
  'ShowTablePolicyUpdate', 'ShowTablePolicyIngestionBatching', 'ShowTablePolicyEncoding',
  'ShowTablePolicyMerge', 'ShowTablePolicyMirroring', 'ShowTablePolicyPartitioning',
  'ShowTablePolicyRestrictedViewAccess', 'ShowTablePolicySharding',
  'ShowTablePolicyStreamingIngestion', 'ShowTablePolicyAutoDelete',
  'ShowTablePolicyExtentTagsRetention',
  'ShowTableStarPolicyCaching', 'ShowTableStarPolicyIngestionTime', 'ShowTableStarPolicyRetention',
  'ShowTableStarPolicyRowLevelSecurity', 'ShowTableStarPolicyRowOrder', 'ShowTableStarPolicyUpdate',
  'ShowTableStarPolicyIngestionBatching', 'ShowTableStarPolicyMerge', 'ShowTableStarPolicyMirroring',
  'ShowTableStarPolicyPartitioning', 'ShowTableStarPolicyRestrictedViewAccess',
  'ShowTableStarPolicySharding', 'ShowTableStarPolicyExtentTagsRetention',
  'ShowDatabaseSchema', 'ShowDatabaseSchemaAsJson', 'ShowDatabaseSchemaAsCslScript',
  'ShowDatabaseCslSchema', 'ShowDatabaseSchemaViolations',
  'ShowDatabasePolicyCaching', 'ShowDatabasePolicyRetention',
  'ShowDatabasePolicyHardRetentionViolations', 'ShowDatabasePolicySoftRetentionViolations',
  'ShowDatabasePolicyIngestionBatching', 'ShowDatabasePolicyEncoding', 'ShowDatabasePolicyMerge',
  'ShowDatabasePolicySharding', 'ShowDatabasePolicyShardsGrouping',
  'ShowDatabasePolicyStreamingIngestion', 'ShowDatabasePolicyManagedIdentity',
  'ShowDatabasePolicyDiagnostics', 'ShowDatabasePolicyExtentTagsRetention',
  'ShowFunctions', 'ShowFunction', 'ShowFunctionSchemaAsJson',
  'ShowMaterializedViews', 'ShowMaterializedViewsDetails',
]);

/** Entity functions whose constant argument names an entity of the database in scope. */
const ENTITY_FUNCTIONS = new Set([F.Table, F.MaterializedView, F.StoredQueryResult, F.Graph]);

/** Calls that always leave the tenant's database, whatever their arguments. */
const ALWAYS_OUTSIDE = new Map([
  [F.Cluster, 'addresses a cluster'],
  [F.ExternalTable, 'reads an external table'],
  [F.EntityGroup, 'uses a stored entity group, which may name other databases'],
]);

/** Syntax that always leaves the tenant's database. */
const NODES_OUTSIDE = new Map([
  [SK.ExternalDataExpression, 'reads external storage'],
  [SK.InlineExternalTableExpression, 'reads external storage'],
  [SK.AliasStatement, 'aliases a database'],
]);

/** Client directives the binder applies to change the current cluster and database. */
const REDIRECTING_DIRECTIVES = new Set(['connect', 'database']);

/** The built-in functions, aggregates and plugins, by symbol, with their catalogue kind. */
const BUILTIN_KIND = new Map([
  ...toArray(F.All).map((f) => [f, 'function']),
  ...toArray(K.Aggregates.All).map((f) => [f, 'aggregate']),
  ...toArray(K.PlugIns.All).map((f) => [f, 'plugin']),
]);

/** Keyword SyntaxKind → keyword text. */
const KEYWORDS = new Map(
  toArray(SF.GetKinds(K.Syntax.SyntaxCategory.Keyword)).map((kind) => [kind, SF.GetText(kind)]),
);

const isRefused = (cls) => cls?.startsWith('refuse:') ?? false;
const shorten = (s, n = 80) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const nodeText = (node) => shorten(node.ToString(X.IncludeTrivia.Minimal).trim());

/** The symbol and, for a group (wildcards, union *), its members. */
function symbolsOf(symbol) {
  if (symbol == null) return [];
  return symbol instanceof S.GroupSymbol ? toArray(symbol.Members) : [symbol];
}

function argumentsOf(call) {
  return toArray(call.ArgumentList?.Expressions).map((e) => e.Element);
}

/** The string value the binder knows for an expression (literal or constant let), or null. */
function constantString(expr) {
  const value = expr?.ConstantValueInfo?.Value;
  return typeof value === 'string' ? value : null;
}

/**
 * Whether a query declares query parameters. The binder treats a parameter's default value as
 * its constant value, but the request may set another one.
 */
function declaresQueryParameters(root) {
  return root.Kind === SK.QueryBlock
    && toArray(root.Statements).some((s) => s.Element?.Kind === SK.QueryParametersStatement);
}

/**
 * Lookup in the parsed catalogue table (readTable's result): exact name first, then ignoring
 * ASCII case, as kqlgate compares names.
 */
function classifier(table) {
  const exact = new Map();
  const folded = new Map();
  for (const row of table.rows) {
    const key = `${row.kind}\t${row.name}`;
    if (!exact.has(key)) exact.set(key, row.class);
    const lower = key.toLowerCase();
    if (!folded.has(lower)) folded.set(lower, row.class);
  }
  return (kind, name) => {
    const key = `${kind}\t${name}`;
    return exact.get(key) ?? folded.get(key.toLowerCase());
  };
}

/** The command a command text starts with (left of any `| query`), or null for a query. */
function leadingCommand(root) {
  if (root.Kind !== SK.CommandBlock) return null;
  let expr = toArray(root.Statements)[0]?.Element?.Expression;
  while (expr?.Kind === SK.PipeExpression) expr = expr.Expression;
  return expr instanceof X.Command ? expr : null;
}

export function createOracle({ schema, table }) {
  // Building the GlobalState is the costly part; one per oracle, reused by every analyse.
  const globals = globalState(schema);
  const classOf = classifier(table);
  const context = { globals, tenant: globals.Database, classOf, refusedKeywords: refusedKeywordKinds(classOf) };
  return {
    globals,
    analyse(text) {
      const code = K.KustoCode.ParseAndAnalyze(text, globals);
      const syntaxErrors = toArray(code.GetSyntaxDiagnostics()).map((d) => d.Message);
      const analysis = new Analysis(context, code.Syntax);
      analysis.visit(code.Syntax, { generic: false, anchor: null, via: null });
      return { syntaxErrors, outside: analysis.outside };
    },
  };
}

/** Keyword SyntaxKinds the table refuses, with their class. */
function refusedKeywordKinds(classOf) {
  const refused = new Map();
  for (const [kind, text] of KEYWORDS) {
    const cls = classOf('keyword', text);
    if (isRefused(cls)) refused.set(kind, cls);
  }
  return refused;
}

/**
 * One walk over one analysed text. `ctx` says where the walk is:
 *   generic  inside the declaration of a function with parameters (see the file comment);
 *   anchor   the call in the query text whose expansion is being walked (offsets point there);
 *   via      the called function's name, for the reason.
 */
class Analysis {
  constructor(context, root) {
    this.c = context;
    this.leading = leadingCommand(root);
    this.queryParameters = declaresQueryParameters(root);
    this.outside = [];
    this.seen = new Set();
    this.reportedSymbols = new Set();
    this.walkedBodies = new Set();
  }

  report(node, ctx, reason) {
    const offset = (ctx.anchor ?? node).TextStart;
    const construct = nodeText(node);
    const full = ctx.via ? `${reason} (in the body of ${ctx.via})` : reason;
    const key = `${offset}\t${construct}\t${full}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.outside.push({ construct, reason: full, offset });
  }

  visit(node, ctx) {
    this.checkSymbol(node, ctx);
    this.checkNode(node, ctx);
    const inner = node.Kind === SK.FunctionDeclaration && node.Parameters?.Parameters?.Count > 0
      ? { ...ctx, generic: true }
      : ctx;
    for (let i = 0; i < node.ChildCount; i++) {
      const child = node.GetChild(i);
      if (child == null) continue;
      if (child.IsToken) this.checkKeyword(child, node, ctx);
      else this.visit(child, inner);
    }
    if (!ctx.generic) this.visitCalledBody(node, ctx);
  }

  // --- symbols -------------------------------------------------------------------------------

  /** Why a symbol lies outside the tenant's database, or null. */
  symbolOutside(symbol) {
    const { tenant, globals } = this.c;
    if (symbol instanceof S.ClusterSymbol) return `refers to cluster ${symbol.Name}`;
    if (symbol instanceof S.DatabaseSymbol) {
      return symbol === tenant ? null : `refers to ${describeDatabase(symbol)}, not the tenant's`;
    }
    if (symbol instanceof S.ExternalTableSymbol) return `refers to external table ${symbol.Name}`;
    // GetDatabase$2 is GetDatabase(Symbol): the database holding a table, view, function…
    const owner = globals.GetDatabase$2(symbol);
    if (owner != null && owner !== tenant) return `refers to ${symbol.Name} of ${describeDatabase(owner)}`;
    return null;
  }

  checkSymbol(node, ctx) {
    for (const symbol of symbolsOf(node.ReferencedSymbol)) {
      if (this.reportedSymbols.has(symbol)) continue;
      const why = this.symbolOutside(symbol);
      if (why) {
        this.reportedSymbols.add(symbol);
        this.report(node, ctx, why);
      }
    }
  }

  // --- node kinds ----------------------------------------------------------------------------

  checkNode(node, ctx) {
    const fixed = NODES_OUTSIDE.get(node.Kind);
    if (fixed) this.report(node, ctx, fixed);
    switch (node.Kind) {
      case SK.FunctionCallExpression: return this.checkCall(node, ctx);
      case SK.EvaluateOperator: return this.checkPlugin(node, ctx);
      case SK.SetOptionStatement: return this.checkOption(node, ctx);
      case SK.MacroExpandOperator: return this.checkMacroExpand(node, ctx);
      case SK.Directive: return this.checkDirective(node, ctx);
      default:
        if (node instanceof X.Command) this.checkCommand(node, ctx);
    }
  }

  /** `#connect` and `#database` make Kusto.Language resolve names in another database. */
  checkDirective(directive, ctx) {
    if (REDIRECTING_DIRECTIVES.has(directive.Name)) {
      this.report(directive, ctx, `is a #${directive.Name} directive, which changes the database names resolve in`);
    }
  }

  /**
   * A keyword the table refuses, wherever the tree has it: internal syntax such as
   * `union __crossCluster=true` is an operator parameter whose name is the keyword token.
   */
  checkKeyword(token, parent, ctx) {
    const cls = this.c.refusedKeywords.get(token.Kind);
    if (cls) this.report(parent, ctx, `uses the keyword ${SF.GetText(token.Kind)} (${cls})`);
  }

  checkCall(call, ctx) {
    // The plugin of `evaluate` is checked as a plugin (checkPlugin), not as a function.
    if (call.Parent?.Kind === SK.EvaluateOperator) return;
    const fn = call.ReferencedSymbol;
    const always = ALWAYS_OUTSIDE.get(fn);
    if (always) return this.report(call, ctx, always);
    if (fn === F.Database) return this.databaseCall(call, ctx);
    if (ENTITY_FUNCTIONS.has(fn)) return this.entityFunctionCall(call, ctx);
    const kind = BUILTIN_KIND.get(fn);
    if (kind) {
      const cls = this.c.classOf(kind, fn.Name);
      if (isRefused(cls)) this.report(call, ctx, `calls ${kind} ${fn.Name} (${cls})`);
    } else if (fn == null || fn instanceof S.ErrorSymbol) {
      // Unknown to Kusto.Language: internal functions (__box…) and misspellings. Kusto looks
      // an unknown name up in the tenant's database, so only a name the table refuses counts.
      const name = call.Name?.SimpleName ?? '';
      const cls = ['function', 'aggregate', 'internal'].map((k) => this.c.classOf(k, name)).find(isRefused);
      if (cls) this.report(call, ctx, `calls ${name} (${cls})`);
    }
  }

  /**
   * The constant name an entity function is given, or null when it has none: not a constant,
   * or, in a query that declares query parameters, not a literal (a let or a function argument
   * may carry a parameter's value, which the request sets).
   */
  entityName(arg) {
    if (this.queryParameters && !arg.IsLiteral) return null;
    return constantString(arg);
  }

  /** Why entityName found no name. */
  get noEntityName() {
    return this.queryParameters
      ? 'with a name that is not a literal (the query declares query parameters)'
      : 'with a name that is not a constant';
  }

  databaseCall(call, ctx) {
    const [arg] = argumentsOf(call);
    if (arg === undefined) return; // database() is the current database
    const name = this.entityName(arg);
    if (name === null) {
      if (!ctx.generic) this.report(call, ctx, `calls database() ${this.noEntityName}`);
    } else if (name.includes('*')) {
      this.report(call, ctx, `calls database() with the pattern ${JSON.stringify(name)}`);
    } else if (call.ResultType !== this.c.tenant) {
      const db = call.ResultType;
      const what = db instanceof S.DatabaseSymbol && !db.IsOpen ? describeDatabase(db) : 'no known database';
      this.report(call, ctx, `calls database(${JSON.stringify(name)}), which resolves to ${what}`);
    }
  }

  /**
   * table(), materialized_view(), stored_query_result(), graph(). Kusto resolves the constant
   * name only among the entities of the database in scope (the current one, or the one a
   * `database(…).` prefix names, which is checked on its own) and raises a semantic error when
   * nothing there has that name (learn.microsoft.com, "table() function"; Binder
   * GetTableFunctionResult). So a constant that resolves to no entity reaches nothing and is
   * inside; what it resolves to must be the tenant's. A name that is not a constant cannot be
   * resolved here and is outside.
   */
  entityFunctionCall(call, ctx) {
    const [arg] = argumentsOf(call);
    if (arg === undefined || this.entityName(arg) === null) {
      if (!ctx.generic) this.report(call, ctx, `calls ${call.ReferencedSymbol.Name}() ${this.noEntityName}`);
      return;
    }
    for (const symbol of symbolsOf(call.ResultType)) {
      const why = this.symbolOutside(symbol);
      if (why) this.report(call, ctx, why);
    }
  }

  checkPlugin(evaluate, ctx) {
    const call = evaluate.FunctionCall;
    const name = call?.ReferencedSymbol?.Name ?? call?.Name?.SimpleName ?? '';
    const cls = this.c.classOf('plugin', name);
    if (cls === undefined) this.report(evaluate, ctx, `evaluates plugin ${name}, which the table does not list`);
    else if (isRefused(cls)) this.report(evaluate, ctx, `evaluates plugin ${name} (${cls})`);
  }

  checkOption(statement, ctx) {
    const name = statement.Name?.SimpleName ?? '';
    const cls = this.c.classOf('option', name);
    if (cls !== 'allow') this.report(statement, ctx, `sets option ${name} (${cls ?? 'not in the table'})`);
  }

  /**
   * macro-expand over an inline `entity_group [...]` or one a `let` of this query declares.
   * Its members are checked where the group is written. The binder also binds the body once
   * per further member (StatementList.Alternates); those are not walked, because a member is a
   * tabular entity, so the bindings differ only in which member the scope name stands for.
   */
  checkMacroExpand(node, ctx) {
    const group = node.EntityGroup;
    if (group?.Kind === SK.EntityGroupExpression) return;
    const symbol = group?.ReferencedSymbol;
    const local = symbol instanceof S.EntityGroupSymbol && this.c.globals.GetDatabase$2(symbol) == null;
    if (!local) this.report(node, ctx, 'expands a stored or unknown entity group');
  }

  checkCommand(command, ctx) {
    const name = command.ReferencedSymbol?.Name;
    const allowed = command === this.leading && command.Kind === SK.CustomCommand && ALLOWED_COMMANDS.has(name);
    if (!allowed) {
      this.report(command, ctx, `is a control command${name ? ` (${name})` : ''} that is not allowed`);
      return;
    }
    for (const db of databaseNames(command)) {
      if (db.Kind !== SK.NameReference) {
        this.report(db, ctx, 'names an entity by a path the oracle cannot resolve');
        continue;
      }
      // Commands name databases by Name only in Kusto.Language (an alias stays unresolved);
      // Kusto itself accepts the pretty name too, compared without case as database() does.
      if (db.ReferencedSymbol != null) continue; // a resolved database: checkSymbol decides
      if (!this.namesTenant(db.SimpleName)) this.report(db, ctx, `names database ${db.SimpleName}, not the tenant's`);
    }
  }

  namesTenant(name) {
    const { tenant } = this.c;
    const same = (a, b) => a.toLowerCase() === b.toLowerCase();
    return same(name, tenant.Name) || (tenant.AlternateName !== '' && same(name, tenant.AlternateName));
  }

  // --- called function bodies ----------------------------------------------------------------

  /** Walks the body of a function this node calls, as bound for this call. */
  visitCalledBody(node, ctx) {
    const fn = calledUserFunction(node);
    if (fn == null) return;
    const body = node.GetCalledFunctionBody();
    if (body == null) {
      this.report(node, ctx, `calls ${fn.Name}, whose body Kusto.Language could not expand for this call`);
      return;
    }
    if (this.walkedBodies.has(body)) return;
    this.walkedBodies.add(body);
    this.visit(body, { generic: false, anchor: ctx.anchor ?? node, via: ctx.via ? `${ctx.via} → ${fn.Name}` : fn.Name });
  }
}

/**
 * The user-defined function (stored or `let`) a call or a bare name reference calls, or null.
 * A name reference that is the name of a call is left to the call; one in a command's grammar
 * (`.show function F`) names the function without calling it.
 */
function calledUserFunction(node) {
  if (node.Kind !== SK.FunctionCallExpression && node.Kind !== SK.NameReference) return null;
  const fn = node.ReferencedSymbol;
  if (!(fn instanceof S.FunctionSymbol) || BUILTIN_KIND.has(fn)) return null;
  const parent = node.Parent;
  if (node.Kind === SK.NameReference) {
    if (parent?.Kind === SK.FunctionCallExpression && parent.Name === node) return null;
    if (parent?.Kind === SK.CustomNode) return null;
  }
  return fn;
}

/**
 * The nodes of a command that name a database: NameReferences filling a DatabaseName slot of
 * its grammar, and the qualifiers of qualified entity names (`Db.T`).
 */
function databaseNames(command) {
  const found = [];
  const walk = (node) => {
    for (let i = 0; i < node.ChildCount; i++) {
      const child = node.GetChild(i);
      if (child == null || child.IsToken) continue;
      if (child.Kind === SK.NameReference && node.GetName(i)?.toLowerCase() === 'databasename') found.push(child);
      // `.show table Db.T policy …`: the binder resolves no name of a command's grammar, so the
      // qualifier of a qualified entity name (its Expression) is a database name to check;
      // a longer path is returned as it is (and reported).
      if (child.Kind === SK.PathExpression) {
        found.push(child.Expression);
        continue;
      }
      walk(child);
    }
  };
  walk(command);
  return found;
}

function describeDatabase(db) {
  if (db.IsOpen || db.Name === '') return db.Name ? `unknown database ${db.Name}` : 'an unknown database';
  return db.AlternateName ? `database ${db.Name} (${db.AlternateName})` : `database ${db.Name}`;
}
