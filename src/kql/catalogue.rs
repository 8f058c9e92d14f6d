//! The catalogue: kqlgate's classification of every name Kusto.Language knows — keywords,
//! functions, aggregates, `evaluate` plugins, request and `set` options — read from
//! `catalogue.tsv`, which `tests/kql-diff/catalogue.mjs` checks against Microsoft's parser.
//!
//! The query policy asks the catalogue about every keyword, call, plugin and option it meets and
//! keeps no list of its own: an entry is allowed (in-database), guarded by a named [`Rule`], or
//! refused for a [`Category`] of reason. What the catalogue does not know is, as a call, a
//! function of the tenant's own database; after `evaluate` or `set` it is refused.

use std::collections::HashMap;
use std::sync::LazyLock;

/// Where a name appears in a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A plain word of the query (`externaldata`, `macro-expand`, `set`).
    Keyword,
    /// A name followed by `(`.
    Function,
    Aggregate,
    /// The name after `evaluate`.
    Plugin,
    /// The name after `set`, or a member of the request's `properties.Options`.
    Option,
    /// Kusto's internal function names (`__invoke`…).
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Allow,
    Rule(Rule),
    Refuse(Category),
}

/// The guard's rules, each named in the table as `rule:<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `database(…)`: only a literal naming the tenant's database.
    Database,
    /// `table(…)`, `materialized_view(…)`, `stored_query_result(…)`, `graph(…)`: an entity of the
    /// current database, named by a literal or a variable.
    EntityName,
    /// `entity_group [ … ]` inline (its members are checked like any other text); the call
    /// `entity_group(…)` is a function entry of its own.
    EntityGroup,
    /// `set NAME`: only options the table allows.
    SetOption,
    /// `evaluate NAME`: only plugins the table allows.
    EvaluatePlugin,
    /// `macro-expand`: only inline or `let`-bound entity groups.
    MacroExpand,
    /// `alias database …`: refused, it names another database or cluster.
    AliasDatabase,
    /// `restrict access to (…)`: allowed where kqlgate does not add its own.
    RestrictAccess,
    /// A request option kqlgate sets itself: refused in `set`, overwritten in the request.
    ForcedOption,
    /// A word of control commands: ordinary in a query, judged by the command policy in a command.
    CommandPolicy,
}

/// Why a refused entry is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    OtherDatabase,
    OtherCluster,
    ExternalStorage,
    Callout,
    Sandbox,
    Command,
    Identity,
    SecurityOption,
    Internal,
    Resources,
}

impl Rule {
    pub const ALL: [Rule; 10] = [
        Rule::Database,
        Rule::EntityName,
        Rule::EntityGroup,
        Rule::SetOption,
        Rule::EvaluatePlugin,
        Rule::MacroExpand,
        Rule::AliasDatabase,
        Rule::RestrictAccess,
        Rule::ForcedOption,
        Rule::CommandPolicy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Database => "database",
            Rule::EntityName => "entity-name",
            Rule::EntityGroup => "entity-group",
            Rule::SetOption => "set-option",
            Rule::EvaluatePlugin => "evaluate-plugin",
            Rule::MacroExpand => "macro-expand",
            Rule::AliasDatabase => "alias-database",
            Rule::RestrictAccess => "restrict-access",
            Rule::ForcedOption => "forced-option",
            Rule::CommandPolicy => "command-policy",
        }
    }
}

impl Category {
    pub const ALL: [Category; 10] = [
        Category::OtherDatabase,
        Category::OtherCluster,
        Category::ExternalStorage,
        Category::Callout,
        Category::Sandbox,
        Category::Command,
        Category::Identity,
        Category::SecurityOption,
        Category::Internal,
        Category::Resources,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::OtherDatabase => "other-database",
            Category::OtherCluster => "other-cluster",
            Category::ExternalStorage => "external-storage",
            Category::Callout => "callout",
            Category::Sandbox => "sandbox",
            Category::Command => "command",
            Category::Identity => "identity",
            Category::SecurityOption => "security-option",
            Category::Internal => "internal",
            Category::Resources => "resources",
        }
    }
}

