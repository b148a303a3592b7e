-- Enqueue one job atomically: guard the key, store the job with its TTL, append it to the queue stream.
-- KEYS[1] job:<uuid4>   KEYS[2] queue stream
-- ARGV[1] job JSON      ARGV[2] TTL seconds      ARGV[3] maximum queue length
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
if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[3]) then
  return redis.error_reply('QUEUEFULL the queue holds ' .. ARGV[3] .. ' jobs already')
end
if not redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'NX') then
  return redis.error_reply('DUPLICATE job ' .. id .. ' already exists')
end
return redis.call('XADD', KEYS[2], '*', 'id', id)
