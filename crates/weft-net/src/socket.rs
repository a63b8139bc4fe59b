//! Socket setup with socket2: the group socket a subscription receives on, the
//! unicast socket a publication sends from, interface selection, TTL, loopback
//! and socket buffer sizes (with what the kernel really granted).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::NetError;

/// The interface multicast leaves by and is joined on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interface {
    /// The interface that holds this IPv4 address (`127.0.0.1` for loopback).
    Addr(Ipv4Addr),
    /// The interface with this name (`eth0`); its first IPv4 address is used.
    Name(String),
}

impl Interface {
    /// The interface's IPv4 address. A name is looked up with `getifaddrs` (one
    /// syscall and an allocation: call it at setup, not per message).
    pub fn resolve(&self) -> Result<Ipv4Addr, NetError> {
        match self {
            Interface::Addr(a) => Ok(*a),
            Interface::Name(name) => {
                let addrs = nix::ifaddrs::getifaddrs().map_err(|e| NetError::Io {
                    what: "getifaddrs".into(),
                    source: e.into(),
                })?;
                addrs
                    .filter(|a| a.interface_name == *name)
                    .find_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
                    .ok_or_else(|| NetError::NoSuchInterface(name.clone()))
            }
        }
    }
}

impl std::str::FromStr for Interface {
    type Err = std::convert::Infallible;

    /// An IPv4 address, or else an interface name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse() {
            Ok(a) => Interface::Addr(a),
            Err(_) => Interface::Name(s.to_string()),
        })
    }
}

/// How a channel's sockets are set up. `Default` is loopback, TTL 1, multicast
/// loop on, 4 MiB receive and 1 MiB send buffers.
#[derive(Clone, Debug)]
pub struct SocketOptions {
    /// Interface to send multicast from and join the group on.
    pub interface: Interface,
    /// Multicast TTL: 1 keeps traffic on the local subnet; each router hop costs one.
    pub ttl: u32,
    /// Deliver the group's traffic to members on this host too (`IP_MULTICAST_LOOP`).
    /// Needed when publisher and subscriber share a host.
    pub loopback: bool,
    /// Requested `SO_RCVBUF`, bytes of payload. Should hold a burst: at least the
    /// receiver's window (`buffer_datagrams × mtu`).
    pub rcvbuf: usize,
    /// Requested `SO_SNDBUF`, bytes of payload.
    pub sndbuf: usize,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            interface: Interface::Addr(Ipv4Addr::LOCALHOST),
            ttl: 1,
            loopback: true,
            rcvbuf: 4 << 20,
            sndbuf: 1 << 20,
        }
    }
}

/// Socket buffer sizes requested and granted. Linux doubles a requested size for
/// its bookkeeping and reports the doubled value; `granted` is that report
/// halved, so it compares with `requested`. Sizes above `net.core.rmem_max` /
/// `net.core.wmem_max` are capped unless the process may use `SO_RCVBUFFORCE`
/// (`CAP_NET_ADMIN`), which is tried when the plain request falls short.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferGrant {
    /// `SO_RCVBUF` asked for.
    pub rcvbuf_requested: usize,
    /// `SO_RCVBUF` granted.
    pub rcvbuf_granted: usize,
    /// `SO_SNDBUF` asked for.
    pub sndbuf_requested: usize,
    /// `SO_SNDBUF` granted.
    pub sndbuf_granted: usize,
}

