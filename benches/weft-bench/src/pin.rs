//! Pinning the measuring threads to cores 0 and 1.

/// Pins the calling thread to CPU `core` (an absolute CPU number, not an index into
/// the current affinity mask, which a parent's pinning would have narrowed).
/// Returns false, and the benchmark carries on unpinned, if that is impossible.
pub fn pin(core: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: core })
}
