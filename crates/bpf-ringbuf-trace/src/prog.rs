//! The execsnoop program, assembled by hand. In C it would read:
//!
//! ```c
//! SEC("raw_tp/sched_process_exec")
//! int execsnoop(void *ctx)
//! {
//!     struct task_struct *task = (void *)bpf_get_current_task();
//!     struct exec_event *e = bpf_ringbuf_reserve(&events, 32, 0);
//!     if (!e) {
//!         count_lost(); /* the library's LostCounter convention */
//!         return 0;
//!     }
//!     e->pid = bpf_get_current_pid_tgid() >> 32;
//!     e->uid = bpf_get_current_uid_gid();
//!     e->reserved = 0;
//!     struct task_struct *parent = NULL;
//!     bpf_probe_read_kernel(&parent, 8, &task->real_parent);
//!     bpf_probe_read_kernel(&e->ppid, 4, &parent->tgid); /* zeroes it on failure */
//!     bpf_get_current_comm(e->comm, 16);
//!     bpf_ringbuf_submit(e, 0);
//!     return 0;
//! }
//!
//! static void count_lost(void)
//! {
//!     __u32 zero = 0;
//!     struct ringbuf_lost *l = bpf_map_lookup_elem(&exec_event_lost, &zero);
//!     if (!l)
//!         return;
//!     __u64 now = bpf_ktime_get_ns();
//!     __sync_fetch_and_add(&l->count, 1);
//!     if (!l->first_ns)
//!         l->first_ns = now;
//!     l->last_ns = now;
//! }
//! ```

/// One instruction: `{u8 code; u8 dst:4, src:4; i16 off; i32 imm}`.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = dst | (src << 4);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    u64::from_le_bytes(b)
}

// Opcodes used below.
const MOV_K: u8 = 0xb7; // dst = imm
const MOV_X: u8 = 0xbf; // dst = src
const ADD_K: u8 = 0x07; // dst += imm
const RSH_K: u8 = 0x77; // dst >>= imm
const JEQ_K: u8 = 0x15; // if dst == imm goto +off
const JNE_K: u8 = 0x55; // if dst != imm goto +off
const ATOMIC_DW: u8 = 0xdb; // lock *(u64 *)(dst + off) op= src (imm: the op, 0 = add)
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;
const LDX_DW: u8 = 0x79; // dst = *(u64 *)(src + off)
const STX_W: u8 = 0x63; // *(u32 *)(dst + off) = src
const STX_DW: u8 = 0x7b; // *(u64 *)(dst + off) = src
const ST_W: u8 = 0x62; // *(u32 *)(dst + off) = imm
const PSEUDO_MAP_FD: u8 = 1;

// Helpers.
const MAP_LOOKUP_ELEM: i32 = 1;
const KTIME_GET_NS: i32 = 5;
const GET_CURRENT_TASK: i32 = 35;
const RINGBUF_RESERVE: i32 = 131;
const RINGBUF_SUBMIT: i32 = 132;
const GET_CURRENT_PID_TGID: i32 = 14;
const GET_CURRENT_UID_GID: i32 = 15;
const GET_CURRENT_COMM: i32 = 16;
const PROBE_READ_KERNEL: i32 = 113;

