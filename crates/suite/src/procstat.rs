//! CPU time and memory of the machine's processes, grouped by program, read from `/proc`: what
//! the benchmark reports as "CPU per order by process". Linux only (elsewhere every sample is
//! empty).
//!
//! Why by program and from `/proc` rather than from each service's metrics: the broker,
//! PostgreSQL's backends and the load generator have no such metrics, and the question the
//! report answers is where the machine's two cores go, kernel time included.

use std::collections::BTreeMap;
use std::fs;

/// Linux reports CPU times in clock ticks of `USER_HZ`, which is 100 on every architecture
/// Linux runs on (the kernel converts for user space whatever its internal `HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// One program's processes at a moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// CPU seconds (user and system) its processes have used since they started.
    pub cpu_seconds: f64,
    /// Their memory, in bytes: the proportional set size (shared pages divided among the
    /// processes sharing them, so PostgreSQL's shared buffers are counted once, not once per
    /// backend), or the resident size where the kernel has no `smaps_rollup`.
    pub rss_bytes: u64,
}

/// The machine's CPU time, all cores, since boot (from `/proc/stat`), in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MachineCpu {
    pub user: f64,
    pub system: f64,
    /// Interrupts and softirqs: on this suite, mostly loopback networking.
    pub irq: f64,
    pub idle: f64,
}

impl MachineCpu {
    /// Busy seconds: everything but idle and I/O wait.
    pub fn busy(&self) -> f64 {
        self.user + self.system + self.irq
    }
}

/// Every program's usage and the machine's, at one moment.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub programs: BTreeMap<String, Usage>,
    pub machine: MachineCpu,
}

impl Sample {
    /// Reads `/proc` now. Processes that vanish while being read are skipped.
    pub fn now() -> Self {
        let mut programs: BTreeMap<String, Usage> = BTreeMap::new();
        if let Ok(entries) = fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                else {
                    continue;
                };
                if let Some((program, usage)) = process(pid) {
                    let total = programs.entry(program).or_default();
                    total.cpu_seconds += usage.cpu_seconds;
                    total.rss_bytes += usage.rss_bytes;
                }
            }
        }
        Self {
            programs,
            machine: fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| machine(&s))
                .unwrap_or_default(),
        }
    }

    /// The CPU seconds each program used from `earlier` to `self`. A program whose processes
    /// exited in between shows less than it used (their time is gone with them): the suite's
    /// processes live through a benchmark, PostgreSQL's backends are pooled.
    pub fn cpu_since(&self, earlier: &Sample) -> BTreeMap<String, f64> {
        self.programs
            .iter()
            .map(|(program, usage)| {
                let before = earlier.programs.get(program).map_or(0.0, |u| u.cpu_seconds);
                (program.clone(), (usage.cpu_seconds - before).max(0.0))
            })
            .filter(|(_, seconds)| *seconds > 0.0)
            .collect()
    }
}

/// The program a process runs, and its usage: `None` for a kernel thread or a process gone.
fn process(pid: &str) -> Option<(String, Usage)> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let program = program(&cmdline)?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let cpu_seconds = cpu_of_stat(&stat)?;
    let rss_bytes = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| kib_field(&s, "Pss:"))
        .or_else(|| {
            fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| kib_field(&s, "VmRSS:"))
        })
        .unwrap_or(0);
    Some((
        program,
        Usage {
            cpu_seconds,
            rss_bytes,
        },
    ))
}

/// A program's name from its command line: the basename of its first argument, with
/// PostgreSQL's retitled backends (`postgres: user db …`) counted as `postgres` and a JVM
/// running Apache Kafka as `kafka` (the JVM's name says nothing).
fn program(cmdline: &[u8]) -> Option<String> {
    let mut args = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
    let first = String::from_utf8_lossy(args.next()?).into_owned();
    if first.starts_with("postgres:") {
        return Some("postgres".into());
    }
    let first = first
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let base = first.rsplit('/').next().unwrap_or(&first).to_owned();
    if base == "java" && cmdline.windows(11).any(|w| w == b"kafka.Kafka") {
        return Some("kafka".into());
    }
    Some(base)
}

/// User plus system time of a `/proc/<pid>/stat` line, in seconds. Fields 14 and 15, counted
/// after the command name's closing parenthesis (the name may hold spaces and parentheses).
fn cpu_of_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}

/// A field in kB of `/proc/<pid>/status` or `smaps_rollup` (`VmRSS:`, `Pss:`), in bytes.
fn kib_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal …
fn machine(stat: &str) -> Option<MachineCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let t: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0) / TICKS_PER_SECOND)
        .collect();
    let at = |i: usize| t.get(i).copied().unwrap_or(0.0);
    Some(MachineCpu {
        user: at(0) + at(1),
        system: at(2),
        irq: at(5) + at(6),
        idle: at(3) + at(4),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_named_by_their_binary_postgres_and_kafka_by_what_they_are() {
        assert_eq!(
            program(b"/work/target/release/order-service\0serve\0").as_deref(),
            Some("order-service")
        );
        assert_eq!(
            program(b"postgres: postgres orders 127.0.0.1(4242) idle\0\0\0").as_deref(),
            Some("postgres")
        );
        assert_eq!(
            program(b"/usr/bin/java\0-Xmx1g\0-cp\0a.jar\0kafka.Kafka\0server.properties\0")
                .as_deref(),
            Some("kafka")
        );
        assert_eq!(
            program(b"/usr/bin/java\0-jar\0other.jar\0").as_deref(),
            Some("java")
        );
        assert_eq!(program(b""), None, "a kernel thread has no command line");
    }

    #[test]
    fn cpu_is_read_after_the_command_name_whatever_it_holds() {
        let stat = "4242 (odd) name) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 8 0";
        assert_eq!(cpu_of_stat(stat), Some(3.25));
        assert_eq!(cpu_of_stat("garbage"), None);
    }

    #[test]
    fn rss_and_machine_time_are_parsed() {
        assert_eq!(
            kib_field("Name:\tx\nVmRSS:\t  2048 kB\nThreads: 3\n", "VmRSS:"),
            Some(2 * 1024 * 1024)
        );
        assert_eq!(
            kib_field("Rss:  100 kB\nPss:  40 kB\nPss_Anon: 30 kB\n", "Pss:"),
            Some(40 * 1024)
        );
        let m = machine("cpu  100 20 50 1000 30 5 15 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(m.user, 1.2);
        assert_eq!(m.system, 0.5);
        assert_eq!(m.irq, 0.2);
        assert_eq!(m.idle, 10.3);
        assert!((m.busy() - 1.9).abs() < 1e-9);
    }

    #[test]
    fn this_process_is_seen_using_cpu_and_memory() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let before = Sample::now();
        let mut x = 0_u64;
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = Sample::now();
        let me = program(&fs::read("/proc/self/cmdline").unwrap()).unwrap();
        let used = after.cpu_since(&before).get(&me).copied().unwrap_or(0.0);
        assert!(used >= 0.1, "{me} used {used} s spinning 0.3 s");
        assert!(after.programs[&me].rss_bytes > 1024 * 1024);
        assert!(after.machine.busy() > before.machine.busy());
    }
}
