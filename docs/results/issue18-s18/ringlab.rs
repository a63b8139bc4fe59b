// Bare-ring experiments of issue 18, sessions 14 and 15 (AMD EPYC VM; docs/shm.md, "fourth round" and "fifth round"),
// with session 18's additions: every round prints its designs' rates between two probes of the cross-core
// floor (mean round trip of one cache line, ns), and idx/stamp readers spin LAB_SLIP pauses (default 256) after
// an empty poll, as weft-bench's readers do. Session 18 ran
//   N_MSGS=5000000 ROUNDS=300 ringlab dis:256 weft:256 idx72 stamp72   (regime-lab.txt)
// Not built by the project: to run, copy to benches/weft-bench/examples/ringlab.rs and
//   N_MSGS=5000000 ROUNDS=15 cargo run --release -p weft-bench --example ringlab -- dis weft stamp72 stamp72:8
// (the first design named is the reference of the ratios; DESIGN:FLAGS sets a variant's flags: for dis and weft, the pause hints spun after an empty poll; for stamp, see its comment, and 32 = advance by the loaded length, 64 = by a predicted stride). Each design streams 64-byte messages (sequence number
// then 56 constant bytes) between two pinned threads over a 256 KiB ring.
#![allow(clippy::all, unsafe_code, missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn pin(c: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: c });
}

