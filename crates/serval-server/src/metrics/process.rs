//! `process_*` metrics of the server process, read from Linux `/proc` at scrape time.

use prometheus_client::registry::Registry;

use super::{FloatCounter, FloatGauge};

/// `process_*` metrics of this process (Linux `/proc`; nothing elsewhere).
pub(super) fn process_metrics(registry: &mut Registry) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // Clock ticks per second: 100 on every Linux this runs on.
    let ticks = 100.0;
    if let (Some(utime), Some(stime)) = (field(11), field(12)) {
        let cpu = FloatCounter::default();
        cpu.inc_by((utime + stime) / ticks);
        registry.register("process_cpu_seconds", "User and system CPU time", cpu);
    }
    if let Some(threads) = field(17) {
        let g = FloatGauge::default();
        g.set(threads);
        registry.register("process_threads", "OS threads", g);
    }
    if let Some(rss_pages) = field(21) {
        let g = FloatGauge::default();
        g.set(rss_pages * 4096.0);
        registry.register("process_resident_memory_bytes", "Resident memory", g);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let g = FloatGauge::default();
        g.set(fds.count() as f64);
        registry.register("process_open_fds", "Open file descriptors", g);
    }
    if let (Some(start), Ok(uptime)) = (field(19), std::fs::read_to_string("/proc/uptime")) {
        let boot = uptime
            .split_whitespace()
            .next()
            .and_then(|u| u.parse::<f64>().ok())
            .map(|up| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
                    - up
            });
        if let Some(boot) = boot {
            let g = FloatGauge::default();
            g.set(boot + start / ticks);
            registry.register(
                "process_start_time_seconds",
                "Start time since the Unix epoch",
                g,
            );
        }
    }
}
