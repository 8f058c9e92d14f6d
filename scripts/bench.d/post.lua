-- wrk script: POST a Kusto query body, with Basic credentials when BENCH_AUTH is set.
-- Environment: BENCH_CSL (the csl, default "bytes 1024"), BENCH_AUTH ("Basic …" or empty).
-- When wrk is done it prints one line `BENCHJSON {…}` (requests, errors, latency percentiles
-- in microseconds) for scripts/bench.d/bench.py.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json; charset=utf-8"
wrk.headers["Accept"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
local csl = os.getenv("BENCH_CSL") or "bytes 1024"
wrk.body = '{"db":"Samples","csl":"' .. csl .. '"}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
