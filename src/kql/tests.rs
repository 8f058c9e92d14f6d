//! Table tests for the guard: one line per case. `allowed` cases must pass unchanged, `rewrites`
//! must pass with the given forwarded text, `refused` cases must be refused with a message that
//! contains the given fragment.

use super::*;

const OWN: &str = "11111111-1111-1111-1111-111111111111";

fn names() -> Vec<String> {
    vec![OWN.to_string(), "samples".to_string()]
}

fn run(text: &str, role: Role, restrict: bool) -> Result<Verdict, Refusal> {
    let names = names();
    let scope = Scope {
        database: OWN,
        database_names: &names,
    };
    guard(
        text,
        &scope,
        role,
        Options {
            restrict_statement: restrict,
        },
    )
}

fn assert_allowed(role: Role, cases: &[&str]) {
    for text in cases {
        match run(text, role, false) {
            Ok(verdict) => assert_eq!(verdict.rewritten, None, "{text} was rewritten"),
            Err(refusal) => panic!("{text:?} should be allowed, got: {refusal}"),
        }
    }
}

fn assert_refused(role: Role, cases: &[(&str, &str)]) {
    for (text, fragment) in cases {
        match run(text, role, false) {
            Ok(verdict) => panic!("{text:?} should be refused, got {verdict:?}"),
            Err(refusal) => {
                let message = refusal.to_string();
                assert!(
                    message.contains(fragment),
                    "{text:?}: message {message:?} lacks {fragment:?}"
                );
            }
        }
    }
}

// === Queries that must pass unchanged ===

