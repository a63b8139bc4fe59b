//! A node's settings. Every field has a default ([`NodeConfig::default`]) and
//! states its unit; [`NodeConfig::from_toml`] reads the same settings from a file.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::agent::ThreadingMode;
use crate::idle::IdleStrategy;

/// Settings of one process's weft context.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// Directory of shared-memory files. Default: `$WEFT_DIR`, else
    /// `/dev/shm/weft-UID` ([`weft_shm::region::default_dir`]). It must be this
    /// user's and writable by nobody else (see `weft_shm::ShmOptions::dir`).
    pub dir: PathBuf,
    /// CPUs the worker agents may be pinned to: agent *i* gets
    /// `cores[i % cores.len()]`. Empty (default): not pinned.
    pub cores: Vec<usize>,
    /// Worker agents (threads in `Dedicated` mode). Default 1.
    pub agents: usize,
    /// How agents get threads. Default `Dedicated`.
    pub threading: ThreadingMode,
    /// What an agent does after a duty cycle with no work. Default
    /// [`IdleStrategy::backoff`] (safe on a machine with few cores).
    pub idle: IdleStrategy,
    /// A duty cycle longer than this counts as slow. Default 100 µs.
    pub slow_cycle: Duration,
    /// Bytes of each shared-memory channel's ring: a power of two, at least
    /// 4096. A URI's `capacity=` overrides it. Default 1 MiB.
    pub shm_capacity: usize,
    /// Subscribers one shared-memory channel can have. Default 16.
    pub shm_max_subscribers: usize,
    /// Touch every page of a ring at creation. Default on.
    pub prefault: bool,
    /// `mlock` shared-memory rings. Default off (needs `RLIMIT_MEMLOCK`).
    pub mlock: bool,
    /// Lock the whole process in memory at start (`mlockall(MCL_CURRENT |
    /// MCL_FUTURE)`): every buffer, in-process rings and socket batches
    /// included, is faulted in when allocated and never paged out, so no page
    /// fault lands on the hot path. Default off (needs `RLIMIT_MEMLOCK` or
    /// `CAP_IPC_LOCK`; it locks everything the process allocates).
    pub lock_memory: bool,
    /// A peer silent this long is gone: a shared-memory publisher, a stuck
    /// subscriber (evicted), a UDP publisher (`publisher_timeout`) or receiver.
    /// Default 1 s.
    pub liveness_timeout: Duration,
    /// How long [`Node::close`](crate::Node::close) (and a dropped node)
    /// waits for its UDP channels to send what they accepted and for their
    /// receivers to acknowledge it, before it gives up and reports exactly
    /// what was not delivered. Default 2 s.
    pub close_timeout: Duration,
    /// The slow-subscriber policy of this node's shared-memory channels (a
    /// URI's `slow_timeout=` overrides it) and of the in-process rings its
    /// UDP subscriptions read: a subscriber that keeps its publisher blocked,
    /// a whole ring behind, for this long without a break is cut loose with
    /// an explicit `Loss` and rejoins at the newest message; the others go
    /// on at their own pace. `None` (default): a subscriber that reads is
    /// waited for, however slowly (only a stuck or dead one is evicted).
    pub slow_consumer_timeout: Option<Duration>,
    /// Defaults of UDP channels; a URI parameter overrides each.
    pub udp: UdpDefaults,
    /// Bytes of the in-process rings between publications or subscriptions and
    /// the agent that runs their UDP channel. Default 1 MiB.
    pub local_ring: usize,
    /// Publications one UDP channel can have in this process. Default 8.
    pub max_publications: usize,
    /// Open the control ring (`control.PID.N` in `dir`, N its counters
    /// file's) through which tools move tasks between agents. Default on.
    pub control_ring: bool,
    /// Counter records of the node's counters file (`counters.PID.N` in
    /// `dir`, 256 bytes each), which `weft-stat` reads live; 0: no file (the
    /// counters stay in this process). Default 1024.
    pub counters: usize,
    /// The process's label in its counters file (for `weft-stat`). Default:
    /// the executable's file name.
    pub name: String,
    /// How long a cleanly closed node's counters file stays after the node
    /// closes (marked closed: its final values, loss report and error log
    /// are still scraped), before the next node started in the directory,
    /// or `weft-stat reclaim`, removes it. Default 60 s: several scrape
    /// intervals. A crashed process's file stays until `weft-stat reclaim`.
    pub counters_linger: Duration,
    /// Handle `SIGTERM` and `SIGINT` when the application has not: the
    /// node's files are removed and its counters file marked closed, as
    /// on a clean close, then the signal ends the process as before (UDP
    /// data not yet delivered is not flushed: handle the signal yourself
    /// and call `Node::close` for that). Default on.
    pub handle_signals: bool,
    /// A publication (shared memory or UDP) stamps one message in this many
    /// with its commit time (8 bytes more in the ring and on the wire, one
    /// clock read on each side), and subscriptions record the one-way
    /// latency in a histogram (`weft-stat histograms`). The clock is per
    /// host: across hosts the figure is meaningless. 0: none (the default: it costs a few
    /// percent of a shared-memory round trip; 64 is a good value when
    /// diagnosing latency).
    pub latency_sample_every: u32,
}