fn slip() -> u32 {
    std::env::var("LAB_SLIP").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

fn n_msgs() -> u64 {
    std::env::var("N_MSGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000_000)
}

const CAP: usize = 256 * 1024;

#[repr(C, align(128))]
struct Pad(AtomicU64);

/// A 256 KiB data block plus control words, page-aligned + `shift`.
struct Block {
    base: *mut u8,
    data: *mut u8,
    layout: std::alloc::Layout,
}
unsafe impl Send for Block {}
unsafe impl Sync for Block {}
impl Block {
    fn new(shift: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(CAP + 8192, 4096).unwrap();
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        Block {
            base,
            data: unsafe { base.add(shift) },
            layout,
        }
    }
    #[inline(always)]
    fn word(&self, off: usize) -> &AtomicU64 {
        unsafe { &*(self.data.add(off & (CAP - 1)) as *const AtomicU64) }
    }
}
impl Drop for Block {
    fn drop(&mut self) {
        unsafe { std::alloc::dealloc(self.base, self.layout) }
    }
}

struct Ctl {
    tail: Pad,
    head: Pad,
}

fn timed(
    n: u64,
    consumer: impl FnOnce(&mut dyn FnMut(u64)),
    producer: impl FnOnce() + Send + 'static,
) -> f64 {
    let p = std::thread::spawn(move || {
        pin(1);
        producer()
    });
    pin(0);
    let mut t0 = None;
    let mut t1 = None;
    let warm = n / 5;
    let mut mark = |got: u64| {
        if got == warm {
            t0 = Some(Instant::now());
        } else if got == n {
            t1 = Some(Instant::now());
        }
    };
    consumer(&mut mark);
    p.join().unwrap();
    (n - warm) as f64 / (t1.unwrap() - t0.unwrap()).as_secs_f64() / 1e6
}

#[inline(always)]
fn write_msg(b: &Block, off: usize, seq: u64) {
    // 64 bytes: the sequence number and 7 constant words.
    b.word(off).store(seq, Ordering::Relaxed);
    for w in 1..8 {
        b.word(off + w * 8)
            .store(0xa5a5_a5a5_a5a5_a5a5, Ordering::Relaxed);
    }
}

/// The disruptor crate, as weft-bench's disruptor-throughput.
fn dis(n: u64, slip: u32) -> f64 {
    use disruptor::{build_single_producer, BusySpin, Polling, Producer};
    let (mut poller, builder) =
        build_single_producer(4096, || [0u8; 64], BusySpin).new_event_poller();
    let mut tx = builder.build();
    timed(
        n,
        move |mark| {
            let mut next = 0u64;
            while next < n {
                match poller.poll() {
                    Ok(mut ev) => {
                        for e in &mut ev {
                            assert_eq!(u64::from_le_bytes(e[..8].try_into().unwrap()), next);
                            next += 1;
                            mark(next);
                        }
                    }
                    Err(Polling::NoEvents) => {
                        for _ in 0..slip {
                            std::hint::spin_loop()
                        }
                    }
                    Err(Polling::Shutdown) => break,
                }
            }
        },
        move || {
            let mut msg = [0xa5u8; 64];
            for seq in 0..n {
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                tx.publish(|e| e.copy_from_slice(&msg));
            }
        },
    )
}

/// Index-published byte ring: `frame` bytes a message (8-byte length header
/// + 64 payload, padded), producer stores tail per frame, consumer reads
/// up to tail and stores head once per poll.
fn idx(n: u64, frame: usize, shift: usize, batch: u64) -> f64 {
    let b = Arc::new(Block::new(shift));
    let c = Arc::new(Ctl {
        tail: Pad(AtomicU64::new(0)),
        head: Pad(AtomicU64::new(0)),
    });
    let (b2, c2) = (b.clone(), c.clone());
    timed(
        n,
        move |mark| {
            let mut head = 0u64;
            let mut next = 0u64;
            while next < n {
                let tail = c.tail.0.load(Ordering::Acquire);
                if tail == head {
                    for _ in 0..slip() {
                        std::hint::spin_loop();
                    }
                    continue;
                }
                while head < tail {
                    let off = head as usize & (CAP - 1);
                    let len = b.word(off).load(Ordering::Relaxed);
                    if len == 0 {
                        // padding to the end
                        head += (CAP - off) as u64;
                        continue;
                    }
                    assert_eq!(b.word(off + 8).load(Ordering::Relaxed), next);
                    next += 1;
                    mark(next);
                    head += frame as u64;
                }
                c.head.0.store(head, Ordering::Release);
            }
        },
        move || {
            let (b, c) = (b2, c2);
            let mut tail = 0u64;
            let mut cached_head = 0u64;
            let mut seq = 0;
            while seq < n {
                let mut made = 0;
                while made < batch && seq < n {
                    let off = tail as usize & (CAP - 1);
                    let pad = if off + frame > CAP { CAP - off } else { 0 };
                    let need = tail + (pad + frame) as u64;
                    if need > cached_head + CAP as u64 {
                        cached_head = c.head.0.load(Ordering::Acquire);
                        if need > cached_head + CAP as u64 {
                            break;
                        }
                    }
                    if pad != 0 {
                        b.word(off).store(0, Ordering::Relaxed);
                        tail += pad as u64;
                    }
                    let off = tail as usize & (CAP - 1);
                    b.word(off).store(72, Ordering::Relaxed);
                    write_msg(&b, off + 8, seq);
                    tail += frame as u64;
                    seq += 1;
                    made += 1;
                }
                c.tail.0.store(tail, Ordering::Release);
                if made == 0 {
                    std::hint::spin_loop();
                }
            }
        },
    )
}

/// Position-stamped headers, no index on the fast path and no zeroing:
/// each frame's header is `pos ^ KEY` (low bits) and its length; the
/// consumer finds a frame when the header at `head` stamps `head`. The
/// producer stores only payload and header per frame; the consumer stores
/// head once per `release` bytes or when it finds nothing.
fn stamp(n: u64, frame: usize, shift: usize, slip: u32, flags: u32) -> f64 {
    // STAMP_FLAGS: 1 = store ctrl.tail per frame, 2 = zero the word after
    // each frame, 4 = consumer loads ctrl.tail every poll, 8 = producer
    // stores its position to a local struct through a volatile write.
    const KEY: u64 = 0x5bd1_e995_0000_0000;
    let b = Arc::new(Block::new(shift));
    let c = Arc::new(Ctl {
        tail: Pad(AtomicU64::new(0)),
        head: Pad(AtomicU64::new(0)),
    });
    let (b2, c2) = (b.clone(), c.clone());
    // header word: (pos ^ KEY) with the length in the top 16 bits? pos is a
    // multiple of 8 up to 2^48: stamp = ((pos >> 3) ^ KEY) << 16 | len.
    let stamp_of = |pos: u64, len: u64| (((pos >> 3) ^ (KEY >> 16)) << 16) | len;
    timed(
        n,
        move |mark| {
            let mut head = 0u64;
            let mut released = 0u64;
            let mut next = 0u64;
            let mut last = 0u64;
            while next < n {
                let mut got = 0;
                if flags & 4 != 0 {
                    std::hint::black_box(c.tail.0.load(Ordering::Relaxed));
                }
                loop {
                    let off = head as usize & (CAP - 1);
                    let w = b.word(off).load(Ordering::Acquire);
                    if w >> 16 != stamp_of(head, 0) >> 16 {
                        break;
                    }
                    let len = w & 0xffff;
                    if len == 0 {
                        head += (CAP - off) as u64;
                        continue;
                    }
                    assert_eq!(b.word(off + 8).load(Ordering::Relaxed), next);
                    next += 1;
                    mark(next);
                    if flags & 32 != 0 {
                        // Advance by the loaded length (weft's way): the next
                        // header's address depends on this header's value.
                        head += len;
                    } else if flags & 64 != 0 {
                        // Advance by the predicted stride; a branch checks it.
                        if len == last {
                            head += opaque(last);
                        } else {
                            head += len;
                            last = len;
                        }
                    } else {
                        head += frame as u64;
                    }
                    got += 1;
                    if head - released >= 4096 {
                        c.head.0.store(head, Ordering::Release);
                        released = head;
                    }
                }
                if got == 0 {
                    if released != head {
                        c.head.0.store(head, Ordering::Release);
                        released = head;
                    }
                    for _ in 0..slip {
                        std::hint::spin_loop();
                    }
                }
            }
        },
        move || {
            let (b, c) = (b2, c2);
            let mut tail = 0u64;
            let mut cached_head = 0u64;
            let mut seq = 0;
            let mut own = 0u64;
            while seq < n {
                let off = tail as usize & (CAP - 1);
                let pad = if off + frame > CAP { CAP - off } else { 0 };
                let need = tail + (pad + frame) as u64 + if flags & 2 != 0 { 8 } else { 0 };
                if need > cached_head + CAP as u64 {
                    cached_head = c.head.0.load(Ordering::Acquire);
                    if need > cached_head + CAP as u64 {
                        std::hint::spin_loop();
                        continue;
                    }
                }
                if pad != 0 {
                    b.word(off).store(stamp_of(tail, 0), Ordering::Release);
                    tail += pad as u64;
                }
                let off = tail as usize & (CAP - 1);
                write_msg(&b, off + 8, seq);
                if flags & 2 != 0 && (tail + frame as u64) % 64 != 0 {
                    b.word(off + frame).store(0, Ordering::Relaxed);
                }
                b.word(off).store(stamp_of(tail, 72), Ordering::Release);
                tail += frame as u64;
                if flags & 1 != 0 {
                    c.tail.0.store(tail, Ordering::Release);
                }
                if flags & 8 != 0 {
                    unsafe { std::ptr::write_volatile(&mut own, tail) };
                }
                if flags >= 16 && (tail & 63) < frame as u64 {
                    // A new line was entered: PREFETCHW the line `flags` bytes ahead.
                    let p = unsafe { b.data.add((tail as usize + flags as usize) & (CAP - 1)) };
                    unsafe {
                        std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags))
                    };
                }
                seq += 1;
            }
        },
    )
}

