/* Reset entry for the emulated board (qemu-system-riscv32 -M virt -bios none):
 * QEMU jumps here in M-mode at 0x80000000.  Set gp/sp, install the trap
 * handler, clear .bss, run main(), then power off through the SiFive test device. */
    .file   "start.S"
    .section .text.init.enter, "ax"
    .globl _start
_start:
    .option push
    .option norelax
    la      gp, __global_pointer$
    .option pop
    la      sp, __stack_top
    la      tp, __tls_base
    la      t0, qtc_trap_entry
    csrw    mtvec, t0
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sw      zero, 0(t0)
    addi    t0, t0, 4
    j       1b
2:  la      t0, __tbss_start
    la      t1, __tbss_end
5:  bgeu    t0, t1, 6f
    sb      zero, 0(t0)
    addi    t0, t0, 1
    j       5b
6:  call    main
    call    qtc_poweroff          /* a0 = main's return value */
3:  j       3b

    /* Any exception: hand mcause/mepc/mtval to C, which reports and powers off. */
    .align  4
qtc_trap_entry:
    la      sp, __stack_top
    csrr    a0, mcause
    csrr    a1, mepc
    csrr    a2, mtval
    call    qtc_trap
4:  j       4b
