//! Channel URIs: `shm:NAME` for a channel inside one host, and
//! `udp://GROUP:PORT?interface=…&ttl=…` for a multicast channel.
//!
//! ```text
//! shm:orders
//! shm:orders?capacity=1048576
//! shm:orders?publishers=many
//! shm:md?slow_timeout=100ms
//! udp://239.1.2.3:40456
//! udp://239.1.2.3:40456?interface=10.0.0.5&ttl=4&loopback=false&control_port=40457&mtu=1408&flow=min
//! udp://239.1.2.3:40456?interface=eth0
//! udp://239.1.2.3:40456?key_file=/etc/weft/md.key
//! ```
//!
//! A parameter left out takes the node's default. A malformed URI is a
//! [`UriError`] that quotes the offending part and says what was expected;
//! parsing never panics, whatever the input. The stream id is not part of the
//! URI: it is given beside it, as in Aeron (`channel, stream`).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use weft_net::Interface;
use weft_proto::FlowControl;

/// A parsed channel URI. [`Display`](fmt::Display) writes it back in canonical
/// form (parameters in a fixed order), which parses to the same value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelUri {
    /// `shm:NAME`: rings in shared-memory files under the node's directory.
    Shm(ShmUri),
    /// `udp://GROUP:PORT`: reliable multicast.
    Udp(UdpUri),
}

/// The parts of a `shm:` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmUri {
    /// Region name: 1 to 200 characters of `A-Z a-z 0-9 . _ -`, not starting
    /// with a dot (the file name under the node's directory).
    pub name: String,
    /// `capacity=`: ring capacity in bytes (a power of two, at least 4096;
    /// a binary unit may follow: `capacity=4MiB`).
    pub capacity: Option<usize>,
    /// `publishers=many`: several processes may publish the channel (a
    /// many-producer ring; each read costs a little more). Default
    /// `publishers=one`: one publishing process, the cheapest ring.
    /// Subscribers need not say: they read whichever ring the channel has.
    pub many_publishers: bool,
    /// `slow_timeout=DURATION` (`100ms`, `2s`): a subscriber that keeps the
    /// publisher blocked, a whole ring behind, for this long without a break
    /// is cut loose with an explicit `Loss` (how many ring bytes it missed)
    /// and rejoins at the newest message, so one slow reader cannot set the
    /// pace of the others. Default: the node's `slow_consumer_timeout`
    /// (none: a subscriber that reads is waited for, however slowly).
    pub slow_timeout: Option<std::time::Duration>,
}

/// The parts of a `udp://` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpUri {
    /// The multicast group (224.0.0.0/4) and port (1–65535).
    pub group: SocketAddrV4,
    /// `interface=`: an IPv4 address or an interface name (at most 15 characters).
    pub interface: Option<Interface>,
    /// `ttl=`: multicast TTL, 0–255.
    pub ttl: Option<u8>,
    /// `loopback=`: `true` or `false`; deliver to members on this host too.
    pub loopback: Option<bool>,
    /// `control_port=`: the publication's port for NAK and STATUS, 1–65535.
    pub control_port: Option<u16>,
    /// `mtu=`: largest datagram in bytes, 576–65504.
    pub mtu: Option<usize>,
    /// `flow=`: how a publication paces itself by its receivers: `min` (never
    /// more than the slowest live receiver's window ahead: nothing lost while
    /// receivers live), `max` (the fastest; slower ones may get LOSS) or `none`
    /// (only the retransmit buffer bounds repair).
    pub flow: Option<FlowControl>,
    /// `key_file=`: authenticate every datagram of the channel (HMAC-SHA256,
    /// see `weft_proto::auth`) with the shared secret in this file: hex
    /// digits, at least 32 of them, in a file only its owner may read. Every
    /// publisher and subscriber of the channel needs the same key.
    pub key_file: Option<std::path::PathBuf>,
}

/// A channel URI that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad channel URI {uri:?}: {part:?}: expected {expected}")]
pub struct UriError {
    /// The whole URI as given.
    pub uri: String,
    /// The part that is wrong.
    pub part: String,
    /// What would have been accepted there.
    pub expected: String,
}

impl FromStr for ChannelUri {
    type Err = UriError;

