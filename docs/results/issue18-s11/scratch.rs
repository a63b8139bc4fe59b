// The scratch loops of issue 18, session 11 (docs/shm.md, "second round"). Not built by
// the project: to run, copy to benches/weft-bench/examples/scratch.rs and
//   cargo run --release -p weft-bench --example scratch -- weft weftfix raw72w dis drain
// (ROUNDS=N sets the rounds). The weft variants measure whatever weft-shm is in the tree;
// the figures in docs/shm.md were taken on the working states between c7addf5 and c302c97.
// Session 13 (Intel Xeon) added solo2, raw72za, raw72d6, raw72d12, and the split
// experiments ww/wb/bw/bb/bb16/bb64/bb2k/bbheap/bbvec/bbt1k/bbd2k (env BARE_SRC, VEC_MSG,
// VEC_OWN_PAGE), which map weft's ring file and need `libc` as a dev-dependency of
// weft-bench (docs/shm.md, "third round"); the first ones were run on b284ba5:  ROUNDS=10 ... scratch raw72w raw72za raw72  and  ROUNDS=8 ...
// scratch raw72w raw72d6 raw72d12.

use std::time::Instant;
use weft_shm::spsc::{self, SpscConfig};
use weft_shm::ClaimError;

fn pin(c: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: c });
}
const N: u64 = 10_000_000;

fn weft(spins: u32, ahead_claim: bool, len: usize) -> f64 {
    let mut cfg = SpscConfig::new(256 * 1024);
    cfg.max_payload = Some(32 * 1024);
    let (mut tx, mut rx) = spsc::channel(cfg).unwrap();
    let p = std::thread::spawn(move || {
        pin(1);
        let mut msg = [0xa5u8; 64];
        let mut seq = 0;
        let mut full = 0u64;
        while seq < N {
            if !ahead_claim {
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                match tx.offer(1, &msg[..len]) {
                    Ok(()) => seq += 1,
                    Err(ClaimError::Full) => {
                        full += 1;
                        std::hint::spin_loop()
                    }
                    Err(e) => panic!("{e}"),
                }
                continue;
            }
            match tx.try_claim(len, 1) {
                Ok(mut c) => {
                    msg[..8].copy_from_slice(&seq.to_le_bytes());
                    if ahead_claim {
                        let p = c.payload_mut().as_mut_ptr();
                        for w in 0..8 {
                            unsafe {
                                (p.add(w * 8) as *mut u64).write_unaligned(u64::from_le_bytes(
                                    msg[w * 8..w * 8 + 8].try_into().unwrap(),
                                ))
                            };
                        }
                        c.commit();
                    } else {
                        drop(c);
                        tx.offer(1, &msg[..len]).unwrap();
                    }
                    seq += 1;
                }
                Err(ClaimError::Full) => {
                    full += 1;
                    std::hint::spin_loop()
                }
                Err(e) => panic!("{e}"),
            }
        }
        full
    });
    pin(0);
    let mut next = 0u64;
    let mut empty = 0u64;
    let t = Instant::now();
    while next < N {
        let n = rx
            .poll(usize::MAX, |f| {
                let s = u64::from_le_bytes(f.payload()[..8].try_into().unwrap());
                assert_eq!(s, next);
                next += 1;
            })
            .unwrap();
        if n == 0 {
            empty += 1;
            for _ in 0..spins {
                std::hint::spin_loop()
            }
        }
    }
    let r = N as f64 / t.elapsed().as_secs_f64();
    let full = p.join().unwrap();
    eprintln!(
        "   empty/frame {:.3} full/frame {:.3}",
        empty as f64 / N as f64,
        full as f64 / N as f64
    );
    r
}

fn disruptor(spins: u32) -> f64 {
    use disruptor::{build_single_producer, BusySpin, Polling, Producer};
    let (mut poller, builder) =
        build_single_producer(4096, || [0u8; 64], BusySpin).new_event_poller();
    let mut tx = builder.build();
    let p = std::thread::spawn(move || {
        pin(1);
        let mut msg = [0xa5u8; 64];
        let heap = std::env::var("DIS_HEAP").is_ok();
        let mut hmsg = std::hint::black_box(vec![0xa5u8; 64]);
        for seq in 0..N {
            if heap {
                hmsg[..8].copy_from_slice(&seq.to_le_bytes());
                let m = &hmsg[..64];
                tx.publish(|e| e.copy_from_slice(m));
                continue;
            }
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            tx.publish(|e| e.copy_from_slice(&msg));
        }
    });
    pin(0);
    let mut next = 0u64;
    let mut empty = 0u64;
    let t = Instant::now();
    while next < N {
        match poller.poll() {
            Ok(mut ev) => {
                for e in &mut ev {
                    assert_eq!(u64::from_le_bytes(e[..8].try_into().unwrap()), next);
                    next += 1;
                }
            }
            Err(Polling::NoEvents) => {
                empty += 1;
                for _ in 0..spins {
                    std::hint::spin_loop()
                }
            }
            Err(Polling::Shutdown) => break,
        }
    }
    let r = N as f64 / t.elapsed().as_secs_f64();
    p.join().unwrap();
    eprintln!("   empty/frame {:.3}", empty as f64 / N as f64);
    r
}

