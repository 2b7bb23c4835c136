//! A model's job queue: bounded, blocking for the worker thread, and aware of positions, so
//! every waiting request can be told how many are ahead of it (and whether the model is still
//! loading) each time the line moves. Requests whose client has gone are dropped from the line
//! instead of being run.

use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex, MutexGuard},
};

/// A job that can be told where it stands.
pub(super) trait Waiting {
    /// The client has gone or cancelled: the job need not run.
    fn abandoned(&self) -> bool;
    /// `ahead` requests are before this one (the running one included).
    fn tell_position(&self, ahead: usize, loading: bool);
}

/// Why a job was not queued; the job comes back.
pub(super) enum Refused<J> {
    Full(J),
    Closed(J),
}

struct Line<J> {
    waiting: VecDeque<J>,
    /// Jobs the worker is running.
    running: usize,
    /// How many jobs the worker runs at once.
    slots: usize,
    /// The model is loaded (jobs wait for the load otherwise).
    loaded: bool,
    closed: bool,
}

pub(super) struct JobQueue<J> {
    line: Mutex<Line<J>>,
    wake: Condvar,
    capacity: usize,
}

impl<J: Waiting> JobQueue<J> {
    /// At most `capacity` jobs wait besides the running ones.
    pub fn new(capacity: usize) -> Self {
        Self {
            line: Mutex::new(Line {
                waiting: VecDeque::new(),
                running: 0,
                slots: 1,
                loaded: false,
                closed: false,
            }),
            wake: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Line<J>> {
        // The line holds no invariant a panicking holder could break halfway.
        self.line.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job` at the end of the line, telling it its position when it has to wait.
    pub fn push(&self, job: J) -> Result<(), Refused<J>> {
        let mut line = self.lock();
        if line.closed {
            return Err(Refused::Closed(job));
        }
        line.waiting.retain(|j| !j.abandoned());
        if line.waiting.len() >= self.capacity {
            return Err(Refused::Full(job));
        }
        let ahead = line.waiting.len() + line.running;
        if line.waiting.len() + line.running >= line.slots || !line.loaded {
            job.tell_position(ahead, !line.loaded);
        }
        line.waiting.push_back(job);
        self.wake.notify_one();
        Ok(())
    }

    /// The next job for the worker, blocking until there is one; `None` once the queue is
    /// closed and empty. The job counts as running until [`JobQueue::done`].
    pub fn next(&self) -> Option<J> {
        let mut line = self.lock();
        loop {
            if let Some(job) = Self::take(&mut line) {
                return Some(job);
            }
            if line.closed {
                return None;
            }
            line = self.wake.wait(line).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The next job if one is waiting, without blocking.
    pub fn try_next(&self) -> Option<J> {
        Self::take(&mut self.lock())
    }

    /// A job taken with `next`/`try_next` finished.
    pub fn done(&self) {
        let mut line = self.lock();
        line.running = line.running.saturating_sub(1);
    }

    fn take(line: &mut Line<J>) -> Option<J> {
        line.waiting.retain(|j| !j.abandoned());
        let job = line.waiting.pop_front()?;
        line.running += 1;
        let (running, slots) = (line.running, line.slots);
        // Only jobs that must wait for a slot hear their place.
        for (index, waiting) in line.waiting.iter().enumerate() {
            if index + running >= slots {
                waiting.tell_position(index + running, false);
            }
        }
        Some(job)
    }

    /// The model finished loading and runs `slots` jobs at once.
    pub fn set_loaded(&self, slots: usize) {
        let mut line = self.lock();
        line.loaded = true;
        line.slots = slots.max(1);
    }

    /// No more jobs are accepted; those waiting are returned (to be answered) when `drain`.
    pub fn close(&self, drain: bool) -> Vec<J> {
        let mut line = self.lock();
        line.closed = true;
        self.wake.notify_all();
        if drain {
            line.waiting.drain(..).collect()
        } else {
            Vec::new()
        }
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Jobs waiting or running.
    pub fn active(&self) -> usize {
        let line = self.lock();
        line.waiting.iter().filter(|j| !j.abandoned()).count() + line.running
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };

    use super::*;

    #[derive(Clone, Default)]
    struct Probe {
        gone: Arc<AtomicBool>,
        told: Arc<Mutex<Vec<(usize, bool)>>>,
    }

    impl Waiting for Probe {
        fn abandoned(&self) -> bool {
            self.gone.load(Ordering::Relaxed)
        }
        fn tell_position(&self, ahead: usize, loading: bool) {
            self.told.lock().unwrap().push((ahead, loading));
        }
    }

    fn told(probe: &Probe) -> Vec<(usize, bool)> {
        probe.told.lock().unwrap().clone()
    }

    #[test]
    fn waiting_jobs_learn_their_place_as_the_line_moves() {
        let queue = JobQueue::new(3);
        let (a, b, c) = (Probe::default(), Probe::default(), Probe::default());
        for probe in [&a, &b, &c] {
            assert!(queue.push(probe.clone()).is_ok());
        }
        // Nothing is loaded yet: everyone hears that the model is loading.
        assert_eq!(told(&a), [(0, true)]);
        assert_eq!(told(&c), [(2, true)]);
        queue.set_loaded(1);
        assert!(queue.next().is_some()); // a runs
        assert_eq!(told(&b), [(1, true), (1, false)]);
        assert_eq!(told(&c), [(2, true), (2, false)]);
        b.gone.store(true, Ordering::Relaxed); // b's client leaves
        queue.done();
        let next = queue.next().expect("c");
        assert!(Arc::ptr_eq(&next.told, &c.told), "b was skipped");
        assert_eq!(queue.active(), 1);
    }

    #[test]
    fn a_full_line_refuses_at_once_and_a_closed_one_drains() {
        let queue = JobQueue::new(1);
        queue.set_loaded(1);
        let first = Probe::default();
        assert!(queue.push(first.clone()).is_ok());
        assert!(
            told(&first).is_empty(),
            "an idle loaded worker: no wait to report"
        );
        assert!(matches!(
            queue.push(Probe::default()),
            Err(Refused::Full(_))
        ));
        assert_eq!(queue.close(true).len(), 1);
        assert!(matches!(
            queue.push(Probe::default()),
            Err(Refused::Closed(_))
        ));
        assert!(queue.next().is_none());
    }

    #[test]
    fn with_slots_jobs_wait_only_once_every_slot_is_taken() {
        let queue = JobQueue::new(4);
        queue.set_loaded(2);
        let (a, b, c) = (Probe::default(), Probe::default(), Probe::default());
        for probe in [&a, &b, &c] {
            assert!(queue.push(probe.clone()).is_ok());
        }
        assert!(told(&a).is_empty() && told(&b).is_empty(), "two free slots");
        assert_eq!(told(&c), [(2, false)]);
        assert!(queue.try_next().is_some());
        assert!(queue.try_next().is_some());
        assert!(told(&b).is_empty(), "b never waited");
        assert!(told(&c).iter().all(|&t| t == (2, false)), "{:?}", told(&c));
        queue.done();
        assert!(queue.try_next().is_some(), "c takes the freed slot");
        assert!(queue.try_next().is_none());
        assert_eq!(queue.active(), 2);
    }
}
