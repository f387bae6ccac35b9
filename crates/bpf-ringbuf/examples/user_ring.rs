//! The README's producer example: send samples *into* BPF through a
//! `BPF_MAP_TYPE_USER_RINGBUF`, written in place, waiting when the ring is
//! full until the kernel drains it.
//!
//! Run as root: `cargo run -p bpf-ringbuf --features testing --example user_ring`
//! (the `testing` feature provides the kernel consumer standing in for your
//! BPF program: it drains with `bpf_user_ringbuf_drain` and copies every
//! sample into a ring buffer, so we can check what arrived).

use std::time::{Duration, Instant};

use bpf_ringbuf::testing::KernelDrain;
use bpf_ringbuf::{Error, Reader, RingBuf, UserRingBuf};

fn main() -> bpf_ringbuf::Result<()> {
    // In an agent, the map comes from your loader: UserRingBuf::open_pinned(path),
    // UserRingBuf::from_id(id), or UserRingBuf::new(&aya_or_libbpf_map).
    let ring = UserRingBuf::create(16 * 1024)?;
    let echo = RingBuf::create(1 << 20)?;
    let program = KernelDrain::into_ring(&ring, &echo)?;

    // Stands in for your BPF program, which drains when it runs (here:
    // every millisecond), then wakes producers waiting for room.
    let handle = ring.handle();
    let kernel = std::thread::spawn(move || -> bpf_ringbuf::Result<u64> {
        let mut drained = 0;
        while !handle.is_closed() {
            drained += program.drain()?;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(drained + program.drain()?)
    });

    let deadline = Some(Instant::now() + Duration::from_secs(10));
    for seq in 0..10_000u64 {
        // Reserve in place; wait while the ring is full (the kernel's drain
        // wakes us). `ring.reserve(len)` never waits: Error::RingFull.
        let mut sample = ring.reserve_blocking(24, deadline)?;
        sample[..8].copy_from_slice(&seq.to_le_bytes());
        sample[8..].fill(seq as u8);
        if seq % 100 == 99 {
            sample.discard(); // or just drop it: the program never sees it
        } else {
            sample.submit();
        }
    }
    // A sample the ring can never hold is a different error from "full".
    assert!(matches!(
        ring.reserve(1 << 20),
        Err(Error::SampleTooLarge { .. })
    ));
    ring.handle().close();
    let drained = kernel.join().expect("the drain thread panicked")?;

    let mut reader = Reader::new(&echo)?;
    reader.set_deadline(Some(Instant::now()));
    let mut seen = 0u64;
    while let Ok(rec) = reader.read_zero_copy() {
        let seq = u64::from_le_bytes(rec[..8].try_into().expect("24-byte samples"));
        assert!(seq % 100 != 99 && rec[8..].iter().all(|&b| b == seq as u8));
        seen += 1;
    }
    let stats = ring.stats();
    println!(
        "{drained} samples drained by the kernel, {seen} read back; \
         {} submitted, {} discarded, {} waits for room",
        stats.samples, stats.discarded, stats.full_waits
    );
    assert_eq!((drained, seen, stats.samples), (9_900, 9_900, 9_900));
    Ok(())
}
