//! [`LostCounter`]: the lost-event convention, a per-CPU counter map of a
//! BPF program's failed reservations next to its ring (documented on the
//! type, which is public where this module is not).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::map::check_map_type;
use crate::sys::{self, bpf};

/// Byte offsets in `struct ringbuf_lost`, the one home of the layout (the
/// test producer's BPF code writes through them too).
pub(crate) const COUNT_OFFSET: usize = 0;
pub(crate) const FIRST_NS_OFFSET: usize = 8;
pub(crate) const LAST_NS_OFFSET: usize = 16;

/// The lost-event convention: a BPF program counts its own failed ring
/// buffer reservations in a per-CPU map next to the ring, and the reader (or
/// an operator's tool) reads the count from there.
///
/// Nothing in userspace sees a failed `bpf_ringbuf_reserve` (NULL) or
/// `bpf_ringbuf_output` (`-EAGAIN`): the ring was full, or its lock was
/// contended (NMI context). So "how many events were lost, and since when"
/// has an answer only if the program writes it down. This convention fixes
/// one place and one layout for it.
///
/// # The map
///
/// | | |
/// |---|---|
/// | type | `BPF_MAP_TYPE_PERCPU_ARRAY` (6) |
/// | key | `__u32`, always 0 (`key_size` 4) |
/// | value | `struct ringbuf_lost` below (`value_size` 24), or a bare `__u64` count (`value_size` 8) |
/// | `max_entries` | 1 (only key 0 is read) |
/// | name | the ring's name (up to 10 characters) + `_lost`: [`LostCounter::name_for`] |
/// | pin | the ring's pin path + `_lost`: [`LostCounter::pin_path_for`] |
///
/// ```c
/// struct ringbuf_lost {
///     __u64 count;    /* failed reservations on this CPU */
///     __u64 first_ns; /* bpf_ktime_get_ns() of the first one, 0 if none */
///     __u64 last_ns;  /* bpf_ktime_get_ns() of the latest one */
/// };
/// ```
///
/// Per CPU, so the failure path costs no shared cache line, and the program
/// needs no atomics unless two programs that count into the map can nest on
/// one CPU (a tracepoint program interrupted by a perf-event one): then
/// update `count` with `__sync_fetch_and_add`, as below. The times are
/// `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns`), comparable with
/// `clock_gettime(CLOCK_MONOTONIC)` on the same boot. Nothing is ever reset:
/// a reader that wants a rate keeps the previous [`LostEvents`] and
/// subtracts.
///
/// # The BPF side
///
/// ```c
/// struct {
///     __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
///     __uint(max_entries, 1);
///     __type(key, __u32);
///     __type(value, struct ringbuf_lost);
/// } events_lost SEC(".maps");           /* the ring is `events` */
///
/// static __always_inline void count_lost(void)
/// {
///     __u32 zero = 0;
///     struct ringbuf_lost *l = bpf_map_lookup_elem(&events_lost, &zero);
///
///     if (!l)
///         return;
///     __u64 now = bpf_ktime_get_ns();
///     __sync_fetch_and_add(&l->count, 1);
///     if (!l->first_ns)
///         l->first_ns = now;
///     l->last_ns = now;
/// }
///
///     e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
///     if (!e) {
///         count_lost();
///         return 0;
///     }
///     /* and likewise when bpf_ringbuf_output() returns non-zero */
/// ```
///
/// A program that wants only the count uses a `__u64` value and the
/// `__sync_fetch_and_add` line alone; [`LostEvents::first_ns`] and
/// [`LostEvents::last_ns`] are then `None`.
///
/// # Finding the map
///
/// A loader that pins the ring at `/sys/fs/bpf/events` pins the counter at
/// `/sys/fs/bpf/events_lost` ([`LostCounter::pin_path_for`]); a reader then
/// opens both by path. Without pins, the map's name is
/// [`LostCounter::name_for`] the ring's (`events_lost`), which `bpftool map`
/// shows with its id for [`LostCounter::from_id`]. Programs loaded with aya
/// or libbpf-rs hand the map's descriptor to [`LostCounter::from_fd`].
///
/// The `testing` feature's `KernelProducer::with_lost_counter` follows this
/// convention, and [`LostCounter::create`] makes such a map without a
/// loader.
///
/// # Reading it
///
/// ```no_run
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::LostCounter;
///
/// let lost = LostCounter::open_pinned(LostCounter::pin_path_for("/sys/fs/bpf/events"))?;
/// let now = lost.read()?;
/// if now.total > 0 {
///     eprintln!("{} events lost since {:?} ns", now.total, now.first_ns);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LostCounter {
    fd: OwnedFd,
    id: u32,
    /// 8 (a bare count) or 24 (`struct ringbuf_lost`).
    value_size: u32,
    /// The possible CPUs, in the order the kernel copies their values out.
    cpus: Vec<u32>,
}

