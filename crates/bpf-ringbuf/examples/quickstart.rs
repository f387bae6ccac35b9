//! The README's quick example: read a ring buffer zero-copy, one commit per batch.
//! (`read_zero_copy` + `commit` give the same with batches of your choosing.)
//!
//! Run as root: `cargo run -p bpf-ringbuf --features testing --example quickstart`
//! (the `testing` feature provides the kernel producer standing in for your
//! BPF program).

use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{KernelProducer, ProducerConfig};
use bpf_ringbuf::{Error, Reader, RingBuf};

fn main() -> bpf_ringbuf::Result<()> {
    // In an agent, the map comes from your loader: RingBuf::open_pinned(path),
    // RingBuf::from_id(id), or Reader::new(&aya_or_libbpf_map) directly.
    let ring = RingBuf::create(1 << 20)?;
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(64))?;
    producer.produce(10_000)?;

    let mut reader = Reader::new(&ring)?;
    reader.set_deadline(Some(Instant::now() + Duration::from_millis(100)));
    let (mut records, mut sum) = (0u64, 0u64);
    loop {
        // Wait for records, read every one present in place, then hand them
        // all back to the kernel with one release store when `batch` drops.
        let batch = match reader.batch() {
            Ok(batch) => batch,
            Err(Error::DeadlineExceeded) => break,
            Err(e) => return Err(e),
        };
        for rec in &batch {
            let seq: [u8; 8] = rec[..8].try_into().expect("the producer writes 64 bytes");
            sum += u64::from_le_bytes(seq);
            records += 1;
        }
    }
    println!("{records} records, sequence numbers sum to {sum}");
    assert_eq!(sum, (0..records).sum::<u64>());
    Ok(())
}