/// Defaults of UDP channels.
#[derive(Clone, Debug, PartialEq)]
pub struct UdpDefaults {
    /// Interface address or name to send and join on. Default `127.0.0.1`.
    pub interface: String,
    /// Multicast TTL. Default 1 (this subnet only).
    pub ttl: u8,
    /// Deliver to members on this host too. Default on.
    pub loopback: bool,
    /// Largest datagram, bytes. Default 1408.
    pub mtu: usize,
    /// Requested receive socket buffer, bytes. Default 4 MiB.
    pub rcvbuf: usize,
    /// Requested send socket buffer, bytes. Default 1 MiB.
    pub sndbuf: usize,
    /// How publications pace themselves by their receivers (the URI's
    /// `flow=`). Default `Min`: nothing is lost while receivers live.
    pub flow: weft_proto::FlowControl,
    /// Drop received datagrams on purpose, seeded (tests and demos of loss
    /// recovery only; not in the file form). Default none.
    pub loss: Option<weft_net::LossConfig>,
}

impl Default for UdpDefaults {
    fn default() -> Self {
        Self {
            interface: Ipv4Addr::LOCALHOST.to_string(),
            ttl: 1,
            loopback: true,
            mtu: 1408,
            rcvbuf: 4 << 20,
            sndbuf: 1 << 20,
            flow: weft_proto::FlowControl::Min,
            loss: None,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            dir: weft_shm::ShmOptions::default().dir,
            cores: Vec::new(),
            agents: 1,
            threading: ThreadingMode::Dedicated,
            idle: IdleStrategy::backoff(),
            slow_cycle: Duration::from_micros(100),
            shm_capacity: 1 << 20,
            shm_max_subscribers: 16,
            prefault: true,
            mlock: false,
            lock_memory: false,
            liveness_timeout: Duration::from_secs(1),
            close_timeout: Duration::from_secs(2),
            slow_consumer_timeout: None,
            udp: UdpDefaults::default(),
            local_ring: 1 << 20,
            max_publications: 8,
            control_ring: true,
            counters: 1024,
            counters_linger: Duration::from_secs(60),
            handle_signals: true,
            latency_sample_every: 0,
            // The executable's name, as `name` must be: at most 64
            // characters, none of them control characters.
            name: std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .map(|n| {
                    n.chars()
                        .filter(|c| !c.is_control())
                        .take(64)
                        .collect::<String>()
                })
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "weft".into()),
        }
    }
}