fn main() {
    let which: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for round in 0..rounds {
        for w in &which {
            let r = match w.as_str() {
                "weft" => weft(1, false, 64),
                "weft56" => weft(1, false, 56),
                "weft64" => weft(64, false, 64),
                "weftfix" => weft(1, true, 64),
                "dis" => disruptor(1),
                "raw64" => raw(64, 0, false, 1),
                "raw96" => raw(96, 8, false, 1),
                "raw96h" => raw(96, 8, true, 1),
                "raw96hz" => rawz(96, 8, true, 1, true, 0),
                "rawchain" => rawz(96, 8, true, 1, true, 1),
                "rawline" => rawz(96, 8, true, 1, true, 2),
                "rawboth" => rawz(96, 8, true, 1, true, 3),
                "solo" => solo(false),
                "solo2" => solo2(true),
                "ww" => split(false, false),
                "wb" => split(false, true),
                "bw" => split(true, false),
                "bb" => split(true, true),
                "bbheap" => split_in(true, true, 1, 4096, 4096 + 128, 8192),
                "bbvec" => split_in(true, true, 2, 4096, 4096 + 128, 8192),
                "bbsep" => split_in(true, true, 1, 0, 128, 8192 * 4),
                "bb16" => split_in(true, true, 16, 4096, 4096 + 128, 8192),
                "bb64" => split_in(true, true, 64, 4096, 4096 + 128, 8192),
                "bb2k" => split_in(true, true, 2048, 4096, 4096 + 128, 8192),
                "bbt1k" => split_in(true, true, 1, 4096 + 1024, 4096 + 2048, 8192),
                "bbd2k" => split_in(true, true, 1, 4096, 4096 + 128, 8192 + 2048),
                "bbfar" => split_in(
                    true,
                    true,
                    1,
                    8192 * 4 + 256 * 1024 + 1024,
                    8192 * 4 + 256 * 1024 + 2048,
                    8192,
                ),
                "solofix" => solo(true),
                "raw72w" => rawz(72, 8, true, 1, true, 3),
                "raw72d6" => rawz(72, 8, true, 1, true, 3 | 6 << 4),
                "raw72d12" => rawz(72, 8, true, 1, true, 3 | 12 << 4),
                "raw72za" => rawz(72, 8, true, 1, true, 7),
                "raw72" => raw(72, 8, false, 1),
                "raw128" => raw(128, 8, false, 1),
                "raw64h" => raw(64, 0, true, 1),
                "dis64" => disruptor(64),
                _ => panic!(),
            };
            println!("{round} {w:8} {:.1} M/s", r / 1e6);
        }
    }
}

