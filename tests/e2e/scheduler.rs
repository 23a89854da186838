//! The scheduler: several real `lucid-scheduler` processes against one Redis,
//! a 1-second schedule, leader kill, pause/resume and manual triggers.

use std::{collections::HashSet, process::Stdio, time::Duration};

use lucid_jobs::{
    queue::SCALING_QUEUE,
    schedule::store::{Fire, ScheduleStore},
};
use mongodb::bson::doc;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{
    PoolBuilder, TestApp, eventually, free_port, metric_value, scrape_metrics, spawn_app_with,
    test_settings,
};

/// Lease TTL of the test replicas, seconds.
const TTL: i64 = 3;
const NAME: &str = "scaling_evaluation";

/// An app whose scaling evaluation fires every second, other schedules off
/// (no in-process workers: the evaluations stay queued and countable).
async fn app() -> TestApp {
    let mut s = test_settings();
    s.scheduler.lease_ttl_secs = TTL as u64;
    s.scheduler.scaling_evaluation.cron = Some("* * * * * *".into());
    for spec in [
        &mut s.scheduler.poot_sweep,
        &mut s.scheduler.earnings_payout,
        &mut s.scheduler.retention,
    ] {
        spec.enabled = Some(false);
    }
    let app = spawn_app_with(s, 0).await;
    app.api_call(
        Method::POST,
        "/api/v1/nodes/pools/",
        Some(&PoolBuilder::new().policy(80.0, 30.0, 1, 5).build()),
    )
    .await
    .expect(201, "an auto-scaled pool");
    app
}

struct Replica {
    child: tokio::process::Child,
    pid: u32,
}

impl Replica {
    fn start(app: &TestApp) -> Self {
        Self::start_with(app, "* * * * * *", &[])
    }

    /// A replica whose scaling evaluation runs on `cron`, with extra variables.
    fn start_with(app: &TestApp, cron: &str, extra: &[(&str, &str)]) -> Self {
        let mut env = app.worker_env("unused");
        env.retain(|(k, _)| k != "LUCID_WORKER_NAME");
        env.extend([
            (
                "LUCID_SCHEDULER__LEASE_TTL_SECS".to_string(),
                TTL.to_string(),
            ),
            (
                "LUCID_SCHEDULER__SCALING_EVALUATION__CRON".into(),
                cron.to_string(),
            ),
            (
                "LUCID_SCHEDULER__POOT_SWEEP__ENABLED".into(),
                "false".into(),
            ),
            (
                "LUCID_SCHEDULER__EARNINGS_PAYOUT__ENABLED".into(),
                "false".into(),
            ),
            ("LUCID_SCHEDULER__RETENTION__ENABLED".into(), "false".into()),
            ("LUCID_SCHEDULER__METRICS_PORT".into(), "0".into()),
        ]);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lucid-scheduler-e2e"))
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn scheduler");
        let pid = child.id().expect("pid");
        Self { child, pid }
    }

    /// Whether `replica` (`host-PID-xxxx`) is this process.
    fn is(&self, replica: &str) -> bool {
        replica.rsplit('-').nth(1) == Some(self.pid.to_string().as_str())
    }

    async fn kill9(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    async fn terminate(&mut self) {
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .expect("kill -TERM");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("wait");
    }
}

async fn fires(app: &TestApp) -> Vec<Fire> {
    ScheduleStore::new(app.queue.clone())
        .fires()
        .await
        .expect("fire log")
        .into_iter()
        .filter(|f| f.name == NAME)
        .collect()
}

async fn wait_fires(app: &TestApp, n: usize, timeout: Duration) -> Vec<Fire> {
    eventually(timeout, &format!("{n} fires"), || async {
        let f = fires(app).await;
        (f.len() >= n).then_some(f)
    })
    .await
}

/// Asserts each tick fired once and returns the ticks in order.
fn assert_each_tick_once(fires: &[Fire]) -> Vec<i64> {
    let mut ticks: Vec<i64> = fires.iter().map(|f| f.tick_ms).collect();
    let distinct: HashSet<i64> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick fired twice: {fires:?}");
    ticks.sort_unstable();
    ticks
}

async fn schedule(app: &TestApp) -> Value {
    let v = app.get_json("/api/v1/schedules", 200).await;
    v["items"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == NAME).cloned())
        .expect("scaling_evaluation listed")
}

async fn leader(app: &TestApp) -> Option<String> {
    app.get_json("/api/v1/schedules", 200).await["leader"]
        .as_str()
        .map(String::from)
}

