// Where weft's UDP round trip spends its time above raw multicast (issue 18, session 16).
// Not built by the project: copy to benches/weft-bench/examples/ and
//   ROUNDS=40 cargo run --release -p weft-bench --example protolab [KIND...]
// Each kind is a pair of ends that bounce a 32-byte message over multicast on 127.0.0.1
// between two pinned threads, in alternating blocks of 2000 round trips; the output is
// each kind's round-trip median over the raw kind's, median over the blocks.
// Needs `libc = "0.2"` and `nix.workspace = true` under [dev-dependencies] of weft-bench.
// The first kind named is the reference; `floor` is the harness's floor-mcast loop. CPU=1
// instead times the protocol's own work per message in one thread (no sockets).
#![allow(clippy::all, missing_docs)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use weft_proto::{Event, ReceiverConfig, SenderConfig};

fn t() -> u64 {
    unsafe { core::arch::x86_64::_rdtsc() }
}
fn pin(c: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: c });
}
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
fn group(last: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(239, 77, 103, last), free_port())
}
fn env(name: &str, d: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

trait End: Send {
    fn send(&mut self, msg: &[u8]);
    fn recv(&mut self, buf: &mut [u8]) -> usize;
}

struct Sock {
    tx: i32,
    rx: i32,
    to: socket2::SockAddr,
    _keep: (socket2::Socket, socket2::Socket),
}
fn sock(out: SocketAddrV4, inn: SocketAddrV4) -> Sock {
    sock_rxq(out, inn, false)
}
fn sock_rxq(out: SocketAddrV4, inn: SocketAddrV4, rxq: bool) -> Sock {
    let o = weft_net::SocketOptions::default();
    let (tx, _) = weft_net::unicast_socket(0, &o).unwrap();
    let (rx, _) = weft_net::group_socket(inn, &o).unwrap();
    if rxq {
        use std::os::fd::AsFd;
        for s in [&tx, &rx] {
            nix::sys::socket::setsockopt(&s.as_fd(), nix::sys::socket::sockopt::RxqOvfl, &1).unwrap();
        }
    }
    Sock { tx: tx.as_raw_fd(), rx: rx.as_raw_fd(), to: SocketAddr::V4(out).into(), _keep: (tx, rx) }
}
impl Sock {
    fn sendto(&self, b: &[u8]) {
        let r = unsafe { libc::sendto(self.tx, b.as_ptr().cast(), b.len(), libc::MSG_DONTWAIT, self.to.as_ptr().cast(), self.to.len()) };
        assert!(r > 0);
    }
    /// One non-blocking receive with the source address, as weft's.
    fn try_recv(&self, b: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut nl = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let r = unsafe { libc::recvfrom(self.rx, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT | libc::MSG_TRUNC, (&mut name as *mut libc::sockaddr_in).cast(), &mut nl) };
        (r > 0).then(|| (r as usize, SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)), u16::from_be(name.sin_port)))))
    }
}

