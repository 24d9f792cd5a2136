-- Shared by the scenario scripts of bench/wrk.py (issue 21): the values the driver wrote, a random one
-- of them, and the result line the driver parses (wrk's own summary has no p95).
--
-- The driver sets WRK_DATA to a directory of values files (one value a line, fields tab-separated) and
-- passes the access token with -H "Authorization: Bearer ...".
local common = {}

function common.values(name)
  local path = os.getenv("WRK_DATA") .. "/" .. name
  local values = {}
  for line in io.lines(path) do
    if line ~= "" then
      local fields = {}
      for field in string.gmatch(line, "[^\t]+") do
        fields[#fields + 1] = field
      end
      values[#values + 1] = fields
    end
  end
  assert(#values > 0, path .. " holds no values")
  return values
end

function common.pick(values)
  return values[math.random(#values)]
end

-- The headers of a create: wrk.format takes given headers instead of wrk.headers (which hold the -H
-- Authorization), so they are copied in; call it in init, after wrk has set wrk.headers.
function common.json_headers()
  local headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  headers["Content-Type"] = "application/fhir+json"
  return headers
end

-- One line the driver reads: requests, non-2xx/3xx answers, socket errors and latency percentiles (µs).
function common.done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    "wrk-result requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d "
      .. "p50_us=%d p95_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, errors.status, errors.connect, errors.read, errors.write,
    errors.timeout, latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max
  ))
end

return common