/// What a [`LostCounter`] held when it was read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LostEvents {
    /// Failed reservations, all CPUs together.
    pub total: u64,
    /// Failed reservations per CPU, indexed by CPU number (CPUs that are not
    /// possible on this machine count 0).
    pub per_cpu: Vec<u64>,
    /// `CLOCK_MONOTONIC` nanoseconds of the first failed reservation (the
    /// earliest over the CPUs); `None` if there was none, or the map holds
    /// only counts.
    pub first_ns: Option<u64>,
    /// `CLOCK_MONOTONIC` nanoseconds of the latest failed reservation;
    /// `None` as for `first_ns`.
    pub last_ns: Option<u64>,
}

impl LostCounter {
    /// The value size of `struct ringbuf_lost` (count, first and last time).
    pub const VALUE_SIZE: u32 = 24;
    /// The value size of the count-only layout (a bare `__u64`).
    pub const COUNT_ONLY_VALUE_SIZE: u32 = 8;
    /// What the counter's map name adds to the ring's.
    pub const SUFFIX: &'static str = "_lost";

    /// What [`Error::WrongMapLayout`] calls this map.
    const LAYOUT: &'static str = "a lost-event counter";

    /// The conventional map name of the counter of the ring named `ring`:
    /// its first 10 characters and `_lost`, so the whole fits the kernel's
    /// 15 (`BPF_OBJ_NAME_LEN` - 1). `events` gives `events_lost`.
    ///
    /// ```
    /// use bpf_ringbuf::LostCounter;
    /// assert_eq!(LostCounter::name_for("events"), "events_lost");
    /// assert_eq!(LostCounter::name_for("syscall_events"), "syscall_ev_lost");
    /// ```
    pub fn name_for(ring: &str) -> String {
        let keep = 15 - Self::SUFFIX.len();
        ring.chars()
            .take(keep)
            .chain(Self::SUFFIX.chars())
            .collect()
    }

    /// The conventional pin path of the counter of the ring pinned at
    /// `ring_pin`: the same path with `_lost` appended.
    ///
    /// ```
    /// use bpf_ringbuf::LostCounter;
    /// assert_eq!(
    ///     LostCounter::pin_path_for("/sys/fs/bpf/events"),
    ///     std::path::Path::new("/sys/fs/bpf/events_lost")
    /// );
    /// ```
    pub fn pin_path_for(ring_pin: impl AsRef<Path>) -> PathBuf {
        let mut p = ring_pin.as_ref().as_os_str().to_owned();
        p.push(Self::SUFFIX);
        PathBuf::from(p)
    }

    /// `bpf(BPF_MAP_CREATE)`: a new, zeroed counter map with the full layout
    /// (`struct ringbuf_lost`, one entry), named `name` (at most 15
    /// characters of `[A-Za-z0-9_]` are kept; see [`name_for`](Self::name_for)),
    /// for tests and for programs loaded without a loader that creates maps.
    pub fn create(name: &str) -> Result<LostCounter> {
        let fd = bpf::map_create(bpf::BPF_MAP_TYPE_PERCPU_ARRAY, 4, Self::VALUE_SIZE, 1, name)?;
        LostCounter::from_fd(fd)
    }

    /// `bpf(BPF_OBJ_GET)`: opens the counter pinned at `path`. A missing pin
    /// is [`Error::PinNotFound`].
    pub fn open_pinned(path: impl AsRef<Path>) -> Result<LostCounter> {
        LostCounter::from_fd(bpf::obj_get_pinned(path.as_ref())?)
    }

    /// `bpf(BPF_MAP_GET_FD_BY_ID)`: opens the counter with map id `id`.
    pub fn from_id(id: u32) -> Result<LostCounter> {
        LostCounter::from_fd(bpf::map_get_fd_by_id(id, 0)?)
    }

