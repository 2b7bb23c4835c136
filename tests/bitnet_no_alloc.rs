//! A BitNet decode step allocates nothing: every buffer (activations, int8 rows, attention
//! scores, KV cache, logits) is sized at load. Counted by a global allocator, so this binary
//! holds this one test only (another test's allocations would be counted too).

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

use quantlab::inference::bitnet::{
    head::HeadPrecision, kernels::Isa, model::Model, weights::Weights,
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

#[test]
fn decode_steps_allocate_nothing() {
    let config = common::tiny_bitnet::small_config();
    let heads = [HeadPrecision::Bf16, HeadPrecision::Int8, HeadPrecision::Q6K];
    for (isa, head) in Isa::all_available()
        .into_iter()
        .flat_map(|isa| heads.map(|head| (isa, head)))
    {
        let weights = Weights::random(&config, 1).with_head(head).unwrap();
        let mut model = Model::new(weights, 256, 2, isa).expect("thread pool");
        model.forward_last(&[1, 2, 3, 4, 5], 0);
        // The pool's threads are warm now.
        model.forward_last(&[6], 5);
        // Rayon's job queues grow now and then when the scheduler runs the pool's threads late
        // (a busy machine); that is amortised, not per step. A step that allocates would make
        // every round count some, so one clean round of 34 steps shows there is none.
        let mut rounds = Vec::new();
        for round in 0..5 {
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            for position in 6 + 34 * round..40 + 34 * round {
                let logits = model.forward_last(&[7], position);
                assert!(logits.iter().all(|l| l.is_finite()));
            }
            rounds.push(ALLOCATIONS.load(Ordering::SeqCst) - before);
            if rounds.last() == Some(&0) {
                break;
            }
        }
        assert_eq!(
            rounds.last(),
            Some(&0),
            "{isa:?}, {head:?} head: every round of 34 decode steps allocated: {rounds:?}"
        );
    }
}