#[test]
fn dashboard_queries_pass_unchanged() {
    assert_allowed(Role::Viewer, &[
        "StormEvents | take 10",
        "StormEvents | summarize count() by State | top 10 by count_",
        "StormEvents | where StartTime > ago(7d) | summarize Events = count() by bin(StartTime, 1h) | render timechart",
        "StormEvents | where State == 'TEXAS' and EventType has \"Flood\"",
        "StormEvents | project State, DamageProperty | order by DamageProperty desc",
        "StormEvents | extend Total = DamageProperty + DamageCrops | where Total > 0",
        "let threshold = 100; StormEvents | where DamageProperty > threshold",
        "let T2 = StormEvents | where State == 'OHIO'; T2 | count",
        "let f = (s:string) { StormEvents | where State == s }; f('TEXAS')",
        "let m = materialize(StormEvents | summarize by State); m | join kind=inner (m) on State",
        "StormEvents | join kind=leftouter (PopulationData) on State",
        "union StormEvents, PopulationData | count",
        "union * | count",
        "union withsource=TableName Storm* | summarize count() by TableName",
        "StormEvents | lookup PopulationData on State",
        "StormEvents | mv-expand Tags | project-away Tags",
        "StormEvents | make-series n=count() default=0 on StartTime step 1d",
        "StormEvents | parse EventNarrative with * 'damage of ' Damage:long *",
        "StormEvents | evaluate bag_unpack(Properties)",
        "StormEvents | evaluate pivot(State)",
        "StormEvents | evaluate autocluster()",
        "StormEvents | evaluate basket(0.1)",
        "StormEvents | evaluate diffpatterns(Split, 'a', 'b')",
        "StormEvents | evaluate hint.distribution = per_node narrow()",
        "StormEvents | where Text contains 'database(\"other\")'",
        "StormEvents | where Text contains \"cluster('x')\"",
        "StormEvents // database('22222222-2222-2222-2222-222222222222').T",
        "// cluster(\"evil\").database(\"x\").T\nStormEvents | take 1",
        "StormEvents | where x == @'externaldata'",
        "StormEvents | where x == ```evaluate http_request('x')```",
        "StormEvents | where x == ~~~set request_readonly=false~~~",
        "StormEvents | where s == h'secret'",
        "StormEvents | project database = State",
        "StormEvents | project cluster = State",
        "StormEvents | where ['database'] == 1",
        "StormEvents | extend d = dynamic(['a', 'b'])",
        "StormEvents | extend p = Properties['key']",
        "database().StormEvents | count",
        "database(\"11111111-1111-1111-1111-111111111111\").StormEvents",
        "database('11111111-1111-1111-1111-111111111111').StormEvents | count",
        "union database(\"11111111-1111-1111-1111-111111111111\").StormEvents, StormEvents",
        "table('StormEvents') | count",
        "table(\"StormEvents\", \"hotcache\") | count",
        "materialized_view('DailyStats') | take 1",
        "set query_now = datetime(2020-01-01); StormEvents | where StartTime < now()",
        "set truncationmaxrecords = 1000; StormEvents",
        "set query_results_cache_max_age = time(5m); StormEvents",
        "SET Query_Now = datetime(2020-01-01); StormEvents",
        "declare query_parameters(s:string); StormEvents | where State == s",
        "let g = entity_group [StormEvents, PopulationData]; macro-expand g as X (X | count)",
        "macro-expand entity_group [StormEvents, PopulationData] as X (X | count)",
        "macro-expand isfuzzy=true entity_group [database().StormEvents] as X (X | count)",
        "StormEvents | where StartTime between (datetime(2007-01-01) .. datetime(2007-12-31))",
        "print x = 1",
        "print now(), current_database()",
        "range x from 1 to 10 step 1",
        "datatable(a:int, b:string) [1, 'x', 2, 'y'] | where a > 1",
        "StormEvents | where State in~ ('texas', 'ohio')",
        "StormEvents | where State !in ('A') and State !~ 'b' and State =~ 'c'",
        "StormEvents | where EventType matches regex @'^Fl.*d$'",
        "StormEvents | summarize percentiles(DamageProperty, 50, 95) by State",
        "StormEvents | top-nested 3 of State by count()",
        "StormEvents | sample 10",
        "StormEvents | getschema",
        "StormEvents | fork (count) (take 1)",
        "StormEvents | as T | where T.State == 'x'",
        "StormEvents | extend j = parse_json(Props) | extend v = j.a.b",
        "StormEvents | invoke MyFunction()",
        "MyStoredFunction(1, 'x')",
        "StormEvents | serialize | extend r = row_number()",
        "StormEvents\n| where State == 'TEXAS'\n| take 5",
        "StormEvents | where Description has_any ('set', 'alias', 'restrict')",
        "let set_ = 1; print set_",
        "StormEvents | project ['My Column'] = State",
        "StormEvents | where ['Event Type'] == 'Hail'",
        "T | where x == 'a' 'b' \"c\"",
        "print 1;\nprint 2",
        "StormEvents | where Note == \"it's\" and Note2 == 'say \"hi\"'",
        "StormEvents | where Path == @\"C:\\temp\\\"\"\"",
        "search 'Texas'",
        "search in (StormEvents) 'Texas'",
        "find 'Texas'",
        "StormEvents | extend n = toint('1') | where n == 1",
        "StormEvents | partition hint.strategy=native by State (take 1)",
        "StormEvents | scan with (step s1: State == 'TEXAS';)",
        "let T = datatable(x:int)[1]; T | union (T)",
        "StormEvents | where StartTime > ago(1d) and isnotempty(State)",
        "print strcat('data', 'base')",
        "print database_name = 'x'",
        "StormEvents | summarize make_set(State)",
        "StormEvents | where State startswith 'T' // trailing comment with database(\"x\")",
    ]);
}

