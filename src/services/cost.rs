//! The cost Kusto reports for a query, read from the answer while it streams through the proxy.
//!
//! Kusto puts what a query cost (execution time, CPU, memory, cache use, result size) near the
//! end of its answer: over v2 as the `QueryResourceConsumption` row of the
//! `QueryCompletionInformation` table, followed by the `DataSetCompletion` frame; over v1 as the
//! `Stats` row of the `QueryStatus` table. Either way the report is JSON inside a JSON string
//! (MicrosoftDocs dataexplorer-docs `api/rest/response-v2.md`, `api/rest/response.md`,
//! `concepts/query-resource-consumption.md`; `docs/kusto-protocol.md` §3.2–3.4).
//!
//! This module owns watching a copy of the body: [`CostWatcher::feed`] sees each chunk the proxy
//! forwards, never changes or holds on to it, and keeps only the last [`WINDOW`] bytes of the
//! decoded answer (decoding a copy when the body is gzip); [`CostWatcher::finish`] reads the
//! report from that tail once, at the end. Forwarding the body, and what the cost is used for
//! (access log, metering, limits), are the caller's.
//!
//! Finding the report never tokenises the whole stream. The tail can start anywhere, even inside
//! a string, so the report's row is found by its marker value (a whole JSON string, recognised
//! by the backslashes before its opening quote), and the row or frame around it is found by
//! walking back to its opening bracket and parsed from there.

use flate2::{Decompress, DecompressError, FlushDecompress, Status};
use serde_json::Value;

/// How much of the decoded answer's end is kept. The report block is small: the
/// `QueryCompletionInformation` frame with its three usual rows is 2-4 KiB, a
/// `DataSetCompletion` with `OneApiErrors` about 1.5 KiB an error, v1's `TableOfContents` about
/// 80 bytes a table. 64 KiB leaves room for dozens of warning rows or errors while an answer in
/// flight costs at most 64 KiB here (grown as the answer grows, so a small answer costs less).
pub const WINDOW: usize = 64 * 1024;

/// The piece a gzip body is decoded into before its bytes reach the tail.
const SCRATCH: usize = 16 * 1024;

/// How many lookalike markers `finish` tries, last first, before giving up: each try scans and
/// parses up to a window, so a tail full of markers cannot make `finish` quadratic.
const MAX_CANDIDATES: usize = 8;

/// The marker of v2's report row: its `EventTypeName`.
const V2_MARKER: &str = "QueryResourceConsumption";
/// The marker of v1's report row: its `SeverityName`.
const V1_MARKER: &str = "Stats";
const V2_REPORT_TABLE: &str = "QueryCompletionInformation";
const V1_REPORT_COLUMN: &str = "StatusDescription";
const COMPLETION_FRAME: &str = "DataSetCompletion";
const TABLE_HEADER_FRAME: &str = "TableHeader";

/// The shape of the answer: `/v1/rest/query` and `/v1/rest/mgmt`, or `/v2/rest/query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    V1,
    V2,
}

/// What Kusto reported a query cost. A field is `None` when the report did not carry it in a
/// form this module reads.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct QueryCost {
    /// `ExecutionTime`, in seconds.
    pub execution_seconds: Option<f64>,
    /// `resource_usage.cpu."total cpu"`, a timespan `[d.]hh:mm:ss[.fffffff]`, in seconds.
    pub cpu_seconds: Option<f64>,
    /// `resource_usage.memory.peak_per_node`.
    pub memory_peak_bytes: Option<u64>,
    /// `resource_usage.cache.shards.hot.hitbytes`.
    pub cache_hot_hit_bytes: Option<u64>,
    /// `resource_usage.cache.shards.hot.missbytes`.
    pub cache_hot_miss_bytes: Option<u64>,
    /// `resource_usage.cache.shards.cold.hitbytes`.
    pub cache_cold_hit_bytes: Option<u64>,
    /// `resource_usage.cache.shards.cold.missbytes`.
    pub cache_cold_miss_bytes: Option<u64>,
    /// The sum of `dataset_statistics[].table_row_count`.
    pub rows_returned: Option<u64>,
    /// The sum of `dataset_statistics[].table_size`.
    pub result_bytes: Option<u64>,
    /// Served from the results cache: `results_cache_origin` is present, under
    /// `resource_usage.cache` (where the service and the .NET model put it) or under
    /// `resource_usage.cache.shards` (where the docs' prose puts it).
    pub from_results_cache: bool,
    /// v2 `DataSetCompletion.HasErrors`.
    pub has_errors: Option<bool>,
    /// v2 `DataSetCompletion.Cancelled`.
    pub cancelled: Option<bool>,
}

/// Watches a response body's bytes as they pass, keeping only a bounded tail of the decoded
/// answer, and reads Kusto's cost report from that tail at the end.
pub struct CostWatcher {
    format: Format,
    tail: Tail,
    gunzip: Option<Gunzip>,
}

// === impl CostWatcher ===

impl CostWatcher {
    /// `gzip`: the bytes passing are gzip-compressed (a copy is decoded, in bounded pieces).
    pub fn new(format: Format, gzip: bool) -> CostWatcher {
        CostWatcher {
            format,
            tail: Tail::new(WINDOW),
            gunzip: gzip.then(Gunzip::new),
        }
    }

    /// Called for every chunk of the body, in order; cheap; never fails (a corrupt gzip stream
    /// just stops the watching).
    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.gunzip {
            None => self.tail.push(chunk),
            Some(gunzip) => gunzip.feed(chunk, &mut self.tail),
        }
    }

    /// The cost, when the answer ended; `None` when the tail holds no cost report (neither a
    /// resource-consumption row nor, over v2, a `DataSetCompletion` frame), or when the gzip
    /// stream was corrupt.
    pub fn finish(self) -> Option<QueryCost> {
        if self.gunzip.is_some_and(|g| g.state == GzState::Corrupt) {
            return None;
        }
        read_cost(&self.tail.into_bytes(), self.format)
    }

    /// The bytes the tail holds allocated; never more than [`WINDOW`]. A gzip watcher also
    /// holds its fixed scratch piece and the decoder's state.
    pub fn retained_bytes(&self) -> usize {
        self.tail.buf.capacity()
    }
}

// === Tail: the last bytes of the answer ===

/// A ring holding the last `window` bytes pushed. Each push costs at most two copies of the
/// pushed bytes (or of the window, for a longer push), so watching a body is a memcpy.
struct Tail {
    window: usize,
    buf: Vec<u8>,
    /// Where the oldest byte is once `buf` is full; 0 until then.
    start: usize,
}

