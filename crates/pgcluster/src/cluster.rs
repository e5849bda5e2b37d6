//! The scripts' persistent cluster in a home directory: created on first use, started or
//! reused, stopped on request.

use crate::server::{Server, is_root, log_tail, postgres_user_exists, run};
use anyhow::{Context as _, bail};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The line `up` appends to a new cluster's postgresql.conf: the settings it writes at each
/// start go in `shop.conf` next to it.
const INCLUDE: &str = "\n# shop-postgres (crates/pgcluster): the settings of the private cluster\ninclude_if_exists 'shop.conf'\n";

/// A Unix socket path longer than 107 bytes cannot be bound: the socket goes in the home
/// directory only when that path is at most this long.
const MAX_SOCKET_DIR: usize = 80;

/// A private cluster in a home directory: `data/` (the cluster), `server.log`, `initdb.log`,
/// `pg_ctl.log`, the Unix socket. When we are root, the `postgres` OS user owns the home (mode
/// 700) and runs the server.
#[derive(Clone, Debug)]
pub struct Cluster {
    home: PathBuf,
    /// The state directory the postgres OS user cannot enter, when [`Cluster::for_state_dir`]
    /// chose a home elsewhere.
    unreachable_state_dir: Option<PathBuf>,
}

/// What [`Cluster::up`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Made with `initdb`, then started.
    Created,
    /// Started (it was stopped).
    Started,
    /// It was running already, started by an earlier call: left as it was.
    Reused,
}

/// A running cluster, as [`Cluster::up`] left it.
#[derive(Clone, Debug)]
pub struct Up {
    /// The port it listens on (for [`Start::Reused`], the port it was started on, whatever
    /// port was asked).
    pub port: u16,
    pub start: Start,
    /// The server binaries it runs from.
    pub server: Server,
}

impl Up {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        crate::url(self.port)
    }
}

/// What [`Cluster::down`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Down {
    /// There is no cluster in the home directory.
    NoCluster,
    /// The cluster was not running.
    NotRunning,
    /// Stopped (`pg_ctl stop -m fast`).
    Stopped,
}

/// What [`Cluster::status`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    NoCluster,
    Stopped,
    /// Running, on the port of its `postmaster.pid` (`None` if that file says none).
    Running {
        port: Option<u16>,
    },
}

impl Cluster {
    /// The cluster whose home is `home` (made absolute).
    pub fn new(home: impl Into<PathBuf>) -> Self {
        let home = home.into();
        Self {
            home: std::path::absolute(&home).unwrap_or(home),
            unreachable_state_dir: None,
        }
    }