/// Everyday KQL the first guard refused (issue 9): each line a case that must pass unchanged.
#[test]
fn everyday_kql_the_old_guard_refused_passes() {
    assert_allowed(Role::Viewer, &[
        "SigninLogs | where TimeGenerated between (startTime .. endTime)",
        "let startTime = ago(1d); let endTime = now(); T | where t between (startTime..endTime)",
        "T | where t !between (a .. b)",
        "range x from 1 to 10 step 1 | where x between (2 .. 5)",
        "print d = datetime(\"2015-01-01\")",
        "print d = datetime('2009-01-01')",
        "print d = datetime( '2009-01-01 10:00' ), t = timespan('1.00:00:00')",
        "T\u{a0}| take 1",
        "T\u{200b}| take 1",
        "T |\u{202f}where x == 1\u{3000}| count",
        "\u{feff}StormEvents | take 1",
        "T | where x == 0x1F or y == 1e5 or z > 2micros",
        "Regions | evaluate geo_polygon_lookup(Trips, Polygon, PickupLon, PickupLat)",
        "T | evaluate geo_line_lookup(Roads, Line, Lon, Lat, 100)",
        "T | evaluate schema_merge()",
        "set maxoutputcolumns = 5000; T",
        "set notruncation; T | take 1000000",
        "set query_fanout_nodes_percent = 50; T",
        "set servertimeout = 1h; T",
        "restrict access to (StormEvents, PopulationData); StormEvents | count",
        "restrict access to (database('11111111-1111-1111-1111-111111111111').*); T",
        "let f = (name:string) { table(name) | count }; f('StormEvents')",
        "table(\"StormEvents\", \"all\") | take 1",
        "table('Storm*') | count",
        "table(\"My.Table\") | count",
        "let n = 'T'; table(n)",
        "materialized_view('DailyStorms', 1h)",
        "graph('Network') | graph-match (a)-->(b) project a, b",
        "T | mv-expand x | project-away y | make-series n = count() on t step 1h",
    ]);
}

// === Rewrites ===

#[test]
fn aliases_in_database_calls_become_the_guid() {
    let cases = [
        (
            "database('Samples').StormEvents",
            format!("database(\"{OWN}\").StormEvents"),
        ),
        (
            "database(\"samples\").T | count",
            format!("database(\"{OWN}\").T | count"),
        ),
        ("database(h'Samples').T", format!("database(\"{OWN}\").T")),
        ("database('Sam' 'ples').T", format!("database(\"{OWN}\").T")),
        ("database(@'SAMPLES').T", format!("database(\"{OWN}\").T")),
        (
            "union database('Samples').A, database('Samples').B",
            format!("union database(\"{OWN}\").A, database(\"{OWN}\").B"),
        ),
        (
            ".show database Samples schema",
            format!(".show database [\"{OWN}\"] schema"),
        ),
        (
            ".show database ['Samples'] policy caching",
            format!(".show database [\"{OWN}\"] policy caching"),
        ),
    ];
    for (text, expected) in cases {
        let verdict = run(text, Role::Viewer, false).unwrap_or_else(|r| panic!("{text}: {r}"));
        assert_eq!(
            verdict.rewritten.as_deref(),
            Some(expected.as_str()),
            "{text}"
        );
    }
}

#[test]
fn restrict_statement_is_prefixed_after_set_and_declare() {
    let cases = [
        ("T | count", format!("restrict access to (database(\"{OWN}\").*);\nT | count")),
        ("set query_now = datetime(2020-01-01);\nT", format!("set query_now = datetime(2020-01-01);\nrestrict access to (database(\"{OWN}\").*);\nT")),
        ("declare query_parameters(p:string); T", format!("declare query_parameters(p:string); restrict access to (database(\"{OWN}\").*);\nT")),
    ];
    for (text, expected) in cases {
        let verdict = run(text, Role::Viewer, true).unwrap();
        assert_eq!(
            verdict.rewritten.as_deref(),
            Some(expected.as_str()),
            "{text}"
        );
    }
    let command = run(".show tables", Role::Viewer, true).unwrap();
    assert_eq!(
        command.rewritten, None,
        "commands get no restrict statement"
    );
}

// === Queries that must be refused ===

