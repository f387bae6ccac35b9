//! The steady-state read paths allocate nothing per record: `read_into`,
//! `read_zero_copy` + `commit`, and `consume`, against the real kernel
//! producer. A counting global allocator counts the allocations made by the
//! test's own thread while it reads (production happens outside the window).
//!
//! Privileged: skipped loudly without CAP_BPF, and a failure when
//! BPF_RINGBUF_REQUIRE_PRIVILEGED=1. Needs the `testing` feature (CI runs
//! `cargo test --all-features`).
#![cfg(feature = "testing")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ops::ControlFlow;
use std::time::Instant;

use bpf_ringbuf::testing::{
    check_payload, privileged_or_skip, KernelProducer, ProducerConfig, RecordSize, Wakeup,
};
use bpf_ringbuf::{Budget, Error, Reader, Record, RingBuf};

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel do not count each other's
    // allocations. const-initialised: using them never allocates.
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if TRACKING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn allocs_in<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCS.with(Cell::get);
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    (ALLOCS.with(Cell::get) - before, r)
}

const RING: usize = 4 << 20;
const N: u64 = 5_000;

struct Setup {
    ring: RingBuf,
    producer: KernelProducer,
    next_seq: u64,
}

fn setup(size: RecordSize) -> Setup {
    let ring = RingBuf::create(RING).expect("create ring");
    let producer = KernelProducer::new(
        &ring,
        ProducerConfig {
            size,
            discard_every: Some(7),
            wakeup: Wakeup::Default,
        },
    )
    .expect("load producer");
    Setup {
        ring,
        producer,
        next_seq: 0,
    }
}

impl Setup {
    /// Produces `n` records (outside any counting window); returns how many
    /// were submitted (discards excluded).
    fn fill(&mut self, n: u64) -> u64 {
        let r = self.producer.produce(n).expect("produce");
        assert_eq!(r.dropped, 0, "ring too small for the test");
        r.submitted
    }
}

fn check_seq(rec: &[u8], want_min: &mut u64) {
    let seq = check_payload(rec).expect("payload intact");
    assert!(
        seq >= *want_min,
        "sequence went backwards: {seq} < {want_min}"
    );
    *want_min = seq + 1;
}

#[test]
fn counter_sees_allocations() {
    let (n, v) = allocs_in(|| std::hint::black_box(Vec::<u8>::with_capacity(16)));
    drop(v);
    assert!(
        n >= 1,
        "the counting allocator must see this thread's allocations"
    );
}

#[test]
fn read_into_allocates_nothing_per_record() {
    if !privileged_or_skip("read_into_allocates_nothing_per_record") {
        return;
    }
    let mut s = setup(RecordSize::Mixed(vec![8, 64, 200, 1000]));
    let mut reader = Reader::new(&s.ring).expect("reader");
    reader.set_deadline(Some(Instant::now()));
    let mut rec = Record::default();
    // Warm-up: the Record's buffer grows to the largest size once.
    let warm = s.fill(100);
    for _ in 0..warm {
        reader.read_into(&mut rec).expect("warm-up read");
    }
    for _round in 0..3 {
        let n = s.fill(N);
        let mut seq = s.next_seq;
        let (allocs, ()) = allocs_in(|| {
            for _ in 0..n {
                reader.read_into(&mut rec).expect("read_into");
                check_seq(&rec.data, &mut seq);
            }
        });
        s.next_seq = seq;
        assert_eq!(
            allocs, 0,
            "read_into allocated {allocs} times for {n} records"
        );
    }
    assert!(matches!(
        reader.read_into(&mut rec),
        Err(Error::DeadlineExceeded)
    ));
}

#[test]
fn read_zero_copy_and_commit_allocate_nothing() {
    if !privileged_or_skip("read_zero_copy_and_commit_allocate_nothing") {
        return;
    }
    let mut s = setup(RecordSize::Mixed(vec![8, 64, 200, 1000]));
    let mut reader = Reader::new(&s.ring).expect("reader");
    reader.set_deadline(Some(Instant::now()));
    let warm = s.fill(100);
    for _ in 0..warm {
        reader.read_zero_copy().expect("warm-up read");
    }
    reader.commit();
    for _round in 0..3 {
        let n = s.fill(N);
        let mut seq = 0;
        let (allocs, ()) = allocs_in(|| {
            let mut got = 0;
            while got < n {
                // Batches of up to 64 records, one commit each.
                for _ in 0..64.min(n - got) {
                    let rec = reader.read_zero_copy().expect("read_zero_copy");
                    check_seq(rec, &mut seq);
                    got += 1;
                }
                reader.commit();
            }
        });
        assert_eq!(
            allocs, 0,
            "read_zero_copy/commit allocated {allocs} times for {n} records"
        );
    }
    // Empty now: with nothing outstanding the past deadline ends the read.
    assert!(matches!(
        reader.read_zero_copy(),
        Err(Error::DeadlineExceeded)
    ));
}

