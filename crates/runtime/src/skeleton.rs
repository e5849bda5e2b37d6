//! One skeleton for every service process. A service declares what is its own — who it is
//! ([`Identity`]), its settings, its migrations, and in [`Service::wire`] its gRPC API, the
//! events it publishes, the consumer it runs and any task of its own — and [`Application`]
//! does the rest, the same way for all four: the callers' keys, the database (waiting for it,
//! migrating it), the three ports bound before anything starts, the metrics registry, the Kafka
//! login, the outbox relay, the consumer with its retention and lag monitor, the admin API that
//! sees them, health and readiness, and the shutdown that stops it all together.
//!
//! A service's `main` is then one line ([`main`]), and its `startup.rs` one screen: what it
//! wires, nothing else.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use prometheus_client::registry::Registry;
use shop_eventing::{Consumer, Handler, KafkaConfig, Outbox, Publisher, Relay};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::admin::AdminApi;
use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::config::{Identity, ServiceSettings, Settings};
use crate::observability::Observability;
use crate::service::{Bound, Command, Ports, ServiceRunner};
use crate::tasks::Task;

/// What a service is made of, beyond what every service has.
pub trait Service: Sized + 'static {
    /// Its names and default ports.
    const IDENTITY: Identity;
    /// Its settings ([`ServiceSettings`] and its own).
    type Settings: Settings + Send + Sync + std::fmt::Debug + 'static;
    /// What it loads before it opens its database ([`Prepare`]); `()` for nothing.
    type Prepared: Prepare<Self::Settings>;
    /// Its own schema, `sqlx::migrate!("./migrations")` (the eventing tables come with
    /// `shop_eventing::migrate`).
    const MIGRATIONS: Migrator;

    /// Builds the service's parts on `wiring` (its outbox, its consumer, its tasks) and
    /// returns its public gRPC API.
    ///
    /// # Errors
    /// When a part cannot be built (a Kafka client refused its configuration).
    fn wire(
        settings: Self::Settings,
        prepared: Self::Prepared,
        wiring: &mut Wiring,
    ) -> anyhow::Result<Api>;
}

/// What a service loads before it opens its database, so that a missing file or a bad URL
/// stops it before anything listens (the order service's own token, the notification service's
/// delivery channel).
pub trait Prepare<S>: Sized + Send + std::fmt::Debug + 'static {
    /// Loads it from the settings.
    ///
    /// # Errors
    /// When it cannot: the service does not start.
    fn load(settings: &S) -> impl Future<Output = anyhow::Result<Self>> + Send;
}

/// Nothing to load.
impl<S: Sync> Prepare<S> for () {
    async fn load(_: &S) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A service's public gRPC API: its server behind the process's [`Admission`] limit, and the
/// name its health checks ask for.
pub struct Api {
    routes: Box<dyn FnOnce(&Admission) -> Routes + Send>,
    name: &'static str,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// The API `server` serves (a tonic-generated `…Server`).
    pub fn new<S>(server: S) -> Self
    where
        S: tower_service::Service<
                http::Request<Body>,
                Response = http::Response<Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            routes: Box::new(move |admission| Routes::new(admission.admit(server))),
            name: S::NAME,
        }
    }
}

/// What a service wires its parts with, in [`Service::wire`].
pub struct Wiring {
    /// The service's database pool.
    pub pool: PgPool,
    /// The Kafka client configuration: the bootstrap servers and the environment's login.
    pub kafka: KafkaConfig,
    identity: Identity,
    settings: ServiceSettings,
    observability: Observability,
    relay: Option<Relay>,
    admin: Option<AdminApi>,
    tasks: Vec<(&'static str, Task)>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tasks: Vec<&str> = self.tasks.iter().map(|(label, _)| *label).collect();
        f.debug_struct("Wiring")
            .field("service", &self.identity.name)
            .field("relay", &self.relay.is_some())
            .field("tasks", &tasks)
            .finish_non_exhaustive()
    }
}

impl Wiring {
    /// Where the service registers its own metric families.
    pub fn registry(&mut self) -> &mut Registry {
        self.observability.registry()
    }

    /// A publisher of the service's events to `topic`: appended through the outbox, in the
    /// transactions of their state changes, and published by the service's relay (one per
    /// process, started with the first publisher), which the outbox wakes after each commit.
    /// The admin API republishes replayed records to these topics only.
    ///
    /// # Errors
    /// When the relay's producer cannot be built.
    pub fn publisher(&mut self, topic: impl Into<String>) -> anyhow::Result<Publisher> {
        if self.relay.is_none() {
            // The relay opens its own connections (outside the pool, so that API traffic
            // cannot starve it) with the pool's settings.
            self.relay = Some(Relay::new(
                self.pool.connect_options().as_ref().clone(),
                &self.kafka,
                self.observability.relay_config(),
            )?);
        }
        let waker = self.relay.as_ref().map(Relay::waker).expect("built above");
        let topic = topic.into();
        let produces = topic.clone();
        self.edit_admin(|admin| admin.produces([produces]).waking(waker.clone()));
        let outbox = Outbox::new(self.identity.event_source()).waking(waker);
        Ok(Publisher::new(outbox, topic))
    }

