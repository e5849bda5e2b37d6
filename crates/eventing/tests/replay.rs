//! An operator's replay of a dead letter (`shop_eventing::admin`, what `shopctl dlq replay`
//! does): the record goes back through the outbox with replay headers naming one consumer,
//! which applies it once despite its dead-letter row (and deletes the row with the effect), or
//! dead-letters it again and counts the replay; other consumers of the topic are not touched,
//! and a record replayed up to the limit is held back unless forced.

mod common;

use std::time::Duration;

use common::*;
use shop_eventing::RelayConfig;
use shop_eventing::admin::{self, DeadLetterFilter, Replayable};
use sqlx::PgPool;

/// The dead-letter rows of `consumer` for `id`, as their replay counts.
async fn replays(pool: &PgPool, consumer: &str, id: &str) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT replays FROM eventing_dead_letter WHERE consumer = $1 AND event_id = $2",
    )
    .bind(consumer)
    .bind(id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn wait_replays(pool: &PgPool, consumer: &str, id: &str, want: Option<i32>) {
    shop_testkit::eventually(
        &format!("{consumer}'s dead letter of {id} at {want:?} replays"),
        TIMEOUT,
        || async { (replays(pool, consumer, id).await == want).then_some(()) },
    )
    .await;
}

/// Prepares the replay of `id` for `consumer` and appends it to the outbox; the decision.
async fn replay(
    env: &Env,
    consumer: &str,
    id: &str,
    max_replays: i32,
    force: bool,
) -> Result<(i32, Replayable), String> {
    let filter = DeadLetterFilter {
        consumer: Some(consumer.to_owned()),
        event_ids: vec![id.to_owned()],
        ..DeadLetterFilter::default()
    };
    let mut tx = env.db.pool.begin().await.unwrap();
    let decisions =
        admin::prepare_replay(&mut tx, &filter, max_replays, force, "test-operator", false)
            .await
            .unwrap();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let decision = decisions.into_iter().next().unwrap();
    let record = match decision.outcome {
        Ok(record) => record,
        Err(held_back) => {
            // The decision is recorded all the same, as the admin API commits it.
            tx.commit().await.unwrap();
            return Err(held_back);
        }
    };
    let done = admin::republish(
        &mut tx,
        std::slice::from_ref(&record),
        "test-operator",
        false,
    )
    .await
    .unwrap();
    assert_eq!(done.appended, 1);
    tx.commit().await.unwrap();
    Ok((decision.replay, record))
}

#[tokio::test]
async fn a_replayed_dead_letter_is_applied_once_for_its_consumer_only() {
    let env = setup().await;
    let topic = env.topic("replay-dlq", 1).await;
    let event = sequenced(&topic, "order-1", 0);
    let id = event.id.to_string();
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    env.commit(vec![event]).await;

    // Two consumers of the topic; the bug is in both, so both dead-letter the record.
    let (a, b) = (Recorder::default(), Recorder::default());
    a.poison(&id);
    b.poison(&id);
    let (stop_a, consumer_a) = env.spawn_consumer(consumer_config("replay-a", &topic), a.clone());
    let (stop_b, consumer_b) = env.spawn_consumer(consumer_config("replay-b", &topic), b.clone());
    wait_replays(&env.db.pool, "replay-a", &id, Some(0)).await;
    wait_replays(&env.db.pool, "replay-b", &id, Some(0)).await;

    // Replayed for A before the fix: dead-lettered again, and the row counts it.
    assert_eq!(replay(&env, "replay-a", &id, 1, false).await.unwrap().0, 1);
    wait_replays(&env.db.pool, "replay-a", &id, Some(1)).await;
    assert_eq!(a.calls(&id), 2);
    // The limit reached: held back, unless forced.
    let held = replay(&env, "replay-a", &id, 1, false).await.unwrap_err();
    assert!(held.contains("replayed 1 times"), "{held}");

    // Fixed, forced: applied once, and the dead letter goes with the effect.
    a.heal(&id);
    let (number, record) = replay(&env, "replay-a", &id, 1, true).await.unwrap();
    assert_eq!(number, 2);
    env.applied(&id).await;
    wait_replays(&env.db.pool, "replay-a", &id, None).await;
    assert_eq!(a.calls(&id), 3);

    // The same replay published once more (a replay run twice): a duplicate for A.
    let mut tx = env.db.pool.begin().await.unwrap();
    admin::republish(&mut tx, &[record], "test-operator", false)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let sentinel = sequenced(&topic, "order-2", 0);
    let sentinel_id = sentinel.id.to_string();
    env.commit(vec![sentinel]).await;
    env.applied(&sentinel_id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.calls(&id), 3, "the second copy was a duplicate");
    let inbox: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM eventing_inbox WHERE consumer = 'replay-a' AND event_id = $1",
    )
    .bind(&id)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(inbox, 1);

    // B never applied it and its dead letter is untouched: the replays were not for it.
    assert_eq!(b.calls(&id), 1, "B saw the replays but skipped them");
    assert_eq!(replays(&env.db.pool, "replay-b", &id).await, Some(0));
    let effects = env.effects().await;
    assert_eq!(
        effects.iter().filter(|(e, _)| *e == id).count(),
        1,
        "applied once in all: {effects:?}"
    );

    // Every decision is in the audit.
    let audited = count(
        &env.db.pool,
        "SELECT count(*) FROM eventing_admin_audit WHERE action = 'dlq.replay' AND actor = 'test-operator'",
    )
    .await;
    assert_eq!(audited, 3, "two replays and one held back");
    for stop in [stop_a, stop_b, stop_relay] {
        stop.cancel();
    }
    consumer_a.await.unwrap();
    consumer_b.await.unwrap();
    relay.await.unwrap().unwrap();
}
