//! rten's worker threads flush subnormal floats to zero. PP-OCRv6's detection network carries
//! subnormal values (below 1.2e-38) into one 1x1 convolution: every multiply touching one takes
//! a microcode assist on x86, which made it 60x slower than its neighbours (54 ms instead of
//! 0.9 ms, 40% of the detection). Flushing changes results by less than 1.2e-38 — onnxruntime
//! and PyTorch offer the same switch for the same reason.

/// Sets flush-to-zero and denormals-are-zero on every thread of rten's pool (and the caller).
/// The flags are per thread and stay set; llama.cpp's and candle's threads are not touched.
/// Call before running an rten model; only the first call does work.
pub fn flush_on_rten_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        rten::thread_pool().run(|| {
            rayon::broadcast(|_| flush_on_this_thread());
        });
    });
}

#[cfg(target_arch = "x86_64")]
fn flush_on_this_thread() {
    // MXCSR bit 15 = flush to zero (FTZ), bit 6 = denormals are zero (DAZ).
    const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
    #[allow(deprecated)]
    // SAFETY: reading and writing MXCSR only changes how this thread rounds subnormals.
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | FTZ_DAZ);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn flush_on_this_thread() {}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    #[test]
    fn rten_threads_flush_subnormal_products_to_zero() {
        super::flush_on_rten_threads();
        let subnormal = std::hint::black_box(1e-39_f32);
        assert!(subnormal.is_subnormal());
        let products = rten::thread_pool().run(|| {
            rayon::broadcast(|_| std::hint::black_box(subnormal) * std::hint::black_box(1.0_f32))
        });
        assert!(!products.is_empty());
        assert!(products.iter().all(|p| *p == 0.0), "{products:?}");
    }
}
