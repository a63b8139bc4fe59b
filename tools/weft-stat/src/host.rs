//! The operating-system and hardware levels beside weft's own counters:
//! what the kernel and the CPU say about the cores and threads weft runs
//! on, read at scrape time from `/proc`, `/sys` and `perf_event_open`.
//!
//! Metric names follow node_exporter where a metric is the same thing
//! (`node_cpu_seconds_total{cpu,mode}`, `node_network_*_total{device}`,
//! `node_memory_Hugepagesize_bytes`), so dashboards and habits carry
//! over. Where node_exporter's name is camelCase (`node_netstat_Udp_*`,
//! `node_memory_HugePages_*`) `promtool check metrics` refuses it, so those
//! are `weft_host_udp_*_total` and `weft_host_huge_pages*`, with
//! node_exporter's name in their HELP. The rest are weft's, in base units.
//!
//! | level | metric | from |
//! |---|---|---|
//! | OS | `node_cpu_seconds_total{cpu,mode}` | `/proc/stat` |
//! | OS | `weft_thread_cpu_seconds_total`, `weft_thread_run_delay_seconds_total`, `weft_thread_context_switches_total{kind}`, `weft_thread_migrations_total` per agent thread | `/proc/PID/task/TID/{schedstat,status,sched}` |
//! | OS | `weft_host_udp_{in_datagrams,out_datagrams,in_errors,receive_buffer_errors,send_buffer_errors}_total` | `/proc/net/snmp` |
//! | OS | `weft_udp_socket_drops_total{local}` per weft process socket | `/proc/net/udp`, `/proc/PID/fd` |
//! | OS | `weft_process_locked_memory_bytes`, `weft_process_huge_pages_bytes`; `weft_host_huge_pages`, `weft_host_huge_pages_free`, `node_memory_Hugepagesize_bytes` | `/proc/PID/status`, `smaps_rollup`, `/proc/meminfo` |
//! | hardware | `weft_cpu_cycles_total`, `weft_cpu_instructions_total`, `weft_cpu_llc_misses_total{cpu}` | `perf_event_open` hardware events, where the machine has a PMU |
//! | hardware | `weft_cpu_context_switches_total`, `weft_cpu_migrations_total`, `weft_cpu_page_faults_total{cpu}` | `perf_event_open` software events |
//! | hardware | `node_network_{receive,transmit}_{packets,drop,errs}_total{device}` | `/sys/class/net/*/statistics` |
//!
//! Where the machine has no hardware PMU (a VM without one), the hardware
//! events are said once to be unavailable ("unavailable: no hardware
//! PMU") and `weft_hardware_counters_available` is 0: nothing false is
//! exported in their place.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// The UDP counters of `/proc/net/snmp` exported: its key, the metric,
/// what it counts.
const UDP_SNMP: &[(&str, &str, &str)] = &[
    (
        "InDatagrams",
        "weft_host_udp_in_datagrams_total",
        "UDP datagrams the host received",
    ),
    (
        "OutDatagrams",
        "weft_host_udp_out_datagrams_total",
        "UDP datagrams the host sent",
    ),
    (
        "InErrors",
        "weft_host_udp_in_errors_total",
        "UDP datagrams the host could not deliver",
    ),
    (
        "RcvbufErrors",
        "weft_host_udp_receive_buffer_errors_total",
        "UDP datagrams dropped because a socket's receive buffer was full",
    ),
    (
        "SndbufErrors",
        "weft_host_udp_send_buffer_errors_total",
        "UDP datagrams dropped because a socket's send buffer was full",
    ),
];

/// An agent thread of a weft process, from its counters file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentThread {
    /// `node="…",pid="…"`: the labels every weft series starts with.
    pub node_labels: String,
    pub pid: u32,
    pub agent: u64,
    pub name: String,
    pub tid: u32,
}

/// A weft process, for its sockets and memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub node_labels: String,
    pub pid: u32,
}

