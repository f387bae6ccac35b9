//! A tiny BPF assembler: just the instructions the test producer needs,
//! with forward labels. No clang, no object files.

use crate::error::{Error, Result};

/// A BPF register.
pub(crate) type Reg = u8;

pub(crate) const R0: Reg = 0;
pub(crate) const R1: Reg = 1;
pub(crate) const R2: Reg = 2;
pub(crate) const R3: Reg = 3;
pub(crate) const R4: Reg = 4;
pub(crate) const R5: Reg = 5;
pub(crate) const R6: Reg = 6;
pub(crate) const R7: Reg = 7;
pub(crate) const R8: Reg = 8;
pub(crate) const R9: Reg = 9;
pub(crate) const R10: Reg = 10;

// Opcodes (class | size/op | source).
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_ADD_K: u8 = 0x07;
const ALU64_XOR_X: u8 = 0xaf;
const ALU64_OR_X: u8 = 0x4f;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_LSH_K: u8 = 0x67;
const ALU64_MOD_K: u8 = 0x97;
const ALU64_ADD_X: u8 = 0x0f;
const ALU64_ARSH_K: u8 = 0xc7;
const JMP_JGT_K: u8 = 0x25;
const JMP_JEQ_K: u8 = 0x15;
const JMP_JNE_K: u8 = 0x55;
const JMP_JLT_X: u8 = 0xad;
const JMP_CALL: u8 = 0x85;
const JMP_EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;
const LDX_W: u8 = 0x61;
const LDX_DW: u8 = 0x79;
const ST_W: u8 = 0x62;
const STX_W: u8 = 0x63;
const STX_B: u8 = 0x73;
const STX_DW: u8 = 0x7b;
const ATOMIC_DW: u8 = 0xdb;
const BPF_ADD: i32 = 0x00;
const BPF_FETCH: i32 = 0x01;
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `ld_imm64` source: the address of a subprogram (`imm` = its instruction
/// offset, relative to the instruction after the `ld_imm64`'s first half).
const BPF_PSEUDO_FUNC: u8 = 4;

/// Helper function ids.
pub(crate) const FN_MAP_LOOKUP_ELEM: i32 = 1;
pub(crate) const FN_KTIME_GET_NS: i32 = 5;
pub(crate) const FN_RINGBUF_RESERVE: i32 = 131;
pub(crate) const FN_RINGBUF_SUBMIT: i32 = 132;
pub(crate) const FN_RINGBUF_DISCARD: i32 = 133;
pub(crate) const FN_RINGBUF_QUERY: i32 = 134;
pub(crate) const FN_RINGBUF_OUTPUT: i32 = 130;
pub(crate) const FN_DYNPTR_READ: i32 = 201;
pub(crate) const FN_USER_RINGBUF_DRAIN: i32 = 209;

/// `BPF_RB_AVAIL_DATA`: the `bpf_ringbuf_query` flag for the unconsumed bytes
/// (`producer_pos - consumer_pos`).
pub(crate) const BPF_RB_AVAIL_DATA: i32 = 0;

/// The most instructions the kernel loads in one program with `CAP_BPF`
/// (`BPF_COMPLEXITY_LIMIT_INSNS`; without it, `BPF_MAXINSNS` is 4096, but
/// the producer needs `CAP_BPF` anyway).
pub(crate) const MAX_INSNS: usize = 1_000_000;

/// A jump target, resolved by [`Asm::finish`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Label(usize);

#[derive(Debug, Default)]
pub(crate) struct Asm {
    insns: Vec<u64>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
    /// `ld_imm64` of a subprogram's address, resolved in `imm`.
    func_fixups: Vec<(usize, Label)>,
}

fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> u64 {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (dst & 0xf) | (src << 4);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    u64::from_le_bytes(b)
}

impl Asm {
    fn push(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> &mut Self {
        self.insns.push(insn(code, dst, src, off, imm));
        self
    }

    pub(crate) fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    pub(crate) fn bind(&mut self, l: Label) -> &mut Self {
        self.labels[l.0] = Some(self.insns.len());
        self
    }

    fn jump(&mut self, code: u8, dst: Reg, src: Reg, imm: i32, to: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), to));
        self.push(code, dst, src, 0, imm)
    }

    pub(crate) fn mov_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(ALU64_MOV_K, dst, 0, 0, imm)
    }
    pub(crate) fn mov(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(ALU64_MOV_X, dst, src, 0, 0)
    }
    pub(crate) fn add_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(ALU64_ADD_K, dst, 0, 0, imm)
    }
    pub(crate) fn xor(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(ALU64_XOR_X, dst, src, 0, 0)
    }
    pub(crate) fn or(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(ALU64_OR_X, dst, src, 0, 0)
    }
    pub(crate) fn rsh_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(ALU64_RSH_K, dst, 0, 0, imm)
    }
    pub(crate) fn lsh_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(ALU64_LSH_K, dst, 0, 0, imm)
    }
    pub(crate) fn mod_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(ALU64_MOD_K, dst, 0, 0, imm)
    }
    /// `dst = imm64` (two instruction slots).
    pub(crate) fn ld_imm64(&mut self, dst: Reg, imm: u64) -> &mut Self {
        self.push(LD_IMM64, dst, 0, 0, imm as u32 as i32);
        self.push(0, 0, 0, 0, (imm >> 32) as u32 as i32)
    }
    /// `dst = map` (the map fd, resolved by the kernel at load).
    pub(crate) fn ld_map_fd(&mut self, dst: Reg, fd: i32) -> &mut Self {
        self.push(LD_IMM64, dst, BPF_PSEUDO_MAP_FD, 0, fd);
        self.push(0, 0, 0, 0, 0)
    }
    /// `dst = &subprogram` (`BPF_PSEUDO_FUNC`, two instruction slots): a
    /// callback for helpers such as `bpf_user_ringbuf_drain`. The label
    /// marks the subprogram's first instruction; the program then needs BTF
    /// `func_info` for every subprogram ([`btf_funcs`]).
    pub(crate) fn ld_func(&mut self, dst: Reg, func: Label) -> &mut Self {
        self.func_fixups.push((self.insns.len(), func));
        self.push(LD_IMM64, dst, BPF_PSEUDO_FUNC, 0, 0);
        self.push(0, 0, 0, 0, 0)
    }
    /// The instruction index a bound label stands for.
    pub(crate) fn position(&self, l: Label) -> Option<usize> {
        self.labels[l.0]
    }
    pub(crate) fn add(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(ALU64_ADD_X, dst, src, 0, 0)
    }
    /// `dst s>>= imm` (arithmetic).
    pub(crate) fn arsh_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(ALU64_ARSH_K, dst, 0, 0, imm)
    }
    /// `if dst > imm goto to` (unsigned).
    pub(crate) fn jgt_imm(&mut self, dst: Reg, imm: i32, to: Label) -> &mut Self {
        self.jump(JMP_JGT_K, dst, 0, imm, to)
    }
    pub(crate) fn jeq_imm(&mut self, dst: Reg, imm: i32, to: Label) -> &mut Self {
        self.jump(JMP_JEQ_K, dst, 0, imm, to)
    }
    pub(crate) fn ldx_w(&mut self, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(LDX_W, dst, src, off, 0)
    }
    pub(crate) fn ldx_dw(&mut self, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(LDX_DW, dst, src, off, 0)
    }
    pub(crate) fn st_w(&mut self, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(ST_W, dst, 0, off, imm)
    }
    pub(crate) fn stx_w(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(STX_W, dst, src, off, 0)
    }
    pub(crate) fn stx_b(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(STX_B, dst, src, off, 0)
    }
    pub(crate) fn stx_dw(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(STX_DW, dst, src, off, 0)
    }
    /// `lock *(u64 *)(dst + off) += src`.
    pub(crate) fn atomic_add(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(ATOMIC_DW, dst, src, off, BPF_ADD)
    }
    /// `src = atomic_fetch_add((u64 *)(dst + off), src)`.
    pub(crate) fn atomic_fetch_add(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(ATOMIC_DW, dst, src, off, BPF_ADD | BPF_FETCH)
    }
    pub(crate) fn jne_imm(&mut self, dst: Reg, imm: i32, to: Label) -> &mut Self {
        self.jump(JMP_JNE_K, dst, 0, imm, to)
    }
    /// `if dst < src goto to` (unsigned).
    pub(crate) fn jlt(&mut self, dst: Reg, src: Reg, to: Label) -> &mut Self {
        self.jump(JMP_JLT_X, dst, src, 0, to)
    }
    pub(crate) fn call(&mut self, helper: i32) -> &mut Self {
        self.push(JMP_CALL, 0, 0, 0, helper)
    }
    pub(crate) fn exit(&mut self) -> &mut Self {
        self.push(JMP_EXIT, 0, 0, 0, 0)
    }

    /// Resolves jumps and returns the program.
    ///
    /// Errors ([`Error::InvalidArgument`]): an unbound label, a jump whose
    /// offset does not fit the instruction's 16 bits, or more instructions
    /// than the kernel loads ([`MAX_INSNS`]). Each is a bug in the program
    /// generator, reported instead of a panic or a kernel refusal.
    pub(crate) fn finish(mut self) -> Result<Vec<u64>> {
        let bad = |reason: String| Error::InvalidArgument {
            what: "generated BPF program",
            reason,
        };
        if self.insns.len() > MAX_INSNS {
            return Err(bad(format!(
                "{} instructions, more than the kernel's limit of {MAX_INSNS}",
                self.insns.len()
            )));
        }
        for (at, label) in std::mem::take(&mut self.fixups) {
            let target = self.labels[label.0]
                .ok_or_else(|| bad(format!("jump at instruction {at} to an unbound label")))?;
            let off = target as i64 - at as i64 - 1;
            let off = i16::try_from(off).map_err(|_| {
                bad(format!(
                    "jump at instruction {at} to {target} is out of range: offset {off} \
                     does not fit in 16 bits"
                ))
            })?;
            let mut b = self.insns[at].to_le_bytes();
            b[2..4].copy_from_slice(&off.to_le_bytes());
            self.insns[at] = u64::from_le_bytes(b);
        }
        for (at, label) in std::mem::take(&mut self.func_fixups) {
            let target = self.labels[label.0]
                .ok_or_else(|| bad(format!("function address at {at} of an unbound label")))?;
            // The verifier finds the subprogram at `at + imm + 1`.
            let imm = target as i64 - at as i64 - 1;
            let mut b = self.insns[at].to_le_bytes();
            b[4..8].copy_from_slice(&(imm as i32).to_le_bytes());
            self.insns[at] = u64::from_le_bytes(b);
        }
        Ok(self.insns)
    }
}

