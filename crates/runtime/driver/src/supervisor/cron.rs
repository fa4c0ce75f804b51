//! A cron set: runs on its schedule or when asked, one at a time unless overlap is allowed,
//! each run an instance stopped at its timeout.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use slipway_store::{EventLevel, NewEvent};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::slot::view;
use super::{CronRun, Ctx, KEEP_RUNS, lock, ms_since, short_id};
use crate::driver::{Exit, Instance};
use crate::health::Health;

/// A cron service: runs on its schedule, or when asked.
pub(super) async fn run_cron(
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
    retire: CancellationToken,
    mut run_now: mpsc::Receiver<oneshot::Sender<Result<String, String>>>,
    adopted: Vec<Instance>,
) {
    let Some(schedule) = ctx.service.cron.clone() else {
        return;
    };
    let active: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let mut runs = Vec::new();
    for instance in adopted {
        lock(&active).push(instance.id.clone());
        runs.push(tokio::spawn(cron_run(
            ctx.clone(),
            instance,
            "schedule",
            cancel.clone(),
            active.clone(),
        )));
    }
    let cron: Option<croner::Cron> = schedule.schedule.parse().ok();
    let tz = jiff::tz::TimeZone::get(&schedule.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    let mut counter = 0u32;
    loop {
        let next = cron.as_ref().and_then(|c| {
            c.find_next_occurrence(&jiff::Zoned::now().with_time_zone(tz.clone()), false)
                .ok()
        });
        lock(&ctx.status).next_run = next.as_ref().map(jiff::Zoned::timestamp);
        let wait = next.as_ref().map_or(Duration::from_secs(3600), |n| {
            (-ms_since(n.timestamp()))
                .try_into()
                .map(Duration::from_millis)
                .unwrap_or_default()
        });
        let trigger: (
            &'static str,
            Option<oneshot::Sender<Result<String, String>>>,
        ) = tokio::select! {
            _ = retire.cancelled() => break,
            _ = tokio::time::sleep(wait), if next.is_some() => ("schedule", None),
            asked = run_now.recv() => match asked {
                Some(reply) => ("manual", Some(reply)),
                None => break,
            },
        };
        let (why, reply) = trigger;
        runs.retain(|r: &JoinHandle<()>| !r.is_finished());
        let busy = !lock(&active).is_empty();
        if busy && schedule.concurrency == slipway_spec::model::CronConcurrency::Forbid {
            let message = format!(
                "{} run skipped: the previous run is still going (concurrency = \"forbid\")",
                ctx.service.name
            );
            ctx.event(
                NewEvent::info("cron.skipped", message.clone())
                    .level(EventLevel::Warning)
                    .subject(&ctx.service.name),
            )
            .await;
            if let Some(reply) = reply {
                let _ = reply.send(Err(message));
            }
            continue;
        }
        counter += 1;
        let id = format!(
            "{}-{}-{}-{}",
            ctx.service.name,
            ctx.release.id,
            counter,
            short_id()
        );
        match ctx.start(counter, id.clone()).await {
            Ok(instance) => {
                lock(&active).push(id.clone());
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(id));
                }
                runs.push(tokio::spawn(cron_run(
                    ctx.clone(),
                    instance,
                    why,
                    cancel.clone(),
                    active.clone(),
                )));
            }
            Err(reason) => {
                ctx.event(
                    NewEvent::info("cron.failed", format!("{id} did not start: {reason}"))
                        .level(EventLevel::Error)
                        .subject(&ctx.service.name),
                )
                .await;
                if let Some(reply) = reply {
                    let _ = reply.send(Err(reason));
                }
            }
        }
    }
    for r in runs {
        let _ = r.await;
    }
}

async fn cron_run(
    ctx: Arc<Ctx>,
    instance: Instance,
    trigger: &'static str,
    cancel: CancellationToken,
    active: Arc<Mutex<Vec<String>>>,
) {
    let started = instance.started_at;
    {
        let mut runs = lock(&ctx.history);
        runs.push(CronRun {
            id: instance.id.clone(),
            trigger: trigger.into(),
            started_at: started,
            finished_at: None,
            exit_code: None,
            outcome: "running".into(),
            duration_ms: None,
        });
        if runs.len() > KEEP_RUNS {
            runs.remove(0);
        }
    }
    lock(&ctx.status)
        .instances
        .push(view(&instance, false, Health::None));
    ctx.event(
        NewEvent::info(
            "cron.started",
            format!(
                "{} run {} started ({trigger})",
                ctx.service.name, instance.id
            ),
        )
        .subject(&ctx.service.name)
        .data(json!({ "run": instance.id, "trigger": trigger })),
    )
    .await;
    let timeout = ctx.service.cron.as_ref().and_then(|c| c.timeout);
    let deadline = timeout.map(|t| Instant::now() + t.std());
    let mut timed_out = false;
    let ended = ctx.driver.wait(&instance);
    tokio::pin!(ended);
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let exit = tokio::select! {
        _ = cancel.cancelled() => {
            if !ctx.stop_on_cancel.load(Ordering::SeqCst) {
                lock(&active).retain(|a| a != &instance.id);
                return;
            }
            ctx.stop_instance(&instance).await
        }
        exit = &mut ended => exit.unwrap_or(Exit::vanished()),
        _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
            timed_out = true;
            ctx.stop_instance(&instance).await
        }
    };
    let finished = Timestamp::now();
    let duration_ms = u64::try_from(finished.duration_since(started).as_millis()).unwrap_or(0);
    let outcome = if timed_out {
        "timed-out"
    } else if exit.success() {
        "succeeded"
    } else {
        "failed"
    };
    if let Some(run) = lock(&ctx.history).iter_mut().find(|r| r.id == instance.id) {
        run.finished_at = Some(finished);
        run.exit_code = exit.code;
        run.outcome = outcome.into();
        run.duration_ms = Some(duration_ms);
    }
    {
        let mut s = lock(&ctx.status);
        s.instances.retain(|i| i.id != instance.id);
        s.last_exit = Some(exit.describe());
    }
    ctx.event(
        NewEvent::info(
            "cron.finished",
            format!(
                "{} run {} {outcome} ({}) in {duration_ms}ms",
                ctx.service.name,
                instance.id,
                exit.describe()
            ),
        )
        .level(if outcome == "succeeded" {
            EventLevel::Info
        } else {
            EventLevel::Warning
        })
        .subject(&ctx.service.name)
        .data(json!({
            "run": instance.id, "exit_code": exit.code, "signal": exit.signal,
            "duration_ms": duration_ms, "outcome": outcome, "trigger": trigger,
        })),
    )
    .await;
    ctx.forget(&instance).await;
    lock(&active).retain(|a| a != &instance.id);
}
