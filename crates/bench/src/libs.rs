//! The other libraries' consumers, each used the way its documentation shows.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use crate::raw::{map_id, RawRing};
use crate::{Consumer, Res, Tally};

fn check_seq(rec: &[u8]) -> u64 {
    u64::from_le_bytes(rec[..8].try_into().unwrap())
}

// ---------------------------------------------------------------- raw

pub struct RawRef(pub RawRing);
impl Consumer for RawRef {
    fn drain(&mut self, t: &mut Tally) -> Res<()> {
        self.0.drain_ref(t);
        Ok(())
    }
    fn step(&mut self, t: &mut Tally, timeout_ms: i32) -> Res<()> {
        self.0.wait(timeout_ms)?;
        self.0.drain_ref(t);
        Ok(())
    }
}

pub struct RawCopy(pub RawRing);
impl Consumer for RawCopy {
    fn drain(&mut self, t: &mut Tally) -> Res<()> {
        self.0.drain_copy(t);
        Ok(())
    }
    fn step(&mut self, t: &mut Tally, timeout_ms: i32) -> Res<()> {
        self.0.wait(timeout_ms)?;
        self.0.drain_copy(t);
        Ok(())
    }
}

// ---------------------------------------------------------------- libbpf C

pub struct Libbpf {
    rb: *mut libbpf_sys::ring_buffer,
    tally: Box<Tally>,
}

// SAFETY: the ring_buffer is owned by this value and used from one thread at a time.
unsafe impl Send for Libbpf {}

unsafe extern "C" fn libbpf_cb(
    ctx: *mut std::ffi::c_void,
    data: *mut std::ffi::c_void,
    size: libbpf_sys::size_t,
) -> std::ffi::c_int {
    // SAFETY: ctx is the Box<Tally> registered in Libbpf::new; data/size is the sample.
    let t = unsafe { &mut *(ctx as *mut Tally) };
    let rec = unsafe { std::slice::from_raw_parts(data as *const u8, size as usize) };
    t.count += 1;
    t.seq_sum = t.seq_sum.wrapping_add(check_seq(rec));
    t.bytes += rec.len() as u64;
    0
}

impl Libbpf {
    pub fn new(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let mut tally = Box::<Tally>::default();
        // SAFETY: valid map fd, callback and ctx that outlives the ring_buffer.
        let rb = unsafe {
            libbpf_sys::ring_buffer__new(
                fd.as_raw_fd(),
                Some(libbpf_cb),
                (&mut *tally as *mut Tally).cast(),
                std::ptr::null(),
            )
        };
        if rb.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { rb, tally })
    }
    /// `ring_buffer__add`: one more ring in the same `ring_buffer` (its
    /// epoll instance), with the same callback and tally.
    pub fn add(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: rb is valid until drop; the ctx outlives it, as in `new`.
        let r = unsafe {
            libbpf_sys::ring_buffer__add(
                self.rb,
                fd.as_raw_fd(),
                Some(libbpf_cb),
                (&mut *self.tally as *mut Tally).cast(),
            )
        };
        if r < 0 {
            return Err(io::Error::from_raw_os_error(-r));
        }
        Ok(())
    }
    fn take(&mut self, t: &mut Tally) {
        t.add(&self.tally);
        *self.tally = Tally::default();
    }
}

impl Consumer for Libbpf {
    fn drain(&mut self, t: &mut Tally) -> Res<()> {
        // SAFETY: rb is valid until drop.
        let r = unsafe { libbpf_sys::ring_buffer__consume(self.rb) };
        if r < 0 {
            return Err(io::Error::from_raw_os_error(-r).into());
        }
        self.take(t);
        Ok(())
    }
    fn step(&mut self, t: &mut Tally, timeout_ms: i32) -> Res<()> {
        // SAFETY: as above.
        let r = unsafe { libbpf_sys::ring_buffer__poll(self.rb, timeout_ms) };
        if r < 0 && r != -libc::EINTR {
            return Err(io::Error::from_raw_os_error(-r).into());
        }
        self.take(t);
        Ok(())
    }
}

