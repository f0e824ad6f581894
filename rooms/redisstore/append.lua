-- Stores a batch of messages in one room, atomically.
-- KEYS[1] meta hash (epoch, last, from, base, master), KEYS[2] stream,
-- KEYS[3] the call's answer, KEYS[4..] idempotency keys.
-- ARGV: epoch to create the room with, history size, key TTL in ms,
-- channel, message count, idle TTL in ms (0: none), TTL of the call's
-- answer in ms (0: not kept, for a client that never retries), the epoch
-- the caller follows and the highest sequence number it knows stored in
-- it, then per message: time in ms, user, text, verified ("1"/"0"), index
-- in KEYS of its idempotency key (0: none), the digest of its content, its
-- action ("" for a message, "edit" or "delete"), the action's target id,
-- "1" for a moderator's delete, the author's client key and the hex digest
-- of the author's secret.
-- Returns the room's epoch, the epoch it went on from when Redis may have
-- lost messages ("" for none) and the last sequence number it went on
-- from, then per message {seq, 0, 0} when stored, {seq, time, same} of
-- the message stored first under its key, or {0, 0, 0} for an action
-- whose target the stream does not hold as a message, or holds deleted.
--
-- An action rewrites its target in the stream, and a delete the edits of
-- the target too, erasing their text: a stream entry cannot be changed,
-- and XDEL leaves its bytes in the stream's memory until its whole node
-- goes, so the stream is written anew, every entry in its place, once for
-- all the actions of the call. Erased
-- entries stay, without text, so that their sequence numbers are never
-- taken for messages Redis lost.
-- A call made again, by a client that retries when an answer was lost,
-- gets the first call's answer and stores nothing.
local keep = tonumber(ARGV[7]) > 0
local answered = keep and redis.call('GET', KEYS[3])
if answered then
  return cjson.decode(answered)
end
-- The replication id of this master. It changes when a replica is
-- promoted by a failover, which may lose the last writes, but also on a
-- restart and when a first replica attaches, which lose nothing: only a
-- master that was promoted holds a second id, that of the master it
-- replicated, until it restarts.
local info = redis.call('INFO', 'replication')
local master = string.match(info, 'master_replid:(%x+)')
local promoted = string.match(info, 'master_replid2:(%x+)') ~= string.rep('0', 40)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local held = redis.call('HGET', KEYS[1], 'master')
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
local moved = false
if epoch and ((promoted and held and held ~= master) or (epoch == ARGV[8] and last < tonumber(ARGV[9]))) then
  -- Redis may have lost messages: the room was written by the master
  -- this one replaced, or it holds fewer than the caller saw stored.
  -- Going on would give their ids again, also to a caller that never saw
  -- them, so the room goes on in a new epoch, from the messages Redis
  -- holds.
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'from', epoch, 'base', last)
  epoch = ARGV[1]
  moved = true
end
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
if held ~= master then
  redis.call('HSET', KEYS[1], 'master', master)
end
local from = redis.call('HGET', KEYS[1], 'from') or ''
local base = tonumber(redis.call('HGET', KEYS[1], 'base') or '0')
local out = {epoch, from, base}
local pub = {}

-- fields returns a stream entry's field list as a table.
local function fields(list)
  local f = {}
  for j = 1, #list, 2 do
    f[list[j]] = list[j + 1]
  end
  return f
end

-- The actions of the call, applied to the stream in one rewrite at its
-- end: the new text and time of each message edited, by sequence number,
-- the messages deleted, and the ids of the targets of deletes, whose
-- edits are erased too.
local edited, deleted, erased = {}, {}, {}
local rewrite = false

-- target returns the sequence number of an action's target when the
-- stream holds it, in this epoch, as a message not deleted.
local function target(id)
  local e, s = string.match(id, '^(.+)%-(%d+)$')
  if e ~= epoch or deleted[s] then
    return nil
  end
  local found = redis.call('XRANGE', KEYS[2], s .. '-0', s .. '-0')
  if #found ~= 1 then
    return nil
  end
  local f = fields(found[1][2])
  if (f.a or '') ~= '' or f.d == '1' then
    return nil
  end
  return s
