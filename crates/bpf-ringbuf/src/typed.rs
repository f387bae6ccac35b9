//! Typed views of records (feature `zerocopy`): a record's bytes seen in
//! place as `&T`, `(&T, &[u8])` or `&[T]`, with size and alignment checked
//! by the `zerocopy` crate. No copy, and no `unsafe` in this module: the
//! casts are zerocopy's, and the bytes are the ones the readers already lend.
//!
//! The user-facing documentation (the alignment guarantee, examples) is on
//! [`RecordExt`], re-exported at the crate root with [`view`],
//! [`view_prefix`], [`view_slice`] and [`ExpectedSize`].
//!
//! # Why the errors are variants of [`Error`], not a `ViewError`
//!
//! A failed view is [`Error::RecordSize`] or [`Error::RecordMisaligned`]. A
//! view sits in the same loop as the read that produced its bytes
//! (`reader.read_zero_copy()?.view::<Event>()?`), and the crate's rule is one
//! error type for every call (see "One error type" in the crate docs): one
//! `?`, one `match`, one conversion into `io::Error` for the whole loop. A
//! separate type would buy `Copy`, `PartialEq` and an exhaustive match,
//! which a per-record error path does not need. The variants hold only
//! `&'static str`s and `usize`s, so a failed view allocates nothing.

use std::any::type_name;
use std::fmt;
use std::mem::{align_of, size_of};

use zerocopy::{CastError, ConvertError, FromBytes, Immutable, KnownLayout};

use crate::error::{Error, Result};
use ExpectedSize::{AtLeast, Exactly, MultipleOf};

/// The record length a view needed, in [`Error::RecordSize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpectedSize {
    /// [`view`]: exactly `size_of::<T>()` bytes.
    Exactly(usize),
    /// [`view_prefix`]: at least `size_of::<T>()` bytes.
    AtLeast(usize),
    /// [`view_slice`]: a multiple of `size_of::<T>()` bytes (zero included).
    MultipleOf(usize),
}

impl fmt::Display for ExpectedSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedSize::Exactly(n) => write!(f, "exactly {n} bytes"),
            ExpectedSize::AtLeast(n) => write!(f, "at least {n} bytes"),
            ExpectedSize::MultipleOf(n) => write!(f, "a multiple of {n} bytes"),
        }
    }
}

/// The record as a `&T`: its length must be exactly `size_of::<T>()` and
/// its address a multiple of `align_of::<T>()`. The same as
/// [`RecordExt::view`] (where the alignment guarantee is documented), as a
/// function for `map`.
///
/// # Errors
///
/// [`Error::RecordMisaligned`] if the record's address is not aligned for
/// `T` (never for a record read in place and `align_of::<T>() <= 8`), else
/// [`Error::RecordSize`] with [`ExpectedSize::Exactly`] if the length is
/// wrong.
///
/// ```
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// #[derive(FromBytes, KnownLayout, Immutable)]
/// #[repr(C)]
/// struct Pair {
///     a: u64,
///     b: u64,
/// }
///
/// let words = [7u64, 9, 11];
/// let pair: &Pair = bpf_ringbuf::view(words[..2].as_bytes())?;
/// assert_eq!((pair.a, pair.b), (7, 9));
/// // 24 bytes are not a Pair: a typed error, not a panic.
/// assert!(matches!(
///     bpf_ringbuf::view::<Pair>(words.as_bytes()),
///     Err(bpf_ringbuf::Error::RecordSize { actual: 24, .. })
/// ));
/// # Ok::<(), bpf_ringbuf::Error>(())
/// ```
#[inline]
pub fn view<T>(record: &[u8]) -> Result<&T>
where
    T: FromBytes + KnownLayout + Immutable,
{
    T::ref_from_bytes(record)
        .map_err(|e| cast_error(record, e, align_of::<T>(), Exactly(size_of::<T>())))
}

