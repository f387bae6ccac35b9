//! Waiting on Win32 events (eBPF for Windows): the decision logic, free of
//! system calls so that it is unit-tested on Linux, and (on Windows) the
//! [`Waiter`] that runs it over real events.
//!
//! efW does not make the map's descriptor pollable. A reader registers an
//! event with `ebpf_map_set_wait_handle`; efW signals it when a commit
//! leaves the ring non-empty (more eagerly than Linux's wakeup rule).
//! `flush()` and `close()` signal a second event, and a sleep waits on both
//! (`WaitForMultipleObjects`). Two facts decide the protocol:
//!
//! * **A signal sent before registration is lost** (there is one event per
//!   map; registering replaces the last one). So the reader looks at the
//!   ring before its first sleep. The blocking reader always does: it sleeps
//!   only after a reload found the ring empty and the position was
//!   published, fenced and re-checked (see `crate::ring`).
//! * **Events are manual-reset, and a signal is reset only after the sleep
//!   woke on it, before the caller looks at the ring again.** A commit after
//!   the reset signals again, so the next sleep returns at once; a commit
//!   before it is found by that look. Resetting at any other moment, such as
//!   just before blocking, loses the commits that landed between the
//!   caller's last look and the reset: the model below finds that hang.

use std::time::Duration;

use super::Woke;
use crate::error::Result;

/// What one wait on the two events reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The ring's event (a commit).
    Ring,
    /// The control event (a flush or close).
    Control,
    /// The timeout passed.
    Timeout,
}

/// The two events a reader sleeps on, as the protocol sees them.
pub(crate) trait EventPair {
    /// Blocks until either event is signalled (reporting one that is), or
    /// `timeout` passes; `None` waits forever.
    fn wait_any(&self, timeout: Option<Duration>) -> Result<Signal>;
    /// Unsignals the ring's event.
    fn reset_ring(&self);
    /// Unsignals the control event.
    fn reset_control(&self);
}

/// One sleep. The caller has looked at the ring since registering the event
/// (or since this returned last) and found it empty. `RESET_ON_WAKE = false`
/// resets the ring's event before blocking instead, and exists only so the
/// model can show that this loses a wakeup; the reader uses `true`.
pub(crate) fn sleep<const RESET_ON_WAKE: bool, E: EventPair>(
    events: &E,
    timeout: Option<Duration>,
) -> Result<Woke> {
    if !RESET_ON_WAKE {
        events.reset_ring();
    }
    Ok(match events.wait_any(timeout)? {
        Signal::Ring => {
            if RESET_ON_WAKE {
                // After the wake, before the caller's next look at the ring.
                events.reset_ring();
            }
            Woke {
                ring: true,
                event: false,
            }
        }
        Signal::Control => {
            // The flags it announced are checked by the caller next.
            events.reset_control();
            Woke {
                ring: false,
                event: true,
            }
        }
        Signal::Timeout => Woke::default(),
    })
}

#[cfg(windows)]
pub(crate) use self::windows::Waiter;

#[cfg(windows)]
mod windows {
    use std::time::{Duration, Instant};

    use super::{EventPair, Signal};
    use crate::error::Result;
    use crate::sys::fd::BorrowedFd;
    use crate::sys::windows::event::{wait_any, Event};
    use crate::wait::{Shared, Woke};

    /// The sleeping half of a reader on Windows: the event registered with
    /// the map, and the control event of [`Shared`].
    #[derive(Debug)]
    pub(crate) struct Waiter {
        ring: Event,
    }

