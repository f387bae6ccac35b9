// Several samples of one producer outstanding at once, submitted in any
// order, and the producer moved to another thread (it is Send).
fn main() -> bpf_ringbuf::Result<()> {
    let ring = bpf_ringbuf::UserRingBuf::create(1 << 16)?;
    let mut a = ring.reserve(8)?;
    let mut b = ring.reserve(8)?;
    b.copy_from_slice(&[2; 8]);
    a.fill(1);
    b.submit();
    a.discard();
    std::thread::spawn(move || ring.reserve(1).map(|s| s.submit()))
        .join()
        .expect("no panic")?;
    Ok(())
}
