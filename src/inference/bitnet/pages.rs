//! Buffers that ask Linux for 2 MiB pages, for the int8 output head. Decode streams all of it
//! once per token; on 4 KiB pages that is a new TLB entry every 4 KiB and a page walk each time
//! the hardware prefetcher runs off the end of one. Most systems ship transparent huge pages as
//! `madvise`, so the buffer must ask; where THP is off the advice is ignored.
//!
//! The ternary codes stay on ordinary pages: on the Xeon, huge pages for them raised decode
//! (int8 head 22-23 -> 25.5-26.4 tok/s on bitnet.cpp's dummy I2_S file) but cost prefill
//! 10-15% (75 -> 65 tok/s), in the same runs, for a reason not found yet.

/// An empty vector with room for `len` values, its pages advised before anything touches them
/// (the advice applies to pages faulted in afterwards).
pub fn with_capacity<T>(len: usize) -> Vec<T> {
    let buffer: Vec<T> = Vec::with_capacity(len);
    advise_huge_pages(buffer.as_ptr().cast(), len * std::mem::size_of::<T>());
    buffer
}

fn advise_huge_pages(start: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE_PAGE: usize = 2 << 20;
        // Only whole huge pages inside the allocation: the advice must not reach memory that
        // is not ours.
        let first = (start as usize).next_multiple_of(HUGE_PAGE);
        let end = (start as usize + bytes) / HUGE_PAGE * HUGE_PAGE;
        if end > first {
            // SAFETY: `first..end` lies inside one live allocation of ours; MADV_HUGEPAGE only
            // changes how its pages are backed, never their contents. A refusal (THP off) is
            // harmless, so the result is ignored.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

#[cfg(test)]
mod tests {
    #[test]
    fn buffers_hold_what_was_asked_whatever_the_pages() {
        let mut big = super::with_capacity(5 << 20);
        big.resize(5 << 20, 0b0101_0101u8);
        assert_eq!(big.len(), 5 << 20);
        assert!(big.iter().all(|&b| b == 0b0101_0101));
        let small: Vec<i8> = super::with_capacity(3);
        assert!(small.is_empty() && small.capacity() >= 3);
    }
}
