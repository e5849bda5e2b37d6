//! A [`Handler`] that routes each record to a typed handler by its event type, so a subscriber
//! writes one method per event it cares about and never looks at `ce_type` or bytes.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use sqlx::PgConnection;

use crate::{Handler, HandlerError, InboundEvent, LockKey};

/// Handles one event type `E`, decoded. Implement it once per event type a subscriber cares
/// about, on the subscriber's own state, and register each with [`Dispatcher::on`].
///
/// `tx` is the transaction of the consumer's inbox row: write every effect through it (it
/// commits only if this returns `Ok`, and then the event is never applied again by this
/// consumer). `meta` is the record: its `ce_id`, key, time, topic, partition, offset, headers.
///
/// ```
/// use shop_eventing::{HandlerError, InboundEvent, On};
/// use shop_proto::order::v1::OrderConfirmed;
/// use sqlx::PgConnection;
///
/// #[derive(Debug)]
/// struct Shipping;
///
/// impl On<OrderConfirmed> for Shipping {
///     async fn on(
///         &self,
///         tx: &mut PgConnection,
///         event: OrderConfirmed,
///         meta: &InboundEvent,
///     ) -> Result<(), HandlerError> {
///         sqlx::query("INSERT INTO shipments (order_id, confirmed_event) VALUES ($1, $2)")
///             .bind(&event.order_id)
///             .bind(&meta.id)
///             .execute(&mut *tx)
///             .await?; // a sqlx error converts: transient (retried) or permanent
///         Ok(())
///     }
/// }
/// ```
pub trait On<E>: Send + Sync + 'static {
    /// Applies `event`; see the trait's documentation.
    fn on(
        &self,
        tx: &mut PgConnection,
        event: E,
        meta: &InboundEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// The contended rows applying `event` will lock (default: none); see
    /// [`Handler::lock_keys`].
    fn lock_keys(
        &self,
        tx: &mut PgConnection,
        event: &E,
        meta: &InboundEvent,
    ) -> impl Future<Output = Result<Vec<LockKey>, HandlerError>> + Send {
        let _ = (tx, event, meta);
        std::future::ready(Ok(Vec::new()))
    }
}

type Outcome<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;
type Route<S> = for<'a> fn(&'a S, &'a mut PgConnection, &'a InboundEvent) -> Outcome<'a>;
type Keys<'a> = Pin<Box<dyn Future<Output = Result<Vec<LockKey>, HandlerError>> + Send + 'a>>;
type KeyRoute<S> = for<'a> fn(&'a S, &'a mut PgConnection, &'a InboundEvent) -> Keys<'a>;

/// Decodes the record as `E` (a malformed payload is a permanent error: dead-lettered) and
/// hands it to `state`'s [`On<E>`].
fn route<'a, S, E>(state: &'a S, tx: &'a mut PgConnection, event: &'a InboundEvent) -> Outcome<'a>
where
    S: On<E>,
    E: prost::Message + prost::Name + Default + shop_proto::Untrusted + Send + 'static,
{
    Box::pin(async move {
        let decoded: E = event.decode()?;
        state.on(tx, decoded, event).await
    })
}

/// Decodes the record as `E` and asks `state`'s [`On<E>`] for its lock keys.
fn key_route<'a, S, E>(state: &'a S, tx: &'a mut PgConnection, event: &'a InboundEvent) -> Keys<'a>
where
    S: On<E>,
    E: prost::Message + prost::Name + Default + shop_proto::Untrusted + Send + Sync + 'static,
{
    Box::pin(async move {
        let decoded: E = event.decode()?;
        state.lock_keys(tx, &decoded, event).await
    })
}

/// A [`Handler`] that decodes each record into the protobuf type named by its `ce_type` and
/// calls the [`On`] implementation registered for that type. Records of other types (and
/// records without a `ce_type`) are acknowledged without effect: a subscriber registers what it
/// needs and keeps working when producers add event types.
///
/// Everything else is the [`Consumer`](crate::Consumer)'s: the inbox makes each `ce_id` apply
/// once per consumer name; transient errors are retried with backoff until they pass;
/// permanent errors, panics and malformed payloads go to the dead-letter topic; each record
/// gets a
/// `process <topic>` span continuing the producer's trace; counts, timings and lag go to the
/// [`EventingMetrics`](crate::EventingMetrics).
///
/// ```
/// # use shop_eventing::{HandlerError, InboundEvent, On};
/// # use shop_proto::order::v1::{OrderCancelled, OrderConfirmed};
/// # use sqlx::PgConnection;
/// # #[derive(Debug)]
/// # struct Shipping;
/// # impl On<OrderConfirmed> for Shipping {
/// #     async fn on(&self, _: &mut PgConnection, _: OrderConfirmed, _: &InboundEvent) -> Result<(), HandlerError> { Ok(()) }
/// # }
/// # impl On<OrderCancelled> for Shipping {
/// #     async fn on(&self, _: &mut PgConnection, _: OrderCancelled, _: &InboundEvent) -> Result<(), HandlerError> { Ok(()) }
/// # }
/// use shop_eventing::Dispatcher;
///
/// let handler = Dispatcher::new(Shipping)
///     .on::<OrderConfirmed>()
///     .on::<OrderCancelled>();
/// assert_eq!(
///     handler.event_types().collect::<Vec<_>>(),
///     ["shop.order.v1.OrderCancelled", "shop.order.v1.OrderConfirmed"]
/// );
/// ```
pub struct Dispatcher<S> {
    state: S,
    routes: BTreeMap<String, (Route<S>, KeyRoute<S>)>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Dispatcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("state", &self.state)
            .field("event_types", &self.routes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<S: Send + Sync + 'static> Dispatcher<S> {
    /// A dispatcher over `state` with no event type registered yet.
    pub fn new(state: S) -> Self {
        Self {
            state,
            routes: BTreeMap::new(),
        }
    }

    /// Routes records whose `ce_type` is `E`'s full protobuf name (e.g.
    /// `shop.order.v1.OrderConfirmed`) to `S`'s [`On<E>`].
    ///
    /// # Panics
    /// When `E` is already registered: one event type, one handler.
    #[must_use]
    pub fn on<E>(mut self) -> Self
    where
        S: On<E>,
        E: prost::Message + prost::Name + Default + shop_proto::Untrusted + Send + Sync + 'static,
    {
        let previous = self
            .routes
            .insert(E::full_name(), (route::<S, E>, key_route::<S, E>));
        assert!(
            previous.is_none(),
            "{} is registered twice on this Dispatcher",
            E::full_name()
        );
        self
    }

    /// The registered event types (`ce_type` values), sorted.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }

    /// The state the handlers run on.
    pub fn state(&self) -> &S {
        &self.state
    }
}

impl<S: Send + Sync + 'static> Handler for Dispatcher<S> {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<(), HandlerError> {
        match event.event_type.as_deref().and_then(|t| self.routes.get(t)) {
            Some((route, _)) => route(&self.state, tx, event).await,
            None => Ok(()),
        }
    }

    async fn lock_keys(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<Vec<LockKey>, HandlerError> {
        match event.event_type.as_deref().and_then(|t| self.routes.get(t)) {
            Some((_, keys)) => keys(&self.state, tx, event).await,
            None => Ok(Vec::new()),
        }
    }

    /// The registered types: records of other types leave no inbox row.
    fn handles(&self, event: &InboundEvent) -> bool {
        event
            .event_type
            .as_deref()
            .is_some_and(|t| self.routes.contains_key(t))
    }
}
