//! The scheduler's shared state in Redis, under the queue prefix `P`:
//! - `P:sched:leader` = `{replica}|{token}`, with a TTL: the leadership lease;
//!   `P:sched:fence` hands out the strictly increasing fencing tokens;
//! - `P:sched:tick:{name}:{tick_ms}` = `pending|{token}` then
//!   `done|{token}|{job}`: the claim of one tick (only the current leader may
//!   claim; a pending claim of an older token is taken over);
//! - `P:sched:state:{name}`: last handled tick, last fire, last job, by whom;
//! - `P:sched:paused`: paused schedules (honoured by every replica);
//! - `P:sched:log`: the last 1,000 fires — every time a replica enqueued a
//!   tick's work, whether or not its claim still held — as
//!   `{name}|{tick_ms}|{token}|{replica}|{job}`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redis::{AsyncCommands, Script};

use super::ScheduleName;
use crate::queue::{Queue, QueueError};

/// How long tick claims are kept (longer than any catch-up window).
const CLAIM_TTL_MS: u64 = 8 * 24 * 3600 * 1000;

const ACQUIRE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local id, tok = string.match(cur, '^(.*)|(%d+)$')
  if id == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(tok)
  end
  return -1
end
local tok = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. tok, 'PX', ARGV[2])
return tok
";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

const CLAIM: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'not_leader' end
local cur = redis.call('GET', KEYS[2])
if not cur then
  redis.call('SET', KEYS[2], 'pending|' .. ARGV[2], 'PX', ARGV[3])
  return 'claimed'
end
local state, tok = string.match(cur, '^(%a+)|(%d+)')
if state == 'pending' and tonumber(tok) <= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], 'pending|' .. ARGV[2], 'PX', ARGV[3])
  return 'claimed'
end
return 'done'
";

const COMPLETE: &str = r"
redis.call('RPUSH', KEYS[3], ARGV[5] .. '|' .. ARGV[3] .. '|' .. ARGV[1] .. '|' .. ARGV[6] .. '|' .. ARGV[2])
redis.call('LTRIM', KEYS[3], -1000, -1)
if redis.call('GET', KEYS[1]) ~= 'pending|' .. ARGV[1] then return 0 end
redis.call('SET', KEYS[1], 'done|' .. ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[7])
redis.call('HSET', KEYS[2], 'last_tick', ARGV[3], 'last_fired_at', ARGV[4], 'last_job_id', ARGV[2], 'last_by', ARGV[6])
return 1
";

/// A held lease: who and with which fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Replica id.
    pub replica: String,
    /// Fencing token (strictly increasing across leaders).
    pub token: u64,
}

impl Lease {
    fn value(&self) -> String {
        format!("{}|{}", self.replica, self.token)
    }
}

/// Outcome of claiming a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This leader owns the tick: enqueue its work, then complete it.
    Claimed,
    /// Already fired.
    Done,
    /// The lease is no longer ours.
    NotLeader,
}

/// One fire from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    /// Schedule.
    pub name: String,
    /// Tick, ms since the epoch.
    pub tick_ms: i64,
    /// Fencing token of the leader that fired it.
    pub token: u64,
    /// Replica that fired it.
    pub replica: String,
    /// Job or batch enqueued.
    pub job_id: String,
}

/// What is stored about a schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleState {
    /// Last tick handled (fired or skipped).
    pub last_tick: Option<DateTime<Utc>>,
    /// When it last fired (by the scheduler or by hand).
    pub last_fired_at: Option<DateTime<Utc>>,
    /// The job or batch it last enqueued.
    pub last_job_id: Option<String>,
    /// Who fired it last (a replica id, or `api`).
    pub last_by: Option<String>,
    /// Paused.
    pub paused: bool,
}

/// Handle on the scheduler state; cheap to clone.
#[derive(Debug, Clone)]
pub struct ScheduleStore {
    queue: Queue,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: Option<&String>) -> Option<DateTime<Utc>> {
    v.and_then(|v| v.parse().ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis)
}

impl ScheduleStore {
    /// The store under the queue's prefix.
    pub fn new(queue: Queue) -> Self {
        Self { queue }
    }

    fn key(&self, suffix: &str) -> String {
        self.queue.key(&format!("sched:{suffix}"))
    }

    /// Takes (or renews our own) lease; `None` while another replica holds it.
    pub async fn acquire(&self, replica: &str, ttl_ms: u64) -> Result<Option<Lease>, QueueError> {
        let token: i64 = Script::new(ACQUIRE)
            .key(self.key("leader"))
            .key(self.key("fence"))
            .arg(replica)
            .arg(ttl_ms)
            .invoke_async(&mut self.queue.redis())
            .await?;
        Ok((token >= 0).then(|| Lease {
            replica: replica.to_string(),
            token: token as u64,
        }))
    }

    /// Extends our lease; false if it expired or someone else holds it.
    pub async fn renew(&self, lease: &Lease, ttl_ms: u64) -> Result<bool, QueueError> {
        let ok: i64 = Script::new(RENEW)
            .key(self.key("leader"))
            .arg(lease.value())
            .arg(ttl_ms)
            .invoke_async(&mut self.queue.redis())
            .await?;
        Ok(ok == 1)
    }

