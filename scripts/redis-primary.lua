-- HAProxy task: route Redis clients only to the server that the Sentinels' majority names as primary.
--
-- Every REDIS_SITE_POLL_MS it asks each Sentinel (REDIS_SITE_SENTINELS, "host:port ...") for the
-- address of REDIS_SITE_MASTER; a server of backend REDIS_SITE_BACKEND is left routable (ready)
-- only while a majority names its address, every other one is put in maintenance and its open
-- sessions cut, so clients reconnect through HAProxy to the new primary. The backend's own
-- tcp-check (ROLE master) still has to pass too: the Sentinels' word alone would route to a replica
-- being promoted before it accepts writes; ROLE alone would let an old primary that was SIGKILLed and
-- came back still configured as primary take writes until the Sentinels demote it.
-- No majority (Sentinels unreachable or disagreeing): nothing changes; the last decision stands.
--
-- In-process (HAProxy's cosockets), not an external-check: a check that forks redis-cli took up to
-- 1.3 s on a loaded two-core host and was killed as timed out, flapping the primary down.
-- Optional REDIS_SITE_SENTINEL_USER / REDIS_SITE_SENTINEL_PASS: the Sentinels' ACL user.

local function resp(...)
  local parts = { "*" .. select("#", ...) .. "\r\n" }
  for _, arg in ipairs({ ... }) do
    parts[#parts + 1] = "$" .. #arg .. "\r\n" .. arg .. "\r\n"
  end
  return table.concat(parts)
end

local function ask(host, port, master, user, pass)
  local sock = core.tcp()
  sock:settimeout(1)
  local named = nil
  if sock:connect(host, port) then
    local ok = true
    if pass and pass ~= "" then
      sock:send(user and user ~= "" and resp("AUTH", user, pass) or resp("AUTH", pass))
      ok = sock:receive("*l") == "+OK"
    end
    if ok and sock:send(resp("SENTINEL", "get-master-addr-by-name", master)) then
      if sock:receive("*l") == "*2" then
        sock:receive("*l")
        local ip = sock:receive("*l")
        sock:receive("*l")
        local p = sock:receive("*l")
        if ip and p then named = ip .. ":" .. p end
      end
    end
  end
  sock:close()
  return named
end

core.register_task(function()
  local sentinels = {}
  for item in string.gmatch(os.getenv("REDIS_SITE_SENTINELS") or "", "%S+") do
    local host, port = string.match(item, "^(.+):(%d+)$")
    sentinels[#sentinels + 1] = { host = host, port = tonumber(port) }
  end
  local master = os.getenv("REDIS_SITE_MASTER") or "cowork"
  local backend = os.getenv("REDIS_SITE_BACKEND") or "primary"
  local user, pass = os.getenv("REDIS_SITE_SENTINEL_USER"), os.getenv("REDIS_SITE_SENTINEL_PASS")
  local poll = tonumber(os.getenv("REDIS_SITE_POLL_MS") or "250")
  local last = nil
  while true do
    local votes, winner = {}, nil
    for _, s in ipairs(sentinels) do
      local named = ask(s.host, s.port, master, user, pass)
      if named then
        votes[named] = (votes[named] or 0) + 1
        if votes[named] * 2 > #sentinels then winner = named end
      end
    end
    if winner and winner ~= last then
      for name, srv in pairs(core.backends[backend].servers) do
        if srv:get_addr() == winner then
          srv:set_ready()
        else
          srv:set_maint()
          srv:shut_sess()
        end
      end
      core.Warning("redis-primary: the Sentinels' majority names " .. winner .. " as primary ("
        .. (last or "none before") .. " before)")
      last = winner
    end
    core.msleep(poll)
  end
end)
