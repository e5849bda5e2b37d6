//! A private PostgreSQL cluster, supervised with the server's own tools (`initdb`, `pg_ctl`).
//!
//! The one implementation of it in the workspace, in two forms:
//!
//! - [`TempCluster`]: a test's own cluster in a new temporary directory, on a free loopback
//!   port, which the test may crash and restart; stopped and removed on drop. `shop-testkit`'s
//!   `PrivatePostgres` wraps it.
//! - [`Cluster`]: the scripts' persistent cluster in a home directory (`data/`, `server.log`,
//!   `initdb.log`, `pg_ctl.log`, the Unix socket), created on first use, started or reused,
//!   stopped on request; the `shop-postgres` binary, which `deploy/lib.sh`'s `ensure_postgres`
//!   and `stop_private_postgres` call.
//!
//! `initdb` refuses to run as root: when we are root, every server command runs as the
//! `postgres` OS user (`runuser -u postgres --`), which owns the cluster's directory. The server
//! binaries are the newest installed ([`Server::find`]), or those of the version an existing
//! cluster was made with.
//!
//! Few dependencies on purpose (anyhow only, no async runtime): `deploy/lib.sh` builds
//! `shop-postgres` before anything else, on a fresh machine too.

mod cluster;
mod port;
mod server;
mod temp;

pub use cluster::{Cluster, Down, Start, Status, Up};
pub use port::free_port;
pub use server::{NoServerBinaries, Server, is_root, postgres_user_exists};
pub use temp::TempCluster;

/// `postgres://postgres@127.0.0.1:<port>/postgres`: the URL of a private cluster (trust
/// authentication on loopback, user and database `postgres`).
pub fn url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}
