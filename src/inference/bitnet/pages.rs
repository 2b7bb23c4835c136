//! Memory that asks Linux for 2 MiB pages, for what decode streams once per token: the int8
//! output head and the ternary codes. On 4 KiB pages that is a new TLB entry every 4 KiB and a
//! page walk each time the hardware prefetcher runs off the end of one. Most systems ship
//! transparent huge pages as `madvise`, so the buffer must ask; where THP is off the advice is
//! ignored.
//!
//! The ternary codes live in [`AlignedBytes`], which start on a 2 MiB boundary. An earlier try
//! put them in `Vec`s, which start anywhere, so a matrix of a few MiB held no whole huge page;
//! those runs gained decode but lost 10-15% of prefill (the cause was not found). Aligned, on
//! the Xeon (CPUID model 207, 2 threads, bitnet.cpp's dummy I2_S file, int8 head, two models
//! in one process, alternating): decode 34.9 against 31.1 tok/s, and 35.5 against 33.3 with
//! the order swapped; prefill level (80.1 against 79.2, 80.5 against 80.2).

/// An empty vector with room for `len` values, its pages advised before anything touches them
/// (the advice applies to pages faulted in afterwards).
pub fn with_capacity<T>(len: usize) -> Vec<T> {
    let buffer: Vec<T> = Vec::with_capacity(len);
    advise_huge_pages(buffer.as_ptr().cast(), len * std::mem::size_of::<T>());
    buffer
}

/// Bytes that start on a 2 MiB boundary, so every whole 2 MiB of them can be one huge page
/// (a `Vec` starts wherever the allocator puts it, and a matrix of a few MiB then held no
/// whole huge page at all). The tail past the last whole huge page stays on 4 KiB pages, so
/// no memory beyond `len` becomes resident.
pub struct AlignedBytes {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is owned alone, like a `Vec<u8>`.
unsafe impl Send for AlignedBytes {}
unsafe impl Sync for AlignedBytes {}

const HUGE_PAGE: usize = 2 << 20;

impl AlignedBytes {
    /// `len` copies of `byte`.
    pub fn filled(len: usize, byte: u8) -> Self {
        let buffer = Self::uninit(len);
        // SAFETY: `uninit` allocated `len` writable bytes.
        unsafe { std::ptr::write_bytes(buffer.ptr.as_ptr(), byte, len) };
        buffer
    }

    /// The bytes of `parts`, one after another.
    pub fn concat(parts: &[&[u8]]) -> Self {
        let buffer = Self::uninit(parts.iter().map(|p| p.len()).sum());
        let mut at = buffer.ptr.as_ptr();
        for part in parts {
            // SAFETY: the parts together fill exactly the `len` bytes allocated, and a part
            // cannot overlap a buffer allocated just now.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), at, part.len());
                at = at.add(part.len());
            }
        }
        buffer
    }

    /// Room for `len` bytes, advised before anything touches them; the caller writes all.
    fn uninit(len: usize) -> Self {
        if len == 0 {
            return Self {
                ptr: std::ptr::NonNull::dangling(),
                len,
            };
        }
        let layout = Self::layout(len);
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = std::ptr::NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout);
        };
        advise_huge_pages(ptr.as_ptr(), len);
        Self { ptr, len }
    }

    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(len, HUGE_PAGE).expect("a buffer smaller than memory")
    }
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated in `uninit` with this same layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) };
        }
    }
}

impl std::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` initialized bytes (or a dangling pointer and no bytes).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Clone for AlignedBytes {
    fn clone(&self) -> Self {
        Self::concat(&[self])
    }
}

impl std::fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBytes({} bytes)", self.len)
    }
}

fn advise_huge_pages(start: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
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
    use super::AlignedBytes;

    #[test]
    fn aligned_bytes_start_on_a_huge_page_and_hold_what_was_asked() {
        let filled = AlignedBytes::filled(5 << 20, 0b0101_0101);
        assert_eq!(filled.len(), 5 << 20);
        assert_eq!(filled.as_ptr() as usize % (2 << 20), 0);
        assert!(filled.iter().all(|&b| b == 0b0101_0101));

        let joined = AlignedBytes::concat(&[&[1, 2, 3], &[], &[4]]);
        assert_eq!(&joined[..], &[1, 2, 3, 4]);
        let mut copy = joined.clone();
        copy[0] = 9;
        assert_eq!(
            (&joined[..], &copy[..]),
            (&[1, 2, 3, 4][..], &[9, 2, 3, 4][..])
        );

        let empty = AlignedBytes::filled(0, 7);
        assert!(empty.is_empty() && empty.clone().is_empty());
    }

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
