use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{Acquire, Postgres};

/// Creates or upgrades the outbox, inbox and dead-letter tables in a service's own database.
///
/// The crate tracks its migrations in its own table (`_eventing_migrations`), so they never mix
/// with the service's own `_sqlx_migrations` history.
///
/// `db` is a pool (`&pool`) or a connection (`&mut conn`), e.g. one without the service's
/// statement timeouts.
///
/// # Errors
/// When the database is unreachable or a migration fails.
pub async fn migrate<'a, A>(db: A) -> Result<(), MigrateError>
where
    A: Acquire<'a, Database = Postgres>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_eventing_migrations");
    migrator.run(db).await
}