/// A minimal BTF blob (`BPF_BTF_LOAD`) describing a program's functions,
/// for the verifier's `func_info`: type 1 `int`, type 2 `void *`, then per
/// function a `FUNC_PROTO` (returning `int`, `params` arguments of type
/// `void *`) and a `FUNC` (ids `3 + 2i` and `4 + 2i`). The first function
/// is the program (global linkage), the others static subprograms (what
/// the verifier requires of a callback). Returns the blob and each `FUNC`'s
/// type id.
pub(crate) fn btf_funcs(funcs: &[(&str, u32)]) -> (Vec<u8>, Vec<u32>) {
    const KIND_INT: u32 = 1;
    const KIND_PTR: u32 = 2;
    const KIND_FUNC: u32 = 12;
    const KIND_FUNC_PROTO: u32 = 13;
    const LINKAGE_GLOBAL: u32 = 1;
    let mut strings = vec![0u8];
    let mut name = |s: &str| {
        let off = strings.len() as u32;
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        off
    };
    let mut types: Vec<u32> = Vec::new();
    // 1: int (signed, 32 bits).
    types.extend([name("int"), KIND_INT << 24, 4, (1 << 24) | 32]);
    // 2: void *.
    types.extend([0, KIND_PTR << 24, 0]);
    let mut ids = Vec::new();
    for (i, &(func, params)) in funcs.iter().enumerate() {
        let proto = 3 + 2 * i as u32;
        types.extend([0, (KIND_FUNC_PROTO << 24) | params, 1]);
        for p in 0..params {
            types.extend([name(&format!("arg{p}")), 2]);
        }
        let linkage = if i == 0 { LINKAGE_GLOBAL } else { 0 };
        types.extend([name(func), (KIND_FUNC << 24) | linkage, proto]);
        ids.push(proto + 1);
    }
    let type_len = 4 * types.len() as u32;
    let mut blob = Vec::new();
    blob.extend_from_slice(&0xeb9fu16.to_ne_bytes());
    blob.extend_from_slice(&[1, 0]); // version 1, flags 0
    for w in [24, 0, type_len, type_len, strings.len() as u32] {
        // hdr_len, type_off, type_len, str_off, str_len
        blob.extend_from_slice(&w.to_ne_bytes());
    }
    for w in types {
        blob.extend_from_slice(&w.to_ne_bytes());
    }
    blob.extend_from_slice(&strings);
    (blob, ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kernel() {
        // r1 = 0x1234 : b7 01 00 00 34 12 00 00
        assert_eq!(
            insn(ALU64_MOV_K, R1, 0, 0, 0x1234).to_le_bytes(),
            [0xb7, 0x01, 0, 0, 0x34, 0x12, 0, 0]
        );
        // *(u64 *)(r10 - 8) = r1 : 7b 1a f8 ff 00 00 00 00
        assert_eq!(
            insn(STX_DW, R10, R1, -8, 0).to_le_bytes(),
            [0x7b, 0x1a, 0xf8, 0xff, 0, 0, 0, 0]
        );
    }

    #[test]
    fn function_addresses_are_relative_to_the_next_instruction() {
        // r2 = &f (ld_imm64, src 4) at 0-1, exit at 2, f at 3: imm = 3 - 0 - 1.
        let mut a = Asm::default();
        let f = a.label();
        a.ld_func(R2, f).exit().bind(f).mov_imm(R0, 0).exit();
        let p = a.finish().unwrap();
        let b = p[0].to_le_bytes();
        assert_eq!((b[0], b[1]), (LD_IMM64, 0x42));
        assert_eq!(i32::from_le_bytes(b[4..8].try_into().unwrap()), 2);
        assert_eq!(p[1], 0);
    }

    #[test]
    fn btf_blob_layout() {
        let (blob, ids) = btf_funcs(&[("main", 1), ("cb", 2)]);
        let word = |i: usize| u32::from_ne_bytes(blob[i..i + 4].try_into().unwrap());
        assert_eq!(u16::from_ne_bytes([blob[0], blob[1]]), 0xeb9f);
        assert_eq!((blob[2], blob[3]), (1, 0));
        let (hdr, type_off, type_len, str_off, str_len) =
            (word(4), word(8), word(12), word(16), word(20));
        assert_eq!((hdr, type_off, str_off), (24, 0, type_len));
        assert_eq!(blob.len(), (24 + type_len + str_len) as usize);
        // int (4 words), void * (3), then per function a FUNC_PROTO (3 + 2
        // per parameter) and a FUNC (3).
        assert_eq!(type_len, 4 * (4 + 3 + (3 + 2 + 3) + (3 + 4 + 3)));
        assert_eq!(ids, [4, 6]);
        // The strings end with the names, NUL-terminated.
        assert!(blob.ends_with(b"cb\0"));
    }

    #[test]
    fn labels_resolve() {
        let mut a = Asm::default();
        let l = a.label();
        a.jne_imm(R0, 0, l).mov_imm(R0, 1).bind(l).exit();
        let p = a.finish().unwrap();
        assert_eq!(p[0].to_le_bytes()[2], 1, "skips one instruction");
    }

    #[test]
    fn register_jumps_encode_both_registers() {
        // if r0 < r2 goto +1 : ad 20 01 00 00 00 00 00
        let mut a = Asm::default();
        let l = a.label();
        a.jlt(R0, R2, l).mov_imm(R0, 1).bind(l).exit();
        assert_eq!(
            a.finish().unwrap()[0].to_le_bytes(),
            [0xad, 0x20, 1, 0, 0, 0, 0, 0]
        );
        // r1 = *(u64 *)(r7 + 8) : 79 71 08 00 00 00 00 00
        assert_eq!(
            insn(LDX_DW, R1, R7, 8, 0).to_le_bytes(),
            [0x79, 0x71, 8, 0, 0, 0, 0, 0]
        );
    }

    /// A program whose first instruction jumps over `n` others.
    fn jump_over(n: usize) -> Result<Vec<u64>> {
        let mut a = Asm::default();
        let l = a.label();
        a.jne_imm(R0, 0, l);
        for _ in 0..n {
            a.mov_imm(R0, 0);
        }
        a.bind(l).exit();
        a.finish()
    }

    #[test]
    fn jump_out_of_range_is_an_error() {
        // One instruction too far for the 16-bit offset.
        let e = jump_over(i16::MAX as usize + 1).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument { reason, .. } if reason.contains("out of range")),
            "{e}"
        );
        // The largest offset still resolves.
        let first = jump_over(i16::MAX as usize).unwrap()[0].to_le_bytes();
        assert_eq!(i16::from_le_bytes([first[2], first[3]]), i16::MAX);
    }

    #[test]
    fn unbound_label_and_oversized_program_are_errors() {
        let mut a = Asm::default();
        let l = a.label();
        a.jne_imm(R0, 0, l).exit();
        assert!(matches!(a.finish(), Err(Error::InvalidArgument { .. })));
        let mut a = Asm::default();
        for _ in 0..MAX_INSNS {
            a.mov_imm(R0, 0);
        }
        a.exit();
        assert!(matches!(a.finish(), Err(Error::InvalidArgument { .. })));
    }
}
