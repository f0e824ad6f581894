-- Puts a ban in force, unless its room holds the most bans allowed.
-- KEYS[1] the ids of every ban, KEYS[2] the ids of the room's bans (both
-- sorted sets scored by expiry in Unix ms, +inf for never), KEYS[3] the
-- ban, KEYS[4] the version hash (e: its epoch, v: its count).
-- ARGV: now in ms, the ban's expiry in ms or +inf, its id, its JSON, the
-- most bans a room may hold, the channel, an epoch for a new version hash.
-- Returns false when the room is full, else the version the ban made.
local now = tonumber(ARGV[1])
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return false
end
if ARGV[2] == '+inf' then
  redis.call('SET', KEYS[3], ARGV[4])
else
  redis.call('SET', KEYS[3], ARGV[4], 'PXAT', ARGV[2])
end
-- The sets go when their last ban expires: nothing of a ban outlives it.
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], ARGV[2], ARGV[3])
  local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')[2]
  if last == 'inf' or last == '+inf' then
    redis.call('PERSIST', KEYS[i])
  else
    redis.call('PEXPIREAT', KEYS[i], last)
  end
end
if redis.call('HSETNX', KEYS[4], 'e', ARGV[7]) == 1 then
  redis.call('HSET', KEYS[4], 'v', 0)
end
local v = redis.call('HINCRBY', KEYS[4], 'v', 1)
local e = redis.call('HGET', KEYS[4], 'e')
redis.call('PUBLISH', ARGV[6], cjson.encode({e = e, v = v, put = cjson.decode(ARGV[4])}))
return v