#[test]
fn other_databases_are_refused_in_every_spelling() {
    let outside = "names a database outside this tenant";
    let not_literal = "takes only a literal name";
    assert_refused(
        Role::Viewer,
        &[
            (
                "database('22222222-2222-2222-2222-222222222222').StormEvents",
                outside,
            ),
            (
                "database(\"22222222-2222-2222-2222-222222222222\").StormEvents",
                outside,
            ),
            ("DATABASE('other').T", outside),
            ("Database('other').T", outside),
            ("database ( 'other' ) .T", outside),
            ("database(// comment\n'other').T", outside),
            ("database(h'other').T", outside),
            ("database(H\"other\").T", outside),
            ("database(@'other').T", outside),
            ("database(```other```).T", outside),
            ("database(~~~other~~~).T", outside),
            ("database('oth' 'er').T", outside),
            ("database('Sam' 'ples2').T", outside),
            (
                "database('\\x32\\x32222222-2222-2222-2222-222222222222').T",
                outside,
            ),
            (
                "database('\\u0032\\u0032222222-2222-2222-2222-222222222222').T",
                outside,
            ),
            ("database('*').T", outside),
            ("database('Samp*').T", outside),
            ("database('').T", outside),
            ("database(' samples').T", outside),
            ("['database']('other').T", outside),
            ("[\"database\"]('other').T", outside),
            ("['data' 'base']('other').T", outside),
            ("StormEvents | join (database('other').T) on x", outside),
            ("union StormEvents, database('other').T", outside),
            ("let t = database('other').T; t", outside),
            ("let f = () { database('other').T }; f()", outside),
            (
                "StormEvents | where x in (database('other').T | project x)",
                outside,
            ),
            ("print 1; database('other').T", outside),
            (
                "macro-expand entity_group [database('other').T] as X (X)",
                outside,
            ),
            ("let d = 'other'; database(d).T", not_literal),
            (
                "declare query_parameters(d:string); database(d).T",
                not_literal,
            ),
            (
                "let f = (d:string) { database(d).T }; f('other')",
                not_literal,
            ),
            ("database(strcat('oth', 'er')).T", not_literal),
            ("database('Samples' + 'x').T", not_literal),
            ("database({db}).T", not_literal),
            ("database(Samples).T", not_literal),
            ("database(['Samples']).T", not_literal),
        ],
    );
}

#[test]
fn doors_out_of_the_database_are_refused() {
    assert_refused(
        Role::Viewer,
        &[
            (
                "cluster('other').database('x').T",
                "cluster(…) reaches another cluster",
            ),
            (
                "cluster(\"https://help.kusto.windows.net\").database(\"Samples\").StormEvents",
                "cluster(…)",
            ),
            ("CLUSTER('x').database('y').T", "cluster(…)"),
            ("['cluster']('x').database('y').T", "cluster(…)"),
            ("union cluster('a').database('b').T, T", "cluster(…)"),
            (
                "alias database other = cluster('c').database('d'); other.T",
                "alias database",
            ),
            (
                "Alias Database x = cluster('c').database('d'); x.T",
                "alias database",
            ),
            (
                "externaldata (x:string) [@'https://example.com/data.csv']",
                "externaldata",
            ),
            (
                "externaldata (x:string) [h@'https://e.com/x?sig=secret'] with (format='csv')",
                "externaldata",
            ),
            (
                "T | join (externaldata (x:string) ['https://e/x']) on x",
                "externaldata",
            ),
            ("external_table('ext') | take 1", "external_table(…)"),
            ("external_table(\"ext\", \"mapping\")", "external_table(…)"),
            ("entity_group('g')", "entity_group(…)"),
            (
                "macro-expand StoredGroup as X (X | count)",
                "macro-expand StoredGroup",
            ),
            (
                "macro-expand kind=inner StoredGroup as X (X | count)",
                "stored entity group",
            ),
            (
                "let StoredGroup = 1; macro-expand StoredGroup as X (X)",
                "stored entity group",
            ),
            (
                "let StoredGroup = T; macro-expand StoredGroup as X (X)",
                "stored entity group",
            ),
            ("print 1;.show databases", "control command inside a query"),
            (
                "StormEvents | union (.show databases)",
                "control command inside a query",
            ),
            (
                "T | where x in (.show tables)",
                "control command inside a query",
            ),
            ("table('database(\"other\").T')", "table(…)"),
            ("table(\"cluster('x').database('y').T\")", "table(…)"),
            ("table(strcat('a', 'b'))", "table(…)"),
            ("materialized_view('a:b')", "materialized_view(…)"),
            (
                "restrict access to (database('other').*); T",
                "names a database outside this tenant",
            ),
            (
                "external_data (x:string) ['https://e/x']",
                "external_data reads external storage",
            ),
            (
                "inline_external_table('x') kind=storage (h@'https://e/x') dataformat=csv (x:string)",
                "inline_external_table reads external storage",
            ),
            ("print current_principal()", "identity at the cluster"),
            ("print current_principal_details()", "identity at the cluster"),
            ("print current_cluster_endpoint()", "reveals the cluster"),
            ("print __invoke(1)", "internal to Kusto"),
        ],
    );
}

