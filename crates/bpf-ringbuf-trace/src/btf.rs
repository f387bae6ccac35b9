//! Just enough of the BTF format (`include/uapi/linux/btf.h`) to find the
//! byte offset of a member of a kernel struct in `/sys/kernel/btf/vmlinux`,
//! so the program can read `task->real_parent->tgid` on this kernel's
//! layout (CO-RE by hand, without relocations).

use crate::TraceError;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

/// Where the kernel exposes its own BTF.
pub(crate) const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// A parsed BTF blob: the type section and the string section.
pub(crate) struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn bad(what: &str) -> TraceError {
    TraceError::Btf(format!("{VMLINUX}: {what}"))
}

impl<'a> Btf<'a> {
    /// Checks the header (little-endian BTF only, as on x86_64) and slices
    /// out the two sections.
    pub(crate) fn parse(blob: &'a [u8]) -> Result<Btf<'a>, TraceError> {
        let magic = blob.get(0..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
        if magic != Some(BTF_MAGIC) {
            return Err(bad("not little-endian BTF (bad magic)"));
        }
        let field = |at| u32_at(blob, at).ok_or_else(|| bad("truncated header"));
        let hdr_len = field(4)? as usize;
        let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
        let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off).ok_or_else(|| bad("bad offset"))?;
            blob.get(start..start.saturating_add(len))
                .ok_or_else(|| bad("section out of bounds"))
        };
        Ok(Btf {
            types: section(type_off, type_len)?,
            strings: section(str_off, str_len)?,
        })
    }

    fn name(&self, off: u32) -> &'a [u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// The byte offset of each of `members` in the struct named `strukt`
    /// (direct members only; none may be a bitfield).
    pub(crate) fn member_offsets(
        &self,
        strukt: &str,
        members: &[&str],
    ) -> Result<Vec<u32>, TraceError> {
        let mut at = 0;
        while at < self.types.len() {
            let word =
                |i: usize| u32_at(self.types, at + 4 * i).ok_or_else(|| bad("truncated type"));
            let (name_off, info) = (word(0)?, word(1)?);
            let (kind, vlen, kflag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
            let extra = match kind {
                1 | 14 | 17 => 4,          // INT, VAR, DECL_TAG: one u32
                3 => 12,                   // ARRAY
                4 | 5 => 12 * vlen,        // STRUCT, UNION: btf_member
                6 | 13 => 8 * vlen,        // ENUM, FUNC_PROTO
                15 | 19 => 12 * vlen,      // DATASEC, ENUM64
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG
                k => return Err(bad(&format!("unknown BTF kind {k}"))),
            };
            if kind == KIND_STRUCT && self.name(name_off) == strukt.as_bytes() {
                let mut out = Vec::new();
                for want in members {
                    let found = (0..vlen).find_map(|m| {
                        let base = at + 12 + 12 * m;
                        let name = u32_at(self.types, base)?;
                        let bits = u32_at(self.types, base + 8)?;
                        (self.name(name) == want.as_bytes()).then_some(bits)
                    });
                    let bits = found.ok_or_else(|| bad(&format!("no member {strukt}.{want}")))?;
                    // With kind_flag, the high 8 bits are a bitfield size.
                    let bits = if kflag == 1 { bits & 0x00ff_ffff } else { bits };
                    if bits % 8 != 0 {
                        return Err(bad(&format!("{strukt}.{want} is a bitfield")));
                    }
                    out.push(bits / 8);
                }
                return Ok(out);
            }
            at += 12 + extra;
        }
        Err(bad(&format!("no struct {strukt}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made blob: an INT, then `struct pair { int a; int b; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0pair\0a\0b\0";
        let mut types = Vec::new();
        for w in [1u32, 1 << 24, 4, 32] {
            types.extend(w.to_le_bytes()); // int: name, INT, size 4, encoding
        }
        for w in [5u32, (4 << 24) | 2, 8, 10, 1, 0, 12, 1, 32] {
            types.extend(w.to_le_bytes()); // pair: a at bit 0, b at bit 32
        }
        let mut b = Vec::new();
        b.extend(BTF_MAGIC.to_le_bytes());
        b.extend([1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend(w.to_le_bytes());
        }
        b.extend(types);
        b.extend(strings);
        b
    }

    #[test]
    fn finds_member_offsets() {
        let blob = blob();
        let btf = Btf::parse(&blob).unwrap();
        assert_eq!(btf.member_offsets("pair", &["b", "a"]).unwrap(), [4, 0]);
        assert!(btf.member_offsets("pair", &["c"]).is_err());
        assert!(btf.member_offsets("nope", &["a"]).is_err());
        assert!(Btf::parse(&blob[..10]).is_err());
        assert!(Btf::parse(b"not btf at all, no").is_err());
    }

    #[test]
    fn vmlinux_task_struct() {
        let Ok(blob) = std::fs::read(VMLINUX) else {
            eprintln!("SKIPPED: no {VMLINUX}");
            return;
        };
        let offs = Btf::parse(&blob)
            .unwrap()
            .member_offsets("task_struct", &["real_parent", "tgid"])
            .unwrap();
        assert!(offs[0] > offs[1] && offs[1] > 0, "{offs:?}");
    }
}
