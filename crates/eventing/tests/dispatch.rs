//! The typed `Dispatcher`: each registered event type decoded and handed to its `On<E>`, other
//! types acknowledged without effect, bad records dead-lettered, against real PostgreSQL and a
//! real Kafka-protocol broker.

mod common;

use common::*;
use shop_eventing::{HandlerError, InboundEvent, NewEvent, RelayConfig};

/// Writes the decoded fields of the two event types it registers into `effects`.
#[derive(Debug)]
struct Typed2;

impl shop_eventing::On<shop_proto::payment::v1::PaymentCaptured> for Typed2 {
    async fn on(
        &self,
        tx: &mut sqlx::PgConnection,
        event: shop_proto::payment::v1::PaymentCaptured,
        meta: &InboundEvent,
    ) -> Result<(), HandlerError> {
        let amount = event.amount.map_or(0, |m| m.amount_minor);
        sqlx::query("INSERT INTO effects (event_id, key, payload) VALUES ($1, $2, $3)")
            .bind(&meta.id)
            .bind(format!("captured {} {amount}", event.order_id))
            .bind(&meta.payload)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

impl shop_eventing::On<shop_proto::payment::v1::PaymentDeclined> for Typed2 {
    async fn on(
        &self,
        tx: &mut sqlx::PgConnection,
        event: shop_proto::payment::v1::PaymentDeclined,
        meta: &InboundEvent,
    ) -> Result<(), HandlerError> {
        if event.customer_id.is_empty() {
            return Err(HandlerError::permanent(anyhow::anyhow!("no customer")));
        }
        sqlx::query("INSERT INTO effects (event_id, key) VALUES ($1, $2)")
            .bind(&meta.id)
            .bind(format!("declined {} {:?}", event.order_id, event.reason()))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_dispatcher_decodes_each_registered_type_skips_others_and_dead_letters_bad_ones() {
    use shop_proto::common::v1::Money;
    use shop_proto::payment::v1 as payment;

    let env = setup().await;
    let topic = env.topic("consumer-dispatch", 1).await;
    let config = consumer_config("dispatch", &topic);
    env.kafka.create_topic(&config.dead_letter_topic, 1).await;
    let dlq = config.dead_letter_topic.clone();
    let captured = NewEvent::new(
        &topic,
        "order-1",
        &payment::PaymentCaptured {
            order_id: "order-1".into(),
            customer_id: "ann".into(),
            amount: Some(Money {
                amount_minor: 1250,
                currency: "EUR".into(),
            }),
        },
    );
    // Registered, but violates the handler's contract: permanent.
    let anonymous = NewEvent::new(
        &topic,
        "order-2",
        &payment::PaymentDeclined {
            order_id: "order-2".into(),
            ..Default::default()
        },
    );
    // Registered, but its payload does not decode: permanent.
    let malformed = NewEvent::raw(
        &topic,
        "order-3",
        "shop.payment.v1.PaymentCaptured",
        vec![0xff, 0xff],
    );
    // Not registered: acknowledged without effect.
    let refunded = NewEvent::new(
        &topic,
        "order-4",
        &payment::PaymentRefunded {
            order_id: "order-4".into(),
            ..Default::default()
        },
    );
    let declined = NewEvent::new(
        &topic,
        "order-5",
        &payment::PaymentDeclined {
            order_id: "order-5".into(),
            customer_id: "bob".into(),
            reason: payment::DeclineReason::InsufficientFunds.into(),
        },
    );
    let (captured_id, declined_id) = (captured.id.to_string(), declined.id.to_string());
    let (anonymous_id, malformed_id, refunded_id) = (
        anonymous.id.to_string(),
        malformed.id.to_string(),
        refunded.id.to_string(),
    );
    env.commit(vec![captured, anonymous, malformed, refunded, declined])
        .await;

    let handler = shop_eventing::Dispatcher::new(Typed2)
        .on::<payment::PaymentCaptured>()
        .on::<payment::PaymentDeclined>();
    assert_eq!(
        handler.event_types().collect::<Vec<_>>(),
        [
            "shop.payment.v1.PaymentCaptured",
            "shop.payment.v1.PaymentDeclined"
        ]
    );
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    let (stop, consumer) = env.spawn_consumer(config, handler);
    env.applied(&declined_id).await;
    let dead = env.read(&dlq, 2).await;
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();

    let effects = env.effects().await;
    assert_eq!(
        effects,
        [
            (captured_id, "captured order-1 1250".to_owned()),
            (declined_id, "declined order-5 InsufficientFunds".to_owned()),
        ]
    );
    let dead: Vec<(&str, &str)> = dead
        .iter()
        .map(|r| {
            (
                r.header("ce_id").unwrap(),
                r.header("dlq_error_kind").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        dead,
        [
            (anonymous_id.as_str(), "permanent"),
            (malformed_id.as_str(), "permanent")
        ]
    );
    // The unregistered event was passed over: not to the DLQ, and no inbox row either (a row
    // would protect nothing, and a topic's other types would fill the inbox).
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_inbox WHERE event_id = $1")
        .bind(&refunded_id)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(inbox, 0);
}
