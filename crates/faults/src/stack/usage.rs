//! Each service's CPU and memory while a scenario runs, from `/proc`: the peaks show whether an
//! outage made a service spin (a retry storm) or grow (requests or messages piling up).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Procs;

/// The peaks per service binary: resident memory (bytes) and CPU (share of one core, over each
/// sampling interval).
#[derive(Debug, Default, Clone, Copy)]
pub struct Peak {
    pub rss: u64,
    pub cpu: f64,
}

pub struct Usage {
    peaks: Arc<Mutex<BTreeMap<&'static str, Peak>>>,
    task: tokio::task::JoinHandle<()>,
}

const EVERY: Duration = Duration::from_millis(500);

impl Usage {
    /// Samples every process of `procs` every half second until [`Usage::stop`].
    pub fn spawn(procs: Procs) -> Usage {
        let peaks: Arc<Mutex<BTreeMap<&'static str, Peak>>> = Arc::default();
        let task = tokio::spawn({
            let peaks = peaks.clone();
            async move {
                // CPU ticks per pid at the previous sample.
                let mut last: BTreeMap<u32, (u64, Instant)> = BTreeMap::new();
                let ticks_per_s = 100.0; // USER_HZ on Linux
                loop {
                    tokio::time::sleep(EVERY).await;
                    let pids: Vec<(&'static str, u32)> =
                        procs.lock().expect("procs lock").iter().filter_map(|((c, _), child)| child.id().map(|pid| (c.binary(), pid))).collect();
                    let mut peaks = peaks.lock().expect("peaks lock");
                    for (binary, pid) in pids {
                        let (Some(ticks), Some(rss)) = (cpu_ticks(pid), rss_bytes(pid)) else { continue };
                        let peak = peaks.entry(binary).or_default();
                        peak.rss = peak.rss.max(rss);
                        if let Some((before, at)) = last.insert(pid, (ticks, Instant::now())) {
                            let seconds = at.elapsed().as_secs_f64();
                            if seconds > 0.0 {
                                peak.cpu = peak.cpu.max(ticks.saturating_sub(before) as f64 / ticks_per_s / seconds);
                            }
                        }
                    }
                }
            }
        });
        Usage { peaks, task }
    }

    /// `gateway 41 MB 35%, …`: each service's peaks so far.
    pub fn summary(&self) -> Vec<(String, Peak)> {
        self.peaks.lock().expect("peaks lock").iter().map(|(b, p)| ((*b).to_owned(), *p)).collect()
    }

    /// Forgets the peaks so far: what follows is measured alone (the fault, not the start-up).
    pub fn reset(&self) {
        self.peaks.lock().expect("peaks lock").clear();
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

/// utime + stime of `pid`, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the `)` that ends it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Resident memory of `pid` (`/proc/<pid>/statm` field 2, in pages of 4 KiB).
fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    Some(statm.split_whitespace().nth(1)?.parse::<u64>().ok()? * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_ticks_and_memory() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_ticks(pid).is_some());
    }
}
