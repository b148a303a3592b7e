-- Give a claimed job back to the queue without settling it.
-- The entry stays pending but its idle time is set so that the reclaim sweep (min idle = claim timeout)
-- picks it up after ARGV[4] ms: a retry with back-off, or at once for a hand-back at shutdown.
-- KEYS[1] queue stream  KEYS[2] attempts:<id>
-- ARGV[1] group  ARGV[2] this consumer  ARGV[3] entry id  ARGV[4] idle to set (ms)
-- ARGV[5] error text or ''  ARGV[6] '1' when the attempt does not count (shutdown hand-back)
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], 'last_error', ARGV[5])
end
if ARGV[6] == '1' and tonumber(redis.call('HGET', KEYS[2], 'attempts') or '0') > 0 then
  redis.call('HINCRBY', KEYS[2], 'attempts', -1)
end
return 1
