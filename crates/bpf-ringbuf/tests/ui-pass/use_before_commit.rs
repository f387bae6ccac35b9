// The control case: the same reads, with every use before commit(), compile.
fn main() -> bpf_ringbuf::Result<()> {
    let ring = bpf_ringbuf::RingBuf::create(1 << 16)?;
    let mut reader = bpf_ringbuf::Reader::new(&ring)?;
    reader.set_deadline(Some(std::time::Instant::now()));
    if let Ok(rec) = reader.read_zero_copy() {
        let again = reader.read_zero_copy();
        println!("{} {:?}", rec.len(), again.map(|r| r.len()));
    }
    reader.commit();
    Ok(())
}