    /// Runs `handler` as the service's consumer of `topics`, in its consumer group, with its
    /// session timeout and inbox retention and with database connections of its own (not the
    /// API's pool); the admin API sees its dead letters.
    ///
    /// # Errors
    /// When the Kafka consumer cannot be built.
    pub fn consumer<H: Handler>(
        &mut self,
        label: &'static str,
        topics: impl IntoIterator<Item = impl Into<String>>,
        handler: H,
    ) -> anyhow::Result<()> {
        let mut config = self
            .observability
            .consumer_config(&self.settings.consumer_group, topics);
        config.session_timeout = self.settings.session_timeout;
        config.retention.window = self.settings.inbox_retention;
        self.edit_admin(|admin| admin.consumer(&config));
        // Its own connections: API calls waiting for the service's pool (PlaceOrder at a
        // campaign's peak) would otherwise delay the very saga steps that finish the orders
        // they placed, and the backlog would feed itself.
        let pool = crate::database::own_pool(&self.pool, self.settings.consumer_db_connections);
        let consumer = Consumer::new(pool, &self.kafka, config, handler)?;
        let shutdown = self.shutdown.clone();
        self.task(label, async move { Ok(consumer.run(shutdown).await?) });
        Ok(())
    }

    /// Runs any other long-running task of the service with the others; it must return when
    /// [`Wiring::shutdown`] is cancelled. Its failure stops the process.
    pub fn task(
        &mut self,
        label: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.tasks.push((label, Box::pin(task)));
    }

    /// The token cancelled when the process is to stop.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    fn edit_admin(&mut self, edit: impl FnOnce(AdminApi) -> AdminApi) {
        self.admin = self.admin.take().map(edit);
    }
}

/// A built, not yet running, service: its callers' keys loaded, its database migrated, its
/// ports bound.
pub struct Application<S: Service> {
    settings: S::Settings,
    prepared: S::Prepared,
    bound: Bound,
    auth: Authenticator,
}

impl<S: Service> std::fmt::Debug for Application<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("service", &S::IDENTITY.name)
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl<S: Service> Application<S> {
    /// Loads the callers' keys and what the service prepares, connects to the database
    /// (waiting for it), migrates it and binds the ports.
    ///
    /// # Errors
    /// When the keys or what the service prepares cannot be loaded, the database stays
    /// unreachable, a migration fails or a port is taken.
    pub async fn build(
        settings: S::Settings,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let common = settings.service();
        // First: without its callers' keys the service could serve nobody.
        let auth = Authenticator::load(&common.auth).await?;
        let prepared = S::Prepared::load(&settings).await?;
        let bound = Bound::open(
            &common.database_url,
            common.db_max_connections,
            &S::MIGRATIONS,
            Ports {
                grpc: common.grpc_addr,
                metrics: common.metrics_addr,
                admin: common.admin_addr,
            },
            shutdown,
        )
        .await?;
        Ok(Self {
            settings,
            prepared,
            bound,
            auth,
        })
    }

    /// Where the gRPC server listens (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.bound.grpc_addr()
    }

    /// Where `/metrics` is served (the real port when configured with port 0).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.bound.metrics_addr()
    }

    /// Where the admin API listens (the real port when configured with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.bound.admin_addr()
    }

    /// The service's database pool.
    pub fn pool(&self) -> &PgPool {
        &self.bound.pool
    }

    /// Wires the service and serves until `shutdown` is cancelled.
    ///
    /// # Errors
    /// When a part cannot be built, or one fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            settings,
            prepared,
            bound,
            auth,
        } = self;
        let Bound {
            pool,
            grpc,
            metrics,
            admin,
        } = bound;
        let common = settings.service().clone();
        let mut wiring = Wiring {
            kafka: crate::kafka::client_config(&common.kafka_bootstrap_servers),
            admin: Some(AdminApi::new(S::IDENTITY.name, pool.clone())),
            pool: pool.clone(),
            identity: S::IDENTITY,
            settings: common.clone(),
            observability: Observability::new(),
            relay: None,
            tasks: Vec::new(),
            shutdown: shutdown.clone(),
        };
        let api = S::wire(settings, prepared, &mut wiring)?;
        let Wiring {
            observability,
            relay,
            admin: admin_api,
            tasks,
            ..
        } = wiring;
        let admission = Admission::new(common.api_max_in_flight);
        let mut runner = ServiceRunner::new(
            grpc,
            (api.routes)(&admission),
            api.name,
            common.request_timeout,
            auth,
            shutdown,
        )
        .admin(admin, admin_api.expect("kept by every edit"))
        .metrics(metrics, observability, pool);
        if let Some(relay) = relay {
            runner = runner.relay(relay);
        }
        for (label, task) in tasks {
            runner = runner.task(label, task);
        }
        runner.run().await
    }
}

/// A service binary's `main`: `serve` (the default) or `migrate`, telemetry as every service
/// has it, settings from the environment.
///
/// # Errors
/// Invalid arguments or settings, or whatever stops the service.
pub async fn main<S: Service>() -> anyhow::Result<()> {
    let binary = S::IDENTITY.binary;
    let command = Command::from_args(binary)?;
    let _telemetry = shop_telemetry::init(binary, "info");
    let settings = S::Settings::from_env()?;
    let shutdown = crate::shutdown::on_signal();
    if command == Command::Migrate {
        crate::service::migrate(&settings.service().database_url, &S::MIGRATIONS, &shutdown)
            .await?;
        tracing::info!("{binary} database migrated.");
        return Ok(());
    }
    let app = Application::<S>::build(settings, &shutdown).await?;
    tracing::info!(addr = %app.local_addr(), "{binary} listening.");
    app.run(shutdown).await
}
