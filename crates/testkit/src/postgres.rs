//! A PostgreSQL cluster of one test's own, which the test may crash and restart.
//!
//! The server on 127.0.0.1:5432 is shared by every test and every developer on the machine, so
//! nothing may stop it. A test that restarts PostgreSQL under load gets this instead: `initdb`
//! into a temporary directory, `pg_ctl start` on a free loopback port (as the `postgres` OS user
//! when we are root: `initdb` refuses root), and [`PrivatePostgres::restart_immediate`] for a
//! crash restart (`pg_ctl stop -m immediate`: every backend is killed without a checkpoint, so
//! the next start runs crash recovery, as after a power cut of the server process). Stopped and
//! removed on drop. The server binaries are found as `deploy/lib.sh` finds them (the newest
//! `/usr/lib/postgresql/*/bin`).

use anyhow::{Context as _, bail};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running private PostgreSQL cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct PrivatePostgres {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Whether server commands run as the `postgres` OS user (we are root).
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Creates a cluster in a new temporary directory and starts it on a free loopback port.
    ///
    /// # Errors
    /// No server binaries installed (`apt-get install postgresql`), `initdb` or the start failed
    /// (the error carries the end of the server log).
    pub async fn start() -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(Self::start_blocking).await?
    }

    fn start_blocking() -> anyhow::Result<Self> {
        let bindir = server_bindir()?;
        let as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let dir =
            std::env::temp_dir().join(format!("shop-test-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cluster = Self {
            bindir,
            dir,
            port: free_port(),
            as_postgres,
        };
        if as_postgres {
            // The postgres OS user owns the cluster; /tmp itself is open to it.
            run(Command::new("chown").arg("postgres:").arg(&cluster.dir))?;
        }
        let data = cluster.data_dir();
        run(cluster
            .server_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ])
            // No fsync of the new files: the cluster lives as long as one test.
            .arg("--no-sync"))
        .context("initdb")?;
        let settings = format!(
            "\n# shop-testkit (crates/testkit/src/postgres.rs): a test's own cluster.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             # TCP only: no socket file whose directory the postgres user must reach.\n\
             unix_socket_directories = ''\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             # An immediate stop kills the server processes, not the machine: what was written\n\
             # is in the page cache and crash recovery replays the WAL from there. Skipping the\n\
             # fsyncs spares the disk that every test shares, and changes nothing about that.\n\
             fsync = off\n",
            port = cluster.port
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, settings.as_bytes()))
            .context("writing postgresql.conf")?;
        cluster.pg_ctl_start()?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// A crash restart: [`PrivatePostgres::stop_immediate`], then [`PrivatePostgres::start_again`].
    ///
    /// # Errors
    /// When `pg_ctl` fails.
    pub async fn restart_immediate(&self) -> anyhow::Result<()> {
        self.stop_immediate().await?;
        self.start_again().await
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, without a checkpoint;
    /// every client connection is cut.
    ///
    /// # Errors
    /// When `pg_ctl` fails.
    pub async fn stop_immediate(&self) -> anyhow::Result<()> {
        let mut command = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"]);
        tokio::task::spawn_blocking(move || run(&mut command))
            .await?
            .context("pg_ctl stop -m immediate")
    }

    /// Starts the stopped cluster again (crash recovery first, after an immediate stop) and
    /// waits until it accepts connections.
    ///
    /// # Errors
    /// When it does not start within a minute.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let mut command = self.start_command();
        let log = self.log_file();
        tokio::task::spawn_blocking(move || {
            run(&mut command)
                .map_err(|e| anyhow::anyhow!("{e:#}; the end of the server log:\n{}", tail(&log)))
        })
        .await?
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        run(&mut self.start_command()).map_err(|e| {
            anyhow::anyhow!(
                "{e:#}; the end of the server log:\n{}",
                tail(&self.log_file())
            )
        })
    }

    fn start_command(&self) -> Command {
        let log = self.log_file().display().to_string();
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log])
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = self.server_command("pg_ctl");
        command.arg("-D").arg(self.data_dir()).args(args);
        command
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A server binary, run as the `postgres` OS user when we are root.
    fn server_command(&self, binary: &str) -> Command {
        let path = self.bindir.join(binary);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest installed server binaries (`initdb`, `pg_ctl`, `postgres`).
fn server_bindir() -> anyhow::Result<PathBuf> {
    let mut best: Option<(u32, PathBuf)> = None;
    for entry in std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
    {
        let bin = entry.path().join("bin");
        let Some(major) = entry
            .file_name()
            .to_str()
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        let complete = ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| bin.join(b).exists());
        if complete && best.as_ref().is_none_or(|(m, _)| major > *m) {
            best = Some((major, bin));
        }
    }
    match best {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        ),
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
