//! The four services as real operating-system processes (the binaries `cargo build` made), each
//! configured only through its environment, as in a deployment. Tests use this where a process
//! boundary matters: trace export over OTLP, `/metrics` scraped over HTTP, processes killed
//! with SIGKILL, several replicas of one service sharing a consumer group.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

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

/// Where the binaries are: next to the running executable when it is a binary of the workspace
/// (`target/<profile>/shop-chaos`), or next to the test executable's `deps/` folder
/// (`target/<profile>/`).
///
/// # Panics
/// When a binary is missing: build them first (`cargo build --workspace --bins`; `cargo test` and
/// `cargo nextest run` on the whole workspace do).
pub fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let beside = exe.parent().map(|dir| dir.join(name));
    if let Some(path) = beside.filter(|p| p.exists()) {
        return path;
    }
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

/// A free port on loopback, released for a service to bind: from 20000-32767, below the
/// ephemeral range that outgoing connections take their source ports from, never handed out
/// twice in this process (the one rule of the workspace: `shop_pgcluster::free_port`, which
/// the tests' PostgreSQL clusters take their ports from too).
pub use shop_testkit::free_port;

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
    /// A local run's settings (`shop-run`, which `deploy/run.sh` starts) instead of a test's.
    pub local: Option<LocalRun>,
}

/// How a local run of the suite (`shop-run`) starts the services where a test's would differ:
/// on the topology's ports, with their output kept, trusting the callers its variables name
/// (`SuiteConfig::env`: `AUTH_JWKS_FILE`, ...) rather than the test issuer, logged at `info`,
/// with the production timers.
#[derive(Clone, Debug)]
pub struct LocalRun {
    /// Each service's gRPC, metrics and admin ports.
    pub ports: HashMap<Service, [u16; 3]>,
    /// Where each process's output goes (`<service>.log`); kept.
    pub logs: PathBuf,
    /// Variables of one service only (its Kafka login, the order service's own token).
    pub service_env: HashMap<Service, Vec<(String, String)>>,
}

impl SuiteConfig {
    /// The consumer group (and inbox name) of `service`: `<binary>-<group_suffix>`, or the
    /// binary's name (its group in production) when the suffix is empty.
    pub fn group(&self, service: Service) -> String {
        if self.group_suffix.is_empty() {
            service.binary()
        } else {
            format!("{}-{}", service.binary(), self.group_suffix)
        }
    }
}

/// One running (or stopped) process of a service.
struct Instance {
    child: Option<Child>,
    /// Where the process's stdout and stderr go (appended to across restarts), so that a start
    /// that times out can say why.
    log: PathBuf,
    grpc: SocketAddr,
    metrics: SocketAddr,
    /// The admin API (`shopctl`'s).
    admin: SocketAddr,
    /// Variables of this instance only (e.g. `SHOP_FAILPOINTS`), on top of the suite's.
    env: Vec<(String, String)>,
}

/// The running processes; killed when dropped.
///
/// Each service runs as one or more replicas (replica 0 first): replicas share the service's
/// database and consumer group, each with its own ports, as pods of one Deployment do. Processes
/// are stopped the way a node would stop them: [`SuiteProcesses::kill`] sends SIGKILL (nothing
/// drains, nothing commits), [`SuiteProcesses::terminate`] SIGTERM (the service drains).
pub struct SuiteProcesses {
    config: SuiteConfig,
    instances: BTreeMap<(Service, usize), Instance>,
    /// The processes' log files: removed when the suite is dropped, kept when a test fails
    /// (the thread is panicking), so that they can be read afterwards.
    logs: PathBuf,
}

