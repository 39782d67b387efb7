-- One wrk script for every scenario, steered by environment variables:
--   BENCH_METHOD, BENCH_PATH (a "{id}" in it takes a random id from BENCH_IDS_FILE), BENCH_TOKEN,
--   BENCH_AUTHORIZATION (a whole Authorization header, instead of the token's), BENCH_BODY (a "{n}" in it takes a
--   random number per request; or the lines of BENCH_BODIES_FILE in turn, thread n of BENCH_THREADS taking lines n,
--   n + BENCH_THREADS, ..., so no two requests send the same line until all are sent), BENCH_CONTENT_TYPE and
--   BENCH_ACCEPT.
--   done() prints one JSON line the runner reads.
local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local token = os.getenv("BENCH_TOKEN")
local authorization = os.getenv("BENCH_AUTHORIZATION")
local body = os.getenv("BENCH_BODY")
local content_type = os.getenv("BENCH_CONTENT_TYPE")
local accept = os.getenv("BENCH_ACCEPT") or "application/json"
local ids = {}
local bodies = {}
local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
local started = 0
local next_body = 1

function setup(thread)
  started = started + 1
  thread:set("thread_number", started)
end

function init(args)
  local file = os.getenv("BENCH_IDS_FILE")
  if file then
    for line in io.lines(file) do ids[#ids + 1] = line end
  end
  local bodies_file = os.getenv("BENCH_BODIES_FILE")
  if bodies_file then
    for line in io.lines(bodies_file) do bodies[#bodies + 1] = line end
  end
  next_body = thread_number or 1
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  wrk.headers["Accept"] = accept
  if token then wrk.headers["Authorization"] = "Bearer " .. token end
  if authorization then wrk.headers["Authorization"] = authorization end
  if content_type then wrk.headers["Content-Type"] = content_type end
end

function request()
  local target = path
  if #ids > 0 then target = path:gsub("{id}", ids[math.random(#ids)]) end
  if #bodies > 0 then
    local line = bodies[(next_body - 1) % #bodies + 1]
    next_body = next_body + threads
    return wrk.format(method, target, nil, line)
  end
  if body and body:find("{n}", 1, true) then
    return wrk.format(method, target, nil, (body:gsub("{n}", tostring(math.random(1e9)))))
  end
  return wrk.format(method, target, nil, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), errors.status,
    errors.connect + errors.read + errors.write + errors.timeout))
end
