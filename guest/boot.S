/*
 * boot.S - the test guest's low-level kernel: the PVH note and 32-bit
 * entry, the switch to long mode, the static identity page tables and
 * GDT, the AP 64-bit entry, interrupt/exception stubs, the syscall entry
 * and the way into user mode.
 *
 * Kernel mode is emulated instruction by instruction on the CI machines
 * (~1 us each), so everything here is written to run as few instructions
 * as possible: the page tables are built by the assembler, interrupt
 * handlers are a couple of instructions, per-CPU data is reached through
 * IA32_GS_BASE (set once per CPU, never swapped, same in user mode).
 */
#include "guest.h"

/* ---- PVH entry note: XEN_ELFNOTE_PHYS32_ENTRY (18) ---- */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4			/* namesz */
	.long 4			/* descsz */
	.long 18		/* type */
	.asciz "Xen"
	.long pvh_start32	/* 32-bit physical entry */

/* ---- 32-bit PVH entry: %ebx = hvm_start_info, paging off ---- */
	.section .text.boot, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	mov %ebx, boot_start_info
	lgdt gdt_ptr
	mov $0x20, %eax			/* CR4.PAE */
	mov %eax, %cr4
	mov $pml4, %eax
	mov %eax, %cr3
	mov $MSR_EFER, %ecx
	rdmsr
	or $0x101, %eax			/* LME | SCE */
	wrmsr
	mov $0x80000011, %eax		/* PG | ET | PE */
	mov %eax, %cr0
	ljmp $SEL_KCODE, $start64

	.code64
start64:
	mov $SEL_KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	xor %eax, %eax
	mov %eax, %fs
	mov %eax, %gs
	mov $(kstacks + KSTACK_SIZE), %rsp
	call kernel_main		/* does not return */
	jmp halt_forever

/* APs arrive here from trampoline.S in 64-bit mode with our GDT/CR3. */
	.globl ap_entry64
ap_entry64:
	mov $SEL_KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	xor %eax, %eax
	mov %eax, %fs
	mov %eax, %gs
	mov ap_boot_stack, %rsp
	call ap_main			/* does not return */
	.globl halt_forever
halt_forever:
	cli
	hlt
	jmp halt_forever

/*
 * enter_user(entry, stack, arg): iretq to CPL3 at entry(arg) with
 * interrupts on. Never returns.
 */
	.globl enter_user
enter_user:
	pushq $SEL_UDATA
	pushq %rsi
	pushq $USER_RFLAGS
	pushq $SEL_UCODE
	pushq %rdi
	mov %rdx, %rdi
	iretq

/*
 * syscall entry (LSTAR). On a normal CPU this is CPL0: switch to this
 * CPU's kernel stack, call the handler from syscall_table and return with
 * iretq and IF=1 (sysretq does not work in emulated kernel mode).
 *
 * Under PVM (the CI machines' kvm_pvm) syscall from user mode jumps here
 * with rcx/r11 set and RFLAGS masked, but the CPU stays at CPL3: no kernel
 * privileges. We notice that from CS's RPL and enter the kernel through
 * the #BP trap gate instead (int3 from user mode works there), then jump
 * back to the caller. Either way the handler sees the same registers.
 * Caller-saved registers are clobbered, as the user-side wrappers declare.
 */
	.globl syscall_entry
syscall_entry:
	mov %cs, %r8d
	test $3, %r8b
	jnz pvm_syscall
	mov %rsp, %gs:PCPU_USER_RSP
	mov %gs:PCPU_KSTACK, %rsp
	push %rcx			/* user rip */
	push %r11			/* keeps the stack 16-byte aligned */
	cmp $NR_SYSCALLS, %rax
	jae 2f
	mov %r10, %rcx
	call *syscall_table(,%rax,8)
1:	pop %r11
	pop %rcx
	pushq $SEL_UDATA
	pushq %gs:PCPU_USER_RSP
	pushq $USER_RFLAGS
	pushq $SEL_UCODE
	pushq %rcx
	iretq
2:	mov $-1, %rax
	jmp 1b

pvm_syscall:				/* still CPL3 here */
	int3				/* -> int3_entry, returns with IF=1 */
pvm_syscall_ret:
	jmp *%rcx

/*
 * #BP: the PVM syscall path above, or a stray int3 (an exception). The
 * gate is DPL3 so user mode can use it; a handler preserves rcx and r11.
 */
	.globl int3_entry
