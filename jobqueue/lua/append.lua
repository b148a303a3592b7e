-- Append the live text of running jobs to the streams that their followers read, each stream kept readable for a
-- while after its last update: one call carries every job that streamed since the agent's last write.
-- KEYS[i] reply:<id> of a job   ARGV[1] TTL of the live reply stream (s)   ARGV[i + 1] the text for KEYS[i]
for i, key in ipairs(KEYS) do
  redis.call('XADD', key, '*', 'text', ARGV[i + 1])
  redis.call('EXPIRE', key, ARGV[1])
end
return #KEYS
