//! Giving memory back to the system. A GetManagedObjects of 10 000 volumes builds a
//! reply of about 15 MiB; glibc's allocator keeps what such a reply used (its dynamic
//! mmap threshold rises after the first large free, and every thread gets an arena of
//! its own), so without help the daemon's resident size only ever grows with the
//! largest replies it has sent. Two measures, both glibc's own interfaces:
//!
//! - at start-up, a fixed mmap threshold (large buffers are mapped and unmapped, never
//!   kept in an arena) and a bound on the number of arenas;
//! - after a large message has left, `malloc_trim(0)`, which returns the free pages of
//!   every arena.
//!
//! These are the only calls into the C library outside the engine's `sys.rs`; they
//! change allocator policy, not program state.

/// Buffers of at least this size are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;
/// At most this many malloc arenas (glibc's default is 8 per core).
const ARENA_MAX: libc::c_int = 4;

/// Sets the allocator's policy; call once, before other threads start.
pub fn tune() {
    // SAFETY: mallopt only changes glibc's allocator parameters; both are documented
    // parameters with valid values, and no allocation is in progress on another thread
    // (called first thing in main).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}

/// Returns the free memory of every arena to the system.
pub fn give_back() {
    // SAFETY: malloc_trim is thread-safe (it takes each arena's lock) and only releases
    // memory that is free.
    unsafe {
        libc::malloc_trim(0);
    }
}
