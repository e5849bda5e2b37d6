//! The shape every service process shares: a database of its own (eventing tables plus the
//! service's migrations), a gRPC server with health and reflection, and long-running tasks (the
//! outbox relay, consumers, workers) that start together and stop together.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shop_eventing::{Consumer, Handler, Relay, RelayHealth};
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::admin::AdminApi;
use crate::auth::Authenticator;

/// The admin API's gRPC service name (its health and reflection name).
const ADMIN_SERVICE: &str = "shop.admin.v1.AdminService";
use crate::observability::{Observability, serve_metrics};
use crate::tasks::{Task, run_until_stopped};
use shop_telemetry::grpc::GrpcMetrics;

/// Connects to a service's database (waiting up to a minute for it), creates or upgrades the
/// outbox and inbox tables, then applies the service's own `migrations`.
///
/// The migrations run on a connection of their own, without the service's statement, lock and
/// idle timeouts ([`crate::database::MIGRATION_OVERRIDES`]): a migration may rewrite a big table
/// or wait for the old version's transactions to finish.
///
/// # Errors
/// When the database stays unreachable or a migration fails.
pub async fn open_database(
    url: &str,
    max_connections: u32,
    migrations: &Migrator,
    shutdown: &CancellationToken,
) -> anyhow::Result<PgPool> {
    let pool =
        crate::database::connect(url, max_connections, Duration::from_secs(60), shutdown).await?;
    let unbounded = pool
        .connect_options()
        .as_ref()
        .clone()
        .options(crate::database::MIGRATION_OVERRIDES);
    let mut conn = PgConnection::connect_with(&unbounded).await?;
    shop_eventing::migrate(&mut conn).await?;
    migrations.run(&mut conn).await?;
    conn.close().await?;
    Ok(pool)
}

/// Creates or upgrades a service's database (the eventing tables, then `migrations`) and
/// returns: what `<service> migrate` does before any replica of a new version serves.
///
/// # Errors
/// When the database stays unreachable or a migration fails.
pub async fn migrate(
    database_url: &str,
    migrations: &Migrator,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let pool = open_database(database_url, 1, migrations, shutdown).await?;
    pool.close().await;
    Ok(())
}

/// The addresses a service process listens on.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// The public gRPC API.
    pub grpc: SocketAddr,
    /// `/metrics`.
    pub metrics: SocketAddr,
    /// The admin API ([`crate::admin`]).
    pub admin: SocketAddr,
}

/// What a service process holds before it runs: its migrated database and its bound ports
/// (bound early, so that a port given as 0 has its real number before anything starts).
#[derive(Debug)]
pub struct Bound {
    pub pool: PgPool,
    /// The gRPC port.
    pub grpc: TcpListener,
    /// The `/metrics` port.
    pub metrics: TcpListener,
    /// The admin API's port (operators only; never exposed to ordinary clients).
    pub admin: TcpListener,
}

impl Bound {
    /// Opens the database (see [`open_database`]) and binds the three ports.
    ///
    /// # Errors
    /// When the database stays unreachable, a migration fails or a port is taken.
    pub async fn open(
        database_url: &str,
        max_connections: u32,
        migrations: &Migrator,
        addrs: Ports,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let pool = open_database(database_url, max_connections, migrations, shutdown).await?;
        Ok(Self {
            pool,
            grpc: TcpListener::bind(addrs.grpc).await?,
            metrics: TcpListener::bind(addrs.metrics).await?,
            admin: TcpListener::bind(addrs.admin).await?,
        })
    }

    /// Where the admin API listens.
    ///
    /// # Panics
    /// If the socket has no local address (it always has once bound).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound listener")
    }

    /// Where the gRPC server listens.
    ///
    /// # Panics
    /// If the socket has no local address (it always has once bound).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound listener")
    }

    /// Where `/metrics` is served.
    ///
    /// # Panics
    /// If the socket has no local address (it always has once bound).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.local_addr().expect("bound listener")
    }
}