#[inline(always)]
fn opaque(mut x: u64) -> u64 {
    unsafe {
        std::arch::asm!("/* {0} */", inout(reg) x, options(nomem, nostack, preserves_flags, pure))
    };
    x
}

/// weft's own SPSC ring on the heap (whatever is in the tree).
fn weft(n: u64, slip: u32) -> f64 {
    use weft_shm::spsc::{self, SpscConfig};
    let mut cfg = SpscConfig::new(CAP);
    cfg.max_payload = Some(32 * 1024);
    let (mut tx, mut rx) = spsc::channel(cfg).unwrap();
    timed(
        n,
        move |mark| {
            let mut next = 0u64;
            while next < n {
                let r = rx
                    .poll(usize::MAX, |f| {
                        assert_eq!(
                            u64::from_le_bytes(f.payload()[..8].try_into().unwrap()),
                            next
                        );
                        next += 1;
                        mark(next);
                    })
                    .unwrap();
                if r == 0 {
                    for _ in 0..slip {
                        std::hint::spin_loop();
                    }
                }
            }
        },
        move || {
            let mut msg = [0xa5u8; 64];
            let mut seq = 0;
            while seq < n {
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                match tx.offer(1, &msg) {
                    Ok(()) => seq += 1,
                    Err(_) => std::hint::spin_loop(),
                }
            }
        },
    )
}

