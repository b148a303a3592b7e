-- Start one attempt at a claimed job.
-- KEYS[1] queue stream  KEYS[2] job:<id>  KEYS[3] attempts:<id>  KEYS[4] result:<id>  KEYS[5] reply:<id>
-- ARGV[1] group  ARGV[2] stream entry id  ARGV[3] maximum attempts  ARGV[4] TTL of a claimed job (s)
-- ARGV[5] TTL of the live reply stream (s)
-- Returns {'finished'} | {'expired'} | {'run'|'exhausted', job JSON, attempt number, last error}.
if redis.call('EXISTS', KEYS[4]) == 1 then
  -- A final reply exists already (an agent died after writing it): settle the entry, run nothing.
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
  return {'finished'}
end
local raw = redis.call('GET', KEYS[2])
if not raw then
  return {'expired'}
end
local n = redis.call('HINCRBY', KEYS[3], 'attempts', 1)
redis.call('EXPIRE', KEYS[3], ARGV[4])
-- Once claimed, the job outlives its queue TTL so that a crashed attempt can be reclaimed.
redis.call('EXPIRE', KEYS[2], ARGV[4])
local last = redis.call('HGET', KEYS[3], 'last_error') or ''
if n > tonumber(ARGV[3]) then
  return {'exhausted', raw, n, last}
end
-- Tell whoever follows the live text that an attempt (re)starts, so a retry's text is not appended blindly.
redis.call('XADD', KEYS[5], '*', 'attempt', n)
redis.call('EXPIRE', KEYS[5], ARGV[5])
return {'run', raw, n, last}
