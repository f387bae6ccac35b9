//! bpf-ringbuf's consumers, one per way to read.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use bpf_ringbuf::{Error, Reader, Record, RingBuf, Stats, WakePolicy};

use crate::{Consumer, Res, Tally};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `read_zero_copy` until the ring is dry, then one `commit`.
    ZeroCopy,
    /// `Consumer::try_read_zero_copy` (the core under the reader) until
    /// it returns `None`, then one `commit`.
    TryZeroCopy,
    /// One `consume` call per drain.
    Consume,
    /// `read_into` a reused `Record`.
    ReadInto,
    /// `read`: a new `Record` per record.
    Read,
    /// `read_zero_copy` in poll-interval mode (`set_poll_interval`): an
    /// empty ring is re-checked every interval, nobody sleeps on the ring's
    /// wait queue. Its drain is `ZeroCopy`'s; its wait is the blocking
    /// `read_zero_copy` itself.
    Poll(Duration),
}

pub struct Ours {
    r: Reader,
    mode: Mode,
    past: Instant,
    rec: Record,
}

impl Ours {
    /// A reader of `ring` in `mode` that waits as `policy` says.
    pub fn with_policy(ring: &RingBuf, mode: Mode, policy: WakePolicy) -> Res<Self> {
        let mut o = Self::new(ring, mode)?;
        o.r.set_wake_policy(policy);
        Ok(o)
    }

    pub fn new(ring: &RingBuf, mode: Mode) -> Res<Self> {
        let mut r = Reader::new(ring)?;
        let past = Instant::now();
        // A deadline in the past: read what is there, then DeadlineExceeded.
        r.set_deadline(Some(past));
        if let Mode::Poll(interval) = mode {
            r.set_poll_interval(Some(interval));
        }
        Ok(Self {
            r,
            mode,
            past,
            rec: Record::default(),
        })
    }

    #[inline(never)]
    fn drain_zero_copy(&mut self, t: &mut Tally) -> Res<()> {
        let (mut count, mut sum, mut bytes) = (0u64, 0u64, 0u64);
        loop {
            match self.r.read_zero_copy() {
                Ok(rec) => {
                    count += 1;
                    sum = sum.wrapping_add(u64::from_le_bytes(rec[..8].try_into().unwrap()));
                    bytes += rec.len() as u64;
                }
                Err(Error::CommitRequired) | Err(Error::DeadlineExceeded) => break,
                Err(e) => return Err(e.into()),
            }
        }
        self.r.commit();
        t.count += count;
        t.seq_sum = t.seq_sum.wrapping_add(sum);
        t.bytes += bytes;
        Ok(())
    }

    #[inline(never)]
    fn drain_try_zero_copy(&mut self, t: &mut Tally) -> Res<()> {
        let (mut count, mut sum, mut bytes) = (0u64, 0u64, 0u64);
        let core = self.r.consumer();
        while let Some(rec) = core.try_read_zero_copy()? {
            count += 1;
            sum = sum.wrapping_add(u64::from_le_bytes(rec[..8].try_into().unwrap()));
            bytes += rec.len() as u64;
        }
        self.r.commit();
        t.count += count;
        t.seq_sum = t.seq_sum.wrapping_add(sum);
        t.bytes += bytes;
        Ok(())
    }

    /// `Mode::Poll`'s blocking wait: `read_zero_copy`
    /// with a deadline waits (in poll intervals, or spinning and then on
    /// epoll) until a record is there (or the deadline), then reads until
    /// the ring is dry (`CommitRequired`), and commits once.
    fn step_poll(&mut self, t: &mut Tally, timeout: Duration) -> Res<()> {
        self.r.set_deadline(Some(Instant::now() + timeout));
        let (mut count, mut sum, mut bytes) = (0u64, 0u64, 0u64);
        let res = loop {
            match self.r.read_zero_copy() {
                Ok(rec) => {
                    count += 1;
                    sum = sum.wrapping_add(u64::from_le_bytes(rec[..8].try_into().unwrap()));
                    bytes += rec.len() as u64;
                }
                Err(Error::CommitRequired) | Err(Error::DeadlineExceeded) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.r.commit();
        self.r.set_deadline(Some(self.past));
        res?;
        t.count += count;
        t.seq_sum = t.seq_sum.wrapping_add(sum);
        t.bytes += bytes;
        Ok(())
    }

    #[inline(never)]
    fn drain_consume(&mut self, t: &mut Tally) -> Res<()> {
        let (mut count, mut sum, mut bytes) = (0u64, 0u64, 0u64);
        self.r.consume(|rec| {
            count += 1;
            sum = sum.wrapping_add(u64::from_le_bytes(rec[..8].try_into().unwrap()));
            bytes += rec.len() as u64;
            ControlFlow::Continue(())
        })?;
        t.count += count;
        t.seq_sum = t.seq_sum.wrapping_add(sum);
        t.bytes += bytes;
        Ok(())
    }

    #[inline(never)]
    fn drain_read_into(&mut self, t: &mut Tally) -> Res<()> {
        let (mut count, mut sum, mut bytes) = (0u64, 0u64, 0u64);
        loop {
            match self.r.read_into(&mut self.rec) {
                Ok(()) => {
                    let rec = &self.rec.data;
                    count += 1;
                    sum = sum.wrapping_add(u64::from_le_bytes(rec[..8].try_into().unwrap()));
                    bytes += rec.len() as u64;
                }
                Err(Error::DeadlineExceeded) => break,
                Err(e) => return Err(e.into()),
            }
        }
        t.count += count;
        t.seq_sum = t.seq_sum.wrapping_add(sum);
        t.bytes += bytes;
        Ok(())
    }

    #[inline(never)]
    fn drain_read(&mut self, t: &mut Tally) -> Res<()> {
        let (mut count, mut sum, mut bytes) = (0u64, 0u64, 0u64);
        loop {
            match self.r.read() {
                Ok(rec) => {
                    let rec = &rec.data;
                    count += 1;
                    sum = sum.wrapping_add(u64::from_le_bytes(rec[..8].try_into().unwrap()));
                    bytes += rec.len() as u64;
                }
                Err(Error::DeadlineExceeded) => break,
                Err(e) => return Err(e.into()),
            }
        }
        t.count += count;
        t.seq_sum = t.seq_sum.wrapping_add(sum);
        t.bytes += bytes;
        Ok(())
    }
}

impl Consumer for Ours {
    fn drain(&mut self, t: &mut Tally) -> Res<()> {
        match self.mode {
            Mode::ZeroCopy | Mode::Poll(_) => self.drain_zero_copy(t),
            Mode::TryZeroCopy => self.drain_try_zero_copy(t),
            Mode::Consume => self.drain_consume(t),
            Mode::ReadInto => self.drain_read_into(t),
            Mode::Read => self.drain_read(t),
        }
    }

    fn step(&mut self, t: &mut Tally, timeout_ms: i32) -> Res<()> {
        if let Mode::Poll(_) = self.mode {
            return self.step_poll(t, Duration::from_millis(timeout_ms as u64));
        }
        self.r.set_deadline(Some(
            Instant::now() + Duration::from_millis(timeout_ms as u64),
        ));
        let w = self.r.wait();
        self.r.set_deadline(Some(self.past));
        match w {
            Ok(()) | Err(Error::DeadlineExceeded) => {}
            Err(e) => return Err(e.into()),
        }
        self.drain(t)
    }

    fn stats(&self) -> Option<Stats> {
        Some(self.r.stats())
    }
}