/// Raw datagrams, `recv` without the source address.
struct RawNoName(Sock);
impl End for RawNoName {
    fn send(&mut self, msg: &[u8]) {
        self.0.sendto(msg)
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        loop {
            let r = unsafe { libc::recv(self.0.rx, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if r > 0 {
                return r as usize;
            }
            std::hint::spin_loop();
        }
    }
}

/// RawNoName plus `spin` ns of register-only work before each send, and `lines` new
/// cache lines written (a 4 MiB ring) before each send.
struct RawWork(Sock, u64, usize, Vec<u8>, usize);
impl End for RawWork {
    fn send(&mut self, msg: &[u8]) {
        let t0 = t();
        while t() - t0 < self.1 * 3 {
            std::hint::black_box(0);
        }
        for _ in 0..self.2 {
            self.4 = (self.4 + 64) % self.3.len();
            self.3[self.4] = 1;
        }
        self.0.sendto(msg)
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        loop {
            let r = unsafe { libc::recv(self.0.rx, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if r > 0 {
                return r as usize;
            }
            std::hint::spin_loop();
        }
    }
}

/// Raw datagrams sent from the receiving group socket, received with the source.
struct RawOneSock(Sock);
impl End for RawOneSock {
    fn send(&mut self, msg: &[u8]) {
        let r = unsafe { libc::sendto(self.0.rx, msg.as_ptr().cast(), msg.len(), libc::MSG_DONTWAIT, self.0.to.as_ptr().cast(), self.0.to.len()) };
        assert!(r > 0);
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        loop {
            if let Some((n, _)) = self.0.try_recv(buf) {
                return n;
            }
            std::hint::spin_loop();
        }
    }
}

/// Raw datagrams: the message itself.
struct Raw(Sock);
impl End for Raw {
    fn send(&mut self, msg: &[u8]) {
        self.0.sendto(msg)
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        loop {
            if let Some((n, _)) = self.0.try_recv(buf) {
                return n;
            }
            std::hint::spin_loop();
        }
    }
}

fn scfg(seed: u64) -> SenderConfig {
    let mut c = SenderConfig::new(1, seed);
    c.flow = weft_proto::FlowControl::None;
    c.buffer_datagrams = env("PBUF", c.buffer_datagrams);
    c
}
fn rcfg(seed: u64) -> ReceiverConfig {
    let mut c = ReceiverConfig::new(1, seed);
    c.buffer_datagrams = env("PBUF", c.buffer_datagrams);
    c
}

/// weft_proto's sender and receiver straight on the sockets. `recv_proto` false: the
/// receiving half takes the message at byte 40 without parsing (`send_proto` false is unused).
struct Proto {
    s: Sock,
    tx: weft_proto::Sender,
    rx: weft_proto::Receiver,
    txbuf: Vec<u8>,
    rxbuf: Vec<u8>,
    epoch: std::time::Instant,
    send_proto: bool,
    recv_proto: bool,
}
impl Proto {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }
}
impl End for Proto {
    fn send(&mut self, msg: &[u8]) {
        if !self.send_proto {
            // A DATA datagram's layout without the sender: 40 bytes of header, then the message.
            self.txbuf[40..40 + msg.len()].copy_from_slice(msg);
            return self.s.sendto(&self.txbuf[..40 + msg.len()]);
        }
        let now = self.now();
        self.tx.offer(msg).unwrap();
        while let Some(tr) = self.tx.poll_transmit(now, &mut self.txbuf) {
            self.s.sendto(&self.txbuf[..tr.len]);
        }
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        loop {
            if let Some((n, src)) = self.s.try_recv(&mut self.rxbuf) {
                if !self.recv_proto {
                    if n < 40 {
                        continue; // SETUP
                    }
                    buf[..n - 40].copy_from_slice(&self.rxbuf[40..n]);
                    return n - 40;
                }
                let now = self.now();
                self.rx.handle_datagram(now, src, &self.rxbuf[..n]);
                while let Some(e) = self.rx.poll_event() {
                    if let Event::Message { message: m, .. } = e {
                        buf[..m.len()].copy_from_slice(m);
                        return m.len();
                    }
                }
            }
            std::hint::spin_loop();
        }
    }
}

/// The bench's floor-mcast: one group socket sends and receives, `recv` without the source.
struct Floor(UdpSocket, SocketAddrV4);
impl End for Floor {
    fn send(&mut self, msg: &[u8]) {
        let mut m = [0u8; 64];
        m[..msg.len()].copy_from_slice(msg);
        self.0.send_to(&m, self.1).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        loop {
            match self.0.recv(buf) {
                Ok(_) => return 32,
                Err(_) => std::hint::spin_loop(),
            }
        }
    }
}

/// weft_net's Publication and Subscription as the bench's udp-pingpong uses them.
struct Net {
    p: weft_net::Publication,
    s: weft_net::Subscription,
}
impl End for Net {
    fn send(&mut self, msg: &[u8]) {
        while self.p.offer(msg).is_err() {
            self.p.do_work();
        }
        self.p.do_work();
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        let mut spins = 0u32;
        loop {
            self.s.do_work();
            while let Some(e) = self.s.poll_event() {
                if let Event::Message { message: m, .. } = e {
                    buf[..m.len()].copy_from_slice(m);
                    return m.len();
                }
            }
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 {
                self.p.do_work();
            }
        }
    }
}

fn make(kind: &str, out: SocketAddrV4, inn: SocketAddrV4, seed: u64) -> Box<dyn End> {
    let proto = |sp, rp, rxq| {
        let mut hdr = vec![0u8; 2048];
        hdr[..40].fill(0xAB);
        Box::new(Proto {
            s: sock_rxq(out, inn, rxq),
            tx: weft_proto::Sender::new(scfg(seed)).unwrap(),
            rx: weft_proto::Receiver::new(rcfg(seed + 1)).unwrap(),
            txbuf: hdr,
            rxbuf: vec![0; 2048],
            epoch: std::time::Instant::now(),
            send_proto: sp,
            recv_proto: rp,
        }) as Box<dyn End>
    };
    match kind {
        "raw" => Box::new(Raw(sock(out, inn))),
        "raw-noname" => Box::new(RawNoName(sock(out, inn))),
        k if k.starts_with("raw-work:") => {
            let v: Vec<usize> = k[9..].split(',').map(|x| x.parse().unwrap()).collect();
            Box::new(RawWork(sock(out, inn), v[0] as u64, v[1], vec![0; 4 << 20], 0))
        }
        "raw-onesock" => Box::new(RawOneSock(sock(out, inn))),
        "floor" => {
            let (s, _) = weft_net::group_socket(inn, &weft_net::SocketOptions::default()).unwrap();
            Box::new(Floor(s.into(), out))
        }
        "net-default" => {
            let p = weft_net::Publication::open(&weft_net::ChannelConfig::new(out), SenderConfig::new(1, seed)).unwrap();
            let s = weft_net::Subscription::open(&weft_net::ChannelConfig::new(inn), ReceiverConfig::new(1, seed + 1)).unwrap();
            Box::new(Net { p, s })
        }
        "proto" => proto(true, true, false),
        "proto-rxq" => proto(true, true, true),
        "proto-send" => proto(true, false, false),
        "net" => {
            let mut c = weft_net::ChannelConfig::new(out);
            c.control_poll_interval = std::time::Duration::from_micros(env("CTRL_US", 10) as u64);
            let p = weft_net::Publication::open(&c, scfg(seed)).unwrap();
            let s = weft_net::Subscription::open(&weft_net::ChannelConfig::new(inn), rcfg(seed + 1)).unwrap();
            Box::new(Net { p, s })
        }
        k => panic!("unknown kind {k}"),
    }
}

const BLOCK: usize = 2000;

/// The protocol's own work per message in one thread, no sockets: offer, poll_transmit,
/// handle_datagram, poll_event (and the clock reads the endpoints make).
fn cpu() {
    let mut tx = weft_proto::Sender::new(scfg(1)).unwrap();
    let mut rx = weft_proto::Receiver::new(rcfg(2)).unwrap();
    let src: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let epoch = std::time::Instant::now();
    let mut buf = vec![0u8; 2048];
    let mut out = [0u8; 64];
    let msg = [5u8; 32];
    for round in 0..5 {
        let n = 2_000_000u64;
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            let now = epoch.elapsed().as_nanos() as u64 + 1;
            tx.offer(&msg).unwrap();
            while let Some(t) = tx.poll_transmit(now, &mut buf) {
                let now = epoch.elapsed().as_nanos() as u64 + 1;
                rx.handle_datagram(now, src, &buf[..t.len]);
                while let Some(e) = rx.poll_event() {
                    if let Event::Message { message: m, .. } = e {
                        out[..m.len()].copy_from_slice(m);
                    }
                }
            }
        }
        println!("round {round}: {:.1} ns per message", t0.elapsed().as_nanos() as f64 / n as f64);
    }
}

fn main() {
    if std::env::var_os("CPU").is_some() {
        return cpu();
    }
    let mut kinds: Vec<String> = std::env::args().skip(1).collect();
    if kinds.is_empty() {
        kinds = ["raw", "proto", "proto-send", "net"].map(String::from).to_vec();
    }

    let rounds = env("ROUNDS", 20);
    let mut a = Vec::new();
    let mut b = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        let (p, q) = (group(2 * i as u8 + 1), group(2 * i as u8 + 2));
        b.push(make(k, q, p, 100 + 10 * i as u64));
        a.push(make(k, p, q, 200 + 10 * i as u64));
    }
    let echo = std::thread::spawn(move || {
        pin(1);
        let mut b = b;
        let mut buf = [0u8; 2048];
        for _ in 0..rounds {
            for e in b.iter_mut() {
                for _ in 0..BLOCK {
                    let n = e.recv(&mut buf);
                    let mut m = [0u8; 64];
                    m[..n].copy_from_slice(&buf[..n]);
                    e.send(&m[..n]);
                }
            }
        }
    });
    pin(0);
    let mut rt = vec![vec![0u64; rounds * BLOCK]; kinds.len()];
    let mut buf = [0u8; 2048];
    let mut msg = [0u8; 32];
    for r in 0..rounds {
        for (k, e) in a.iter_mut().enumerate() {
            for i in 0..BLOCK {
                msg[..8].copy_from_slice(&((r * BLOCK + i) as u64).to_le_bytes());
                let t0 = t();
                e.send(&msg);
                let n = e.recv(&mut buf);
                rt[k][r * BLOCK + i] = t() - t0;
                assert_eq!(&buf[..n], &msg[..], "{}", kinds[k]);
            }
        }
    }
    echo.join().unwrap();
    let (c0, i0) = (t(), std::time::Instant::now());
    std::thread::sleep(std::time::Duration::from_millis(100));
    let ns = i0.elapsed().as_nanos() as f64 / (t() - c0) as f64;
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.partial_cmp(y).unwrap());
        v[v.len() / 2]
    };
    let block_med = |k: usize, r: usize| {
        let mut v: Vec<f64> = rt[k][r * BLOCK..(r + 1) * BLOCK].iter().map(|&x| x as f64).collect();
        med(&mut v)
    };
    print!("{} p50 {:.0} ns;", kinds[0], med(&mut (1..rounds).map(|r| block_med(0, r) * ns).collect()));
    for k in 1..kinds.len() {
        let mut ratios: Vec<f64> = (1..rounds).map(|r| block_med(k, r) / block_med(0, r)).collect();
        print!("  {} {:.3}", kinds[k], med(&mut ratios));
    }
    println!();
}
