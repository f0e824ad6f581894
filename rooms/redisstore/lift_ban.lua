-- Lifts a ban in force.
-- KEYS as put_ban.lua's. ARGV: now in ms, the ban's id, the channel, an
-- epoch for a new version hash.
-- Returns 0 when the room holds no such ban in force, else the version
-- the lift made.
local score = redis.call('ZSCORE', KEYS[2], ARGV[2])
if not score or (score ~= 'inf' and tonumber(score) <= tonumber(ARGV[1])) then
  return 0
end
redis.call('DEL', KEYS[3])
for i = 1, 2 do
  redis.call('ZREM', KEYS[i], ARGV[2])
end
if redis.call('HSETNX', KEYS[4], 'e', ARGV[4]) == 1 then
  redis.call('HSET', KEYS[4], 'v', 0)
end
local v = redis.call('HINCRBY', KEYS[4], 'v', 1)
local e = redis.call('HGET', KEYS[4], 'e')
redis.call('PUBLISH', ARGV[3], cjson.encode({e = e, v = v, lift = ARGV[2]}))
return v