impl Drop for Libbpf {
    fn drop(&mut self) {
        // SAFETY: created by ring_buffer__new, freed once.
        unsafe { libbpf_sys::ring_buffer__free(self.rb) };
    }
}

// ---------------------------------------------------------------- libbpf-rs

pub struct LibbpfRs {
    rb: libbpf_rs::RingBuffer<'static>,
    tally: Rc<Cell<Tally>>,
    _maps: Vec<libbpf_rs::MapHandle>,
}

impl LibbpfRs {
    pub fn new(fd: BorrowedFd<'_>) -> io::Result<Self> {
        Self::with_maps(&[fd])
    }

    /// One `RingBuffer` over all of `fds` (`RingBufferBuilder::add` per
    /// map), every ring's records counted in one tally.
    pub fn with_maps(fds: &[BorrowedFd<'_>]) -> io::Result<Self> {
        let tally = Rc::new(Cell::new(Tally::default()));
        let mut b = libbpf_rs::RingBufferBuilder::new();
        // libbpf-rs opens foreign maps by id (MapHandle::from_fd is private).
        let maps = fds
            .iter()
            .map(|&fd| libbpf_rs::MapHandle::from_map_id(map_id(fd)?).map_err(io::Error::other))
            .collect::<io::Result<Vec<_>>>()?;
        for map in &maps {
            let t2 = tally.clone();
            b.add(map, move |rec: &[u8]| {
                let mut t = t2.get();
                t.count += 1;
                t.seq_sum = t.seq_sum.wrapping_add(check_seq(rec));
                t.bytes += rec.len() as u64;
                t2.set(t);
                0
            })
            .map_err(io::Error::other)?;
        }
        let rb = b.build().map_err(io::Error::other)?;
        Ok(Self {
            rb,
            tally,
            _maps: maps,
        })
    }
}

impl Consumer for LibbpfRs {
    fn drain(&mut self, t: &mut Tally) -> Res<()> {
        self.rb.consume()?;
        t.add(&self.tally.take());
        Ok(())
    }
    fn step(&mut self, t: &mut Tally, timeout_ms: i32) -> Res<()> {
        match self.rb.poll(Duration::from_millis(timeout_ms as u64)) {
            Ok(()) => {}
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        t.add(&self.tally.take());
        Ok(())
    }
}

// ---------------------------------------------------------------- aya

pub struct Aya {
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    epoll: OwnedFd,
}

impl Aya {
    pub fn new(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let data =
            aya::maps::MapData::from_fd(fd.try_clone_to_owned()?).map_err(io::Error::other)?;
        let map = aya::maps::Map::from_map_data(data).map_err(io::Error::other)?;
        let ring = aya::maps::RingBuf::try_from(map).map_err(io::Error::other)?;
        // SAFETY: no memory preconditions.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: valid descriptors.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ring.as_fd().as_raw_fd(), &mut ev) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ring, epoll })
    }
}

impl Consumer for Aya {
    #[inline(never)]
    fn drain(&mut self, t: &mut Tally) -> Res<()> {
        let (mut count, mut sum, mut bytes) = (0u64, 0u64, 0u64);
        while let Some(item) = self.ring.next() {
            let rec: &[u8] = &item;
            count += 1;
            sum = sum.wrapping_add(check_seq(rec));
            bytes += rec.len() as u64;
        }
        t.count += count;
        t.seq_sum = t.seq_sum.wrapping_add(sum);
        t.bytes += bytes;
        Ok(())
    }
    fn step(&mut self, t: &mut Tally, timeout_ms: i32) -> Res<()> {
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
        // SAFETY: valid epoll fd and buffer.
        let r = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), ev.as_mut_ptr(), 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
        self.drain(t)
    }
}
