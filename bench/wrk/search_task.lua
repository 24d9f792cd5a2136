-- Search Task?owner&status&_count=10, the owner and status drawn from owners.txt (owner, status).
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
local owners

function init(args)
  math.randomseed(25)
  owners = common.values("owners.txt")
end

function request()
  local owner = common.pick(owners)
  return wrk.format("GET", "/fhir/Task?owner=" .. owner[1] .. "&status=" .. owner[2] .. "&_count=10")
end

done = common.done
