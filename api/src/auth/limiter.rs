//! A GCRA rate limiter in one Redis Lua script, shared by every API replica.
//! Each key allows `limit` requests per minute with bursts up to `limit`.

use redis::Script;

/// KEYS: bucket key. ARGV: now_ms, period_ms (60000 / limit), burst_ms (60000);
/// all integers (Lua numbers print 14 digits: ms timestamps stay exact).
/// Returns {allowed 1/0, remaining, reset_ms, retry_after_ms}.
const GCRA: &str = r"
local now = tonumber(ARGV[1])
local t = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + t
local allow_at = new_tat - burst
if now < allow_at then
  local remaining = math.floor((burst - (tat - now)) / t)
  if remaining < 0 then remaining = 0 end
  return {0, remaining, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, math.floor((burst - (new_tat - now)) / t), new_tat - now, 0}
";

/// The outcome for one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The bucket's limit per minute.
    pub limit: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds to wait before retrying (when refused).
    pub retry_after_secs: u64,
}

/// Takes one request from the bucket `key` (limit per minute).
pub async fn take(
    conn: &mut redis::aio::ConnectionManager,
    key: &str,
    limit: u32,
) -> Result<Verdict, redis::RedisError> {
    let now = chrono::Utc::now().timestamp_millis();
    let period = (60_000 / i64::from(limit.max(1))).max(1);
    let (allowed, remaining, reset_ms, retry_ms): (i64, i64, i64, i64) = Script::new(GCRA)
        .key(key)
        .arg(now)
        .arg(period)
        .arg(60_000)
        .invoke_async(conn)
        .await?;
    Ok(Verdict {
        allowed: allowed == 1,
        limit,
        remaining: remaining.clamp(0, i64::from(limit)) as u32,
        reset_secs: (reset_ms.max(0) as u64).div_ceil(1000),
        retry_after_secs: if allowed == 1 {
            0
        } else {
            (retry_ms.max(1) as u64).div_ceil(1000)
        },
    })
}