impl Tail {
    fn new(window: usize) -> Tail {
        Tail {
            window,
            buf: Vec::new(),
            start: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if data.len() >= self.window {
            self.buf.clear();
            self.reserve_up_to(self.window);
            self.buf
                .extend_from_slice(&data[data.len() - self.window..]);
            self.start = 0;
            return;
        }
        let room = self.window - self.buf.len();
        let (fill, wrap) = data.split_at(room.min(data.len()));
        if !fill.is_empty() {
            self.reserve_up_to(self.buf.len() + fill.len());
            self.buf.extend_from_slice(fill);
        }
        if !wrap.is_empty() {
            self.overwrite_oldest(wrap);
        }
    }

    /// Grows like a `Vec` would (doubling), but never past the window, so the memory an answer
    /// costs stays bounded and a small answer costs little.
    fn reserve_up_to(&mut self, needed: usize) {
        if needed > self.buf.capacity() {
            let target = needed.max(self.buf.capacity() * 2).min(self.window);
            self.buf.reserve_exact(target - self.buf.len());
        }
    }

    /// `buf` is full and `data` shorter than the window: write over the oldest bytes.
    fn overwrite_oldest(&mut self, data: &[u8]) {
        let (first, second) = data.split_at(data.len().min(self.window - self.start));
        self.buf[self.start..self.start + first.len()].copy_from_slice(first);
        self.buf[..second.len()].copy_from_slice(second);
        self.start = (self.start + data.len()) % self.window;
    }

    /// The tail in order, oldest byte first.
    fn into_bytes(self) -> Vec<u8> {
        let mut buf = self.buf;
        buf.rotate_left(self.start);
        buf
    }
}

// === Gunzip: a decoded copy of a gzip body ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GzState {
    Running,
    /// Bytes after a complete member that are not gzip (padding): the answer decoded so far is
    /// whole, so it is still read, but nothing more is decoded.
    Stopped,
    /// A member broke (bad deflate data, CRC or length): the decoded tail cannot be trusted.
    Corrupt,
}

struct Gunzip {
    decoder: Decompress,
    scratch: Vec<u8>,
    members_done: u64,
    state: GzState,
}

impl Gunzip {
    fn new() -> Gunzip {
        Gunzip {
            decoder: new_member_decoder(),
            scratch: vec![0; SCRATCH],
            members_done: 0,
            state: GzState::Running,
        }
    }

    fn feed(&mut self, mut input: &[u8], tail: &mut Tail) {
        while self.state == GzState::Running {
            let (used, made, status) = self.step(input);
            tail.push(&self.scratch[..made]);
            input = &input[used..];
            match status {
                Err(_) => self.fail(),
                Ok(Status::StreamEnd) => self.next_member(),
                Ok(Status::Ok | Status::BufError) => {}
            }
            // A full scratch means the decoder may hold more output back, even with no input
            // left; otherwise it is done with what it was given.
            if made < self.scratch.len() && (input.is_empty() || used == 0) {
                return;
            }
        }
    }

    /// One call into the decoder: input bytes used, output bytes made, and its status.
    fn step(&mut self, input: &[u8]) -> (usize, usize, Result<Status, DecompressError>) {
        let (in_before, out_before) = (self.decoder.total_in(), self.decoder.total_out());
        let status = self
            .decoder
            .decompress(input, &mut self.scratch, FlushDecompress::None);
        // Both differences are bounded by the slices' lengths, so they fit in usize.
        let used = (self.decoder.total_in() - in_before) as usize;
        let made = (self.decoder.total_out() - out_before) as usize;
        (used, made, status)
    }

    /// Kusto and proxies in between may send several gzip members (RFC 1952 §2.2): a member's
    /// end is not the body's, so the next bytes start a new member.
    fn next_member(&mut self) {
        self.members_done += 1;
        self.decoder = new_member_decoder();
    }

    fn fail(&mut self) {
        let nothing_of_this_member = self.decoder.total_out() == 0;
        self.state = if self.members_done > 0 && nothing_of_this_member {
            GzState::Stopped
        } else {
            GzState::Corrupt
        };
    }
}

/// A decoder for one gzip member (header, deflate data, CRC-32 and length trailer).
fn new_member_decoder() -> Decompress {
    // 15: deflate's largest window, which gzip encoders use.
    Decompress::new_gzip(15)
}

// === Reading the report from the tail ===

/// `HasErrors` and `Cancelled` of the last `DataSetCompletion` frame.
struct Completion {
    has_errors: Option<bool>,
    cancelled: Option<bool>,
}

fn read_cost(tail: &[u8], format: Format) -> Option<QueryCost> {
    let payload = find_payload(tail, format);
    let completion = match format {
        Format::V2 => find_completion(tail),
        Format::V1 => None,
    };
    if payload.is_none() && completion.is_none() {
        return None;
    }
    let mut cost = payload.as_ref().map(cost_from_payload).unwrap_or_default();
    if let Some(completion) = completion {
        cost.has_errors = completion.has_errors;
        cost.cancelled = completion.cancelled;
    }
    Some(cost)
}

/// The resource-consumption JSON: in the row holding the format's marker, the first later
/// string that decodes to an object with `ExecutionTime` or `resource_usage`.
fn find_payload(tail: &[u8], format: Format) -> Option<Value> {
    let marker = match format {
        Format::V2 => V2_MARKER,
        Format::V1 => V1_MARKER,
    };
    string_values(tail, marker)
        .take(MAX_CANDIDATES)
        .find_map(|at| {
            let row_start = enclosing_open(tail, at)?;
            let (row, _) = first_value(&tail[row_start..])?;
            let payload = payload_in_row(row.as_array()?, marker)?;
            table_allows(tail, row_start, format).then_some(payload)
        })
}

fn payload_in_row(row: &[Value], marker: &str) -> Option<Value> {
    let at = row.iter().position(|cell| cell.as_str() == Some(marker))?;
    row[at + 1..]
        .iter()
        .filter_map(Value::as_str)
        .find_map(decode_payload)
}

fn decode_payload(text: &str) -> Option<Value> {
    let value: Value = serde_json::from_str(text).ok()?;
    let object = value.as_object()?;
    (object.contains_key("ExecutionTime") || object.contains_key("resource_usage")).then_some(value)
}

/// Vetoes a row that does not sit in the report's table. A tenant's own results can hold a
/// lookalike row (a stored log of query costs, say); the real report comes after them, but when
/// it is missing (a cancelled or cut-off query) the lookalike must not stand in for it.
fn table_allows(tail: &[u8], row_start: usize, format: Format) -> bool {
    let table = match holder_of(tail, row_start) {
        Holder::Unknown => return true,
        Holder::NotATable => return false,
        Holder::Table(table) => table,
    };
    match format {
        Format::V2 => match table.get("FrameType").and_then(Value::as_str) {
            Some("DataTable") => table
                .get("TableKind")
                .and_then(Value::as_str)
                .is_none_or(|kind| kind == V2_REPORT_TABLE),
            // A TableFragment names its table by id only; its TableHeader has the kind.
            Some("TableFragment") => table
                .get("TableId")
                .and_then(|id| header_kind(tail, id))
                .is_none_or(|kind| kind == V2_REPORT_TABLE),
            _ => false,
        },
        Format::V1 => table
            .get("Columns")
            .and_then(Value::as_array)
            .is_some_and(|columns| {
                columns.iter().any(|column| {
                    column.get("ColumnName").and_then(Value::as_str) == Some(V1_REPORT_COLUMN)
                })
            }),
    }
}

/// What holds a row: a table (v2 frame or v1 table), something else, or not known because the
/// table starts before the tail does.
enum Holder {
    Unknown,
    NotATable,
    Table(serde_json::Map<String, Value>),
}

