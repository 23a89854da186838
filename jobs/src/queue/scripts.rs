//! Atomic Lua scripts of the queue. Each state change of a job is one script,
//! so a crash between two Redis commands can never leave a job half-moved.
//!
//! Times come from the Redis server clock (`TIME`), so leases and due times
//! agree across machines whose clocks drift. Every loop is bounded, so a
//! backlog of any size costs each call the same.

use std::sync::LazyLock;

use redis::Script;

const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Moves due scheduled jobs to ready and expired leases back to ready (or to
-- dead when out of attempts); drops dead letters older than the retention.
local function reap(ready, scheduled, inflight, dead, jp, now, retention_s)
  local moved = 0
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', scheduled, id)
    local k = jp .. id
    local rs = redis.call('HGET', k, 'rscore')
    if rs then
      redis.call('HSET', k, 'status', 'queued')
      redis.call('HDEL', k, 'run_at')
      redis.call('ZADD', ready, rs, id)
      moved = moved + 1
    end
  end
  local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(expired) do
    redis.call('ZREM', inflight, id)
    local k = jp .. id
    local st = redis.call('HMGET', k, 'attempts', 'max_attempts', 'worker', 'rscore')
    if st[4] then
      redis.call('HSET', k, 'last_error', 'lease expired: worker ' .. (st[3] or '?') .. ' stopped renewing it', 'token', '')
      if tonumber(st[1]) >= tonumber(st[2]) then
        redis.call('HSET', k, 'status', 'dead', 'finished_at', now)
        redis.call('ZADD', dead, now, id)
        redis.call('EXPIRE', k, retention_s)
      else
        redis.call('HSET', k, 'status', 'queued')
        redis.call('ZADD', ready, st[4], id)
        moved = moved + 1
      end
    end
  end
  redis.call('ZREMRANGEBYSCORE', dead, '-inf', now - retention_s * 1000)
  return moved
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// KEYS: ready, scheduled, seq. ARGV: job prefix, queue, wake channel,
/// request id, traceparent, then groups of (id, kind, payload, max_attempts, band,
/// delay_ms, batch_id).
/// Returns how many jobs were new (an existing id is left untouched).
pub(crate) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local jp = ARGV[1]
local created = 0
local ready = 0
for i = 6, #ARGV, 7 do
  local id = ARGV[i]
  local k = jp .. id
  if redis.call('EXISTS', k) == 0 then
    local seq = redis.call('INCR', KEYS[3])
    local band = tonumber(ARGV[i + 4])
    local delay = tonumber(ARGV[i + 5])
    local rscore = band * 1000000000000 + seq
    redis.call('HSET', k, 'id', id, 'queue', ARGV[2], 'kind', ARGV[i + 1], 'payload', ARGV[i + 2],
      'max_attempts', ARGV[i + 3], 'band', band, 'rscore', rscore, 'attempts', 0,
      'created_at', now, 'batch_id', ARGV[i + 6], 'request_id', ARGV[4], 'traceparent', ARGV[5])
    if delay > 0 then
      redis.call('HSET', k, 'status', 'scheduled', 'run_at', now + delay)
      redis.call('ZADD', KEYS[2], now + delay, id)
    else
      redis.call('HSET', k, 'status', 'queued')
      redis.call('ZADD', KEYS[1], rscore, id)
      ready = ready + 1
    end
    created = created + 1
  end
end
if ready > 0 then redis.call('PUBLISH', ARGV[3], ready) end
return created
"#,
    )
});

/// KEYS: ready, scheduled, inflight, dead, token seq. ARGV: job prefix, n,
/// lease_ms, worker, retention_s. Returns up to n leased jobs as
/// {id, token, attempt, max_attempts, kind, payload, ms since enqueue, request id,
/// traceparent}.
pub(crate) static FETCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local jp = ARGV[1]
reap(KEYS[1], KEYS[2], KEYS[3], KEYS[4], jp, now, tonumber(ARGV[5]))
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[2]))
local out = {}
for i = 1, #popped, 2 do
  local id = popped[i]
  local k = jp .. id
  local st = redis.call('HMGET', k, 'kind', 'payload', 'max_attempts', 'created_at', 'request_id',
    'traceparent')
  if st[2] then
    local token = tostring(redis.call('INCR', KEYS[5]))
    local attempt = redis.call('HINCRBY', k, 'attempts', 1)
    redis.call('HSET', k, 'status', 'running', 'worker', ARGV[4], 'started_at', now, 'token', token)
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), id)
    out[#out + 1] = {id, token, tostring(attempt), st[3], st[1], st[2],
      tostring(now - tonumber(st[4] or now)), st[5] or '', st[6] or ''}
  end
end
return out
"#,
    )
});

