-- Settle a job whose final reply is in S3: record its status, acknowledge and delete the queue entry,
-- drop the job and its attempt counter, and dead-letter it when it failed. Then, when asked, claim the next
-- entries for the slot the job frees (the same XREADGROUP as a claim, without BLOCK, which Redis 7.0 refuses in a
-- script): a busy agent settles a job and claims the next in one round trip. It touches only the queue stream, a
-- declared key; beginning the claimed job would touch keys named after its id, which a script is not given in
-- advance ("all names of keys that a script accesses must be explicitly provided", redis.io/commands/eval), so
-- the agent begins it with its own call.
-- KEYS[1] queue stream  KEYS[2] job:<id>  KEYS[3] attempts:<id>  KEYS[4] result:<id>  KEYS[5] reply:<id>
-- KEYS[6] dead letters
-- ARGV[1] group  ARGV[2] stream entry id  ARGV[3] result JSON  ARGV[4] result TTL (s)
-- ARGV[5] dead-letter JSON or ''  ARGV[6] dead-letter list length  ARGV[7] final status
-- ARGV[8] TTL of the live reply stream (s)  ARGV[9] the last of the live text, or '' (written before the status)
-- ARGV[10] this consumer  ARGV[11] how many new entries to claim (0: none)
-- Returns the entries claimed, as XREADGROUP gives one stream's: {{entry id, {field, value, ...}}, ...}.
redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2], KEYS[3])
if ARGV[9] ~= '' then
  redis.call('XADD', KEYS[5], '*', 'text', ARGV[9])
end
redis.call('XADD', KEYS[5], '*', 'status', ARGV[7])
redis.call('EXPIRE', KEYS[5], ARGV[8])
if ARGV[5] ~= '' then
  redis.call('LPUSH', KEYS[6], ARGV[5])
  redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[6]) - 1)
end
if tonumber(ARGV[11]) > 0 then
  local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[10], 'COUNT', ARGV[11], 'STREAMS', KEYS[1], '>')
  if read then
    return read[1][2]
  end
end
return {}
