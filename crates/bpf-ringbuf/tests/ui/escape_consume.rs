// consume() lends each record to the callback for that call only; keeping it
// past the commit at the end of consume() must not compile.
fn main() -> bpf_ringbuf::Result<()> {
    let ring = bpf_ringbuf::RingBuf::create(1 << 16)?;
    let mut reader = bpf_ringbuf::Reader::new(&ring)?;
    let mut kept: Option<&[u8]> = None;
    reader.consume(|rec| {
        kept = Some(rec);
        std::ops::ControlFlow::Continue(())
    })?;
    println!("{:?}", kept);
    Ok(())
}
