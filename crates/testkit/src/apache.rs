//! A single-node Apache Kafka (KRaft: one process that is both broker and controller) run from
//! the jars `deploy/lib.sh` resolved with Maven from `deploy/kafka/pom.xml`. The local run's
//! broker (`dev-kafka --apache`) and the tests' private brokers (which a test may SIGKILL and
//! restart on the same log directory) are both this.
//!
//! The JVM is started through a small `sh` watchdog whose standard input is a pipe from this
//! process: when this process goes away, however it dies, the pipe closes and the watchdog kills
//! the JVM. No broker outlives the test or the dev process that started it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::types::RDKafkaErrorCode;

use crate::topology::TopicToCreate;

/// The variable naming the directory of resolved Kafka jars (set by `deploy/lib.sh`).
pub const LIBS_VAR: &str = "SHOP_KAFKA_LIBS";

/// How long a broker may take to start: a JVM on two busy cores, plus log recovery after a kill.
const START_PATIENCE: Duration = Duration::from_secs(180);

/// A local Apache Kafka broker process.
#[derive(Debug)]
pub struct ApacheKafka {
    libs: PathBuf,
    dir: PathBuf,
    port: u16,
    controller_port: u16,
    heap: String,
    scram: Option<Scram>,
    running: Option<Running>,
}

/// SASL/SCRAM-SHA-512 on the client listener, with the standard authorizer and no access without
/// an ACL: as the Strimzi cluster runs (k8s/components/kafka-strimzi). `admin` is the super user
/// (topics, ACLs); every other identity gets only what [`ApacheKafka::grant`] gives it.
#[derive(Clone)]
pub struct Scram {
    pub admin_password: String,
    /// `(user, password)` of every other identity, created when the storage is formatted.
    pub users: Vec<(String, String)>,
}

impl std::fmt::Debug for Scram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<&str> = self.users.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("Scram")
            .field("users", &users)
            .finish_non_exhaustive()
    }
}

/// What one identity may do on the broker: the least its relay, consumers and dead letters
/// need (see [`crate::topology::ServiceSpec::kafka_grants`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants {
    pub user: String,
    /// Topics it produces to (Write, Describe).
    pub write: Vec<String>,
    /// Topics it consumes (Read, Describe).
    pub read: Vec<String>,
    /// Consumer groups it joins and commits in (Read).
    pub groups: Vec<String>,
}

#[derive(Debug)]
struct Running {
    /// The `sh` watchdog; it exits when the JVM does.
    watchdog: Child,
    /// Closing it tells the watchdog to kill the JVM.
    lifeline: Option<ChildStdin>,
    java: Pid,
}