/// What a service binary was asked to do by its command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// No arguments: migrate the database, then serve until SIGTERM.
    Serve,
    /// `migrate`: create or upgrade the database, then exit. Kubernetes runs this as an init
    /// container, so a new version's schema is in place before any of its replicas serves.
    Migrate,
}

impl Command {
    /// Reads the process arguments. `--help` prints the usage of `binary` and exits.
    ///
    /// # Errors
    /// An unknown argument.
    pub fn from_args(binary: &str) -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] | ["serve"] => Ok(Self::Serve),
            ["migrate"] => Ok(Self::Migrate),
            ["-h" | "--help"] => {
                println!(
                    "usage: {binary} [serve | migrate]\n\n  serve    migrate the database, then serve gRPC until SIGTERM (default)\n  migrate  create or upgrade the database, then exit\n\nSettings are environment variables; see the service's src/config.rs."
                );
                std::process::exit(0)
            }
            other => anyhow::bail!("unknown arguments {other:?}; try {binary} --help"),
        }
    }
}

/// A service process about to run: its gRPC API and its background tasks.
pub struct ServiceRunner {
    listener: TcpListener,
    routes: Routes,
    names: Vec<&'static str>,
    request_timeout: Duration,
    tasks: Vec<(&'static str, Task)>,
    relay: Option<RelayHealth>,
    grpc_metrics: GrpcMetrics,
    auth: Authenticator,
    admin: Option<(TcpListener, AdminApi)>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for ServiceRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tasks: Vec<&str> = self.tasks.iter().map(|(name, _)| *name).collect();
        f.debug_struct("ServiceRunner")
            .field("names", &self.names)
            .field("tasks", &tasks)
            .finish_non_exhaustive()
    }
}

impl ServiceRunner {
    /// Serves `routes` (the service's gRPC API, named `name` for health checks) on `listener`,
    /// each call bounded by `request_timeout` and authenticated by `auth` (whose key set is
    /// kept fresh by a task of the runner), until `shutdown`.
    pub fn new(
        listener: TcpListener,
        routes: Routes,
        name: &'static str,
        request_timeout: Duration,
        auth: Authenticator,
        shutdown: CancellationToken,
    ) -> Self {
        let keys = auth.clone();
        let stop = shutdown.clone();
        Self {
            listener,
            routes,
            names: vec![name],
            request_timeout,
            tasks: Vec::new(),
            relay: None,
            grpc_metrics: GrpcMetrics::unregistered(),
            auth,
            admin: None,
            shutdown,
        }
        .task("token keys refresh", keys.keep_fresh(stop))
    }

    /// Serves the service's metrics (`observability`, with whatever the service registered in
    /// it) as `GET /metrics` on `listener`; gRPC calls are counted in it too. The outbox and
    /// pool gauges are read from `pool` at each scrape.
    #[must_use]
    pub fn metrics(
        mut self,
        listener: TcpListener,
        observability: Observability,
        pool: PgPool,
    ) -> Self {
        let shutdown = self.shutdown.clone();
        self.grpc_metrics = observability.grpc_server.clone();
        let observability = Arc::new(observability);
        self.task("metrics", async move {
            Ok(serve_metrics(listener, observability, pool, shutdown).await?)
        })
    }

    /// Adds the service's outbox relay (a service has one: its database has one outbox). While it is stalled (it leads, events wait, and it
    /// published none for its `stall_timeout`), the service's gRPC health reports its API
    /// NOT_SERVING, the check Kubernetes' readiness probe makes, and the log and
    /// `shop_outbox_relay_stalled` say why.
    ///
    /// Readiness, not liveness: the overall health (`""`, the liveness probe) stays SERVING.
    /// A stall is nearly always the broker's (down, or refusing the events), and restarting the
    /// process would not bring it back; it would only move the lease to another replica, which
    /// stalls in turn, a restart loop across the service during a broker outage. What does help
    /// with a stall of this process's own (a wedged producer) the relay does itself: it rebuilds
    /// its producer. Not ready, the pod shows as such (`kubectl get pods`, the rollout waits).
    #[must_use]
    pub fn relay(mut self, relay: Relay) -> Self {
        self.relay = Some(relay.health());
        let shutdown = self.shutdown.clone();
        self.task(
            "outbox relay",
            async move { Ok(relay.run(shutdown).await?) },
        )
    }

