//! A process-wide panic counter for tests.
//!
//! Servers run each connection (and each stream) in a task tracker; a panic in such a task
//! ends that task only, and a test that checks "the connection closed" would pass against a
//! server that panicked. [`Guard`] installs a panic hook once per process (it counts, then
//! calls the previous hook, so the message is still printed) and, when dropped at the end of a
//! test that did not itself fail, asserts that no panic happened anywhere in the process since
//! it was made.
//!
//! The count is per process, and libtest runs the tests of one binary in parallel threads, so
//! a panic in any test of the binary fails every guard alive at that moment: a spurious
//! second failure beside a real one, never a missed panic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

static COUNT: AtomicU64 = AtomicU64::new(0);
static LAST: Mutex<Option<String>> = Mutex::new(None);
static INSTALL: Once = Once::new();

/// Installs the counting hook (once per process; later calls do nothing).
pub fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            COUNT.fetch_add(1, Ordering::SeqCst);
            let thread = std::thread::current();
            let what = format!("thread '{}': {info}", thread.name().unwrap_or("?"));
            if let Ok(mut last) = LAST.lock() {
                *last = Some(what);
            }
            previous(info);
        }));
    });
}

/// Panics counted in this process since [`install`].
pub fn count() -> u64 {
    COUNT.load(Ordering::SeqCst)
}

/// Asserts on drop that no panic happened since it was made (see the module docs).
#[derive(Debug)]
#[must_use = "the check happens when the guard is dropped"]
pub struct Guard {
    start: u64,
}

impl Guard {
    /// Installs the hook if needed and starts counting from now.
    pub fn new() -> Self {
        install();
        Self { start: count() }
    }

    /// Panics seen since the guard was made.
    pub fn seen(&self) -> u64 {
        count() - self.start
    }

    /// Asserts now that no panic happened since the guard was made.
    #[track_caller]
    pub fn check(&self) {
        let seen = self.seen();
        if seen > 0 {
            let last = LAST.lock().ok().and_then(|l| l.clone()).unwrap_or_default();
            panic!("{seen} panic(s) in this process during the test; the last: {last}");
        }
    }
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.check();
        }
    }
}

/// Starts a [`Guard`]: `let _panics = no_panics();` at the top of a test.
pub fn no_panics() -> Guard {
    Guard::new()
}
