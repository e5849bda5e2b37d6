use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

/// A PostgreSQL database of its own, created for one test and dropped afterwards.
///
/// The server comes from `DATABASE_URL` (the project's scripts set it: an existing server, or a
/// private cluster they start); without it, `postgres://postgres@127.0.0.1:5432/postgres`.
#[derive(Debug)]
pub struct TestDb {
    /// A pool on the new database.
    pub pool: PgPool,
    name: String,
    server: PgConnectOptions,
}

impl TestDb {
    /// Creates an empty database named `shoptest_<uuid>`.
    ///
    /// # Panics
    /// When the server cannot be reached, with a message saying how to point at one.
    pub async fn create() -> Self {
        Self::create_on(&server_url()).await
    }

    /// Creates an empty database on the server at `url` (e.g. a [`crate::PrivatePostgres`]).
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub async fn create_on(url: &str) -> Self {
        let server: PgConnectOptions = url.parse().expect("DATABASE_URL is not a PostgreSQL URL");
        let name = format!("shoptest_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect_with(&server).await.unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {url}: {e}. Run the tests through deploy/test.sh, or set DATABASE_URL.")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE failed");
        let _ = admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect_with(server.clone().database(&name))
            .await
            .expect("cannot connect to the test database");
        Self { pool, name, server }
    }

    /// Connection options for this database (for components that open their own pools).
    pub fn connect_options(&self) -> PgConnectOptions {
        self.server.clone().database(&self.name)
    }

    /// This database's URL.
    pub fn url(&self) -> String {
        self.connect_options().to_url_lossy().to_string()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop is synchronous and may run inside a runtime: use a thread with its own runtime.
        let server = self.server.clone();
        let name = std::mem::take(&mut self.name);
        // The pool belongs to the test's runtime, which is blocked here: do not touch it.
        // `WITH (FORCE)` ends its sessions server-side.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect_with(&server).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}