impl ApacheKafka {
    /// The jars directory from [`LIBS_VAR`], if set.
    pub fn libs_from_env() -> Option<PathBuf> {
        std::env::var_os(LIBS_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }

    /// A broker (not started) keeping its configuration, logs and data in `dir`, on free
    /// loopback ports. `heap` is the JVM's `-Xmx` (and `-Xms`), e.g. `512m`.
    ///
    /// # Panics
    /// When no free port can be found.
    pub fn new(libs: impl Into<PathBuf>, dir: impl Into<PathBuf>, heap: &str) -> Self {
        Self {
            libs: libs.into(),
            dir: dir.into(),
            // Below the ephemeral range, as every server of the tests (`shop_pgcluster`).
            port: shop_pgcluster::free_port(),
            controller_port: shop_pgcluster::free_port(),
            heap: heap.to_owned(),
            scram: None,
            running: None,
        }
    }

    /// Requires SASL/SCRAM-SHA-512 on the client listener and authorises by ACL (see [`Scram`]).
    /// The identities are created when the storage is formatted, i.e. on a fresh data directory.
    #[must_use]
    pub fn with_scram(mut self, scram: Scram) -> Self {
        self.scram = Some(scram);
        self
    }

    /// librdkafka properties a client needs to reach this broker as `user` with `password`
    /// (none without SCRAM).
    pub fn client_properties(&self, user: &str, password: &str) -> Vec<(String, String)> {
        if self.scram.is_none() {
            return Vec::new();
        }
        [
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", user),
            ("sasl.password", password),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// A Java client configuration file for the admin (Kafka's tools take it as
    /// `--command-config`), written at every start of a SCRAM broker.
    pub fn admin_config_file(&self) -> PathBuf {
        self.dir.join("admin.properties")
    }

    /// The admin's client properties (none without SCRAM).
    pub fn admin_properties(&self) -> Vec<(String, String)> {
        match &self.scram {
            Some(scram) => self.client_properties("admin", &scram.admin_password),
            None => Vec::new(),
        }
    }

    /// Adds the ACLs of `grants` (idempotent), as the admin, with Kafka's own `kafka-acls` tool.
    ///
    /// # Errors
    /// When the tool fails (the broker not running, a SCRAM-less broker).
    pub async fn grant(&self, grants: &[Grants]) -> anyhow::Result<()> {
        if self.scram.is_none() {
            bail!("ACLs need a broker started with_scram");
        }
        let config = self.admin_config_file();
        for grant in grants {
            let principal = format!("User:{}", grant.user);
            // One run per kind of access: each resource gets each operation of its run.
            let mut runs: Vec<Vec<String>> = Vec::new();
            if !grant.write.is_empty() {
                let mut args = vec![
                    "--operation".into(),
                    "Write".into(),
                    "--operation".into(),
                    "Describe".into(),
                ];
                for topic in &grant.write {
                    args.extend(["--topic".to_owned(), topic.clone()]);
                }
                runs.push(args);
            }
            if !grant.read.is_empty() || !grant.groups.is_empty() {
                let mut args = vec![
                    "--operation".into(),
                    "Read".into(),
                    "--operation".into(),
                    "Describe".into(),
                ];
                for topic in &grant.read {
                    args.extend(["--topic".to_owned(), topic.clone()]);
                }
                for group in &grant.groups {
                    args.extend(["--group".to_owned(), group.clone()]);
                }
                runs.push(args);
            }
            for args in runs {
                let mut command = tokio::process::Command::new("java");
                command
                    .args(self.tool_jvm_args())
                    .arg("org.apache.kafka.tools.AclCommand")
                    .args(["--bootstrap-server", &self.bootstrap_servers()])
                    .arg("--command-config")
                    .arg(&config)
                    .args(["--add", "--allow-principal", &principal])
                    .args(&args);
                let output = command.output().await.context("running kafka-acls")?;
                if !output.status.success() {
                    bail!(
                        "kafka-acls for {principal} failed: {}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
            }
        }
        Ok(())
    }

    /// Listens for clients on `port` instead of a free one.
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's own log (its stdout and stderr).
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    /// The data directory (`log.dirs`): kept across [`ApacheKafka::kill`] and restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The JVM's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.running
            .as_ref()
            .and_then(|r| u32::try_from(r.java.as_raw()).ok())
    }

    /// Formats the storage on first use, starts the broker and waits until it answers metadata
    /// requests. A broker killed before restarts on the same data (Kafka recovers its logs).
    ///
    /// # Errors
    /// Java missing or too old, the jars missing, or the broker not coming up in time (the
    /// error carries the end of its log).
    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        let bootstrap = self.bootstrap_servers();
        let started = Instant::now();
        loop {
            let probe = bootstrap.clone();
            let properties = self.admin_properties();
            let brokers =
                tokio::task::spawn_blocking(move || broker_count(&probe, &properties)).await?;
            if brokers > 0 {
                return Ok(());
            }
            if !self.is_running() {
                bail!(
                    "Apache Kafka exited at start; the end of {}:\n{}",
                    self.log_file().display(),
                    tail(&self.log_file(), 30)
                );
            }
            if started.elapsed() > START_PATIENCE {
                self.kill();
                bail!(
                    "Apache Kafka did not answer on {bootstrap} within {START_PATIENCE:?}; the end of {}:\n{}",
                    self.log_file().display(),
                    tail(&self.log_file(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts the JVM (formatting the storage first if needed) without waiting for it to serve:
    /// clients reconnect by themselves once it does.
    ///
    /// # Errors
    /// Java missing or too old, the jars missing, formatting failed, or the process could not
    /// be started.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        check_java()?;
        if !self.libs.join(".resolved").exists() {
            bail!(
                "no resolved Kafka jars in {} (deploy/lib.sh ensure_kafka resolves them from deploy/kafka/pom.xml)",
                self.libs.display()
            );
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let properties = self.dir.join("server.properties");
        std::fs::write(&properties, self.server_properties())?;
        std::fs::write(self.dir.join("log4j2.properties"), LOG4J2)?;
        if let Some(scram) = &self.scram {
            std::fs::write(
                self.admin_config_file(),
                format!(
                    "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n\
                     sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"{}\";\n",
                    scram.admin_password
                ),
            )?;
        }
        if !self.data_dir().join("meta.properties").exists() {
            self.format(&properties)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())?;
        // The JVM writes to stderr, the log file (stdout is the pipe that carries its pid).
        // `exec 3<&0`: a background job's stdin is /dev/null in a non-interactive shell, so the
        // reader takes the pipe from descriptor 3. It blocks until the pipe closes (this process
        // stopped the broker, or died), then kills the JVM. `wait` makes the shell exit with it.
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                r#"exec 3<&0; "$@" </dev/null >&2 & pid=$!; echo "$pid"; (read -r _ <&3; kill -KILL "$pid" 2>/dev/null) & wait "$pid""#,
            )
            .arg("kafka-watchdog")
            .arg("java")
            .args(self.jvm_args())
            .arg("kafka.Kafka")
            .arg(&properties)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?)
            .env("LOG_DIR", &self.dir)
            .spawn()
            .context("starting the Kafka watchdog shell (sh)")?;
        let mut first = String::new();
        BufReader::new(watchdog.stdout.take().context("watchdog stdout")?).read_line(&mut first)?;
        let java: i32 = first
            .trim()
            .parse()
            .with_context(|| format!("the watchdog printed {first:?} instead of the JVM's pid"))?;
        let lifeline = watchdog.stdin.take();
        self.running = Some(Running {
            watchdog,
            lifeline,
            java: Pid::from_raw(java),
        });
        Ok(())
    }

    /// Whether the JVM is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.running {
            Some(r) => matches!(r.watchdog.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, as a crash: nothing is flushed or closed cleanly. The data directory stays, so
    /// [`ApacheKafka::start`] brings the same broker back.
    pub fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = kill(running.java, Signal::SIGKILL);
            let _ = running.watchdog.wait();
            drop(running.lifeline.take());
        }
    }

    /// SIGTERM, then up to `patience` for a clean shutdown (Kafka flushes and closes its logs),
    /// then SIGKILL.
    pub async fn stop(&mut self, patience: Duration) {
        let Some(running) = &mut self.running else {
            return;
        };
        let _ = kill(running.java, Signal::SIGTERM);
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if !matches!(running.watchdog.try_wait(), Ok(None)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill();
    }

    fn format(&self, properties: &Path) -> anyhow::Result<()> {
        // A fixed cluster id per data directory is all a single node needs.
        let cluster_id = "c2hvcC1sb2NhbC1rYWZrYQ";
        let mut command = Command::new("java");
        command
            .args(self.tool_jvm_args())
            .arg("kafka.tools.StorageTool")
            .args(["format", "--ignore-formatted", "-t", cluster_id, "-c"])
            .arg(properties);
        // SCRAM identities live in the cluster metadata; formatting creates the first ones
        // (the admin among them: nobody could log in to create it otherwise).
        if let Some(scram) = &self.scram {
            let admin = ("admin".to_owned(), scram.admin_password.clone());
            for (user, password) in std::iter::once(&admin).chain(&scram.users) {
                command
                    .arg("--add-scram")
                    .arg(format!("SCRAM-SHA-512=[name={user},password={password}]"));
            }
        }
        let output = command
            .output()
            .context("running kafka.tools.StorageTool")?;
        if !output.status.success() {
            bail!(
                "formatting the Kafka storage in {} failed: {}{}",
                self.data_dir().display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn jvm_args(&self) -> Vec<String> {
        vec![
            // Sized for a 2-core machine shared with PostgreSQL and the services: a fixed heap
            // (no resizing pauses) that Kafka's page-cache-based design does not need to be big.
            format!("-Xms{}", self.heap),
            format!("-Xmx{}", self.heap),
            "-XX:+UseG1GC".into(),
            "-XX:MaxGCPauseMillis=20".into(),
            "-XX:+ExitOnOutOfMemoryError".into(),
            "-Djava.awt.headless=true".into(),
            format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ),
            "-cp".into(),
            format!("{}/*", self.libs.display()),
        ]
    }

    /// The JVM of a short-lived tool: a small heap and no optimising compiler (starts faster).
    fn tool_jvm_args(&self) -> Vec<String> {
        vec![
            "-Xmx256m".into(),
            "-XX:TieredStopAtLevel=1".into(),
            format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ),
            "-cp".into(),
            format!("{}/*", self.libs.display()),
        ]
    }

    /// The client listener, and what securing it takes.
    fn listener_properties(&self) -> String {
        let port = self.port;
        let controller = self.controller_port;
        match &self.scram {
            None => format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
            ),
            Some(scram) => format!(
                "listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}\n\
                 inter.broker.listener.name=SASL_PLAINTEXT\n\
                 listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 sasl.enabled.mechanisms=SCRAM-SHA-512\n\
                 sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512\n\
                 listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"{password}\";\n\
                 # Access by ACL only. The controller listener (loopback, controller requests only)\n\
                 # stays PLAINTEXT: the node's own broker reaches its controller there as ANONYMOUS,\n\
                 # which therefore is a super user along with the admin.\n\
                 authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
                 allow.everyone.if.no.acl.found=false\n\
                 super.users=User:admin;User:ANONYMOUS\n",
                password = scram.admin_password
            ),
        }
    }

    fn server_properties(&self) -> String {
        format!(
            "# Written by shop-testkit (crates/testkit/src/apache.rs) at every start.\n\
             process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             controller.listener.names=CONTROLLER\n\
             {listeners}\
             log.dirs={data}\n\
             # As in production (k8s/components/kafka-strimzi/kafka.yaml): topics are declared,\n\
             # never created by a client's first use.\n\
             auto.create.topics.enable=false\n\
             # One node: internal topics with one replica.\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=10\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             # A group's first rebalance starts at once instead of waiting 3 s for more members.\n\
             group.initial.rebalance.delay.ms=0\n\
             num.partitions=1\n\
             # Two cores: fewer threads than the defaults (3 network, 8 I/O).\n\
             num.network.threads=2\n\
             num.io.threads=4\n",
            controller = self.controller_port,
            listeners = self.listener_properties(),
            data = self.data_dir().display(),
        )
    }
}

impl Drop for ApacheKafka {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Log4j 2 configuration: everything at INFO to the console (the broker log file), the chatty
/// client and request loggers at WARN.
const LOG4J2: &str = "\
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
";

/// Fails with what to install when `java` is missing or older than 17 (Kafka 4 needs 17).
///
/// # Errors
/// Java missing or too old.
pub fn check_java() -> anyhow::Result<()> {
    let output = Command::new("java").arg("-version").output().map_err(|e| {
        anyhow::anyhow!(
            "Apache Kafka needs Java 17 or newer, and `java` cannot be run ({e}): apt-get install openjdk-17-jre-headless"
        )
    })?;
    let text = String::from_utf8_lossy(&output.stderr);
    let major = text
        .split('"')
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= 17 => Ok(()),
        _ => bail!(
            "Apache Kafka 4 needs Java 17 or newer; `java -version` says: {}; apt-get install openjdk-17-jre-headless",
            text.lines().next().unwrap_or("nothing")
        ),
    }
}

/// How many brokers `bootstrap` reports (0 when it does not answer yet).
fn broker_count(bootstrap: &str, properties: &[(String, String)]) -> usize {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "0");
    for (k, v) in properties {
        config.set(k, v);
    }
    let consumer: Result<BaseConsumer, _> = config.create();
    consumer
        .ok()
        .and_then(|c| c.fetch_metadata(None, Duration::from_secs(2)).ok())
        .map_or(0, |m| m.brokers().len())
}

/// Creates `topics` on the single local broker at `bootstrap` as the client `properties` say
/// (e.g. [`ApacheKafka::admin_properties`]): one replica each, and
/// `min.insync.replicas=1`: their production values need three brokers). Existing topics are
/// left as they are.
///
/// # Errors
/// When the broker refuses a topic for another reason than its existence.
pub async fn create_topics(
    bootstrap: &str,
    properties: &[(String, String)],
    topics: &[TopicToCreate],
) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in properties {
        config.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let mut topic = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(1));
            for (key, value) in &t.config {
                if key != "min.insync.replicas" {
                    topic = topic.set(key, value);
                }
            }
            topic.set("min.insync.replicas", "1")
        })
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("creating topic {name} failed: {code}"),
        }
    }
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
