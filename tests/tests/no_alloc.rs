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