/// The record as a `T` header followed by a payload tail: the first
/// `size_of::<T>()` bytes as `&T`, the rest as `&[u8]` (empty when the
/// record is exactly a `T`). The same as [`RecordExt::view_prefix`].
///
/// The tail starts `size_of::<T>()` bytes into the record. In a record read
/// in place (8-aligned, see [`RecordExt`]) it is 8-aligned when that size is
/// a multiple of 8, 4-aligned when it is a multiple of 4, and so on: view
/// the tail in turn only as types with at most that alignment.
///
/// # Errors
///
/// [`Error::RecordMisaligned`] if the record's address is not aligned for
/// `T`, else [`Error::RecordSize`] with [`ExpectedSize::AtLeast`] if the
/// record is shorter than a `T`.
///
/// ```
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// /// `struct hdr { __u32 kind; __u32 len; }`, then `len` bytes of path.
/// #[derive(FromBytes, KnownLayout, Immutable)]
/// #[repr(C)]
/// struct Header {
///     kind: u32,
///     len: u32,
/// }
///
/// let mut words = [0u64; 2]; // an 8-aligned buffer, like a record in a ring
/// words.as_mut_bytes()[..8].copy_from_slice([1u32, 4].as_bytes());
/// words.as_mut_bytes()[8..12].copy_from_slice(b"/tmp");
/// let (hdr, tail) = bpf_ringbuf::view_prefix::<Header>(&words.as_bytes()[..12])?;
/// assert_eq!(hdr.kind, 1);
/// assert_eq!(&tail[..hdr.len as usize], b"/tmp");
/// # Ok::<(), bpf_ringbuf::Error>(())
/// ```
#[inline]
pub fn view_prefix<T>(record: &[u8]) -> Result<(&T, &[u8])>
where
    T: FromBytes + KnownLayout + Immutable,
{
    T::ref_from_prefix(record)
        .map_err(|e| cast_error(record, e, align_of::<T>(), AtLeast(size_of::<T>())))
}

/// The record as a slice of `T`s: its length must be a multiple of
/// `size_of::<T>()` (an empty record is an empty slice). The same as
/// [`RecordExt::view_slice`]. A zero-sized `T` does not compile (zerocopy
/// asserts it: a slice of them has no length to read from the bytes).
///
/// # Errors
///
/// [`Error::RecordMisaligned`] if the record's address is not aligned for
/// `T`, else [`Error::RecordSize`] with [`ExpectedSize::MultipleOf`].
///
/// ```
/// use zerocopy::IntoBytes;
///
/// let samples = [3u32, 1, 4, 1, 5];
/// let view: &[u32] = bpf_ringbuf::view_slice(samples.as_bytes())?;
/// assert_eq!(view, samples);
/// assert!(bpf_ringbuf::view_slice::<u32>(&samples.as_bytes()[..6]).is_err());
/// # Ok::<(), bpf_ringbuf::Error>(())
/// ```
#[inline]
pub fn view_slice<T>(record: &[u8]) -> Result<&[T]>
where
    T: FromBytes + Immutable,
{
    <[T]>::ref_from_bytes(record)
        .map_err(|e| cast_error(record, e, align_of::<T>(), MultipleOf(size_of::<T>())))
}

