// A PAUSE (std::hint::spin_loop) timed on one core: rustc -O pause.rs && taskset -c 0 ./pause (issue 18, session 15: 24.6-25.5 ns on the AMD VM).
fn main() {
    for _ in 0..5 {
        let n = 10_000_000u32;
        let t = std::time::Instant::now();
        for _ in 0..n { std::hint::spin_loop(); }
        println!("{:.1} ns per PAUSE", t.elapsed().as_nanos() as f64 / n as f64);
    }
}