impl NodeConfig {
    /// Checks ranges; the error names the field and what it accepts.
    pub fn validate(&self) -> Result<(), String> {
        let pow2 = |v: usize| v.is_power_of_two() && (4096..=1 << 40).contains(&v);
        if self.dir.as_os_str().is_empty() {
            return Err("dir = \"\": expected a directory (leave it out for the default)".into());
        }
        if self.name.is_empty()
            || self.name.chars().count() > 64
            || self.name.chars().any(char::is_control)
        {
            return Err(format!(
                "name = {:?}: expected 1 to 64 characters, none of them control characters",
                self.name
            ));
        }
        for (key, v) in [
            ("udp.rcvbuf", self.udp.rcvbuf),
            ("udp.sndbuf", self.udp.sndbuf),
        ] {
            if !(4096..=1 << 31).contains(&v) {
                return Err(format!("{key} = {v}: expected 4096 to 2^31 bytes"));
            }
        }
        if self.slow_consumer_timeout.is_some_and(|d| d.is_zero()) {
            return Err("slow_consumer_timeout = 0: expected more than 0, or none".into());
        }
        if self.agents == 0 || self.agents > 64 {
            return Err(format!("agents = {}: expected 1 to 64", self.agents));
        }
        if !pow2(self.shm_capacity) {
            return Err(format!(
                "shm_capacity = {}: expected a power of two from 4096 to 2^40",
                self.shm_capacity
            ));
        }
        if !pow2(self.local_ring) {
            return Err(format!(
                "local_ring = {}: expected a power of two from 4096 to 2^40",
                self.local_ring
            ));
        }
        if self.shm_max_subscribers == 0 || self.shm_max_subscribers > 1024 {
            return Err(format!(
                "shm_max_subscribers = {}: expected 1 to 1024",
                self.shm_max_subscribers
            ));
        }
        if self.max_publications == 0 || self.max_publications > 256 {
            return Err(format!(
                "max_publications = {}: expected 1 to 256",
                self.max_publications
            ));
        }
        if !(576..=65504).contains(&self.udp.mtu) {
            return Err(format!("udp.mtu = {}: expected 576 to 65504", self.udp.mtu));
        }
        if self.liveness_timeout.is_zero() {
            return Err("liveness_timeout = 0: expected more than 0".into());
        }
        Ok(())
    }
}

/// The file form of [`NodeConfig`]: every key optional, unknown keys refused
/// (a typo is an error, not a silent default). Durations carry a unit.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    dir: Option<PathBuf>,
    cores: Option<Vec<usize>>,
    agents: Option<usize>,
    threading: Option<String>,
    idle: Option<String>,
    slow_cycle: Option<String>,
    shm_capacity: Option<Size>,
    shm_max_subscribers: Option<usize>,
    prefault: Option<bool>,
    mlock: Option<bool>,
    lock_memory: Option<bool>,
    liveness_timeout: Option<String>,
    close_timeout: Option<String>,
    slow_consumer_timeout: Option<String>,
    local_ring: Option<Size>,
    max_publications: Option<usize>,
    control_ring: Option<bool>,
    counters: Option<usize>,
    name: Option<String>,
    counters_linger: Option<String>,
    handle_signals: Option<bool>,
    latency_sample_every: Option<u32>,
    udp: Option<FileUdp>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUdp {
    interface: Option<String>,
    ttl: Option<u8>,
    loopback: Option<bool>,
    mtu: Option<Size>,
    rcvbuf: Option<Size>,
    sndbuf: Option<Size>,
    flow: Option<String>,
}

/// A size in a file: a number of bytes, or a string with a unit.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(self, key: &str) -> Result<usize, String> {
        match self {
            Size::Bytes(n) => usize::try_from(n).map_err(|_| format!("{key} = {n}: too large")),
            Size::Text(t) => parse_size(&t).map_err(|e| format!("{key}: {e}")),
        }
    }
}

/// A size in bytes: a whole number, optionally with a binary unit: `B`,
/// `KiB`, `MiB`, `GiB` or `TiB` (`4096`, `64KiB`, `4 MiB`). `KB`, `MB` and
/// the like are refused, not guessed (powers of 1000 or of 1024?).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| {
        format!(
            "size {s:?}: expected a whole number of bytes, with a unit if you like (64KiB, 4MiB)"
        )
    })?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        other => {
            return Err(format!(
                "size {s:?}: unit {other:?}: expected B, KiB, MiB, GiB or TiB (powers of 1024)"
            ))
        }
    };
    n.checked_mul(1 << shift)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("size {s:?}: too large"))
}