/// The cumulative CPU times of one core, in ticks of `USER_HZ`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub cpu: u32,
    /// (mode, ticks) in `/proc/stat`'s order.
    pub modes: Vec<(&'static str, u64)>,
}

/// The modes of a `/proc/stat` cpu line, in order.
const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// The per-core lines of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Vec<CpuTimes> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let cpu = w.next()?.strip_prefix("cpu")?.parse().ok()?;
            let modes = MODES
                .iter()
                .zip(w)
                .filter_map(|(m, v)| Some((*m, v.parse().ok()?)))
                .collect();
            Some(CpuTimes { cpu, modes })
        })
        .collect()
}

/// `/proc/PID/task/TID/schedstat`: time on the CPU and waiting on a run
/// queue, ns.
pub fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut w = text.split_whitespace();
    Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
}

/// A `Key: value` field of a `/proc` status-like file (the first number).
pub fn status_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A `key : value` field of `/proc/PID/task/TID/sched` (present with
/// `CONFIG_SCHED_DEBUG`).
pub fn sched_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().parse::<f64>().ok().map(|v| v as u64))?
    })
}

/// The `Udp:` counters of `/proc/net/snmp`, by name.
pub fn parse_snmp_udp(text: &str) -> BTreeMap<String, u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return BTreeMap::new();
    };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
        .collect()
}

/// The sockets of `/proc/net/udp`: inode -> (local address, drops).
pub fn parse_proc_net_udp(text: &str) -> BTreeMap<u64, (String, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref ptr drops
            let local = w.get(1)?;
            let inode: u64 = w.get(9)?.parse().ok()?;
            let drops: u64 = w.get(12)?.parse().ok()?;
            Some((inode, (hex_addr(local)?, drops)))
        })
        .collect()
}

/// `0100007F:9C40` as `127.0.0.1:40000`.
fn hex_addr(s: &str) -> Option<String> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The address is in network order read as a little-endian word.
    let b = ip.to_le_bytes();
    Some(format!("{}.{}.{}.{}:{port}", b[0], b[1], b[2], b[3]))
}

/// The socket inodes a process holds (`/proc/PID/fd/*` -> `socket:[N]`).
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let link = std::fs::read_link(e.ok()?.path()).ok()?;
        let s = link.to_str()?;
        s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

/// The hardware events of one core, where there is a PMU.
struct HardwareCore {
    cpu: usize,
    cycles: perf_event::Counter,
    instructions: perf_event::Counter,
    llc_misses: perf_event::Counter,
}

/// The software events of one core.
struct SoftwareCore {
    cpu: usize,
    context_switches: perf_event::Counter,
    migrations: perf_event::Counter,
    page_faults: perf_event::Counter,
}

/// Three event counts of one core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerCpu {
    pub cpu: usize,
    pub values: [u64; 3],
}

/// Why hardware counters are not exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pmu {
    Available,
    /// The reason, as said once on stderr.
    Unavailable(String),
}

/// The host collector: perf counters opened once, read at each scrape.
pub struct Host {
    hardware: Mutex<Vec<HardwareCore>>,
    software: Mutex<Vec<SoftwareCore>>,
    pub pmu: Pmu,
    /// Why software events are not exported, if they are not.
    pub software_unavailable: Option<String>,
    clk_tck: f64,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("pmu", &self.pmu).finish()
    }
}

/// The machine's cores (online ones, from /proc/stat).
fn cores() -> Vec<usize> {
    std::fs::read_to_string("/proc/stat")
        .map(|t| parse_proc_stat(&t).iter().map(|c| c.cpu as usize).collect())
        .unwrap_or_default()
}