end

-- set sets field name of the field list to value, adding it if missing.
local function set(list, name, value)
  for j = 1, #list, 2 do
    if list[j] == name then
      list[j + 1] = value
      return
    end
  end
  list[#list + 1] = name
  list[#list + 1] = value
end

-- apply notes the action on the entry tseq, for the rewrite.
local function apply(tseq, a, g, x, t)
  if a == 'edit' then
    edited[tseq] = {x, t}
  else
    deleted[tseq], edited[tseq], erased[g] = true, nil, true
  end
  rewrite = true
end

for i = 0, tonumber(ARGV[5]) - 1 do
  local b = 10 + i * 11
  local t, u, x, v, k, sum = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4]), ARGV[b + 5]
  local a, g, mod, ck, sd = ARGV[b + 6], ARGV[b + 7], ARGV[b + 8], ARGV[b + 9], ARGV[b + 10]
  local prior
  if a ~= '' then
    local tseq = target(g)
    if tseq then
      apply(tseq, a, g, x, t)
    else
      prior = {0, 0, 0}
    end
  end
  if prior then
  elseif k > 0 then
    local rec = redis.call('GET', KEYS[k])
    if rec then
      local r = cjson.decode(rec)
      if r.e == epoch then
        local same = 0
        if r.h == sum then same = 1 end
        prior = {r.s, r.t, same}
      end
    end
  end
  if prior then
    out[#out + 1] = prior
  else
    local seq = redis.call('HINCRBY', KEYS[1], 'last', 1)
    local list = {'t', t, 'u', u, 'x', x, 'v', v}
    if a ~= '' then
      for _, kv in ipairs({{'a', a}, {'g', g}, {'m', mod}}) do
        list[#list + 1] = kv[1]
        list[#list + 1] = kv[2]
      end
    end
    if ck ~= '' or sd ~= '' then
      for _, kv in ipairs({{'k', ck}, {'h', sd}}) do
        list[#list + 1] = kv[1]
        list[#list + 1] = kv[2]
      end
    end
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], seq .. '-0', unpack(list))
    if k > 0 then
      redis.call('SET', KEYS[k], cjson.encode({e = epoch, s = seq, t = tonumber(t), h = sum}), 'PX', ARGV[3])
    end
    out[#out + 1] = {seq, 0, 0}
    -- The authorship stays in the stream: it is never published.
    local p = {s = seq, t = t, u = u, x = x, v = v}
    if a ~= '' then
      p.a, p.g, p.m = a, g, mod
    end
    pub[#pub + 1] = p
  end
end
if rewrite then
  -- The stream written anew with the call's actions applied (see the
  -- top).
  local all = redis.call('XRANGE', KEYS[2], '-', '+')
  redis.call('DEL', KEYS[2])
  for _, entry in ipairs(all) do
    local id, list = entry[1], entry[2]
    local s = string.match(id, '^(%d+)%-0$')
    local f = fields(list)
    if deleted[s] or (f.a == 'edit' and erased[f.g]) then
      set(list, 'x', '')
      set(list, 'd', '1')
    elseif edited[s] then
      set(list, 'x', edited[s][1])
      set(list, 'e', edited[s][2])
    end
    redis.call('XADD', KEYS[2], id, unpack(list))
  end
end
if tonumber(ARGV[6]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
if #pub > 0 then
  redis.call('PUBLISH', ARGV[4], cjson.encode({e = epoch, f = from, b = base, m = pub}))
elseif moved then
  -- Called with no message to move the room on: its nodes learn of the
  -- new epoch now.
  redis.call('PUBLISH', ARGV[4], cjson.encode({e = epoch, f = from, b = base}))
end
if keep then
  redis.call('SET', KEYS[3], cjson.encode(out), 'PX', ARGV[7])
end
return out
