//! A minimal raw reader of the kernel ring buffer ABI: the reference floor
//! (batched publish) and the raw copying loop (copy + per-record publish).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::Tally;

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HDR: u64 = 8;

/// Size in bytes of a ring buffer map's data area, from the kernel.
pub fn map_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut info: libbpf_sys::bpf_map_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_map_info>() as u32;
    // SAFETY: info/len point to valid memory of the advertised size.
    let r = unsafe { libbpf_sys::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(-r));
    }
    Ok(info.max_entries as usize)
}

/// The kernel's id for a map (libbpf-rs opens maps by id).
pub fn map_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut info: libbpf_sys::bpf_map_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_map_info>() as u32;
    // SAFETY: as above.
    let r = unsafe { libbpf_sys::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(-r));
    }
    Ok(info.id)
}

pub struct RawRing {
    cons_map: *mut libc::c_void,
    prod_map: *mut libc::c_void,
    prod_len: usize,
    page: usize,
    data: *const u8,
    mask: u64,
    pos: u64,
    epoll: OwnedFd,
    buf: Vec<u8>,
}

// SAFETY: the mappings are owned by this value and only used through &mut self.
unsafe impl Send for RawRing {}

impl RawRing {
    pub fn new(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let size = map_size(fd)?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: mapping a BPF ring buffer map as the kernel ABI describes.
        let cons_map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if cons_map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let prod_len = page + 2 * size;
        // SAFETY: as above.
        let prod_map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                prod_len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                page as libc::off_t,
            )
        };
        if prod_map == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: unmapping what we mapped.
            unsafe { libc::munmap(cons_map, page) };
            return Err(e);
        }
        // SAFETY: epoll_create1 has no memory preconditions.
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
        // SAFETY: valid fds and event struct.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut r = RawRing {
            cons_map,
            prod_map,
            prod_len,
            page,
            // SAFETY: the data pages start one page into the producer mapping.
            data: unsafe { (prod_map as *const u8).add(page) },
            mask: size as u64 - 1,
            pos: 0,
            epoll,
            buf: Vec::with_capacity(size),
        };
        r.pos = r.consumer().load(Ordering::Acquire);
        Ok(r)
    }

    #[inline(always)]
    fn consumer(&self) -> &AtomicU64 {
        // SAFETY: page-aligned, mapped for the lifetime of self.
        unsafe { &*(self.cons_map as *const AtomicU64) }
    }

    #[inline(always)]
    fn producer(&self) -> &AtomicU64 {
        // SAFETY: as above.
        unsafe { &*(self.prod_map as *const AtomicU64) }
    }

    /// The floor: walk every committed record up to the producer position,
    /// read its first 8 bytes, and publish the consumer position once per batch.
    #[inline(never)]
    pub fn drain_ref(&mut self, t: &mut Tally) {
        let (mut count, mut sum, mut bytes) = (0u64, 0u64, 0u64);
        let mut cons = self.pos;
        let data = self.data;
        let mask = self.mask;
        'outer: loop {
            let prod = self.producer().load(Ordering::Acquire);
            if prod == cons {
                break;
            }
            while cons != prod {
                // SAFETY: cons & mask is inside the data area; header is 8-aligned.
                let hdr = unsafe { &*(data.add((cons & mask) as usize) as *const AtomicU32) };
                let len = hdr.load(Ordering::Acquire);
                if len & BUSY != 0 {
                    self.consumer().store(cons, Ordering::Release);
                    break 'outer;
                }
                let l = (len & !(BUSY | DISCARD)) as u64;
                if len & DISCARD == 0 {
                    // SAFETY: the record's payload follows its header, contiguous thanks
                    // to the double mapping; payloads here are at least 8 bytes.
                    let rec = unsafe {
                        std::slice::from_raw_parts(data.add((cons & mask) as usize + 8), l as usize)
                    };
                    sum = sum.wrapping_add(u64::from_le_bytes(rec[..8].try_into().unwrap()));
                    count += 1;
                    bytes += l;
                }
                cons += (l + HDR + 7) & !7;
            }
            self.consumer().store(cons, Ordering::Release);
        }
        self.pos = cons;
        t.count += count;
        t.seq_sum = t.seq_sum.wrapping_add(sum);
        t.bytes += bytes;
    }

    /// The raw copying loop: copy each record into a reused buffer, read the
    /// sequence number from the copy, publish the consumer position per record.
    #[inline(never)]
    pub fn drain_copy(&mut self, t: &mut Tally) {
        let (mut count, mut sum, mut bytes) = (0u64, 0u64, 0u64);
        let mut cons = self.pos;
        let data = self.data;
        let mask = self.mask;
        let mut buf = std::mem::take(&mut self.buf);
        'outer: loop {
            let prod = self.producer().load(Ordering::Acquire);
            if prod == cons {
                break;
            }
            while cons != prod {
                // SAFETY: as in drain_ref.
                let hdr = unsafe { &*(data.add((cons & mask) as usize) as *const AtomicU32) };
                let len = hdr.load(Ordering::Acquire);
                if len & BUSY != 0 {
                    break 'outer;
                }
                let l = (len & !(BUSY | DISCARD)) as u64;
                if len & DISCARD == 0 {
                    // SAFETY: as in drain_ref.
                    let rec = unsafe {
                        std::slice::from_raw_parts(data.add((cons & mask) as usize + 8), l as usize)
                    };
                    buf.clear();
                    buf.extend_from_slice(rec);
                    sum = sum.wrapping_add(u64::from_le_bytes(buf[..8].try_into().unwrap()));
                    count += 1;
                    bytes += l;
                }
                cons += (l + HDR + 7) & !7;
                self.consumer().store(cons, Ordering::Release);
            }
        }
        self.buf = buf;
        self.pos = cons;
        t.count += count;
        t.seq_sum = t.seq_sum.wrapping_add(sum);
        t.bytes += bytes;
    }

    /// Blocks in epoll_wait (level-triggered) until the ring is readable or
    /// the timeout passes. The consumer position is already published.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<()> {
        fence(Ordering::SeqCst);
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
        loop {
            // SAFETY: valid epoll fd and event buffer.
            let r =
                unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), ev.as_mut_ptr(), 1, timeout_ms) };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for RawRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe {
            libc::munmap(self.cons_map, self.page);
            libc::munmap(self.prod_map, self.prod_len);
        }
    }
}
