use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

/// Server-side settings of every service connection (sent at connection start), so that what a
/// dead or cut-off process holds in the database is released in seconds, not when the kernel
/// gives up on the connection (about 2 h 11 min with Linux's default keepalives).
///
/// - `tcp_keepalives_idle/interval/count` = 10 s / 3 s / 3: the server probes an idle
///   connection after 10 s and drops it after 3 unanswered probes, so a session whose client
///   machine is gone (node lost, partitioned) ends about 20 s later, with its locks.
/// - `tcp_user_timeout` = 20 s: the same bound while the server has unacknowledged data in
///   flight to such a client (keepalives only run on an idle connection).
/// - `idle_in_transaction_session_timeout` = 10 s: a transaction left open by a client that
///   stopped talking (a consumer's batch transaction on a frozen or partitioned node, whose
///   socket the server may still think alive) is ended, and its `FOR UPDATE` locks on hot rows
///   (products, accounts) with it. A live transaction never idles that long: the services run
///   their statements back to back, and call no other service inside one.
/// - `lock_timeout` = 15 s: a lock wait is bounded even when the holder is alive but stuck, and
///   when the waiter's own client gave up (a gRPC call past its deadline leaves its statement
///   waiting on the server). Longer than the idle timeout, so that a waiter behind a dead
///   holder gets the lock when the holder's session is ended rather than an error; shorter than
///   `statement_timeout`, so that a lock wait ends with the clearer 55P03. Either is transient:
///   a consumer retries the record (SQLSTATE 55P03 and 57014 are classed as transient), an API
///   call answers with an error the client may retry.
/// - `statement_timeout` = 30 s: no statement of these OLTP services legitimately runs that
///   long (the longest, the `/metrics` scrape of the outbox, is a count); one that does is
///   piling up behind something and holds a connection the others need. Migrations run without
///   it (see `service::open_database`).
///
/// These do not replace the relay's lease (`shop_eventing::Relay`): keepalives see a dead
/// machine, not a proxy or a half-dead network path that still acknowledges packets, so
/// leadership is decided by an expiry instead.
pub const SESSION_SETTINGS: [(&str, &str); 7] = [
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "3"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "20000"),
    ("idle_in_transaction_session_timeout", "10s"),
    ("lock_timeout", "15s"),
    ("statement_timeout", "30s"),
];

/// The settings of [`SESSION_SETTINGS`] that cut long work short, which a migration is allowed
/// to do (it runs before any replica serves, and may rewrite a big table).
pub const MIGRATION_OVERRIDES: [(&str, &str); 3] = [
    ("idle_in_transaction_session_timeout", "0"),
    ("lock_timeout", "0"),
    ("statement_timeout", "0"),
];

/// `options` with the service session settings.
pub fn service_session(options: PgConnectOptions) -> PgConnectOptions {
    options.options(SESSION_SETTINGS)
}

/// Connects a pool to `url`, waiting (up to `patience`) for the server to accept connections:
/// in a cluster the database may start after the service. Its connections carry
/// [`SESSION_SETTINGS`].
///
/// # Errors
/// When the URL is invalid, the server does not come up in time, or shutdown was requested.
pub async fn connect(
    url: &str,
    max_connections: u32,
    patience: Duration,
    shutdown: &CancellationToken,
) -> anyhow::Result<PgPool> {
    let options = service_session(url.parse()?);
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "Database not reachable yet; retrying.");
                tokio::select! {
                    () = shutdown.cancelled() => anyhow::bail!("shutdown requested while waiting for the database"),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context("connecting to the database"));
            }
        }
    }
}

/// A pool of its own for one part of the service (a consumer), with the connections of `pool`
/// (its URL and [`SESSION_SETTINGS`]) but none of its connections: what holds every connection
/// of `pool` (a burst of API calls, each waiting for one) cannot delay that part. Connects
/// lazily, when the part first needs a connection.
pub fn own_pool(pool: &PgPool, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(pool.connect_options().as_ref().clone())
}
