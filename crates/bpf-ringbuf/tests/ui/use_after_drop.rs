// A slice from read_zero_copy used after the reader is dropped (and the ring
// unmapped): must not compile.
fn main() -> bpf_ringbuf::Result<()> {
    let ring = bpf_ringbuf::RingBuf::create(1 << 16)?;
    let reader = bpf_ringbuf::Reader::new(&ring)?;
    let rec = reader.read_zero_copy()?;
    drop(reader);
    println!("{}", rec[0]);
    Ok(())
}
