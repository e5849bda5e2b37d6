//! The installed PostgreSQL server binaries, and who runs them.

use anyhow::{Context as _, bail};
use std::fmt;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The server binaries (`initdb`, `pg_ctl`, `postgres`) of one PostgreSQL major version, run as
/// the `postgres` OS user when we are root.
#[derive(Clone, Debug)]
pub struct Server {
    bindir: PathBuf,
    major: String,
    as_postgres: bool,
}

/// No PostgreSQL server binaries are installed at all ([`Server::find`] without a version).
#[derive(Debug)]
pub struct NoServerBinaries;

impl fmt::Display for NoServerBinaries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in {}: install Debian's \
             postgresql package (apt-get install postgresql)",
            WHERE
        )
    }
}

impl std::error::Error for NoServerBinaries {}

const WHERE: &str =
    "/usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, /usr/local/pgsql/bin or pg_config --bindir";

impl Server {
    /// The newest installed server binaries, or with `Some(major)` those of that major version
    /// (as `PG_VERSION` spells it: `15`, `9.6`). Looked for in `/usr/lib/postgresql/*/bin`
    /// (Debian), `/usr/pgsql-*/bin` (PGDG RPMs), `/usr/local/pgsql/bin` (a source build) and
    /// `pg_config --bindir`; the version is what `pg_ctl --version` says.
    ///
    /// # Errors
    /// [`NoServerBinaries`] when none are installed, another error when none of major version
    /// `want` are.
    pub fn find(want: Option<&str>) -> anyhow::Result<Self> {
        let mut best: Option<(Vec<u32>, String, PathBuf)> = None;
        for bindir in candidates() {
            let complete = ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|b| is_executable(&bindir.join(b)));
            if !complete {
                continue;
            }
            let Some(version) = pg_ctl_version(&bindir) else {
                continue;
            };
            let major = major_of(&version);
            if let Some(want) = want {
                if major == want {
                    return Ok(Self::new(bindir, major));
                }
            } else if best.as_ref().is_none_or(|(v, _, _)| version > *v) {
                best = Some((version, major, bindir));
            }
        }
        match (want, best) {
            (Some(want), _) => bail!(
                "no PostgreSQL {want} server binaries in {WHERE} (apt-get install postgresql-{want})"
            ),
            (None, Some((_, major, bindir))) => Ok(Self::new(bindir, major)),
            (None, None) => Err(NoServerBinaries.into()),
        }
    }

    fn new(bindir: PathBuf, major: String) -> Self {
        Self {
            bindir,
            major,
            as_postgres: is_root(),
        }
    }

    /// The directory of `initdb`, `pg_ctl` and `postgres`.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The major version: `15`, `9.6`.
    pub fn major(&self) -> &str {
        &self.major
    }

    /// Whether the server's commands run as the `postgres` OS user (we are root).
    pub fn as_postgres(&self) -> bool {
        self.as_postgres
    }

    /// A server binary (`initdb`, `pg_ctl`), as the `postgres` OS user when we are root, in `/`
    /// (a working directory that user may not be able to enter makes the tools complain).
    /// `initdb` of a cluster in `data`: superuser `postgres`, trusted on loopback, UTF-8, the C
    /// locale (the same collation on every machine).
    pub(crate) fn initdb(&self, data: &std::path::Path) -> Command {
        let mut command = self.command("initdb");
        command.arg("-D").arg(data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]);
        command
    }

    pub(crate) fn command(&self, binary: &str) -> Command {
        let path = self.bindir.join(binary);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.current_dir("/").stdin(Stdio::null());
        command
    }

    /// `pg_ctl -D DATA ARGS...`.
    pub(crate) fn pg_ctl(&self, data: &Path, args: &[&str]) -> Command {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(data).args(args);
        command
    }

    /// Hands `path` to the `postgres` OS user when the server runs as that user.
    pub(crate) fn give(&self, path: &Path) -> anyhow::Result<()> {
        if self.as_postgres {
            run(Command::new("chown").arg("postgres:").arg(path))
                .with_context(|| format!("handing {} to the postgres OS user", path.display()))?;
        }
        Ok(())
    }
}

fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for (parent, prefix, tail) in [
        ("/usr/lib/postgresql", "", "bin"),
        ("/usr", "pgsql-", "bin"),
    ] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.path().join(tail))
            .collect();
        found.sort();
        dirs.extend(found);
    }
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    if let Ok(output) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if output.status.success() && !dir.is_empty() {
            dirs.push(PathBuf::from(dir));
        }
    }
    let mut seen = Vec::new();
    dirs.retain(|d| {
        let new = d.is_dir() && !seen.contains(d);
        seen.push(d.clone());
        new
    });
    dirs
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The numeric components of `pg_ctl --version` (`pg_ctl (PostgreSQL) 15.8 (Debian ...)`).
fn pg_ctl_version(bindir: &Path) -> Option<Vec<u32>> {
    let output = Command::new(bindir.join("pg_ctl"))
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&output.stdout))
}

fn parse_version(text: &str) -> Option<Vec<u32>> {
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let numeric: String = word
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let parts: Vec<u32> = numeric.split('.').map_while(|p| p.parse().ok()).collect();
    (!parts.is_empty()).then_some(parts)
}

/// The major version as `PG_VERSION` spells it: `15` from 15.8, `9.6` from 9.6.24.
fn major_of(version: &[u32]) -> String {
    match version {
        [first, second, ..] if *first < 10 => format!("{first}.{second}"),
        [first, ..] => first.to_string(),
        [] => String::new(),
    }
}

/// Whether this process runs as root (its effective user id is 0).
pub fn is_root() -> bool {
    // /proc/self belongs to the process's effective user.
    match std::fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0"),
    }
}

/// Whether the `postgres` OS user exists.
pub fn postgres_user_exists() -> bool {
    Command::new("id")
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `command`, its output captured; an error carrying that output when it fails.
pub(crate) fn run(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim_end(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(output)
}

/// The last `lines` lines of a log file, framed, for an error message.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if text.trim().is_empty() {
        return format!("({} is empty)", path.display());
    }
    let all: Vec<&str> = text.lines().collect();
    format!(
        "--- last lines of {} ---\n{}\n---",
        path.display(),
        all[all.len().saturating_sub(lines)..].join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_as_pg_version_spells_them() {
        let v = parse_version("pg_ctl (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)\n").unwrap();
        assert_eq!(v, [15, 8]);
        assert_eq!(major_of(&v), "15");
        let old = parse_version("pg_ctl (PostgreSQL) 9.6.24\n").unwrap();
        assert_eq!(major_of(&old), "9.6");
        assert_eq!(
            major_of(&parse_version("pg_ctl (PostgreSQL) 17devel").unwrap()),
            "17"
        );
        assert!(parse_version("pg_ctl (PostgreSQL)").is_none());
        assert!(parse_version("pg_ctl (PostgreSQL) 16.1").unwrap() > v);
    }

    #[test]
    fn finds_the_installed_server() {
        let server = Server::find(None).expect("PostgreSQL server binaries installed");
        assert!(server.bindir().join("initdb").exists());
        let same = Server::find(Some(server.major())).unwrap();
        assert_eq!(same.bindir(), server.bindir());
        let missing = Server::find(Some("3")).unwrap_err();
        assert!(missing.to_string().contains("postgresql-3"), "{missing}");
    }
}
