// A record from a Batch cannot outlive the batch, which commits on drop.
fn main() -> bpf_ringbuf::Result<()> {
    let ring = bpf_ringbuf::RingBuf::create(1 << 16)?;
    let mut reader = bpf_ringbuf::Reader::new(&ring)?;
    let batch = reader.batch()?;
    let first = batch.next_record().unwrap();
    drop(batch);
    println!("{}", first[0]);
    Ok(())
}