#[test]
fn plugins_outside_the_allow_list_are_refused() {
    let out = "calls a service outside the cluster";
    let elsewhere = "runs a query or command on another cluster";
    assert_refused(
        Role::Viewer,
        &[
            ("evaluate http_request('https://example.com')", out),
            (
                "evaluate http_request_post('https://e', dynamic({}), 'body')",
                out,
            ),
            ("evaluate sql_request('Server=x', 'select 1')", out),
            ("evaluate mysql_request('x', 'select 1')", out),
            ("evaluate postgresql_request('x', 'select 1')", out),
            ("evaluate cosmosdb_sql_request('x', 'select 1')", out),
            ("evaluate azure_digital_twins_query_request('x', 'q')", out),
            ("evaluate ai_chat_completion('p', 'c')", out),
            ("evaluate ai_embeddings('t', 'c')", out),
            ("evaluate execute_query('cs', 'q')", elsewhere),
            (
                "evaluate execute_show_command('cs', '.show databases')",
                elsewhere,
            ),
            ("evaluate dax_request('x')", out),
            ("evaluate infer_storage_schema(o)", "reads external storage"),
            (
                "evaluate external_datatable(o)",
                "reads data from outside the database",
            ),
            ("evaluate csharp(typeof(*), 'x')", "runs sandboxed code"),
            (
                "T | evaluate python(typeof(*), 'result = df')",
                "runs sandboxed code",
            ),
            (
                "T | evaluate r(typeof(*), 'result <- df')",
                "runs sandboxed code",
            ),
            (
                "T | evaluate hint.distribution = per_node python(typeof(*), 'x')",
                "runs sandboxed code",
            ),
            (
                "T | evaluate some_new_plugin()",
                "is not a plugin kqlgate knows to stay within the database",
            ),
            ("T | evaluate ['http_request']('x')", out),
            ("T | EVALUATE HTTP_REQUEST('x')", out),
            ("T | evaluate", "must name a plugin"),
        ],
    );
}

#[test]
fn set_statements_outside_the_allow_list_are_refused() {
    let not_settable = "is set by kqlgate for every request; a query may not change it";
    assert_refused(
        Role::Viewer,
        &[
            ("set request_readonly = false; T", not_settable),
            (
                "set request_remote_entities_disabled = false; database('x').T",
                not_settable,
            ),
            ("set request_callout_disabled = false; T", not_settable),
            ("set request_external_data_disabled; T", not_settable),
            (
                "set request_external_table_disabled = false; T",
                not_settable,
            ),
            (
                "set request_sandboxed_execution_disabled = false; T",
                not_settable,
            ),
            (
                "set request_impersonation_disabled = false; T",
                not_settable,
            ),
            ("SET REQUEST_READONLY = FALSE; T", not_settable),
            ("set query_language = 'sql'; T", not_settable),
            (
                "set query_force_row_level_security = false; T",
                "changes row-level security",
            ),
            (
                "set request_readonly_hardline = false; T",
                "changes how writes are blocked",
            ),
            ("set query_python_debug; T", "runs sandboxed code"),
            (
                "set request_cross_cluster_token = 'x'; T",
                "from one cluster to another",
            ),
            ("set no_such_option = 1; T", "is not an option Kusto knows"),
            ("print 1; set request_readonly = false; T", not_settable),
            (
                "set query_now = now(); set request_readonly = false; T",
                not_settable,
            ),
            (
                "let f = () { set request_readonly = false; T }; f()",
                not_settable,
            ),
            ("set // c\n request_readonly = false; T", not_settable),
            ("set ['request_readonly'] = false; T", not_settable),
            ("set; T", "must name an option"),
            ("set 'x'; T", "must name an option"),
        ],
    );
}

