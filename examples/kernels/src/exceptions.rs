//! Every CPU exception is a panic that names the vector and where it hit.

use core::cell::UnsafeCell;

use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

macro_rules! stubs {
    ($($vector:literal $push:literal),* $(,)?) => {
        core::arch::global_asm!(
            ".section .text",
            $(
                concat!("exc_stub_", $vector, ":"),
                $push,
                concat!("push ", $vector),
                "jmp exc_common",
            )*
            ".section .rodata",
            ".p2align 3",
            "exc_stub_table:",
            $(concat!(".quad exc_stub_", $vector),)*
        );
    };
}

// Vectors 8, 10-14, 17, 21, 29 and 30 push an error code; the others get a 0.
stubs!(
    0 "push 0", 1 "push 0", 2 "push 0", 3 "push 0", 4 "push 0", 5 "push 0", 6 "push 0", 7 "push 0",
    8 "", 9 "push 0", 10 "", 11 "", 12 "", 13 "", 14 "", 15 "push 0",
    16 "push 0", 17 "", 18 "push 0", 19 "push 0", 20 "push 0", 21 "", 22 "push 0", 23 "push 0",
    24 "push 0", 25 "push 0", 26 "push 0", 27 "push 0", 28 "push 0", 29 "", 30 "", 31 "push 0",
);

core::arch::global_asm!(".section .text", "exc_common:", "mov rdi, rsp", "and rsp, -16", "call rt_exception", "ud2",);

unsafe extern "C" {
    static exc_stub_table: [u64; 32];
}

/// What the stubs leave on the stack.
#[repr(C)]
struct Frame {
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

#[unsafe(no_mangle)]
extern "C" fn rt_exception(frame: &Frame) -> ! {
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    panic!(
        "CPU exception {} (error code {:#x}) at rip={:#x} rsp={:#x} cr2={:#x}",
        frame.vector, frame.error, frame.rip, frame.rsp, cr2
    );
}

/// The IDT all vCPUs share, built at compile time (an empty table) and filled
/// in place: copying or building 4 KiB at run time would cost thousands of
/// emulated instructions on nested KVM.
struct Idt(UnsafeCell<InterruptDescriptorTable>);

// SAFETY: entries are written only under `IDT_LOCK`, before the vectors they
// describe are enabled; the CPU reads the table on its own.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new(InterruptDescriptorTable::new()));
static IDT_LOCK: spin::Mutex<bool> = spin::Mutex::new(false);

/// Runs `f` on the shared IDT, under its lock.
pub(crate) fn with_idt<R>(f: impl FnOnce(&mut InterruptDescriptorTable) -> R) -> R {
    let _guard = IDT_LOCK.lock();
    // SAFETY: the lock makes this the only mutable access; the CPU's reads
    // of an entry being rewritten are excluded by the callers, which change
    // only vectors that are not yet in use.
    f(unsafe { &mut *IDT.0.get() })
}

/// Loads the IDT on this vCPU, filling in the exception entries on the first call.
pub(crate) fn load() {
    {
        let mut filled = IDT_LOCK.lock();
        if !*filled {
            // SAFETY: as in `with_idt`; the lock is held.
            let idt = unsafe { &mut *IDT.0.get() };
            // SAFETY: the table is 32 addresses written by the assembly above.
            let stubs = unsafe { &*core::ptr::addr_of!(exc_stub_table) };
            for (vector, &addr) in stubs.iter().enumerate() {
                // SAFETY: each stub is an exception entry that never returns.
                unsafe { set_raw(idt, vector, VirtAddr::new(addr)) };
            }
            *filled = true;
        }
    }
    // SAFETY: the table is 'static; `load` only reads it after the fill.
    let idt = unsafe { &*IDT.0.get() };
    // SAFETY: the table lives for ever and its filled entries are valid.
    unsafe { idt.load_unsafe() };
}

/// Points IDT entry `vector` (below 32) at `addr`.
///
/// # Safety
///
/// `addr` must be a valid interrupt entry for that vector.
unsafe fn set_raw(idt: &mut InterruptDescriptorTable, vector: usize, addr: VirtAddr) {
    macro_rules! set {
        ($($v:literal => $field:ident),* $(,)?) => {
            match vector {
                // SAFETY: forwarded from the caller.
                $($v => unsafe { idt.$field.set_handler_addr(addr); },)*
                _ => {}
            }
        };
    }
    set!(
        0 => divide_error, 1 => debug, 2 => non_maskable_interrupt, 3 => breakpoint, 4 => overflow,
        5 => bound_range_exceeded, 6 => invalid_opcode, 7 => device_not_available, 8 => double_fault,
        10 => invalid_tss, 11 => segment_not_present, 12 => stack_segment_fault,
        13 => general_protection_fault, 14 => page_fault, 16 => x87_floating_point,
        17 => alignment_check, 18 => machine_check, 19 => simd_floating_point, 20 => virtualization,
        21 => cp_protection_exception, 28 => hv_injection_exception, 29 => vmm_communication_exception,
        30 => security_exception,
    );
}
