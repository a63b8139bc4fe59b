// A clock read (Instant::now, the vDSO's clock_gettime) and an RDTSC timed on one core
// (issue 18, session 16): rustc -O clock.rs && taskset -c 0 ./clock
// Each loop iteration of the first line reads the clock twice (now, then elapsed).
fn main() {
    for _ in 0..3 {
        let n = 10_000_000u32;
        let t = std::time::Instant::now();
        let mut x = 0u128;
        for _ in 0..n {
            x += std::time::Instant::now().elapsed().as_nanos();
        }
        println!("{:.1} ns per two clock reads ({x})", t.elapsed().as_nanos() as f64 / n as f64);
        let t = std::time::Instant::now();
        let mut y = 0u64;
        for _ in 0..n {
            // SAFETY: RDTSC only reads a counter.
            y = y.wrapping_add(unsafe { core::arch::x86_64::_rdtsc() });
        }
        println!("{:.1} ns per rdtsc ({y})", t.elapsed().as_nanos() as f64 / n as f64);
    }
}
