#!lua name=prepaid
--[[
Prepaid Account ledger: every money movement is ONE atomic FCALL, so no
check-then-debit race can exist (cnxcc's failure) and a retransmitted INVITE
or a second BYE cannot reserve or charge twice (cnxcc, IvozProvider).

Arithmetic mirrors kemi/money.py exactly (tests cross-check both): integers in
minor units, the same billing grid for authorisation and settlement.

Keys (all of one company share the hash tag {co:<co>}, one Cluster slot):
  {co:<co>}:prepaid   HASH   active "0"/"1", balance, currency
                      balance is a plain Redis integer (decimal string), NOT
                      msgpack, so HINCRBY does overflow-checked integer math.
  {co:<co>}:resv      ZSET   call-id -> reservation expiry, ms (server TIME)
  {co:<co>}:calls     HASH   call-id -> msgpack reservation
  {co:<co>}:topups    HASH   reference -> msgpack {amount, at_ms, balance_after}
  {co:<co>}:settled   ZSET   call-id -> settle time ms (idempotency, 24 h)
  {co:<co>}:outcomes  HASH   call-id -> msgpack outcome of its settlement, so a
                             second BYE gets the first answer; trimmed with settled
  {co:<co>}:cdr       STREAM one entry per call, field r = msgpack record
Results are msgpack maps; refusals are error replies whose first word is a
code (NOT_ACTIVE, INSUFFICIENT_FUNDS, ...) mapped by kemi/store/prepaid.py.

Lua numbers are doubles: every input is bounded (same limits as money.py) so
each product stays far below 2^53, and idiv() corrects the rounding of `/`.
Validation raises BEFORE the first write: an error does not roll back writes.
--]]

local MAX_PER_MINUTE = 1000000
local MAX_CONNECTION_FEE = 1000000
local MAX_INCREMENT = 3600
local MAX_CAP_SECS = 86400
local MAX_BALANCE = 10000000000000   -- 10^13, 60 * MAX_BALANCE < 2^53
local MAX_TTL_MS = 2 * 86400 * 1000   -- a reservation covers ringing + the longest call
local DAY_MS = 86400 * 1000
local BATCH = 100                     -- bounded purges keep every call short
local CDR_MAXLEN = '1000000'

local function fail(code, msg)
  error({err = code .. ' ' .. msg})
end

-- integer to decimal string: tostring() would print 1e+14 for large numbers
local function int_str(n)
  return string.format('%d', n)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- every key must carry the first key's hash tag: one company per call
local function check_keys(keys, n)
  local tag = #keys == n and string.match(keys[1], '^{co:[^{}]+}:')
  if not tag then fail('BAD_KEYS', 'expected ' .. n .. ' keys of one {co:<co>}') end
  for i = 2, n do
    if string.sub(keys[i], 1, #tag) ~= tag then fail('BAD_KEYS', 'keys of two companies') end
  end
end

local function arg_int(s, name, lo, hi)
  if type(s) ~= 'string' or #s > 16 or not string.match(s, '^%-?%d+$') then
    fail('BAD_ARGUMENT', name .. ' must be an integer')
  end
  local n = tonumber(s)
  if n < lo or n > hi then fail('BAD_ARGUMENT', name .. ' out of range') end
  return n
end

local function arg_id(s, name)
  if type(s) ~= 'string' or #s == 0 or #s > 256 then fail('BAD_ARGUMENT', name .. ' must be 1..256 bytes') end
  return s
end

local function arg_map(s, name)
  local ok, t = pcall(cmsgpack.unpack, s or '')
  -- t[1]: a msgpack array is a Lua table too, but not a map of fields
  if not ok or type(t) ~= 'table' or t[1] ~= nil then fail('BAD_ARGUMENT', name .. ' must be a msgpack map') end
  return t
end

local function is_int(v, lo, hi)
  return type(v) == 'number' and v == math.floor(v) and v >= lo and v <= hi
end

-- same checks as money.Rate.validate; missing optional fields take its defaults
local function arg_rate(s)
  local r = arg_map(s, 'rate')
  local rate = {prefix = r.prefix, per_minute = r.per_minute, connection_fee = r.connection_fee or 0,
                first = r.first or 60, next = r.next or 60}
  if type(rate.prefix) ~= 'string' or #rate.prefix > 16 or not string.match(rate.prefix, '^%+%d*$') then
    fail('BAD_RATE', 'prefix')
  end
  if not is_int(rate.per_minute, 0, MAX_PER_MINUTE) then fail('BAD_RATE', 'per_minute') end
  if not is_int(rate.connection_fee, 0, MAX_CONNECTION_FEE) then fail('BAD_RATE', 'connection_fee') end
  if not is_int(rate.first, 1, MAX_INCREMENT) then fail('BAD_RATE', 'first') end
  if not is_int(rate.next, 1, MAX_INCREMENT) then fail('BAD_RATE', 'next') end
  return rate
end

---------------------------------------------------------------- arithmetic
-- floor(a / b) for integers a >= 0, b >= 1: the double division may round
-- up to the next integer, so correct it by one step either way.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end

local function ceil_div(a, b)
  return idiv(a + b - 1, b)
end

local function billed_seconds(rate, secs)
  if secs <= 0 then return 0 end
  if secs <= rate.first then return rate.first end
  return rate.first + ceil_div(secs - rate.first, rate.next) * rate.next
end

local function cost(rate, secs)
  local billed = billed_seconds(rate, secs)
  if billed == 0 then return 0 end
  return rate.connection_fee + ceil_div(billed * rate.per_minute, 60)
end

local function grid_floor(rate, secs)
  if secs < rate.first then return 0 end
  return rate.first + idiv(secs - rate.first, rate.next) * rate.next
end

-- F + ceil(x*P/60) <= funds  <=>  x*P <= 60*(funds - F)
local function max_duration(rate, funds, cap)
  local budget = funds - rate.connection_fee
  if budget < 0 then return 0 end
  local limit = cap
  if rate.per_minute > 0 then limit = math.min(cap, idiv(60 * budget, rate.per_minute)) end
  return grid_floor(rate, limit)
end

---------------------------------------------------------------- storage
local function balance_of(prepaid)
  return tonumber(redis.call('HGET', prepaid, 'balance') or '0')
end

-- rec: a table to pack, or msgpack bytes passed through untouched (record())
local function xadd(cdr, rec)
  local blob = type(rec) == 'string' and rec or cmsgpack.pack(rec)
  return redis.call('XADD', cdr, 'MAXLEN', '~', CDR_MAXLEN, '*', 'r', blob)
end

-- a CDR starts from what the reservation knew (ext, to, rate, setup_ms...)
local function base_record(call_id, entry)
  local rec = {}
  for k, v in pairs(entry or {}) do rec[k] = v end
  rec.reserved, rec.amount, rec.available_before = rec.amount, nil, nil
  rec.call_id = call_id
  return rec
end

local function overlay(rec, extra)
  for k, v in pairs(extra) do rec[k] = v end
  return rec
end

-- an expired reservation frees its funds and leaves a zero-cost CDR
local function expire_one(k, call_id, now, balance)
  local blob = redis.call('HGET', k.calls, call_id)
  local rec = base_record(call_id, blob and cmsgpack.unpack(blob))
  overlay(rec, {disposition = 'reservation-expired', cost = 0, billed_secs = 0,
                balance_after = balance, settled_ms = now})
  redis.call('ZREM', k.resv, call_id)
  redis.call('HDEL', k.calls, call_id)
  xadd(k.cdr, rec)
end

local function purge_expired(k, now, balance)
  local ids = redis.call('ZRANGE', k.resv, '-inf', int_str(now), 'BYSCORE', 'LIMIT', 0, BATCH)
  for _, id in ipairs(ids) do expire_one(k, id, now, balance) end
end

-- live reservations (expiry > now), in expiry order, with their stored maps
local function live_reservations(k, now)
  local flat = redis.call('ZRANGE', k.resv, '(' .. int_str(now), '+inf', 'BYSCORE', 'WITHSCORES')
  local out = {}
  for i = 1, #flat, 2 do
    local blob = redis.call('HGET', k.calls, flat[i])
    if blob then
      local e = cmsgpack.unpack(blob)
      e.call_id, e.expires_ms = flat[i], tonumber(flat[i + 1])
      out[#out + 1] = e
    end
  end
  return out
end

local function reserved_total(list)
  local sum = 0
  for _, e in ipairs(list) do sum = sum + e.amount end
  return sum
end

local function live_score(resv, call_id, now)
  local s = redis.call('ZSCORE', resv, call_id)
  if s and tonumber(s) > now then return tonumber(s) end
  return nil
end

---------------------------------------------------------------- functions
local function state(prepaid)
  local h = redis.call('HMGET', prepaid, 'active', 'balance', 'currency')
  return {active = h[1] == '1', balance = tonumber(h[2] or '0'), currency = h[3] or ''}
end

local function activate(keys, args)
  check_keys(keys, 1)
  local currency = args[1]
  if type(currency) ~= 'string' or not string.match(currency, '^%u%u%u$') then
    fail('BAD_ARGUMENT', 'currency must be an ISO 4217 code')
  end
  local s = state(keys[1])
  -- re-labelling money already held would silently change its value
  if s.currency ~= '' and s.currency ~= currency and s.balance ~= 0 then
    return redis.error_reply('CURRENCY_MISMATCH account holds ' .. s.currency)
  end
  redis.call('HSET', keys[1], 'active', '1', 'currency', currency)
  redis.call('HSETNX', keys[1], 'balance', '0')
  return cmsgpack.pack(state(keys[1]))
end

-- deactivation stops new reservations; the balance and live calls stay
local function deactivate(keys, args)
  check_keys(keys, 1)
  redis.call('HSET', keys[1], 'active', '0')
  redis.call('HSETNX', keys[1], 'balance', '0')
  return cmsgpack.pack(state(keys[1]))
end

-- KEYS prepaid, topups; ARGV ref, amount. Credits once per reference.
local function topup(keys, args)
  check_keys(keys, 2)
  local ref = arg_id(args[1], 'reference')
  local amount = arg_int(args[2], 'amount', 1, MAX_BALANCE)
  local balance = balance_of(keys[1])
  local seen = redis.call('HGET', keys[2], ref)
  if seen then
    local t = cmsgpack.unpack(seen)
    -- same reference, other amount: a client bug, not a retry
    if t.amount ~= amount then return redis.error_reply('TOPUP_CONFLICT reference used for another amount') end
    return cmsgpack.pack({amount = t.amount, at_ms = t.at_ms, balance_after = t.balance_after,
                          balance = balance, duplicate = true})
  end
  if balance + amount > MAX_BALANCE then return redis.error_reply('BALANCE_LIMIT balance would exceed the limit') end
  local now = now_ms()
  local after = redis.call('HINCRBY', keys[1], 'balance', int_str(amount))
  redis.call('HSET', keys[2], ref, cmsgpack.pack({amount = amount, at_ms = now, balance_after = after}))
  return cmsgpack.pack({amount = amount, at_ms = now, balance_after = after, balance = after, duplicate = false})
end

-- KEYS prepaid, resv, calls, cdr; ARGV call_id, ttl_ms, cap_secs, rate, meta
local function reserve(keys, args)
  check_keys(keys, 4)
  local k = {prepaid = keys[1], resv = keys[2], calls = keys[3], cdr = keys[4]}
  local call_id = arg_id(args[1], 'call_id')
  local ttl = arg_int(args[2], 'ttl_ms', 1, MAX_TTL_MS)
  local cap = arg_int(args[3], 'cap_secs', 1, MAX_CAP_SECS)
  local rate = arg_rate(args[4])
  local meta = arg_map(args[5], 'meta')
  if cap < rate.first then fail('BAD_ARGUMENT', 'cap_secs below the first increment') end
  local now = now_ms()
  local balance = balance_of(k.prepaid)
  purge_expired(k, now, balance)
  -- a retransmitted INVITE or re-INVITE gets the reservation it already has
  local expires = live_score(k.resv, call_id, now)
  local held = expires and redis.call('HGET', k.calls, call_id)
  if held then
    local e = cmsgpack.unpack(held)
    return cmsgpack.pack({amount = e.amount, max_secs = e.max_secs, available_before = e.available_before,
                          balance = balance, expires_ms = expires, duplicate = true,
                          currency = redis.call('HGET', k.prepaid, 'currency') or ''})
  end
  -- expired beyond the purge batch (or an orphan): release it before reserving anew
  if redis.call('ZSCORE', k.resv, call_id) then expire_one(k, call_id, now, balance) end
  if redis.call('HGET', k.prepaid, 'active') ~= '1' then
    return redis.error_reply('NOT_ACTIVE Prepaid Account not activated')
  end
  local available = balance - reserved_total(live_reservations(k, now))
  local d = max_duration(rate, available, cap)
  if d == 0 then return redis.error_reply('INSUFFICIENT_FUNDS available=' .. int_str(available)) end
  local entry = overlay(meta, {amount = cost(rate, d), max_secs = d, rate = rate, setup_ms = now,
                               available_before = available})
  redis.call('HSET', k.calls, call_id, cmsgpack.pack(entry))
  redis.call('ZADD', k.resv, int_str(now + ttl), call_id)
  -- the currency comes back so the balance announcement needs no second round trip
  return cmsgpack.pack({amount = entry.amount, max_secs = d, available_before = available,
                        balance = balance, expires_ms = now + ttl, duplicate = false,
                        currency = redis.call('HGET', k.prepaid, 'currency') or ''})
end

-- KEYS resv; ARGV call_id, ttl_ms -> new expiry ms, 0 if no live reservation
local function renew(keys, args)
  check_keys(keys, 1)
  local call_id = arg_id(args[1], 'call_id')
  local ttl = arg_int(args[2], 'ttl_ms', 1, MAX_TTL_MS)
  local now = now_ms()
  local expires = live_score(keys[1], call_id, now)
  if not expires then return 0 end   -- expired funds may already be promised elsewhere
  redis.call('ZADD', keys[1], 'XX', 'GT', int_str(now + ttl), call_id)   -- GT: never shortens
  return math.max(expires, now + ttl)
end

local function trim_settled(k, now)
  local old = redis.call('ZRANGE', k.settled, '-inf', '(' .. int_str(now - DAY_MS), 'BYSCORE', 'LIMIT', 0, BATCH)
  if #old > 0 then
    redis.call('ZREM', k.settled, unpack(old))
    redis.call('HDEL', k.outcomes, unpack(old))
  end
end

local function finish(k, call_id, now, rec, outcome)
  redis.call('ZADD', k.settled, int_str(now), call_id)
  redis.call('HSET', k.outcomes, call_id, cmsgpack.pack(outcome))
  xadd(k.cdr, rec)
  trim_settled(k, now)
  outcome.duplicate = false
  return cmsgpack.pack(outcome)
end

-- KEYS prepaid, resv, calls, settled, cdr, outcomes; ARGV call_id, answered_secs, record
local function settle(keys, args)
  check_keys(keys, 6)
  local k = {prepaid = keys[1], resv = keys[2], calls = keys[3], settled = keys[4], cdr = keys[5], outcomes = keys[6]}
  local call_id = arg_id(args[1], 'call_id')
  local secs = math.max(arg_int(args[2], 'answered_secs', -MAX_BALANCE, MAX_BALANCE), 0)
  local record = arg_map(args[3], 'record')
  local now = now_ms()
  local balance = balance_of(k.prepaid)
  -- second BYE, retransmission: the first answer, nothing charged
  if redis.call('ZSCORE', k.settled, call_id) then
    local out = redis.call('HGET', k.outcomes, call_id)
    local o = out and cmsgpack.unpack(out) or {cost = 0, billed_secs = 0}
    o.balance, o.duplicate = balance, true
    return cmsgpack.pack(o)
  end
  purge_expired(k, now, balance)
  if redis.call('ZSCORE', k.resv, call_id) and not live_score(k.resv, call_id, now) then
    expire_one(k, call_id, now, balance)   -- expired beyond the purge batch
  end
  local blob = redis.call('HGET', k.calls, call_id)
  if not blob then
    -- expired or never reserved: nothing was promised, nothing is charged
    local rec = overlay(overlay({call_id = call_id}, record), {call_id = call_id, cost = 0, billed_secs = 0,
                        balance_after = balance, settled_ms = now, note = 'no-reservation'})
    return finish(k, call_id, now, rec,
                  {cost = 0, billed_secs = 0, balance = balance, settled_ms = now, note = 'no-reservation'})
  end
  local e = cmsgpack.unpack(blob)
  local billed = billed_seconds(e.rate, math.min(secs, e.max_secs))
  local c = math.min(cost(e.rate, billed), e.amount)
  if balance - c < 0 then
    return redis.error_reply('LEDGER_BROKEN balance ' .. int_str(balance) .. ' below cost ' .. int_str(c))
  end
  local after = redis.call('HINCRBY', k.prepaid, 'balance', int_str(-c))
  redis.call('ZREM', k.resv, call_id)
  redis.call('HDEL', k.calls, call_id)
  local rec = overlay(base_record(call_id, e), record)
  if rec.disposition == nil then rec.disposition = secs > 0 and 'answered' or 'not-answered' end
  overlay(rec, {call_id = call_id, cost = c, billed_secs = billed, balance_after = after, settled_ms = now})
  return finish(k, call_id, now, rec, {cost = c, billed_secs = billed, balance = after, settled_ms = now})
end

-- KEYS cdr; ARGV record: a non-prepaid call's record, stored as given
local function record(keys, args)
  check_keys(keys, 1)
  arg_map(args[1], 'record')
  return xadd(keys[1], args[1])
end

-- KEYS prepaid, resv, calls: read-only (FCALL_RO works on replicas)
local function status(keys, args)
  check_keys(keys, 3)
  local k = {prepaid = keys[1], resv = keys[2], calls = keys[3]}
  local s = state(k.prepaid)
  local list = {}
  for i, e in ipairs(live_reservations(k, now_ms())) do
    list[i] = {call_id = e.call_id, amount = e.amount, max_secs = e.max_secs, expires_ms = e.expires_ms,
               setup_ms = e.setup_ms, ext = e.ext, to = e.to}
  end
  s.reserved, s.reservations = reserved_total(list), list
  return cmsgpack.pack(s)
end

redis.register_function('prepaid_activate', activate)
redis.register_function('prepaid_deactivate', deactivate)
redis.register_function('prepaid_topup', topup)
redis.register_function('prepaid_reserve', reserve)
redis.register_function('prepaid_renew', renew)
redis.register_function('prepaid_settle', settle)
redis.register_function('prepaid_record', record)
redis.register_function{function_name = 'prepaid_status', callback = status, flags = {'no-writes'}}
