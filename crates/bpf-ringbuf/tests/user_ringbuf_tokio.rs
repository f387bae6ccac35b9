//! `AsyncUserRingBuf` (features `tokio` and `testing`): `reserve().await`
//! waits for the drain that makes room, on the real kernel and on the fake
//! user ring, and a close wakes it.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use bpf_ringbuf::testing::{FakeUserRing, KernelDrain};
use bpf_ringbuf::{AsyncUserRingBuf, Error, UserRingBuf};

fn page() -> usize {
    bpf_ringbuf::page_size()
}

/// Fills the ring with 8-byte samples numbered from 0; returns how many.
fn fill(ring: &UserRingBuf) -> u64 {
    let mut n = 0u64;
    loop {
        match ring.reserve(8) {
            Ok(mut s) => {
                s.copy_from_slice(&n.to_le_bytes());
                s.submit();
                n += 1;
            }
            Err(Error::RingFull { .. }) => return n,
            Err(e) => panic!("{e}"),
        }
    }
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[test]
fn outside_a_runtime_is_a_typed_error() {
    let fake = FakeUserRing::new(page()).unwrap();
    assert!(matches!(
        AsyncUserRingBuf::new(fake.producer().unwrap()),
        Err(Error::NoAsyncRuntime)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_reserve_awaits_the_drain() {
    let fake = Arc::new(FakeUserRing::new(page()).unwrap());
    let mut ring = AsyncUserRingBuf::new(fake.producer().unwrap()).unwrap();
    let n = fill(ring.get_ref());
    let drainer = Arc::clone(&fake);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        let mut seqs = Vec::new();
        drainer
            .drain(|s| seqs.push(u64::from_le_bytes(s.try_into().unwrap())))
            .unwrap();
        seqs
    });
    // The future is Send: it runs as a task of the multi-threaded runtime.
    let ring = tokio::spawn(assert_send(async move {
        let mut s = ring.reserve(8).await.expect("room after the drain");
        s.copy_from_slice(&u64::MAX.to_le_bytes());
        s.submit();
        ring
    }))
    .await
    .unwrap();
    assert_eq!(t.join().unwrap(), (0..n).collect::<Vec<_>>());
    let mut last = Vec::new();
    fake.drain(|s| last.push(s.to_vec())).unwrap();
    assert_eq!(last, vec![u64::MAX.to_le_bytes().to_vec()]);
    let stats = ring.get_ref().stats();
    assert_eq!((stats.samples, stats.full_waits), (n + 1, 1));
}

#[tokio::test]
async fn fake_close_wakes_an_awaiting_reserve() {
    let fake = FakeUserRing::new(page()).unwrap();
    let mut ring = AsyncUserRingBuf::new(fake.producer().unwrap()).unwrap();
    fill(ring.get_ref());
    // Too large is refused at once, never awaited, even on a full ring.
    assert!(matches!(
        ring.reserve(page()).await,
        Err(Error::SampleTooLarge { len, .. }) if len == page()
    ));
    let handle = ring.get_ref().handle();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        handle.close();
    });
    assert!(matches!(ring.reserve(8).await, Err(Error::Closed)));
}

#[tokio::test]
async fn fake_cancelled_reserve_reserves_nothing() {
    let fake = FakeUserRing::new(page()).unwrap();
    let mut ring = AsyncUserRingBuf::new(fake.producer().unwrap()).unwrap();
    let n = fill(ring.get_ref());
    let r = tokio::time::timeout(Duration::from_millis(10), ring.reserve(8)).await;
    assert!(r.is_err(), "timed out waiting");
    drop(r);
    let mut k = 0;
    fake.drain(|_| k += 1).unwrap();
    assert_eq!(k, n, "nothing reserved by the cancelled future");
    ring.reserve(8).await.unwrap().submit();
    assert_eq!(fake.drain(|_| {}).unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_reserve_awaits_the_drain() {
    privileged!();
    let user = UserRingBuf::create(page()).unwrap();
    let drain = KernelDrain::sink(&user).unwrap();
    let mut ring = AsyncUserRingBuf::new(user).unwrap();
    let n = fill(ring.get_ref());
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        let first = drain.drain().unwrap();
        (drain, first)
    });
    let mut s = ring.reserve(8).await.expect("room after the drain");
    s.copy_from_slice(&n.to_le_bytes());
    s.submit();
    let (drain, first) = t.join().unwrap();
    assert_eq!(first, n);
    assert_eq!(drain.drain().unwrap(), 1);
    assert_eq!(ring.get_ref().stats().full_waits, 1);
}
