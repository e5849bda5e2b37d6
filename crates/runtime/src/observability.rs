//! A service's metrics: one Prometheus registry with the gRPC server's RED families, the
//! eventing families (outbox, relay, consumers), the database pool's gauges and whatever the
//! service adds for its domain, served as `/metrics` on a port of its own (so scraping never
//! competes with gRPC traffic, and NetworkPolicies can open it to Prometheus alone).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use shop_eventing::{ConsumerConfig, EventingMetrics, RelayConfig};
use shop_telemetry::grpc::GrpcMetrics;
use shop_telemetry::metrics::{Family, Gauge, Registry};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolState {
    state: &'static str,
}

/// The families every service has, and the registry the service adds its own to.
#[derive(Debug)]
pub struct Observability {
    registry: Registry,
    /// Give clones to the relay's and the consumers' configs.
    pub eventing: EventingMetrics,
    pub(crate) grpc_server: GrpcMetrics,
    pool_connections: Family<PoolState, Gauge>,
    pool_max: Gauge,
}

impl Default for Observability {
    fn default() -> Self {
        Self::new()
    }
}

impl Observability {
    /// A registry with the gRPC server, eventing and database pool families.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let eventing = EventingMetrics::new(&mut registry);
        let grpc_server = GrpcMetrics::server(&mut registry);
        let pool_connections = Family::<PoolState, Gauge>::default();
        registry.register(
            "shop_db_pool_connections",
            "Database connections of this process's pool, by state (in_use, idle)",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "shop_db_pool_max_connections",
            "Most connections the pool may open",
            pool_max.clone(),
        );
        Self {
            registry,
            eventing,
            grpc_server,
            pool_connections,
            pool_max,
        }
    }

    /// Relay settings (the defaults) that count into this registry.
    pub fn relay_config(&self) -> RelayConfig {
        RelayConfig {
            metrics: self.eventing.clone(),
            ..RelayConfig::default()
        }
    }

    /// Consumer settings (the defaults) for group `name` reading `topics`, counting into this
    /// registry.
    pub fn consumer_config(
        &self,
        name: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> ConsumerConfig {
        let mut config = ConsumerConfig::new(name, topics);
        config.metrics = self.eventing.clone();
        config
    }

    /// Where the service registers its own (domain) families.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Brings the gauges read from the database up to date, then renders every family.
    async fn scrape(&self, pool: &PgPool) -> String {
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        let open = i64::from(pool.size());
        self.pool_connections
            .get_or_create(&PoolState { state: "idle" })
            .set(idle);
        self.pool_connections
            .get_or_create(&PoolState { state: "in_use" })
            .set((open - idle).max(0));
        self.pool_max
            .set(i64::from(pool.options().get_max_connections()));
        if let Err(error) = self.eventing.refresh_outbox(pool).await {
            tracing::warn!(%error, "Could not read the outbox backlog for /metrics.");
        }
        shop_telemetry::metrics::encode(&self.registry)
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
///
/// # Errors
/// When the server fails.
pub async fn serve_metrics(
    listener: TcpListener,
    observability: Arc<Observability>,
    pool: PgPool,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    async fn metrics(
        State((observability, pool)): State<(Arc<Observability>, PgPool)>,
    ) -> impl IntoResponse {
        (
            [(CONTENT_TYPE, shop_telemetry::metrics::CONTENT_TYPE)],
            observability.scrape(&pool).await,
        )
    }
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state((observability, pool));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