/// KEYS: ready, scheduled, inflight, dead, wake channel. ARGV: job prefix, retention_s.
/// Promotes due jobs and recovers expired leases; returns how many became ready.
pub(crate) static REAP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local moved = reap(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], now_ms(), tonumber(ARGV[2]))
if moved > 0 then redis.call('PUBLISH', KEYS[5], moved) end
return moved
"#,
    )
});

/// KEYS: inflight. ARGV: job prefix, lease_ms, then pairs (id, token).
/// Renews the leases still held; returns the ids whose lease went to another
/// attempt (a job that just finished, with an empty token, is not "lost").
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local lost = {}
for i = 3, #ARGV, 2 do
  local t = redis.call('HGET', ARGV[1] .. ARGV[i], 'token')
  if t == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[i])
  elseif t and t ~= '' then
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"#,
    )
});

/// KEYS: inflight, stats. ARGV: job prefix, id, token, retention_s, result.
/// Returns 1, or 0 when the lease was lost (another attempt owns the job).
pub(crate) static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local k = ARGV[1] .. ARGV[2]
if redis.call('HGET', k, 'token') ~= ARGV[3] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HSET', k, 'status', 'succeeded', 'finished_at', now_ms(), 'token', '', 'result', ARGV[5])
redis.call('EXPIRE', k, tonumber(ARGV[4]))
redis.call('HINCRBY', KEYS[2], 'succeeded', 1)
return 1
"#,
    )
});

/// KEYS: inflight, scheduled, dead, stats. ARGV: job prefix, id, token, error,
/// backoff_ms, retention_s, retryable (1/0). Returns retrying | dead | stale.
pub(crate) static FAIL: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local k = ARGV[1] .. ARGV[2]
if redis.call('HGET', k, 'token') ~= ARGV[3] then return 'stale' end
local now = now_ms()
redis.call('ZREM', KEYS[1], ARGV[2])
local st = redis.call('HMGET', k, 'attempts', 'max_attempts')
redis.call('HSET', k, 'last_error', ARGV[4], 'token', '')
if ARGV[7] == '1' and tonumber(st[1]) < tonumber(st[2]) then
  local due = now + tonumber(ARGV[5])
  redis.call('HSET', k, 'status', 'retrying', 'run_at', due)
  redis.call('ZADD', KEYS[2], due, ARGV[2])
  redis.call('HINCRBY', KEYS[4], 'retried', 1)
  return 'retrying'
end
redis.call('HSET', k, 'status', 'dead', 'finished_at', now)
redis.call('ZADD', KEYS[3], now, ARGV[2])
redis.call('EXPIRE', k, tonumber(ARGV[6]))
return 'dead'
"#,
    )
});

/// KEYS: inflight, ready, wake channel. ARGV: job prefix, id, token.
/// Gives a leased job back untouched (its attempt is not counted): used when a
/// worker stops before it started the job.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local k = ARGV[1] .. ARGV[2]
if redis.call('HGET', k, 'token') ~= ARGV[3] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HINCRBY', k, 'attempts', -1)
redis.call('HSET', k, 'status', 'queued', 'token', '')
redis.call('ZADD', KEYS[2], redis.call('HGET', k, 'rscore'), ARGV[2])
redis.call('PUBLISH', KEYS[3], 1)
return 1
"#,
    )
});

/// ARGV: key prefix, id, retention_s. Cancels a job that has not started.
/// Returns `ok`, the job's current status, or `missing`.
pub(crate) static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local k = ARGV[1] .. ':job:' .. ARGV[2]
local st = redis.call('HMGET', k, 'status', 'queue')
if not st[1] then return 'missing' end
if st[1] == 'queued' or st[1] == 'scheduled' or st[1] == 'retrying' then
  local q = ARGV[1] .. ':q:' .. st[2]
  redis.call('ZREM', q .. ':ready', ARGV[2])
  redis.call('ZREM', q .. ':scheduled', ARGV[2])
  redis.call('HSET', k, 'status', 'cancelled', 'finished_at', now_ms())
  redis.call('EXPIRE', k, tonumber(ARGV[3]))
  return 'ok'
end
return st[1]
"#,
    )
});

/// ARGV: key prefix, id. Requeues a dead job with fresh attempts.
/// Returns `ok`, the job's current status, or `missing`.
pub(crate) static RETRY_DEAD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local k = ARGV[1] .. ':job:' .. ARGV[2]
local st = redis.call('HMGET', k, 'status', 'queue', 'rscore')
if not st[1] then return 'missing' end
if st[1] ~= 'dead' then return st[1] end
local q = ARGV[1] .. ':q:' .. st[2]
redis.call('ZREM', q .. ':dead', ARGV[2])
redis.call('PERSIST', k)
redis.call('HSET', k, 'status', 'queued', 'attempts', 0)
redis.call('HDEL', k, 'finished_at')
redis.call('ZADD', q .. ':ready', st[3], ARGV[2])
redis.call('PUBLISH', ARGV[1] .. ':wake:' .. st[2], 1)
return 'ok'
"#,
    )
});
