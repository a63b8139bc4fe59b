//! Batched datagram IO: `recvmmsg` and `sendmmsg`, one syscall for up to
//! [`BATCH`] datagrams.
//!
//! The message headers, iovecs and address buffers are allocated once and point
//! into this struct's own heap buffers, so a call only resets the few fields the
//! kernel overwrites. nix's `recvmmsg`/`sendmmsg` wrappers rebuild the iovecs per
//! call and read uninitialized addresses when iterating `sendmmsg` results; these
//! calls use libc directly instead. No control messages are asked for: the
//! kernel's drop counter is read with [`kernel_drops`] when counters are wanted:
//! exact at that moment, where `SO_RXQ_OVFL` (the counter as a control message)
//! only came with batches, never with a single datagram's `recvfrom`.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

/// Datagrams per syscall.
pub const BATCH: usize = 32;

fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain integers; all-zero is a valid value.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
        u16::from_be(s.sin_port),
    )
}

/// Receives datagrams in batches.
#[derive(Debug)]
pub struct RecvBatch {
    hdrs: Box<[libc::mmsghdr]>,
    _iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_in]>,
    buf: Box<[u8]>,
    slot: usize,
    count: usize,
    /// Datagrams the next call asks for: 1 while traffic is sparse, [`BATCH`] while
    /// it streams.
    vlen: usize,
    /// Whether the previous call found a datagram.
    last_hit: bool,
    /// Whether the last call read the datagrams' source addresses.
    named: bool,
}

// SAFETY: the raw pointers in `hdrs` and `_iovs` point only into this struct's
// own boxed buffers, which move with it and are never shared.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Buffers for [`BATCH`] datagrams of up to `slot` bytes each; a longer one is
    /// received truncated and reported as such.
    pub fn new(slot: usize) -> Self {
        let mut buf = vec![0u8; BATCH * slot].into_boxed_slice();
        // SAFETY: sockaddr_in, iovec and mmsghdr are plain integers and pointers;
        // all-zero is a valid value of each.
        let mut names: Box<[libc::sockaddr_in]> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut iovs: Box<[libc::iovec]> = (0..BATCH)
            .map(|i| libc::iovec {
                iov_base: buf[i * slot..].as_mut_ptr().cast(),
                iov_len: slot,
            })
            .collect();
        let hdrs = (0..BATCH)
            .map(|i| {
                // SAFETY: as above, all-zero is a valid mmsghdr.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_iov = &mut iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
                h
            })
            .collect();
        Self {
            hdrs,
            _iovs: iovs,
            names,
            buf,
            slot,
            count: 0,
            vlen: BATCH,
            last_hit: false,
            named: false,
        }
    }

    /// Receives up to [`BATCH`] datagrams without blocking; `Ok(0)` when none is
    /// waiting. Never allocates.
    ///
    /// While traffic is sparse it asks for one datagram at a time: a `recvmmsg`
    /// for 32 that finds one goes on to look for a second, which costs a busy-polled
    /// round trip over loopback about 15 %. Two calls in a row that find data (or
    /// one that finds several) switch back to full batches.
    ///
    /// A single datagram is read without its source address unless
    /// `with_source`: the kernel's copy of the address costs a loopback hop
    /// about 60 ns here (docs/benchmarks.md, "Issue 18, sixth round"). Batches
    /// always carry sources.
    pub fn recv(&mut self, fd: RawFd, with_source: bool) -> io::Result<usize> {
        self.count = 0;
        self.named = with_source || self.vlen > 1;
        for h in self.hdrs[..self.vlen].iter_mut() {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the lengths it states
        // (iovec: `slot` bytes of `buf`; name: one sockaddr_in, `msg_namelen` just
        // reset to its size; no control buffer), all owned by `self`, which is
        // borrowed mutably for the call. recvfrom writes at most `slot` bytes at
        // the start of `buf` (which holds BATCH slots) and one name, or none when
        // given null pointers for it.
        let n = unsafe {
            if self.vlen == 1 {
                // One datagram: recvfrom, whose kernel path copies no message header
                // (an empty busy-poll costs ~60 % of recvmsg's). MSG_TRUNC makes it
                // return the datagram's full length.
                let h = &mut self.hdrs[0];
                let (name, namelen) = if self.named {
                    (h.msg_hdr.msg_name, &mut h.msg_hdr.msg_namelen as *mut _)
                } else {
                    (std::ptr::null_mut(), std::ptr::null_mut())
                };
                let r = libc::recvfrom(
                    fd,
                    self.buf.as_mut_ptr().cast(),
                    self.slot,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    name.cast(),
                    namelen,
                );
                if r >= 0 {
                    if r as usize > self.slot {
                        h.msg_hdr.msg_flags = libc::MSG_TRUNC;
                    }
                    h.msg_len = r as libc::c_uint;
                }
                r.min(1) as libc::c_int
            } else {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    self.vlen as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.vlen = 1;
            self.last_hit = false;
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        self.count = n as usize;
        // Streaming: two calls in a row found data, or one found several.
        // Sparse (a ping-pong): a hit after empty calls stays on one datagram.
        self.vlen = if self.count >= 2 || (self.count == 1 && self.last_hit) {
            BATCH
        } else {
            1
        };
        self.last_hit = self.count > 0;
        Ok(self.count)
    }

    /// Datagrams received by the last [`recv`](Self::recv).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the last `recv` got nothing.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i` of the last `recv` and its source (if that call read
    /// sources), or `None` if it was longer than a slot (truncated by the kernel).
    pub fn get(&self, i: usize) -> Option<(&[u8], Option<SocketAddrV4>)> {
        let h = &self.hdrs[..self.count][i];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = (h.msg_len as usize).min(self.slot);
        Some((
            &self.buf[i * self.slot..i * self.slot + len],
            self.named.then(|| from_sockaddr(&self.names[i])),
        ))
    }
}

/// The socket's drop counter: datagrams the kernel dropped on arrival, nearly
/// always because the receive buffer was full (`SO_MEMINFO`, `sk_drops`). One
/// `getsockopt`; exact at the call. `None` if the kernel refuses (before 4.6).
pub fn kernel_drops(fd: RawFd) -> Option<u64> {
    // SK_MEMINFO_VARS is 9 today; the kernel copies at most what is asked for.
    let mut info = [0u32; 16];
    let mut len = size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes that lives across the
    // call; the kernel writes at most `len` bytes and stores the length it wrote.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let drops = libc::SK_MEMINFO_DROPS as usize;
    (r == 0 && len as usize >= (drops + 1) * size_of::<u32>()).then(|| u64::from(info[drops]))
}

/// Datagrams queued for one `sendmmsg`.
#[derive(Debug)]
pub struct SendBatch {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_in]>,
    buf: Box<[u8]>,
    slot: usize,
    head: usize,
    len: usize,
}

// SAFETY: as for RecvBatch, the raw pointers point only into owned boxed buffers.
unsafe impl Send for SendBatch {}

/// What one [`SendBatch::flush`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams handed to the kernel.
    pub datagrams: usize,
    /// Their bytes.
    pub bytes: usize,
    /// Datagrams the kernel took only in part.
    pub short: usize,
    /// Datagrams dropped on an error other than "would block".
    pub errors: usize,
    /// Whether the socket's send buffer was full (the rest stay queued).
    pub would_block: bool,
}

