-- Token bucket of one user: take one token, or say how long until one is available.
-- KEYS[1] rate:<user>
-- ARGV[1] burst (bucket size)   ARGV[2] tokens added per second
-- Returns {1, 0} when the call may go ahead, {0, milliseconds until the next token} otherwise.
-- The clock is Redis's own (TIME), so every router instance shares one clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed, wait_ms = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.6f', now))
-- A full bucket carries no information: let the key go once it would have refilled.
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, wait_ms}