/// One row of the table.
#[derive(Debug)]
pub struct Entry {
    pub kind: Kind,
    /// As Kusto spells it.
    pub name: &'static str,
    pub class: Class,
    /// For refusals: what the message says the construct does ("reads external storage…").
    pub reason: &'static str,
    /// Documented by Microsoft, not (yet) in Kusto.Language's catalogue.
    pub from_docs: bool,
}

const TABLE: &str = include_str!("catalogue.tsv");

struct Catalogue {
    /// Sorted by kind, then ASCII-lower-cased name.
    entries: Vec<(Kind, String, Entry)>,
    /// ASCII-lower-cased name → the index in `entries` of its entry of each kind: one hash
    /// probe answers for every kind (the guard asks about each identifier of a query).
    by_name: HashMap<String, [u16; KINDS], NameHash>,
    /// The longest name: anything longer cannot be in the table.
    longest: usize,
}

/// The number of [`Kind`]s, and the marker of a kind a name does not have.
const KINDS: usize = 6;
const ABSENT: u16 = u16::MAX;
const _: () = assert!(Kind::Internal as usize + 1 == KINDS);

/// FNV-1a, for the short names of the table: hand-written (a dozen lines) because the guard
/// builds from std alone (the fuzz target and the A/B bench compile its source directly), and
/// std's SipHash costs more than the lookup it serves; the table's keys are fixed, so hash
/// flooding is no concern.
#[derive(Default, Clone, Copy)]
struct NameHash;

struct Fnv(u64);

impl std::hash::BuildHasher for NameHash {
    type Hasher = Fnv;
    fn build_hasher(&self) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

static CATALOGUE: LazyLock<Catalogue> = LazyLock::new(|| {
    // The table is compiled in and a unit test loads it, so this holds for every build.
    parse(TABLE).expect("src/kql/catalogue.tsv is well-formed (checked by its unit test)")
});

/// The entry for `name` as a `kind`, compared without regard to ASCII case (Kusto's own
/// comparison is exact, so this can only find more, never less).
pub fn lookup(kind: Kind, name: &str) -> Option<&'static Entry> {
    lookup_first(&[kind], name)
}

/// The entry for `name` of the first of `kinds` it has (one hash probe for all of them).
pub fn lookup_first(kinds: &[Kind], name: &str) -> Option<&'static Entry> {
    let catalogue = &*CATALOGUE;
    if name.len() > catalogue.longest {
        return None;
    }
    // Lower-cased on the stack: allocating for each identifier would cost more than the probe.
    let mut buffer = [0u8; 64];
    let lower = &mut buffer[..name.len()];
    lower.copy_from_slice(name.as_bytes());
    lower.make_ascii_lowercase();
    let lower = std::str::from_utf8(lower).ok()?;
    let slots = catalogue.by_name.get(lower)?;
    kinds
        .iter()
        .map(|kind| slots[*kind as usize])
        .find(|at| *at != ABSENT)
        .map(|at| &catalogue.entries[usize::from(at)].2)
}

/// Every entry, in table order (for tests and for the labels of metrics).
pub fn entries() -> impl Iterator<Item = &'static Entry> {
    CATALOGUE.entries.iter().map(|(_, _, entry)| entry)
}

fn parse(table: &'static str) -> Result<Catalogue, String> {
    let mut entries = Vec::new();
    for (number, line) in table.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let entry = parse_line(line).map_err(|e| format!("catalogue.tsv:{}: {e}", number + 1))?;
        entries.push((entry.kind, entry.name.to_ascii_lowercase(), entry));
    }
    entries.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    if let Some(twice) = entries
        .windows(2)
        .find(|w| (w[0].0, &w[0].1) == (w[1].0, &w[1].1))
    {
        return Err(format!(
            "{:?} {} is listed twice (names are compared without case)",
            twice[0].0, twice[0].1
        ));
    }
    let longest = entries
        .iter()
        .map(|(_, key, _)| key.len())
        .max()
        .unwrap_or(0);
    if longest > 64 {
        return Err("a name is longer than the 64 bytes lookup() compares".into());
    }
    let mut by_name: HashMap<String, [u16; KINDS], NameHash> = HashMap::default();
    for (at, (kind, key, _)) in entries.iter().enumerate() {
        let at = u16::try_from(at).map_err(|_| "more entries than a u16 counts")?;
        by_name.entry(key.clone()).or_insert([ABSENT; KINDS])[*kind as usize] = at;
    }
    Ok(Catalogue {
        entries,
        by_name,
        longest,
    })
}

