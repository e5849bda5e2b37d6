//! A PostgreSQL cluster of one test's own, which the test may crash and restart.
//!
//! The server on 127.0.0.1:5432 is shared by every test and every developer on the machine, so
//! nothing may stop it. A test that restarts PostgreSQL under load gets this instead: `initdb`
//! into a temporary directory, `pg_ctl start` on a free loopback port (as the `postgres` OS user
//! when we are root: `initdb` refuses root), and [`PrivatePostgres::restart_immediate`] for a
//! crash restart (`pg_ctl stop -m immediate`: every backend is killed without a checkpoint, so
//! the next start runs crash recovery, as after a power cut of the server process). Stopped and
//! removed on drop.
//!
//! The supervision itself is `shop_pgcluster::TempCluster` (crates/pgcluster), the same crate
//! whose `shop-postgres` binary runs the scripts' private cluster (`deploy/lib.sh`); this is its
//! async face, each `pg_ctl` run on tokio's blocking pool.

use shop_pgcluster::TempCluster;
use std::path::PathBuf;
use std::sync::Arc;

/// A running private PostgreSQL cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct PrivatePostgres {
    cluster: Arc<TempCluster>,
}

impl PrivatePostgres {
    /// Creates a cluster in a new temporary directory and starts it on a free loopback port
    /// (20000-32767, below the kernel's ephemeral range: `shop_pgcluster::free_port`).
    ///
    /// # Errors
    /// No server binaries installed (`apt-get install postgresql`), `initdb` or the start failed
    /// (the error carries the end of the server log).
    pub async fn start() -> anyhow::Result<Self> {
        let cluster = tokio::task::spawn_blocking(TempCluster::start).await??;
        Ok(Self {
            cluster: Arc::new(cluster),
        })
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.cluster.url()
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// The server's log.
    pub fn log_file(&self) -> PathBuf {
        self.cluster.log_file()
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
        let cluster = Arc::clone(&self.cluster);
        tokio::task::spawn_blocking(move || cluster.stop_immediate()).await?
    }

    /// Starts the stopped cluster again (crash recovery first, after an immediate stop) and
    /// waits until it accepts connections.
    ///
    /// # Errors
    /// When it does not start within a minute.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let cluster = Arc::clone(&self.cluster);
        tokio::task::spawn_blocking(move || cluster.start_again()).await?
    }
}

// Drop: the last `Arc` of the cluster drops it, and `TempCluster`'s own drop stops the server
// (`pg_ctl stop -m immediate`) and removes its directory.