fn counter(
    event: impl perf_event::events::Event + 'static,
    cpu: usize,
) -> std::io::Result<perf_event::Counter> {
    // Kernel and hypervisor included: a context switch happens in the
    // kernel, and the crate excludes both by default.
    let mut c = perf_event::Builder::new(event)
        .one_cpu(cpu)
        .any_pid()
        .exclude_kernel(false)
        .exclude_hv(false)
        .build()?;
    c.enable()?;
    Ok(c)
}

impl Host {
    /// Opens the per-core perf counters. Says once on stderr what is not
    /// available and why.
    pub fn new() -> Self {
        use perf_event::events::{Hardware, Software};
        let cores = cores();
        let mut hardware = Vec::new();
        let mut pmu = Pmu::Available;
        for &cpu in &cores {
            let made = (|| {
                Ok::<_, std::io::Error>(HardwareCore {
                    cpu,
                    cycles: counter(Hardware::CPU_CYCLES, cpu)?,
                    instructions: counter(Hardware::INSTRUCTIONS, cpu)?,
                    llc_misses: counter(Hardware::CACHE_MISSES, cpu)?,
                })
            })();
            match made {
                Ok(h) => hardware.push(h),
                Err(e) => {
                    let why = match e.raw_os_error() {
                        Some(libc_enoent) if libc_enoent == 2 || libc_enoent == 95 => {
                            "unavailable: no hardware PMU".to_string()
                        }
                        _ => format!("unavailable: {e}"),
                    };
                    pmu = Pmu::Unavailable(why);
                    hardware.clear();
                    break;
                }
            }
        }
        if let Pmu::Unavailable(why) = &pmu {
            eprintln!("weft-stat: hardware counters (cycles, instructions, LLC misses) {why}; exporting weft_hardware_counters_available 0 and none of them");
        }
        let mut software = Vec::new();
        let mut software_unavailable = None;
        for &cpu in &cores {
            let made = (|| {
                Ok::<_, std::io::Error>(SoftwareCore {
                    cpu,
                    context_switches: counter(Software::CONTEXT_SWITCHES, cpu)?,
                    migrations: counter(Software::CPU_MIGRATIONS, cpu)?,
                    page_faults: counter(Software::PAGE_FAULTS, cpu)?,
                })
            })();
            match made {
                Ok(s) => software.push(s),
                Err(e) => {
                    let why = format!("unavailable: {e}");
                    eprintln!("weft-stat: per-core software events (context switches, migrations, page faults) {why}");
                    software_unavailable = Some(why);
                    software.clear();
                    break;
                }
            }
        }
        let clk_tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .map_or(100.0, |v| v as f64);
        Self {
            hardware: Mutex::new(hardware),
            software: Mutex::new(software),
            pmu,
            software_unavailable,
            clk_tck,
        }
    }

    /// Appends the OS and hardware families for these agent threads and
    /// processes to `out`.
    pub fn metrics(&self, out: &mut String, threads: &[AgentThread], procs: &[Process]) {
        self.os_metrics(out, threads, procs);
        self.hardware_metrics(out);
    }

