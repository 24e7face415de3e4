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
  {co:<co>}:ledger    LIST   one msgpack {id, cost, balance, ms} per charge, appended (RPUSH) in
                             the same function as the HINCRBY it records; never trimmed. With
                             topups (credits) it is the whole history of the balance:
                             balance = sum(topups) - opening.charged - sum(ledger costs),
                             which `kemi.admin prepaid audit` checks (tamper evidence, below)
  {co:<co>}:opening   HASH   written once by prepaid_ledger_open for an account that had a
                             balance before the ledger existed: charged (what the topups do not
                             account for then), balance, at_ms
Tamper evidence: Redis runs a function's commands with the caller's ACL rights, so the proxy's
user can write directly whatever these functions write for it (redis-schema/acl/cowork-proxy.acl).
Its rights are shaped so that this is only ever a loss for the proxy, never minted money: it has no
right on topups or opening (credits come from the admin user only), only RPUSH on ledger (an entry
can be added, never removed or rewritten), and on prepaid only HINCRBY. A balance raised behind
the functions' back (HINCRBY, or HSET by anyone) no longer equals its ledger, and the audit says so.
Every function records before it moves money (RPUSH, topups HSET before HINCRBY): a write the
caller is refused therefore comes before anything was changed.
resv/calls and settled/outcomes are written and removed in pairs: the same
call-ids in both, always.
Results are msgpack maps; refusals are error replies whose first word is a
code (NOT_ACTIVE, INSUFFICIENT_FUNDS, ...) mapped by kemi/store/prepaid.py.

Lua numbers are doubles: every input is bounded (same limits as money.py) so
each product stays far below 2^53, and idiv() corrects the rounding of `/`.

An error does not roll back writes already made, so every function reads and
checks everything first (key names and TYPEs, arguments, every stored value it
will use: LEDGER_BROKEN names the damaged key), decides, and only then writes.
Every refusal therefore changes nothing, and no write can fail half-way.
--]]

local MAX_PER_MINUTE = 1000000
local MAX_CONNECTION_FEE = 1000000
local MAX_INCREMENT = 3600
local MAX_CAP_SECS = 86400
local MAX_BALANCE = 10000000000000   -- 10^13, 60 * MAX_BALANCE < 2^53
local MAX_INT = 9007199254740991      -- 2^53 - 1: timestamps in ms
local MAX_TTL_MS = 2 * 86400 * 1000   -- a reservation covers ringing + the longest call
local MAX_ID = 128                    -- call ids: proxy-minted, opaque
local MAX_META = 4096                 -- bytes; kept in the reservation
local MAX_RECORD = 65536              -- bytes; unpacking a huge map would block the server
local DAY_MS = 86400 * 1000
local BATCH = 100                     -- bounded purges keep every call short
local CDR_MAXLEN = '1000000'
local KINDS = {prepaid = 'hash', resv = 'zset', calls = 'hash', topups = 'hash', settled = 'zset',
               outcomes = 'hash', cdr = 'stream', ledger = 'list', opening = 'hash'}

local function fail(code, msg)
  error({err = code .. ' ' .. msg})
end

-- integer to decimal string: tostring() would print 1e+14 for large numbers
local function int_str(n)
  return string.format('%d', n)
end

