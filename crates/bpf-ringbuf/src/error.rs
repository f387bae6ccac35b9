//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong. An empty ring is not an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The deadline set with [`Reader::set_deadline`](crate::Reader::set_deadline)
    /// passed with no record left to return.
    #[error("deadline exceeded with no record available")]
    DeadlineExceeded,

    /// [`ReaderHandle::flush`](crate::ReaderHandle::flush) was called and every
    /// record present has been returned. Reported once per flush.
    #[error("reader flushed: every record present has been returned")]
    Flushed,

    /// [`ReaderHandle::close`](crate::ReaderHandle::close) was called. Every
    /// read after it returns this at once.
    #[error("reader closed")]
    Closed,

    /// The ring is empty, and records returned by
    /// [`Reader::read_zero_copy`](crate::Reader::read_zero_copy) are still
    /// uncommitted. Waiting now could sleep through new records (the kernel
    /// only wakes a consumer that has published its position), so the call
    /// returns instead of waiting. Call [`Reader::commit`](crate::Reader::commit)
    /// and read again: that read waits as usual.
    #[error("ring is empty and zero-copy records are uncommitted: call commit() before waiting")]
    CommitRequired,

    /// The descriptor refers to a BPF map of another type.
    #[error(
        "map is of type {found_name} ({found}), expected BPF_MAP_TYPE_{expected_name} ({expected})"
    )]
    WrongMapType {
        /// The `BPF_MAP_TYPE_*` value of the map.
        found: u32,
        /// The kernel's name for it, without the `BPF_MAP_TYPE_` prefix.
        found_name: &'static str,
        /// The type that was required.
        expected: u32,
        /// The name of the required type, without the `BPF_MAP_TYPE_` prefix.
        expected_name: &'static str,
    },

    /// The map is of the right type, but its key size, value size or number
    /// of entries is not the layout required: for a
    /// [`LostCounter`](crate::LostCounter), a `u32` key, a value of 8 or 24
    /// bytes, and at least one entry.
    #[error("map {map_id} is not {layout}: {reason}")]
    WrongMapLayout {
        /// The kernel's id of the map.
        map_id: u32,
        /// What the map was opened as, e.g. `"a lost-event counter"`.
        layout: &'static str,
        /// What differs, with the value found and the one required.
        reason: String,
    },

    /// The descriptor is open but is not a BPF map.
    #[error("file descriptor {fd} is not a BPF map (it is {kind})")]
    NotAMap {
        /// The raw descriptor number.
        fd: i32,
        /// What it refers to, as `/proc/self/fd` shows it.
        kind: String,
    },

    /// The descriptor is not open (closed or never valid).
    #[error("file descriptor {fd} is not open")]
    BadFd {
        /// The raw descriptor number.
        fd: i32,
    },

    /// A ring buffer size the kernel will not accept.
    #[error("invalid ring buffer size {size}: it must be a power of two and a multiple of the page size ({page_size}); nearest valid size is {suggested}")]
    BadSize {
        /// The size that was asked for.
        size: usize,
        /// The page size of this machine.
        page_size: usize,
        /// The nearest valid size (the next one up, where there is one).
        suggested: usize,
    },

    /// A record header claims more bytes than the producer has produced
    /// past it. The reader stops before that record; nothing after it is
    /// returned, and every read reports it again.
    #[error("corrupt record header at ring position {pos}: a record of {len} bytes runs past the {available} bytes produced")]
    Corrupt {
        /// Ring position of the bad header.
        pos: usize,
        /// The payload length it claims (flag bits stripped).
        len: usize,
        /// Ring bytes between that position and the producer position.
        available: usize,
    },

    /// The producer position is impossible seen from the consumer's: more
    /// than the ring size ahead, behind it, or not 8-aligned. Nothing past
    /// the consumer position is read.
    #[error("impossible producer position {producer} seen from consumer position {consumer}: it must be 0 to {size} bytes ahead, in multiples of 8")]
    CorruptProducerPosition {
        /// The reader's position.
        consumer: usize,
        /// The producer position loaded from the ring.
        producer: usize,
        /// The ring's data size.
        size: usize,
    },

    /// The consumer position published in the ring (by an earlier consumer)
    /// is not 8-aligned, so no header can be read from it. The reader
    /// refuses to start.
    #[error(
        "published consumer position {pos} is not 8-aligned: the ring's consumer page is corrupt"
    )]
    MisalignedConsumerPosition {
        /// The position found.
        pos: usize,
    },

    /// The map has a flag that changes the ring's protocol in a way this
    /// reader does not support, such as `BPF_F_RB_OVERWRITE` (overwrite
    /// mode, Linux 6.19+: the kernel rewrites records a zero-copy reader
    /// would still be reading).
    #[error("map flags {flags:#x} include {name} ({unsupported:#x}), which this reader does not support")]
    UnsupportedMapFlags {
        /// All of the map's `map_flags`.
        flags: u32,
        /// The flags that are not supported.
        unsupported: u32,
        /// The name of the first unsupported flag, or `"an unknown flag"`.
        name: &'static str,
    },

    /// This process already has a live consumer of the map (a
    /// [`Consumer`](crate::Consumer) or [`Reader`](crate::Reader) that has not
    /// been dropped). Two consumers of one map would hand each other's
    /// borrowed records back to the kernel. Dropping the first releases the
    /// map; closing it does not (its records may still be borrowed).
    #[error("this process already has a live consumer of {}", match map_id { Some(id) => format!("map {id}"), None => "this fake ring".to_string() })]
    ConsumerExists {
        /// The kernel's id of the map (`None` for a `testing::FakeRing`).
        map_id: Option<u32>,
    },

    /// The map's descriptor was opened read-only (`BPF_F_RDONLY`, for
    /// example by `BPF_OBJ_GET` with read-only file flags), so the consumer
    /// page cannot be mapped writable. Open the map read-write.
    #[error("{call}: the map descriptor is read-only (opened with BPF_F_RDONLY); a consumer must write the consumer position, so open the map read-write")]
    ReadOnlyMap {
        /// The system call that failed.
        call: &'static str,
        /// The underlying `EACCES`/`EPERM`.
        #[source]
        source: io::Error,
    },

    /// A path the kernel cannot take: it contains a NUL byte.
    #[error("invalid path {}: it contains a NUL byte", path.display())]
    InvalidPath {
        /// The path given.
        path: PathBuf,
    },

    /// No pinned object exists at the path.
    #[error("no pinned BPF object at {}", path.display())]
    PinNotFound {
        /// The path that was opened.
        path: PathBuf,
    },

    /// The kernel refused the call for lack of privilege.
    #[error("{call}: permission denied (BPF ring buffers need CAP_BPF, or root; check also kernel.unprivileged_bpf_disabled and any LSM policy)")]
    PermissionDenied {
        /// The system call that failed.
        call: &'static str,
        /// The underlying `EPERM`/`EACCES`.
        #[source]
        source: io::Error,
    },

    /// The verifier refused a BPF program (test producers only).
    #[cfg(feature = "testing")]
    #[error("the BPF verifier rejected the program: {source}\n{log}")]
    ProgramRejected {
        /// The underlying error.
        #[source]
        source: io::Error,
        /// The end of the verifier log.
        log: String,
    },

    /// A position given to [`Spectator::seek_to`](crate::Spectator::seek_to)
    /// or [`FlightRecorder::since`](crate::FlightRecorder::since) that cannot
    /// be a record boundary of the ring: not 8-aligned, or ahead of the
    /// producer.
    #[error("position {position} is not a record boundary at or behind the producer position {producer}")]
    BadPosition {
        /// The position given.
        position: u64,
        /// The producer position when it was checked.
        producer: u64,
    },

    /// An argument this crate cannot accept (a test producer configuration).
    #[cfg(feature = "testing")]
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },

    /// A typed view ([`RecordExt`](crate::RecordExt), feature `zerocopy`):
    /// the record's length does not fit the type.
    #[cfg(feature = "zerocopy")]
    #[error("record of {actual} bytes cannot be viewed as {type_name}, which needs {expected}")]
    RecordSize {
        /// The type asked for (`std::any::type_name`).
        type_name: &'static str,
        /// The length that type needs.
        expected: crate::ExpectedSize,
        /// The record's length.
        actual: usize,
    },

    /// An async reader was opened outside a tokio runtime (feature `tokio`).
    #[cfg(feature = "tokio")]
    #[error(
        "no tokio runtime: an AsyncReader must be opened inside one, with IO and time enabled"
    )]
    NoAsyncRuntime,

    /// A typed view ([`RecordExt`](crate::RecordExt), feature `zerocopy`):
    /// the record's address is not aligned for the type. A record read in
    /// place is 8-aligned, so this happens only for types aligned to more
    /// than 8, or for copies and subslices.
    #[cfg(feature = "zerocopy")]
    #[error("record at address {addr:#x} is not aligned for {type_name}, which needs {align}-byte alignment (a record read in place is only guaranteed 8)")]
    RecordMisaligned {
        /// The type asked for (`std::any::type_name`).
        type_name: &'static str,
        /// The record's address.
        addr: usize,
        /// The alignment the type needs.
        align: usize,
    },

    /// Any other system call failure.
    #[error("{call} failed")]
    Syscall {
        /// The system call that failed, e.g. `bpf(BPF_MAP_CREATE)`.
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Classifies an OS error from `call`.
    pub(crate) fn from_syscall(call: &'static str, source: io::Error) -> Error {
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Error::PermissionDenied { call, source },
            _ => Error::Syscall { call, source },
        }
    }

    /// The OS error behind this error, if there is one.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            Error::PermissionDenied { source, .. }
            | Error::ReadOnlyMap { source, .. }
            | Error::Syscall { source, .. } => Some(source),
            #[cfg(feature = "testing")]
            Error::ProgramRejected { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::DeadlineExceeded => io::ErrorKind::TimedOut,
            Error::Flushed | Error::Closed | Error::CommitRequired => io::ErrorKind::Other,
            Error::WrongMapType { .. }
            | Error::NotAMap { .. }
            | Error::BadSize { .. }
            | Error::BadFd { .. }
            | Error::UnsupportedMapFlags { .. }
            | Error::WrongMapLayout { .. }
            | Error::InvalidPath { .. }
            | Error::BadPosition { .. } => io::ErrorKind::InvalidInput,
            #[cfg(feature = "testing")]
            Error::InvalidArgument { .. } => io::ErrorKind::InvalidInput,
            Error::Corrupt { .. }
            | Error::CorruptProducerPosition { .. }
            | Error::MisalignedConsumerPosition { .. } => io::ErrorKind::InvalidData,
            Error::ConsumerExists { .. } => io::ErrorKind::AlreadyExists,
            Error::PinNotFound { .. } => io::ErrorKind::NotFound,
            Error::PermissionDenied { .. } | Error::ReadOnlyMap { .. } => {
                io::ErrorKind::PermissionDenied
            }
            #[cfg(feature = "testing")]
            Error::ProgramRejected { source, .. } => source.kind(),
            #[cfg(feature = "zerocopy")]
            Error::RecordSize { .. } | Error::RecordMisaligned { .. } => io::ErrorKind::InvalidData,
            #[cfg(feature = "tokio")]
            Error::NoAsyncRuntime => io::ErrorKind::Other,
            Error::Syscall { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}