/// The environment variables [`NodeConfig::with_env`] reads, each with the
/// key it sets (same syntax as in a file; see `docs/config.md`).
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("WEFT_DIR", "dir"),
    ("WEFT_NAME", "name"),
    ("WEFT_CORES", "cores"),
    ("WEFT_AGENTS", "agents"),
    ("WEFT_THREADING", "threading"),
    ("WEFT_IDLE", "idle"),
    ("WEFT_SHM_CAPACITY", "shm_capacity"),
    ("WEFT_LIVENESS_TIMEOUT", "liveness_timeout"),
    ("WEFT_SLOW_CONSUMER_TIMEOUT", "slow_consumer_timeout"),
    ("WEFT_LATENCY_SAMPLE_EVERY", "latency_sample_every"),
    ("WEFT_UDP_INTERFACE", "udp.interface"),
    ("WEFT_UDP_TTL", "udp.ttl"),
    ("WEFT_UDP_RCVBUF", "udp.rcvbuf"),
    ("WEFT_UDP_SNDBUF", "udp.sndbuf"),
];

impl NodeConfig {
    /// This configuration with the environment's overrides of the common
    /// keys ([`ENV_KEYS`]: `WEFT_AGENTS=2`, `WEFT_IDLE=busy-spin`,
    /// `WEFT_UDP_RCVBUF=8MiB`, `WEFT_CORES=2,3` ...), each parsed as in a
    /// file; an unset or empty variable changes nothing. Precedence, lowest
    /// first: defaults, the file, the environment, what the program sets
    /// after. Errors name the variable.
    pub fn with_env(self) -> Result<Self, String> {
        self.with_vars(|k| std::env::var(k).ok())
    }

    /// [`with_env`](Self::with_env) with variables from `get` (for tests).
    pub fn with_vars(mut self, get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        for (var, key) in ENV_KEYS {
            let Some(v) = get(var).filter(|v| !v.is_empty()) else {
                continue;
            };
            let bad = |e: String| format!("{var}={v:?}: {e}");
            let dur = |v: &str| crate::idle::parse_duration(v).map_err(bad);
            let num = |v: &str| v.trim().parse::<u64>().map_err(|e| bad(e.to_string()));
            match *key {
                "dir" => self.dir = v.clone().into(),
                "name" => self.name = v.clone(),
                "cores" => {
                    self.cores = v
                        .split(',')
                        .map(|c| c.trim().parse::<usize>().map_err(|e| bad(e.to_string())))
                        .collect::<Result<_, _>>()?
                }
                "agents" => self.agents = num(&v)? as usize,
                "threading" => self.threading = v.parse().map_err(bad)?,
                "idle" => self.idle = v.parse().map_err(bad)?,
                "shm_capacity" => self.shm_capacity = parse_size(&v).map_err(bad)?,
                "liveness_timeout" => self.liveness_timeout = dur(&v)?,
                "slow_consumer_timeout" => {
                    self.slow_consumer_timeout = if v == "none" { None } else { Some(dur(&v)?) }
                }
                "latency_sample_every" => {
                    self.latency_sample_every =
                        u32::try_from(num(&v)?).map_err(|e| bad(e.to_string()))?
                }
                "udp.interface" => self.udp.interface = v.clone(),
                "udp.ttl" => {
                    self.udp.ttl = u8::try_from(num(&v)?).map_err(|e| bad(e.to_string()))?
                }
                "udp.rcvbuf" => self.udp.rcvbuf = parse_size(&v).map_err(bad)?,
                "udp.sndbuf" => self.udp.sndbuf = parse_size(&v).map_err(bad)?,
                other => unreachable!("ENV_KEYS names {other}"),
            }
        }
        self.validate().map(|()| self)
    }

