//! What several commands share: naming a ring (id or pin), opening it with
//! errors a user can act on, durations and sizes on the command line, which
//! processes hold a map, and the lost-event counter next to a ring.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use bpf_ringbuf::{map_ids, Error, LostCounter, LostEvents, MapInfo, RingBuf, Spectator, Start};

/// A ring named on the command line: a map id (digits) or a pin path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A map id, as `list` shows it.
    Id(u32),
    /// A path in a bpffs.
    Pin(PathBuf),
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        if s.is_empty() {
            return Err("empty: give a map id or a pin path".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(Target::Id)
                .map_err(|_| format!("map id {s} is out of range"));
        }
        Ok(Target::Pin(PathBuf::from(s)))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Id(id) => write!(f, "map {id}"),
            Target::Pin(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Whether `e` is "no such map id" (`ENOENT` from `BPF_MAP_GET_FD_BY_ID`).
fn is_enoent(e: &Error) -> bool {
    e.os_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound)
}

impl Target {
    /// Opens the ring, with messages that say which ring and what is wrong.
    pub fn open(&self) -> anyhow::Result<RingBuf> {
        let opened = match self {
            Target::Id(id) => RingBuf::from_id(*id),
            Target::Pin(p) => RingBuf::open_pinned(p),
        };
        opened.map_err(|e| match (&e, self) {
            (Error::PinNotFound { .. }, _) => anyhow!("{e}"),
            (_, Target::Id(id)) if is_enoent(&e) => anyhow!("no BPF map with id {id}"),
            (Error::WrongMapType { .. }, _) => {
                anyhow!("{self} is not a ring buffer: {e}")
            }
            _ => anyhow::Error::new(e).context(format!("cannot open {self}")),
        })
    }

    /// The pin path, if the ring was named by one.
    pub fn pin(&self) -> Option<&PathBuf> {
        match self {
            Target::Pin(p) => Some(p),
            Target::Id(_) => None,
        }
    }
}

/// The error and its causes on one line (`outer: inner: ...`).
pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// Whether the error comes from writing to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Parses `250ms`, `2s`, `1.5s`, `500us`, `1m`, `10ns`; a bare number is
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 250ms, 2s, 1.5s, 1m)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?} (use ns, us, ms, s or m)"
            ))
        }
    };
    Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses `123`, `4K`, `4KiB`, `4M`, `1G` (binary multiples).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let bad = || format!("{s:?} is not a size (e.g. 4096, 64K, 4M, 1G)");
    let n: usize = t[..digits].parse().map_err(|_| bad())?;
    let mult = match t[digits..].to_ascii_lowercase().as_str() {
        "" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Parses a count: `5000`, `100K`, `2M`, `1G` (decimal multiples).
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let bad = || format!("{s:?} is not a count (e.g. 5000, 100K, 2M)");
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let mult = match t[digits..].to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// `262144` as `256 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A process holding a descriptor of a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub comm: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.pid, self.comm)
    }
}

/// Which processes other than this one hold a descriptor of each map:
/// every `/proc/PID/fdinfo/FD` with a `map_id:` line. Processes that exit
/// meanwhile, or whose descriptors we may not read, are left out.
pub fn holders() -> BTreeMap<u32, Vec<Holder>> {
    let me = std::process::id();
    let mut out: BTreeMap<u32, Vec<Holder>> = BTreeMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fdinfo")) else {
            continue;
        };
        let mut maps: Vec<u32> = fds
            .flatten()
            .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
            .filter_map(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("map_id:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .collect();
        maps.sort_unstable();
        maps.dedup();
        if maps.is_empty() {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_else(|_| "?".into());
        for id in maps {
            out.entry(id).or_default().push(Holder {
                pid,
                comm: comm.clone(),
            });
        }
    }
    out
}

/// The processes other than this one that hold map `id`.
pub fn holders_of(id: u32) -> Vec<Holder> {
    holders().remove(&id).unwrap_or_default()
}

/// A spectator of `ring`, to read its positions again and again.
pub fn watcher(ring: &RingBuf) -> anyhow::Result<Spectator> {
    Spectator::new(ring, Start::Now).with_context(|| format!("cannot map ring {}", ring.id()))
}

/// The kernel's producer and consumer positions of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    pub producer: u64,
    pub consumer: u64,
}

impl Positions {
    /// Reads the positions through a spectator (it never writes the
    /// consumer position, and works next to a consumer in this process).
    pub fn of(ring: &RingBuf) -> anyhow::Result<Positions> {
        Ok(Positions::now(&watcher(ring)?))
    }

    /// The positions as they are now in the ring `s` watches.
    pub fn now(s: &Spectator) -> Positions {
        Positions {
            producer: s.producer_position(),
            consumer: s.consumer_position(),
        }
    }

    /// Bytes produced and not yet consumed.
    pub fn unconsumed(&self) -> u64 {
        self.producer.wrapping_sub(self.consumer)
    }
}

/// The ring's lost-event counter by the library's convention, if there is
/// one: pinned next to the ring's pin (`PIN_lost`), else a per-CPU map named
/// after the ring (`NAME_lost`).
pub fn lost_counter(target: &Target, ring_name: &str) -> Option<LostCounter> {
    if let Some(pin) = target.pin() {
        if let Ok(c) = LostCounter::open_pinned(LostCounter::pin_path_for(pin)) {
            return Some(c);
        }
    }
    if ring_name.is_empty() {
        return None;
    }
    let want = LostCounter::name_for(ring_name);
    map_ids()
        .map_while(Result::ok)
        .filter_map(|id| MapInfo::from_id(id).ok())
        .filter(|m| m.name == want)
        .find_map(|m| LostCounter::from_id(m.id).ok())
}

/// `lost: 3 (first at 12.5 s, last at 13.0 s after boot)`-style text.
pub fn describe_lost(l: &LostEvents) -> String {
    match (l.first_ns, l.last_ns) {
        (Some(f), Some(last)) if l.total > 0 => format!(
            "{} (first {:.3} s, last {:.3} s after boot)",
            l.total,
            f as f64 / 1e9,
            last as f64 / 1e9
        ),
        _ => l.total.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!("42".parse(), Ok(Target::Id(42)));
        assert_eq!(
            "/sys/fs/bpf/x".parse(),
            Ok(Target::Pin("/sys/fs/bpf/x".into()))
        );
        assert_eq!("x1".parse(), Ok(Target::Pin("x1".into())));
        assert!("99999999999".parse::<Target>().is_err());
        assert!("".parse::<Target>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "ms", "1h", "-1s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("x").is_err());
        assert!(parse_size("4T").is_err());
        assert_eq!(parse_count("100K"), Ok(100_000));
        assert_eq!(parse_count("2m"), Ok(2_000_000));
        assert_eq!(parse_count("5000"), Ok(5000));
        assert!(parse_count("1KiB").is_err() && parse_count("").is_err());
        assert_eq!(human_bytes(262144), "256 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(100), "100 B");
    }
}