/// Raw ring: stride-byte frames in a 256 KiB area, producer writes 64 B payload at
/// offset `poff` within each frame plus (if hdr) a header word at 0, then stores
/// tail per frame; consumer reads tail, then each frame's seq.
pub fn raw(stride: usize, poff: usize, hdr: bool, cons_spins: u32) -> f64 {
    rawz(stride, poff, hdr, cons_spins, false, 0)
}
pub fn rawz(stride: usize, poff: usize, hdr: bool, cons_spins: u32, zero: bool, mode: u32) -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering::*};
    #[repr(align(128))]
    struct P(AtomicU64);
    struct Ring {
        tail: P,
        head: P,
        data: Box<[AtomicU64]>,
    }
    const CAP: usize = 256 * 1024;
    let ring = std::sync::Arc::new(Ring {
        tail: P(AtomicU64::new(0)),
        head: P(AtomicU64::new(0)),
        data: (0..CAP / 8 + 32).map(|_| AtomicU64::new(0)).collect(),
    });
    let r2 = ring.clone();
    let p = std::thread::spawn(move || {
        pin(1);
        let r = &*r2;
        let base = r.data.as_ptr() as *mut u8;
        let msg = [0xa5u8; 64];
        let mut cached_head = 0u64;
        let mut tail = 0u64;
        let mut zeroed = 0u64;
        let mut dummy = vec![0u64; 64];
        for seq in 0..N {
            while tail + stride as u64 > cached_head + CAP as u64 {
                cached_head = r.head.0.load(Acquire);
                std::hint::spin_loop();
            }
            let off = (tail as usize) & (CAP - 1);
            if mode & 4 != 0 {
                // weft's zero-ahead: first word of each line up to 4 KiB past tail, 512 B steps
                while zeroed + 512 <= tail + 4096 {
                    let upto = (tail + 4096) & !63;
                    while zeroed < upto {
                        while zeroed >= (cached_head & !63) + CAP as u64 {
                            cached_head = r.head.0.load(Acquire);
                            std::hint::spin_loop();
                        }
                        r.data[((zeroed as usize) & (CAP - 1)) / 8].store(0, Relaxed);
                        zeroed += 64;
                    }
                }
            } else if zero {
                let end = tail + stride as u64;
                let zl = (end & !63) as usize;
                let zt = (tail & !63) as usize;
                if zl != zt || tail == 0 {
                    for w in 0..8 {
                        r.data[(zl & (CAP - 1)) / 8 + w].store(0, Relaxed);
                    }
                }
            }
            unsafe {
                let d = base.add(off + poff);
                std::ptr::copy_nonoverlapping(msg.as_ptr(), d, 64);
                (d as *mut u64).write_unaligned(seq);
            }
            for k in 0..(mode >> 4) as usize {
                unsafe { std::ptr::write_volatile(dummy.as_mut_ptr().add(k * 2), seq) }
            }
            if hdr {
                r.data[off / 8].store(stride as u64 | 1 << 63, Release);
            }
            tail += stride as u64;
            r.tail.0.store(tail, Release);
        }
    });
    pin(0);
    let r = &*ring;
    let base = r.data.as_ptr() as *const u8;
    let mut head = 0u64;
    let mut next = 0u64;
    let (mut polls, mut empties) = (0u64, 0u64);
    let t = Instant::now();
    while next < N {
        let mut tail = r.tail.0.load(Acquire);
        polls += 1;
        if mode & 2 != 0 {
            tail &= !63;
        }
        if tail <= head {
            empties += 1;
            for _ in 0..cons_spins {
                std::hint::spin_loop()
            }
            continue;
        }
        while head < tail {
            let off = (head as usize) & (CAP - 1);
            let step = if mode & 1 != 0 {
                (r.data[off / 8].load(Acquire) & 0xffff) as u64
            } else {
                stride as u64
            };
            if mode & 2 != 0 && head + step > tail {
                break;
            }
            let s = unsafe { (base.add(off + poff) as *const u64).read_unaligned() };
            assert_eq!(s, next);
            next += 1;
            head += step;
        }
        r.head.0.store(head, Release);
    }
    let rate = N as f64 / t.elapsed().as_secs_f64();
    p.join().unwrap();
    eprintln!(
        "   raw polls/frame {:.3} empty/frame {:.3}",
        polls as f64 / N as f64,
        empties as f64 / N as f64
    );
    rate
}