#[test]
fn text_that_cannot_be_read_with_certainty_is_refused() {
    let uncertain = "cannot be read with certainty";
    assert_refused(
        Role::Viewer,
        &[
            ("-- T-SQL\nSELECT * FROM T", "T-SQL"),
            ("  --\nselect 1", "T-SQL"),
            ("#connect cluster('x').database('y')\nT", "`#` directive"),
            ("T | take 1\n#crp request_readonly=false", "`#` directive"),
            ("T | where x == 'unterminated", uncertain),
            ("T | where x == \"line\nbreak\"", uncertain),
            ("T | where x == ```never closed", uncertain),
            ("T | where x == '\\q'", uncertain),
            ("T | where x == '\\u12'", uncertain),
            ("T ` database('x').T", uncertain),
            ("T\u{2028}| take 1", uncertain),
            ("T\u{b}| take 1", uncertain),
            (
                "print d = datetime(\")\") | union database('o').T //\")",
                uncertain,
            ),
            ("T | where x == \u{0}", uncertain),
            ("T & database('x').T", uncertain),
        ],
    );
}

#[test]
fn refusals_name_the_construct_and_its_position() {
    let refusal = run("database(\"other\").T", Role::Viewer, false).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "database(\"other\") names a database outside this tenant at 1:1"
    );
    let refusal = run(
        "let x = 1;\nT | union cluster('c').database('d').T",
        Role::Viewer,
        false,
    )
    .unwrap_err();
    assert_eq!((refusal.line, refusal.column), (2, 11));
    let refusal = run("T\n| evaluate http_request('x')", Role::Viewer, false).unwrap_err();
    assert_eq!((refusal.line, refusal.column), (2, 12));
}

// === Commands ===

#[test]
fn viewer_may_read_its_own_schema_and_metadata() {
    assert_allowed(
        Role::Viewer,
        &[
            ".show tables",
            ".SHOW TABLES",
            ".show tables details",
            ".show tables (StormEvents, PopulationData)",
            ".show table StormEvents",
            ".show table StormEvents schema as json",
            ".show table StormEvents cslschema",
            ".show table StormEvents details",
            ".show table StormEvents extents",
            ".show table StormEvents policy caching",
            ".show table StormEvents policy retention",
            ".show table ['My Table'] schema as json",
            ".show table * policy retention",
            ".show database schema",
            ".show database schema as json",
            ".show database schema details",
            ".show database cslschema",
            ".show database ['11111111-1111-1111-1111-111111111111'] schema as json",
            ".show database [\"11111111-1111-1111-1111-111111111111\"] policy retention",
            ".show functions",
            ".show function MyFunction",
            ".show materialized-views",
            ".show tables | where TableName startswith 'Storm'",
            ".show tables | project TableName | extend n = strlen(TableName), x = .5",
            ".show tables | project TableName",
            ".show functions | where Name has 'x'",
            "// a comment first\n.show tables",
        ],
    );
}