fn parse_line(line: &'static str) -> Result<Entry, String> {
    let mut columns = line.split('\t');
    let mut next = || columns.next().unwrap_or("");
    let (kind, name, class, reason, source) = (next(), next(), next(), next(), next());
    let kind = match kind {
        "keyword" => Kind::Keyword,
        "function" => Kind::Function,
        "aggregate" => Kind::Aggregate,
        "plugin" => Kind::Plugin,
        "option" => Kind::Option,
        "internal" => Kind::Internal,
        other => return Err(format!("unknown kind {other:?}")),
    };
    if name.is_empty() || !name.is_ascii() {
        return Err(format!("bad name {name:?}"));
    }
    let class = match class.split_once(':') {
        None if class == "allow" => Class::Allow,
        Some(("rule", rule)) => Class::Rule(
            Rule::ALL
                .into_iter()
                .find(|r| r.name() == rule)
                .ok_or_else(|| format!("unknown rule {rule:?}"))?,
        ),
        Some(("refuse", category)) => Class::Refuse(
            Category::ALL
                .into_iter()
                .find(|c| c.name() == category)
                .ok_or_else(|| format!("unknown category {category:?}"))?,
        ),
        _ => return Err(format!("bad class {class:?}")),
    };
    if matches!(class, Class::Refuse(_)) && reason.is_empty() {
        return Err(format!("{name}: a refusal needs a reason"));
    }
    let from_docs = match source {
        "" | "parser" => false,
        "docs" => true,
        other => return Err(format!("unknown source {other:?}")),
    };
    Ok(Entry {
        kind,
        name,
        class,
        reason,
        from_docs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_loads_and_every_rule_is_used() {
        let catalogue = parse(TABLE).unwrap();
        assert!(catalogue.entries.len() > 900, "{}", catalogue.entries.len());
        for rule in Rule::ALL {
            assert!(
                entries().any(|e| e.class == Class::Rule(rule)),
                "rule {} is not named in the table",
                rule.name()
            );
        }
    }

    #[test]
    fn lookups_ignore_ascii_case_and_tell_kinds_apart() {
        fn class(kind: Kind, name: &str) -> Option<Class> {
            lookup(kind, name).map(|e| e.class)
        }
        assert_eq!(
            class(Kind::Function, "cluster"),
            Some(Class::Refuse(Category::OtherCluster))
        );
        assert_eq!(
            class(Kind::Function, "CLUSTER"),
            Some(Class::Refuse(Category::OtherCluster))
        );
        assert_eq!(
            class(Kind::Function, "database"),
            Some(Class::Rule(Rule::Database))
        );
        assert_eq!(
            class(Kind::Keyword, "External_Data"),
            Some(Class::Refuse(Category::ExternalStorage))
        );
        assert_eq!(class(Kind::Plugin, "bag_unpack"), Some(Class::Allow));
        assert_eq!(
            class(Kind::Plugin, "geo_polygon_lookup"),
            Some(Class::Allow)
        );
        assert_eq!(
            class(Kind::Plugin, "http_request"),
            Some(Class::Refuse(Category::Callout))
        );
        assert_eq!(class(Kind::Option, "maxoutputcolumns"), Some(Class::Allow));
        assert_eq!(
            class(Kind::Option, "request_callout_disabled"),
            Some(Class::Rule(Rule::ForcedOption))
        );
        assert_eq!(class(Kind::Function, "strcat"), Some(Class::Allow));
        assert_eq!(class(Kind::Function, "no_such_function"), None);
        assert_eq!(class(Kind::Function, &"x".repeat(100)), None);
        assert_eq!(class(Kind::Function, "ünïcode"), None);
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line() {
        for bad in [
            "colour\tx\tallow",
            "function\tx\tmaybe",
            "function\tx\trule:nope",
            "function\tx\trefuse:nope\twhy",
            "function\tx\trefuse:callout",
            "function\t\tallow",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("function\tx\tallow\nfunction\tX\tallow").is_err());
    }
}
