// The control case: the same reads, with every use before commit(), compile.
// (Type-checked only; `main` does not run it, so no privileges are needed.)
fn reads(reader: &mut bpf_ringbuf::Reader) -> bpf_ringbuf::Result<()> {
    let rec = reader.read_zero_copy()?;
    let again = reader.read_zero_copy()?;
    println!("{} {}", rec.len(), again.len());
    reader.commit();
    let copied = reader.read()?;
    println!("{}", copied.data.len());
    Ok(())
}

fn main() {
    let _ = reads;
}
