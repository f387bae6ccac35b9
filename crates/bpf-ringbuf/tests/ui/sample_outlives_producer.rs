// A sample that outlives its producer would point into unmapped memory (and
// could be submitted to nobody), so this must not compile.
fn main() -> bpf_ringbuf::Result<()> {
    let sample = {
        let ring = bpf_ringbuf::UserRingBuf::create(1 << 16)?;
        ring.reserve(8)?
    };
    sample.submit();
    Ok(())
}