int3_entry:
	cmpq $pvm_syscall_ret, (%rsp)
	jne 3f
	push %rcx
	push %r11
	sub $8, %rsp			/* 16-byte aligned call */
	cmp $NR_SYSCALLS, %rax
	jae 4f
	mov %r10, %rcx
	call *syscall_table(,%rax,8)
5:	add $8, %rsp
	pop %r11
	pop %rcx
	orq $0x200, 16(%rsp)		/* return with IF=1 */
	iretq
4:	mov $-1, %rax
	jmp 5b
3:	pushq $0
	pushq $3
	jmp trap_common

/* ---- interrupts: count in the per-CPU block, EOI, return ---- */
	.globl timer_isr, wake_isr, spurious_isr, ipi_stubs, exc_stubs
timer_isr:
	incq %gs:PCPU_TIMER
	jmp eoi_iret
wake_isr:
	incq %gs:PCPU_WAKE
eoi_iret:
	push %rax
	push %rcx
	push %rdx
	mov $X2APIC_EOI, %ecx
	xor %eax, %eax
	xor %edx, %edx
	wrmsr
	pop %rdx
	pop %rcx
	pop %rax
	iretq
spurious_isr:
	incq %gs:PCPU_SPURIOUS
	iretq

/* One 16-byte stub per source CPU: vector VEC_IPI_BASE + n counts ipi_from[n]. */
	.balign 16
ipi_stubs:
	.set n, 0
	.rept MAX_CPUS
	.balign 16
	incq %gs:(PCPU_IPI + 8 * n)
	jmp eoi_iret
	.set n, n + 1
	.endr

/* One 16-byte stub per MSI vector: VEC_MSI_BASE + n counts msi[n]. */
	.globl msi_stubs
	.balign 16
msi_stubs:
	.set n, 0
	.rept NR_MSI_VECTORS
	.balign 16
	incq %gs:(PCPU_MSI + 8 * n)
	jmp eoi_iret
	.set n, n + 1
	.endr

/* Exceptions 0-31: one 16-byte stub each; push a 0 error code if the CPU didn't. */
	.balign 16
exc_stubs:
	.set n, 0
	.rept 32
	.balign 16
	.if (n == 8) || (n >= 10 && n <= 14) || (n == 17) || (n == 21) || (n == 29) || (n == 30)
	.else
	pushq $0
	.endif
	pushq $n
	jmp trap_common
	.set n, n + 1
	.endr

/* Frame for trap(): r15..rax, vector, error code, then the CPU's frame. */
trap_common:
	push %rax
	push %rbx
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %rbp
	push %r8
	push %r9
	push %r10
	push %r11
	push %r12
	push %r13
	push %r14
	push %r15
	mov %rsp, %rdi
	call trap			/* reports and exits */
	jmp halt_forever

/* ---- static data: GDT, identity page tables for the first 4 GiB ---- */
	.data
	.balign 16
	.globl gdt
gdt:
	.quad 0
	.quad 0x00af9b000000ffff	/* 0x08 kernel code, 64-bit */
	.quad 0x00cf93000000ffff	/* 0x10 kernel data */
	.quad 0x00cff3000000ffff	/* 0x18 user data */
	.quad 0x00affb000000ffff	/* 0x20 user code, 64-bit */
	.fill 2 * MAX_CPUS, 8, 0	/* 0x28 + 16n: TSS of cpu n, set by cpu_init */
gdt_end:

	.balign 8
	.word 0, 0, 0
gdt_ptr:				/* for the 32-bit lgdt */
	.word gdt_end - gdt - 1
	.long gdt

/*
 * Every page is present, writable and user-accessible (user-mode tests
 * read and write all of memory). PML4[0] -> pdpt_low; its first four
 * entries -> pd_4g (2 MiB pages, 0-4 GiB); RAM above 4 GiB is mapped at
 * run time into pd_high (see main.c).
 */
	.balign 4096
	.globl pml4, pdpt_low
pml4:
	.quad pdpt_low + 7
	.fill 511, 8, 0
pdpt_low:
	.quad pd_4g + 7
	.quad pd_4g + 0x1000 + 7
	.quad pd_4g + 0x2000 + 7
	.quad pd_4g + 0x3000 + 7
	.fill 508, 8, 0
pd_4g:
	.set addr, 0
	.rept 2048
	.quad addr + 0x87		/* P | RW | US | PS */
	.set addr, addr + 0x200000
	.endr
