//! The README's many-rings example: one thread reads four rings, fairly,
//! zero-copy, with one commit per ring per round.
//!
//! Run as root: `cargo run -p bpf-ringbuf --features testing --example ring_set`
//! (the `testing` feature provides the kernel producers standing in for your
//! BPF programs, say one per CPU).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{KernelProducer, ProducerConfig};
use bpf_ringbuf::{Budget, Error, RingBuf, RingSet};

fn main() -> bpf_ringbuf::Result<()> {
    // In an agent, the rings come from your loader (one map per CPU, or the
    // inner maps of an ARRAY_OF_MAPS: `set.insert_inner(cpu, &outer, &key)`).
    let rings: Vec<RingBuf> = (0..4)
        .map(|_| RingBuf::create(1 << 20))
        .collect::<Result<_, _>>()?;
    for (cpu, ring) in rings.iter().enumerate() {
        // Ring `cpu` gets 1000 * (cpu + 1) records of 64 bytes.
        KernelProducer::new(ring, ProducerConfig::fixed(64))?.produce(1000 * (cpu as u64 + 1))?;
    }

    let mut set = RingSet::new()?;
    for (cpu, ring) in rings.iter().enumerate() {
        set.insert(cpu, ring)?;
    }
    // Each ring delivers at most 256 records per round: a busy ring cannot
    // starve the others.
    set.set_budget(Budget {
        max_records: 256,
        max_bytes: 64 << 10,
    });
    set.set_deadline(Some(Instant::now() + Duration::from_millis(100)));

    let mut next = [0u64; 4];
    loop {
        let round = set.poll(|&cpu, rec| {
            // In place: the slice is the ring's memory, valid for this call.
            let seq = u64::from_le_bytes(rec[..8].try_into().expect("64-byte records"));
            assert_eq!(seq, next[cpu], "in order within each ring");
            next[cpu] += 1;
            ControlFlow::Continue(())
        });
        match round {
            Ok(_) => {}
            Err(Error::DeadlineExceeded) => break,
            Err(e) => return Err(e),
        }
    }
    println!("records per ring: {next:?}");
    for cpu in 0..4 {
        let stats = set.stats(&cpu).expect("ring is in the set");
        println!(
            "ring {cpu}: {} commits, budget used up {} times",
            stats.commits,
            set.budget_exhausted(&cpu).unwrap_or(0)
        );
    }
    assert_eq!(next, [1000, 2000, 3000, 4000]);
    Ok(())
}