impl BufferGrant {
    /// A warning for each buffer smaller than requested, naming the sysctl to raise.
    pub fn warning(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.rcvbuf_granted < self.rcvbuf_requested {
            parts.push(format!(
                "SO_RCVBUF: asked for {} bytes, the kernel granted {}; raise net.core.rmem_max \
                 (sysctl -w net.core.rmem_max={}) or run with CAP_NET_ADMIN",
                self.rcvbuf_requested, self.rcvbuf_granted, self.rcvbuf_requested
            ));
        }
        if self.sndbuf_granted < self.sndbuf_requested {
            parts.push(format!(
                "SO_SNDBUF: asked for {} bytes, the kernel granted {}; raise net.core.wmem_max \
                 (sysctl -w net.core.wmem_max={}) or run with CAP_NET_ADMIN",
                self.sndbuf_requested, self.sndbuf_granted, self.sndbuf_requested
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Io { what, source }
}

fn new_udp() -> Result<Socket, NetError> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(io("socket(AF_INET, SOCK_DGRAM)"))?;
    s.set_nonblocking(true).map_err(io("O_NONBLOCK"))?;
    Ok(s)
}

/// Sets the buffers, falling back to the FORCE variants when capped.
fn size_buffers(s: &Socket, opts: &SocketOptions) -> Result<BufferGrant, NetError> {
    use nix::sys::socket::{setsockopt, sockopt};
    s.set_recv_buffer_size(opts.rcvbuf)
        .map_err(io("SO_RCVBUF"))?;
    s.set_send_buffer_size(opts.sndbuf)
        .map_err(io("SO_SNDBUF"))?;
    let rcv = |s: &Socket| s.recv_buffer_size().map(|n| n / 2);
    let snd = |s: &Socket| s.send_buffer_size().map(|n| n / 2);
    if rcv(s).map_err(io("SO_RCVBUF"))? < opts.rcvbuf {
        // Fails without CAP_NET_ADMIN: then the warning tells the operator.
        let _ = setsockopt(&s.as_fd(), sockopt::RcvBufForce, &opts.rcvbuf);
    }
    if snd(s).map_err(io("SO_SNDBUF"))? < opts.sndbuf {
        let _ = setsockopt(&s.as_fd(), sockopt::SndBufForce, &opts.sndbuf);
    }
    Ok(BufferGrant {
        rcvbuf_requested: opts.rcvbuf,
        rcvbuf_granted: rcv(s).map_err(io("SO_RCVBUF"))?,
        sndbuf_requested: opts.sndbuf,
        sndbuf_granted: snd(s).map_err(io("SO_SNDBUF"))?,
    })
}

fn multicast_out(s: &Socket, iface: Ipv4Addr, opts: &SocketOptions) -> Result<(), NetError> {
    s.set_multicast_if_v4(&iface)
        .map_err(io(format!("IP_MULTICAST_IF {iface}")))?;
    s.set_multicast_ttl_v4(opts.ttl)
        .map_err(io(format!("IP_MULTICAST_TTL {}", opts.ttl)))?;
    s.set_multicast_loop_v4(opts.loopback)
        .map_err(io("IP_MULTICAST_LOOP"))?;
    Ok(())
}

/// A subscription's socket: bound to `group` with `SO_REUSEADDR` and
/// `SO_REUSEPORT` (so several subscribers on one host share the group and port,
/// each getting every datagram), joined on the interface, non-blocking. It also
/// sends the subscription's NAKs and STATUS: bound to a multicast address, its
/// source address is the interface's.
pub fn group_socket(
    group: SocketAddrV4,
    opts: &SocketOptions,
) -> Result<(Socket, BufferGrant), NetError> {
    if !group.ip().is_multicast() {
        return Err(NetError::NotMulticast(group));
    }
    let iface = opts.interface.resolve()?;
    let s = new_udp()?;
    s.set_reuse_address(true).map_err(io("SO_REUSEADDR"))?;
    s.set_reuse_port(true).map_err(io("SO_REUSEPORT"))?;
    let grant = size_buffers(&s, opts)?;
    s.bind(&SockAddr::from(group))
        .map_err(io(format!("bind {group}")))?;
    s.join_multicast_v4(group.ip(), &iface)
        .map_err(io(format!("join {} on {iface}", group.ip())))?;
    multicast_out(&s, iface, opts)?;
    Ok((s, grant))
}

/// A publication's socket: bound to the interface's address and `port` (0: any),
/// sending to the group and receiving NAK and STATUS, non-blocking.
pub fn unicast_socket(port: u16, opts: &SocketOptions) -> Result<(Socket, BufferGrant), NetError> {
    let iface = opts.interface.resolve()?;
    let s = new_udp()?;
    let grant = size_buffers(&s, opts)?;
    let at = SocketAddrV4::new(iface, port);
    s.bind(&SockAddr::from(at))
        .map_err(io(format!("bind {at}")))?;
    multicast_out(&s, iface, opts)?;
    Ok((s, grant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unicast_group_or_unknown_interface_is_a_clear_error() {
        let opts = SocketOptions::default();
        let e = group_socket("127.0.0.1:4000".parse().unwrap(), &opts).unwrap_err();
        assert!(e.to_string().contains("not an IPv4 multicast group"), "{e}");
        let opts = SocketOptions {
            interface: "no-such-if0".parse().unwrap(),
            ..SocketOptions::default()
        };
        let e = group_socket("239.77.1.1:4000".parse().unwrap(), &opts).unwrap_err();
        assert!(e.to_string().contains("no-such-if0"), "{e}");
        assert_eq!(
            Interface::Name("lo".into()).resolve().unwrap(),
            Ipv4Addr::LOCALHOST
        );
    }

    #[test]
    fn a_short_buffer_grant_names_the_sysctl() {
        let g = BufferGrant {
            rcvbuf_requested: 8 << 20,
            rcvbuf_granted: 4 << 20,
            sndbuf_requested: 1 << 20,
            sndbuf_granted: 1 << 20,
        };
        let w = g.warning().unwrap();
        assert!(
            w.contains("net.core.rmem_max") && !w.contains("wmem"),
            "{w}"
        );
        assert_eq!(BufferGrant::default().warning(), None);
    }
}
