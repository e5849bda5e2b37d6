//! `shop-postgres`: the scripts' private PostgreSQL cluster (crates/pgcluster), which
//! `deploy/lib.sh`'s `ensure_postgres` and `stop_private_postgres` call.

use shop_pgcluster::{Cluster, Down, NoServerBinaries, Start, Status};
use std::path::PathBuf;
use std::process::ExitCode;

const HELP: &str = "\
shop-postgres: the private PostgreSQL cluster of the shop suite's scripts (crates/pgcluster)

Usage:
  shop-postgres up     (--home DIR | --state-dir DIR) [--port PORT]
  shop-postgres down   (--home DIR | --state-dir DIR)
  shop-postgres status (--home DIR | --state-dir DIR)
  shop-postgres bindir (--home DIR | --state-dir DIR)
  shop-postgres --help

Commands:
  up      Makes the cluster run and prints its URL, postgres://postgres@127.0.0.1:PORT/postgres,
          on stdout (one line; what was done on stderr). Creates it with initdb if DIR/data has
          no PG_VERSION (user postgres, trust authentication, UTF8, locale C); reuses it if it
          runs already, on the port it listens on (whatever --port says); else writes
          data/shop.conf (127.0.0.1:PORT, the Unix socket in DIR, max_connections 300,
          shared_buffers 256MB, max_wal_size 2GB) and starts it (pg_ctl start, up to 60 s).
  down    Stops the cluster if it runs (pg_ctl stop -m fast, up to 60 s).
  status  Prints `running on 127.0.0.1:PORT`, `stopped` or `no cluster`.
  bindir  Prints the directory of the server binaries `up` uses: those of the cluster's
          version, else the newest installed (/usr/lib/postgresql/*/bin, /usr/pgsql-*/bin,
          /usr/local/pgsql/bin, pg_config --bindir).

Options:
  --home DIR       The cluster's home: data/, server.log, initdb.log, pg_ctl.log, the socket.
  --state-dir DIR  Home DIR/pg, as deploy/lib.sh uses it (SHOP_STATE_DIR); when we are root and
                   the postgres OS user cannot enter DIR, /var/tmp/shop-pg-<cksum of DIR>.
  --port PORT      The port to start the cluster on (default 55432).
  -h, --help       This help.

When run as root, the server's commands run as the postgres OS user (runuser), which owns the
home (mode 700): initdb refuses root.

Exit status: 0 done (status: running); 1 error; 2 bad usage; 3 no PostgreSQL server binaries
installed (up, bindir), or the cluster is stopped (status); 4 no cluster (status).
";

const DEFAULT_PORT: u16 = 55432;

#[derive(Debug)]
struct Args {
    command: String,
    home: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    port: Option<u16>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut command = None;
    let mut home = None;
    let mut state_dir = None;
    let mut port = None;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" | "help" => return Ok(None),
            "--home" => home = Some(PathBuf::from(value("--home")?)),
            "--state-dir" => state_dir = Some(PathBuf::from(value("--state-dir")?)),
            "--port" => {
                let text = value("--port")?;
                port = Some(
                    text.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| format!("--port {text}: not a port number"))?,
                );
            }
            "up" | "down" | "status" | "bindir" if command.is_none() => command = Some(flag),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    let command = command.ok_or("no command (up, down, status or bindir)")?;
    if home.is_some() == state_dir.is_some() {
        return Err("give exactly one of --home DIR and --state-dir DIR".into());
    }
    if port.is_some() && command != "up" {
        return Err(format!("--port is for up, not {command}"));
    }
    Ok(Some(Args {
        command,
        home,
        state_dir,
        port,
    }))
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(usage) => {
            eprintln!("shop-postgres: error: {usage} (shop-postgres --help)");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shop-postgres: error: {e:#}");
            if e.downcast_ref::<NoServerBinaries>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let cluster = match (&args.home, &args.state_dir) {
        (Some(home), _) => Cluster::new(home),
        (None, Some(state)) => Cluster::for_state_dir(state),
        (None, None) => unreachable!("parse checks"),
    };
    let data = cluster.data_dir();
    let data = data.display();
    match args.command.as_str() {
        "up" => {
            let asked = args.port.unwrap_or(DEFAULT_PORT);
            if cluster.version().is_none()
                && let Some(state) = cluster.unreachable_state_dir()
            {
                eprintln!(
                    "shop-postgres: the postgres OS user cannot enter {}; the cluster lives in {} instead",
                    state.display(),
                    cluster.home().display()
                );
            }
            let up = cluster.up(asked)?;
            let server = format!(
                "PostgreSQL {}, {}",
                up.server.major(),
                up.server.bindir().display()
            );
            let port = up.port;
            match up.start {
                Start::Created => eprintln!(
                    "shop-postgres: created a private cluster in {data} and started it on 127.0.0.1:{port} ({server})"
                ),
                Start::Started => eprintln!(
                    "shop-postgres: started the private cluster in {data} on 127.0.0.1:{port} ({server})"
                ),
                Start::Reused if port != asked => eprintln!(
                    "shop-postgres: the private cluster in {data} runs already, on 127.0.0.1:{port} \
                     (not {asked}: stop it first to move it; {server})"
                ),
                Start::Reused => eprintln!(
                    "shop-postgres: the private cluster in {data} runs already, on 127.0.0.1:{port} ({server})"
                ),
            }
            println!("{}", up.url());
        }
        "down" => match cluster.down()? {
            Down::NoCluster => eprintln!("shop-postgres: no private cluster in {data}"),
            Down::NotRunning => {
                eprintln!("shop-postgres: the private cluster in {data} is not running")
            }
            Down::Stopped => eprintln!("shop-postgres: stopped the private cluster in {data}"),
        },
        "status" => match cluster.status()? {
            Status::Running { port } => match port {
                Some(port) => println!("running on 127.0.0.1:{port}"),
                None => println!("running"),
            },
            Status::Stopped => {
                println!("stopped");
                return Ok(ExitCode::from(3));
            }
            Status::NoCluster => {
                println!("no cluster");
                return Ok(ExitCode::from(4));
            }
        },
        "bindir" => println!("{}", cluster.server()?.bindir().display()),
        other => unreachable!("parse accepts no command {other}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn args(line: &str) -> Result<Option<super::Args>, String> {
        parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn the_command_line() {
        let up = args("up --home /x --port 5555").unwrap().unwrap();
        assert_eq!((up.command.as_str(), up.port), ("up", Some(5555)));
        let down = args("down --state-dir=/s").unwrap().unwrap();
        assert_eq!(down.state_dir.as_deref(), Some(std::path::Path::new("/s")));
        assert!(args("--help").unwrap().is_none());
        assert!(args("up").unwrap_err().contains("--home"));
        assert!(args("up --home /x --state-dir /y").is_err());
        assert!(
            args("up --home /x --port 0")
                .unwrap_err()
                .contains("not a port")
        );
        assert!(args("down --home /x --port 5").is_err());
        assert!(
            args("sideways --home /x")
                .unwrap_err()
                .contains("unexpected")
        );
        assert!(args("up --home").unwrap_err().contains("needs a value"));
        assert!(args("--home /x").unwrap_err().contains("no command"));
    }
}
