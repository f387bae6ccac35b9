//! The README's async example: await records from tokio next to a timer in
//! `select!`, and stop on a flush from another thread.
//!
//! Run as root: `cargo run -p bpf-ringbuf --features tokio,testing --example tokio_reader`
//! (the `testing` feature provides the kernel producer standing in for your
//! BPF program).

use std::time::Duration;

use bpf_ringbuf::testing::{KernelProducer, ProducerConfig};
use bpf_ringbuf::{AsyncReader, Error, RingBuf};

#[tokio::main]
async fn main() -> bpf_ringbuf::Result<()> {
    let ring = RingBuf::create(1 << 20)?;
    let mut reader = AsyncReader::new(&ring)?;
    let handle = reader.handle(); // flush() and close() from any thread

    // Stands in for your BPF program: bursts of records, then a flush.
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(64))?;
    let feeder = std::thread::spawn(move || -> bpf_ringbuf::Result<()> {
        for _ in 0..10 {
            producer.produce(1_000)?;
            std::thread::sleep(Duration::from_millis(10));
        }
        handle.flush();
        Ok(())
    });

    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    let (mut records, mut sum) = (0u64, 0u64);
    loop {
        tokio::select! {
            // Cancellation-safe: a read that loses the race consumed nothing.
            // A flood does not starve the timer: the reader yields to the
            // runtime every few thousand records.
            rec = reader.read() => match rec {
                Ok(rec) => {
                    let seq: [u8; 8] = rec.data[..8].try_into().expect("64-byte records");
                    sum += u64::from_le_bytes(seq);
                    records += 1;
                }
                // Every record written before the flush has been read.
                Err(Error::Flushed) => break,
                Err(e) => return Err(e),
            },
            _ = ticks.tick() => println!("{records} records so far"),
        }
    }
    feeder.join().expect("the producer thread panicked")?;
    println!("{records} records, sequence numbers sum to {sum}");
    assert_eq!(records, 10_000);
    assert_eq!(sum, (0..records).sum::<u64>());
    Ok(())
}
