//! Property tests: random producers (reserve, out-of-order commit, discard,
//! full ring) and random consumers (every read mode, random batch sizes) on a
//! `FakeRing`, through the public `Reader`, against a `VecDeque` model. Plus
//! random header corruption: an error or a valid prefix, never a panic.
//! No privileges needed.
#![cfg(feature = "testing")]

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::Instant;

use bpf_ringbuf::abi::{record_stride, BUSY_BIT, DISCARD_BIT};
use bpf_ringbuf::testing::{fill_payload, FakeRing, Reservation, Wakeup};
use bpf_ringbuf::{page_size, Budget, Error, Reader, StopReason};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Reserve a record of this many bytes (kept BUSY until a `Commit`).
    Reserve(usize),
    /// Reserve, fill and submit at once.
    Output(usize),
    /// Commit the outstanding reservation at this index (modulo their number).
    Commit { idx: usize, discard: bool, wake: u8 },
    /// Up to `n` `read_zero_copy` calls, then `commit()` if `commit`.
    ZeroCopy { n: usize, commit: bool },
    /// `consume_with_budget(records(n))`, breaking after `brk` records if set.
    Consume { n: usize, brk: Option<usize> },
    /// Up to `n` `read_into` calls.
    ReadInto(usize),
    /// One `batch()`, iterated to its end.
    Batch,
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![0usize..24, 0usize..300, Just(1000usize)];
    prop_oneof![
        3 => len.clone().prop_map(Op::Reserve),
        3 => len.prop_map(Op::Output),
        4 => (any::<usize>(), any::<bool>(), 0u8..3)
            .prop_map(|(idx, discard, wake)| Op::Commit { idx, discard, wake }),
        2 => (0usize..20, any::<bool>()).prop_map(|(n, commit)| Op::ZeroCopy { n, commit }),
        2 => (0usize..20, proptest::option::of(0usize..5))
            .prop_map(|(n, brk)| Op::Consume { n, brk }),
        2 => (0usize..10).prop_map(Op::ReadInto),
        1 => Just(Op::Batch),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Busy,
    Committed,
    Discarded,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    pos: usize,
    len: usize,
    state: State,
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_payload(seq, &mut v);
    v
}

fn wake(w: u8) -> Wakeup {
    match w {
        0 => Wakeup::Default,
        1 => Wakeup::NoWakeup,
        _ => Wakeup::ForceWakeup,
    }
}

/// The model: entries in ring order not yet delivered (or skipped).
struct Model {
    q: VecDeque<Entry>,
    next_seq: u64,
    delivered: u64,
}

impl Model {
    /// Committed records before the first BUSY one.
    fn ready(&self) -> usize {
        self.q
            .iter()
            .take_while(|e| e.state != State::Busy)
            .filter(|e| e.state == State::Committed)
            .count()
    }

    /// Checks one delivered record against the model and pops it (and the
    /// discards before it).
    fn deliver(&mut self, rec: &[u8]) {
        loop {
            let e = self
                .q
                .pop_front()
                .expect("a record the model does not have");
            match e.state {
                State::Discarded => continue,
                State::Busy => panic!("record delivered past BUSY seq {}", e.seq),
                State::Committed => {
                    assert_eq!(rec.len(), e.len, "length of seq {}", e.seq);
                    assert!(rec == payload(e.seq, e.len), "bytes of seq {}", e.seq);
                    self.delivered += 1;
                    return;
                }
            }
        }
    }

    /// The published consumer position must never pass a record that was
    /// not delivered (nor a BUSY one).
    fn check_published(&self, published: usize, prod: usize) {
        let limit = self
            .q
            .iter()
            .find(|e| e.state != State::Discarded)
            .map_or(prod, |e| e.pos);
        // Positions wrap: `published` is at most `limit`, so the distance
        // back from `limit` is small (never a wrapped-around huge value).
        assert!(
            limit.wrapping_sub(published) < (1 << 40),
            "published {published} past undelivered record at {limit}"
        );
    }
}

fn past(reader: &mut Reader) {
    reader.set_deadline(Some(Instant::now()));
}