/// Mean cross-core round trip of one cache line, ns (the regime probe).
fn floor() -> f64 {
    let line = Arc::new(Pad(AtomicU64::new(0)));
    let l2 = line.clone();
    let n = 200_000u64;
    let t = std::thread::spawn(move || {
        pin(1);
        for i in 0..n {
            while l2.0.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            l2.0.store(2 * i + 2, Ordering::Release);
        }
    });
    pin(0);
    let t0 = Instant::now();
    for i in 0..n {
        line.0.store(2 * i + 1, Ordering::Release);
        while line.0.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    t.join().unwrap();
    ns
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let n = n_msgs();
    let names: Vec<String> = std::env::args().skip(1).collect();
    let mut res: Vec<Vec<f64>> = vec![vec![]; names.len()];
    for round in 0..rounds {
        let f0 = floor();
        let mut line = String::new();
        for (i, name) in names.iter().enumerate() {
            let (base, flags) = match name.split_once(':') {
                Some((b, f)) => (b, f.parse().unwrap()),
                None => (name.as_str(), 0),
            };
            let r = match base {
                "dis" => dis(n, flags.max(1)),
                "diss" => dis(n, 64),
                "weft" if flags > 0 => weft(n, flags),
                "idx72" => idx(n, 72, 64, 1),
                "idx72p" => idx(n, 72, 0, 1),
                "idx64" => idx(n, 64, 64, 1),
                "idx72b" => idx(n, 72, 64, 32),
                "stamp72" => stamp(n, 72, 64, slip(), flags),
                "stamp72p" => stamp(n, 72, 0, 1, flags),
                "stamp72s" => stamp(n, 72, 64, 64, flags),
                "stamp80" => stamp(n, 80, 64, 1, flags),
                "stamp128" => stamp(n, 128, 64, 1, flags),
                "weft" => weft(n, 1),
                other => panic!("unknown {other}"),
            };
            res[i].push(r);
            line.push_str(&format!(" {name}={r:.1}"));
        }
        println!("round {round} floor {f0:.0} {:.0}{line}", floor());
    }
    let reference = res[0].clone();
    for (name, r) in names.iter().zip(res) {
        let mut ratio: Vec<f64> = r.iter().zip(&reference).map(|(a, b)| a / b).collect();
        ratio.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mut s = r.clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{name:12} median {:7.1} M/s  ratio to {} median {:.2} (quartiles {:.2}-{:.2})",
            s[s.len() / 2],
            names[0],
            ratio[ratio.len() / 2],
            ratio[ratio.len() / 4],
            ratio[ratio.len() * 3 / 4]
        );
    }
}