    /// The private cluster of a state directory (`deploy/lib.sh`'s `SHOP_STATE_DIR`): home
    /// `STATE/pg`; but when we are root and the postgres OS user cannot enter `STATE` (a
    /// parent closed to it, e.g. a checkout under /root), `/var/tmp/shop-pg-<N>` with N the
    /// POSIX `cksum` of STATE's absolute path (the name lib.sh has always used, so that a
    /// cluster made by it is found again).
    pub fn for_state_dir(state: &Path) -> Self {
        let state = state
            .canonicalize()
            .or_else(|_| std::path::absolute(state))
            .unwrap_or_else(|_| state.to_path_buf());
        if is_root() && postgres_user_exists() && !postgres_can_enter(&state) {
            let sum = posix_cksum(state.as_os_str().as_bytes());
            Self {
                home: PathBuf::from(format!("/var/tmp/shop-pg-{sum}")),
                unreachable_state_dir: Some(state),
            }
        } else {
            Self::new(state.join("pg"))
        }
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `HOME/data`, the cluster itself.
    pub fn data_dir(&self) -> PathBuf {
        self.home.join("data")
    }

    /// `HOME/server.log`.
    pub fn log_file(&self) -> PathBuf {
        self.home.join("server.log")
    }

    /// When [`Cluster::for_state_dir`] chose a home outside the state directory because the
    /// postgres OS user cannot enter it: that state directory.
    pub fn unreachable_state_dir(&self) -> Option<&Path> {
        self.unreachable_state_dir.as_deref()
    }

    /// The major version the cluster was made with (`data/PG_VERSION`), if there is one.
    pub fn version(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir().join("PG_VERSION"))
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The server binaries [`Cluster::up`] would use: those of the cluster's version, or the
    /// newest installed when there is no cluster yet.
    ///
    /// # Errors
    /// [`crate::NoServerBinaries`] when there is no cluster and no server installed; another
    /// error when the cluster's version is not installed.
    pub fn server(&self) -> anyhow::Result<Server> {
        match self.version() {
            None => Server::find(None),
            Some(version) => Server::find(Some(&version)).map_err(|_| {
                anyhow::anyhow!(
                    "the private cluster in {} is PostgreSQL {version}, whose server binaries are \
                     not installed (apt-get install postgresql-{version}), or remove {}",
                    self.data_dir().display(),
                    self.home.display()
                )
            }),
        }
    }

    /// Makes the cluster running and says on which port: creates it with `initdb` if there is
    /// none (user `postgres`, trust authentication, UTF8, locale C), reuses it if it runs
    /// already (on the port it listens on, whatever `port` says), else writes `data/shop.conf`
    /// (127.0.0.1:`port`, the Unix socket in the home directory, max_connections 300,
    /// shared_buffers 256MB, max_wal_size 2GB) and starts it (`pg_ctl start`, waiting up to a
    /// minute until it accepts connections).
    ///
    /// # Errors
    /// No server binaries, `initdb` failed (with the end of `initdb.log`), the server did not
    /// start (with `pg_ctl`'s output and the end of `server.log`).
    pub fn up(&self, port: u16) -> anyhow::Result<Up> {
        let server = self.server()?;
        if server.as_postgres() && !postgres_user_exists() {
            bail!(
                "we are root and there is no postgres OS user to run the server as (initdb refuses \
                 root): useradd --system --user-group --home-dir /var/lib/postgresql postgres"
            );
        }
        let home = &self.home;
        std::fs::create_dir_all(home)
            .with_context(|| format!("cannot create {}", home.display()))?;
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot chmod {}", home.display()))?;
        server.give(home)?;
        let data = self.data_dir();

        let mut start = Start::Started;
        if self.version().is_none() {
            self.initdb(&server)?;
            start = Start::Created;
        }

        if let Status::Running { port: running } = self.status_with(&server) {
            return Ok(Up {
                port: running.unwrap_or(port),
                start: Start::Reused,
                server,
            });
        }

        let shop_conf = data.join("shop.conf");
        std::fs::write(&shop_conf, self.shop_conf(port))
            .with_context(|| format!("cannot write {}", shop_conf.display()))?;
        server.give(&shop_conf)?;
        let log = self.log_file();
        let pg_ctl_log = home.join("pg_ctl.log");
        let out = std::fs::File::create(&pg_ctl_log)
            .with_context(|| format!("cannot write {}", pg_ctl_log.display()))?;
        let status = server
            .pg_ctl(&data, &["-l"])
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .context("running pg_ctl start")?;
        if !status.success() {
            let said = std::fs::read_to_string(&pg_ctl_log).unwrap_or_default();
            bail!(
                "the private PostgreSQL did not start on 127.0.0.1:{port} (log: {}); if the port \
                 is taken, choose another with SHOP_PG_PORT (shop-postgres up --port)\n\
                 --- pg_ctl start ({status}) ---\n{}\n{}",
                log.display(),
                said.trim_end(),
                log_tail(&log, 25)
            );
        }
        Ok(Up {
            port,
            start,
            server,
        })
    }

    /// Stops the cluster if it runs (`pg_ctl stop -m fast`: clients are disconnected, a
    /// checkpoint is written).
    ///
    /// # Errors
    /// The cluster's server binaries are missing, or `pg_ctl stop` failed.
    pub fn down(&self) -> anyhow::Result<Down> {
        if self.version().is_none() {
            return Ok(Down::NoCluster);
        }
        let server = self.server()?;
        if !matches!(self.status_with(&server), Status::Running { .. }) {
            return Ok(Down::NotRunning);
        }
        run(&mut server.pg_ctl(&self.data_dir(), &["-m", "fast", "-w", "-t", "60", "stop"]))
            .with_context(|| format!("pg_ctl stop failed for {}", self.data_dir().display()))?;
        Ok(Down::Stopped)
    }

    /// Whether there is a cluster, and whether it runs (`pg_ctl status`).
    ///
    /// # Errors
    /// The cluster's server binaries are missing.
    pub fn status(&self) -> anyhow::Result<Status> {
        if self.version().is_none() {
            return Ok(Status::NoCluster);
        }
        Ok(self.status_with(&self.server()?))
    }

    fn status_with(&self, server: &Server) -> Status {
        let data = self.data_dir();
        let running = server
            .pg_ctl(&data, &["status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !running {
            return Status::Stopped;
        }
        // Line 4 of postmaster.pid is the port the server listens on.
        let port = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|pid| pid.lines().nth(3).and_then(|l| l.trim().parse().ok()));
        Status::Running { port }
    }

    fn initdb(&self, server: &Server) -> anyhow::Result<()> {
        let data = self.data_dir();
        let log = self.home.join("initdb.log");
        // A directory without PG_VERSION is what an interrupted initdb left.
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("cannot remove the incomplete {}", data.display()))?;
        }
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot write {}", log.display()))?;
        let status = server
            .initdb(&data)
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .context("running initdb")?;
        if !status.success() {
            bail!(
                "initdb failed ({status}; log: {})\n{}",
                log.display(),
                log_tail(&log, 25)
            );
        }
        let conf = data.join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| std::io::Write::write_all(&mut f, INCLUDE.as_bytes()))
            .with_context(|| format!("cannot write {}", conf.display()))
    }

    /// The settings written at each start.
    fn shop_conf(&self, port: u16) -> String {
        let home = self.home.to_string_lossy();
        let socket_dir = if home.len() <= MAX_SOCKET_DIR {
            home.replace('\'', "''")
        } else {
            String::new()
        };
        format!(
            "# Written by shop-postgres (crates/pgcluster) at each start of the private cluster.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             max_connections = 300\n\
             shared_buffers = 256MB\n\
             max_wal_size = 2GB\n"
        )
    }
}

