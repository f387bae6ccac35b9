//! The README's spectator example: watch a ring that a reader consumes,
//! without taking a record from it, then read the last events of a
//! "flight recorder" ring.
//!
//! Run as root: `cargo run -p bpf-ringbuf --features testing --example spectator`
//! (the `testing` feature provides the kernel producer standing in for your
//! BPF program). The flight-recorder part needs Linux 6.19+
//! (`BPF_F_RB_OVERWRITE`); older kernels say so and skip it.

use std::ops::ControlFlow;

use bpf_ringbuf::testing::{check_payload, KernelProducer, ProducerConfig};
use bpf_ringbuf::{FlightRecorder, Reader, RingBuf, Spectator, Start};

fn main() -> bpf_ringbuf::Result<()> {
    // In production the agent owns the reader and you open the spectator
    // from another process: Spectator::open_pinned(path, Start::Now).
    let ring = RingBuf::create(1 << 16)?;
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(64))?;
    let mut reader = Reader::new(&ring)?;
    // Not a consumer: it never writes the consumer position, and the reader
    // above keeps the map (one consumer per map) while it looks.
    let mut spectator = Spectator::new(&ring, Start::Consumer)?;

    let (mut seen, mut read) = (0u64, 0u64);
    let mut buf = Vec::new();
    for _ in 0..20 {
        producer.produce(500)?;
        // The spectator copies each record, then checks that the producer
        // cannot have overwritten it meanwhile; lapped ones are counted.
        while let Some(rec) = spectator.try_read_into(&mut buf)? {
            assert_eq!(rec.len, buf.len());
            check_payload(&buf).expect("every record a spectator returns is intact");
            seen += 1;
        }
        // The agent's reader still gets every record.
        reader.consume(|_| {
            read += 1;
            ControlFlow::Continue(())
        })?;
    }
    let stats = spectator.stats();
    println!(
        "reader: {read} records; spectator: {seen} seen, {} lapped ({} bytes)",
        stats.lapped_records, stats.lapped_bytes
    );
    assert_eq!(read, 10_000);

    // A flight recorder: the producer overwrites the oldest records.
    let flight = match RingBuf::create_overwrite(1 << 16) {
        Ok(ring) => ring,
        Err(e) => {
            println!("no overwrite mode on this kernel (Linux 6.19+): {e}");
            return Ok(());
        }
    };
    KernelProducer::new(&flight, ProducerConfig::fixed(64))?.produce(100_000)?;
    let mut recorder = FlightRecorder::new(&flight)?;
    for rec in recorder.last(5)? {
        let seq = check_payload(&rec.data).expect("intact");
        println!("record {seq} at ring position {}", rec.position);
    }
    Ok(())
}