#[test]
fn consume_allocates_nothing() {
    if !privileged_or_skip("consume_allocates_nothing") {
        return;
    }
    let mut s = setup(RecordSize::Fixed(64));
    let mut reader = Reader::new(&s.ring).expect("reader");
    let warm = s.fill(100);
    let st = reader
        .consume(|_| ControlFlow::Continue(()))
        .expect("warm-up consume");
    assert_eq!(st.records as u64, warm);
    for _round in 0..3 {
        // One call for everything.
        let n = s.fill(N);
        let mut seq = 0;
        let (allocs, st) = allocs_in(|| {
            reader
                .consume(|rec| {
                    check_seq(rec, &mut seq);
                    ControlFlow::Continue(())
                })
                .expect("consume")
        });
        assert_eq!(st.records as u64, n);
        assert_eq!(
            allocs, 0,
            "consume allocated {allocs} times for {n} records"
        );

        // Many small budgeted calls.
        let n = s.fill(N);
        let (allocs, got) = allocs_in(|| {
            let mut got = 0u64;
            loop {
                let st = reader
                    .consume_with_budget(Budget::records(50), |rec| {
                        check_seq(rec, &mut seq);
                        ControlFlow::Continue(())
                    })
                    .expect("consume_with_budget");
                if st.records == 0 {
                    break got;
                }
                got += st.records as u64;
            }
        });
        assert_eq!(got, n);
        assert_eq!(
            allocs, 0,
            "consume_with_budget allocated {allocs} times for {n} records"
        );
    }
}

#[test]
fn poll_interval_read_zero_copy_allocates_nothing() {
    if !privileged_or_skip("poll_interval_read_zero_copy_allocates_nothing") {
        return;
    }
    for policy in [
        bpf_ringbuf::WakePolicy::Interval(std::time::Duration::from_millis(1)),
        bpf_ringbuf::WakePolicy::Adaptive {
            max_latency: std::time::Duration::from_millis(1),
        },
        bpf_ringbuf::WakePolicy::Kernel,
    ] {
        napping_reads_allocate_nothing(policy);
    }
}

fn napping_reads_allocate_nothing(policy: bpf_ringbuf::WakePolicy) {
    let mut s = setup(RecordSize::Mixed(vec![8, 64, 200, 1000]));
    let mut reader = Reader::new(&s.ring).expect("reader");
    reader.set_wake_policy(policy);
    reader.set_deadline(Some(Instant::now()));
    let warm = s.fill(100);
    for _ in 0..warm {
        reader.read_zero_copy().expect("warm-up read");
    }
    reader.commit();
    for _round in 0..3 {
        let n = s.fill(N);
        let mut seq = 0;
        // A deadline a few intervals away: the records are read without
        // sleeping, then the empty ring is re-checked every interval (ppoll
        // on the eventfd) until the deadline. Both inside the window.
        reader.set_deadline(Some(Instant::now() + std::time::Duration::from_secs(5)));
        let (allocs, ()) = allocs_in(|| {
            let mut got = 0;
            while got < n {
                match reader.read_zero_copy() {
                    Ok(rec) => {
                        check_seq(rec, &mut seq);
                        got += 1;
                    }
                    Err(Error::CommitRequired) => reader.commit(),
                    Err(e) => panic!("read_zero_copy: {e}"),
                }
            }
            reader.commit();
            reader.set_deadline(Some(Instant::now() + std::time::Duration::from_millis(4)));
            assert!(matches!(
                reader.read_zero_copy(),
                Err(Error::DeadlineExceeded)
            ));
        });
        assert_eq!(
            allocs, 0,
            "read_zero_copy with {policy:?} allocated {allocs} times for {n} records and its naps"
        );
    }
}

/// The user ring buffer producer's per-sample path allocates nothing:
/// reserve, write in place, submit or discard, and the `RingFull` refusal
/// that ends a fill (the same producer code as over a kernel map, here over
/// `testing::FakeUserRing`, which needs no privileges).
#[test]
fn user_ring_producer_allocates_nothing() {
    let fake = bpf_ringbuf::testing::FakeUserRing::new(1 << 16).expect("fake user ring");
    let producer = fake.producer().expect("producer");
    for round in 0..3u8 {
        let (allocs, n) = allocs_in(|| {
            let mut n = 0u64;
            loop {
                match producer.reserve(8 + (n % 64) as usize) {
                    Ok(mut s) => {
                        s.fill(round);
                        if n % 7 == 6 {
                            s.discard();
                        } else {
                            s.submit();
                        }
                        n += 1;
                    }
                    Err(Error::RingFull { .. }) => return n,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        assert_eq!(
            allocs, 0,
            "round {round}: {allocs} allocations for {n} samples"
        );
        assert!(n > 1000, "{n}");
        fake.drain(|s| assert!(s.iter().all(|&b| b == round)))
            .expect("drain");
    }
}
