//! The relay's leadership: one row per outbox (`eventing_relay_lease`, migrations/3_relay.sql)
//! naming the replica that publishes and until when.
//!
//! The expiry is the database's clock (`clock_timestamp()`), so replicas' clocks never need to
//! agree. The holder keeps its own, conservative copy: it sends each renewal at `sent` and, when
//! it succeeds, knows the row says at least `sent + ttl` (the database stamped it later than
//! `sent`). It stops publishing once that passes without a newer renewal, which is no later than
//! the moment a standby may take the lease: leadership ends by the clock, not when TCP notices
//! a dead peer.

use std::sync::Mutex;
use std::time::Duration;

use sqlx::PgConnection;
use tokio::time::Instant;
use uuid::Uuid;

/// The lease row of the outbox relay.
const NAME: &str = "outbox";

/// A lease this process holds (or held).
#[derive(Debug)]
pub(crate) struct Lease {
    holder: Uuid,
    pub(crate) epoch: i64,
    /// Until when this holder may publish, by its own clock.
    valid_until: Mutex<Instant>,
}

impl Lease {
    /// Takes the lease if it expired or its holder's session is gone; `None` while another
    /// replica holds it. `sent` is when the statement was sent.
    pub(crate) async fn try_acquire(
        conn: &mut PgConnection,
        holder: Uuid,
        ttl: Duration,
        sent: Instant,
    ) -> Result<Option<Self>, sqlx::Error> {
        // "Its session is gone": no session with the holder's pid and start time (pids are
        // reused). A session not visible as such (another role without pg_read_all_stats sees
        // backend_start as NULL) counts as alive: then only the expiry frees the lease.
        let epoch: Option<i64> = sqlx::query_scalar(
            "UPDATE eventing_relay_lease AS l \
             SET holder = $1, epoch = l.epoch + 1, \
                 holder_pid = pg_backend_pid(), \
                 holder_backend_start = (SELECT a.backend_start FROM pg_stat_activity AS a WHERE a.pid = pg_backend_pid()), \
                 acquired_at = clock_timestamp(), \
                 expires_at = clock_timestamp() + make_interval(secs => $2) \
             WHERE l.name = $3 \
               AND (l.expires_at <= clock_timestamp() \
                    OR NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a \
                                   WHERE a.pid = l.holder_pid \
                                     AND (a.backend_start IS NULL OR a.backend_start = l.holder_backend_start))) \
             RETURNING l.epoch",
        )
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .bind(NAME)
        .fetch_optional(conn)
        .await?;
        Ok(epoch.map(|epoch| Self {
            holder,
            epoch,
            valid_until: Mutex::new(sent + ttl),
        }))
    }

    /// Extends the lease by `ttl` from now; `false` when it is no longer ours (it expired, or
    /// another replica took it).
    pub(crate) async fn renew(
        &self,
        conn: &mut PgConnection,
        ttl: Duration,
        sent: Instant,
    ) -> Result<bool, sqlx::Error> {
        let renewed = sqlx::query(
            "UPDATE eventing_relay_lease \
             SET expires_at = clock_timestamp() + make_interval(secs => $3) \
             WHERE name = $4 AND holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()",
        )
        .bind(self.holder)
        .bind(self.epoch)
        .bind(ttl.as_secs_f64())
        .bind(NAME)
        .execute(conn)
        .await?
        .rows_affected()
            == 1;
        if renewed {
            *self.lock() = sent + ttl;
        }
        Ok(renewed)
    }

    /// Gives the lease up, so that a standby takes it at its next try rather than at expiry.
    pub(crate) async fn release(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        *self.lock() = Instant::now();
        sqlx::query(
            "UPDATE eventing_relay_lease SET expires_at = clock_timestamp() \
             WHERE name = $3 AND holder = $1 AND epoch = $2",
        )
        .bind(self.holder)
        .bind(self.epoch)
        .bind(NAME)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Until when this holder may publish.
    pub(crate) fn valid_until(&self) -> Instant {
        *self.lock()
    }

    /// Whether this holder may still publish.
    pub(crate) fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