impl std::fmt::Debug for SuiteProcesses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuiteProcesses")
            .field("instances", &self.instances.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for SuiteProcesses {
    fn drop(&mut self) {
        for instance in self.instances.values_mut() {
            if let Some(mut child) = instance.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if self.config.local.is_some() {
            // A local run's output is the operator's to read.
        } else if std::thread::panicking() {
            eprintln!("the services' output is kept in {}", self.logs.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }
}

impl SuiteProcesses {
    /// Starts the four services and waits until each reports SERVING. They trust the test
    /// issuer ([`shop_testkit::test_auth`]); the clients returned call as an operator.
    ///
    /// # Errors
    /// When a process cannot be started or does not come up within a minute.
    pub async fn start(config: SuiteConfig) -> anyhow::Result<(Self, Clients)> {
        let mut suite = Self::launch(config)?;
        let clients = match Clients::connect(
            &suite.endpoints(),
            Duration::from_secs(60),
            &shop_testkit::test_auth().operator(),
        )
        .await
        {
            Ok(clients) => clients,
            Err(e) => return Err(e.context(suite.reports())),
        };
        Ok((suite, clients))
    }

    /// Starts the four services of a local run (`config.local` set), one after the other, each
    /// once the one before reports SERVING.
    ///
    /// One at a time because a local run's ports are the topology's (50051-50064), inside the
    /// kernel's ephemeral range: while a service binds them, a sibling starting beside it could
    /// take one as the source port of an outgoing connection (to PostgreSQL, to the broker) and
    /// the bind would fail ("Address already in use"). Starting them in turn leaves only the
    /// rest of the machine to collide with, which is transient: a service that exits while
    /// starting is started again, twice at most, a second later.
    ///
    /// # Errors
    /// When a process cannot be started, or does not serve within `patience` (or exits at each
    /// of its three starts).
    pub async fn start_local(config: SuiteConfig, patience: Duration) -> anyhow::Result<Self> {
        const STARTS: usize = 3;
        anyhow::ensure!(config.local.is_some(), "start_local needs config.local");
        let mut suite = Self::empty(config)?;
        for service in Self::START_ORDER {
            suite.add(service, Vec::new())?;
            let mut starts = 1;
            loop {
                match suite.serving_or_exited(service, patience).await {
                    Ok(None) => break,
                    Ok(Some(status)) if starts < STARTS => {
                        eprintln!(
                            "[shop] {}-service exited while starting ({status}); starting it again",
                            service.name()
                        );
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        suite.restart(service, 0)?;
                        starts += 1;
                    }
                    Ok(Some(status)) => {
                        return Err(anyhow::anyhow!(
                            "{}-service exited at each of its {STARTS} starts, the last time {status}",
                            service.name()
                        )
                        .context(suite.reports()));
                    }
                    Err(e) => return Err(e.context(suite.reports())),
                }
            }
        }
        Ok(suite)
    }

    /// Waits until replica 0 of `service` reports SERVING (`None`) or exits (how).
    ///
    /// # Errors
    /// When it does neither within `patience`.
    async fn serving_or_exited(
        &mut self,
        service: Service,
        patience: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let deadline = tokio::time::Instant::now() + patience;
        let url = self.url(service, 0);
        loop {
            // Bounded: whatever holds the port may accept a connection and never answer.
            let check = crate::clients::wait_serving(&url, Duration::ZERO);
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), check).await {
                return Ok(None);
            }
            if let Some(status) = self.exited(service, 0) {
                return Ok(Some(status));
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{url} is not serving after {patience:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Inventory first: the order service prices orders from its catalog.
    const START_ORDER: [Service; 4] = [
        Service::Inventory,
        Service::Order,
        Service::Payment,
        Service::Notification,
    ];

    /// No process yet; the log directory made.
    fn empty(config: SuiteConfig) -> anyhow::Result<Self> {
        let logs = match &config.local {
            Some(local) => local.logs.clone(),
            None => std::env::temp_dir().join(format!("shop-suite-{}", config.group_suffix)),
        };
        std::fs::create_dir_all(&logs)?;
        Ok(Self {
            config,
            instances: BTreeMap::new(),
            logs,
        })
    }

    /// Starts replica 0 of the four services, not waiting for them.
    fn launch(config: SuiteConfig) -> anyhow::Result<Self> {
        let mut suite = Self::empty(config)?;
        for service in Self::START_ORDER {
            suite.add(service, Vec::new())?;
        }
        Ok(suite)
    }

    /// [`SuiteProcesses::report`] of replica 0 of every service started.
    fn reports(&mut self) -> String {
        let started: Vec<Service> = Service::ALL
            .into_iter()
            .filter(|service| self.instances.contains_key(&(*service, 0)))
            .collect();
        let why: Vec<String> = started
            .into_iter()
            .map(|service| self.report(service, 0))
            .collect();
        why.join("\n")
    }

    /// Starts one more replica of `service` (same database and consumer group, ports of its
    /// own) with `env` on top of the suite's variables; returns its replica number. It is not
    /// waited for: see [`SuiteProcesses::wait_serving`].
    ///
    /// # Errors
    /// When the process cannot be started.
    pub fn add(&mut self, service: Service, env: Vec<(String, String)>) -> anyhow::Result<usize> {
        let replica = self
            .instances
            .range((service, 0)..=(service, usize::MAX))
            .count();
        let fixed = self
            .config
            .local
            .as_ref()
            .and_then(|local| local.ports.get(&service))
            .filter(|_| replica == 0);
        let [grpc, metrics, admin] = fixed
            .copied()
            .unwrap_or_else(|| [free_port(), free_port(), free_port()]);
        let log = match (&self.config.local, replica) {
            (Some(_), 0) => format!("{}.log", service.name()),
            _ => format!("{}-{replica}.log", service.name()),
        };
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let instance = Instance {
            child: None,
            log: self.logs.join(log),
            grpc: loopback(grpc),
            metrics: loopback(metrics),
            admin: loopback(admin),
            env,
        };
        if self.config.local.is_some() {
            // A local run's log is this run's (appended to across restarts within it).
            std::fs::File::create(&instance.log)?;
        }
        self.instances.insert((service, replica), instance);
        self.spawn(service, replica)?;
        Ok(replica)
    }

    /// SIGKILL: the process dies at once, mid-transaction, mid-batch, without leaving its
    /// consumer group (the group notices after `session.timeout.ms`).
    ///
    /// # Panics
    /// When there is no such replica.
    pub fn kill(&mut self, service: Service, replica: usize) {
        let instance = self.instance(service, replica);
        if let Some(mut child) = instance.child.take() {
            let _ = signal(&child, Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM, then up to `patience` for the process to drain and exit (SIGKILL after that).
    /// Returns whether it exited by itself in time, successfully.
    ///
    /// # Panics
    /// When there is no such replica.
    pub async fn terminate(
        &mut self,
        service: Service,
        replica: usize,
        patience: Duration,
    ) -> bool {
        let instance = self.instance(service, replica);
        let Some(mut child) = instance.child.take() else {
            return false;
        };
        let _ = signal(&child, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM to every replica at once (each drains), then up to `patience` for all of them to
    /// exit; SIGKILL to those still running after that.
    pub async fn terminate_all(&mut self, patience: Duration) {
        for instance in self.instances.values() {
            if let Some(child) = &instance.child {
                let _ = signal(child, Signal::SIGTERM);
            }
        }
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let mut running = 0;
            for instance in self.instances.values_mut() {
                if let Some(child) = instance.child.as_mut() {
                    if let Ok(Some(_)) = child.try_wait() {
                        instance.child = None;
                    } else {
                        running += 1;
                    }
                }
            }
            if running == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for instance in self.instances.values_mut() {
            if let Some(mut child) = instance.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts a stopped (killed, terminated or exited) replica again, on the same ports.
    ///
    /// # Errors
    /// When the process cannot be started.
    ///
    /// # Panics
    /// When there is no such replica.
    pub fn restart(&mut self, service: Service, replica: usize) -> anyhow::Result<()> {
        let instance = self.instance(service, replica);
        if let Some(mut child) = instance.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn(service, replica)
    }

    /// Sets (or with `None` removes) a variable of one replica, for its next (re)start.
    ///
    /// # Panics
    /// When there is no such replica.
    pub fn set_env(&mut self, service: Service, replica: usize, key: &str, value: Option<&str>) {
        let instance = self.instance(service, replica);
        instance.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            instance.env.push((key.to_owned(), value.to_owned()));
        }
    }

    /// Whether the replica's process has exited (by itself: e.g. aborted at a failpoint), and
    /// how.
    ///
    /// # Panics
    /// When there is no such replica.
    pub fn exited(&mut self, service: Service, replica: usize) -> Option<std::process::ExitStatus> {
        let instance = self.instance(service, replica);
        let status = instance.child.as_mut()?.try_wait().ok().flatten()?;
        instance.child = None;
        Some(status)
    }

    /// How many replicas of `service` there are (running or stopped).
    pub fn replicas(&self, service: Service) -> usize {
        self.instances
            .range((service, 0)..=(service, usize::MAX))
            .count()
    }

    /// The replica's process id, while it runs.
    pub fn pid(&self, service: Service, replica: usize) -> Option<u32> {
        self.instances
            .get(&(service, replica))
            .and_then(|i| i.child.as_ref())
            .map(Child::id)
    }

    /// Waits until the replica reports SERVING.
    ///
    /// # Errors
    /// When it does not within `patience`.
    pub async fn wait_serving(
        &mut self,
        service: Service,
        replica: usize,
        patience: Duration,
    ) -> anyhow::Result<()> {
        crate::clients::wait_serving(&self.url(service, replica), patience)
            .await
            .map_err(|e| e.context(self.report(service, replica)))
    }

    /// What a replica that does not serve has to say for itself: whether its process is
    /// still running or how it exited, and the last lines of its output.
    fn report(&mut self, service: Service, replica: usize) -> String {
        const TAIL: usize = 30;
        let instance = self.instance(service, replica);
        let state = match instance.child.as_mut().map(Child::try_wait) {
            None => "not running".to_owned(),
            Some(Ok(None)) => format!(
                "running (pid {})",
                instance.child.as_ref().map_or(0, Child::id)
            ),
            Some(Ok(Some(status))) => format!("exited: {status}"),
            Some(Err(e)) => format!("unknown ({e})"),
        };
        let output = std::fs::read_to_string(&instance.log).unwrap_or_default();
        let lines: Vec<&str> = output.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL)..].join("\n");
        format!(
            "{service:?} replica {replica}: {state}; last {} of {} lines of {}:\n{tail}",
            lines.len().min(TAIL),
            lines.len(),
            instance.log.display()
        )
    }

    fn instance(&mut self, service: Service, replica: usize) -> &mut Instance {
        self.instances
            .get_mut(&(service, replica))
            .unwrap_or_else(|| panic!("no replica {replica} of {service:?}"))
    }

    fn spawn(&mut self, service: Service, replica: usize) -> anyhow::Result<()> {
        let inventory = self
            .instances
            .get(&(Service::Inventory, 0))
            .map(|i| format!("http://{}", i.grpc));
        let c = &self.config;
        let instance = &self.instances[&(service, replica)];
        let prefix = service.env_prefix();
        let mut command = Command::new(binary_path(&service.binary()));
        if c.local.is_none() {
            // Only what is set here: the test's own environment (DATABASE_URL, OTEL_*) stays
            // out. A local run passes its environment on, as a shell would: what its operator
            // set (`ORDER_API_MAX_IN_FLIGHT`, ...) reaches the services.
            command
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        }
        command
            .env(format!("{prefix}_GRPC_ADDR"), instance.grpc.to_string())
            .env(
                format!("{prefix}_METRICS_ADDR"),
                instance.metrics.to_string(),
            )
            .env(format!("{prefix}_ADMIN_ADDR"), instance.admin.to_string())
            .env(
                format!("{prefix}_DATABASE_URL"),
                c.databases
                    .get(&service)
                    .ok_or_else(|| anyhow::anyhow!("no database for {service:?}"))?,
            )
            .env(format!("{prefix}_CONSUMER_GROUP"), c.group(service))
            .env("KAFKA_BOOTSTRAP_SERVERS", &c.kafka_bootstrap_servers)
            .env("ORDER_EVENTS_TOPIC", &c.order_events_topic)
            .env("INVENTORY_EVENTS_TOPIC", &c.inventory_events_topic)
            .env("PAYMENT_EVENTS_TOPIC", &c.payment_events_topic)
            .stdin(Stdio::null());
        if let Some(inventory) = inventory {
            command.env("INVENTORY_GRPC_URL", inventory);
        }
        if let Some(endpoint) = &c.otlp_endpoint {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
        }
        let test_log = std::env::var_os("TEST_LOG").is_some() && c.local.is_none();
        match &c.local {
            Some(local) => {
                command.env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                );
                command.envs(
                    local
                        .service_env
                        .get(&service)
                        .into_iter()
                        .flatten()
                        .cloned(),
                );
            }
            None => {
                // A test's timers: a killed member is noticed in 6 s, notifications are
                // polled for every 50 ms, spans exported promptly (a test waits for them).
                command
                    .env("KAFKA_SESSION_TIMEOUT_MS", "6000")
                    .env("NOTIFICATION_POLL_INTERVAL_MS", "50")
                    .env("RUST_LOG", if test_log { "info" } else { "warn" })
                    .env("LOG_FORMAT", "json")
                    .env("OTEL_BSP_SCHEDULE_DELAY", "100")
                    // The saga's admission is set for a release build's pace (late past
                    // 300 ms). These tests run debug builds, several at once, under faults,
                    // and follow every order they place, some with clients that do not
                    // retry: here an order is late past 10 s and 250 may be pending before
                    // any is refused. Refusals are tested where they are the subject (the
                    // order service's tests) and measured by the benchmark.
                    .env("ORDER_MAX_SAGA_WAIT_MS", "10000")
                    .env("ORDER_MAX_LATE_ORDERS", "250");
                // Callers' tokens are checked against the test issuer's keys; the order
                // service calls inventory with a token of its own.
                let auth = shop_testkit::test_auth();
                command.envs(auth.env());
                if service == Service::Order {
                    command.env(
                        "ORDER_SERVICE_TOKEN_FILE",
                        auth.service_token_file("order-service"),
                    );
                }
            }
        }
        for (k, v) in c.env.iter().chain(&instance.env) {
            command.env(k, v);
        }
        // With TEST_LOG the output goes to the test's own; else to the replica's file.
        if !test_log {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&instance.log)?;
            command.stdout(log.try_clone()?).stderr(log);
        }
        let child = command.spawn()?;
        self.instance(service, replica).child = Some(child);
        Ok(())
    }

    /// The gRPC endpoint of a replica (`http://127.0.0.1:<port>`; empty when there is none).
    pub fn url(&self, service: Service, replica: usize) -> String {
        self.instances
            .get(&(service, replica))
            .map(|i| format!("http://{}", i.grpc))
            .unwrap_or_default()
    }

    /// The admin API endpoint of a replica (`http://127.0.0.1:<port>`; empty when there is none).
    pub fn admin_url(&self, service: Service, replica: usize) -> String {
        self.instances
            .get(&(service, replica))
            .map(|i| format!("http://{}", i.admin))
            .unwrap_or_default()
    }

    /// The gRPC endpoints (of replica 0 of each service).
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            order: self.url(Service::Order, 0),
            inventory: self.url(Service::Inventory, 0),
            payment: self.url(Service::Payment, 0),
            notification: self.url(Service::Notification, 0),
        }
    }

    /// Where replica 0 of `service` serves `/metrics`.
    ///
    /// # Panics
    /// When the service was never started.
    pub fn metrics_addr(&self, service: Service) -> SocketAddr {
        self.replica_metrics_addr(service, 0)
    }

    /// Where a replica serves `/metrics`.
    ///
    /// # Panics
    /// When there is no such replica.
    pub fn replica_metrics_addr(&self, service: Service, replica: usize) -> SocketAddr {
        self.instances[&(service, replica)].metrics
    }
}

fn signal(child: &Child, signal: Signal) -> nix::Result<()> {
    let pid = i32::try_from(child.id()).map_err(|_| nix::errno::Errno::ESRCH)?;
    nix::sys::signal::kill(Pid::from_raw(pid), signal)
}
