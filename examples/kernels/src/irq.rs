//! Device and timer interrupts: vectors 32 to 255, the local APIC, waiting.
//!
//! Each vector's stub pushes its number and jumps to a common entry that
//! saves the caller-saved registers and calls the handler set with
//! [`set_handler`], then signals end-of-interrupt to the local APIC.

use core::sync::atomic::{AtomicUsize, Ordering};

use x86_64::VirtAddr;

/// The first vector that is not a CPU exception.
pub const FIRST: u8 = 32;
/// The xAPIC's registers (1:1-mapped).
const LAPIC: usize = 0xfee0_0000;
const LAPIC_EOI: usize = 0xb0;
const LAPIC_SVR: usize = 0xf0;
/// Spurious-interrupt vector register: APIC software-enabled, spurious vector 0xff.
const SVR_ENABLE: u32 = 0x1ff;
/// Bytes per stub.
const STUB: u64 = 16;

core::arch::global_asm!(
    ".section .text",
    ".p2align 4",
    "irq_stubs:",
    ".set irq_vector, 32",
    ".rept 224",
    ".p2align 4",
    "push irq_vector",
    "jmp irq_common",
    ".set irq_vector, irq_vector + 1",
    ".endr",
    "irq_common:",
    "push rax",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "mov rdi, [rsp + 72]",
    "sub rsp, 8",
    "call rt_interrupt",
    "add rsp, 8",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "add rsp, 8",
    "iretq",
);

unsafe extern "C" {
    static irq_stubs: u8;
}

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Runs `handler` for interrupts on `vector` (32 to 255).
pub fn set_handler(vector: u8, handler: fn(u8)) {
    assert!(vector >= FIRST, "vectors below 32 are exceptions");
    HANDLERS[usize::from(vector)].store(handler as usize, Ordering::Release);
    let base = core::ptr::addr_of!(irq_stubs) as u64;
    let addr = VirtAddr::new(base + u64::from(vector - FIRST) * STUB);
    crate::exceptions::with_idt(|idt| {
        // SAFETY: the stub is an interrupt entry ending in IRETQ.
        unsafe { idt[vector].set_handler_addr(addr) };
    });
}

#[unsafe(no_mangle)]
extern "C" fn rt_interrupt(vector: u64) {
    let vector = u8::try_from(vector).unwrap_or(0);
    let raw = HANDLERS[usize::from(vector)].load(Ordering::Acquire);
    if raw != 0 {
        // SAFETY: only `fn(u8)` pointers are stored (`set_handler`).
        let handler: fn(u8) = unsafe { core::mem::transmute::<usize, fn(u8)>(raw) };
        handler(vector);
    }
    lapic_write(LAPIC_EOI, 0);
}

/// Sends a fixed interrupt with `vector` to the vCPU whose APIC ID is
/// `apic_id` (the vCPU's index, on pvkit): to wake one that waits.
pub fn send_ipi(apic_id: u32, vector: u8) {
    const ICR_LOW: usize = 0x300;
    const ICR_HIGH: usize = 0x310;
    lapic_write(ICR_HIGH, apic_id << 24);
    lapic_write(ICR_LOW, u32::from(vector));
}

fn lapic_write(register: usize, value: u32) {
    // SAFETY: the local APIC's page is mapped 1:1 (device memory under KVM,
    // which traps the access); its registers take aligned 32-bit writes.
    unsafe { ((LAPIC + register) as *mut u32).write_volatile(value) };
}

/// Software-enables this vCPU's local APIC (it starts disabled), and masks
/// the legacy 8259 PICs: KVM's boot vCPU takes their output through LINT0,
/// and with no vector base programmed a device line on IRQ n would arrive
/// as vector n, an exception's. Devices reach these kernels by MSI or not at all.
pub(crate) fn enable_lapic() {
    lapic_write(LAPIC_SVR, SVR_ENABLE);
    for port in [0x21u16, 0xa1] {
        // SAFETY: writing the PICs' interrupt mask registers masks every
        // line and has no other effect.
        unsafe { x86_64::instructions::port::Port::<u8>::new(port).write(0xff) };
    }
}

/// Waits for the next interrupt, with interrupts enabled only while waiting.
pub fn wait() {
    x86_64::instructions::interrupts::enable_and_hlt();
    x86_64::instructions::interrupts::disable();
}

/// Waits for an interrupt, or until PV-clock time reaches `deadline` when no
/// interrupt comes (polling the clock, for callers without a timer armed).
pub fn wait_until(deadline: u64) {
    if crate::time::now().is_ok_and(|t| t >= deadline) {
        return;
    }
    wait();
}

/// Lets any interrupt already pending be taken, then disables interrupts again.
pub fn take_pending() {
    x86_64::instructions::interrupts::enable();
    core::hint::spin_loop();
    core::hint::spin_loop();
    x86_64::instructions::interrupts::disable();
}