pub fn solo(fix: bool) -> f64 {
    let mut cfg = SpscConfig::new(64 << 20);
    cfg.max_payload = Some(1024);
    let (mut tx, _rx) = spsc::channel(cfg).unwrap();
    let n = 700_000u64;
    let mut msg = [0xa5u8; 64];
    // warm the pages (a first pass), then time the second pass over fresh lines
    let t = Instant::now();
    for seq in 0..n {
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        if fix {
            let mut c = tx.try_claim(64, 1).unwrap();
            let p = c.payload_mut().as_mut_ptr();
            for w in 0..8 {
                unsafe {
                    (p.add(w * 8) as *mut u64).write_unaligned(u64::from_le_bytes(
                        msg[w * 8..w * 8 + 8].try_into().unwrap(),
                    ))
                };
            }
            c.commit();
        } else {
            tx.offer(1, &msg).unwrap();
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// One thread: offer 1000 frames, poll them all, repeat; ring 256 KiB, warm.
pub fn solo2(split: bool) -> f64 {
    let mut cfg = SpscConfig::new(256 * 1024);
    cfg.max_payload = Some(32 * 1024);
    let (mut tx, mut rx) = spsc::channel(cfg).unwrap();
    let mut msg = [0xa5u8; 64];
    let mut seq = 0u64;
    let mut next = 0u64;
    let (mut tp, mut tc) = (0u128, 0u128);
    let t = Instant::now();
    while seq < N {
        let a = Instant::now();
        for _ in 0..1000 {
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            tx.offer(1, &msg).unwrap();
            seq += 1;
        }
        let b = Instant::now();
        while next < seq {
            rx.poll(usize::MAX, |f| {
                let s = u64::from_le_bytes(f.payload()[..8].try_into().unwrap());
                assert_eq!(s, next);
                next += 1;
            })
            .unwrap();
        }
        if split {
            tp += (b - a).as_nanos();
            tc += b.elapsed().as_nanos();
        }
    }
    if split {
        eprintln!(
            "   offer {:.2} ns, poll {:.2} ns per frame",
            tp as f64 / N as f64,
            tc as f64 / N as f64
        );
    }
    N as f64 / t.elapsed().as_secs_f64()
}

/// Session 13: weft's SPSC ring file (created by a weft Consumer), each side
/// either weft's own code or a bare loop over the same bytes, so the gap to
/// a bare ring can be split between the writer and the reader.
/// The file layout: control block at 4096 (tail +0, head +128), data at 8192.
pub fn split(prod_bare: bool, cons_bare: bool) -> f64 {
    split_in(prod_bare, cons_bare, 0, 4096, 4096 + 128, 8192 + 64)
}

/// `mem`: 0 the ring file, 1 a page-aligned heap block of the same size, 2
/// an unaligned heap Vec; tail, head and data at the offsets given (bare
/// sides only: weft's own code always uses the file).
pub fn split_in(
    prod_bare: bool,
    cons_bare: bool,
    mem: u32,
    tail_off: usize,
    head_off: usize,
    data_off: usize,
) -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering::*};
    use weft_shm::spsc::{Consumer, Producer};
    const CAP: usize = 256 * 1024;
    const PAD: u32 = 0xFFFF_FFFF;
    let dir = std::env::temp_dir().join(format!("weft-split-{}", std::process::id()));
    let _ = std::fs::create_dir(&dir);
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let opts = weft_shm::ShmOptions::in_dir(&dir);
    let name = format!("split{}{}", prod_bare as u8, cons_bare as u8);
    let _ = std::fs::remove_file(dir.join(&name));
    let mut cfg = SpscConfig::new(CAP);
    cfg.max_payload = Some(32 * 1024);
    let mut rx = Consumer::create(&opts, &name, &cfg).unwrap();
    let path = opts.path_of(&name).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let len = file.metadata().unwrap().len() as usize;
    assert!(len >= 8192 + CAP);
    // SAFETY: a shared read-write mapping of the whole ring file, kept for the run.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::unix::io::AsRawFd::as_raw_fd(&file),
            0,
        )
    } as usize;
    assert_ne!(map, libc::MAP_FAILED as usize);
    let total = data_off + CAP + 8192;
    let base = match mem {
        0 => map,
        1 => unsafe {
            std::alloc::alloc_zeroed(std::alloc::Layout::from_size_align(total, 4096).unwrap())
                as usize
        },
        m if m >= 16 => unsafe {
            std::alloc::alloc_zeroed(
                std::alloc::Layout::from_size_align(total + m as usize, 4096).unwrap(),
            ) as usize
                + m as usize
        },
        _ => Box::leak(vec![0u8; total + 64].into_boxed_slice()).as_ptr() as usize,
    };
    let word =
        move |off: usize| -> &'static AtomicU64 { unsafe { &*((base + off) as *const AtomicU64) } };
    let tail_w = move || word(tail_off);
    let head_w = move || word(head_off);
    let data = move |off: usize| word(data_off + (off & (CAP - 1)));
    let (o2, n2) = (opts.clone(), name.clone());
    let p = std::thread::spawn(move || {
        pin(1);
        let mut msg = [0xa5u8; 64];
        if !prod_bare {
            let mut tx = Producer::attach(&o2, &n2).unwrap();
            let mut seq = 0u64;
            let vec_len: usize = std::env::var("VEC_MSG")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut vmsg = vec![0xa5u8; vec_len.max(8)];
            // VEC_OWN_PAGE: the message alone in a page of its own.
            let own: &'static mut [u8] = if std::env::var("VEC_OWN_PAGE").is_ok() {
                let p = unsafe {
                    std::alloc::alloc(std::alloc::Layout::from_size_align(8192, 4096).unwrap())
                };
                let s = unsafe { std::slice::from_raw_parts_mut(p.add(2048), vec_len.max(8)) };
                s.fill(0xa5);
                s
            } else {
                Box::leak(vec![0u8; 8].into_boxed_slice())
            };
            let use_own = std::env::var("VEC_OWN_PAGE").is_ok();
            while seq < N {
                if vec_len > 0 {
                    let vmsg: &mut [u8] = if use_own { &mut *own } else { &mut vmsg };
                    vmsg[..8].copy_from_slice(&seq.to_le_bytes());
                    let m: &[u8] = if vec_len == 64 { &vmsg[..64] } else { &*vmsg };
                    match tx.offer(1, m) {
                        Ok(()) => seq += 1,
                        Err(ClaimError::Full) => std::hint::spin_loop(),
                        Err(e) => panic!("{e}"),
                    }
                    continue;
                }
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                match tx.offer(1, &msg) {
                    Ok(()) => seq += 1,
                    Err(ClaimError::Full) => std::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
            return;
        }
        // Weft's frames, written by a bare loop: 72-byte frames, the word after
        // each zeroed, the next line zeroed whole before a frame first enters it.
        let mut tail = 0u64;
        let mut cached_head = 0u64;
        let mut zeroed = 64u64; // lines below are zero (fresh file)
        let bare_src: u32 = std::env::var("BARE_SRC")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let src: Vec<u64> = vec![0xa5a5a5a5a5a5a5a5; 8];
        let mut srcm: Vec<u64> = vec![0xa5a5a5a5a5a5a5a5; 8];
        for seq in 0..N {
            let mut off = (tail as usize) & (CAP - 1);
            let pad = if off + 72 > CAP { CAP - off } else { 0 };
            let end = tail + (pad + 72) as u64;
            let need = (end & !63) + 64;
            while need > (cached_head & !63) + CAP as u64 {
                cached_head = head_w().load(Acquire);
                std::hint::spin_loop();
            }
            while zeroed < need {
                for w in 0..8 {
                    data(zeroed as usize + w * 8).store(0, Relaxed);
                }
                zeroed += 64;
            }
            if pad != 0 {
                data(off).store(pad as u64 | (PAD as u64) << 32, Relaxed);
                off = 0;
            }
            data(off + 8).store(seq, Relaxed);
            match bare_src {
                0 => {
                    for w in 1..8 {
                        data(off + 8 + w * 8).store(0xa5a5a5a5a5a5a5a5, Relaxed);
                    }
                }
                1 => {
                    for w in 1..8 {
                        data(off + 8 + w * 8).store(std::hint::black_box(&src)[w], Relaxed);
                    }
                }
                3 => {
                    // as weft's callers: the sequence number written into the message, then copied
                    let sm = std::hint::black_box(&mut srcm);
                    sm[0] = seq;
                    let s = std::hint::black_box(&*sm);
                    let v: [u64; 8] = std::array::from_fn(|i| s[i]);
                    for w in 1..8 {
                        data(off + 8 + w * 8).store(v[w], Relaxed);
                    }
                }
                _ => {
                    let s = std::hint::black_box(&src);
                    let v: [u64; 8] = std::array::from_fn(|i| s[i]);
                    for w in 1..8 {
                        data(off + 8 + w * 8).store(v[w], Relaxed);
                    }
                }
            }
            if end % 64 != 0 {
                data(end as usize).store(0, Relaxed);
            }
            data(off).store(72 | 1 << 32, Release);
            tail = end;
            tail_w().store(tail, Release);
        }
    });
    pin(0);
    let mut next = 0u64;
    let t = Instant::now();
    if !cons_bare {
        while next < N {
            let n = rx
                .poll(usize::MAX, |f| {
                    let s = u64::from_le_bytes(f.payload()[..8].try_into().unwrap());
                    assert_eq!(s, next);
                    next += 1;
                })
                .unwrap();
            if n == 0 {
                std::hint::spin_loop()
            }
        }
    } else {
        let mut head = 0u64;
        while next < N {
            let upto = tail_w().load(Acquire) & !63;
            if upto <= head {
                std::hint::spin_loop();
                continue;
            }
            while head < upto {
                let off = (head as usize) & (CAP - 1);
                let w = data(off).load(Acquire);
                let (l, ty) = ((w & 0xffff_ffff) as u64, (w >> 32) as u32);
                let step = if ty == PAD { l } else { (l + 7) & !7 };
                if head + step > upto {
                    break;
                }
                if ty != PAD {
                    assert_eq!(data(off + 8).load(Relaxed), next);
                    next += 1;
                }
                head += step;
            }
            head_w().store(head, Release);
        }
    }
    let rate = N as f64 / t.elapsed().as_secs_f64();
    p.join().unwrap();
    drop(rx);
    unsafe { libc::munmap(map as *mut libc::c_void, len) };
    rate
}
