fn main() -> bpf_ringbuf::Result<()> {
    use bpf_ringbuf::testing::*;
    let ring = bpf_ringbuf::RingBuf::create(1 << 16)?;
    let p = KernelProducer::new(
        &ring,
        ProducerConfig {
            size: RecordSize::Mixed(vec![8, 13, 64, 1000]),
            discard_every: Some(3),
            wakeup: Wakeup::Default,
        },
    )?;
    println!("insns {}", p.instructions());
    let r = p.produce(100)?;
    println!("{r:?}");
    let mut reader = bpf_ringbuf::Reader::new(&ring)?;
    reader.set_deadline(Some(std::time::Instant::now()));
    loop {
        match reader.read_zero_copy() {
            Ok(rec) => println!("{} {:?}", rec.len(), check_payload(rec)),
            Err(e) => {
                println!("{e}");
                break;
            }
        }
    }
    Ok(())
}