/// Our error for a failed zerocopy cast of `record` to `D` (`T` or `[T]`,
/// with `T`'s alignment `align`). (A `FromBytes` type accepts every byte
/// pattern, so the validity case cannot happen.)
#[cold]
fn cast_error<D: ?Sized + KnownLayout>(
    record: &[u8],
    e: CastError<&[u8], D>,
    align: usize,
    expected: ExpectedSize,
) -> Error {
    let type_name = type_name::<D>();
    match e {
        ConvertError::Alignment(_) => Error::RecordMisaligned {
            type_name,
            addr: record.as_ptr() as usize,
            align,
        },
        ConvertError::Size(_) => Error::RecordSize {
            type_name,
            expected,
            actual: record.len(),
        },
        ConvertError::Validity(never) => match never {},
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for [u8] {}
}

/// Typed views of a record (feature `zerocopy`): its bytes seen in place as
/// `&T`, `(&T, &[u8])` or `&[T]`, with the size and alignment checked, and a
/// typed error ([`Error::RecordSize`], [`Error::RecordMisaligned`]) instead
/// of a panic.
///
/// Implemented for `[u8]`, so it applies to every record the readers lend
/// ([`Reader::read_zero_copy`](crate::Reader::read_zero_copy), a
/// [`Batch`](crate::Batch)'s records, the callback of
/// [`consume`](crate::Reader::consume), the [`Consumer`](crate::Consumer)'s
/// reads) and, through auto-deref, to the `data` of a copied
/// [`Record`](crate::Record) (whose alignment is not guaranteed: see below).
/// Sealed: this crate may add methods.
///
/// # The event struct
///
/// Declare the struct your BPF program writes with `#[repr(C)]`, field for
/// field as in C, and derive zerocopy's traits. Add
/// `zerocopy = { version = "0.8", features = ["derive"] }` to your
/// dependencies; cargo shares it with this crate's.
///
/// ```
/// # #[cfg(feature = "testing")]
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::testing::{FakeRing, Wakeup};
/// use bpf_ringbuf::RecordExt;
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// /// The BPF program's `struct event { __u64 ts; __u32 pid; __u32 len; }`.
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
/// #[repr(C)]
/// struct Event {
///     ts: u64,
///     pid: u32,
///     len: u32,
/// }
///
/// // The fake ring stands in for the kernel's: `output` is the BPF program's
/// // bpf_ringbuf_output(&ring, &event, sizeof(event), 0).
/// let ring = FakeRing::new(bpf_ringbuf::page_size())?;
/// let event = Event { ts: 1_000, pid: 42, len: 0 };
/// ring.output(event.as_bytes(), Wakeup::Default);
///
/// let mut reader = ring.reader()?;
/// reader.set_deadline(Some(std::time::Instant::now())); // don't block
/// let ev: &Event = reader.read_zero_copy()?.view()?; // in place, no copy
/// assert_eq!((ev.ts, ev.pid), (1_000, 42));
/// # Ok(()) }
/// # #[cfg(not(feature = "testing"))]
/// # fn main() {}
/// ```
///
/// In an agent's read loop, a record of the wrong size (another program
/// writing to the map, a version skew) is an error you can count and skip:
///
/// ```no_run
/// # fn main() -> bpf_ringbuf::Result<()> {
/// # use zerocopy::{FromBytes, Immutable, KnownLayout};
/// # #[derive(FromBytes, KnownLayout, Immutable)]
/// # #[repr(C)]
/// # struct Event { ts: u64, pid: u32, len: u32 }
/// use bpf_ringbuf::{Error, Reader, RecordExt, RingBuf};
///
/// let ring = RingBuf::open_pinned("/sys/fs/bpf/events")?;
/// let mut reader = Reader::new(&ring)?;
/// let mut malformed = 0u64;
/// loop {
///     let batch = reader.batch()?;
///     for rec in &batch {
///         match rec.view::<Event>() {
///             Ok(ev) => println!("pid {} at {}", ev.pid, ev.ts),
///             Err(Error::RecordSize { .. }) => malformed += 1,
///             Err(e) => return Err(e),
///         }
///     }
/// }
/// # }
/// ```
///
/// # Alignment: what is guaranteed
///
/// **A record read in place from a ring starts at an address that is a
/// multiple of 8** (`rec.as_ptr() as usize % 8 == 0`), for a kernel map and
/// for `testing::FakeRing` alike, and nothing more. Why: the data area of
/// the mapping starts on a page boundary; every record header sits at a
/// ring position that is a multiple of 8 (the record stride,
/// [`abi::record_stride`](crate::abi::record_stride), rounds up to 8); the
/// payload follows the 8-byte header ([`abi::HEADER_SIZE`](crate::abi::HEADER_SIZE)).
/// A record that wraps past the end of the ring is read through the second
/// mapping of the data pages, at the same offset.
///
/// So:
///
/// * a `T` with `align_of::<T>() <= 8` (a `#[repr(C)]` struct of integers up
///   to `u64`, arrays of them) views every record in place, and its views
///   never fail with [`Error::RecordMisaligned`]: only the size can be wrong;
/// * a `T` with a larger alignment (`#[repr(align(16))]`, or a `u128`/`i128`
///   field: 16-aligned on x86_64 since Rust 1.77) views only the records
///   that happen to start on a multiple of its alignment, and fails with
///   [`Error::RecordMisaligned`] on the others. Declare such a field as
///   `[u64; 2]` or `zerocopy::Unalign<u128>`, or copy the record
///   (`zerocopy::FromBytes::read_from_bytes`);
/// * a copy or a subslice carries no guarantee: a [`Record`](crate::Record)'s
///   `data` is a `Vec<u8>`, whose allocation is only promised 1-byte
///   alignment, and `&rec[k..]` is aligned as `k` is. Types with no
///   alignment requirement (`zerocopy::Unaligned`, e.g. the
///   `zerocopy::byteorder` integers) view anything.
pub trait RecordExt: sealed::Sealed {
    /// The record as a `&T` of exactly its length. See [`view`](crate::view).
    fn view<T>(&self) -> Result<&T>
    where
        T: FromBytes + KnownLayout + Immutable;

    /// The record as a `T` header and the payload tail after it. See
    /// [`view_prefix`](crate::view_prefix).
    fn view_prefix<T>(&self) -> Result<(&T, &[u8])>
    where
        T: FromBytes + KnownLayout + Immutable;

    /// The record as a slice of `T`s. See [`view_slice`](crate::view_slice).
    fn view_slice<T>(&self) -> Result<&[T]>
    where
        T: FromBytes + Immutable;
}

impl RecordExt for [u8] {
    #[inline]
    fn view<T>(&self) -> Result<&T>
    where
        T: FromBytes + KnownLayout + Immutable,
    {
        view(self)
    }

    #[inline]
    fn view_prefix<T>(&self) -> Result<(&T, &[u8])>
    where
        T: FromBytes + KnownLayout + Immutable,
    {
        view_prefix(self)
    }

    #[inline]
    fn view_slice<T>(&self) -> Result<&[T]>
    where
        T: FromBytes + Immutable,
    {
        view_slice(self)
    }
}
