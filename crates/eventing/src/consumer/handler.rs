//! What a subscriber implements: the [`Handler`], and the [`LockKey`]s it declares so that
//! batches of several replicas take their locks in one order.

use std::future::Future;

use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::{HandlerError, InboundEvent};

/// Applies one event. Implemented by each subscriber; everything else (decoding helpers,
/// deduplication, retries, dead letters, offsets, tracing) is the [`Consumer`](crate::Consumer)'s
/// job.
pub trait Handler: Send + Sync + 'static {
    /// Applies `event` using `tx`, the transaction its inbox row is written in. Write every
    /// effect through `tx` (including outbox appends): it commits only if this returns `Ok`.
    /// It is called only for records [`handles`](Self::handles) accepts.
    fn handle(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// The contended rows applying `event` will lock: rows that records of other partitions,
    /// and so the batches of other replicas, lock too (a product's stock, a customer's
    /// account). Default: none.
    ///
    /// The consumer applies many records in one transaction. Were each record to lock its rows
    /// as it goes, two replicas' batches could lock the same rows in opposite orders and
    /// deadlock. So before it applies a batch, the consumer takes the declared keys of all its
    /// records, sorted and de-duplicated (`pg_advisory_xact_lock`): every batch that touches
    /// a row has first taken its key, in one global order, and a batch waits for the other
    /// rather than deadlocking. Records that declare nothing cost nothing; a batch whose
    /// records declare more than 256 distinct keys is cut in several transactions (PostgreSQL's
    /// lock table is shared and bounded).
    ///
    /// It runs in the batch's transaction before any handler of the batch. It may read (the
    /// account a refund will credit, the lines a reservation holds) but must not lock or write.
    /// A key missed here only brings back the possibility of a deadlock (retried as a
    /// transient failure), never a wrong effect.
    fn lock_keys(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> impl Future<Output = Result<Vec<LockKey>, HandlerError>> + Send {
        let _ = (tx, event);
        std::future::ready(Ok(Vec::new()))
    }

    /// Whether this handler applies `event` at all, usually by its type (`event.is::<T>()`).
    /// The records it does not handle are passed over without a transaction's work: no inbox
    /// row (a topic's other event types would otherwise fill the inbox with rows that protect
    /// nothing), no handler call, their offsets stored in order with the rest. Default: every
    /// record.
    ///
    /// Say `true` for every type [`handle`](Self::handle) acts on: a type left out here is
    /// never applied.
    fn handles(&self, event: &InboundEvent) -> bool {
        let _ = event;
        true
    }
}

/// A lock a handler takes on a record's behalf: `space` names what is locked (a table), `key`
/// which one (a sku, a customer id). Two keys are the same lock exactly when their space and
/// key are equal (up to a 64-bit digest: a collision only makes two records wait for each
/// other).
///
/// ```
/// use shop_eventing::LockKey;
/// assert_eq!(LockKey::new("products", "sku-1"), LockKey::new("products", "sku-1"));
/// assert_ne!(LockKey::new("products", "sku-1"), LockKey::new("accounts", "sku-1"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockKey {
    // PostgreSQL's two-int4 advisory lock space, which never overlaps the one-bigint space the
    // relay's leadership lock lives in.
    high: i32,
    low: i32,
}

impl LockKey {
    /// The lock on `key` among `space`.
    pub fn new(space: &str, key: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(space.as_bytes());
        hasher.update([0]);
        hasher.update(key.as_bytes());
        let digest = hasher.finalize();
        let word = |at: usize| {
            i32::from_be_bytes([digest[at], digest[at + 1], digest[at + 2], digest[at + 3]])
        };
        Self {
            high: word(0),
            low: word(4),
        }
    }

    pub(super) fn parts(self) -> (i32, i32) {
        (self.high, self.low)
    }
}
