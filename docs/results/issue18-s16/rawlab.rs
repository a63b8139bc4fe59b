// Raw multicast round-trip variants (issue 18, session 16): which socket set-up makes the
// kernel's path longer. Not built by the project: copy to benches/weft-bench/examples/ and
//   ROUNDS=20 cargo run --release -p weft-bench --example rawlab
// Needs `nix.workspace = true` under [dev-dependencies] of weft-bench.
#![allow(clippy::all, missing_docs)]
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;

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
    SocketAddrV4::new(Ipv4Addr::new(239, 77, 102, last), free_port())
}
struct End {
    tx: UdpSocket,
    rx: UdpSocket,
    to: SocketAddrV4,
    len: usize,
}
fn gsock(g: SocketAddrV4, rxq: bool) -> UdpSocket {
    let (s, _) = weft_net::group_socket(g, &weft_net::SocketOptions::default()).unwrap();
    if rxq {
        nix::sys::socket::setsockopt(&s.as_fd(), nix::sys::socket::sockopt::RxqOvfl, &1).unwrap();
    }
    s.into()
}
fn usock() -> UdpSocket {
    let (s, _) = weft_net::unicast_socket(0, &weft_net::SocketOptions::default()).unwrap();
    s.into()
}
/// kind: 0 = one group socket sends and receives; 1 = a unicast socket sends;
/// 2 = 1 + SO_RXQ_OVFL on the receiving socket; 3 = 0 with 72-byte datagrams
fn ends(kind: usize, n: u8) -> (End, End) {
    let (p, q) = (group(n), group(n + 1));
    let len = if kind == 3 { 72 } else { 64 };
    let kind = if kind == 4 { 1 } else { kind };
    let mk = |inn: SocketAddrV4, out: SocketAddrV4| {
        let rx = gsock(inn, kind == 2);
        let tx = if kind == 1 || kind == 2 { usock() } else { rx.try_clone().unwrap() };
        End { tx, rx, to: out, len }
    };
    (mk(q, p), mk(p, q))
}
fn spin_recv(s: &UdpSocket, buf: &mut [u8]) -> usize {
    loop {
        match s.recv(buf) {
            Ok(n) => return n,
            Err(_) => std::hint::spin_loop(),
        }
    }
}
const BLOCK: usize = 2000;
const KINDS: usize = 5;
const RING: usize = 4 << 20;
fn main() {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut a = Vec::new();
    let mut b = Vec::new();
    for k in 0..KINDS {
        let (x, y) = ends(k, 10 + 2 * k as u8);
        for e in [&x, &y] {
            e.rx.set_nonblocking(true).unwrap();
        }
        a.push(x);
        b.push(y);
    }
    let echo = std::thread::spawn(move || {
        pin(1);
        let mut buf = [0u8; 2048];
        let mut ring = vec![0u8; RING];
        let mut at = 0;
        for _ in 0..rounds {
            for (k, e) in b.iter().enumerate() {
                for _ in 0..BLOCK {
                    let n = spin_recv(&e.rx, &mut buf);
                    if k == 4 {
                        // as weft: the receiver files the datagram in its ring, the sender its reply in another
                        for _ in 0..2 {
                            if at + 128 > RING { at = 0; }
                            ring[at..at + n].copy_from_slice(&buf[..n]);
                            at += (n + 7) & !7;
                        }
                        std::hint::black_box(&ring);
                    }
                    e.tx.send_to(&buf[..n], e.to).unwrap();
                }
            }
        }
    });
    pin(0);
    let mut rt = vec![Vec::new(); KINDS];
    let mut sd = vec![Vec::new(); KINDS];
    let mut buf = [0u8; 2048];
    let msg = [7u8; 128];
    let mut ring = vec![0u8; RING];
    let mut at = 0;
    for r in 0..rounds {
        for (k, e) in a.iter().enumerate() {
            for _ in 0..BLOCK {
                let t0 = t();
                if k == 4 {
                    for _ in 0..2 {
                        if at + 128 > RING { at = 0; }
                        ring[at..at + e.len].copy_from_slice(&msg[..e.len]);
                        at += (e.len + 7) & !7;
                    }
                    std::hint::black_box(&ring);
                }
                e.tx.send_to(&msg[..e.len], e.to).unwrap();
                let t1 = t();
                spin_recv(&e.rx, &mut buf);
                let t2 = t();
                if r > 0 {
                    rt[k].push(t2 - t0);
                    sd[k].push(t1 - t0);
                }
            }
        }
    }
    echo.join().unwrap();
    let (c0, i0) = (t(), std::time::Instant::now());
    std::thread::sleep(std::time::Duration::from_millis(100));
    let ns = i0.elapsed().as_nanos() as f64 / (t() - c0) as f64;
    let names = ["group-socket", "unicast-tx", "unicast-tx+rxq", "72-byte", "unicast-tx+rings"];
    for k in 0..KINDS {
        rt[k].sort();
        sd[k].sort();
        println!(
            "{:16} send {:6.0}  RT {:6.0}",
            names[k],
            sd[k][sd[k].len() / 2] as f64 * ns,
            rt[k][rt[k].len() / 2] as f64 * ns
        );
    }
}