    /// Adopts a descriptor, checking the layout: [`Error::WrongMapType`]
    /// unless it is a `BPF_MAP_TYPE_PERCPU_ARRAY`, [`Error::WrongMapLayout`]
    /// unless its key is 4 bytes, its value 8 or 24 and it has an entry. On
    /// error the descriptor is closed.
    pub fn from_fd(fd: OwnedFd) -> Result<LostCounter> {
        // The descriptor and type checks of every map handle (the ring's size
        // rule is not one of them: it does not apply here).
        let info = check_map_type(fd.as_fd(), bpf::BPF_MAP_TYPE_PERCPU_ARRAY)?;
        let bad = |reason: String| {
            Err(Error::WrongMapLayout {
                map_id: info.id,
                layout: Self::LAYOUT,
                reason,
            })
        };
        if info.key_size != 4 {
            return bad(format!(
                "key size {}, expected 4 (a __u32 index)",
                info.key_size
            ));
        }
        if info.value_size != Self::VALUE_SIZE && info.value_size != Self::COUNT_ONLY_VALUE_SIZE {
            return bad(format!(
                "value size {}, expected {} (struct ringbuf_lost) or {} (a __u64 count)",
                info.value_size,
                Self::VALUE_SIZE,
                Self::COUNT_ONLY_VALUE_SIZE
            ));
        }
        if info.max_entries == 0 {
            return bad("no entries, expected at least 1".into());
        }
        Ok(LostCounter {
            fd,
            id: info.id,
            value_size: info.value_size,
            cpus: sys::possible_cpus()?,
        })
    }

    /// `bpf(BPF_OBJ_PIN)`: pins the map at `path` in a mounted bpffs; by
    /// convention [`pin_path_for`](Self::pin_path_for) the ring's pin.
    pub fn pin(&self, path: impl AsRef<Path>) -> Result<()> {
        bpf::obj_pin(self.fd.as_fd(), path.as_ref())
    }

    /// The kernel's id for this map.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The map's value size: [`VALUE_SIZE`](Self::VALUE_SIZE) (count and
    /// times) or [`COUNT_ONLY_VALUE_SIZE`](Self::COUNT_ONLY_VALUE_SIZE).
    pub fn value_size(&self) -> u32 {
        self.value_size
    }

    /// `bpf(BPF_MAP_LOOKUP_ELEM)` of key 0: every CPU's value, summed up.
    /// The values are read one CPU after another while programs may be
    /// adding to them, so the total is a lower bound of the count at the
    /// end of the call.
    pub fn read(&self) -> Result<LostEvents> {
        // A per-CPU lookup copies round_up(value_size, 8) bytes for each
        // possible CPU, in CPU order.
        let stride = self.value_size as usize;
        let mut buf = vec![0u8; stride * self.cpus.len()];
        bpf::map_lookup(self.fd.as_fd(), &0u32.to_ne_bytes(), &mut buf)?;
        let word =
            |v: &[u8], at: usize| u64::from_ne_bytes(v[at..at + 8].try_into().expect("8 bytes"));
        let cpus = self.cpus.last().map_or(0, |&c| c as usize + 1);
        let mut out = LostEvents {
            per_cpu: vec![0; cpus],
            ..LostEvents::default()
        };
        for (&cpu, v) in self.cpus.iter().zip(buf.chunks_exact(stride)) {
            let count = word(v, COUNT_OFFSET);
            out.per_cpu[cpu as usize] = count;
            out.total = out.total.wrapping_add(count);
            if stride == Self::VALUE_SIZE as usize && count > 0 {
                let (first, last) = (word(v, FIRST_NS_OFFSET), word(v, LAST_NS_OFFSET));
                if first != 0 {
                    out.first_ns = Some(out.first_ns.map_or(first, |f| f.min(first)));
                }
                out.last_ns = out.last_ns.max(Some(last));
            }
        }
        Ok(out)
    }
}

impl AsFd for LostCounter {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventional_names() {
        assert_eq!(LostCounter::name_for(""), "_lost");
        assert_eq!(LostCounter::name_for("0123456789abc"), "0123456789_lost");
        assert_eq!(LostCounter::name_for("0123456789").len(), 15);
        assert_eq!(
            LostCounter::pin_path_for("/sys/fs/bpf/a/rb"),
            Path::new("/sys/fs/bpf/a/rb_lost")
        );
    }
}