    /// Reads settings from TOML text; keys left out keep their defaults. The
    /// keys are the field names; durations are strings with a unit (`"100us"`,
    /// `"1s"`); `threading` is `dedicated`, `shared` or `invoker`; `idle` is
    /// `busy-spin`, `yield`, `backoff` or `sleep:DURATION`. UDP defaults go in a
    /// `[udp]` table. Errors name the key (and for syntax, the line).
    ///
    /// ```
    /// let cfg = weft::NodeConfig::from_toml("agents = 2\nidle = \"busy-spin\"\n[udp]\nttl = 4\n")?;
    /// assert_eq!((cfg.agents, cfg.udp.ttl), (2, 4));
    /// # Ok::<(), String>(())
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let f: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let d = NodeConfig::default();
        let dur = |key: &str, v: Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(s) => crate::idle::parse_duration(&s).map_err(|e| format!("{key}: {e}")),
        };
        let size = |key: &str, v: Option<Size>, default: usize| match v {
            None => Ok(default),
            Some(v) => v.bytes(key),
        };
        let u = f.udp.unwrap_or_default();
        let cfg = NodeConfig {
            dir: f.dir.unwrap_or(d.dir),
            cores: f.cores.unwrap_or(d.cores),
            agents: f.agents.unwrap_or(d.agents),
            threading: match f.threading {
                None => d.threading,
                Some(s) => s.parse().map_err(|e| format!("threading: {e}"))?,
            },
            idle: match f.idle {
                None => d.idle,
                Some(s) => s.parse().map_err(|e| format!("idle: {e}"))?,
            },
            slow_cycle: dur("slow_cycle", f.slow_cycle, d.slow_cycle)?,
            shm_capacity: size("shm_capacity", f.shm_capacity, d.shm_capacity)?,
            shm_max_subscribers: f.shm_max_subscribers.unwrap_or(d.shm_max_subscribers),
            prefault: f.prefault.unwrap_or(d.prefault),
            mlock: f.mlock.unwrap_or(d.mlock),
            lock_memory: f.lock_memory.unwrap_or(d.lock_memory),
            liveness_timeout: dur("liveness_timeout", f.liveness_timeout, d.liveness_timeout)?,
            close_timeout: dur("close_timeout", f.close_timeout, d.close_timeout)?,
            slow_consumer_timeout: match f.slow_consumer_timeout.as_deref() {
                None | Some("none") => None,
                Some(s) => Some(
                    crate::idle::parse_duration(s)
                        .map_err(|e| format!("slow_consumer_timeout: {e}"))?,
                ),
            },
            local_ring: size("local_ring", f.local_ring, d.local_ring)?,
            max_publications: f.max_publications.unwrap_or(d.max_publications),
            control_ring: f.control_ring.unwrap_or(d.control_ring),
            counters: f.counters.unwrap_or(d.counters),
            name: f.name.unwrap_or(d.name),
            counters_linger: dur("counters_linger", f.counters_linger, d.counters_linger)?,
            handle_signals: f.handle_signals.unwrap_or(d.handle_signals),
            latency_sample_every: f.latency_sample_every.unwrap_or(d.latency_sample_every),
            udp: UdpDefaults {
                interface: u.interface.unwrap_or(d.udp.interface),
                ttl: u.ttl.unwrap_or(d.udp.ttl),
                loopback: u.loopback.unwrap_or(d.udp.loopback),
                mtu: size("udp.mtu", u.mtu, d.udp.mtu)?,
                rcvbuf: size("udp.rcvbuf", u.rcvbuf, d.udp.rcvbuf)?,
                sndbuf: size("udp.sndbuf", u.sndbuf, d.udp.sndbuf)?,
                flow: match u.flow.as_deref() {
                    None => d.udp.flow,
                    Some("min") => weft_proto::FlowControl::Min,
                    Some("max") => weft_proto::FlowControl::Max,
                    Some("none") => weft_proto::FlowControl::None,
                    Some(other) => {
                        return Err(format!("udp.flow {other:?}: expected min, max or none"))
                    }
                },
                loss: None,
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// [`from_toml`](Self::from_toml) on a file; errors name the file.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, crate::Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::Error::Config(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| crate::Error::Config(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_some_keys_and_keeps_the_defaults_of_the_rest() {
        let cfg = NodeConfig::from_toml(
            r#"
            cores = [1]
            threading = "shared"
            idle = "sleep:50us"
            liveness_timeout = "250ms"
            [udp]
            interface = "eth0"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.cores, [1]);
        assert_eq!(cfg.threading, ThreadingMode::Shared);
        assert_eq!(cfg.idle, IdleStrategy::Sleep(Duration::from_micros(50)));
        assert_eq!(cfg.liveness_timeout, Duration::from_millis(250));
        assert_eq!(cfg.udp.interface, "eth0");
        assert_eq!(cfg.udp.mtu, UdpDefaults::default().mtu);
        assert_eq!(cfg.agents, 1);
    }

    #[test]
    fn sizes_take_binary_units_and_the_environment_overrides_the_file() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("4 MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("4MB").unwrap_err().contains("powers of 1024"));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
        let cfg = NodeConfig::from_toml(
            "shm_capacity = \"4MiB\"\nlocal_ring = 65536\n[udp]\nrcvbuf = \"8MiB\"\n",
        )
        .unwrap();
        assert_eq!(
            (cfg.shm_capacity, cfg.local_ring, cfg.udp.rcvbuf),
            (4 << 20, 1 << 16, 8 << 20)
        );
        let env = |k: &str| {
            Some(
                match k {
                    "WEFT_AGENTS" => "3",
                    "WEFT_CORES" => "1, 2",
                    "WEFT_IDLE" => "busy-spin",
                    "WEFT_UDP_RCVBUF" => "16MiB",
                    "WEFT_NAME" => "",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let cfg = cfg.with_vars(env).unwrap();
        assert_eq!(cfg.agents, 3);
        assert_eq!(cfg.cores, [1, 2]);
        assert_eq!(cfg.idle, IdleStrategy::BusySpin);
        assert_eq!(cfg.udp.rcvbuf, 16 << 20);
        assert_eq!(
            cfg.shm_capacity,
            4 << 20,
            "not in the environment: the file's"
        );
        let e = NodeConfig::default()
            .with_vars(|k| (k == "WEFT_SHM_CAPACITY").then(|| "3000".to_string()))
            .unwrap_err();
        assert!(e.contains("shm_capacity"), "{e}");
        let e = NodeConfig::default()
            .with_vars(|k| (k == "WEFT_AGENTS").then(|| "two".to_string()))
            .unwrap_err();
        assert!(e.starts_with("WEFT_AGENTS=\"two\""), "{e}");
    }

    /// The sample file of `docs/config.md` parses, and is the defaults.
    #[test]
    fn the_documented_sample_file_is_the_defaults() {
        let doc = include_str!("../../../docs/config.md");
        let start = doc.find("```toml\n").expect("a toml block") + 8;
        let end = start + doc[start..].find("```").expect("its end");
        let cfg = NodeConfig::from_toml(&doc[start..end]).unwrap();
        assert_eq!(cfg, NodeConfig::default());
    }

    #[test]
    fn mistakes_in_a_file_are_named() {
        for (text, says) in [
            ("agnets = 2", "agnets"),
            ("idle = \"spin\"", "busy-spin"),
            ("slow_cycle = \"100\"", "unit"),
            ("shm_capacity = 1000", "power of two"),
            ("[udp]\nmtu = 10", "udp.mtu"),
            ("agents = ", "line 1"),
            ("dir = \"\"", "dir"),
            ("name = \"a\\nb\"", "control"),
            ("[udp]\nrcvbuf = 0", "udp.rcvbuf"),
            ("shm_capacity = 9223372036854775808", "2^40"),
            ("slow_consumer_timeout = \"0ms\"", "slow_consumer_timeout"),
            ("shm_capacity = \"4MB\"", "KiB, MiB"),
            ("[udp]\nrcvbuf = \"lots\"", "udp.rcvbuf"),
            ("local_ring = \"3KiB\"", "power of two"),
        ] {
            let e = NodeConfig::from_toml(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
