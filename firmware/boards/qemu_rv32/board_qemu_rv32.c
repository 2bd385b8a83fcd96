/* Board support for the emulated board: QEMU virt, RV32IMAC, ns16550 UART at
 * 0x10000000, SiFive test device at 0x100000, CLINT mtime at 0x0200BFF8 (10 MHz).
 *
 * Run under `-icount shift=0`, mcycle and minstret both count retired
 * instructions, so timing is "emulated (instructions)": deterministic, and
 * converted to microseconds at the nominal clock QTC_CPU_MHZ. */
#include <stdint.h>

#include "qtc_board.h"
#include "qtc_proto.h"

#ifndef QTC_CPU_MHZ
#define QTC_CPU_MHZ 160
#endif

#define UART_BASE 0x10000000u
#define UART_RBR 0 /* receive buffer / transmit holding */
#define UART_FCR 2
#define UART_LCR 3
#define UART_LSR 5
#define LSR_DR 0x01u
#define LSR_THRE 0x20u
#define TEST_DEVICE ((volatile uint32_t *)0x00100000u)
#define MTIME_LO ((volatile uint32_t *)0x0200BFF8u)
#define MTIME_HI ((volatile uint32_t *)0x0200BFFCu)
#define MTIME_HZ 10000000u
#define STACK_PAINT 0xA5A5A5A5u

extern uint32_t __stack_bottom[], __stack_top[];
int qtc_bench_main(void);

static volatile uint8_t *const uart = (volatile uint8_t *)UART_BASE;
static qtc_board_info_t info;

void board_init(void) {
    uart[UART_LCR] = 0x03; /* 8N1 */
    uart[UART_FCR] = 0x07; /* enable + clear FIFOs */
    info.name = "qemu-rv32";
    info.timing_kind = QTC_TIMING_EMULATED;
    info.flags = QTC_INFO_HAS_CYCLES | QTC_INFO_HAS_INSTRET | QTC_INFO_HAS_STACK;
    info.cpu_hz = (uint32_t)QTC_CPU_MHZ * 1000000u;
    info.stack_bytes = (uint32_t)((uintptr_t)__stack_top - (uintptr_t)__stack_bottom);
}

const qtc_board_info_t *board_info(void) { return &info; }

static uint64_t mtime(void) {
    uint32_t hi, lo;
    do {
        hi = *MTIME_HI;
        lo = *MTIME_LO;
    } while (hi != *MTIME_HI);
    return ((uint64_t)hi << 32) | lo;
}

size_t board_read(uint8_t *buf, size_t len, int32_t timeout_ms) {
    uint64_t deadline = mtime() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * (MTIME_HZ / 1000u);
    while (!(uart[UART_LSR] & LSR_DR))
        if (timeout_ms >= 0 && mtime() >= deadline) return 0;
    size_t n = 0;
    while (n < len && (uart[UART_LSR] & LSR_DR)) buf[n++] = uart[UART_RBR];
    return n;
}

void board_write(const uint8_t *buf, size_t len) {
    for (size_t i = 0; i < len; i++) {
        while (!(uart[UART_LSR] & LSR_THRE)) {
        }
        uart[UART_RBR] = buf[i];
    }
}

#define READ_CSR64(lo_csr, hi_csr)                                      \
    ({                                                                  \
        uint32_t hi_, lo_, hi2_;                                        \
        do {                                                            \
            __asm__ volatile("csrr %0, " #hi_csr : "=r"(hi_));          \
            __asm__ volatile("csrr %0, " #lo_csr : "=r"(lo_));          \
            __asm__ volatile("csrr %0, " #hi_csr : "=r"(hi2_));         \
        } while (hi_ != hi2_);                                          \
        ((uint64_t)hi_ << 32) | lo_;                                    \
    })

uint64_t board_cycles(void) { return READ_CSR64(mcycle, mcycleh); }
uint64_t board_instructions(void) { return READ_CSR64(minstret, minstreth); }
uint64_t board_time_us(void) { return board_instructions() / QTC_CPU_MHZ; }

void board_stack_paint(void) {
    uintptr_t sp;
    __asm__ volatile("mv %0, sp" : "=r"(sp));
    for (uint32_t *p = __stack_bottom; (uintptr_t)p < sp - 64u; p++) *p = STACK_PAINT;
}

uint32_t board_stack_used(void) {
    const uint32_t *p = __stack_bottom;
    while (p < __stack_top && *p == STACK_PAINT) p++;
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)p);
}

void board_idle(void) {}

/* SiFive test device: 0x5555 = pass (qemu exits 0), (code << 16) | 0x3333 = fail (exits code). */
void qtc_poweroff(int status) {
    *TEST_DEVICE = status == 0 ? 0x5555u : (((uint32_t)status & 0xFFFFu) << 16) | 0x3333u;
    for (;;) {
    }
}

void board_session_end(int status) { qtc_poweroff(status); }

static void put_hex(const char *label, uint32_t v) {
    const char *d = "0123456789abcdef";
    uint8_t s[11] = {' ', '0', 'x'};
    for (int i = 0; i < 8; i++) s[3 + i] = (uint8_t)d[(v >> (28 - 4 * i)) & 15u];
    const char *c = label;
    size_t n = 0;
    while (c[n]) n++;
    board_write((const uint8_t *)label, n);
    board_write(s, sizeof s);
}

/* An exception (bad access, illegal instruction, stack overflow into data...):
 * say so on the UART and power off with status 3 so the host sees the link drop. */
void qtc_trap(uint32_t mcause, uint32_t mepc, uint32_t mtval) {
    put_hex("\r\nqtc: trap mcause", mcause);
    put_hex(" mepc", mepc);
    put_hex(" mtval", mtval);
    board_write((const uint8_t *)"\r\n", 2);
    qtc_poweroff(3);
}

int main(void) { return qtc_bench_main(); }