    /// Serves the admin API ([`crate::admin`]) on `listener`, a port of its own: the same
    /// authentication, metrics and request timeout as the public API, its own health service.
    #[must_use]
    pub fn admin(mut self, listener: TcpListener, api: AdminApi) -> Self {
        self.admin = Some((listener, api));
        self
    }

    /// Adds a consumer.
    #[must_use]
    pub fn consumer<H: Handler>(self, name: &'static str, consumer: Consumer<H>) -> Self {
        let shutdown = self.shutdown.clone();
        self.task(name, async move { Ok(consumer.run(shutdown).await?) })
    }

    /// Adds any other long-running task; it must return when the shutdown token is cancelled.
    #[must_use]
    pub fn task(
        mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> Self {
        self.tasks.push((name, Box::pin(task)));
        self
    }

    /// The shutdown token the tasks watch.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Runs the gRPC server (reporting SERVING, then NOT_SERVING on shutdown) and every task
    /// until shutdown or the first failure.
    ///
    /// # Errors
    /// The first task failure.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            listener,
            routes,
            names,
            request_timeout,
            mut tasks,
            relay,
            grpc_metrics,
            auth,
            admin,
            shutdown,
        } = self;
        if let Some((listener, api)) = admin {
            let (health, health_service) = crate::grpc::health_reporter();
            let routes = Routes::new(api.into_server()).add_service(health_service);
            let (auth, metrics, stop) = (auth.clone(), grpc_metrics.clone(), shutdown.clone());
            tasks.push((
                "admin grpc",
                Box::pin(async move {
                    // Always ready: an operator needs it most when the relay is stalled.
                    let (_ready_tx, ready) = watch::channel(true);
                    crate::grpc::serve(
                        listener,
                        routes,
                        crate::grpc::Health {
                            reporter: health,
                            service_names: &[ADMIN_SERVICE],
                            ready,
                        },
                        stop,
                        request_timeout,
                        metrics,
                        &auth,
                    )
                    .await?;
                    Ok(())
                }),
            ));
        }
        let (ready_tx, ready) = watch::channel(true);
        if let Some(relay) = relay {
            let stop = shutdown.clone();
            tasks.push((
                "relay readiness",
                Box::pin(relay_readiness(relay, ready_tx, stop)),
            ));
        }
        let (health, health_service) = crate::grpc::health_reporter();
        let routes = routes.add_service(health_service);
        let grpc_shutdown = shutdown.clone();
        tasks.insert(
            0,
            (
                "grpc",
                Box::pin(async move {
                    crate::grpc::serve(
                        listener,
                        routes,
                        crate::grpc::Health {
                            reporter: health,
                            service_names: &names,
                            ready,
                        },
                        grpc_shutdown,
                        request_timeout,
                        grpc_metrics,
                        &auth,
                    )
                    .await?;
                    Ok(())
                }),
            ),
        );
        run_until_stopped(tasks, shutdown).await
    }
}

/// Keeps `ready` false while `relay` is stalled, until shutdown.
async fn relay_readiness(
    mut relay: RelayHealth,
    ready: watch::Sender<bool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            status = relay.changed() => match status {
                Some(status) => {
                    ready.send_replace(!status.stalled);
                }
                // The relay is gone: its own task reports why; wait for the shutdown it causes.
                None => {
                    shutdown.cancelled().await;
                    return Ok(());
                }
            },
        }
    }
}