#[test]
fn commands_reaching_other_tenants_are_refused_for_everyone() {
    for role in [Role::Viewer, Role::Admin] {
        assert_refused(
            role,
            &[
                (".show databases", "is not allowed through kqlgate"),
                (".show databases (x) schema", "is not allowed"),
                (".show queries", "is not allowed"),
                (".show running queries", "is not allowed"),
                (".show commands", "is not allowed"),
                (".show commands-and-queries", "is not allowed"),
                (".show journal", "is not allowed"),
                (".show operations", "is not allowed"),
                (".show cluster", "is not allowed"),
                (".show cluster principals", "is not allowed"),
                (".show cluster principal roles", "is not allowed"),
                (
                    ".show database other schema",
                    "names a database outside this tenant",
                ),
                (
                    ".show database ['22222222-2222-2222-2222-222222222222'] schema",
                    "outside this tenant",
                ),
                (".show database Samples principals", "is not allowed"),
                (".show database principals", "outside this tenant"),
                (".show table other.StormEvents", "outside this tenant"),
                (".show table Samples.T.x", "outside this tenant"),
                (".show tables (other.T)", "outside this tenant"),
                (".show version", "is not allowed"),
                (".show principal roles", "is not allowed"),
                (".cancel query 'KPC.execute;1'", "is not allowed"),
                (
                    ".add database Samples admins ('aaduser=x')",
                    "is not allowed",
                ),
                (
                    ".drop database Samples admins ('aaduser=x')",
                    "is not allowed",
                ),
                (
                    ".set database Samples viewers ('aaduser=x')",
                    "is not allowed",
                ),
                (".add cluster admins ('x')", "is not allowed"),
                (".alter cluster policy callout '[]'", "is not allowed"),
                (
                    ".alter cluster policy request_classification '{}'",
                    "is not allowed",
                ),
                (".enable plugin http_request", "is not allowed"),
                (
                    ".execute database script <| .create table T (a:int)",
                    "is not allowed",
                ),
                (".export to csv (h@'https://x') <| T", "is not allowed"),
                (".ingest into table T ('https://x')", "is not allowed"),
                (".set-or-append T <| database('other').T", "is not allowed"),
                (".set-or-replace T <| T", "is not allowed"),
                (".append T <| T", "is not allowed"),
                (".purge table T records <| T", "is not allowed"),
                (".create-or-alter workload_group g '{}'", "is not allowed"),
                (".drop database Samples", "is not allowed"),
                (
                    ".show tables | union database('other').T",
                    "names a database outside this tenant",
                ),
                (
                    ".show tables | join (cluster('x').database('y').T) on x",
                    "cluster(…)",
                ),
                (
                    ".show table T policy caching | evaluate http_request('x')",
                    "calls a service outside",
                ),
                (".show table T; .show databases", "is not allowed"),
                (
                    ".show tables | union (.show databases)",
                    "control command inside a query",
                ),
                (".show table T <| print 1", "may not take a query as input"),
                (".show database cluster('x') schema", "outside this tenant"),
                (".", "must be followed by a command"),
            ],
        );
    }
}

#[test]
fn viewer_may_not_manage() {
    let admin = "requires the admin role";
    assert_refused(
        Role::Viewer,
        &[
            (".alter table T policy caching hot = 5d", admin),
            (
                ".alter-merge table T policy retention softdelete = 10d",
                admin,
            ),
            (".alter database Samples policy retention '{}'", admin),
            (".create table T (a:string)", admin),
            (".create-merge table T (a:string)", admin),
            (".alter table T (a:string)", admin),
            (".drop table T", admin),
            (".create-or-alter function F() { T }", admin),
        ],
    );
}

#[test]
fn admin_may_manage_its_own_database() {
    assert_allowed(Role::Admin, &[
        ".alter table StormEvents policy caching hot = 5d",
        ".alter table StormEvents policy retention '{\"SoftDeletePeriod\": \"10.00:00:00\", \"Recoverability\": \"Enabled\"}'",
        ".alter-merge table StormEvents policy retention softdelete = 10d recoverability = disabled",
        ".alter database ['11111111-1111-1111-1111-111111111111'] policy caching hot = 7d",
        ".alter-merge database ['11111111-1111-1111-1111-111111111111'] policy retention softdelete = 30d",
        ".create table NewTable (a:string, b:long, c:dynamic)",
        ".create table NewTable (a:string) with (docstring = 'new', folder = 'x')",
        ".create-merge table NewTable (a:string, d:datetime)",
        ".alter table NewTable (a:string, b:int)",
        ".drop table NewTable",
        ".drop table NewTable ifexists",
        ".create-or-alter function F() { StormEvents | take 1 }",
        ".create-or-alter function with (docstring = 'd', folder = 'f') F(s:string) { StormEvents | where State == s }",
        ".create-or-alter function G() { database('11111111-1111-1111-1111-111111111111').StormEvents }",
        ".show tables",
    ]);
    let verdict = run(
        ".alter database Samples policy caching hot = 1d",
        Role::Admin,
        false,
    )
    .unwrap();
    assert_eq!(
        verdict.rewritten.unwrap(),
        format!(".alter database [\"{OWN}\"] policy caching hot = 1d")
    );
}

