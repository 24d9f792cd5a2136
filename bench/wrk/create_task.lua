-- Create Task: POST /fhir/Task for a patient and an owner drawn from tasks.txt (patient id, owner).
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
local tasks
local headers

function init(args)
  headers = common.json_headers()
  math.randomseed(23)
  tasks = common.values("tasks.txt")
end

function request()
  local task = common.pick(tasks)
  local body = string.format(
    '{"resourceType":"Task","status":"requested","intent":"order","for":{"reference":"Patient/%s"},'
      .. '"owner":{"reference":"%s"}}',
    task[1], task[2]
  )
  return wrk.format("POST", "/fhir/Task", headers, body)
end

done = common.done