/// The table holding the row at `row_start`, read from its start up to its rows: the names
/// that matter (`FrameType`, `TableKind`, `TableId`, `Columns`) come before `Rows`, and the
/// rows themselves may be cut off.
fn holder_of(tail: &[u8], row_start: usize) -> Holder {
    let Some(rows) = enclosing_open(tail, row_start) else {
        return Holder::Unknown;
    };
    let Some(table) = enclosing_open(tail, rows) else {
        return Holder::Unknown;
    };
    if tail[rows] != b'[' || tail[table] != b'{' {
        return Holder::NotATable;
    }
    let mut head = tail[table..rows].to_vec();
    head.extend_from_slice(b"null}");
    match serde_json::from_slice(&head) {
        Ok(Value::Object(table)) => Holder::Table(table),
        _ => Holder::NotATable,
    }
}

/// The `TableKind` of the progressive `TableHeader` frame with this `TableId`.
fn header_kind(tail: &[u8], id: &Value) -> Option<String> {
    string_values(tail, TABLE_HEADER_FRAME)
        .take(MAX_CANDIDATES)
        .find_map(|at| {
            let (frame, _) = first_value(&tail[enclosing_open(tail, at)?..])?;
            let is_it = frame.get("FrameType")?.as_str()? == TABLE_HEADER_FRAME
                && frame.get("TableId")? == id;
            is_it.then(|| frame.get("TableKind")?.as_str().map(str::to_owned))?
        })
}

/// The last frame's `HasErrors` and `Cancelled`. `DataSetCompletion` is the body's last
/// frame: only one followed by nothing but the body's closing bracket, and held by nothing but
/// the body's array, counts, so a lookalike in a tenant's results (followed by more rows, held
/// by a row) does not.
fn find_completion(tail: &[u8]) -> Option<Completion> {
    string_values(tail, COMPLETION_FRAME)
        .take(MAX_CANDIDATES)
        .find_map(|at| {
            let start = enclosing_open(tail, at)?;
            let (frame, len) = first_value(&tail[start..])?;
            let frame = frame.as_object()?;
            let is_it = frame.get("FrameType")?.as_str()? == COMPLETION_FRAME
                && only_closing(&tail[start + len..])
                && at_top_level(tail, start);
            is_it.then(|| Completion {
                has_errors: frame.get("HasErrors").and_then(Value::as_bool),
                cancelled: frame.get("Cancelled").and_then(Value::as_bool),
            })
        })
}

/// Whether the value at `at` is held by the body's array or by nothing within the tail.
fn at_top_level(tail: &[u8], at: usize) -> bool {
    enclosing_open(tail, at).is_none_or(|body| enclosing_open(tail, body).is_none())
}

fn only_closing(rest: &[u8]) -> bool {
    rest.iter().all(|&b| b == b']' || b.is_ascii_whitespace())
}

// === Finding JSON structure in a tail that can start anywhere ===

/// Where `text` stands as a whole JSON string (its opening quote's offset), last first.
///
/// A match's closing quote ends a string (an escaped quote would have a backslash before it).
/// If its opening quote is not escaped, it starts one: between two unescaped quotes there is
/// either a string or the space between two strings, and the marker's letters cannot stand
/// outside a string. This holds wherever the tail starts, so the stream need not be tokenised.
fn string_values<'a>(buf: &'a [u8], text: &'a str) -> impl Iterator<Item = usize> + 'a {
    let text = text.as_bytes();
    let mut end = buf.len();
    std::iter::from_fn(move || loop {
        let at = buf[..end]
            .windows(text.len())
            .rposition(|window| window == text)?;
        end = at + text.len() - 1;
        let quoted = at > 0 && buf[at - 1] == b'"' && buf.get(at + text.len()) == Some(&b'"');
        if quoted && !is_escaped(buf, at - 1) {
            return Some(at - 1);
        }
    })
}

/// Whether the quote at `at` is escaped: JSON escapes it with an odd run of backslashes.
fn is_escaped(buf: &[u8], at: usize) -> bool {
    let backslashes = buf[..at].iter().rev().take_while(|&&b| b == b'\\').count();
    backslashes % 2 == 1
}

/// The `[` or `{` that opens the array or object holding the value at `at`, which must lie
/// outside any string. Walks back over strings (by their unescaped quotes) and nested values.
fn enclosing_open(buf: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    for i in (0..at).rev() {
        let b = buf[i];
        if in_string {
            // Walking backwards, the string's unescaped opening quote is where it ends.
            if b == b'"' && !is_escaped(buf, i) {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b']' | b'}' => depth += 1,
            b'[' | b'{' if depth == 0 => return Some(i),
            b'[' | b'{' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The JSON value at the start of `bytes`, and how many bytes it took; whatever follows it is
/// left alone (a `,`, more frames).
fn first_value(bytes: &[u8]) -> Option<(Value, usize)> {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    let value = values.next()?.ok()?;
    Some((value, values.byte_offset()))
}

// === The payload's fields ===

fn cost_from_payload(payload: &Value) -> QueryCost {
    let usage = payload.get("resource_usage");
    let cache = field(usage, &["cache"]);
    let shards = field(cache, &["shards"]);
    let stats = payload.get("dataset_statistics").and_then(Value::as_array);
    QueryCost {
        execution_seconds: payload.get("ExecutionTime").and_then(seconds),
        cpu_seconds: field(usage, &["cpu", "total cpu"]).and_then(seconds),
        memory_peak_bytes: field(usage, &["memory", "peak_per_node"]).and_then(count),
        cache_hot_hit_bytes: field(shards, &["hot", "hitbytes"]).and_then(count),
        cache_hot_miss_bytes: field(shards, &["hot", "missbytes"]).and_then(count),
        cache_cold_hit_bytes: field(shards, &["cold", "hitbytes"]).and_then(count),
        cache_cold_miss_bytes: field(shards, &["cold", "missbytes"]).and_then(count),
        rows_returned: stats.map(|tables| sum(tables, "table_row_count")),
        result_bytes: stats.map(|tables| sum(tables, "table_size")),
        from_results_cache: [cache, shards]
            .into_iter()
            .flatten()
            .any(|at| at.get("results_cache_origin").is_some_and(|o| !o.is_null())),
        has_errors: None,
        cancelled: None,
    }
}

/// The value at `path` below `value`; `None` wherever the shape differs.
fn field<'a>(value: Option<&'a Value>, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value?, |value, key| value.get(key))
}

fn sum(tables: &[Value], key: &str) -> u64 {
    tables
        .iter()
        .filter_map(|table| table.get(key).and_then(count))
        .fold(0, u64::saturating_add)
}

/// A byte or row count: a JSON number, or a number in a string as older payloads have.
fn count(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| whole(n.as_f64()?)),
        Value::String(s) => {
            let s = s.trim();
            s.parse().ok().or_else(|| whole(s.parse().ok()?))
        }
        _ => None,
    }
}

fn whole(f: f64) -> Option<u64> {
    (f.is_finite() && f >= 0.0).then_some(f as u64)
}

/// Seconds: a JSON number, a number in a string, or a timespan string.
fn seconds(value: &Value) -> Option<f64> {
    let secs = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.contains(':') => parse_timespan(s),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    (secs.is_finite() && secs >= 0.0).then_some(secs)
}

/// `[d.]hh:mm:ss[.fffffff]`, the invariant .NET TimeSpan format Kusto writes CPU times in.
fn parse_timespan(s: &str) -> Option<f64> {
    let mut parts = s.trim().split(':');
    let (head, minutes, secs) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (days, hours) = head.split_once('.').unwrap_or(("0", head));
    let secs = secs
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.')
        .then(|| secs.parse::<f64>().ok())??;
    Some(digits(days)? * 86_400.0 + digits(hours)? * 3_600.0 + digits(minutes)? * 60.0 + secs)
}

