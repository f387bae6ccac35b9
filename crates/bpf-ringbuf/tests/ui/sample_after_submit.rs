// A user ring sample written after submit(): the kernel may already have
// consumed it (and the space been reserved again), so this must not compile.
fn main() -> bpf_ringbuf::Result<()> {
    let ring = bpf_ringbuf::UserRingBuf::create(1 << 16)?;
    let mut sample = ring.reserve(8)?;
    sample[0] = 1;
    sample.submit();
    sample[1] = 2;
    Ok(())
}