#[test]
fn admin_may_not_reach_beyond_its_database() {
    assert_refused(
        Role::Admin,
        &[
            (
                ".alter table other.T policy caching hot = 5d",
                "outside this tenant",
            ),
            (
                ".alter database other policy retention '{}'",
                "outside this tenant",
            ),
            (
                ".alter database ['22222222-2222-2222-2222-222222222222'] policy caching hot = 1d",
                "outside this tenant",
            ),
            (
                ".alter table T policy callout '[]'",
                "only the caching and retention policies",
            ),
            (
                ".alter table T policy row_level_security enable 'f'",
                "only the caching and retention policies",
            ),
            (
                ".alter database Samples policy sharding '{}'",
                "only the caching and retention policies",
            ),
            (
                ".alter database Samples prettyname 'x'",
                "only the caching and retention policies",
            ),
            (".create table other.T (a:string)", "outside this tenant"),
            (
                ".create table T (a:string) <| print 1",
                "may not take a query as input",
            ),
            (".drop table other.T", "outside this tenant"),
            (".drop tables (A, B)", "is not allowed"),
            (
                ".create-or-alter function F() { database('other').T }",
                "names a database outside this tenant",
            ),
            (
                ".create-or-alter function F() { cluster('x').database('y').T }",
                "cluster(…)",
            ),
            (
                ".create-or-alter function F() { externaldata (x:string) ['https://x'] }",
                "externaldata",
            ),
            (
                ".create-or-alter function F() { T | evaluate http_request('x') }",
                "calls a service outside",
            ),
            (
                ".create-or-alter function other.F() { T }",
                "outside this tenant's database",
            ),
            (
                ".create-or-alter function F() T",
                "must define a function body",
            ),
            (".create function F() { T }", "is not allowed"),
            (
                ".alter table T policy caching hot = 5d, hotwindow = database('x')",
                "is not allowed",
            ),
        ],
    );
}

/// The guard's work (looks at tokens, counted without a clock) grows linearly with the text,
/// whatever shape the text has; and no text makes it panic.
#[test]
fn the_guard_never_panics_and_stays_linear() {
    let shapes: [&dyn Fn(usize) -> String; 6] = [
        &|n| format!("T{}", " | where x == 'a' // c\n".repeat(n)),
        &|n| "x-".repeat(n * 4) + "x",
        &|n| format!("database({})", "'a' ".repeat(n * 4)),
        &|n| "set query_now = 1; ".repeat(n),
        &|n| format!("print {}", "f(g(".repeat(n / 8) + &"1))".repeat(n / 8)),
        &|n| "macro-expand entity_group [T] as X (X) | ".repeat(n),
    ];
    for shape in shapes {
        let looks = |n: usize| {
            let text = shape(n);
            LOOKS.with(|l| l.set(0));
            let _ = run(&text, Role::Viewer, false);
            LOOKS.with(|l| l.get()).max(1)
        };
        let (small, large) = (looks(500), looks(4000));
        assert!(
            large <= small * 10,
            "{small} looks for n, {large} for 8n: not linear ({:?}…)",
            &shape(1)[..10.min(shape(1).len())]
        );
    }
    let nested = "(".repeat(50_000);
    let _ = run(&nested, Role::Viewer, false);
    for text in [
        "",
        " ",
        ".",
        "[",
        "['",
        "database(",
        "database('",
        "evaluate",
        "macro-expand",
        "set",
        "alias",
        ".show",
        ".show database",
        ".alter table",
        ".create-or-alter function",
    ] {
        let _ = run(text, Role::Admin, false);
    }
}
