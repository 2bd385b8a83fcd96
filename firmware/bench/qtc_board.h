/* The tiny board API the bench firmware runs on.  One implementation per board:
 * firmware/boards/{qemu_rv32,host,esp_idf}/.  Everything else is the same C. */
#ifndef QTC_BOARD_H
#define QTC_BOARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;    /* e.g. "qemu-rv32", "host", "esp32s3" */
    uint8_t timing_kind; /* QTC_TIMING_* (qtc_proto.h) */
    uint8_t flags;       /* QTC_INFO_HAS_* */
    uint32_t cpu_hz;     /* nominal core clock */
    uint32_t stack_bytes; /* stack available to the bench, 0 if unknown */
} qtc_board_info_t;

void board_init(void);
const qtc_board_info_t *board_info(void);

/* Read up to len bytes, waiting at most timeout_ms for the first one
 * (timeout_ms < 0: wait forever). Returns the count read, 0 on timeout. */
size_t board_read(uint8_t *buf, size_t len, int32_t timeout_ms);
void board_write(const uint8_t *buf, size_t len);

uint64_t board_cycles(void);       /* core cycle counter (emulated: = instructions) */
uint64_t board_instructions(void); /* retired instructions, 0 where there is no counter */
uint64_t board_time_us(void);      /* microseconds (emulated: instructions / nominal MHz) */

/* Stack high-water mark: paint the unused stack, run, then measure what was touched. */
void board_stack_paint(void);
uint32_t board_stack_used(void); /* bytes, QTC_STACK_UNKNOWN if not measurable */

/* Called between timed inferences (never inside one): feed watchdogs, yield. */
void board_idle(void);
/* The session is over (BYE, or the self-test finished; status 0 = ok): power off an
 * emulator, exit a host process; a real board keeps serving. */
void board_session_end(int status);

#endif
