//! A test's own cluster, which the test may crash and restart.

use crate::port::free_port;
use crate::server::{Server, log_tail, run};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// How many times [`TempCluster::start`] picks another port when the one it picked was taken
/// before the server bound it.
const START_ATTEMPTS: usize = 3;

/// A running PostgreSQL cluster in a temporary directory of its own, on a free loopback port
/// ([`free_port`]); stopped (immediately) and deleted on drop.
///
/// The server on 127.0.0.1:5432 is shared by every test and developer on the machine, so
/// nothing may stop it; a test that restarts PostgreSQL under load gets this instead.
/// [`TempCluster::restart_immediate`] is a crash restart (`pg_ctl stop -m immediate`: every
/// backend is killed without a checkpoint, so the next start runs crash recovery, as after a
/// power cut of the server process).
#[derive(Debug)]
pub struct TempCluster {
    server: Server,
    dir: PathBuf,
    port: u16,
}

impl TempCluster {
    /// Creates a cluster in a new temporary directory (`initdb`, as the `postgres` OS user when
    /// we are root) and starts it on a free loopback port, TCP only, fsync off.
    ///
    /// # Errors
    /// No server binaries installed (`apt-get install postgresql`), `initdb` or the start failed
    /// (the error carries the end of the server log).
    pub fn start() -> anyhow::Result<Self> {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let server = Server::find(None)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::path::absolute(std::env::temp_dir())
            .context("the temporary directory")?
            .join(format!(
                "shop-test-pg-{}-{nanos:08x}-{}",
                std::process::id(),
                SEQUENCE.fetch_add(1, Ordering::SeqCst)
            ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cluster = Self {
            server,
            dir,
            port: 0,
        };
        // From here on, a failure drops `cluster`, which removes the directory.
        // The postgres OS user owns the cluster; /tmp itself is open to it.
        cluster.server.give(&cluster.dir)?;
        let data = cluster.data_dir();
        run(cluster
            .server
            .initdb(&data)
            // No fsync of the new files: the cluster lives as long as one test.
            .arg("--no-sync"))
        .context("initdb")?;
        let conf = data.join("postgresql.conf");
        let initial = std::fs::read_to_string(&conf).context("reading postgresql.conf")?;
        for attempt in 1..=START_ATTEMPTS {
            cluster.port = free_port();
            std::fs::write(&conf, format!("{initial}{}", settings(cluster.port)))
                .context("writing postgresql.conf")?;
            let logged = std::fs::metadata(cluster.log_file()).map_or(0, |m| m.len());
            match cluster.start_again() {
                Ok(()) => return Ok(cluster),
                // Someone took the port between free_port's check and the server's bind.
                Err(_)
                    if attempt < START_ATTEMPTS && port_was_taken(&cluster.log_file(), logged) => {}
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        crate::url(self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The cluster's directory (`data/`, `server.log`), removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A crash restart: [`TempCluster::stop_immediate`], then [`TempCluster::start_again`].
    ///
    /// # Errors
    /// When `pg_ctl` fails.
    pub fn restart_immediate(&self) -> anyhow::Result<()> {
        self.stop_immediate()?;
        self.start_again()
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, without a checkpoint;
    /// every client connection is cut.
    ///
    /// # Errors
    /// When `pg_ctl` fails.
    pub fn stop_immediate(&self) -> anyhow::Result<()> {
        run(&mut self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"]))
            .map(drop)
            .context("pg_ctl stop -m immediate")
    }

    /// Starts the stopped cluster again (crash recovery first, after an immediate stop) and
    /// waits until it accepts connections.
    ///
    /// # Errors
    /// When it does not start within a minute (the error carries the end of the server log).
    pub fn start_again(&self) -> anyhow::Result<()> {
        let log = self.log_file();
        let log_arg = log.display().to_string();
        run(&mut self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log_arg]))
            .map(drop)
            .map_err(|e| {
                anyhow::anyhow!("{e:#}; the end of the server log:\n{}", log_tail(&log, 20))
            })
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        self.server.pg_ctl(&self.data_dir(), args)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self
                .pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a test's cluster appends to its postgresql.conf.
fn settings(port: u16) -> String {
    format!(
        "\n# shop-pgcluster (crates/pgcluster/src/temp.rs): a test's own cluster.\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         # TCP only: no socket file whose directory the postgres user must reach.\n\
         unix_socket_directories = ''\n\
         max_connections = 200\n\
         shared_buffers = 32MB\n\
         # An immediate stop kills the server processes, not the machine: what was written\n\
         # is in the page cache and crash recovery replays the WAL from there. Skipping the\n\
         # fsyncs spares the disk that every test shares, and changes nothing about that.\n\
         fsync = off\n"
    )
}

/// Whether the server log, past its first `from` bytes, says the port was taken.
fn port_was_taken(log: &Path, from: u64) -> bool {
    let text = std::fs::read(log).unwrap_or_default();
    let new = text
        .get(usize::try_from(from).unwrap_or(0)..)
        .unwrap_or_default();
    String::from_utf8_lossy(new).contains("Address already in use")
}

#[cfg(test)]
mod tests {
    use super::TempCluster;
    use std::process::Command;

    fn answers(url: &str) -> bool {
        Command::new("psql")
            .args(["-X", "-w", "-q", "-t", "-A", "-c", "select 1", url])
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn a_test_cluster_starts_crash_restarts_and_is_removed() {
        let cluster = TempCluster::start().expect("a temporary cluster");
        assert!((20_000..32_768).contains(&cluster.port()));
        assert_eq!(
            cluster.url(),
            format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port())
        );
        assert!(answers(&cluster.url()), "{}", cluster.url());
        cluster.stop_immediate().unwrap();
        assert!(!answers(&cluster.url()));
        cluster.start_again().unwrap();
        assert!(answers(&cluster.url()));
        cluster.restart_immediate().unwrap();
        assert!(answers(&cluster.url()));
        let log = std::fs::read_to_string(cluster.log_file()).unwrap();
        assert!(log.contains("database system was interrupted"), "{log}");
        let dir = cluster.dir().to_path_buf();
        let url = cluster.url();
        drop(cluster);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(!answers(&url));
    }
}
