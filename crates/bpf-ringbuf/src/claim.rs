//! One live consumer per map per process.
//!
//! Two consumers of one map would each publish their own position, so one
//! could hand the kernel records the other still lends out as slices: the
//! kernel would overwrite them while borrowed. Within a process this module
//! makes that impossible: a [`Consumer`](crate::Consumer) holds a [`Claim`] on
//! its map for as long as it lives, and a second claim on the same map fails
//! with [`Error::ConsumerExists`]. The claim is released when the consumer is
//! **dropped**, not when its reader is closed: after `close()` its slices may
//! still be alive.
//!
//! Another process (or a consumer that maps the ring without this crate)
//! cannot be stopped this way; that precondition is documented, not checked.

use std::sync::Mutex;

use crate::error::{Error, Result};

/// What a claim is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// A kernel map, by its id. Ids are not reused while the map exists, and
    /// a claimed map exists: its consumer holds a descriptor of it.
    Map(u32),
    /// A `testing::FakeRing`, by a number unique to it in this process.
    #[cfg(feature = "testing")]
    Fake(u64),
    /// The producer of a user ring buffer map, by its id.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Producer(u32),
    /// The producer of a `testing::FakeUserRing`, by a number unique to it.
    #[cfg(feature = "testing")]
    FakeProducer(u64),
}

impl Key {
    fn error(self) -> Error {
        match self {
            Key::Map(id) => Error::ConsumerExists { map_id: Some(id) },
            #[cfg(feature = "testing")]
            Key::Fake(_) => Error::ConsumerExists { map_id: None },
            Key::Producer(id) => Error::ProducerExists { map_id: Some(id) },
            #[cfg(feature = "testing")]
            Key::FakeProducer(_) => Error::ProducerExists { map_id: None },
        }
    }
}

/// The keys claimed now. A handful at most in practice: a linear scan.
static LIVE: Mutex<Vec<Key>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<Key>> {
    // A panic while the lock is held cannot leave the list inconsistent
    // (every change is one push or one swap_remove).
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The right to consume one map, until dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    key: Key,
}

impl Claim {
    /// Claims `key`, or [`Error::ConsumerExists`] if it is claimed.
    pub(crate) fn take(key: Key) -> Result<Claim> {
        let mut live = live();
        if live.contains(&key) {
            return Err(key.error());
        }
        live.push(key);
        Ok(Claim { key })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut live = live();
        if let Some(i) = live.iter().position(|k| *k == self.key) {
            live.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_key_until_dropped() {
        // Ids no kernel map of this test process has.
        let a = Claim::take(Key::Map(u32::MAX)).unwrap();
        assert!(matches!(
            Claim::take(Key::Map(u32::MAX)),
            Err(Error::ConsumerExists {
                map_id: Some(u32::MAX)
            })
        ));
        let b = Claim::take(Key::Map(u32::MAX - 1)).unwrap();
        drop(a);
        let a2 = Claim::take(Key::Map(u32::MAX)).unwrap();
        drop((a2, b));
    }
}