impl SendBatch {
    /// Room for [`BATCH`] datagrams of up to `slot` bytes.
    pub fn new(slot: usize) -> Self {
        let mut buf = vec![0u8; BATCH * slot].into_boxed_slice();
        // SAFETY: all-zero is a valid sockaddr_in and mmsghdr (integers, pointers).
        let mut names: Box<[libc::sockaddr_in]> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut iovs: Box<[libc::iovec]> = (0..BATCH)
            .map(|i| libc::iovec {
                iov_base: buf[i * slot..].as_mut_ptr().cast(),
                iov_len: 0,
            })
            .collect();
        let hdrs = (0..BATCH)
            .map(|i| {
                // SAFETY: all-zero is a valid mmsghdr.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_iov = &mut iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h
            })
            .collect();
        Self {
            hdrs,
            iovs,
            names,
            buf,
            slot,
            head: 0,
            len: 0,
        }
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.head == self.len
    }

    /// Room for another datagram.
    pub fn has_room(&self) -> bool {
        self.len < BATCH
    }

    /// The next free slot, to write a datagram into before [`push`](Self::push).
    /// Panics if there is no room (a caller bug, not input).
    pub fn slot_mut(&mut self) -> &mut [u8] {
        assert!(self.has_room(), "SendBatch::slot_mut without room");
        let i = self.len;
        &mut self.buf[i * self.slot..(i + 1) * self.slot]
    }

    /// Queues the first `len` bytes of the slot from [`slot_mut`](Self::slot_mut) for `dest`.
    pub fn push(&mut self, len: usize, dest: SocketAddrV4) {
        assert!(self.has_room() && len <= self.slot, "SendBatch::push");
        let i = self.len;
        self.iovs[i].iov_len = len;
        self.names[i] = to_sockaddr(dest);
        self.len += 1;
    }

