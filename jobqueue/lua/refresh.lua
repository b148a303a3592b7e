-- Keep this consumer's claims alive: reset the idle time of the entries it still owns (JUSTID does not
-- count a delivery) and extend their jobs' TTL. Entries another consumer has taken over are left alone.
-- KEYS[1] queue stream, KEYS[2..] job:<id> in the order of the entry ids
-- ARGV[1] group  ARGV[2] this consumer  ARGV[3] TTL of a claimed job (s)  ARGV[4..] entry ids
-- Returns the entry ids this consumer no longer owns.
local lost = {}
for i = 4, #ARGV do
  local entry = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry, entry, 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, entry, 'JUSTID')
    redis.call('EXPIRE', KEYS[i - 2], ARGV[3])
  else
    table.insert(lost, entry)
  end
end
return lost
