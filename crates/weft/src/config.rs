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
    /// Directory of shared-memory files. Default: `$WEFT_DIR`, else `/dev/shm/weft`.
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
    /// `mlock` rings. Default off (needs `RLIMIT_MEMLOCK`).
    pub mlock: bool,
    /// A peer silent this long is gone: a shared-memory publisher, a stuck
    /// subscriber (evicted), a UDP publisher (`publisher_timeout`) or receiver.
    /// Default 1 s.
    pub liveness_timeout: Duration,
    /// Defaults of UDP channels; a URI parameter overrides each.
    pub udp: UdpDefaults,
    /// Bytes of the in-process rings between publications or subscriptions and
    /// the agent that runs their UDP channel. Default 1 MiB.
    pub local_ring: usize,
    /// Publications one UDP channel can have in this process. Default 8.
    pub max_publications: usize,
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
            liveness_timeout: Duration::from_secs(1),
            udp: UdpDefaults::default(),
            local_ring: 1 << 20,
            max_publications: 8,
        }
    }
}

impl NodeConfig {
    /// Checks ranges; the error names the field and what it accepts.
    pub fn validate(&self) -> Result<(), String> {
        let pow2 = |v: usize| v.is_power_of_two() && v >= 4096;
        if self.agents == 0 || self.agents > 64 {
            return Err(format!("agents = {}: expected 1 to 64", self.agents));
        }
        if !pow2(self.shm_capacity) {
            return Err(format!(
                "shm_capacity = {}: expected a power of two, at least 4096",
                self.shm_capacity
            ));
        }
        if !pow2(self.local_ring) {
            return Err(format!(
                "local_ring = {}: expected a power of two, at least 4096",
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