-- a stored name in an error reply: no control bytes, bounded
local function shown(s)
  s = string.gsub(s, '[^!-~]', '?')
  if #s > 64 then s = string.sub(s, 1, 61) .. '...' end
  return s
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- KEYS must be exactly {co:<co>}:<name> for `names`, in order (one company per
-- call), each absent or of its type: a WRONGTYPE error after a write would
-- leave a half-applied change.
local function open(keys, names)
  local co = #keys == #names and string.match(keys[1], '^{co:([a-z0-9][a-z0-9_%-]*)}:')
  if not co or #co > 63 then
    fail('BAD_KEYS', 'expected ' .. #names .. ' keys {co:<co>}:' .. table.concat(names, ','))
  end
  local k = {}
  for i, name in ipairs(names) do
    local want = '{co:' .. co .. '}:' .. name
    if keys[i] ~= want then fail('BAD_KEYS', 'key ' .. i .. ' must be ' .. want) end
    local t = redis.call('TYPE', want).ok
    if t ~= 'none' and t ~= KINDS[name] then
      fail('LEDGER_BROKEN', want .. ' is a ' .. t .. ', not a ' .. KINDS[name])
    end
    k[name] = want
  end
  return k
end

local function nargs(args, n)
  if #args ~= n then fail('BAD_ARGUMENT', 'expected ' .. n .. ' arguments') end
end

local function arg_int(s, name, lo, hi)
  if #s > 16 or not string.match(s, '^%-?%d+$') then fail('BAD_ARGUMENT', name .. ' must be an integer') end
  local n = tonumber(s)
  if n < lo or n > hi then fail('BAD_ARGUMENT', name .. ' out of range') end
  return n
end

-- an opaque key: printable ASCII without spaces, as a SIP Call-ID or a minted id
local function arg_call_id(s)
  if #s == 0 or #s > MAX_ID or string.find(s, '[^!-~]') then
    fail('BAD_ARGUMENT', 'call_id must be 1..' .. MAX_ID .. ' printable ASCII characters, no spaces')
  end
  return s
end

-- exactly one msgpack map (an array is a Lua table too, but t[1] ~= nil), else nil
local function one_map(ok, ...)
  local t = ...
  if ok and select('#', ...) == 1 and type(t) == 'table' and t[1] == nil then return t end
  return nil
end

local function unpack_map(blob)
  return one_map(pcall(cmsgpack.unpack, blob))
end

local function arg_map(s, name, max)
  local t = #s <= max and unpack_map(s)
  if not t then fail('BAD_ARGUMENT', name .. ' must be a msgpack map of at most ' .. max .. ' bytes') end
  return t
end

local function is_int(v, lo, hi)
  return type(v) == 'number' and v == math.floor(v) and v >= lo and v <= hi
end

-- same checks as money.Rate.validate: nil if valid, else the field at fault
local function rate_fault(r)
  if type(r) ~= 'table' then return 'rate' end
  if type(r.prefix) ~= 'string' or #r.prefix > 16 or not string.match(r.prefix, '^%+%d*$') then return 'prefix' end
  if not is_int(r.per_minute, 0, MAX_PER_MINUTE) then return 'per_minute' end
  if not is_int(r.connection_fee, 0, MAX_CONNECTION_FEE) then return 'connection_fee' end
  if not is_int(r.first, 1, MAX_INCREMENT) then return 'first' end
  if not is_int(r.next, 1, MAX_INCREMENT) then return 'next' end
  return nil
end

-- missing optional fields take money.Rate's defaults
local function arg_rate(s)
  local r = arg_map(s, 'rate', 1024)
  local rate = {prefix = r.prefix, per_minute = r.per_minute, connection_fee = r.connection_fee or 0,
                first = r.first or 60, next = r.next or 60}
  local bad = rate_fault(rate)
  if bad then fail('BAD_RATE', bad) end
  return rate
end

local function arg_meta(s)
  local m = arg_map(s, 'meta', MAX_META)
  for _, f in ipairs({'ext', 'to', 'call_id'}) do
    if m[f] ~= nil and type(m[f]) ~= 'string' then fail('BAD_ARGUMENT', 'meta.' .. f .. ' must be a string') end
  end
  return m
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

---------------------------------------------------------------- stored values
-- What the functions themselves write; anything else is damage (a hand edit,
-- another program), refused before it can be charged, released or copied.
local function resv_fault(e)
  local bad = rate_fault(e.rate)
  if bad then return 'rate.' .. bad end
  if not is_int(e.max_secs, 1, MAX_CAP_SECS) then return 'max_secs' end
  if e.amount ~= cost(e.rate, e.max_secs) then return 'amount' end
  if not is_int(e.available_before, 0, MAX_BALANCE) then return 'available_before' end
  if not is_int(e.setup_ms, 0, MAX_INT) then return 'setup_ms' end
  for _, f in ipairs({'ext', 'to', 'call_id'}) do
    if e[f] ~= nil and type(e[f]) ~= 'string' then return f end
  end
  return nil
end

local function topup_fault(t)
  if not is_int(t.amount, 1, MAX_BALANCE) then return 'amount' end
  if not is_int(t.at_ms, 0, MAX_INT) then return 'at_ms' end
  if not is_int(t.balance_after, 0, MAX_BALANCE) then return 'balance_after' end
  return nil
end

local function charge_fault(c)
  if type(c.id) ~= 'string' then return 'id' end
  if not is_int(c.cost, 1, MAX_BALANCE) then return 'cost' end
  if not is_int(c.balance, 0, MAX_BALANCE) then return 'balance' end
  if not is_int(c.ms, 0, MAX_INT) then return 'ms' end
  return nil
end

local function outcome_fault(o)
  if not is_int(o.cost, 0, MAX_BALANCE) then return 'cost' end
  if not is_int(o.billed_secs, 0, MAX_CAP_SECS) then return 'billed_secs' end
  if not is_int(o.settled_ms, 0, MAX_INT) then return 'settled_ms' end
  if o.note ~= nil and type(o.note) ~= 'string' then return 'note' end
  return nil
end

-- the map stored at key[field], checked by fault()
local function stored(key, field, blob, fault)
  local t = blob and unpack_map(blob)
  local why = (not blob and 'is missing') or (not t and 'is not a msgpack map')
  if not why then
    local bad = fault(t)
    why = bad and ('has a bad ' .. bad)
  end
  if why then fail('LEDGER_BROKEN', key .. '[' .. shown(field) .. '] ' .. why) end
  return t
end

local function account(key)
  local h = redis.call('HMGET', key, 'active', 'balance', 'currency')
  local active, balance, currency = h[1] or '0', h[2] or '0', h[3] or ''
  if active ~= '0' and active ~= '1' then fail('LEDGER_BROKEN', key .. ' active is not 0 or 1') end
  -- canonical digits only: HINCRBY refuses "007" or " 5", and a negative balance is damage
  if #balance > 14 or not (balance == '0' or string.match(balance, '^[1-9]%d*$'))
      or tonumber(balance) > MAX_BALANCE then
    fail('LEDGER_BROKEN', key .. ' balance is not an integer 0..' .. int_str(MAX_BALANCE))
  end
  if currency ~= '' and not string.match(currency, '^[A-Z][A-Z][A-Z]$') then
    fail('LEDGER_BROKEN', key .. ' currency is not an ISO 4217 code')
  end
  return {active = active == '1', balance = tonumber(balance), currency = currency}
end

-- an index and its hash move together (ZADD+HSET, ZREM+HDEL): any difference is damage
local function paired(zkey, hkey, id)
  if redis.call('ZCARD', zkey) ~= redis.call('HLEN', hkey) then
    fail('LEDGER_BROKEN', zkey .. ' and ' .. hkey .. ' hold different call-ids')
  end
  if id and (redis.call('ZSCORE', zkey, id) == false) ~= (redis.call('HEXISTS', hkey, id) == 0) then
    fail('LEDGER_BROKEN', zkey .. ' and ' .. hkey .. ' disagree on ' .. id)
  end
end

-- an expiry as this library writes it: whole ms (not inf, not fractional)
local function expiry(key, id, score)
  if #score > 16 or not string.match(score, '^%d+$') then
    fail('LEDGER_BROKEN', key .. '[' .. shown(id) .. '] expiry ' .. shown(score) .. ' is not whole ms')
  end
  return tonumber(score)
end

---------------------------------------------------------------- reservations
-- live reservations (expiry > now), in expiry order, with their checked maps
local function live_reservations(k, now)
  local flat = redis.call('ZRANGE', k.resv, '(' .. int_str(now), '+inf', 'BYSCORE', 'WITHSCORES')
  local out = {}
  for i = 1, #flat, 2 do
    local e = stored(k.calls, flat[i], redis.call('HGET', k.calls, flat[i]), resv_fault)
    e.call_id, e.expires_ms = flat[i], expiry(k.resv, flat[i], flat[i + 1])
    out[#out + 1] = e
  end
  return out
end

local function reserved_total(list)
  local sum = 0
  for _, e in ipairs(list) do sum = sum + e.amount end
  return sum
end

-- up to BATCH expired reservations, plus `own` (expired beyond the batch), checked
local function expired_batch(k, now, own)
  local ids = redis.call('ZRANGE', k.resv, '-inf', int_str(now), 'BYSCORE', 'LIMIT', 0, BATCH)
  local list = {}
  for _, id in ipairs(ids) do
    if id == own then own = nil end
    list[#list + 1] = {id = id, e = stored(k.calls, id, redis.call('HGET', k.calls, id), resv_fault)}
  end
  if own then list[#list + 1] = {id = own, e = stored(k.calls, own, redis.call('HGET', k.calls, own), resv_fault)} end
  return list
end

local function xadd(cdr, rec)
  local blob = type(rec) == 'string' and rec or cmsgpack.pack(rec)
  return redis.call('XADD', cdr, 'MAXLEN', '~', CDR_MAXLEN, '*', 'r', blob)
end

-- a CDR starts from what the reservation knew (ext, to, rate, setup_ms, the call's SIP Call-ID...).
-- The ledger's id is the reservation's, minted by the proxy; the SIP Call-ID is the caller's and
-- only describes the call (it may be reused), so the CDR keeps both.
local function base_record(id, entry)
  local rec = {}
  for key, v in pairs(entry) do rec[key] = v end
  rec.reserved, rec.amount, rec.available_before = rec.amount, nil, nil
  rec.reservation = id
  if rec.call_id == nil then rec.call_id = id end
  return rec
end

local function overlay(rec, extra)
  for key, v in pairs(extra) do rec[key] = v end
  return rec
end

-- write phase: an expired reservation frees its funds and leaves a zero-cost CDR
local function expire(k, item, now, balance)
  xadd(k.cdr, overlay(base_record(item.id, item.e), {disposition = 'reservation-expired', cost = 0,
                      billed_secs = 0, balance_after = balance, settled_ms = now}))
  redis.call('ZREM', k.resv, item.id)
  redis.call('HDEL', k.calls, item.id)
end

---------------------------------------------------------------- functions
local function activate(keys, args)
  local k = open(keys, {'prepaid'})
  nargs(args, 1)
  local currency = args[1]
  if not string.match(currency, '^[A-Z][A-Z][A-Z]$') then
    fail('BAD_ARGUMENT', 'currency must be an ISO 4217 code')
  end
  local s = account(k.prepaid)
  -- re-labelling money already held would silently change its value
  if s.currency ~= '' and s.currency ~= currency and s.balance ~= 0 then
    fail('CURRENCY_MISMATCH', 'account holds ' .. s.currency)
  end
  redis.call('HSET', k.prepaid, 'active', '1', 'currency', currency)
  redis.call('HSETNX', k.prepaid, 'balance', '0')
  return cmsgpack.pack({active = true, balance = s.balance, currency = currency})
end

-- deactivation stops new reservations; the balance and live calls stay
local function deactivate(keys, args)
  local k = open(keys, {'prepaid'})
  nargs(args, 0)
  local s = account(k.prepaid)
  redis.call('HSET', k.prepaid, 'active', '0')
  redis.call('HSETNX', k.prepaid, 'balance', '0')
  return cmsgpack.pack({active = false, balance = s.balance, currency = s.currency})
end

-- KEYS prepaid, topups; ARGV ref, amount. Credits once per reference.
local function topup(keys, args)
  local k = open(keys, {'prepaid', 'topups'})
  nargs(args, 2)
  local ref = args[1]
  if #ref == 0 or #ref > 256 then fail('BAD_ARGUMENT', 'reference must be 1..256 bytes') end
  local amount = arg_int(args[2], 'amount', 1, MAX_BALANCE)
  local balance = account(k.prepaid).balance
  local seen = redis.call('HGET', k.topups, ref)
  if seen then
    local t = stored(k.topups, ref, seen, topup_fault)
    -- same reference, other amount: a client bug, not a retry
    if t.amount ~= amount then fail('TOPUP_CONFLICT', 'reference used for another amount') end
    return cmsgpack.pack({amount = t.amount, at_ms = t.at_ms, balance_after = t.balance_after,
                          balance = balance, duplicate = true})
  end
  if balance + amount > MAX_BALANCE then fail('BALANCE_LIMIT', 'balance would exceed the limit') end
  local now = now_ms()
  local after = balance + amount
  -- the credit is recorded before the balance moves (a refused HSET changes nothing)
  redis.call('HSET', k.topups, ref, cmsgpack.pack({amount = amount, at_ms = now, balance_after = after}))
  redis.call('HINCRBY', k.prepaid, 'balance', int_str(amount))
  return cmsgpack.pack({amount = amount, at_ms = now, balance_after = after, balance = after, duplicate = false})
end

-- KEYS prepaid, resv, calls, cdr; ARGV call_id, ttl_ms, cap_secs, rate, meta
local function reserve(keys, args)
  local k = open(keys, {'prepaid', 'resv', 'calls', 'cdr'})
  nargs(args, 5)
  local call_id = arg_call_id(args[1])
  local ttl = arg_int(args[2], 'ttl_ms', 1, MAX_TTL_MS)
  local cap = arg_int(args[3], 'cap_secs', 1, MAX_CAP_SECS)
  local rate = arg_rate(args[4])
  local meta = arg_meta(args[5])
  if cap < rate.first then fail('BAD_ARGUMENT', 'cap_secs below the first increment') end
  local s = account(k.prepaid)
  paired(k.resv, k.calls, call_id)
  local now = now_ms()
  local live = live_reservations(k, now)
  local score = redis.call('ZSCORE', k.resv, call_id)
  local stale = score and expiry(k.resv, call_id, score) <= now
  local expired = expired_batch(k, now, stale and call_id or nil)
  for _, e in ipairs(live) do
    -- a retransmitted INVITE or re-INVITE gets the reservation it already has
    if e.call_id == call_id then
      return cmsgpack.pack({amount = e.amount, max_secs = e.max_secs, available_before = e.available_before,
                            balance = s.balance, expires_ms = e.expires_ms, duplicate = true,
                            currency = s.currency})
    end
  end
  if not s.active then fail('NOT_ACTIVE', 'Prepaid Account not activated') end
  local available = s.balance - reserved_total(live)
  local d = max_duration(rate, available, cap)
  if d == 0 then fail('INSUFFICIENT_FUNDS', 'available=' .. int_str(available)) end
  for _, item in ipairs(expired) do expire(k, item, now, s.balance) end
  local entry = overlay(meta, {amount = cost(rate, d), max_secs = d, rate = rate, setup_ms = now,
                               available_before = available})
  redis.call('HSET', k.calls, call_id, cmsgpack.pack(entry))
  redis.call('ZADD', k.resv, int_str(now + ttl), call_id)
  -- the currency comes back so the balance announcement needs no second round trip
  return cmsgpack.pack({amount = entry.amount, max_secs = d, available_before = available,
                        balance = s.balance, expires_ms = now + ttl, duplicate = false, currency = s.currency})
end

-- KEYS resv; ARGV call_id, ttl_ms -> new expiry ms, 0 if no live reservation
local function renew(keys, args)
  local k = open(keys, {'resv'})
  nargs(args, 2)
  local call_id = arg_call_id(args[1])
  local ttl = arg_int(args[2], 'ttl_ms', 1, MAX_TTL_MS)
  local score = redis.call('ZSCORE', k.resv, call_id)
  if not score then return 0 end
  local expires, now = expiry(k.resv, call_id, score), now_ms()
  if expires <= now then return 0 end   -- never revives: expired funds may already be promised elsewhere
  redis.call('ZADD', k.resv, 'XX', 'GT', int_str(now + ttl), call_id)   -- GT: never shortens
  return math.max(expires, now + ttl)
end

-- KEYS prepaid, resv, calls, settled, cdr, outcomes, ledger; ARGV call_id, answered_secs, record
local function settle(keys, args)
  local k = open(keys, {'prepaid', 'resv', 'calls', 'settled', 'cdr', 'outcomes', 'ledger'})
  nargs(args, 3)
  local call_id = arg_call_id(args[1])
  local secs = math.max(arg_int(args[2], 'answered_secs', -MAX_BALANCE, MAX_BALANCE), 0)
  local record = arg_map(args[3], 'record', MAX_RECORD)
  local balance = account(k.prepaid).balance
  paired(k.resv, k.calls, call_id)
  paired(k.settled, k.outcomes, call_id)
  local now = now_ms()
  local score = redis.call('ZSCORE', k.resv, call_id)
  local live = score and expiry(k.resv, call_id, score) > now
  local expired = expired_batch(k, now, (score and not live) and call_id or nil)
  local e = live and stored(k.calls, call_id, redis.call('HGET', k.calls, call_id), resv_fault)
  -- second BYE, retransmission: the first answer, nothing charged
  if redis.call('ZSCORE', k.settled, call_id) then
    local o = stored(k.outcomes, call_id, redis.call('HGET', k.outcomes, call_id), outcome_fault)
    o.balance, o.duplicate = balance, true
    return cmsgpack.pack(o)
  end
  -- expired or never reserved: nothing was promised, nothing is charged
  local out = {cost = 0, billed_secs = 0, balance = balance, settled_ms = now, note = 'no-reservation'}
  local rec = {reservation = call_id}
  if e then
    local billed = billed_seconds(e.rate, math.min(secs, e.max_secs))
    local c = math.min(cost(e.rate, billed), e.amount)
    if c > balance then
      fail('LEDGER_BROKEN', k.prepaid .. ' balance ' .. int_str(balance) .. ' below cost ' .. int_str(c))
    end
    out = {cost = c, billed_secs = billed, balance = balance - c, settled_ms = now}
    rec = base_record(call_id, e)
  end
  overlay(rec, record)
  if rec.disposition == nil then rec.disposition = secs > 0 and 'answered' or 'unanswered' end
  if rec.call_id == nil then rec.call_id = call_id end
  overlay(rec, {reservation = call_id, cost = out.cost, billed_secs = out.billed_secs, balance_after = out.balance,
                settled_ms = now, note = out.note})
  local old = redis.call('ZRANGE', k.settled, '-inf', '(' .. int_str(now - DAY_MS), 'BYSCORE', 'LIMIT', 0, BATCH)
  -- writes: everything they depend on was checked above; the charge is recorded before it is made
  if e and out.cost > 0 then
    redis.call('RPUSH', k.ledger, cmsgpack.pack({id = call_id, cost = out.cost, balance = out.balance, ms = now}))
  end
  for _, item in ipairs(expired) do expire(k, item, now, balance) end
  xadd(k.cdr, rec)
  if e then
    if out.cost > 0 then redis.call('HINCRBY', k.prepaid, 'balance', int_str(-out.cost)) end
    redis.call('ZREM', k.resv, call_id)
    redis.call('HDEL', k.calls, call_id)
  end
  redis.call('ZADD', k.settled, int_str(now), call_id)
  redis.call('HSET', k.outcomes, call_id, cmsgpack.pack(out))
  if #old > 0 then
    redis.call('ZREM', k.settled, unpack(old))
    redis.call('HDEL', k.outcomes, unpack(old))
  end
  out.duplicate = false
  return cmsgpack.pack(out)
end

-- KEYS cdr; ARGV record: a non-prepaid call's record, stored as given
local function record(keys, args)
  local k = open(keys, {'cdr'})
  nargs(args, 1)
  arg_map(args[1], 'record', MAX_RECORD)
  return xadd(k.cdr, args[1])
end

-- KEYS prepaid, resv, calls: read-only (FCALL_RO works on replicas)
local function status(keys, args)
  local k = open(keys, {'prepaid', 'resv', 'calls'})
  nargs(args, 0)
  local s = account(k.prepaid)
  paired(k.resv, k.calls)
  local list = {}
  for i, e in ipairs(live_reservations(k, now_ms())) do
    list[i] = {call_id = e.call_id, amount = e.amount, max_secs = e.max_secs, expires_ms = e.expires_ms,
               setup_ms = e.setup_ms, ext = e.ext, to = e.to}
  end
  s.reserved, s.reservations = reserved_total(list), list
  return cmsgpack.pack(s)
end

-- KEYS prepaid, topups, ledger, opening; ARGV none. For an account whose balance predates its
-- ledger (charges settled by an older release): what the topups and the ledger do not account for
-- becomes the opening, so that the audit reconciles from here on. Admin only (the proxy has no right
-- on opening), once per account, right after the upgrade that brought the ledger: it accepts the
-- balance as it finds it, so it is the operator's statement that the balance was right then.
local function ledger_open(keys, args)
  local k = open(keys, {'prepaid', 'topups', 'ledger', 'opening'})
  nargs(args, 0)
  local balance = account(k.prepaid).balance
  local seen = redis.call('HMGET', k.opening, 'charged', 'balance', 'at_ms')
  if seen[1] then
    return cmsgpack.pack({charged = tonumber(seen[1]), balance = tonumber(seen[2]), at_ms = tonumber(seen[3]),
                          duplicate = true})
  end
  local accounted = 0
  local flat = redis.call('HGETALL', k.topups)
  for i = 1, #flat, 2 do accounted = accounted + stored(k.topups, flat[i], flat[i + 1], topup_fault).amount end
  for i, blob in ipairs(redis.call('LRANGE', k.ledger, 0, -1)) do
    accounted = accounted - stored(k.ledger, tostring(i - 1), blob, charge_fault).cost
  end
  local now = now_ms()
  redis.call('HSET', k.opening, 'charged', int_str(accounted - balance), 'balance', int_str(balance),
             'at_ms', int_str(now))
  return cmsgpack.pack({charged = accounted - balance, balance = balance, at_ms = now, duplicate = false})
end

redis.register_function('prepaid_activate', activate)
redis.register_function('prepaid_deactivate', deactivate)
redis.register_function('prepaid_topup', topup)
redis.register_function('prepaid_reserve', reserve)
redis.register_function('prepaid_renew', renew)
redis.register_function('prepaid_settle', settle)
redis.register_function('prepaid_record', record)
redis.register_function('prepaid_ledger_open', ledger_open)
redis.register_function{function_name = 'prepaid_status', callback = status, flags = {'no-writes'}}