#[tokio::test]
async fn three_replicas_with_a_1_second_schedule_enqueue_each_tick_exactly_once() {
    let app = app().await;
    let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&app)).collect();
    let first = wait_fires(&app, 1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    // SIGTERM: a replica finishes the fire in progress, so the log and the
    // batches agree when they are counted.
    for r in &mut replicas {
        r.terminate().await;
    }
    let all = fires(&app).await;
    let ticks = assert_each_tick_once(&all);
    assert!(ticks.len() >= 10, "10 s at 1/s: {} fires", ticks.len());
    assert_eq!(ticks[0], first[0].tick_ms);
    assert_eq!(
        ticks.last().unwrap() - ticks[0],
        (ticks.len() as i64 - 1) * 1000,
        "every second between the first and the last tick fired: {ticks:?}"
    );
    // Each fire is one batch with one evaluation job (one auto-scaled pool).
    let batches = app
        .count("batches", doc! { "kind": "scaling_evaluation" })
        .await;
    assert_eq!(batches, ticks.len() as u64);
    let counts = app.queue.counts(SCALING_QUEUE).await.expect("counts");
    assert_eq!(counts.queued, ticks.len() as u64, "{counts:?}");
    let v = schedule(&app).await;
    assert_eq!(
        v["last_tick"]
            .as_str()
            .map(|t| chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis()),
        ticks.last().copied(),
        "{v}"
    );
}

#[tokio::test]
async fn killing_the_leader_with_sigkill_hands_over_within_the_lease_ttl_without_duplicates() {
    let app = app().await;
    let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&app)).collect();
    let before = wait_fires(&app, 3, Duration::from_secs(20)).await;
    let old = before.last().unwrap().replica.clone();
    assert_eq!(leader(&app).await.as_deref(), Some(old.as_str()));
    let victim = replicas
        .iter_mut()
        .find(|r| r.is(&old))
        .expect("the leader is one of ours");
    victim.kill9().await;
    let killed_at = chrono::Utc::now().timestamp_millis();
    let after = eventually(
        Duration::from_secs(20),
        "a fire by a new leader",
        || async {
            let f = fires(&app).await;
            f.iter().any(|x| x.replica != old).then_some(f)
        },
    )
    .await;
    let ticks = assert_each_tick_once(&after);
    let last_old = after
        .iter()
        .filter(|f| f.replica == old)
        .map(|f| f.tick_ms)
        .max()
        .unwrap();
    let first_new = after.iter().find(|f| f.replica != old).unwrap();
    let ttl_ms = TTL * 1000;
    assert!(
        first_new.tick_ms - killed_at <= ttl_ms + 1500,
        "took over {} ms after the kill (TTL {ttl_ms} ms)",
        first_new.tick_ms - killed_at
    );
    assert!(
        first_new.tick_ms - last_old <= ttl_ms + 2000,
        "gap {} ms between the old leader's last tick and the new one's first",
        first_new.tick_ms - last_old
    );
    assert!(
        first_new.token > before.last().unwrap().token,
        "fencing tokens increase"
    );
    assert!(ticks.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn pause_resume_and_manual_trigger_work_across_replicas() {
    let app = app().await;
    let mut replicas: Vec<Replica> = (0..2).map(|_| Replica::start(&app)).collect();
    wait_fires(&app, 1, Duration::from_secs(20)).await;
    let v = schedule(&app).await;
    assert_eq!(
        (
            v["enabled"].as_bool(),
            v["paused"].as_bool(),
            v["cron"].as_str()
        ),
        (Some(true), Some(false), Some("* * * * * *")),
        "{v}"
    );

    let r = app
        .api_call(
            Method::POST,
            &format!("/api/v1/schedules/{NAME}/pause"),
            None,
        )
        .await;
    assert_eq!(r.expect(200, "pause")["paused"], true);
    tokio::time::sleep(Duration::from_millis(1200)).await; // a tick claimed before the pause may finish
    let paused_at = fires(&app).await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        fires(&app).await.len(),
        paused_at,
        "the leader honours the pause"
    );

    // Hand over (SIGTERM releases the lease at once): the new leader honours it too.
    let old = leader(&app).await.expect("a leader");
    replicas
        .iter_mut()
        .find(|r| r.is(&old))
        .expect("ours")
        .terminate()
        .await;
    let new = eventually(Duration::from_secs(10), "a new leader", || async {
        leader(&app).await.filter(|l| *l != old)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        fires(&app).await.len(),
        paused_at,
        "the new leader honours the pause"
    );
    let skipped_to = schedule(&app).await["last_tick"].as_str().map(String::from);
    assert!(skipped_to.is_some(), "paused ticks are recorded as handled");

    let r = app
        .api_call(
            Method::POST,
            &format!("/api/v1/schedules/{NAME}/resume"),
            None,
        )
        .await;
    assert_eq!(r.expect(200, "resume")["paused"], false);
    let resumed = wait_fires(&app, paused_at + 1, Duration::from_secs(10)).await;
    assert_eq!(resumed.last().unwrap().replica, new);
    assert_each_tick_once(&resumed);

    let r = app
        .api_call(
            Method::POST,
            &format!("/api/v1/schedules/{NAME}/trigger"),
            None,
        )
        .await;
    let job_id = r.expect(202, "trigger")["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.count("batches", doc! { "_id": &job_id }).await,
        1,
        "the trigger submitted a batch"
    );
    let v = schedule(&app).await;
    assert_eq!(
        (v["last_job_id"].as_str(), v["last_fired_by"].as_str()),
        (Some(job_id.as_str()), Some("api")),
        "{v}"
    );

    app.api_call(Method::POST, "/api/v1/schedules/nope/pause", None)
        .await
        .expect_error(404, "LUCID_ERR_4040");
    app.api_call(Method::POST, "/api/v1/schedules/nope/trigger", None)
        .await
        .expect_error(404, "LUCID_ERR_4040");
}

#[tokio::test]
async fn a_scheduler_exports_its_fires_and_the_queue_depths_on_metrics() {
    let app = app().await;
    let port = free_port();
    let mut replica = Replica::start_with(
        &app,
        "* * * * * *",
        &[("LUCID_SCHEDULER__METRICS_PORT", &port.to_string())],
    );
    let before = wait_fires(&app, 3, Duration::from_secs(20)).await.len();
    let text = scrape_metrics(port).await;
    let after = fires(&app).await.len();
    let counted = metric_value(
        &text,
        r#"lucid_schedule_fires_total{schedule="scaling_evaluation"}"#,
    )
    .unwrap_or_else(|| panic!("no fire counter in:\n{text}"));
    // A fire is logged, then counted: one may be between the two.
    assert!(
        (before - 1..=after).contains(&(counted as usize)) && counted.fract() == 0.0,
        "{counted} counted, {before}..{after} logged"
    );
    // No worker runs: the evaluations the fires enqueued wait in the queue.
    let queued = metric_value(
        &text,
        r#"lucid_queue_jobs{queue="scaling-evaluation",state="queued"}"#,
    )
    .unwrap_or_else(|| panic!("no queue depth in:\n{text}"));
    assert!(queued >= 1.0, "{queued} queued evaluations");
    replica.terminate().await;
}

#[tokio::test]
async fn every_schedule_is_listed_with_its_next_fire() {
    let app = spawn_app_with(test_settings(), 0).await;
    let v = app.get_json("/api/v1/schedules", 200).await;
    let items = v["items"].as_array().expect("items");
    let names: Vec<&str> = items.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "scaling_evaluation",
            "poot_sweep",
            "earnings_payout",
            "retention"
        ]
    );
    let payouts = &items[2];
    assert_eq!(payouts["cron"], "0 5 0 * * *");
    let next =
        chrono::DateTime::parse_from_rfc3339(payouts["next_fire"].as_str().unwrap()).unwrap();
    assert_eq!(next.format("%H:%M:%S").to_string(), "00:05:00");
    assert_eq!(v["leader"], Value::Null, "no scheduler runs");
}

