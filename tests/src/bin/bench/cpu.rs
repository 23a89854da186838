//! Which process holds the CPU during a measurement: user + system CPU
//! seconds of each process of interest (this bench, the workers, the
//! MongoDB server, Redis), read from `/proc/<pid>/stat` before and after.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on
/// Linux x86_64 and arm64).
const TICKS_PER_SEC: f64 = 100.0;

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The pid of the first process whose command name is `comm`.
pub fn pid_of(comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (name.trim() == comm).then_some(pid)
    })
}

/// CPU use of named processes from [`CpuMeter::start`] to [`CpuMeter::report`].
pub struct CpuMeter {
    procs: Vec<(String, u32, u64)>,
    started: Instant,
}

impl CpuMeter {
    /// Starts measuring `procs` (label, pid); the bench itself is added as
    /// `bench` (with the in-process API when it runs one).
    pub fn start(mut procs: Vec<(String, u32)>) -> Self {
        procs.insert(0, ("bench".into(), std::process::id()));
        for (label, comm) in [("mongodb", "secantusd-rs"), ("redis", "redis-server")] {
            if let Some(pid) = pid_of(comm) {
                procs.push((label.into(), pid));
            }
        }
        Self {
            procs: procs
                .into_iter()
                .filter_map(|(l, pid)| Some((l, pid, cpu_ticks(pid)?)))
                .collect(),
            started: Instant::now(),
        }
    }

    /// `label s (share %), ...` of CPU seconds since the start, against the
    /// machine's cores × wall time.
    pub fn report(&self) -> String {
        let wall = self.started.elapsed().as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let mut total = 0.0;
        let parts: Vec<String> = self
            .procs
            .iter()
            .map(|(label, pid, before)| {
                let used = cpu_ticks(*pid).map_or(0.0, |t| t.saturating_sub(*before) as f64)
                    / TICKS_PER_SEC;
                total += used;
                format!("{label} {used:.2} s")
            })
            .collect();
        format!(
            "{} = {total:.2} CPU s of {:.2} available ({cores:.0} cores x {wall:.2} s wall, {:.0} % busy)",
            parts.join(", "),
            cores * wall,
            100.0 * total / (cores * wall)
        )
    }
}
