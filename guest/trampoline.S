/*
 * trampoline.S - the AP startup trampoline. The BSP copies it to a free
 * low page and fills in tr_gdtr, tr_cr3 and tr_entry (main.c), then sends
 * INIT/SIPI/SIPI. The AP starts here in real mode with CS = page << 8,
 * IP = 0, so all references are relative to the segment. It goes straight
 * from real mode to long mode (PAE, LME, PE|PG, far jump to the 64-bit
 * code segment) in a dozen emulated instructions.
 */
#include "guest.h"

	.section .rodata
	.code16
	.globl trampoline_start, trampoline_end, tr_gdtr, tr_cr3, tr_entry
trampoline_start:
	cli
	mov %cs, %ax
	mov %ax, %ds
	lgdtl tr_gdtr - trampoline_start
	mov $0x20, %eax			/* CR4.PAE */
	mov %eax, %cr4
	mov tr_cr3 - trampoline_start, %eax
	mov %eax, %cr3
	mov $MSR_EFER, %ecx
	rdmsr
	or $0x101, %eax			/* LME | SCE */
	wrmsr
	mov $0x80000011, %eax		/* PG | ET | PE */
	mov %eax, %cr0
	ljmpl *(tr_entry - trampoline_start)

	.balign 8
tr_gdtr:	.word 0			/* limit, then 32-bit base */
		.long 0
tr_cr3:		.long 0
tr_entry:	.long 0			/* ap_entry64 */
		.word SEL_KCODE
trampoline_end:
	.code64
