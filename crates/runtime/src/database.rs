use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

/// Connects a pool to `url`, waiting (up to `patience`) for the server to accept connections:
/// in a cluster the database may start after the service.
///
/// # Errors
/// When the URL is invalid, the server does not come up in time, or shutdown was requested.
pub async fn connect(
    url: &str,
    max_connections: u32,
    patience: Duration,
    shutdown: &CancellationToken,
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url.parse()?;
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