    struct Pair<'a> {
        ring: &'a Event,
        control: &'a Event,
    }

    impl EventPair for Pair<'_> {
        fn wait_any(&self, timeout: Option<Duration>) -> Result<Signal> {
            // The control event first: when both are signalled, the lowest
            // index is reported, and a close must not wait behind a flood.
            Ok(match wait_any([self.control, self.ring], timeout)? {
                Some(0) => Signal::Control,
                Some(_) => Signal::Ring,
                None => Signal::Timeout,
            })
        }

        fn reset_ring(&self) {
            self.ring.drain();
        }

        fn reset_control(&self) {
            self.control.drain();
        }
    }

    impl Waiter {
        /// Creates the ring's event and registers it with the map
        /// (`ebpf_map_set_wait_handle`). A commit before this is not
        /// signalled: the reader reads before its first sleep.
        pub(crate) fn new(ring_fd: BorrowedFd<'_>, _shared: &Shared) -> Result<Waiter> {
            let ring = Event::new()?;
            crate::sys::windows::set_wait_handle(ring_fd, &ring)?;
            Ok(Waiter { ring })
        }

        /// Sleeps until the ring's event or the control event is signalled,
        /// or `deadline` passes. As on Linux, the caller has published its
        /// position and re-checked; spurious returns are fine.
        pub(crate) fn sleep(&self, shared: &Shared, deadline: Option<Instant>) -> Result<Woke> {
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let pair = Pair {
                ring: &self.ring,
                control: shared.control_event(),
            };
            super::sleep::<true, _>(&pair, timeout)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The protocol over real Win32 events (Windows, or Wine): a ring
        /// signal wakes and is reset after the wake, a control signal wakes
        /// and is reset, nothing signalled times out.
        #[test]
        fn sleep_over_win32_events() {
            let (ring, control) = (Event::new().unwrap(), Event::new().unwrap());
            let pair = Pair {
                ring: &ring,
                control: &control,
            };
            let zero = Some(Duration::ZERO);
            let woke = super::super::sleep::<true, _>(&pair, zero).unwrap();
            assert!(!woke.ring && !woke.event);
            ring.notify();
            let woke = super::super::sleep::<true, _>(&pair, None).unwrap();
            assert!(woke.ring && !woke.event);
            assert_eq!(
                wait_any([&control, &ring], zero).unwrap(),
                None,
                "reset after the wake"
            );
            control.notify();
            ring.notify();
            let woke = super::super::sleep::<true, _>(&pair, None).unwrap();
            assert!(woke.event && !woke.ring, "control first");
            assert_eq!(
                wait_any([&control, &ring], zero).unwrap(),
                Some(1),
                "the ring's signal stays"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! A model of a reader over efW's events: a ring reduced to two counters,
    //! manual-reset events as flags, and a producer that commits one record
    //! at a chosen step of the reader (every step is tried). The reader's
    //! loop is the blocking reader's: look at the ring (reading everything),
    //! and sleep only when it was empty.

    use std::cell::Cell;

    use super::*;

    /// The ring, the two events, and the producer's schedule.
    #[derive(Default)]
    struct Model {
        produced: Cell<u32>,
        consumed: Cell<u32>,
        /// The ring's event, once registered (`None` before).
        ring_event: Cell<Option<bool>>,
        control: Cell<bool>,
        /// Steps taken by the reader so far.
        step: Cell<u32>,
        /// The reader's step at which the producer commits its one record
        /// (`None`: it does not, or it did).
        commit_at: Cell<Option<u32>>,
        /// Set when a sleep without timeout found no event signalled.
        blocked_forever: Cell<bool>,
    }

    impl Model {
        /// One step of the reader; the producer commits when its turn comes.
        fn tick(&self) {
            if self.commit_at.get() == Some(self.step.get()) {
                self.commit_at.set(None);
                self.produced.set(self.produced.get() + 1);
                // efW signals the registered event when a commit leaves the
                // ring non-empty; with no event registered the signal is lost.
                if self.ring_event.get().is_some() {
                    self.ring_event.set(Some(true));
                }
            }
            self.step.set(self.step.get() + 1);
        }

        /// The reader looks at the ring and reads everything there: whether
        /// it found anything.
        fn look(&self) -> bool {
            self.tick();
            let found = self.produced.get() != self.consumed.get();
            self.consumed.set(self.produced.get());
            found
        }

        fn register(&self) {
            self.tick();
            self.ring_event.set(Some(false));
        }
    }

    impl EventPair for Model {
        fn wait_any(&self, timeout: Option<Duration>) -> Result<Signal> {
            self.tick();
            if self.control.get() {
                return Ok(Signal::Control);
            }
            if let (false, Some(at)) = (self.ring_event.get() == Some(true), self.commit_at.get()) {
                // Blocked with the commit still to come: time passes until
                // the producer commits (and signals, if registered).
                self.step.set(at);
                self.tick();
            }
            if self.ring_event.get() == Some(true) {
                return Ok(Signal::Ring);
            }
            if timeout.is_none() {
                // Nothing will signal again in this model: the reader would
                // sleep forever.
                self.blocked_forever.set(true);
            }
            Ok(Signal::Timeout)
        }

        fn reset_ring(&self) {
            self.tick();
            if self.ring_event.get().is_some() {
                self.ring_event.set(Some(false));
            }
        }

        fn reset_control(&self) {
            self.tick();
            self.control.set(false);
        }
    }

    /// Runs a reader that registers, looks (unless `read_first` is false),
    /// and then loops look/sleep, with one commit at reader step `at`. Returns
    /// the model when the reader blocked forever or after a bounded number
    /// of rounds.
    fn run<const RESET_ON_WAKE: bool>(at: u32, read_first: bool) -> Model {
        let m = Model::default();
        m.commit_at.set(Some(at));
        m.register();
        let mut must_look = read_first;
        for _ in 0..8 {
            if must_look && m.look() {
                continue;
            }
            must_look = true;
            sleep::<RESET_ON_WAKE, _>(&m, None).unwrap();
            if m.blocked_forever.get() {
                break;
            }
        }
        m
    }

    /// With the protocol (read before the first sleep, reset on wake), every
    /// placement of the commit ends with the record read and the reader
    /// asleep with nothing pending; including a commit before registration,
    /// whose signal is lost.
    #[test]
    fn no_commit_is_missed() {
        for at in 0..12 {
            let m = run::<true>(at, true);
            assert_eq!(m.produced.get(), 1, "commit at {at}");
            assert_eq!(m.consumed.get(), 1, "commit at {at}: the record was read");
            assert!(
                m.blocked_forever.get(),
                "commit at {at}: the reader sleeps at the end"
            );
        }
    }

    /// A commit before registration signals nothing: a reader that sleeps
    /// before it looks sleeps forever with the record in the ring.
    #[test]
    fn sleeping_before_the_first_read_misses_an_earlier_commit() {
        let m = run::<true>(0, false);
        assert!(m.blocked_forever.get());
        assert_eq!((m.produced.get(), m.consumed.get()), (1, 0));
        // The same commit, with the first read: found.
        let m = run::<true>(0, true);
        assert_eq!((m.produced.get(), m.consumed.get()), (1, 1));
    }

    /// Resetting before blocking (instead of after the wake) loses a commit
    /// that lands between the reader's look and the reset: at some step the
    /// reader sleeps forever with a record in the ring.
    #[test]
    fn resetting_before_blocking_loses_a_wakeup() {
        let lost: Vec<u32> = (0..12)
            .filter(|&at| {
                let m = run::<false>(at, true);
                m.blocked_forever.get() && m.produced.get() != m.consumed.get()
            })
            .collect();
        assert!(!lost.is_empty(), "the model must find the lost wakeup");
    }

    /// A flush or close wakes the sleep and resets the control event; the
    /// ring's event is untouched.
    #[test]
    fn control_event_wakes_and_is_reset() {
        let m = Model::default();
        m.register();
        m.control.set(true);
        let woke = sleep::<true, _>(&m, None).unwrap();
        assert!(woke.event && !woke.ring);
        assert!(!m.control.get());
        assert_eq!(m.ring_event.get(), Some(false));
        let woke = sleep::<true, _>(&m, Some(Duration::ZERO)).unwrap();
        assert!(!woke.event && !woke.ring);
    }
}