/// Whether the postgres OS user can enter `dir` (`test -x`, as that user).
fn postgres_can_enter(dir: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(dir)
        .current_dir("/")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The checksum of POSIX `cksum` (CRC-32, polynomial 0x04C11DB7, the length appended).
fn posix_cksum(data: &[u8]) -> u32 {
    fn feed(crc: u32, byte: u8) -> u32 {
        let mut crc = crc ^ (u32::from(byte) << 24);
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x04C1_1DB7
            };
        }
        crc
    }
    let mut crc = data.iter().fold(0, |crc, &b| feed(crc, b));
    let mut len = data.len();
    while len != 0 {
        crc = feed(crc, (len & 0xff) as u8);
        len >>= 8;
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::free_port;

    /// A home in a directory of its own under the temporary directory; the cluster stopped and
    /// the directory removed on drop.
    struct Scratch {
        dir: PathBuf,
        cluster: Cluster,
    }

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("shop-pgcluster-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let cluster = Cluster::new(dir.join("home"));
            Self { dir, cluster }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = self.cluster.down();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn psql(url: &str, sql: &str) -> String {
        let output = Command::new("psql")
            .args(["-X", "-w", "-q", "-t", "-A", "-c", sql, url])
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .expect("psql runs");
        assert!(
            output.status.success(),
            "psql {url} -c {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    #[test]
    fn a_persistent_cluster_is_created_reused_stopped_and_keeps_its_data() {
        let scratch = Scratch::new("persistent");
        let cluster = &scratch.cluster;
        assert_eq!(cluster.status().unwrap(), Status::NoCluster);
        assert_eq!(cluster.down().unwrap(), Down::NoCluster);

        let first = free_port();
        let up = cluster.up(first).expect("created and started");
        assert_eq!((up.start, up.port), (Start::Created, first));
        assert_eq!(
            up.url(),
            format!("postgres://postgres@127.0.0.1:{first}/postgres")
        );
        assert_eq!(cluster.version().as_deref(), Some(up.server.major()));
        assert_eq!(
            cluster.status().unwrap(),
            Status::Running { port: Some(first) }
        );
        psql(&up.url(), "create database kept_across_restarts");
        let conf = std::fs::read_to_string(cluster.data_dir().join("shop.conf")).unwrap();
        assert!(conf.contains(&format!("port = {first}\n")), "{conf}");
        assert!(conf.contains("max_connections = 300\n"), "{conf}");
        let home = cluster.home().to_string_lossy().into_owned();
        let socket = if home.len() <= MAX_SOCKET_DIR {
            home.as_str()
        } else {
            ""
        };
        assert!(
            conf.contains(&format!("unix_socket_directories = '{socket}'\n")),
            "{conf}"
        );
        let mode = std::fs::metadata(cluster.home())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        // A second up, asking for another port: the running cluster, on its port.
        let again = cluster.up(free_port()).expect("reused");
        assert_eq!((again.start, again.port), (Start::Reused, first));

        assert_eq!(cluster.down().unwrap(), Down::Stopped);
        assert_eq!(cluster.status().unwrap(), Status::Stopped);
        assert_eq!(cluster.down().unwrap(), Down::NotRunning);

        // Started again, on another port: the same cluster, its database kept.
        let second = free_port();
        let restarted = cluster.up(second).expect("started again");
        assert_eq!((restarted.start, restarted.port), (Start::Started, second));
        assert_eq!(
            psql(
                &restarted.url(),
                "select count(*) from pg_database where datname = 'kept_across_restarts'"
            ),
            "1"
        );
        assert_eq!(cluster.down().unwrap(), Down::Stopped);
    }

    #[test]
    fn a_start_that_fails_says_why() {
        let scratch = Scratch::new("taken");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = listener.local_addr().unwrap().port();
        let error = scratch.cluster.up(taken).unwrap_err().to_string();
        assert!(error.contains("did not start on 127.0.0.1:"), "{error}");
        assert!(error.contains("SHOP_PG_PORT"), "{error}");
        assert!(error.contains("Address already in use"), "{error}");
        assert_eq!(scratch.cluster.status().unwrap(), Status::Stopped);
    }

    #[test]
    fn cksum_is_posix_cksum() {
        for text in ["", "a", "/work/main/.local", &"x".repeat(300)] {
            let output = Command::new("cksum")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write as _;
                    child.stdin.take().unwrap().write_all(text.as_bytes())?;
                    child.wait_with_output()
                })
                .expect("cksum runs");
            let want = String::from_utf8_lossy(&output.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            assert_eq!(posix_cksum(text.as_bytes()).to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn a_state_dir_closed_to_the_postgres_user_puts_the_home_under_var_tmp() {
        let open = Scratch::new("state-open");
        assert_eq!(
            Cluster::for_state_dir(&open.dir).home(),
            open.dir.canonicalize().unwrap().join("pg")
        );
        if !(is_root() && postgres_user_exists()) {
            return;
        }
        let closed = Scratch::new("state-closed");
        std::fs::set_permissions(&closed.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let state = closed.dir.join("state");
        std::fs::create_dir(&state).unwrap();
        let cluster = Cluster::for_state_dir(&state);
        let state = state.canonicalize().unwrap();
        assert_eq!(
            cluster.home(),
            Path::new(&format!(
                "/var/tmp/shop-pg-{}",
                posix_cksum(state.as_os_str().as_bytes())
            ))
        );
        assert_eq!(cluster.unreachable_state_dir(), Some(state.as_path()));
    }
}
