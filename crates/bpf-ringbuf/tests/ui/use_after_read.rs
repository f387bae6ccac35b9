// read() publishes outstanding zero-copy reads first, so a held slice cannot
// survive it.
fn main() -> bpf_ringbuf::Result<()> {
    let ring = bpf_ringbuf::RingBuf::create(1 << 16)?;
    let mut reader = bpf_ringbuf::Reader::new(&ring)?;
    let rec = reader.read_zero_copy()?;
    let copied = reader.read()?;
    println!("{} {}", rec[0], copied.data.len());
    Ok(())
}