    fn from_str(uri: &str) -> Result<Self, UriError> {
        let bad = |part: &str, expected: &str| UriError {
            uri: uri.to_string(),
            part: part.to_string(),
            expected: expected.to_string(),
        };
        let (head, query) = match uri.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (uri, None),
        };
        let params = parse_query(query, &bad)?;
        if let Some(name) = head.strip_prefix("shm:") {
            if !valid_region_name(name) {
                return Err(bad(
                    name,
                    "a region name of 1 to 200 characters of A-Z a-z 0-9 . _ -, not starting with '.'",
                ));
            }
            let mut shm = ShmUri {
                name: name.to_string(),
                capacity: None,
                many_publishers: false,
                slow_timeout: None,
            };
            for (key, value) in params {
                match key {
                    "capacity" => {
                        shm.capacity = Some(
                            crate::config::parse_size(value)
                                .ok()
                                .filter(|c| c.is_power_of_two() && *c >= 4096)
                                .ok_or_else(|| {
                                    bad(value, "a capacity in bytes: a power of two, at least 4096")
                                })?,
                        )
                    }
                    "publishers" => {
                        shm.many_publishers = match value {
                            "one" => false,
                            "many" => true,
                            _ => return Err(bad(value, "one or many")),
                        }
                    }
                    "slow_timeout" => {
                        shm.slow_timeout = Some(
                            crate::idle::parse_duration(value)
                                .ok()
                                .filter(|d| !d.is_zero())
                                .ok_or_else(|| {
                                    bad(value, "a duration with a unit, more than 0: 100ms, 2s")
                                })?,
                        )
                    }
                    _ => {
                        return Err(bad(
                            key,
                            "a shm parameter: capacity, publishers, slow_timeout",
                        ))
                    }
                }
            }
            Ok(ChannelUri::Shm(shm))
        } else if let Some(addr) = head.strip_prefix("udp://") {
            let (ip, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| bad(addr, "GROUP:PORT, e.g. 239.1.2.3:40456"))?;
            let ip: Ipv4Addr = ip
                .parse()
                .ok()
                .filter(|ip: &Ipv4Addr| ip.is_multicast())
                .ok_or_else(|| bad(ip, "an IPv4 multicast group, 224.0.0.0 to 239.255.255.255"))?;
            let port = parse_port(port).ok_or_else(|| bad(port, "a port, 1 to 65535"))?;
            let mut udp = UdpUri {
                group: SocketAddrV4::new(ip, port),
                interface: None,
                ttl: None,
                loopback: None,
                control_port: None,
                mtu: None,
                flow: None,
                key_file: None,
            };
            for (key, value) in params {
                match key {
                    "interface" => {
                        udp.interface = Some(parse_interface(value).ok_or_else(|| {
                            bad(
                                value,
                                "an IPv4 address or an interface name of 1 to 15 characters of A-Z a-z 0-9 . _ - :",
                            )
                        })?)
                    }
                    "ttl" => {
                        udp.ttl = Some(
                            value
                                .parse()
                                .map_err(|_| bad(value, "a TTL, 0 to 255"))?,
                        )
                    }
                    "loopback" => {
                        udp.loopback = Some(match value {
                            "true" => true,
                            "false" => false,
                            _ => return Err(bad(value, "true or false")),
                        })
                    }
                    "control_port" => {
                        udp.control_port =
                            Some(parse_port(value).ok_or_else(|| bad(value, "a port, 1 to 65535"))?)
                    }
                    "mtu" => {
                        udp.mtu = Some(
                            value
                                .parse::<usize>()
                                .ok()
                                .filter(|m| (576..=65504).contains(m))
                                .ok_or_else(|| bad(value, "an MTU in bytes, 576 to 65504"))?,
                        )
                    }
                    "flow" => {
                        udp.flow = Some(match value {
                            "min" => FlowControl::Min,
                            "max" => FlowControl::Max,
                            "none" => FlowControl::None,
                            _ => return Err(bad(value, "a flow control: min, max or none")),
                        })
                    }
                    "key_file" => {
                        if value.is_empty() || !value.starts_with('/') {
                            return Err(bad(value, "the absolute path of a key file"));
                        }
                        udp.key_file = Some(value.into())
                    }
                    _ => {
                        return Err(bad(
                            key,
                            "a udp parameter: interface, ttl, loopback, control_port, mtu, flow or key_file",
                        ))
                    }
                }
            }
            Ok(ChannelUri::Udp(udp))
        } else {
            let scheme = head.split_once(':').map_or(head, |(s, _)| s);
            Err(bad(
                scheme,
                "a URI starting with shm: (e.g. shm:orders) or udp:// (e.g. udp://239.1.2.3:40456)",
            ))
        }
    }
}

/// `key=value` pairs separated by `&`; each key at most once.
fn parse_query<'a>(
    query: Option<&'a str>,
    bad: &dyn Fn(&str, &str) -> UriError,
) -> Result<Vec<(&'a str, &'a str)>, UriError> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    let mut params: Vec<(&str, &str)> = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| bad(pair, "a parameter written key=value"))?;
        if params.iter().any(|(k, _)| *k == key) {
            return Err(bad(key, "each parameter at most once"));
        }
        params.push((key, value));
    }
    Ok(params)
}

