-- Enqueue one job atomically: guard the key, store the job with its TTL and its owner, append it to the queue.
-- KEYS[1] job:<uuid4>   KEYS[2] queue stream   KEYS[3] owner:<uuid4>
-- ARGV[1] job JSON      ARGV[2] TTL seconds    ARGV[3] maximum queue length   ARGV[4] owner TTL seconds
local h = '[0-9a-f]'
local pattern = '^job:' .. string.rep(h, 8) .. '%-' .. string.rep(h, 4) .. '%-4' .. string.rep(h, 3)
  .. '%-[89ab]' .. string.rep(h, 3) .. '%-' .. string.rep(h, 12) .. '$'
if not string.match(KEYS[1], pattern) then
  return redis.error_reply('BADKEY key must be job:<uuid4 in lower case>, got ' .. KEYS[1])
end
local ok, job = pcall(cjson.decode, ARGV[1])
if not ok or type(job) ~= 'table' then
  return redis.error_reply('BADJOB payload is not a JSON object')
end
local id = string.sub(KEYS[1], 5)
if job['id'] ~= id then
  return redis.error_reply('BADJOB payload id does not match the key')
end
if KEYS[3] ~= 'owner:' .. id then
  return redis.error_reply('BADKEY owner key must be owner:' .. id)
end
if type(job['owner']) ~= 'string' or job['owner'] == '' then
  return redis.error_reply('BADJOB payload has no owner')
end
if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[3]) then
  return redis.error_reply('QUEUEFULL the queue holds ' .. ARGV[3] .. ' jobs already')
end
if redis.call('EXISTS', KEYS[3]) == 1 or not redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'NX') then
  return redis.error_reply('DUPLICATE job ' .. id .. ' already exists')
end
redis.call('SET', KEYS[3], job['owner'], 'EX', ARGV[4])
return redis.call('XADD', KEYS[2], '*', 'id', id)
