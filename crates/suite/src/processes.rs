//! The four services as real operating-system processes (the binaries `cargo build` made), each
//! configured only through its environment, as in a deployment. Tests use this where a process
//! boundary matters: trace export over OTLP, `/metrics` scraped over HTTP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::clients::{Clients, Endpoints};

/// One of the four services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Order,
    Inventory,
    Payment,
    Notification,
}

impl Service {
    pub const ALL: [Self; 4] = [
        Self::Order,
        Self::Inventory,
        Self::Payment,
        Self::Notification,
    ];

    /// `order`, `inventory`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Inventory => "inventory",
            Self::Payment => "payment",
            Self::Notification => "notification",
        }
    }

    /// The binary, and the `service.name` of its spans.
    pub fn binary(self) -> String {
        format!("{}-service", self.name())
    }

    fn env_prefix(self) -> String {
        self.name().to_uppercase()
    }
}

/// Where the binaries are: next to the test executable's `deps/` folder (`target/<profile>/`).
///
/// # Panics
/// When a binary is missing: build them first (`cargo build --workspace --bins`; `cargo test` and
/// `cargo nextest run` on the whole workspace do).
pub fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A free port on loopback (the kernel's choice; released for the service to bind).
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// How to run the suite.
#[derive(Clone, Debug)]
pub struct SuiteConfig {
    pub kafka_bootstrap_servers: String,
    /// Each service's own database URL.
    pub databases: HashMap<Service, String>,
    pub order_events_topic: String,
    pub inventory_events_topic: String,
    pub payment_events_topic: String,
    /// Suffix of every consumer group (unique per test, so groups never meet).
    pub group_suffix: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, if spans are to be exported.
    pub otlp_endpoint: Option<String>,
    /// More variables, for every service.
    pub env: Vec<(String, String)>,
}

struct Running {
    child: Child,
    grpc: SocketAddr,
    metrics: SocketAddr,
}

/// The running processes; killed when dropped.
pub struct SuiteProcesses {
    config: SuiteConfig,
    running: HashMap<Service, Running>,
}

impl std::fmt::Debug for SuiteProcesses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuiteProcesses")
            .field("services", &self.running.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for SuiteProcesses {
    fn drop(&mut self) {
        for running in self.running.values_mut() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

impl SuiteProcesses {
    /// Starts the four services and waits until each reports SERVING.
    ///
    /// # Errors
    /// When a process cannot be started or does not come up within a minute.
    pub async fn start(config: SuiteConfig) -> anyhow::Result<(Self, Clients)> {
        let mut suite = Self {
            config,
            running: HashMap::new(),
        };
        // Inventory first: the order service prices orders from its catalog.
        for service in [
            Service::Inventory,
            Service::Order,
            Service::Payment,
            Service::Notification,
        ] {
            suite.spawn(service)?;
        }
        let clients = Clients::connect(&suite.endpoints(), Duration::from_secs(60)).await?;
        Ok((suite, clients))
    }

    fn spawn(&mut self, service: Service) -> anyhow::Result<()> {
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let c = &self.config;
        let prefix = service.env_prefix();
        let mut command = Command::new(binary_path(&service.binary()));
        // Only what is set here: the test's own environment (DATABASE_URL, OTEL_*) stays out.
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(format!("{prefix}_GRPC_ADDR"), grpc.to_string())
            .env(format!("{prefix}_METRICS_ADDR"), metrics.to_string())
            .env(
                format!("{prefix}_DATABASE_URL"),
                c.databases
                    .get(&service)
                    .ok_or_else(|| anyhow::anyhow!("no database for {service:?}"))?,
            )
            .env(
                format!("{prefix}_CONSUMER_GROUP"),
                format!("{}-{}", service.binary(), c.group_suffix),
            )
            .env("KAFKA_BOOTSTRAP_SERVERS", &c.kafka_bootstrap_servers)
            .env("KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env("ORDER_EVENTS_TOPIC", &c.order_events_topic)
            .env("INVENTORY_EVENTS_TOPIC", &c.inventory_events_topic)
            .env("PAYMENT_EVENTS_TOPIC", &c.payment_events_topic)
            .env("NOTIFICATION_POLL_INTERVAL_MS", "50")
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").map_or("warn".into(), |_| "info".to_owned()),
            )
            .env("LOG_FORMAT", "json")
            // Export spans promptly: a test waits for them.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdin(Stdio::null());
        if let Some(inventory) = self.running.get(&Service::Inventory) {
            command.env("INVENTORY_GRPC_URL", format!("http://{}", inventory.grpc));
        }
        if let Some(endpoint) = &c.otlp_endpoint {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
        }
        for (k, v) in &c.env {
            command.env(k, v);
        }
        if std::env::var_os("TEST_LOG").is_none() {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command.spawn()?;
        self.running.insert(
            service,
            Running {
                child,
                grpc,
                metrics,
            },
        );
        Ok(())
    }

    /// The gRPC endpoints.
    pub fn endpoints(&self) -> Endpoints {
        let url = |s: Service| {
            self.running
                .get(&s)
                .map(|r| format!("http://{}", r.grpc))
                .unwrap_or_default()
        };
        Endpoints {
            order: url(Service::Order),
            inventory: url(Service::Inventory),
            payment: url(Service::Payment),
            notification: url(Service::Notification),
        }
    }

    /// Where `service` serves `/metrics`.
    ///
    /// # Panics
    /// When the service was never started.
    pub fn metrics_addr(&self, service: Service) -> SocketAddr {
        self.running[&service].metrics
    }
}
