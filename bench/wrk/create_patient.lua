-- Create Patient: POST /fhir/Patient, a name and gender drawn from families.txt (family, gender).
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
local families
local n = 0
local headers

function init(args)
  headers = common.json_headers()
  math.randomseed(22)
  families = common.values("families.txt")
end

function request()
  local family = common.pick(families)
  n = n + 1
  local body = string.format(
    '{"resourceType":"Patient","name":[{"family":"%s","given":["Wrk%d"]}],"gender":"%s",'
      .. '"birthDate":"19%02d-%02d-%02d"}',
    family[1], n, family[2], 30 + n % 70, 1 + n % 12, 1 + n % 28
  )
  return wrk.format("POST", "/fhir/Patient", headers, body)
end

done = common.done
