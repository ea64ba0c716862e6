-- SPDX-License-Identifier: EPL-2.0
-- rest.lua: wrk script for chat-rest. Every request is made by a random
-- seeded user (token from tokens.txt), so requests spread over users,
-- partitions and the user cache like real traffic.
--   wrk -s rest.lua URL -- TOKENS_FILE inbox|history
--   inbox:   GET /v1/inbox?after=<0..50>&limit=50          (a full page)
--   history: GET /v1/conversations/<partner>/messages?limit=50 (newest page)
-- done() prints one RESULT line with p50/p99 latency and requests/s.
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

local users = {}
local mode = "inbox"

function init(args)
  for line in io.lines(args[1]) do
    local user, token, peer = line:match("^(%S+) (%S+) (%S+)$")
    if user then users[#users + 1] = {user, "Bearer " .. token, peer} end
  end
  mode = args[2] or "inbox"
  math.randomseed(os.time() * 1000 + (id or 0))
end

function request()
  local u = users[math.random(#users)]
  local path
  if mode == "history" then
    path = "/v1/conversations/" .. u[3] .. "/messages?limit=50"
  else
    path = "/v1/inbox?limit=50&after=" .. math.random(0, 50)
  end
  return wrk.format("GET", path, {["Authorization"] = u[2]})
end

function done(summary, latency, requests)
  local s = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d seconds=%.1f rps=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f " ..
    "non2xx=%d socket_errors=%d\n",
    summary.requests, s, summary.requests / s, latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout))
end