    /// Gives the lease up (clean shutdown: a follower takes over at once).
    pub async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        let _: i64 = Script::new(RELEASE)
            .key(self.key("leader"))
            .arg(lease.value())
            .invoke_async(&mut self.queue.redis())
            .await?;
        Ok(())
    }

    /// The current leader's replica id.
    pub async fn leader(&self) -> Result<Option<String>, QueueError> {
        let v: Option<String> = self.queue.redis().get(self.key("leader")).await?;
        Ok(v.and_then(|v| v.rsplit_once('|').map(|(id, _)| id.to_string())))
    }

    /// Claims `tick` of `name` under `lease` (fenced: only the current leader).
    pub async fn claim(
        &self,
        lease: &Lease,
        name: ScheduleName,
        tick: DateTime<Utc>,
    ) -> Result<Claim, QueueError> {
        let r: String = Script::new(CLAIM)
            .key(self.key("leader"))
            .key(self.key(&format!("tick:{}:{}", name.as_str(), ms(tick))))
            .arg(lease.value())
            .arg(lease.token)
            .arg(CLAIM_TTL_MS)
            .invoke_async(&mut self.queue.redis())
            .await?;
        Ok(match r.as_str() {
            "claimed" => Claim::Claimed,
            "not_leader" => Claim::NotLeader,
            _ => Claim::Done,
        })
    }

    /// Appends the fire to the log and, if the claim is still ours, marks the
    /// tick fired with `job_id` and records it as the schedule's last fire.
    pub async fn complete(
        &self,
        lease: &Lease,
        name: ScheduleName,
        tick: DateTime<Utc>,
        job_id: &str,
    ) -> Result<bool, QueueError> {
        let ok: i64 = Script::new(COMPLETE)
            .key(self.key(&format!("tick:{}:{}", name.as_str(), ms(tick))))
            .key(self.key(&format!("state:{}", name.as_str())))
            .key(self.key("log"))
            .arg(lease.token)
            .arg(job_id)
            .arg(ms(tick))
            .arg(ms(Utc::now()))
            .arg(name.as_str())
            .arg(&lease.replica)
            .arg(CLAIM_TTL_MS)
            .invoke_async(&mut self.queue.redis())
            .await?;
        Ok(ok == 1)
    }

    /// Records `tick` as handled without firing it (paused, or too late).
    pub async fn skip(&self, name: ScheduleName, tick: DateTime<Utc>) -> Result<(), QueueError> {
        let _: () = self
            .queue
            .redis()
            .hset(
                self.key(&format!("state:{}", name.as_str())),
                "last_tick",
                ms(tick),
            )
            .await?;
        Ok(())
    }

    /// Records a manual fire (it does not count as a tick).
    pub async fn record_manual(&self, name: ScheduleName, job_id: &str) -> Result<(), QueueError> {
        let _: () = self
            .queue
            .redis()
            .hset_multiple(
                self.key(&format!("state:{}", name.as_str())),
                &[
                    ("last_fired_at", ms(Utc::now()).to_string()),
                    ("last_job_id", job_id.to_string()),
                    ("last_by", "api".to_string()),
                ],
            )
            .await?;
        Ok(())
    }

    /// Pauses or resumes a schedule.
    pub async fn set_paused(&self, name: ScheduleName, paused: bool) -> Result<(), QueueError> {
        let mut conn = self.queue.redis();
        let key = self.key("paused");
        let _: i64 = if paused {
            conn.sadd(key, name.as_str()).await?
        } else {
            conn.srem(key, name.as_str()).await?
        };
        Ok(())
    }

    /// What is stored about `name`.
    pub async fn state(&self, name: ScheduleName) -> Result<ScheduleState, QueueError> {
        let mut conn = self.queue.redis();
        let (h, paused): (HashMap<String, String>, bool) = redis::pipe()
            .hgetall(self.key(&format!("state:{}", name.as_str())))
            .sismember(self.key("paused"), name.as_str())
            .query_async(&mut conn)
            .await?;
        Ok(ScheduleState {
            last_tick: from_ms(h.get("last_tick")),
            last_fired_at: from_ms(h.get("last_fired_at")),
            last_job_id: h.get("last_job_id").cloned(),
            last_by: h.get("last_by").cloned(),
            paused,
        })
    }

    /// The fire log, oldest first.
    pub async fn fires(&self) -> Result<Vec<Fire>, QueueError> {
        let lines: Vec<String> = self.queue.redis().lrange(self.key("log"), 0, -1).await?;
        Ok(lines
            .iter()
            .filter_map(|l| {
                let mut p = l.splitn(5, '|');
                Some(Fire {
                    name: p.next()?.to_string(),
                    tick_ms: p.next()?.parse().ok()?,
                    token: p.next()?.parse().ok()?,
                    replica: p.next()?.to_string(),
                    job_id: p.next()?.to_string(),
                })
            })
            .collect())
    }
}
