// Two threads reserving through one producer would reserve the same space:
// the kernel's protocol allows one reserver at a time, and UserRingBuf is
// not Sync, so this must not compile.
fn main() -> bpf_ringbuf::Result<()> {
    let ring = bpf_ringbuf::UserRingBuf::create(1 << 16)?;
    std::thread::scope(|s| {
        s.spawn(|| ring.reserve(8).map(|x| x.submit()));
        s.spawn(|| ring.reserve(8).map(|x| x.submit()));
    });
    Ok(())
}
