//! From the PVH entry state to long mode (`boot.md`, clause BOOT-2).
//!
//! Every vCPU enters at `pvh_start`. The first to arrive is the boot vCPU
//! (vCPU 0), whose EBX holds the `hvm_start_info` address. The page tables,
//! which map the first 4 GiB 1:1 with 2 MiB pages, are data in the image:
//! building them at run time would cost thousands of instructions, each
//! emulated on nested KVM. Every vCPU enables PAE, long mode and paging,
//! loads the 64-bit GDT and
//! jumps to `rt_main64(vcpu, arg)` on its own stack; a secondary vCPU's index
//! comes in ESI and its argument in EBX (clause BOOT-8).
//!
//! The very first instruction writes port 0x80 (the POST port, which QEMU
//! and pvkit ignore): `pvkit run --boot-trace` reports the moment it arrives,
//! for `pvkit bench`'s time to the guest's first instruction.

/// vCPUs the runtime has stacks for.
pub(crate) const MAX_CPUS: u64 = 8;
/// Bytes of stack per vCPU. There is no guard page, so an overflow would
/// corrupt memory silently: `blk`'s deepest frame is about 11 KiB, and this
/// leaves room for several times that.
pub(crate) const STACK_SIZE: u64 = 64 * 1024;

core::arch::global_asm!(
    r#"
    .section .note.pvh, "a"
    .p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .p2align 2
    .long pvh_start

    .section .data.boot, "aw"
    .p2align 12
boot_pml4:
    .quad boot_pdpt + 3
    .fill 511, 8, 0
boot_pdpt:
    .quad boot_pd + 3
    .quad boot_pd + 0x1000 + 3
    .quad boot_pd + 0x2000 + 3
    .quad boot_pd + 0x3000 + 3
    .fill 508, 8, 0
boot_pd:
    .set boot_page, 0
    .rept 2048
    .quad (boot_page << 21) | 0x83
    .set boot_page, boot_page + 1
    .endr

    .section .bss.boot, "aw", @nobits
    .p2align 12
    .global boot_stacks
boot_stacks: .skip {stack} * {cpus}
boot_claimed: .skip 4

    .section .rodata.boot, "a"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    out 0x80, al
    cli
    cld
    mov eax, 1
    xchg dword ptr [boot_claimed], eax
    test eax, eax
    jnz 3f
    xor esi, esi

3:
    cmp esi, {cpus}
    jae 5f
    mov eax, esi
    inc eax
    imul eax, eax, {stack}
    lea esp, [eax + boot_stacks]
    mov eax, cr4
    or eax, 1 << 5
    mov cr4, eax
    lea eax, [boot_pml4]
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 1 << 8
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    lgdt [boot_gdt_ptr]
    push 0x08
    lea eax, [4f]
    push eax
    retf

    .code64
4:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov eax, esi
    inc eax
    imul eax, eax, {stack}
    lea rsp, [rip + boot_stacks]
    add rsp, rax
    xor ebp, ebp
    mov edi, esi
    mov esi, ebx
    call rt_main64
    .code32
5:
    cli
    hlt
    jmp 5b
    .code64
    "#,
    stack = const STACK_SIZE,
    cpus = const MAX_CPUS,
);

unsafe extern "C" {
    /// The PVH entry point, for starting secondary vCPUs.
    pub(crate) fn pvh_start();
}
