//! After warm-up, publishing and receiving on every ring allocates nothing: a
//! counting global allocator proves it. Counts are per thread, so other tests
//! running in parallel do not disturb the count.

use weft_shm::broadcast::{self, BroadcastConfig, Mode};
use weft_shm::mpsc::{self, MpscConfig};
use weft_shm::spsc::{self, SpscConfig};
use weft_tests::alloc_count::{allocations_during, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUNDS: u64 = 100_000;

#[test]
fn the_counter_counts() {
    assert_eq!(
        allocations_during(|| drop(std::hint::black_box(vec![1u8; 10]))),
        1
    );
}

#[test]
fn spsc_publish_and_receive_allocate_nothing() {
    let (mut tx, mut rx) = spsc::channel(SpscConfig::new(1 << 16)).unwrap();
    let mut work = |n: u64| {
        for i in 0..n {
            let mut claim = tx.try_claim(48, 1).unwrap();
            claim.payload_mut()[..8].copy_from_slice(&i.to_le_bytes());
            claim.commit();
            tx.offer_pod(2, &i).unwrap();
            {
                let mut batch = tx.batch();
                batch.offer(3, &[1; 16]).unwrap();
                batch.offer(3, &[2; 16]).unwrap();
            }
            let mut got = 0;
            while got < 4 {
                got += rx.poll(16, |f| assert!(f.payload().len() >= 8)).unwrap();
            }
        }
    };
    work(1_000);
    assert_eq!(allocations_during(|| work(ROUNDS)), 0);
}

#[test]
fn broadcast_publish_and_receive_allocate_nothing() {
    for mode in [Mode::Reliable, Mode::Overwrite] {
        let mut tx = broadcast::channel(BroadcastConfig::new(1 << 16, 2, mode)).unwrap();
        let mut a = tx.join().unwrap();
        let mut b = tx.join().unwrap();
        let mut work = |n: u64| {
            for i in 0..n {
                tx.offer(1, &i.to_le_bytes()).unwrap();
                let mut claim = tx.try_claim(32, 2).unwrap();
                claim.payload_mut()[0] = 1;
                claim.commit();
                for c in [&mut a, &mut b] {
                    let mut got = 0;
                    while got < 2 {
                        got += c.poll(16, |f| assert!(!f.payload().is_empty())).unwrap();
                    }
                }
            }
        };
        work(1_000);
        assert_eq!(allocations_during(|| work(ROUNDS)), 0, "{mode:?}");
    }
}

#[test]
fn mpsc_publish_and_receive_allocate_nothing() {
    let mut rx = mpsc::channel(MpscConfig::new(1 << 16, 2)).unwrap();
    let mut p1 = rx.producer().unwrap();
    let mut p2 = rx.producer().unwrap();
    let mut work = |n: u64| {
        for i in 0..n {
            p1.offer(1, &i.to_le_bytes()).unwrap();
            let mut claim = p2.try_claim(24, 2).unwrap();
            claim.payload_mut()[0] = 7;
            claim.commit();
            let mut got = 0;
            while got < 2 {
                got += rx.poll(16, |f| assert!(!f.payload().is_empty())).unwrap();
            }
        }
    };
    work(1_000);
    assert_eq!(allocations_during(|| work(ROUNDS)), 0);
}

/// Through the weft API, in invoker mode so the agents' work (sockets, protocol,
/// rings) runs on this thread and is counted too: publish, run the node,
/// receive. Shared memory and UDP multicast on loopback, with one message in
/// 16 stamped for the one-way latency histograms.
#[test]
fn node_publish_and_receive_allocate_nothing_on_either_transport() {
    let dir = std::env::temp_dir().join(format!("weft-noalloc-{}", std::process::id()));
    let mut node = weft::Node::new(weft::NodeConfig {
        dir: dir.clone(),
        threading: weft::ThreadingMode::Invoker,
        latency_sample_every: 16,
        ..weft::NodeConfig::default()
    })
    .unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for uri in [
        "shm:noalloc".to_string(),
        "shm:noalloc-many?publishers=many".to_string(),
        format!("udp://239.77.51.1:{port}"),
    ] {
        let mut publ = node.publication(&uri, 1).unwrap();
        let mut sub = node.subscription(&uri, 1).unwrap();
        while !publ.is_connected() {
            node.do_work();
            sub.poll(16, |_| {}).unwrap();
        }
        let mut next = 0u64;
        let mut work = |n: u64| {
            for i in 0..n {
                let v = next + i;
                loop {
                    match publ.offer_pod(&v) {
                        Ok(()) => break,
                        Err(weft::PublishError::BackPressured) => {
                            node.do_work();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                let mut got = false;
                while !got {
                    node.do_work();
                    sub.poll(16, |e| {
                        if let weft::Event::Message(m) = e {
                            assert_eq!(m, v.to_le_bytes());
                            got = true;
                        }
                    })
                    .unwrap();
                }
            }
            next += n;
        };
        work(2_000);
        assert_eq!(allocations_during(|| work(ROUNDS)), 0, "{uri}");
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Through the C ABI (`weft-ffi`): a raw SPSC ring's offer, claim, commit
/// and poll, and back-pressure's `WEFT_ERR_FULL` (a fixed message, so a
/// sender that keeps hitting it allocates nothing either); a shm channel's
/// offer and poll through a node in invoker mode.
#[test]
fn the_c_abi_message_paths_allocate_nothing() {
    use std::ffi::{c_void, CString};
    use weft_ffi::*;
    extern "C" fn count_frame(ctx: *mut c_void, _type_id: u32, _data: *const u8, _len: usize) {
        // SAFETY: the test passes a live Cell<u64>.
        let n = unsafe { &*(ctx as *const std::cell::Cell<u64>) };
        n.set(n.get() + 1);
    }
    extern "C" fn count_event(ctx: *mut c_void, ev: *const weft_event) {
        // SAFETY: the test passes a live Cell<u64>; weft a live event.
        let (n, kind) = unsafe { (&*(ctx as *const std::cell::Cell<u64>), (*ev).kind) };
        if kind == WEFT_EVENT_MESSAGE {
            n.set(n.get() + 1);
        }
    }
    let dir = std::env::temp_dir().join(format!("weft-noalloc-ffi-{}", std::process::id()));
    let d = CString::new(dir.to_str().unwrap()).unwrap();
    let name = CString::new("ring").unwrap();
    let cfg = weft_ring_config {
        kind: WEFT_RING_SPSC,
        capacity: 1 << 16,
        max_payload: 0,
        max_peers: 0,
    };
    let (mut p, mut c) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: valid strings, config and out pointers.
    unsafe {
        assert_eq!(
            weft_ring_producer_create(d.as_ptr(), name.as_ptr(), &cfg, &mut p),
            WEFT_OK
        );
        assert_eq!(
            weft_ring_consumer_attach(d.as_ptr(), name.as_ptr(), WEFT_RING_SPSC, &mut c),
            WEFT_OK
        );
    }
    let msg = [7u8; 64];
    let got = std::cell::Cell::new(0u64);
    let ctx = &got as *const std::cell::Cell<u64> as *mut c_void;
    let ring = |n: u64| {
        for _ in 0..n {
            // SAFETY: live handles; `msg` is 64 readable bytes; `at` is
            // written within the claimed 32 bytes before the commit.
            unsafe {
                assert_eq!(weft_ring_offer(p, 1, msg.as_ptr(), msg.len()), WEFT_OK);
                let mut at = std::ptr::null_mut();
                assert_eq!(weft_ring_try_claim(p, 32, 2, &mut at), WEFT_OK);
                at.write_bytes(1, 32);
                assert_eq!(weft_ring_commit(p), WEFT_OK);
                let mut n = 0;
                while n < 2 {
                    n += weft_ring_poll(c, 16, Some(count_frame), ctx);
                }
            }
        }
        // Fill the ring: every offer past the end is WEFT_ERR_FULL.
        // SAFETY: as above.
        unsafe {
            let mut full = 0;
            while full < 100 {
                if weft_ring_offer(p, 1, msg.as_ptr(), msg.len()) == WEFT_ERR_FULL {
                    full += 1;
                }
            }
            while weft_ring_poll(c, 1024, Some(count_frame), ctx) > 0 {}
        }
    };
    ring(1_000);
    assert_eq!(allocations_during(|| ring(ROUNDS)), 0, "raw ring");

    let toml = CString::new(format!(
        "dir = \"{}\"\nthreading = \"invoker\"\n",
        dir.display()
    ))
    .unwrap();
    let uri = CString::new("shm:noalloc-ffi").unwrap();
    let (mut node, mut publ, mut sub) = (
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    );
    // SAFETY: valid strings and out pointers.
    unsafe {
        assert_eq!(weft_node_new(toml.as_ptr(), &mut node), WEFT_OK);
        assert_eq!(
            weft_publication_new(node, uri.as_ptr(), 1, &mut publ),
            WEFT_OK
        );
        assert_eq!(
            weft_subscription_new(node, uri.as_ptr(), 1, &mut sub),
            WEFT_OK
        );
        while weft_publication_is_connected(publ) == 0 {
            weft_node_do_work(node);
            weft_subscription_poll(sub, 16, Some(count_event), ctx);
        }
    }
    let channel = |n: u64| {
        for _ in 0..n {
            // SAFETY: live handles; `msg` is 64 readable bytes.
            unsafe {
                while weft_publication_offer(publ, msg.as_ptr(), msg.len()) != WEFT_OK {
                    weft_node_do_work(node);
                }
                let before = got.get();
                while got.get() == before {
                    weft_node_do_work(node);
                    weft_subscription_poll(sub, 16, Some(count_event), ctx);
                }
            }
        }
    };
    channel(1_000);
    assert_eq!(allocations_during(|| channel(ROUNDS)), 0, "channel");
    // SAFETY: live handles, each freed once.
    unsafe {
        weft_publication_free(publ);
        weft_subscription_free(sub);
        weft_ring_producer_free(p);
        weft_ring_consumer_free(c);
        assert_eq!(weft_node_close(node), WEFT_OK);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
