-- Search Patient?family&gender&_count=10, the name and gender drawn from families.txt (family, gender).
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
local families

function init(args)
  math.randomseed(24)
  families = common.values("families.txt")
end

function request()
  local family = common.pick(families)
  return wrk.format("GET", "/fhir/Patient?family=" .. family[1] .. "&gender=" .. family[2] .. "&_count=10")
end

done = common.done