#[tokio::test]
async fn manual_triggers_run_the_sweep_the_earnings_accrual_and_the_retention_clean_up() {
    let app = crate::helpers::spawn_app().await;
    let wait = Duration::from_secs(30);
    let mut active = Vec::new();
    for status in ["active", "active", "inactive"] {
        let r = app
            .api_call(
                Method::POST,
                "/api/v1/nodes/",
                Some(&crate::helpers::NodeBuilder::new().status(status).build()),
            )
            .await;
        let id = r.expect(201, "node")["node_id"]
            .as_str()
            .unwrap()
            .to_string();
        if status == "active" {
            active.push(id);
        }
    }

    // PoOT sweep: one batch with one item per active node.
    let r = app
        .api_call(Method::POST, "/api/v1/schedules/poot_sweep/trigger", None)
        .await;
    let batch_id = r.expect(202, "sweep")["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let batch = app.wait_for_batch(&batch_id, wait).await;
    assert_eq!(batch["total"], 2, "{batch}");
    assert_eq!(batch["pending"], 0, "{batch}");
    for node in &active {
        assert_eq!(
            app.count("poot_validations", doc! { "node_id": node })
                .await,
            1,
            "{node} validated by the sweep"
        );
    }

    // Earnings: the epoch that ended (yesterday, UTC), one job per epoch.
    let r = app
        .api_call(
            Method::POST,
            "/api/v1/schedules/earnings_payout/trigger",
            None,
        )
        .await;
    let job_id = r.expect(202, "earnings")["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive();
    assert_eq!(job_id, format!("earnings-{yesterday}"));
    assert_eq!(app.wait_for_job(&job_id, wait).await["status"], "succeeded");

    // Retention: finished batches past LUCID_JOB_RETENTION_SECS go, with their summaries.
    let old = mongodb::bson::DateTime::from_chrono(chrono::Utc::now() - chrono::Duration::days(8));
    let now = mongodb::bson::DateTime::now();
    let batches = app.db.collection::<mongodb::bson::Document>("batches");
    let jobs = app.db.collection::<mongodb::bson::Document>("jobs");
    batches
        .insert_many([
            doc! { "_id": "batch_old", "status": "completed", "finished_at": old },
            doc! { "_id": "batch_recent", "status": "completed", "finished_at": now },
            doc! { "_id": "batch_running", "status": "running", "created_at": old },
        ])
        .await
        .expect("batches");
    jobs.insert_many([
        doc! { "_id": "batch_old-c00000", "batch_id": "batch_old" },
        doc! { "_id": "batch_recent-c00000", "batch_id": "batch_recent" },
    ])
    .await
    .expect("summaries");
    app.db
        .collection::<mongodb::bson::Document>("scaling_evaluations")
        .insert_many([
            doc! { "_id": "seval_old", "evaluated_at": old },
            doc! { "_id": "seval_new", "evaluated_at": now },
        ])
        .await
        .expect("evaluations");
    let r = app
        .api_call(Method::POST, "/api/v1/schedules/retention/trigger", None)
        .await;
    let job_id = r.expect(202, "retention")["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.wait_for_job(&job_id, wait).await["status"], "succeeded");
    for (id, kept) in [
        ("batch_old", false),
        ("batch_recent", true),
        ("batch_running", true),
    ] {
        assert_eq!(
            app.count("batches", doc! { "_id": id }).await,
            u64::from(kept),
            "{id}"
        );
    }
    assert_eq!(app.count("jobs", doc! { "batch_id": "batch_old" }).await, 0);
    assert_eq!(
        app.count("jobs", doc! { "batch_id": "batch_recent" }).await,
        1
    );
    assert_eq!(
        app.count("scaling_evaluations", doc! { "_id": "seval_old" })
            .await,
        0
    );
    assert_eq!(
        app.count("scaling_evaluations", doc! { "_id": "seval_new" })
            .await,
        1
    );
}

/// A daily schedule whose tick passed 3 s ago, last fired a day before: the
/// scheduler was down at tick time.
async fn missed_daily_tick(app: &TestApp) -> (String, chrono::DateTime<chrono::Utc>) {
    use chrono::Timelike;
    let now = chrono::Utc::now();
    let tick = (now - chrono::Duration::seconds(3))
        .with_nanosecond(0)
        .expect("whole second");
    let cron = format!("{} {} {} * * *", tick.second(), tick.minute(), tick.hour());
    ScheduleStore::new(app.queue.clone())
        .skip(
            lucid_jobs::schedule::ScheduleName::ScalingEvaluation,
            tick - chrono::Duration::days(1),
        )
        .await
        .expect("yesterday's tick handled");
    (cron, tick)
}

#[tokio::test]
async fn a_missed_tick_fires_once_on_return_within_the_catch_up_window() {
    let app = app().await;
    let (cron, tick) = missed_daily_tick(&app).await;
    let _replica = Replica::start_with(&app, &cron, &[("LUCID_SCHEDULER__CATCH_UP_SECS", "60")]);
    let fired = wait_fires(&app, 1, Duration::from_secs(20)).await;
    assert_eq!(fired[0].tick_ms, tick.timestamp_millis());
    // Nothing else is due until tomorrow: still one fire a moment later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fires(&app).await.len(), 1);
}

#[tokio::test]
async fn a_missed_tick_older_than_the_catch_up_window_is_skipped() {
    let app = app().await;
    let (cron, tick) = missed_daily_tick(&app).await;
    let _replica = Replica::start_with(&app, &cron, &[("LUCID_SCHEDULER__CATCH_UP_SECS", "1")]);
    let handled = eventually(
        Duration::from_secs(20),
        "the tick to be handled",
        || async {
            let v = schedule(&app).await;
            let t = v["last_tick"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())?;
            (t.timestamp_millis() == tick.timestamp_millis()).then_some(v)
        },
    )
    .await;
    assert!(
        fires(&app).await.is_empty(),
        "skipped, not fired: {handled}"
    );
    assert_eq!(app.count("batches", doc! {}).await, 0);
}
