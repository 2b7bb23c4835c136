//! The threads of a single-token pass: the caller and `threads - 1` helpers that spin briefly
//! between loops instead of sleeping. A decode step runs about 150 short parallel loops per
//! token; rayon's idle worker went to sleep between most of them, and waking it (a futex call,
//! and on a VM an interrupt to a halted vCPU) sat on the critical path of every loop.
//!
//! One atomic word holds a loop's generation, its task count and the next task to claim, so a
//! helper can only claim a task of the loop it read: a helper that wakes late finds its loop
//! exhausted and never touches the finished loop's closure, and the caller waits only for tasks
//! in progress, never for a helper to notice.

use std::{
    cell::UnsafeCell,
    panic::{self, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst},
        Arc,
    },
    thread::{self, JoinHandle, Thread},
    time::{Duration, Instant},
};

/// How long an idle helper spins before it sleeps: longer than the gaps inside a pass (a norm,
/// a quantization), shorter than a human notices as a busy core.
const SPIN: Duration = Duration::from_micros(300);

/// Spins of a caller waiting for its helpers before it yields its core between checks.
const YIELD_AFTER_SPINS: u32 = 1 << 14;

const INDEX_BITS: u32 = 24;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// The most tasks one loop may have.
pub const MAX_TASKS: usize = INDEX_MASK as usize;

/// `generation | tasks | next` in one word: 16, 24 and 24 bits.
fn pack(generation: u64, tasks: u64, next: u64) -> u64 {
    (generation << (2 * INDEX_BITS)) | (tasks << INDEX_BITS) | next
}

fn unpack(word: u64) -> (u64, u64, u64) {
    (
        word >> (2 * INDEX_BITS),
        (word >> INDEX_BITS) & INDEX_MASK,
        word & INDEX_MASK,
    )
}

type Task = dyn Fn(usize) + Sync;

struct Shared {
    word: AtomicU64,
    /// Tasks of the current loop finished (run or panicked).
    done: AtomicUsize,
    /// The current loop's closure, its lifetime erased: valid while a task of its generation is
    /// unclaimed or running, which is as long as the caller waits.
    task: UnsafeCell<*const Task>,
    panicked: AtomicBool,
    stop: AtomicBool,
    /// Set by [`Team::rest`] when a pass ends: helpers then sleep at once instead of spinning,
    /// leaving the cores to whatever runs between passes (sampling, the server's sockets).
    resting: AtomicBool,
    sleeping: Vec<AtomicBool>,
}

// SAFETY: `task` is written only by the caller while no task of any loop is claimable or
// running (between loops), and read only by a helper that has just claimed a task; the claim's
// compare-exchange orders the read after the write.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<(Thread, JoinHandle<()>)>,
    generation: u64,
}

impl std::fmt::Debug for Team {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Team({} threads)", self.threads())
    }
}