fn run(size_pages: usize, start: usize, ops: Vec<Op>) {
    let mut ring = FakeRing::new(size_pages * page_size()).unwrap();
    let size = ring.size();
    ring.set_producer_position(start).unwrap();
    ring.set_consumer_position(start).unwrap();
    let mut reader = ring.reader().unwrap();
    past(&mut reader);
    let mut model = Model {
        q: VecDeque::new(),
        next_seq: 0,
        delivered: 0,
    };
    let mut outstanding: Vec<(Reservation<'_>, u64)> = Vec::new();

    let reserve = |model: &mut Model, len: usize| -> Option<(Reservation<'_>, u64)> {
        let prod = ring.producer_position();
        let cons = ring.consumer_position();
        let stride = record_stride(len);
        let fits = prod.wrapping_add(stride).wrapping_sub(cons) < size;
        let r = ring.reserve(len);
        assert_eq!(r.is_some(), fits, "refusal rule, len {len}");
        let mut r = r?;
        assert_eq!(r.position(), prod);
        let seq = model.next_seq;
        model.next_seq += 1;
        r.write(0, &payload(seq, len));
        model.q.push_back(Entry {
            seq,
            pos: prod,
            len,
            state: State::Busy,
        });
        Some((r, seq))
    };

    for op in ops {
        match op {
            Op::Reserve(len) => {
                if let Some(r) = reserve(&mut model, len) {
                    outstanding.push(r);
                }
            }
            Op::Output(len) => {
                if let Some((r, seq)) = reserve(&mut model, len) {
                    r.submit(Wakeup::Default);
                    model.q.iter_mut().find(|e| e.seq == seq).unwrap().state = State::Committed;
                }
            }
            Op::Commit {
                idx,
                discard,
                wake: w,
            } => {
                if outstanding.is_empty() {
                    continue;
                }
                let (r, seq) = outstanding.swap_remove(idx % outstanding.len());
                let e = model.q.iter_mut().find(|e| e.seq == seq).unwrap();
                if discard {
                    r.discard(wake(w));
                    e.state = State::Discarded;
                } else {
                    r.submit(wake(w));
                    e.state = State::Committed;
                }
            }
            Op::ZeroCopy { n, commit } => {
                let ready = model.ready();
                let mut got = 0;
                for _ in 0..n {
                    match reader.read_zero_copy() {
                        Ok(rec) => {
                            model.deliver(rec);
                            got += 1;
                        }
                        Err(Error::DeadlineExceeded) | Err(Error::CommitRequired) => break,
                        Err(e) => panic!("read_zero_copy: {e}"),
                    }
                }
                assert_eq!(got, n.min(ready));
                if commit {
                    reader.commit();
                    assert_eq!(ring.consumer_position(), reader.read_position());
                }
            }
            Op::Consume { n, brk } => {
                let ready = model.ready();
                let mut got = 0usize;
                let stats = reader
                    .consume_with_budget(Budget::records(n), |rec| {
                        model.deliver(rec);
                        got += 1;
                        if brk == Some(got) {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    })
                    .unwrap();
                let limit = match brk {
                    Some(b) if b >= 1 => b.min(n),
                    _ => n,
                };
                assert_eq!(got, limit.min(ready), "{stats:?}");
                assert_eq!(stats.records, got);
                if stats.stop == StopReason::Callback {
                    assert_eq!(Some(got), brk);
                }
                if stats.stop == StopReason::Empty {
                    assert_eq!(ring.producer_position(), reader.read_position());
                }
                assert_eq!(ring.consumer_position(), reader.read_position());
            }
            Op::ReadInto(n) => {
                let ready = model.ready();
                let mut rec = Default::default();
                let mut got = 0;
                for _ in 0..n {
                    match reader.read_into(&mut rec) {
                        Ok(()) => {
                            model.deliver(&rec.data);
                            got += 1;
                            // `read_into` publishes past the record it returns.
                            assert_eq!(ring.consumer_position(), reader.read_position());
                        }
                        Err(Error::DeadlineExceeded) => break,
                        Err(e) => panic!("read_into: {e}"),
                    }
                }
                assert_eq!(got, n.min(ready));
            }
            Op::Batch => {
                let ready = model.ready();
                let res = reader.batch().map(|batch| {
                    let mut got = 0;
                    for rec in &batch {
                        model.deliver(rec);
                        got += 1;
                    }
                    got
                });
                match res {
                    Ok(got) => {
                        assert!(got <= ready);
                        assert_eq!(ring.consumer_position(), reader.read_position());
                    }
                    Err(Error::DeadlineExceeded) => assert_eq!(ready, 0),
                    Err(e) => panic!("batch: {e}"),
                }
            }
        }
        model.check_published(ring.consumer_position(), ring.producer_position());
    }

    // Commit everything still reserved, then drain: every committed record
    // arrives exactly once, in ring order.
    for (r, seq) in outstanding.drain(..) {
        let e = model.q.iter_mut().find(|e| e.seq == seq).unwrap();
        if seq % 3 == 0 {
            r.discard(Wakeup::Default);
            e.state = State::Discarded;
        } else {
            r.submit(Wakeup::Default);
            e.state = State::Committed;
        }
    }
    reader.commit();
    loop {
        match reader.read() {
            Ok(rec) => model.deliver(&rec.data),
            Err(Error::DeadlineExceeded) => break,
            Err(e) => panic!("final read: {e}"),
        }
    }
    assert!(
        model.q.iter().all(|e| e.state == State::Discarded),
        "left undelivered: {:?}",
        model.q
    );
    // A read that times out does not publish past the discards it skipped
    // (the next `&mut self` call does): commit, then the ring is empty.
    reader.commit();
    assert_eq!(ring.consumer_position(), ring.producer_position());
    let discarded = model.next_seq - model.delivered;
    assert!(model.delivered + discarded == model.next_seq);
}

fn start_pos() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        (0usize..4096).prop_map(|x| x * 8),
        (0usize..64).prop_map(|x| usize::MAX - 8 * x - 7),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(debug_assertions) { 512 } else { 2048 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn reader_matches_model(
        pages in 1usize..3,
        start in start_pos(),
        ops in proptest::collection::vec(op(), 1..160),
    ) {
        run(pages, start, ops);
    }

    /// Any value in any header, flag bits included: each read mode returns
    /// the intact records before it, then records or `Corrupt`/empty, never
    /// a panic or a read outside the ring.
    #[test]
    fn corrupt_header_never_panics(
        lens in proptest::collection::vec(0usize..200, 1..30),
        victim in any::<usize>(),
        word in prop_oneof![
            any::<u32>(),
            (0u32..8192),
            (0u32..8192).prop_map(|x| x | DISCARD_BIT),
            (0u32..8192).prop_map(|x| x | BUSY_BIT),
            Just(u32::MAX),
        ],
        mode in 0u8..5,
    ) {
        let mut ring = FakeRing::new(page_size()).unwrap();
        let mut positions = vec![];
        for (seq, &len) in lens.iter().enumerate() {
            match ring.output(&payload(seq as u64, len), Wakeup::Default) {
                Some(pos) => positions.push((pos, seq as u64, len)),
                None => break,
            }
        }
        prop_assume!(!positions.is_empty());
        let victim = victim % positions.len();
        ring.set_header(positions[victim].0, word).unwrap();
        let mut reader = ring.reader().unwrap();
        past(&mut reader);
        let mut records: Vec<Vec<u8>> = vec![];
        let mut error = None;
        match mode {
            0 => loop {
                match reader.read_zero_copy() {
                    Ok(r) => records.push(r.to_vec()),
                    Err(e) => { error = Some(e); break; }
                }
                if records.len() > 10_000 { break; }
            },
            1 => loop {
                match reader.read() {
                    Ok(r) => records.push(r.data),
                    Err(e) => { error = Some(e); break; }
                }
                if records.len() > 10_000 { break; }
            },
            2 => {
                if let Err(e) = reader.consume(|r| {
                    records.push(r.to_vec());
                    ControlFlow::Continue(())
                }) {
                    error = Some(e);
                }
            }
            3 => loop {
                match reader.try_read_zero_copy() {
                    Ok(Some(r)) => records.push(r.to_vec()),
                    Ok(None) => break,
                    Err(e) => { error = Some(e); break; }
                }
                if records.len() > 10_000 { break; }
            },
            _ => match reader.batch() {
                Ok(b) => {
                    for r in &b {
                        records.push(r.to_vec());
                    }
                }
                Err(e) => error = Some(e),
            },
        }
        // Every record before the victim is intact and in order.
        for (i, &(_, seq, len)) in positions[..victim].iter().enumerate() {
            prop_assert!(records.len() > i || error.is_some() || mode == 4);
            if let Some(r) = records.get(i) {
                prop_assert_eq!(r, &payload(seq, len));
            }
        }
        if let Some(e) = error {
            prop_assert!(
                matches!(e, Error::Corrupt { .. } | Error::DeadlineExceeded | Error::CommitRequired),
                "{e:?}"
            );
            if let Error::Corrupt { len, available, .. } = e {
                prop_assert!(record_stride(len) > available || available > ring.size());
            }
        }
        // The published position never passes the producer position.
        prop_assert!(ring.producer_position().wrapping_sub(ring.consumer_position()) <= ring.size());
    }
}