    /// Sends what is queued, without blocking. Datagrams the kernel refuses with
    /// "would block" stay queued for the next call; one refused with another error
    /// (no route, no buffer space) is dropped and counted: the protocol repairs it
    /// like any lost datagram. Never allocates.
    pub fn flush(&mut self, fd: RawFd) -> Flushed {
        let mut out = Flushed::default();
        while self.head < self.len {
            let pending = self.len - self.head;
            // SAFETY: headers head..len point at live iovecs (within `buf`) and
            // names owned by `self`, which is borrowed mutably for the call; sendto
            // reads the same iovec's bytes and name.
            let n = unsafe {
                if pending == 1 {
                    // One datagram: sendto, a shorter kernel path (no message
                    // header or iovec to copy in).
                    let h = &mut self.hdrs[self.head];
                    let iov = &self.iovs[self.head];
                    let r = libc::sendto(
                        fd,
                        iov.iov_base,
                        iov.iov_len,
                        libc::MSG_DONTWAIT,
                        h.msg_hdr.msg_name.cast(),
                        h.msg_hdr.msg_namelen,
                    );
                    if r >= 0 {
                        h.msg_len = r as libc::c_uint;
                    }
                    r.min(1) as libc::c_int
                } else {
                    libc::sendmmsg(
                        fd,
                        self.hdrs[self.head..].as_mut_ptr(),
                        pending as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                }
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        out.would_block = true;
                        return out;
                    }
                    _ => {
                        out.errors += 1;
                        self.head += 1;
                        continue;
                    }
                }
            }
            let sent = self.head..self.head + n as usize;
            for (h, iov) in self.hdrs[sent.clone()].iter().zip(&self.iovs[sent]) {
                out.bytes += h.msg_len as usize;
                if (h.msg_len as usize) < iov.iov_len {
                    out.short += 1;
                }
            }
            out.datagrams += n as usize;
            self.head += n as usize;
        }
        self.head = 0;
        self.len = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_round_trips_and_an_oversized_datagram_is_reported_truncated() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let mut send = SendBatch::new(256);
        for i in 0..BATCH {
            let n = i % 200 + 1;
            send.slot_mut()[..n].fill(i as u8);
            send.push(n, to);
        }
        assert!(!send.has_room());
        let f = send.flush(tx.as_raw_fd());
        assert_eq!((f.datagrams, f.short, f.errors), (BATCH, 0, 0));
        assert!(send.is_empty());
        tx.send_to(&[7u8; 300], to).unwrap();

        let mut recv = RecvBatch::new(256);
        let mut got = Vec::new();
        let mut truncated = 0;
        while got.len() + truncated < BATCH + 1 {
            recv.recv(rx.as_raw_fd(), true).unwrap();
            for i in 0..recv.len() {
                match recv.get(i) {
                    Some((d, from)) => {
                        assert_eq!(
                            from,
                            match tx.local_addr().unwrap() {
                                std::net::SocketAddr::V4(a) => Some(a),
                                _ => unreachable!(),
                            }
                        );
                        got.push(d.to_vec());
                    }
                    None => truncated += 1,
                }
            }
        }
        assert_eq!(truncated, 1);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.len(), i % 200 + 1);
            assert!(d.iter().all(|&b| b == i as u8));
        }
        assert_eq!(recv.recv(rx.as_raw_fd(), true).unwrap(), 0);
    }

    /// The sparse path (one datagram per call: `sendto`, `recvfrom`) reports
    /// lengths, sources and truncation like the batched one, and two hits in a row
    /// switch the receiver back to batches.
    #[test]
    fn single_datagrams_take_the_sparse_path_and_report_truncation() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let v4 = |a: std::net::SocketAddr| match a {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let (to, from) = (v4(rx.local_addr().unwrap()), v4(tx.local_addr().unwrap()));
        let mut send = SendBatch::new(512);
        let mut recv = RecvBatch::new(256);
        assert_eq!(
            recv.recv(rx.as_raw_fd(), true).unwrap(),
            0,
            "nothing sent yet"
        );
        for (len, fits) in [(10, true), (256, true), (300, false), (1, true)] {
            send.slot_mut()[..len].fill(len as u8);
            send.push(len, to);
            let f = send.flush(tx.as_raw_fd());
            assert_eq!((f.datagrams, f.bytes, f.short), (1, len, 0));
            assert_eq!(recv.vlen, 1, "sparse traffic asks for one datagram");
            assert_eq!(recv.recv(rx.as_raw_fd(), true).unwrap(), 1);
            match recv.get(0) {
                Some((d, src)) => {
                    assert!(fits, "a {len}-byte datagram in a 256-byte slot");
                    assert_eq!((d.len(), src), (len, Some(from)));
                    assert!(d.iter().all(|&b| b == len as u8));
                }
                None => assert!(!fits, "{len} bytes reported truncated"),
            }
            assert_eq!(recv.recv(rx.as_raw_fd(), true).unwrap(), 0);
        }
        tx.send_to(&[9; 20], to).unwrap();
        assert_eq!(recv.recv(rx.as_raw_fd(), false).unwrap(), 1);
        assert_eq!(
            recv.get(0),
            Some((&[9u8; 20][..], None)),
            "read without its source"
        );
        assert_eq!(recv.recv(rx.as_raw_fd(), false).unwrap(), 0);
        for _ in 0..2 {
            tx.send_to(&[1; 8], to).unwrap();
        }
        assert_eq!(recv.recv(rx.as_raw_fd(), true).unwrap(), 1);
        assert_eq!(recv.recv(rx.as_raw_fd(), true).unwrap(), 1);
        assert_eq!(recv.vlen, BATCH, "two hits in a row: streaming");
    }
}
