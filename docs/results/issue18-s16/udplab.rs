// UDP round-trip decomposition (issue 18, session 16). Not built by the project: to run,
// copy to benches/weft-bench/examples/udplab.rs and
//   ROUNDS=10 cargo run --release -p weft-bench --example udplab
// Interleaves blocks of raw multicast and weft round trips between two pinned threads and
// stamps (TSC, synchronized across cores) each hop's steps: ping send returned, echo
// detected (receive returned a datagram), echo message in hand, echo send returned, reply
// detected, reply in hand. Prints the median of each step's length per kind.
// Needs `libc = "0.2"` under [dev-dependencies] of weft-bench. The finer split quoted in
// docs/benchmarks.md (sendto alone, handle_datagram, ...) came from rdtsc stamps added to
// weft-net for the run and removed after it.
#![allow(clippy::all, missing_docs)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use weft_net::{ChannelConfig, Publication, Subscription};
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
    SocketAddrV4::new(Ipv4Addr::new(239, 77, 101, last), free_port())
}
fn raw(group: SocketAddrV4, to: SocketAddrV4) -> (UdpSocket, SocketAddrV4) {
    let (s, _) = weft_net::group_socket(group, &weft_net::SocketOptions::default()).unwrap();
    (s.into(), to)
}
fn spin_recv(s: &UdpSocket, buf: &mut [u8]) -> usize {
    loop {
        match s.recv(buf) {
            Ok(n) => return n,
            Err(_) => std::hint::spin_loop(),
        }
    }
}
fn side(out: SocketAddrV4, inn: SocketAddrV4, seed: u64) -> (Publication, Subscription) {
    let mut c = ChannelConfig::new(out);
    if let Ok(us) = std::env::var("CTRL_US") { c.control_poll_interval = std::time::Duration::from_micros(us.parse().unwrap()); }
    let p = Publication::open(&c, SenderConfig::new(1, seed)).unwrap();
    let s = Subscription::open(&ChannelConfig::new(inn), ReceiverConfig::new(1, seed + 1)).unwrap();
    (p, s)
}
/// Returns (detected, in hand).
fn await_msg(p: &mut Publication, s: &mut Subscription, buf: &mut [u8]) -> (u64, u64, usize) {
    let mut spins = 0u32;
    let mut det = 0;
    loop {
        if s.do_work() > 0 && det == 0 {
            det = t();
        }
        while let Some(e) = s.poll_event() {
            if let Event::Message { message: m, .. } = e {
                buf[..m.len()].copy_from_slice(m);
                return (det, t(), m.len());
            }
        }
        spins = spins.wrapping_add(1);
        if spins % 64 == 0 {
            p.do_work();
        }
    }
}
fn send(p: &mut Publication, msg: &[u8]) {
    while p.offer(msg).is_err() {
        p.do_work();
    }
    p.do_work();
}
thread_local! { static OFF: std::cell::RefCell<Vec<u64>> = std::cell::RefCell::new(Vec::with_capacity(1<<20)); }
const BLOCK: usize = 2000;
const KINDS: usize = 5;
// stamps per round trip: [a_send_done, b_det, b_hand, b_send_done, a_det, a_hand] + t0
fn main() {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let (mp, mq) = (group(1), group(2));
    let ma = raw(mq, mp);
    let mb = raw(mp, mq);
    let (wp, wq) = (group(3), group(4));
    let (mut ap, mut asub) = side(wp, wq, 10);
    let (mut bp, mut bsub) = side(wq, wp, 20);
    let (xp, xq) = (group(5), group(6));
    let (xap, xasub) = side(xp, xq, 30);
    let (xbp, xbsub) = side(xq, xp, 40);
    use std::os::fd::{AsRawFd};
    use weft_net::Waitable;
    let xa = (xap.fd().as_raw_fd(), xasub.fd().as_raw_fd(), xp);
    let xb = (xbp.fd().as_raw_fd(), xbsub.fd().as_raw_fd(), xq);
    fn fsend(fd: i32, buf: &[u8], to: SocketAddrV4) {
        let s: std::net::SocketAddr = to.into();
        let sa = socket2::SockAddr::from(s);
        let r = unsafe { libc::sendto(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, sa.as_ptr().cast(), sa.len()) };
        assert!(r > 0);
    }
    fn frecv2(fd: i32, buf: &mut [u8]) -> usize {
        loop {
            std::hint::black_box(std::time::Instant::now());
            std::hint::black_box(std::time::Instant::now());
            let r = unsafe { libc::recvfrom(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, std::ptr::null_mut(), std::ptr::null_mut()) };
            if r > 0 { return r as usize; }
            std::hint::spin_loop();
        }
    }
    fn frecv(fd: i32, buf: &mut [u8]) -> usize {
        loop {
            let r = unsafe { libc::recvfrom(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, std::ptr::null_mut(), std::ptr::null_mut()) };
            if r > 0 { return r as usize; }
            std::hint::spin_loop();
        }
    }
    struct PEnd { s: weft_proto::Sender, r: weft_proto::Receiver, tx: i32, rx: i32, to: SocketAddrV4, txbuf: Vec<u8>, _keep: (socket2::Socket, socket2::Socket), epoch: std::time::Instant }
    fn pend(out: SocketAddrV4, inn: SocketAddrV4, seed: u64) -> PEnd {
        let o = weft_net::SocketOptions::default();
        let (tx, _) = weft_net::unicast_socket(0, &o).unwrap();
        let (rx, _) = weft_net::group_socket(inn, &o).unwrap();
        let mut sc = SenderConfig::new(1, seed);
        sc.flow = weft_proto::FlowControl::None;
        let mut rc = ReceiverConfig::new(1, seed + 1);
        if let Ok(n) = std::env::var("PBUF") { sc.buffer_datagrams = n.parse().unwrap(); rc.buffer_datagrams = n.parse().unwrap(); }
        PEnd { s: weft_proto::Sender::new(sc).unwrap(), r: weft_proto::Receiver::new(rc).unwrap(), tx: tx.as_raw_fd(), rx: rx.as_raw_fd(), to: out, txbuf: vec![0; 2048], _keep: (tx, rx), epoch: std::time::Instant::now() }
    }
    impl PEnd {
        fn now(&self) -> u64 { self.epoch.elapsed().as_nanos() as u64 + 1 }
        fn send(&mut self, msg: &[u8]) {
            let now = self.now();
            self.s.offer(msg).unwrap();
            while let Some(t) = self.s.poll_transmit(now, &mut self.txbuf) {
                let s: std::net::SocketAddr = self.to.into();
                let sa = socket2::SockAddr::from(s);
                let r = unsafe { libc::sendto(self.tx, self.txbuf.as_ptr().cast(), t.len, libc::MSG_DONTWAIT, sa.as_ptr().cast(), sa.len()) };
                assert!(r > 0);
            }
        }
        fn recv(&mut self, buf: &mut [u8]) -> (u64, usize) {
            let mut rb = [0u8; 2048];
            loop {
                let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                let mut nl = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                let r = unsafe { libc::recvfrom(self.rx, rb.as_mut_ptr().cast(), rb.len(), libc::MSG_DONTWAIT, (&mut name as *mut libc::sockaddr_in).cast(), &mut nl) };
                if r > 0 {
                    let d = t();
                    let now = self.now();
                    let src = std::net::SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)), u16::from_be(name.sin_port)));
                    self.r.handle_datagram(now, src, &rb[..r as usize]);
                    while let Some(e) = self.r.poll_event() {
                        if let Event::Message { message: m, .. } = e {
                            buf[..m.len()].copy_from_slice(m);
                            return (d, m.len());
                        }
                    }
                }
                std::hint::spin_loop();
            }
        }
    }
    let (pp, pq) = (group(7), group(8));
    let mut pa = pend(pp, pq, 50);
    let mut pb = pend(pq, pp, 60);
    let n = rounds * BLOCK;
    let echo = std::thread::spawn(move || {
        pin(1);
        let mut st = vec![[0u64; 3]; n * KINDS];
        let mut buf = vec![0u8; 65536];
        for r in 0..rounds {
            for i in 0..BLOCK {
                let k = (r * BLOCK + i) * KINDS;
                let n = spin_recv(&mb.0, &mut buf);
                let d = t();
                mb.0.send_to(&buf[..n], mb.1).unwrap();
                st[k] = [d, d, t()];
            }
            for i in 0..BLOCK {
                let k = (r * BLOCK + i) * KINDS + 1;
                let (d, h, n) = await_msg(&mut bp, &mut bsub, &mut buf);
                send(&mut bp, &buf[..n]);
                st[k] = [d, h, t()];
            }
            for i in 0..BLOCK {
                let k = (r * BLOCK + i) * KINDS + 2;
                let n = frecv(xb.1, &mut buf);
                let d = t();
                fsend(xb.0, &buf[..n], xb.2);
                st[k] = [d, d, t()];
            }
            for i in 0..BLOCK {
                let k = (r * BLOCK + i) * KINDS + 4;
                let (d, n) = pb.recv(&mut buf);
                let h = t();
                let mut m2 = [0u8; 32]; m2[..n].copy_from_slice(&buf[..n]); pb.send(&m2[..n]);
                st[k] = [d, h, t()];
            }
            for i in 0..BLOCK {
                let k = (r * BLOCK + i) * KINDS + 3;
                let n = frecv2(xb.1, &mut buf);
                let d = t();
                fsend(xb.0, &buf[..n], xb.2);
                st[k] = [d, d, t()];
            }
        }
        for _ in 0..1000 {
            bp.do_work();
            bsub.do_work();
        }
        (st, ())
    });
    pin(0);
    let mut st = vec![[0u64; 4]; n * KINDS];
    let mut buf = vec![0u8; 65536];
    let mut rawm = [0u8; 64];
    let mut msg = [0u8; 32];
    for r in 0..rounds {
        for i in 0..BLOCK {
            let k = (r * BLOCK + i) * KINDS;
            rawm[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let t0 = t();
            ma.0.send_to(&rawm, ma.1).unwrap();
            let s = t();
            spin_recv(&ma.0, &mut buf);
            let d = t();
            st[k] = [t0, s, d, d];
        }
        for i in 0..BLOCK {
            let k = (r * BLOCK + i) * KINDS + 1;
            msg[..8].copy_from_slice(&((r * BLOCK + i) as u64).to_le_bytes());
            let t0 = t();
            while ap.offer(&msg).is_err() {
                ap.do_work();
            }
            let o = t();
            ap.do_work();
            let s = t();
    OFF.with(|v| v.borrow_mut().push(o - t0));
            let (d, h, _) = await_msg(&mut ap, &mut asub, &mut buf);
            st[k] = [t0, s, d, h];
        }
        for i in 0..BLOCK {
            let k = (r * BLOCK + i) * KINDS + 2;
            rawm[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let t0 = t();
            fsend(xa.0, &rawm, xa.2);
            let s = t();
            frecv(xa.1, &mut buf);
            let d = t();
            st[k] = [t0, s, d, d];
        }
        for i in 0..BLOCK {
            let k = (r * BLOCK + i) * KINDS + 4;
            msg[..8].copy_from_slice(&((r * BLOCK + i) as u64).to_le_bytes());
            let t0 = t();
            pa.send(&msg);
            let s = t();
            let (d, _) = pa.recv(&mut buf);
            st[k] = [t0, s, d, t()];
        }
        for i in 0..BLOCK {
            let k = (r * BLOCK + i) * KINDS + 3;
            rawm[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let t0 = t();
            fsend(xa.0, &rawm, xa.2);
            let s = t();
            frecv2(xa.1, &mut buf);
            let d = t();
            st[k] = [t0, s, d, d];
        }
    }
    let (bst, _) = echo.join().unwrap();
    // calibrate
    let (c0, i0) = (t(), std::time::Instant::now());
    std::thread::sleep(std::time::Duration::from_millis(100));
    let ns = i0.elapsed().as_nanos() as f64 / (t() - c0) as f64;
    let names = ["raw", "weft", "weftsock", "sock+clk", "proto-raw"];
    OFF.with(|v| { let mut v = v.borrow_mut(); v.sort(); println!("offer alone: {:.0} ns", v[v.len()/2] as f64 * ns); });
    println!("kind   a_send   wire_ab   b_handle  b_send   wire_ba  a_handle   RT      (median ns)");
    let mut ratios = vec![Vec::new(); KINDS];
    for r in 1..rounds {
        let med = |k: usize| { let mut v: Vec<u64> = (r * BLOCK..(r + 1) * BLOCK).map(|j| { let a = st[j * KINDS + k]; a[3] - a[0] }).collect(); v.sort(); v[v.len() / 2] as f64 };
        let base = med(0);
        for k in 0..KINDS { ratios[k].push(med(k) / base); }
    }
    print!("ratio to raw, median of {} blocks:", rounds - 1);
    for k in 0..KINDS { let v = &mut ratios[k]; v.sort_by(|x, y| x.partial_cmp(y).unwrap()); print!("  {} {:.3}", names[k], v[v.len() / 2]); }
    println!();
    for k in 0..KINDS {
        let mut cols: Vec<Vec<f64>> = vec![Vec::new(); 7];
        for j in (BLOCK * 2)..n {
            let a = st[j * KINDS + k];
            let b = bst[j * KINDS + k];
            let d = |x: u64, y: u64| (y as i64 - x as i64) as f64 * ns;
            cols[0].push(d(a[0], a[1]));
            cols[1].push(d(a[1], b[0]));
            cols[2].push(d(b[0], b[1]));
            cols[3].push(d(b[1], b[2]));
            cols[4].push(d(b[2], a[2]));
            cols[5].push(d(a[2], a[3]));
            cols[6].push(d(a[0], a[3]));
        }
        print!("{:6}", names[k]);
        for c in cols.iter_mut() {
            c.sort_by(|x, y| x.partial_cmp(y).unwrap());
            print!(" {:8.0}", c[c.len() / 2]);
        }
        println!();
    }
}
