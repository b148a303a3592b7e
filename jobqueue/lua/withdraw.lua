-- Take a job out of the queue, unsettled, so that it can be parked in S3 as the node stops (the node's Redis
-- sleeps with it, and nothing would start the node again for a job only it holds).
-- KEYS[1] queue stream  KEYS[2] job:<id>  KEYS[3] owner:<id>  KEYS[4] attempts:<id>  KEYS[5] result:<id>
-- ARGV[1] group  ARGV[2] stream entry id
-- Returns the job JSON, or false when there is nothing to park (settled already, or expired: its entry stays and
-- is answered `expired` at the next start).
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
  return false
end
local raw = redis.call('GET', KEYS[2])
if not raw then
  return false
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
-- The owner key goes too: adoption's enqueue refuses a job whose owner key exists (that is its exactly-once).
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return raw
