//! The memory budget: bytes of batches in flight, admitted before they enter a channel.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Counts the bytes of batches in flight against a limit.
///
/// Sources wait for room before they pass a batch on ([`MemoryBudget::acquire`]): that is
/// the back-pressure that keeps a 50 GB input within a few hundred MB. Steps further down
/// account for what they produce without waiting ([`MemoryBudget::charge`]), since
/// making them wait could deadlock a DAG whose budget is held by batches queued for them.
/// A batch larger than the whole budget is let through alone, so that it cannot block for
/// ever.
#[derive(Debug)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
    peak: AtomicU64,
}

/// Bytes held in the budget, given back when the last clone is dropped.
#[derive(Debug)]
pub struct Permit {
    inner: Arc<Inner>,
    bytes: u64,
}

impl Permit {
    /// Changes the bytes this permit holds, without waiting: the input's share of the
    /// budget becomes the output's when a step turns one batch into another.
    pub fn resize(&mut self, bytes: u64) {
        let mut used = self.inner.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *used = (*used + bytes).saturating_sub(self.bytes);
        self.inner.peak.fetch_max(*used, Ordering::Relaxed);
        drop(used);
        if bytes < self.bytes {
            self.inner.freed.notify_all();
        }
        self.bytes = bytes;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut used = self.inner.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *used = used.saturating_sub(self.bytes);
        drop(used);
        self.inner.freed.notify_all();
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            inner: Arc::new(Inner { limit, used: Mutex::new(0), freed: Condvar::new(), peak: AtomicU64::new(0) }),
        }
    }

    /// Waits until `bytes` fit (or nothing else is in flight), then holds them. Returns
    /// `None` if `cancel` is set while waiting, and how long it waited otherwise.
    pub fn acquire(&self, bytes: u64, cancel: &AtomicBool) -> Option<(Permit, Duration)> {
        let start = Instant::now();
        let mut used = self.inner.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *used > 0 && *used + bytes > self.inner.limit {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            used = self
                .inner
                .freed
                .wait_timeout(used, Duration::from_millis(20))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        *used += bytes;
        self.inner.peak.fetch_max(*used, Ordering::Relaxed);
        Some((Permit { inner: Arc::clone(&self.inner), bytes }, start.elapsed()))
    }

    /// Holds `bytes` without waiting.
    pub fn charge(&self, bytes: u64) -> Permit {
        let mut used = self.inner.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *used += bytes;
        self.inner.peak.fetch_max(*used, Ordering::Relaxed);
        Permit { inner: Arc::clone(&self.inner), bytes }
    }

    /// The bytes in flight now.
    pub fn used(&self) -> u64 {
        *self.inner.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most bytes that were in flight at once.
    pub fn peak(&self) -> u64 {
        self.inner.peak.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_waits_for_room_and_permits_give_it_back() {
        let b = Arc::new(MemoryBudget::new(100));
        let cancel = Arc::new(AtomicBool::new(false));
        let (p1, _) = b.acquire(60, &cancel).unwrap();
        let b2 = Arc::clone(&b);
        let c2 = Arc::clone(&cancel);
        let t = std::thread::spawn(move || b2.acquire(60, &c2).map(|(p, _)| p.bytes));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.used(), 60, "the second acquire waits");
        drop(p1);
        assert_eq!(t.join().unwrap(), Some(60));
        assert_eq!(b.peak(), 60);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn an_oversized_batch_goes_alone_and_cancel_stops_waiting() {
        let b = MemoryBudget::new(10);
        let cancel = AtomicBool::new(false);
        let (big, _) = b.acquire(50, &cancel).unwrap();
        cancel.store(true, Ordering::Relaxed);
        assert!(b.acquire(1, &cancel).is_none());
        drop(big);
        let mut c = b.charge(5);
        assert_eq!(b.used(), 5);
        c.resize(3);
        assert_eq!(b.used(), 3);
        c.resize(8);
        assert_eq!((b.used(), b.peak()), (8, 50));
    }
}