    fn os_metrics(&self, out: &mut String, threads: &[AgentThread], procs: &[Process]) {
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            family(
                out,
                "node_cpu_seconds_total",
                "counter",
                "Seconds the CPUs spent in each mode (as node_exporter's).",
            );
            for c in parse_proc_stat(&stat) {
                for (mode, ticks) in &c.modes {
                    let _ = writeln!(
                        out,
                        "node_cpu_seconds_total{{cpu=\"{}\",mode=\"{mode}\"}} {}",
                        c.cpu,
                        *ticks as f64 / self.clk_tck
                    );
                }
            }
        }
        // Per agent thread.
        let mut cpu = String::new();
        let mut delay = String::new();
        let mut switches = String::new();
        let mut migrations = String::new();
        for t in threads {
            let base = format!("/proc/{}/task/{}", t.pid, t.tid);
            let labels = format!(
                "{},agent=\"{}\",name=\"{}\",thread=\"{}\"",
                t.node_labels,
                t.agent,
                crate::label_value(&t.name),
                t.tid
            );
            if let Some((on_cpu, waited)) = std::fs::read_to_string(format!("{base}/schedstat"))
                .ok()
                .and_then(|s| parse_schedstat(&s))
            {
                let _ = writeln!(
                    cpu,
                    "weft_thread_cpu_seconds_total{{{labels}}} {}",
                    on_cpu as f64 / 1e9
                );
                let _ = writeln!(
                    delay,
                    "weft_thread_run_delay_seconds_total{{{labels}}} {}",
                    waited as f64 / 1e9
                );
            }
            if let Ok(status) = std::fs::read_to_string(format!("{base}/status")) {
                for (kind, key) in [
                    ("voluntary", "voluntary_ctxt_switches"),
                    ("involuntary", "nonvoluntary_ctxt_switches"),
                ] {
                    if let Some(n) = status_field(&status, key) {
                        let _ = writeln!(
                            switches,
                            "weft_thread_context_switches_total{{{labels},kind=\"{kind}\"}} {n}"
                        );
                    }
                }
            }
            if let Some(n) = std::fs::read_to_string(format!("{base}/sched"))
                .ok()
                .and_then(|s| sched_field(&s, "se.nr_migrations"))
            {
                let _ = writeln!(migrations, "weft_thread_migrations_total{{{labels}}} {n}");
            }
        }
        for (name, help, body) in [
            (
                "weft_thread_cpu_seconds_total",
                "Time an agent thread ran on a CPU (schedstat).",
                cpu,
            ),
            (
                "weft_thread_run_delay_seconds_total",
                "Time an agent thread was runnable but waited for a CPU (schedstat): its run-queue delay.",
                delay,
            ),
            (
                "weft_thread_context_switches_total",
                "Context switches of an agent thread: voluntary (it blocked or parked) and involuntary (it was preempted).",
                switches,
            ),
            (
                "weft_thread_migrations_total",
                "Times an agent thread moved to another CPU (a pinned agent's stays put).",
                migrations,
            ),
        ] {
            family(out, name, "counter", help);
            out.push_str(&body);
        }
        // UDP: the kernel's counters (node_exporter's camelCase names for
        // them fail `promtool check metrics`), and each weft socket's drops.
        if let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") {
            let udp = parse_snmp_udp(&snmp);
            for (key, name, what) in UDP_SNMP {
                if let Some(v) = udp.get(*key) {
                    family(
                        out,
                        name,
                        "counter",
                        &format!("{what} (/proc/net/snmp Udp {key}; node_exporter: node_netstat_Udp_{key})."),
                    );
                    let _ = writeln!(out, "{name} {v}");
                }
            }
        }
        let sockets = std::fs::read_to_string("/proc/net/udp")
            .map(|t| parse_proc_net_udp(&t))
            .unwrap_or_default();
        family(
            out,
            "weft_udp_socket_drops_total",
            "counter",
            "Datagrams the kernel dropped at a weft process's UDP socket (/proc/net/udp drops): its receive buffer was full.",
        );
        for p in procs {
            let mut seen = std::collections::BTreeSet::new();
            for inode in socket_inodes(p.pid) {
                if let Some((local, drops)) = sockets.get(&inode) {
                    if seen.insert(local.clone()) {
                        let _ = writeln!(
                            out,
                            "weft_udp_socket_drops_total{{{},local=\"{local}\"}} {drops}",
                            p.node_labels
                        );
                    }
                }
            }
        }
        // Memory: locked and huge pages.
        family(
            out,
            "weft_process_locked_memory_bytes",
            "gauge",
            "Memory a weft process has locked (mlock: its rings with ShmOptions::mlock), VmLck.",
        );
        let mut huge = String::new();
        for p in procs {
            if let Some(kb) = std::fs::read_to_string(format!("/proc/{}/status", p.pid))
                .ok()
                .and_then(|s| status_field(&s, "VmLck"))
            {
                let _ = writeln!(
                    out,
                    "weft_process_locked_memory_bytes{{{}}} {}",
                    p.node_labels,
                    kb * 1024
                );
            }
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", p.pid)) {
                let kb: u64 = ["AnonHugePages", "ShmemPmdMapped", "FilePmdMapped"]
                    .iter()
                    .filter_map(|k| status_field(&s, k))
                    .sum();
                let _ = writeln!(
                    huge,
                    "weft_process_huge_pages_bytes{{{}}} {}",
                    p.node_labels,
                    kb * 1024
                );
            }
        }
        family(
            out,
            "weft_process_huge_pages_bytes",
            "gauge",
            "Memory a weft process maps with huge pages (smaps_rollup: anonymous, shared and file).",
        );
        out.push_str(&huge);
        if let Ok(mem) = std::fs::read_to_string("/proc/meminfo") {
            for (key, name, help) in [
                (
                    "HugePages_Total",
                    "weft_host_huge_pages",
                    "Huge pages reserved (/proc/meminfo HugePages_Total; node_exporter: node_memory_HugePages_Total).",
                ),
                (
                    "HugePages_Free",
                    "weft_host_huge_pages_free",
                    "Reserved huge pages not in use (/proc/meminfo HugePages_Free; node_exporter: node_memory_HugePages_Free).",
                ),
            ] {
                if let Some(v) = status_field(&mem, key) {
                    family(out, name, "gauge", help);
                    let _ = writeln!(out, "{name} {v}");
                }
            }
            if let Some(kb) = status_field(&mem, "Hugepagesize") {
                family(
                    out,
                    "node_memory_Hugepagesize_bytes",
                    "gauge",
                    "The size of a huge page (as node_exporter's).",
                );
                let _ = writeln!(out, "node_memory_Hugepagesize_bytes {}", kb * 1024);
            }
        }
    }

    /// Per core: cycles, instructions, LLC misses so far (empty without a
    /// PMU).
    pub fn hardware_counts(&self) -> Vec<PerCpu> {
        let Ok(mut hw) = self.hardware.lock() else {
            return Vec::new();
        };
        hw.iter_mut()
            .filter_map(|h| {
                Some(PerCpu {
                    cpu: h.cpu,
                    values: [
                        h.cycles.read().ok()?,
                        h.instructions.read().ok()?,
                        h.llc_misses.read().ok()?,
                    ],
                })
            })
            .collect()
    }

    /// Per core: context switches, migrations, page faults so far.
    pub fn software_counts(&self) -> Vec<PerCpu> {
        let Ok(mut sw) = self.software.lock() else {
            return Vec::new();
        };
        sw.iter_mut()
            .filter_map(|s| {
                Some(PerCpu {
                    cpu: s.cpu,
                    values: [
                        s.context_switches.read().ok()?,
                        s.migrations.read().ok()?,
                        s.page_faults.read().ok()?,
                    ],
                })
            })
            .collect()
    }

    fn hardware_metrics(&self, out: &mut String) {
        family(
            out,
            "weft_hardware_counters_available",
            "gauge",
            "1 if the CPU's hardware counters (cycles, instructions, LLC misses) are read; 0 where the machine has no PMU (a VM without one), and none of them is exported.",
        );
        let _ = writeln!(
            out,
            "weft_hardware_counters_available {}",
            u8::from(self.pmu == Pmu::Available)
        );
        let hw = self.hardware_counts();
        if !hw.is_empty() {
            for (i, (name, help)) in [
                (
                    "weft_cpu_cycles_total",
                    "CPU cycles per core (perf hardware event).",
                ),
                (
                    "weft_cpu_instructions_total",
                    "Instructions retired per core (perf hardware event): over cycles, the IPC.",
                ),
                (
                    "weft_cpu_llc_misses_total",
                    "Last-level cache misses per core (perf hardware event).",
                ),
            ]
            .into_iter()
            .enumerate()
            {
                family(out, name, "counter", help);
                for c in &hw {
                    let _ = writeln!(out, "{name}{{cpu=\"{}\"}} {}", c.cpu, c.values[i]);
                }
            }
        }
        let sw = self.software_counts();
        if !sw.is_empty() {
            for (i, (name, help)) in [
                ("weft_cpu_context_switches_total", "Context switches per core (perf software event)."),
                ("weft_cpu_migrations_total", "Tasks migrated onto each core (perf software event)."),
                ("weft_cpu_page_faults_total", "Page faults per core (perf software event): a weft hot path makes none once its memory is prefaulted."),
            ]
            .into_iter()
            .enumerate()
            {
                family(out, name, "counter", help);
                for c in &sw {
                    let _ = writeln!(out, "{name}{{cpu=\"{}\"}} {}", c.cpu, c.values[i]);
                }
            }
        }
        // NICs.
        let Ok(devs) = std::fs::read_dir("/sys/class/net") else {
            return;
        };
        let mut devices: Vec<String> = devs
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        devices.sort();
        for (file, name, help) in [
            (
                "rx_packets",
                "node_network_receive_packets_total",
                "Packets received by the interface (as node_exporter's).",
            ),
            (
                "tx_packets",
                "node_network_transmit_packets_total",
                "Packets sent by the interface (as node_exporter's).",
            ),
            (
                "rx_dropped",
                "node_network_receive_drop_total",
                "Received packets the interface dropped (as node_exporter's).",
            ),
            (
                "tx_dropped",
                "node_network_transmit_drop_total",
                "Outgoing packets the interface dropped (as node_exporter's).",
            ),
            (
                "rx_errors",
                "node_network_receive_errs_total",
                "Receive errors of the interface (as node_exporter's).",
            ),
            (
                "tx_errors",
                "node_network_transmit_errs_total",
                "Transmit errors of the interface (as node_exporter's).",
            ),
        ] {
            family(out, name, "counter", help);
            for d in &devices {
                if let Some(v) =
                    std::fs::read_to_string(format!("/sys/class/net/{d}/statistics/{file}"))
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                {
                    let _ = writeln!(out, "{name}{{device=\"{}\"}} {v}", crate::label_value(d));
                }
            }
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  10 0 5 100 0 0 0 0 0 0\ncpu0 6 0 3 50 1 2 3 4 0 0\ncpu1 4 0 2 50 0 0 0 0 0 0\nintr 1 2\n";
        let cpus = parse_proc_stat(stat);
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].cpu, 0);
        assert_eq!(cpus[0].modes[7], ("steal", 4));
        assert_eq!(
            parse_schedstat("1030932029 282458994 2486\n"),
            Some((1030932029, 282458994))
        );
        let status = "Name:\tx\nVmLck:\t     128 kB\nvoluntary_ctxt_switches:\t2078\n";
        assert_eq!(status_field(status, "VmLck"), Some(128));
        assert_eq!(status_field(status, "voluntary_ctxt_switches"), Some(2078));
        assert_eq!(status_field(status, "nonvoluntary_ctxt_switches"), None);
        let sched = "se.sum_exec_runtime                          :          1030.932029\nse.nr_migrations                             :                  550\n";
        assert_eq!(sched_field(sched, "se.nr_migrations"), Some(550));
        let snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 10 1 2 30 4 5\n";
        let udp = parse_snmp_udp(snmp);
        assert_eq!(udp["RcvbufErrors"], 4);
        assert_eq!(udp["OutDatagrams"], 30);
        let net = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  1: 0100007F:9C40 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 12345 2 0000000000000000 7\n";
        assert_eq!(
            parse_proc_net_udp(net).get(&12345),
            Some(&("127.0.0.1:40000".to_string(), 7))
        );
    }
}