/// The program over the ring `map_fd`, counting failed reservations in the
/// per-CPU `struct ringbuf_lost` map `lost_fd`, for a kernel whose
/// `task_struct` has `real_parent` and `tgid` at these byte offsets.
pub(crate) fn exec_program(map_fd: i32, lost_fd: i32, real_parent: u32, tgid: u32) -> Vec<u64> {
    let (r0, r1, r2, r3, r6, r7, r10) = (0, 1, 2, 3, 6, 7, 10);
    let mut p = vec![
        insn(CALL, 0, 0, 0, GET_CURRENT_TASK),
        insn(MOV_X, r6, r0, 0, 0),
        insn(LD_IMM64, r1, PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV_K, r2, 0, 0, crate::ExecEvent::SIZE as i32),
        insn(MOV_K, r3, 0, 0, 0),
        insn(CALL, 0, 0, 0, RINGBUF_RESERVE),
    ];
    let skip_at = p.len();
    p.push(0); // if r0 == 0 goto lost (patched below)
    p.extend([
        insn(MOV_X, r7, r0, 0, 0),
        insn(CALL, 0, 0, 0, GET_CURRENT_PID_TGID),
        insn(RSH_K, r0, 0, 0, 32),
        insn(STX_W, r7, r0, 0, 0),
        insn(CALL, 0, 0, 0, GET_CURRENT_UID_GID),
        insn(STX_W, r7, r0, 8, 0),
        insn(ST_W, r7, 0, 12, 0),
        // parent = NULL on the stack; probe_read_kernel(&parent, 8, task + real_parent)
        insn(MOV_K, r1, 0, 0, 0),
        insn(STX_DW, r10, r1, -8, 0),
        insn(MOV_X, r1, r10, 0, 0),
        insn(ADD_K, r1, 0, 0, -8),
        insn(MOV_K, r2, 0, 0, 8),
        insn(MOV_X, r3, r6, 0, 0),
        insn(ADD_K, r3, 0, 0, real_parent as i32),
        insn(CALL, 0, 0, 0, PROBE_READ_KERNEL),
        // probe_read_kernel(&e->ppid, 4, parent + tgid)
        insn(LDX_DW, r3, r10, -8, 0),
        insn(ADD_K, r3, 0, 0, tgid as i32),
        insn(MOV_X, r1, r7, 0, 0),
        insn(ADD_K, r1, 0, 0, 4),
        insn(MOV_K, r2, 0, 0, 4),
        insn(CALL, 0, 0, 0, PROBE_READ_KERNEL),
        // get_current_comm(e->comm, 16)
        insn(MOV_X, r1, r7, 0, 0),
        insn(ADD_K, r1, 0, 0, 16),
        insn(MOV_K, r2, 0, 0, 16),
        insn(CALL, 0, 0, 0, GET_CURRENT_COMM),
        // ringbuf_submit(e, 0)
        insn(MOV_X, r1, r7, 0, 0),
        insn(MOV_K, r2, 0, 0, 0),
        insn(CALL, 0, 0, 0, RINGBUF_SUBMIT),
    ]);
    p.extend([insn(MOV_K, r0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)]);
    let lost = p.len();
    p[skip_at] = insn(JEQ_K, r0, 0, (lost - skip_at - 1) as i16, 0);
    p.extend([
        // l = map_lookup_elem(&lost_map, &(u32){0})
        insn(ST_W, r10, 0, -4, 0),
        insn(LD_IMM64, r1, PSEUDO_MAP_FD, 0, lost_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV_X, r2, r10, 0, 0),
        insn(ADD_K, r2, 0, 0, -4),
        insn(CALL, 0, 0, 0, MAP_LOOKUP_ELEM),
        insn(JEQ_K, r0, 0, 8, 0), // if !l goto out
        insn(MOV_X, r6, r0, 0, 0),
        insn(MOV_K, r1, 0, 0, 1),
        insn(ATOMIC_DW, r6, r1, 0, 0), // count += 1
        insn(CALL, 0, 0, 0, KTIME_GET_NS),
        insn(LDX_DW, r1, r6, 8, 0),
        insn(JNE_K, r1, 0, 1, 0),    // if first_ns, skip
        insn(STX_DW, r6, r0, 8, 0),  // first_ns = now
        insn(STX_DW, r6, r0, 16, 0), // last_ns = now
        // out:
        insn(MOV_K, r0, 0, 0, 0),
        insn(EXIT, 0, 0, 0, 0),
    ]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_and_jump() {
        // r1 = 5: b7 01 0000 05000000
        assert_eq!(
            insn(MOV_K, 1, 0, 0, 5).to_le_bytes(),
            [0xb7, 1, 0, 0, 5, 0, 0, 0]
        );
        let p = exec_program(7, 8, 100, 200);
        assert_eq!(p[2].to_le_bytes(), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        // Both null checks jump forward into the program: the failed
        // reservation to the lookup of the lost counter (key 0 stored on the
        // stack, then the counter map), the failed lookup to `r0 = 0; exit`.
        let target = |at: usize| {
            let off = i16::from_le_bytes(p[at].to_le_bytes()[2..4].try_into().unwrap());
            at + 1 + off as usize
        };
        let jeqs: Vec<usize> = (0..p.len())
            .filter(|&i| p[i].to_le_bytes()[0] == JEQ_K)
            .collect();
        assert_eq!(jeqs.len(), 2);
        assert_eq!(p[target(jeqs[0])], insn(ST_W, 10, 0, -4, 0));
        assert_eq!(
            p[target(jeqs[0]) + 1].to_le_bytes(),
            [0x18, 0x11, 0, 0, 8, 0, 0, 0]
        );
        assert_eq!(target(jeqs[1]), p.len() - 2);
        assert_eq!(p[p.len() - 2], insn(MOV_K, 0, 0, 0, 0));
        assert_eq!(p[p.len() - 1].to_le_bytes()[0], EXIT);
    }
}