impl Team {
    /// A team of `threads` (at least 1: the caller), named after `name`.
    pub fn new(threads: usize, name: &str) -> std::io::Result<Self> {
        let helpers = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            word: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            task: UnsafeCell::new(std::ptr::null::<fn(usize)>() as *const Task),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            resting: AtomicBool::new(false),
            sleeping: (0..helpers).map(|_| AtomicBool::new(false)).collect(),
        });
        let mut team = Self {
            shared,
            helpers: Vec::with_capacity(helpers),
            generation: 0,
        };
        for index in 0..helpers {
            let shared = Arc::clone(&team.shared);
            let handle = thread::Builder::new()
                .name(format!("{name}-{}", index + 1))
                .spawn(move || helper(&shared, index))?;
            team.helpers.push((handle.thread().clone(), handle));
        }
        Ok(team)
    }

    pub fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// The end of a pass: idle helpers sleep now rather than spin until the next loop.
    pub fn rest(&self) {
        self.shared.resting.store(true, SeqCst);
    }

    /// Runs `task(i)` for every `i` in `0..tasks`, each once, on the caller and the helpers;
    /// returns when all have finished. A panicking task panics here, after the others finish.
    pub fn run(&mut self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        assert!(tasks <= MAX_TASKS, "at most MAX_TASKS tasks per loop");
        if tasks == 0 {
            return;
        }
        if self.helpers.is_empty() || tasks == 1 {
            (0..tasks).for_each(task);
            return;
        }
        let shared = &*self.shared;
        // SAFETY: no task of an earlier loop is claimable (all were claimed) or running (all
        // finished: see the wait below), so no helper reads `task` now.
        unsafe {
            *shared.task.get() =
                std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const Task>(task);
        }
        shared.done.store(0, SeqCst);
        shared.resting.store(false, SeqCst);
        self.generation = (self.generation + 1) & 0xFFFF;
        shared
            .word
            .store(pack(self.generation, tasks as u64, 0), SeqCst);
        for ((thread, _), sleeping) in self.helpers.iter().zip(&shared.sleeping) {
            if sleeping.swap(false, SeqCst) {
                thread.unpark();
            }
        }
        let own = panic::catch_unwind(AssertUnwindSafe(|| {
            while let Some(index) = claim(shared, self.generation) {
                task(index);
                shared.done.fetch_add(1, SeqCst);
            }
        }));
        if own.is_err() {
            // The panicking task counts as finished; the rest are drained so nothing waits.
            shared.done.fetch_add(1, SeqCst);
            while let Some(_index) = claim(shared, self.generation) {
                shared.done.fetch_add(1, SeqCst);
            }
        }
        // A helper that was preempted in its task holds the loop up: after a while the
        // caller yields its core rather than spin through the helper's time slice.
        let mut waits = 0u32;
        while shared.done.load(SeqCst) < tasks {
            waits = waits.saturating_add(1);
            if waits < YIELD_AFTER_SPINS {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        if let Err(payload) = own {
            panic::resume_unwind(payload);
        }
        if shared.panicked.swap(false, SeqCst) {
            panic!("a task of the decode team panicked");
        }
    }

    /// `f(i, chunk)` for every `size`-long chunk of `data` (the last may be shorter), in
    /// parallel.
    pub fn chunks_mut<T: Send>(
        &mut self,
        data: &mut [T],
        size: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let size = size.max(1);
        let parts = Parts::new(data, size);
        self.run(data.len().div_ceil(size), &|i| {
            // SAFETY: each index runs once, and chunks of distinct indices are disjoint.
            f(i, unsafe { parts.get(i) })
        });
    }

    /// `f(i, a_chunk, b_chunk)` for chunks `i` of `a` (`a_size` long) and `b` (`b_size`), in
    /// parallel, as many as the shorter has.
    pub fn zip_chunks_mut<A: Send, B: Send>(
        &mut self,
        (a, a_size): (&mut [A], usize),
        (b, b_size): (&mut [B], usize),
        f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
    ) {
        let (a_size, b_size) = (a_size.max(1), b_size.max(1));
        let count = a.len().div_ceil(a_size).min(b.len().div_ceil(b_size));
        let (a, b) = (Parts::new(a, a_size), Parts::new(b, b_size));
        self.run(count, &|i| {
            // SAFETY: as in `chunks_mut`.
            f(i, unsafe { a.get(i) }, unsafe { b.get(i) })
        });
    }

    /// `f(first, chunk)` for every chunk of `data` that `split` cuts, `first` being the
    /// chunk's offset in `data`, in parallel.
    pub fn split_mut<T: Send>(
        &mut self,
        data: &mut [T],
        split: &Split,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        assert_eq!(split.total(), data.len(), "the split covers the data");
        let start = data.as_mut_ptr();
        let start = SendPtr(start);
        self.run(split.len(), &|i| {
            let range = split.range(i);
            // SAFETY: each index runs once, and the ranges of a split are disjoint and inside
            // `data`.
            let chunk = unsafe {
                std::slice::from_raw_parts_mut(start.get().add(range.start), range.len())
            };
            f(range.start, chunk)
        });
    }
}

struct SendPtr<T>(*mut T);

// SAFETY: used only to hand disjoint ranges of one slice of `Send` values to tasks.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// The most chunks a [`Split`] makes; the last takes whatever remains.
const MAX_SPLIT: usize = 96;

/// A loop's items cut into chunks that shrink as the loop goes (guided scheduling): long
/// chunks first, which stream a long run of memory each, and short ones last, so the threads
/// finish close together instead of one idling while another ends a long chunk. Held on the
/// stack, so a decode step allocates nothing.
#[derive(Debug, Clone)]
pub struct Split {
    ends: [u32; MAX_SPLIT],
    len: usize,
}

impl Split {
    /// Chunks of `total` items for `threads` threads: each takes `1 / threads` of what
    /// remains, within `min..=max` items.
    pub fn guided(total: usize, threads: usize, min: usize, max: usize) -> Self {
        let mut split = Self {
            ends: [0; MAX_SPLIT],
            len: 0,
        };
        let (min, max) = (min.max(1), max.max(min.max(1)));
        let parts = threads.max(1);
        let mut end = 0;
        while end < total {
            let remaining = total - end;
            let size = if split.len + 1 == MAX_SPLIT {
                remaining
            } else {
                (remaining / parts).clamp(min, max).min(remaining)
            };
            end += size;
            split.ends[split.len] = end as u32;
            split.len += 1;
        }
        split
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All the items the chunks cover.
    pub fn total(&self) -> usize {
        self.len
            .checked_sub(1)
            .map_or(0, |last| self.ends[last] as usize)
    }

    /// The items of chunk `i`.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p] as usize);
        start..self.ends[i] as usize
    }

    /// The longest chunk.
    #[cfg(test)]
    fn longest(&self) -> usize {
        (0..self.len)
            .map(|i| self.range(i).len())
            .max()
            .unwrap_or(0)
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        for (thread, _) in &self.helpers {
            thread.unpark();
        }
        for (_, handle) in self.helpers.drain(..) {
            let _ = handle.join();
        }
    }
}

/// A mutable slice cut into chunks that tasks take one each.
struct Parts<T> {
    start: *mut T,
    len: usize,
    size: usize,
}

// SAFETY: hands out disjoint chunks of a slice of `Send` values, one per task.
unsafe impl<T: Send> Sync for Parts<T> {}

impl<T> Parts<T> {
    fn new(data: &mut [T], size: usize) -> Self {
        Self {
            start: data.as_mut_ptr(),
            len: data.len(),
            size,
        }
    }

    /// # Safety
    /// At most one caller per `i` while the slice is borrowed.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self, i: usize) -> &mut [T] {
        let from = (i * self.size).min(self.len);
        let len = self.size.min(self.len - from);
        unsafe { std::slice::from_raw_parts_mut(self.start.add(from), len) }
    }
}

