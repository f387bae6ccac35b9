//! `MapInfo` and `map_ids` against the real kernel: the maps this test
//! creates are found with their type, name, size and flags.

#[macro_use]
mod common;

use bpf_ringbuf::testing::create_map;
use bpf_ringbuf::{map_ids, Error, MapInfo, RingBuf};

#[test]
fn map_ids_finds_new_maps_with_their_info() {
    privileged!();
    let ring = RingBuf::create_named(1 << 16, "mi_ring").unwrap();
    let user = create_map(MapInfo::USER_RINGBUF, 0, 0, 1 << 14).unwrap();
    let array = create_map(2, 4, 8, 3).unwrap();
    let user_id = MapInfo::of(&user).unwrap().id;
    let array_id = MapInfo::of(&array).unwrap().id;

    let ids: Vec<u32> = map_ids().collect::<Result<_, _>>().unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "increasing: {ids:?}");
    for id in [ring.id(), user_id, array_id] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }

    let info = MapInfo::from_id(ring.id()).unwrap();
    assert_eq!(
        info,
        MapInfo::of(&ring).unwrap(),
        "by id and by descriptor agree"
    );
    assert_eq!(
        (info.map_type, info.type_name, info.name.as_str()),
        (MapInfo::RINGBUF, "RINGBUF", "mi_ring")
    );
    assert_eq!((info.max_entries, info.map_flags), (1 << 16, 0));
    assert!(info.is_ring_buffer());

    let info = MapInfo::from_id(user_id).unwrap();
    assert_eq!(
        (info.type_name, info.max_entries, info.is_ring_buffer()),
        ("USER_RINGBUF", 1 << 14, true)
    );
    let info = MapInfo::from_id(array_id).unwrap();
    assert_eq!(
        (
            info.type_name,
            info.key_size,
            info.value_size,
            info.max_entries
        ),
        ("ARRAY", 4, 8, 3)
    );
    assert!(!info.is_ring_buffer());
}

#[test]
fn a_freed_map_id_is_enoent() {
    privileged!();
    let id = RingBuf::create(1 << 12).unwrap().id(); // dropped: freed
                                                     // The kernel frees the map after an RCU grace period; it is gone once
                                                     // the id no longer opens, which happens without our doing anything.
    let err = loop {
        match MapInfo::from_id(id) {
            Ok(_) => std::thread::yield_now(),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, Error::Syscall { .. })
            && err.os_error().and_then(|e| e.raw_os_error()) == Some(libc::ENOENT),
        "{err:?}"
    );
}
