//! Arbitrary bytes as ring memory and positions, read through the public
//! `Reader` over a `FakeRing` (the kernel's layout: the data pages mapped
//! twice), in every read mode, then through a `Spectator` (copy-and-validate)
//! over the same bytes. Must never crash, hang or read out of bounds.
//!
//! Input: `[cons: u64][prod: u64][mode: u8][data ...]`. When bit 7 of `mode`
//! is set, `prod` is read as a small offset from `cons` (plausible rings);
//! otherwise both positions are arbitrary.
#![no_main]

use std::ops::ControlFlow;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use bpf_ringbuf::testing::FakeRing;
use bpf_ringbuf::{Budget, Record, Start};
use libfuzzer_sys::fuzz_target;

/// One ring for the whole run (mapping one per input would dominate the
/// time); each input takes it, so the corruption helpers get `&mut`.
static RING: OnceLock<Mutex<FakeRing>> = OnceLock::new();
const MAX_RECORDS: usize = 100_000;

fuzz_target!(|input: &[u8]| {
    if input.len() < 17 {
        return;
    }
    let mut ring = RING
        .get_or_init(|| Mutex::new(FakeRing::new(bpf_ringbuf::page_size()).unwrap()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let size = ring.size();
    let cons = u64::from_le_bytes(input[0..8].try_into().unwrap()) as usize;
    let raw_prod = u64::from_le_bytes(input[8..16].try_into().unwrap()) as usize;
    let mode = input[16];
    let prod = if mode & 0x80 != 0 {
        cons.wrapping_add(raw_prod % (2 * size))
    } else {
        raw_prod
    };
    let data = &input[17..];
    // No reader of the ring is alive between inputs, so these never refuse.
    ring.write_data(0, &vec![0u8; size]).unwrap();
    ring.write_data(cons, &data[..data.len().min(size)])
        .unwrap();
    ring.set_consumer_position(cons).unwrap();
    ring.set_producer_position(prod).unwrap();
    let Ok(mut reader) = ring.reader() else {
        return;
    };
    reader.set_deadline(Some(Instant::now()));
    let mut n = 0usize;
    let mut sink = 0u64;
    match mode & 0x7 {
        0 => {
            while let Ok(rec) = reader.read_zero_copy() {
                sink += rec.iter().map(|&b| u64::from(b)).sum::<u64>();
                n += 1;
                if n > MAX_RECORDS {
                    break;
                }
            }
            reader.commit();
        }
        1 => {
            let mut rec = Record::default();
            while reader.read_into(&mut rec).is_ok() {
                sink += rec.data.len() as u64;
                n += 1;
                if n > MAX_RECORDS {
                    break;
                }
            }
        }
        2 => {
            let _ = reader.consume(|rec| {
                sink += rec.len() as u64;
                ControlFlow::Continue(())
            });
        }
        3 => {
            let _ =
                reader.consume_with_budget(Budget::records(usize::from(mode >> 3) & 0xf), |rec| {
                    sink += rec.first().copied().map_or(0, u64::from);
                    ControlFlow::Continue(())
                });
            let _ = reader.read();
        }
        4 => {
            while let Ok(Some(rec)) = reader.try_read_zero_copy() {
                sink += rec.len() as u64;
                n += 1;
                if n > MAX_RECORDS {
                    break;
                }
            }
            let _ = reader.prepare_wait();
        }
        _ => {
            if let Ok(batch) = reader.batch() {
                for rec in &batch {
                    sink += rec.len() as u64;
                }
            }
            let _ = reader.available_bytes();
        }
    }
    // A spectator over the same bytes: an error or records, never a panic.
    if let Ok(mut spec) = ring.spectator(Start::Consumer) {
        let mut buf = Vec::new();
        for _ in 0..MAX_RECORDS {
            match spec.try_next(&mut buf) {
                Ok(Some(_)) => sink += buf.len() as u64,
                _ => break,
            }
        }
    }
    std::hint::black_box(sink);
});
