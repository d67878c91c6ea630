//! The process around the load generator: descriptor limit, source
//! sockets, the wall clock, and what /proc says about the server.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::{TcpSocket, TcpStream};

/// Raises RLIMIT_NOFILE towards `want` (root may lift the hard limit up to
/// `fs.nr_open`); returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(lim.rlim_max);
    let target = want.min(nr_open).max(lim.rlim_cur);
    let raised = libc::rlimit { rlim_cur: target, rlim_max: target.max(lim.rlim_max) };
    // SAFETY: setrlimit only reads the struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        // Not allowed to lift the hard limit: take the soft one up to it.
        let soft = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) };
    }
    // SAFETY: as the first call.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_cur
}

/// Connects to `target`, from `source` when given. The port is chosen at
/// connect time (IP_BIND_ADDRESS_NO_PORT), so each source address has its
/// own ephemeral range towards each server port, and sockets left in
/// TIME_WAIT by an earlier run towards another port do not use it up.
pub async fn connect(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let sock = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        let one: libc::c_int = 1;
        // SAFETY: a valid descriptor we own, an int option value that
        // outlives the call, and its exact size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = sock.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Wall clock in ns since the Unix epoch. The publisher and every client
/// live in this one process, so send and receive stamps share a clock.
#[inline]
pub fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// CPU time of a process (`self` for this one), user and system, seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub user_s: f64,
    pub system_s: f64,
}

impl Cpu {
    pub fn total(&self) -> f64 {
        self.user_s + self.system_s
    }

    pub fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu { user_s: self.user_s - earlier.user_s, system_s: self.system_s - earlier.system_s }
    }

    pub fn add(&self, other: &Cpu) -> Cpu {
        Cpu { user_s: self.user_s + other.user_s, system_s: self.system_s + other.system_s }
    }
}

/// utime and stime from /proc/<pid>/stat.
pub fn cpu(pid: &str) -> Option<Cpu> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// Each thread's name (`comm`) and CPU time, from /proc/<pid>/task: which
/// part of a server (its event lane, its connections' workers) the time
/// went to. A thread that ended is missing here but counted by `cpu`.
pub fn thread_cpu(pid: &str) -> Vec<(String, Cpu)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let dir = t.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            Some((name.trim().to_string(), stat_cpu(dir.join("stat").to_str()?)?))
        })
        .collect()
}

/// The whole machine's busy and stolen (by the hypervisor) time, in
/// seconds summed over cores, from the first line of /proc/stat.
pub fn machine_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let (idle, iowait, steal) = (*ticks.get(3)?, *ticks.get(4)?, *ticks.get(7)?);
    let busy = ticks.iter().take(8).sum::<u64>() - idle - iowait - steal;
    let tck = clock_ticks();
    Some((busy as f64 / tck, steal as f64 / tck))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    }
}

fn stat_cpu(path: &str) -> Option<Cpu> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let tck = clock_ticks();
    Some(Cpu { user_s: utime as f64 / tck, system_s: stime as f64 / tck })
}

/// One `kB` line of /proc/<pid>/status: VmRSS, VmHWM, ...
pub fn status_kb(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// ISO 8601 UTC with microseconds, e.g. `2026-11-22T23:17:42.123456Z`.
pub fn iso8601(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let micros = (ns % 1_000_000_000) / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z", sod / 3600, (sod / 60) % 60, sod % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_of_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(iso8601(1_709_210_096_789_012_000), "2024-02-29T12:34:56.789012Z");
    }

    #[test]
    fn reads_its_own_process() {
        assert!(cpu("self").is_some());
        assert!(thread_cpu("self").iter().any(|(name, _)| !name.is_empty()));
        assert!(machine_cpu().is_some_and(|(busy, steal)| busy > 0.0 && steal >= 0.0));
        assert!(status_kb("self", "VmRSS").is_some_and(|kb| kb > 0));
        assert!(status_kb("self", "VmRS").is_none(), "a prefix of a key is not the key");
    }
}
