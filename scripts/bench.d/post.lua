-- wrk script: POST a Kusto query body, with Basic credentials when KQLGATE_AUTH is set.
-- Environment: BENCH_CSL (the csl, default "bytes 1024"), BENCH_AUTH ("Basic …" or empty).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json; charset=utf-8"
wrk.headers["Accept"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
local csl = os.getenv("BENCH_CSL") or "bytes 1024"
wrk.body = '{"db":"Samples","csl":"' .. csl .. '"}'