fn valid_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse().ok().filter(|p| *p != 0)
}

fn parse_interface(s: &str) -> Option<Interface> {
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        return Some(Interface::Addr(a));
    }
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
        && s.bytes().any(|b| !b.is_ascii_digit() && b != b'.');
    ok.then(|| Interface::Name(s.to_string()))
}

impl ChannelUri {
    /// The channel's identity: `shm:NAME` or `udp://GROUP:PORT`, the URI
    /// without its parameters. Two ends of one channel give the same
    /// address whatever parameters each was opened with; telemetry labels
    /// its counters with it (`channel=`), so they join across processes.
    pub fn address(&self) -> String {
        match self {
            ChannelUri::Shm(s) => s.address(),
            ChannelUri::Udp(u) => u.address(),
        }
    }
}

impl ShmUri {
    /// `shm:NAME`: see [`ChannelUri::address`].
    pub fn address(&self) -> String {
        format!("shm:{}", self.name)
    }
}

impl UdpUri {
    /// `udp://GROUP:PORT`: see [`ChannelUri::address`].
    pub fn address(&self) -> String {
        format!("udp://{}", self.group)
    }
}

impl fmt::Display for ChannelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = '?';
        let mut param = |f: &mut fmt::Formatter<'_>, key: &str, value: &dyn fmt::Display| {
            let r = write!(f, "{sep}{key}={value}");
            sep = '&';
            r
        };
        match self {
            ChannelUri::Shm(s) => {
                write!(f, "shm:{}", s.name)?;
                if let Some(c) = s.capacity {
                    param(f, "capacity", &c)?;
                }
                if s.many_publishers {
                    param(f, "publishers", &"many")?;
                }
                if let Some(d) = s.slow_timeout {
                    param(f, "slow_timeout", &crate::idle::DurationText(d))?;
                }
            }
            ChannelUri::Udp(u) => {
                write!(f, "udp://{}", u.group)?;
                match &u.interface {
                    Some(Interface::Addr(a)) => param(f, "interface", a)?,
                    Some(Interface::Name(n)) => param(f, "interface", n)?,
                    None => {}
                }
                if let Some(t) = u.ttl {
                    param(f, "ttl", &t)?;
                }
                if let Some(l) = u.loopback {
                    param(f, "loopback", &l)?;
                }
                if let Some(p) = u.control_port {
                    param(f, "control_port", &p)?;
                }
                if let Some(m) = u.mtu {
                    param(f, "mtu", &m)?;
                }
                if let Some(fc) = u.flow {
                    let name = match fc {
                        FlowControl::Min => "min",
                        FlowControl::Max => "max",
                        FlowControl::None => "none",
                    };
                    param(f, "flow", &name)?;
                }
                if let Some(k) = &u.key_file {
                    param(f, "key_file", &k.display())?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<ChannelUri, UriError> {
        s.parse()
    }

    #[test]
    fn good_uris_parse_to_their_parts() {
        assert_eq!(
            parse("shm:orders").unwrap(),
            ChannelUri::Shm(ShmUri {
                name: "orders".into(),
                capacity: None,
                many_publishers: false,
                slow_timeout: None,
            })
        );
        assert_eq!(
            parse("shm:orders?publishers=many").unwrap(),
            ChannelUri::Shm(ShmUri {
                name: "orders".into(),
                capacity: None,
                many_publishers: true,
                slow_timeout: None,
            })
        );
        let u = parse(
            "udp://239.1.2.3:40456?interface=eth0&ttl=4&loopback=false&control_port=40457&mtu=1408&flow=max",
        )
        .unwrap();
        assert_eq!(
            u,
            ChannelUri::Udp(UdpUri {
                group: "239.1.2.3:40456".parse().unwrap(),
                interface: Some(Interface::Name("eth0".into())),
                ttl: Some(4),
                loopback: Some(false),
                control_port: Some(40457),
                mtu: Some(1408),
                flow: Some(FlowControl::Max),
                key_file: None,
            })
        );
        match parse("udp://239.1.2.3:1?interface=10.0.0.5").unwrap() {
            ChannelUri::Udp(u) => {
                assert_eq!(
                    u.interface,
                    Some(Interface::Addr("10.0.0.5".parse().unwrap()))
                )
            }
            other => panic!("{other:?}"),
        }
    }

    /// Each error names the offending part, and what was expected there.
    #[test]
    fn bad_uris_quote_the_offending_part() {
        for (uri, part, expected) in [
            ("tcp://1.2.3.4:5", "tcp", "shm:"),
            ("shm:", "", "region name"),
            ("shm:.hidden", ".hidden", "region name"),
            ("shm:a/b", "a/b", "region name"),
            ("shm:x?capacity=1000", "1000", "power of two"),
            ("shm:x?size=4096", "size", "capacity"),
            ("shm:x?publishers=several", "several", "one or many"),
            ("shm:x?slow_timeout=100", "100", "duration"),
            ("shm:x?slow_timeout=0ms", "0ms", "more than 0"),
            ("udp://239.1.2.3", "239.1.2.3", "GROUP:PORT"),
            ("udp://10.1.2.3:80", "10.1.2.3", "multicast"),
            ("udp://239.1.2.3:0", "0", "port"),
            ("udp://239.1.2.3:70000", "70000", "port"),
            ("udp://239.1.2.3:5?ttl=300", "300", "TTL"),
            ("udp://239.1.2.3:5?loopback=yes", "yes", "true or false"),
            ("udp://239.1.2.3:5?mtu=100", "100", "MTU"),
            (
                "udp://239.1.2.3:5?interface=averyveryverylongname",
                "averyveryverylongname",
                "interface name",
            ),
            (
                "udp://239.1.2.3:5?interface=10.0.0",
                "10.0.0",
                "IPv4 address",
            ),
            ("udp://239.1.2.3:5?ttl", "ttl", "key=value"),
            ("udp://239.1.2.3:5?ttl=1&ttl=2", "ttl", "at most once"),
            ("udp://239.1.2.3:5?colour=red", "colour", "interface, ttl"),
            ("udp://239.1.2.3:5?flow=fast", "fast", "min, max or none"),
            (
                "udp://239.1.2.3:5?key_file=md.key",
                "md.key",
                "absolute path",
            ),
        ] {
            let e = parse(uri).expect_err(uri);
            assert_eq!(e.part, part, "{uri}: {e}");
            assert!(e.expected.contains(expected), "{uri}: {e}");
            let text = e.to_string();
            assert!(
                text.contains(uri) && text.contains(&format!("{part:?}")),
                "{text}"
            );
        }
    }

    fn uri_strategy() -> impl Strategy<Value = ChannelUri> {
        let shm = (
            "[A-Za-z0-9_-][A-Za-z0-9._-]{0,30}",
            proptest::option::of(12u32..30),
            any::<bool>(),
            proptest::option::of(1u64..u32::MAX as u64),
        )
            .prop_map(|(name, cap, many_publishers, slow)| {
                ChannelUri::Shm(ShmUri {
                    name,
                    capacity: cap.map(|c| 1usize << c),
                    many_publishers,
                    slow_timeout: slow.map(std::time::Duration::from_nanos),
                })
            });
        let iface = prop_oneof![
            any::<u32>().prop_map(|a| Interface::Addr(Ipv4Addr::from(a))),
            "[a-z][a-z0-9]{0,14}".prop_map(Interface::Name),
        ];
        let udp = (
            (224u8..=239, any::<[u8; 3]>(), 1u16..),
            proptest::option::of(iface),
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(1u16..),
            proptest::option::of(576usize..=65504),
            proptest::option::of(prop_oneof![
                Just(FlowControl::Min),
                Just(FlowControl::Max),
                Just(FlowControl::None)
            ]),
            proptest::option::of("/[a-z0-9._/-]{1,30}"),
        )
            .prop_map(
                |((a, rest, port), interface, ttl, loopback, control_port, mtu, flow, key)| {
                    ChannelUri::Udp(UdpUri {
                        group: SocketAddrV4::new(Ipv4Addr::new(a, rest[0], rest[1], rest[2]), port),
                        interface,
                        ttl,
                        loopback,
                        control_port,
                        mtu,
                        flow,
                        key_file: key.map(Into::into),
                    })
                },
            );
        prop_oneof![shm, udp]
    }

    proptest! {
        /// Canonical text parses back to the same value.
        #[test]
        fn display_round_trips(uri in uri_strategy()) {
            prop_assert_eq!(parse(&uri.to_string()).unwrap(), uri);
        }

        /// Any input, including near-misses of good URIs, parses or errs; never panics.
        #[test]
        fn arbitrary_input_never_panics(s in "(shm:|udp://|)[ -~]{0,60}") {
            let _ = parse(&s);
        }
    }

    #[test]
    fn a_capacity_takes_a_binary_unit() {
        let ChannelUri::Shm(s) = parse("shm:md?capacity=64KiB").unwrap() else {
            panic!("shm")
        };
        assert_eq!(s.capacity, Some(65536));
        assert!(parse("shm:md?capacity=64KB").is_err());
    }
}
