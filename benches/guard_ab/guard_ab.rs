//! The guard of an earlier commit (`guard_old`) and of the working tree (`guard_new`) on the same
//! texts, in one run: a dashboard query of 200 B and of 50 KB, and the hand-written corpus of
//! tests/kql-diff/corpus (each query once per iteration). Run by scripts/bench-guard.

use criterion::{black_box, criterion_group, criterion_main, Criterion};

const DATABASE: &str = "11111111-1111-1111-1111-111111111111";

fn csl(len: usize) -> String {
    let line = "StormEvents | where State == 'TEXAS' and StartTime > ago(7d) | summarize count() by EventType\n";
    let mut text = String::from("let since = ago(1d);\n");
    while text.len() < len {
        text.push_str(line);
    }
    text
}

/// The corpus queries (blocks between `%%` lines, remarks and markers dropped; `%json` blocks,
/// a few percent, are left out to keep this crate free of a JSON parser).
fn corpus() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/kql-diff/corpus");
    let dir = std::env::var("GUARD_AB_CORPUS").unwrap_or_else(|_| dir.to_owned());
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the corpus directory") {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for block in text.split("\n%%\n").filter(|b| !b.contains("%json ")) {
            let lines: Vec<&str> = block.lines().filter(|l| !l.starts_with('%')).collect();
            if !lines.is_empty() {
                queries.push(lines.join("\n"));
            }
        }
    }
    queries
}

macro_rules! verdicts {
    ($krate:ident, $texts:expr) => {{
        use $krate::kql::{guard, Options, Role, Scope};
        let names = vec![DATABASE.to_string(), "samples".to_string()];
        let scope = Scope {
            database: DATABASE,
            database_names: &names,
        };
        let mut allowed = 0usize;
        for text in $texts {
            allowed += guard(black_box(text), &scope, Role::Viewer, Options::default()).is_ok() as usize;
        }
        allowed
    }};
}

fn guard_ab(c: &mut Criterion) {
    let small = [csl(200)];
    let large = [csl(50_000)];
    let corpus = corpus();
    for (name, texts) in [("200 B", &small[..]), ("50 KB", &large[..]), ("corpus", &corpus[..])] {
        c.bench_function(&format!("old guard, {name}"), |b| b.iter(|| verdicts!(guard_old, texts)));
        c.bench_function(&format!("new guard, {name}"), |b| b.iter(|| verdicts!(guard_new, texts)));
    }
}

criterion_group!(benches, guard_ab);
criterion_main!(benches);