fn digits(s: &str) -> Option<f64> {
    let all_digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits.then(|| s.parse::<u64>().ok().map(|n| n as f64))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use serde_json::json;
    use std::io::{Read, Write};
    use std::time::Instant;

    // --- fixtures: our own answers, shaped like the captured ones ---

    const HEADER: &str = r#"{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0","IsFragmented":false,"ErrorReportingPlacement":"InData"}"#;
    const PROGRESSIVE_HEADER: &str = r#"{"FrameType":"DataSetHeader","IsProgressive":true,"Version":"v2.0","IsFragmented":true,"ErrorReportingPlacement":"EndOfTable"}"#;
    const PRIMARY_COLUMNS: &str =
        r#"[{"ColumnName":"Id","ColumnType":"long"},{"ColumnName":"City","ColumnType":"string"}]"#;
    const QCI_COLUMNS: &str = r#"[{"ColumnName":"Timestamp","ColumnType":"datetime"},{"ColumnName":"ClientRequestId","ColumnType":"string"},{"ColumnName":"ActivityId","ColumnType":"guid"},{"ColumnName":"SubActivityId","ColumnType":"guid"},{"ColumnName":"ParentActivityId","ColumnType":"guid"},{"ColumnName":"Level","ColumnType":"int"},{"ColumnName":"LevelName","ColumnType":"string"},{"ColumnName":"StatusCode","ColumnType":"int"},{"ColumnName":"StatusCodeName","ColumnType":"string"},{"ColumnName":"EventType","ColumnType":"int"},{"ColumnName":"EventTypeName","ColumnType":"string"},{"ColumnName":"Payload","ColumnType":"string"}]"#;
    const GUID: &str = "0b7e2f5c-31d4-4c8a-9e61-5a2f0d9c7b13";

    fn payload() -> Value {
        json!({
            "QueryHash": "5e1f0c2d9a7b3e44",
            "ExecutionTime": 1.9034517,
            "resource_usage": {
                "cache": {"shards": {
                    "hot": {"hitbytes": 1_048_576, "missbytes": 4096, "retrievebytes": 4096},
                    "cold": {"hitbytes": 65_536, "missbytes": 512, "retrievebytes": 512},
                    "bypassbytes": 0
                }},
                "cpu": {"user": "00:00:03.2500000", "kernel": "00:00:00.2500000",
                        "total cpu": "00:00:03.5000000",
                        "breakdown": {"query execution": "00:00:03.4", "query planning": "00:00:00.1"}},
                "memory": {"peak_per_node": 73_400_320},
                "network": {"inter_cluster_total_bytes": 2048, "cross_cluster_total_bytes": 0}
            },
            "input_dataset_statistics": {"extents": {"total": 12, "scanned": 3}, "rows": {"total": 90_000, "scanned": 1200}},
            "dataset_statistics": [{"table_row_count": 4, "table_size": 256}, {"table_row_count": 2, "table_size": 64}],
            "cross_cluster_resource_usage": {}
        })
    }

    fn expected(has_errors: Option<bool>, cancelled: Option<bool>) -> QueryCost {
        QueryCost {
            execution_seconds: Some(1.9034517),
            cpu_seconds: Some(3.5),
            memory_peak_bytes: Some(73_400_320),
            cache_hot_hit_bytes: Some(1_048_576),
            cache_hot_miss_bytes: Some(4096),
            cache_cold_hit_bytes: Some(65_536),
            cache_cold_miss_bytes: Some(512),
            rows_returned: Some(6),
            result_bytes: Some(320),
            from_results_cache: false,
            has_errors,
            cancelled,
        }
    }

    /// A JSON string literal holding `text`: the report is JSON inside a string.
    fn string_cell(text: &str) -> String {
        serde_json::to_string(text).expect("a str always serialises")
    }

    fn qci_row(level: (u8, &str), event: (u8, &str), payload: &str) -> String {
        format!(
            r#"["2026-01-15T09:30:00.1234567Z","kqlgate;tenant-a;42",{g},{g},{g},{},"{}",0,"S_OK (0)",{},"{}",{}]"#,
            level.0,
            level.1,
            event.0,
            event.1,
            string_cell(payload),
            g = format!("\"{GUID}\""),
        )
    }

    fn qci_rows(payload: &str) -> String {
        [
            qci_row(
                (4, "Info"),
                (4, "QueryInfo"),
                r#"{"Count":1,"Text":"Query completed successfully"}"#,
            ),
            qci_row(
                (4, "Info"),
                (5, "WorkloadGroup"),
                r#"{"Count":1,"Text":"default"}"#,
            ),
            qci_row((6, "Stats"), (0, "QueryResourceConsumption"), payload),
        ]
        .join(",")
    }

    fn props_frame() -> String {
        let vis = string_cell(r#"{"Visualization":null,"Title":null,"Accumulate":false}"#);
        format!(
            r#"{{"FrameType":"DataTable","TableId":0,"TableKind":"QueryProperties","TableName":"@ExtendedProperties","Columns":[{{"ColumnName":"TableId","ColumnType":"int"}},{{"ColumnName":"Key","ColumnType":"string"}},{{"ColumnName":"Value","ColumnType":"dynamic"}}],"Rows":[[1,"Visualization",{vis}]]}}"#
        )
    }

    fn primary_table(rows: &str) -> String {
        format!(
            r#"{{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":{PRIMARY_COLUMNS},"Rows":[{rows}]}}"#
        )
    }

    fn qci_table(payload: &str) -> String {
        format!(
            r#"{{"FrameType":"DataTable","TableId":2,"TableKind":"QueryCompletionInformation","TableName":"QueryCompletionInformation","Columns":{QCI_COLUMNS},"Rows":[{}]}}"#,
            qci_rows(payload)
        )
    }

    fn completion(has_errors: bool, cancelled: bool) -> String {
        format!(
            r#"{{"FrameType":"DataSetCompletion","HasErrors":{has_errors},"Cancelled":{cancelled}}}"#
        )
    }

    const SOME_ROWS: &str = r#"[1,"Zürich"],[2,"Ōsaka"],[3,"say \"hi\""],[4,"[{]"]"#;

    fn v2_answer_with(payload: &str) -> Vec<u8> {
        let frames = [
            HEADER.to_owned(),
            props_frame(),
            primary_table(SOME_ROWS),
            qci_table(payload),
            completion(false, false),
        ];
        format!("[{}]", frames.join(",")).into_bytes()
    }

    fn v2_answer() -> Vec<u8> {
        v2_answer_with(&payload().to_string())
    }

    /// Progressive and fragmented: every table in TableHeader/TableFragment/TableCompletion
    /// frames, one frame a line, later lines starting with a comma.
    fn v2_progressive_answer() -> Vec<u8> {
        let frames = [
            PROGRESSIVE_HEADER.to_owned(),
            props_frame(),
            format!(r#"{{"FrameType":"TableHeader","TableId":1,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":{PRIMARY_COLUMNS}}}"#),
            r#"{"FrameType":"TableFragment","TableFragmentType":"DataAppend","TableId":1,"Rows":[[1,"Zürich"],[2,"Ōsaka"]]}"#.to_owned(),
            r#"{"FrameType":"TableProgress","TableId":1,"TableProgress":50.0}"#.to_owned(),
            r#"{"FrameType":"TableFragment","TableFragmentType":"DataAppend","TableId":1,"Rows":[[3,"say \"hi\""],[4,"[{]"]]}"#.to_owned(),
            r#"{"FrameType":"TableCompletion","TableId":1,"RowCount":4}"#.to_owned(),
            format!(r#"{{"FrameType":"TableHeader","TableId":2,"TableKind":"QueryCompletionInformation","TableName":"QueryCompletionInformation","Columns":{QCI_COLUMNS}}}"#),
            format!(
                r#"{{"FrameType":"TableFragment","TableFragmentType":"DataAppend","TableId":2,"Rows":[{}]}}"#,
                qci_rows(&payload().to_string())
            ),
            r#"{"FrameType":"TableCompletion","TableId":2,"RowCount":3}"#.to_owned(),
            completion(false, false),
        ];
        format!("[{}\n]\n", frames.join("\n,")).into_bytes()
    }

    fn v1_column(name: &str, data_type: &str, column_type: &str) -> Value {
        json!({"ColumnName": name, "DataType": data_type, "ColumnType": column_type})
    }

    /// Pretty-printed, with keys in serde_json's (sorted) order rather than Kusto's.
    fn v1_answer() -> Vec<u8> {
        let status_row = |severity: u8, name: &str, text: String| {
            json!([
                "2026-01-15T09:30:00.1234567Z",
                severity,
                name,
                0,
                text,
                1,
                GUID,
                GUID,
                GUID,
                "kqlgate;tenant-a;42"
            ])
        };
        let answer = json!({"Tables": [
            {"TableName": "Table_0",
             "Columns": [v1_column("Id", "Int64", "long"), v1_column("City", "String", "string")],
             "Rows": [[1, "Zürich"], [2, "Stats", "{\"ExecutionTime\": 99}"]]},
            {"TableName": "Table_1", "Columns": [v1_column("Value", "String", "string")],
             "Rows": [["{\"Visualization\":null,\"Title\":null}"]]},
            {"TableName": "Table_2",
             "Columns": [v1_column("Timestamp", "DateTime", "datetime"), v1_column("Severity", "Int32", "int"),
                         v1_column("SeverityName", "String", "string"), v1_column("StatusCode", "Int32", "int"),
                         v1_column("StatusDescription", "String", "string"), v1_column("Count", "Int32", "int"),
                         v1_column("RequestId", "Guid", "guid"), v1_column("ActivityId", "Guid", "guid"),
                         v1_column("SubActivityId", "Guid", "guid"), v1_column("ClientActivityId", "String", "string")],
             "Rows": [status_row(4, "Info", "Query completed successfully".to_owned()),
                      status_row(6, "Stats", payload().to_string())]},
            {"TableName": "Table_3",
             "Columns": [v1_column("Ordinal", "Int64", "long"), v1_column("Kind", "String", "string"),
                         v1_column("Name", "String", "string"), v1_column("Id", "String", "string"),
                         v1_column("PrettyName", "String", "string")],
             "Rows": [[0, "QueryResult", "PrimaryResult", GUID, ""],
                      [1, "QueryProperties", "@ExtendedProperties", GUID, ""],
                      [2, "QueryStatus", "QueryStatus", "00000000-0000-0000-0000-000000000000", ""]]}
        ]});
        serde_json::to_vec_pretty(&answer).expect("a Value always serialises")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(bytes).expect("writing to a Vec");
        encoder.finish().expect("writing to a Vec")
    }

    /// One gzip member per piece between the cuts.
    fn gzip_members(bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([bytes.len()].iter()) {
            out.extend(gzip(&bytes[from..to]));
            from = to;
        }
        out
    }

    fn watch(format: Format, gzip: bool, body: &[u8], chunk: usize) -> Option<QueryCost> {
        let mut watcher = CostWatcher::new(format, gzip);
        for piece in body.chunks(chunk) {
            watcher.feed(piece);
        }
        watcher.finish()
    }

    /// xorshift64: a fixed seed makes the fuzz loop repeatable.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    // --- the answers ---

    /// A small v2 answer of DataTable frames on one line.
    #[test]
    fn v2_small_answer() {
        let mut watcher = CostWatcher::new(Format::V2, false);
        watcher.feed(&v2_answer());
        assert!(
            watcher.retained_bytes() < WINDOW,
            "a small answer holds less than the window"
        );
        assert_eq!(watcher.finish(), Some(expected(Some(false), Some(false))));
    }

    /// Progressive and fragmented frames, newlines and leading commas between them, fed in
    /// pieces that cut frames anywhere.
    #[test]
    fn v2_progressive_fragmented_with_newlines() {
        let body = v2_progressive_answer();
        for chunk in [1, 7, 100, body.len()] {
            assert_eq!(
                watch(Format::V2, false, &body, chunk),
                Some(expected(Some(false), Some(false))),
                "chunk {chunk}"
            );
        }
    }

    /// A v1 answer, pretty-printed: the Stats row of the QueryStatus table, after a result
    /// table holding a lookalike row.
    #[test]
    fn v1_query_status() {
        let cost = watch(Format::V1, false, &v1_answer(), 7);
        assert_eq!(cost, Some(expected(None, None)));
    }

    /// The same answer read as the wrong format finds no report.
    #[test]
    fn wrong_format_finds_nothing() {
        assert_eq!(watch(Format::V1, false, &v2_progressive_answer(), 64), None);
        assert_eq!(watch(Format::V2, false, &v1_answer(), 64), None);
    }

    /// gzip in one member, fed 1, 7 and 64 KiB at a time.
    #[test]
    fn gzip_single_member_odd_chunks() {
        for (format, body) in [(Format::V2, v2_answer()), (Format::V1, v1_answer())] {
            let want = watch(format, false, &body, body.len());
            assert!(want.is_some());
            let compressed = gzip(&body);
            for chunk in [1, 7, 64 * 1024] {
                assert_eq!(
                    watch(format, true, &compressed, chunk),
                    want,
                    "chunk {chunk}"
                );
            }
        }
    }

    /// Several gzip members, cut inside frames and inside the payload string, fed 1, 7 and
    /// 64 KiB at a time (so member boundaries fall inside chunks).
    #[test]
    fn gzip_multi_member_odd_chunks() {
        let body = v2_progressive_answer();
        let payload_at = body
            .windows(13)
            .rposition(|w| w == b"ExecutionTime")
            .expect("fixture");
        let compressed = gzip_members(&body, &[1, 200, payload_at + 5, body.len() - 2]);
        for chunk in [1, 7, 64 * 1024] {
            assert_eq!(
                watch(Format::V2, true, &compressed, chunk),
                Some(expected(Some(false), Some(false))),
                "chunk {chunk}"
            );
        }
    }

    /// The decoded copy is the body, byte for byte, when one chunk decodes to many times the
    /// scratch piece: the decoder is drained, not just fed.
    #[test]
    fn gzip_decodes_every_byte() {
        let (head, block, end) = large_answer_parts();
        let body = [head, block.repeat(5), end].concat();
        let compressed = gzip_members(&body, &[body.len() / 2]);
        for chunk in [compressed.len(), 64 * 1024, 1000, 1] {
            let mut tail = Tail::new(body.len());
            let mut gunzip = Gunzip::new();
            for piece in compressed.chunks(chunk) {
                gunzip.feed(piece, &mut tail);
            }
            assert!(
                gunzip.state == GzState::Running && gunzip.members_done == 2,
                "chunk {chunk}"
            );
            assert!(tail.into_bytes() == body, "chunk {chunk}");
        }
    }

    /// A stream cut off anywhere still yields every byte the decoder can give (as flate2's
    /// reader does), even when the cut falls where the scratch piece fills.
    #[test]
    fn gzip_cut_anywhere_decodes_all_it_can() {
        let (_, block, _) = large_answer_parts();
        let compressed = gzip(&block[..40 * 1024]);
        for cut in 1..compressed.len() {
            let input = &compressed[..cut];
            let mut reference = Vec::new();
            let _cut_off = flate2::read::GzDecoder::new(input).read_to_end(&mut reference);
            let mut tail = Tail::new(64 * 1024);
            Gunzip::new().feed(input, &mut tail);
            assert!(tail.into_bytes() == reference, "cut at {cut}");
        }
    }

    /// Bytes after the last complete member that are not gzip end the watching but keep what
    /// was decoded.
    #[test]
    fn gzip_trailing_garbage_keeps_the_answer() {
        let mut compressed = gzip(&v2_answer());
        compressed.extend_from_slice(&[0u8; 16]);
        assert_eq!(
            watch(Format::V2, true, &compressed, 5),
            Some(expected(Some(false), Some(false)))
        );
    }

    /// A corrupt gzip stream: not gzip at all, a flipped byte in the deflate data, a wrong
    /// CRC. None, never a panic, whatever the chunking.
    #[test]
    fn gzip_corrupt_is_none() {
        let body = v2_answer();
        let good = gzip(&body);
        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x5a;
        let mut bad_crc = good.clone();
        let crc_at = bad_crc.len() - 8;
        bad_crc[crc_at] ^= 0x01;
        for (name, stream) in [
            ("plain bytes as gzip", body.clone()),
            ("flipped", flipped),
            ("crc", bad_crc),
        ] {
            for chunk in [1, 7, 4096] {
                assert_eq!(
                    watch(Format::V2, true, &stream, chunk),
                    None,
                    "{name}, chunk {chunk}"
                );
            }
        }
    }

    /// 1 GiB of primary rows in 64 KiB chunks, the report at the end: the tail never holds more
    /// than the window, and the cost is found. Also times plain feeding, in 64 KiB and 4 KiB
    /// chunks.
    #[test]
    fn very_large_answer_stays_bounded() {
        const GIB: usize = 1 << 30;
        let (head, block, end) = large_answer_parts();
        for piece in [64 * 1024, 4 * 1024] {
            let mut watcher = CostWatcher::new(Format::V2, false);
            watcher.feed(&head);
            let started = Instant::now();
            for _ in 0..GIB / block.len() {
                for chunk in block.chunks(piece) {
                    watcher.feed(chunk);
                    assert!(watcher.retained_bytes() <= WINDOW);
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            watcher.feed(&end);
            assert!(watcher.retained_bytes() <= WINDOW);
            let finishing = Instant::now();
            assert_eq!(watcher.finish(), Some(expected(Some(false), Some(false))));
            eprintln!(
                "finish on a full window: {:.2} ms",
                finishing.elapsed().as_secs_f64() * 1e3
            );
            let rate = GIB as f64 / elapsed / 1e9;
            eprintln!(
                "plain feed, {} KiB chunks: 1 GiB in {elapsed:.3} s = {rate:.1} GB/s",
                piece / 1024
            );
            assert!(
                rate > 1.0,
                "plain feeding must run at memcpy speed, got {rate:.2} GB/s"
            );
        }
    }

    /// The same 1 GiB answer gzip-compressed in 130 members, fed in 64 KiB chunks across
    /// member boundaries: bounded, found, and about as fast as the bare decoder.
    #[test]
    fn very_large_gzip_answer_at_decoder_speed() {
        let (head, block, end) = large_answer_parts();
        let decoded_len = head.len() + (1 << 30) + end.len();
        let member = gzip(&block.repeat(128)); // 8 MiB decoded, 128 times
        let (head, end) = (gzip(&head), gzip(&end));
        let pieces = || {
            std::iter::once(head.as_slice())
                .chain(std::iter::repeat_n(member.as_slice(), 128))
                .chain(std::iter::once(end.as_slice()))
        };

        let mut watcher = CostWatcher::new(Format::V2, true);
        let started = Instant::now();
        rechunk(pieces(), 64 * 1024, |chunk| {
            watcher.feed(chunk);
            assert!(watcher.retained_bytes() <= WINDOW);
        });
        let watched = started.elapsed().as_secs_f64();
        assert_eq!(watcher.finish(), Some(expected(Some(false), Some(false))));

        let mut bare = BareGunzip::default();
        let started = Instant::now();
        rechunk(pieces(), 64 * 1024, |chunk| bare.feed(chunk));
        let decoder = started.elapsed().as_secs_f64();
        assert_eq!(bare.decoded, decoded_len as u64);

        let gib = (1u64 << 30) as f64;
        eprintln!(
            "gzip feed: 1 GiB decoded in {watched:.3} s = {:.2} GB/s; bare decoder {decoder:.3} s = {:.2} GB/s",
            gib / watched / 1e9,
            gib / decoder / 1e9
        );
        assert!(
            watched < decoder * 2.0 + 0.1,
            "watching costs {watched:.3} s, decoding alone {decoder:.3} s"
        );
    }

    /// The answer's start (to the open Rows array), a 64 KiB block of 1024 rows of 64 bytes
    /// each, and its end (closing the table, the report, the completion).
    fn large_answer_parts() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let head = format!(
            r#"[{HEADER},{},{{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":{PRIMARY_COLUMNS},"Rows":[[0,"start"]"#,
            props_frame()
        );
        let pad = "x".repeat(48);
        let block: String = (0..1024)
            .map(|id| format!(",[{id:010},\"{pad}\"]"))
            .collect();
        assert_eq!(block.len(), 64 * 1024);
        let end = format!(
            "]}}\n,{}\n,{}\n]",
            qci_table(&payload().to_string()),
            completion(false, false)
        );
        (head.into_bytes(), block.into_bytes(), end.into_bytes())
    }

    /// Feeds the concatenated pieces in chunks of `size`, ignoring where the pieces end.
    fn rechunk<'a>(
        pieces: impl Iterator<Item = &'a [u8]>,
        size: usize,
        mut feed: impl FnMut(&[u8]),
    ) {
        let mut chunk = Vec::with_capacity(size);
        for mut piece in pieces {
            while !piece.is_empty() {
                let take = (size - chunk.len()).min(piece.len());
                chunk.extend_from_slice(&piece[..take]);
                piece = &piece[take..];
                if chunk.len() == size {
                    feed(&chunk);
                    chunk.clear();
                }
            }
        }
        if !chunk.is_empty() {
            feed(&chunk);
        }
    }

    /// The decoder alone, as the yardstick for the watcher's gzip speed.
    struct BareGunzip {
        decoder: Decompress,
        scratch: Vec<u8>,
        decoded: u64,
    }
    impl Default for BareGunzip {
        fn default() -> Self {
            BareGunzip {
                decoder: Decompress::new_gzip(15),
                scratch: vec![0; SCRATCH],
                decoded: 0,
            }
        }
    }
    impl BareGunzip {
        fn feed(&mut self, mut input: &[u8]) {
            loop {
                let (i, o) = (self.decoder.total_in(), self.decoder.total_out());
                let status =
                    self.decoder
                        .decompress(input, &mut self.scratch, FlushDecompress::None);
                let used = (self.decoder.total_in() - i) as usize;
                let made = (self.decoder.total_out() - o) as usize;
                self.decoded += made as u64;
                input = &input[used..];
                if status.expect("the yardstick's stream is valid") == Status::StreamEnd {
                    self.decoder = Decompress::new_gzip(15);
                }
                if made < self.scratch.len() && (input.is_empty() || used == 0) {
                    return;
                }
            }
        }
    }

    /// A stream cut before the report, inside the payload, or inside the completion frame.
    #[test]
    fn cut_off_stream() {
        let body = v2_answer();
        let qci_at = body
            .windows(26)
            .rposition(|w| w == b"QueryCompletionInformation")
            .expect("fixture");
        let payload_at = body
            .windows(13)
            .rposition(|w| w == b"ExecutionTime")
            .expect("fixture");
        let completion_at = body
            .windows(17)
            .rposition(|w| w == b"DataSetCompletion")
            .expect("fixture");
        assert_eq!(
            watch(Format::V2, false, &body[..qci_at], 7),
            None,
            "before the report"
        );
        assert_eq!(
            watch(Format::V2, false, &body[..payload_at + 20], 7),
            None,
            "inside the payload"
        );
        assert_eq!(
            watch(Format::V2, false, &body[..completion_at + 30], 7),
            Some(expected(None, None)),
            "the report arrived, the completion did not"
        );
        assert_eq!(
            watch(Format::V2, true, &gzip(&body)[..200], 7),
            None,
            "cut gzip"
        );
        assert_eq!(watch(Format::V2, false, b"", 7), None, "empty");
    }

    /// A payload with only ExecutionTime; an older shape (cache.memory / cache.disk, numbers in
    /// strings, days in the CPU time); fields of unexpected types.
    #[test]
    fn payload_with_missing_or_odd_fields() {
        let only_time = watch(
            Format::V2,
            false,
            &v2_answer_with(r#"{"ExecutionTime":0.5}"#),
            64,
        );
        assert_eq!(
            only_time,
            Some(QueryCost {
                execution_seconds: Some(0.5),
                has_errors: Some(false),
                cancelled: Some(false),
                ..QueryCost::default()
            })
        );

        let older = json!({
            "ExecutionTime": "0.25",
            "resource_usage": {
                "cache": {"memory": {"hits": 3, "misses": 1, "total": 4}, "disk": {"hits": "2", "misses": "0", "total": "2"}},
                "cpu": {"user": "1.00:00:01", "kernel": "00:00:00.5", "total cpu": "1.00:00:01.5000000"},
                "memory": {"peak_per_node": "1024"}
            },
            "dataset_statistics": [{"table_row_count": "7", "table_size": 70.0}, {"table_row_count": 1}]
        });
        let cost =
            watch(Format::V2, false, &v2_answer_with(&older.to_string()), 64).expect("a report");
        assert_eq!(cost.execution_seconds, Some(0.25));
        assert_eq!(cost.cpu_seconds, Some(86_401.5));
        assert_eq!(cost.memory_peak_bytes, Some(1024));
        assert_eq!(cost.cache_hot_hit_bytes, None);
        assert_eq!(cost.cache_cold_miss_bytes, None);
        assert_eq!(cost.rows_returned, Some(8));
        assert_eq!(cost.result_bytes, Some(70));

        let odd = json!({
            "resource_usage": {"cpu": {"total cpu": 17}, "cache": "warm", "memory": [1, 2]},
            "ExecutionTime": "-1",
            "dataset_statistics": {"table_row_count": 3}
        });
        let cost =
            watch(Format::V2, false, &v2_answer_with(&odd.to_string()), 64).expect("a report");
        assert_eq!(
            cost,
            QueryCost {
                cpu_seconds: Some(17.0),
                has_errors: Some(false),
                cancelled: Some(false),
                ..QueryCost::default()
            }
        );
    }

    /// A results-cache hit: `results_cache_origin` under `cache` (as the service sends it) or
    /// under `cache.shards` (as the docs' prose has it).
    #[test]
    fn results_cache_hit() {
        let origin = json!({"client_request_id": "kqlgate;tenant-a;7", "started_on": "2026-01-15T09:00:00.0000000Z"});
        let mut under_cache = payload();
        under_cache["resource_usage"]["cache"]["results_cache_origin"] = origin.clone();
        let mut under_shards = payload();
        under_shards["resource_usage"]["cache"]["shards"]["results_cache_origin"] = origin;
        let mut null_origin = payload();
        null_origin["resource_usage"]["cache"]["results_cache_origin"] = Value::Null;
        for (name, payload, hit) in [
            ("cache", under_cache, true),
            ("shards", under_shards, true),
            ("null", null_origin, false),
        ] {
            let cost = watch(Format::V2, false, &v2_answer_with(&payload.to_string()), 64)
                .expect("a report");
            assert_eq!(cost.from_results_cache, hit, "{name}");
            assert_eq!(cost.rows_returned, Some(6), "{name}");
        }
    }

    /// A Payload string with escaped quotes, backslashes, unicode (raw and `\u` escaped), and
    /// the marker itself inside the text.
    #[test]
    fn payload_with_escapes_and_unicode() {
        let mut tricky = payload();
        tricky["QueryHash"] = json!("\"QueryResourceConsumption\" \\\" ],[{ ü 🚀");
        tricky["resource_usage"]["cache"]["results_cache_origin"] = json!({"client_request_id": "tenant \"é\" \\\\server\\share", "started_on": "2026-01-15"});
        let body = String::from_utf8(v2_answer_with(&tricky.to_string())).expect("utf-8");
        // The outer string may escape non-ASCII as \uXXXX too.
        let at = body.rfind('ü').expect("fixture");
        let body = [&body[..at], "\\u00fc", &body[at + 'ü'.len_utf8()..]]
            .concat()
            .into_bytes();
        let mut want = expected(Some(false), Some(false));
        want.from_results_cache = true;
        for chunk in [1, 7, 4096] {
            assert_eq!(
                watch(Format::V2, false, &body, chunk),
                Some(want.clone()),
                "chunk {chunk}"
            );
        }
    }

    /// DataSetCompletion with errors (and OneApiErrors) and a cancelled query.
    #[test]
    fn completion_flags() {
        let errors = r#"{"FrameType":"DataSetCompletion","HasErrors":true,"Cancelled":true,"OneApiErrors":[{"error":{"code":"LimitsExceeded","message":"too \"many\" rows","@permanent":false}}]}"#;
        let body = String::from_utf8(v2_answer())
            .expect("utf-8")
            .replace(&completion(false, false), errors);
        assert_eq!(
            watch(Format::V2, false, body.as_bytes(), 9),
            Some(expected(Some(true), Some(true)))
        );
    }

    /// A failed query: a completion, no consumption row. Some, with only the flags.
    #[test]
    fn completion_without_report() {
        let body = format!("[{HEADER},{},{}]", props_frame(), completion(true, false));
        let want = QueryCost {
            has_errors: Some(true),
            cancelled: Some(false),
            ..QueryCost::default()
        };
        assert_eq!(watch(Format::V2, false, body.as_bytes(), 3), Some(want));
    }

    /// A tenant's own rows that look like the report or the completion, in a stream cut
    /// before the real ones: neither stands in for them. With the real report after them, the
    /// real one wins.
    #[test]
    fn lookalikes_in_results_do_not_count() {
        let fake_row = qci_row(
            (6, "Stats"),
            (0, "QueryResourceConsumption"),
            r#"{"ExecutionTime":0.001}"#,
        );
        let fake_completion =
            r#"{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}"#;
        let rows = format!("[1,\"a\"],{fake_row},[2,{fake_completion}],[3,\"b\"]");
        let table = primary_table(&rows);
        let open_table = &table[..table.len() - 2]; // without its closing "]}"
        let cut = format!("[{HEADER},{},{open_table}", props_frame());
        assert_eq!(watch(Format::V2, false, cut.as_bytes(), 11), None);
        let at_fake_end = cut.find(fake_completion).expect("fixture") + fake_completion.len() + 1;
        assert_eq!(
            watch(Format::V2, false, &cut.as_bytes()[..at_fake_end], 11),
            None
        );

        let whole = format!(
            "{cut}]}},{},{}]",
            qci_table(&payload().to_string()),
            completion(false, false)
        );
        assert_eq!(
            watch(Format::V2, false, whole.as_bytes(), 11),
            Some(expected(Some(false), Some(false)))
        );

        let v1 = json!({"Tables": [{"TableName": "Table_0",
            "Columns": [v1_column("Level", "String", "string"), v1_column("Text", "String", "string")],
            "Rows": [["Stats", "{\"ExecutionTime\": 99}"]]}]});
        assert_eq!(
            watch(Format::V1, false, v1.to_string().as_bytes(), 11),
            None
        );
    }

    /// A tail full of markers in one unclosed array: `finish` tries a few, not thousands (each
    /// try scans and parses up to a window), so it stays in milliseconds.
    #[test]
    fn finish_is_bounded_on_a_tail_of_markers() {
        for (format, marker) in [(Format::V2, V2_MARKER), (Format::V1, V1_MARKER)] {
            let cell = format!("\"{marker}\",\"{{\\\"ExecutionTime\\\":1}}\",");
            let mut watcher = CostWatcher::new(format, false);
            watcher.feed(b"[{\"FrameType\":\"DataTable\",\"Rows\":[[");
            watcher.feed(cell.repeat(WINDOW / cell.len() + 1).as_bytes());
            let started = Instant::now();
            assert_eq!(watcher.finish(), None);
            let took = started.elapsed().as_secs_f64();
            eprintln!(
                "finish on a tail of {marker:?} markers: {:.1} ms",
                took * 1e3
            );
            assert!(took < 0.5, "finish took {took:.3} s");
        }
    }

    /// Random slices of valid answers, flipped and inserted bytes, and pure garbage, plain and
    /// gzip, in random chunk sizes: never a panic. Unharmed answers in random chunks always
    /// give the same cost.
    #[test]
    fn fuzz_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let answers = [
            (Format::V2, v2_answer()),
            (Format::V2, v2_progressive_answer()),
            (Format::V1, v1_answer()),
        ];
        for (format, body) in &answers {
            let want = watch(*format, false, body, body.len());
            let compressed = gzip_members(body, &[body.len() / 3]);
            for round in 0..400 {
                let gzip = (round / 8) % 2 == 1;
                let source = if gzip { &compressed } else { body };
                let input = mutate(&mut rng, source, round);
                let mut watcher = CostWatcher::new(*format, gzip);
                let mut rest = input.as_slice();
                while !rest.is_empty() {
                    let (chunk, tail) = rest.split_at((1 + rng.below(300)).min(rest.len()));
                    watcher.feed(chunk);
                    rest = tail;
                }
                assert!(watcher.retained_bytes() <= WINDOW);
                let cost = watcher.finish();
                if round % 8 == 0 {
                    assert_eq!(cost, want, "round {round}: unharmed answer");
                }
            }
        }
    }

    fn mutate(rng: &mut Rng, source: &[u8], round: usize) -> Vec<u8> {
        let mut bytes = source.to_vec();
        match round % 8 {
            0 => {}
            1 | 2 => {
                let from = rng.below(bytes.len());
                let to = from + rng.below(bytes.len() - from + 1);
                bytes = bytes[from..to].to_vec();
            }
            3 | 4 => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(bytes.len());
                    bytes[at] = rng.next() as u8;
                }
            }
            5 => {
                let at = rng.below(bytes.len());
                let junk: Vec<u8> = (0..rng.below(64))
                    .map(|_| b"\"\\[]{},:x0 "[rng.below(11)])
                    .collect();
                bytes.splice(at..at, junk);
            }
            _ => bytes = (0..rng.below(5000)).map(|_| rng.next() as u8).collect(),
        }
        bytes
    }

    // --- the parts ---

    /// The ring keeps exactly the last bytes pushed, whatever the push sizes.
    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut rng = Rng(7);
        for window in [1, 5, 16] {
            let mut tail = Tail::new(window);
            let mut all = Vec::new();
            for _ in 0..500 {
                let data: Vec<u8> = (0..rng.below(2 * window + 2))
                    .map(|_| rng.next() as u8)
                    .collect();
                tail.push(&data);
                all.extend_from_slice(&data);
                assert!(tail.buf.capacity() <= window);
            }
            let keep = all.len().min(window);
            assert_eq!(
                tail.into_bytes(),
                all[all.len() - keep..].to_vec(),
                "window {window}"
            );
        }
    }

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("00:00:00"), Some(0.0));
        assert_eq!(parse_timespan("00:00:00.0156250"), Some(0.015625));
        assert_eq!(parse_timespan("01:01:58.5000000"), Some(3718.5));
        assert_eq!(
            parse_timespan("2.03:04:05.25"),
            Some(2.0 * 86_400.0 + 3.0 * 3600.0 + 4.0 * 60.0 + 5.25)
        );
        for bad in [
            "",
            "12",
            "00:00",
            "00:00:00:00",
            "aa:00:00",
            "00:00:-1",
            "-1.00:00:00",
            "00:00:1e3",
            ".:00:00",
        ] {
            assert_eq!(parse_timespan(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn escaped_quotes_are_recognised() {
        assert!(!is_escaped(br#"a""#, 1));
        assert!(is_escaped(br#"a\""#, 2));
        assert!(!is_escaped(br#"a\\""#, 3));
        assert!(is_escaped(br#"a\\\""#, 4));
    }

    #[test]
    fn enclosing_open_skips_strings_and_nested_values() {
        let text = br#"[1,{"a":"]}[{\"","b":[2,[3]]},"x"]"#;
        let x_at = text.len() - 4;
        assert_eq!(text[x_at], b'"');
        assert_eq!(enclosing_open(text, x_at), Some(0));
        let b_at = text
            .windows(3)
            .position(|w| w == b"\"b\"")
            .expect("fixture");
        assert_eq!(enclosing_open(text, b_at), Some(3));
    }
}
