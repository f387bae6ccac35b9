//! Property test: the fake ring's overwrite-mode producer (Linux 6.19's
//! rules) and a spectator reading it, against a model. Random record sizes,
//! out-of-order commits, discards, BUSY windows and many laps; the model
//! predicts every reservation's fate, `producer_pos`, `overwrite_pos`, and
//! every event the spectator returns (records byte for byte, gaps to the
//! byte). No privileges needed.
#![cfg(feature = "testing")]

use bpf_ringbuf::abi::record_stride;
use bpf_ringbuf::testing::{fill_payload, FakeRing, Reservation, Wakeup};
use bpf_ringbuf::{page_size, Event, Gap, Observed, Start};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Reserve a record of this many bytes, kept BUSY until a `Commit`.
    Reserve(usize),
    /// Reserve, fill and submit at once.
    Output(usize),
    /// Commit the outstanding reservation at this index (modulo their count).
    Commit { idx: usize, discard: bool },
    /// Up to this many spectator events.
    Read(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![0usize..40, 0usize..700, Just(1500usize)];
    prop_oneof![
        2 => len.clone().prop_map(Op::Reserve),
        5 => len.prop_map(Op::Output),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(idx, discard)| Op::Commit { idx, discard }),
        2 => (0usize..30).prop_map(Op::Read),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Busy,
    Committed,
    Discarded,
}

#[derive(Debug)]
struct Rec {
    pos: usize,
    len: usize,
    seq: u64,
    state: State,
}

/// The producer's state as the kernel keeps it, and the spectator's.
struct Model {
    size: usize,
    recs: Vec<Rec>,
    prod: usize,
    over: usize,
    spec: usize,
    lapped_bytes: u64,
    resyncs: u64,
    records: u64,
}

impl Model {
    fn rec_at(&self, pos: usize) -> &Rec {
        self.recs
            .iter()
            .rev()
            .find(|r| r.pos == pos)
            .expect("a record starts there")
    }

    /// `pending_pos`: the first record not committed, else the producer.
    fn pending(&self) -> usize {
        self.recs
            .iter()
            .find(|r| r.state == State::Busy)
            .map_or(self.prod, |r| r.pos)
    }

    /// Whether a reservation of `len` succeeds, and the new positions.
    fn reserve(&mut self, len: usize, seq: u64) -> bool {
        let mask = self.size - 1;
        let stride = record_stride(len);
        if stride > mask {
            return false;
        }
        let new_prod = self.prod + stride;
        if new_prod - self.pending() > mask {
            return false;
        }
        while new_prod - self.over > mask {
            self.over += record_stride(self.rec_at(self.over).len);
        }
        self.recs.push(Rec {
            pos: self.prod,
            len,
            seq,
            state: State::Busy,
        });
        self.prod = new_prod;
        true
    }

    /// The spectator's next event, or `None`.
    fn next(&mut self) -> Option<Event> {
        loop {
            if self.spec == self.prod {
                return None;
            }
            if self.prod - self.spec >= self.size {
                let gap = Gap {
                    position: self.spec as u64,
                    bytes: (self.over - self.spec) as u64,
                    records: None,
                };
                self.lapped_bytes += gap.bytes;
                self.resyncs += 1;
                self.spec = self.over;
                return Some(Event::Gap(gap));
            }
            let r = self.rec_at(self.spec);
            let (pos, len, state) = (r.pos, r.len, r.state);
            match state {
                State::Busy => return None,
                State::Discarded => self.spec += record_stride(len),
                State::Committed => {
                    self.spec += record_stride(len);
                    self.records += 1;
                    return Some(Event::Record(Observed {
                        position: pos as u64,
                        len,
                    }));
                }
            }
        }
    }
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_payload(seq, &mut v);
    v
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let size = page_size();
    let ring = FakeRing::with_flags(size, 1 << 19).unwrap();
    let mut spec = ring.spectator(Start::Oldest).unwrap();
    let mut m = Model {
        size,
        recs: Vec::new(),
        prod: 0,
        over: 0,
        spec: 0,
        lapped_bytes: 0,
        resyncs: 0,
        records: 0,
    };
    let mut outstanding: Vec<(Reservation<'_>, u64)> = Vec::new();
    let mut seq = 0u64;
    let mut buf = Vec::new();
    for op in ops {
        match op {
            Op::Reserve(len) | Op::Output(len) => {
                let want = m.reserve(len, seq);
                let got = ring.reserve(len);
                prop_assert_eq!(got.is_some(), want, "reserve({}) at {}", len, m.prod);
                if let Some(mut r) = got {
                    r.write(0, &payload(seq, len));
                    if matches!(op, Op::Output(_)) {
                        r.submit(Wakeup::NoWakeup);
                        m.recs.last_mut().unwrap().state = State::Committed;
                    } else {
                        outstanding.push((r, seq));
                    }
                    seq += 1;
                }
            }
            Op::Commit { idx, discard } => {
                if outstanding.is_empty() {
                    continue;
                }
                let (r, s) = outstanding.swap_remove(idx % outstanding.len());
                if discard {
                    r.discard(Wakeup::NoWakeup);
                } else {
                    r.submit(Wakeup::NoWakeup);
                }
                let rec = m.recs.iter_mut().find(|r| r.seq == s).unwrap();
                rec.state = if discard {
                    State::Discarded
                } else {
                    State::Committed
                };
            }
            Op::Read(n) => {
                for _ in 0..n {
                    let want = m.next();
                    let got = spec.try_next(&mut buf).unwrap();
                    prop_assert_eq!(got, want);
                    if let Some(Event::Record(o)) = got {
                        let r = m.rec_at(o.position as usize);
                        prop_assert_eq!(&buf, &payload(r.seq, r.len));
                    }
                    if want.is_none() {
                        break;
                    }
                }
            }
        }
        prop_assert_eq!(ring.producer_position(), m.prod);
        prop_assert_eq!(ring.overwrite_position(), Some(m.over));
    }
    let st = spec.stats();
    prop_assert_eq!(
        (st.records, st.lapped_bytes, st.resyncs, st.lapped_records),
        (m.records, m.lapped_bytes, m.resyncs, 0)
    );
    prop_assert_eq!(spec.position(), m.spec as u64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn overwrite_producer_and_spectator_match_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops)?;
    }
}
