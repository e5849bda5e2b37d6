use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// Creates or upgrades the outbox, inbox and dead-letter tables in a service's own database.
///
/// The crate tracks its migrations in its own table (`_eventing_migrations`), so they never mix
/// with the service's own `_sqlx_migrations` history.
///
/// # Errors
/// When the database is unreachable or a migration fails.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_eventing_migrations");
    migrator.run(pool).await
}