/// The next unclaimed task of loop `generation`, if any.
fn claim(shared: &Shared, generation: u64) -> Option<usize> {
    let mut word = shared.word.load(SeqCst);
    loop {
        let (current, tasks, next) = unpack(word);
        if current != generation || next >= tasks {
            return None;
        }
        match shared
            .word
            .compare_exchange_weak(word, word + 1, SeqCst, SeqCst)
        {
            Ok(_) => return Some(next as usize),
            Err(seen) => word = seen,
        }
    }
}

fn helper(shared: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        // Wait for a loop newer than the last one seen: spin, then sleep.
        let started = Instant::now();
        let mut spins = 0u32;
        let generation = loop {
            if shared.stop.load(SeqCst) {
                return;
            }
            let (generation, _, _) = unpack(shared.word.load(SeqCst));
            if generation != seen {
                break generation;
            }
            spins = spins.wrapping_add(1);
            let rest = shared.resting.load(SeqCst);
            if !rest && (!spins.is_multiple_of(64) || started.elapsed() < SPIN) {
                std::hint::spin_loop();
                continue;
            }
            shared.sleeping[index].store(true, SeqCst);
            let (now, _, _) = unpack(shared.word.load(SeqCst));
            if now == seen && !shared.stop.load(SeqCst) {
                thread::park();
            }
            shared.sleeping[index].store(false, SeqCst);
        };
        seen = generation;
        while let Some(task_index) = claim(shared, generation) {
            // SAFETY: a claimed task keeps its loop's closure alive (the caller waits for it).
            let task = unsafe { &**shared.task.get() };
            if panic::catch_unwind(AssertUnwindSafe(|| task(task_index))).is_err() {
                shared.panicked.store(true, SeqCst);
            }
            shared.done.fetch_add(1, SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_is_visited_once_on_every_team_size() {
        for threads in [1, 2, 3, 5] {
            let mut team = Team::new(threads, "test").unwrap();
            for round in 0..200usize {
                let mut data = vec![0u32; 1000 + round];
                team.chunks_mut(&mut data, 7, |i, chunk| {
                    for v in chunk.iter_mut() {
                        *v += 1 + i as u32;
                    }
                });
                for (j, v) in data.iter().enumerate() {
                    assert_eq!(*v, 1 + (j / 7) as u32, "{threads} threads, round {round}");
                }
            }
        }
    }

    #[test]
    fn helpers_asleep_wake_for_the_next_loop() {
        let mut team = Team::new(2, "test").unwrap();
        let mut data = vec![0u8; 64];
        for _ in 0..3 {
            thread::sleep(SPIN * 4);
            team.chunks_mut(&mut data, 1, |_, chunk| chunk[0] += 1);
        }
        // Sent to sleep by `rest`, at once or while they still spin.
        for round in 0..200 {
            team.rest();
            if round % 2 == 0 {
                thread::sleep(SPIN / 10);
            }
            team.chunks_mut(&mut data, 1, |_, chunk| chunk[0] += 1);
        }
        assert!(data.iter().all(|&v| v == 203));
    }

    #[test]
    fn a_guided_split_covers_every_item_once_in_shrinking_chunks() {
        for threads in [1, 2, 3, 8] {
            for total in [0, 1, 15, 16, 17, 640, 2560, 7680, 13824, 1 << 22] {
                let split = Split::guided(total, threads, 16, 1024);
                assert_eq!(split.total(), total, "{threads} threads, {total} items");
                let mut next = 0;
                for i in 0..split.len() {
                    let range = split.range(i);
                    assert_eq!(range.start, next, "chunks follow each other");
                    assert!(!range.is_empty());
                    next = range.end;
                }
                assert!(split.len() <= MAX_SPLIT);
                if total <= 200_000 {
                    assert!(split.longest() <= 1024, "{threads}, {total}");
                    // Shared by several threads, it ends short: the last chunk is at most the
                    // minimum.
                    let last = split.range(split.len().saturating_sub(1)).len();
                    assert!(
                        threads == 1 || last <= 16,
                        "{threads}, {total}: last {last}"
                    );
                }
                let lengths: Vec<usize> = (0..split.len()).map(|i| split.range(i).len()).collect();
                if total <= 200_000 {
                    assert!(
                        lengths.windows(2).all(|w| w[1] <= w[0]),
                        "{threads}, {total}: {lengths:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn split_mut_hands_each_chunk_its_offset_on_every_team_size() {
        for threads in [1, 2, 3, 5] {
            let mut team = Team::new(threads, "test").unwrap();
            for total in [1, 17, 1000, 7680] {
                let split = Split::guided(total, threads, 16, 1024);
                let mut data = vec![0usize; total];
                team.split_mut(&mut data, &split, |first, chunk| {
                    for (k, v) in chunk.iter_mut().enumerate() {
                        *v += first + k + 1;
                    }
                });
                assert!(
                    data.iter().enumerate().all(|(j, &v)| v == j + 1),
                    "{threads}, {total}"
                );
            }
        }
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_team_still_works() {
        let mut team = Team::new(3, "test").unwrap();
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            team.run(100, &|i| assert!(i != 37, "task 37"));
        }));
        assert!(caught.is_err());
        let total = AtomicUsize::new(0);
        team.run(100, &|i| {
            total.fetch_add(i, SeqCst);
        });
        assert_eq!(total.load(SeqCst), 4950);
    }
}
