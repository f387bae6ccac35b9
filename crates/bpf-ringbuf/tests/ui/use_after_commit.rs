// A slice from read_zero_copy used after commit(): the kernel may already
// have overwritten it, so this must not compile.
fn main() -> bpf_ringbuf::Result<()> {
    let ring = bpf_ringbuf::RingBuf::create(1 << 16)?;
    let mut reader = bpf_ringbuf::Reader::new(&ring)?;
    let rec = reader.read_zero_copy()?;
    reader.commit();
    println!("{}", rec[0]);
    Ok(())
}
