-- Read Patient by id: GET /fhir/Patient/{id}, the id drawn from patients.txt.
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
local patients

function init(args)
  math.randomseed(21)
  patients = common.values("patients.txt")
end

function request()
  return wrk.format("GET", "/fhir/Patient/" .. common.pick(patients)[1])
end

done = common.done
