/* Board support for the host build: the bench firmware as a process on the build
 * machine, talking on stdin/stdout (a pty or pipes).  For fast protocol and
 * fault tests; timing is the host's monotonic clock ("cycles" = nanoseconds at
 * a nominal 1 GHz), and there is no stack measurement.
 *
 * Fault injection for tests (environment variable QTC_HOST_BOARD_FAULT):
 *   reset@N  after N bytes have been read, restart the process in place (exec),
 *            as a watchdog/brown-out reset would: it boots again and sends BOOT
 *   hang@N   after N bytes have been read, stop answering
 *   exit@N   after N bytes have been read, exit (the port goes away)
 * The variable is cleared before a reset, so a board resets only once. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "qtc_board.h"
#include "qtc_proto.h"

int qtc_bench_main(void);

static qtc_board_info_t info = {"host", QTC_TIMING_HOST, QTC_INFO_HAS_CYCLES, 1000000000u, 0u};
static char **g_argv;
static enum { FAULT_NONE, FAULT_RESET, FAULT_HANG, FAULT_EXIT } g_fault;
static unsigned long g_fault_at, g_read_total;

static void parse_fault(void) {
    const char *f = getenv("QTC_HOST_BOARD_FAULT");
    const char *at = f ? strchr(f, '@') : NULL;
    if (!at) return;
    g_fault_at = strtoul(at + 1, NULL, 10);
    if (!strncmp(f, "reset@", 6)) g_fault = FAULT_RESET;
    else if (!strncmp(f, "hang@", 5)) g_fault = FAULT_HANG;
    else if (!strncmp(f, "exit@", 5)) g_fault = FAULT_EXIT;
}

static void fire_fault(void) {
    if (g_fault == FAULT_RESET) {
        unsetenv("QTC_HOST_BOARD_FAULT");
        execv("/proc/self/exe", g_argv);
        _exit(4); /* exec failed: the board is gone */
    }
    if (g_fault == FAULT_HANG)
        for (;;) pause();
    if (g_fault == FAULT_EXIT) _exit(0);
}

void board_init(void) {
    if (isatty(STDIN_FILENO)) {
        struct termios t;
        if (tcgetattr(STDIN_FILENO, &t) == 0) {
            cfmakeraw(&t);
            tcsetattr(STDIN_FILENO, TCSANOW, &t);
        }
    }
    parse_fault();
}

const qtc_board_info_t *board_info(void) { return &info; }

size_t board_read(uint8_t *buf, size_t len, int32_t timeout_ms) {
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    for (;;) {
        int r = poll(&p, 1, timeout_ms < 0 ? -1 : (int)timeout_ms);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) return 0;
        break;
    }
    ssize_t n;
    do {
        n = read(STDIN_FILENO, buf, len);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) exit(0); /* the host side hung up (EOF, or EIO on a closed pty) */
    g_read_total += (unsigned long)n;
    if (g_fault != FAULT_NONE && g_read_total >= g_fault_at) fire_fault();
    return (size_t)n;
}

void board_write(const uint8_t *buf, size_t len) {
    while (len) {
        ssize_t n = write(STDOUT_FILENO, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) exit(0);
        buf += n;
        len -= (size_t)n;
    }
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t board_cycles(void) { return now_ns(); }
uint64_t board_instructions(void) { return 0; }
uint64_t board_time_us(void) { return now_ns() / 1000u; }
void board_stack_paint(void) {}
uint32_t board_stack_used(void) { return QTC_STACK_UNKNOWN; }
void board_idle(void) {}
void board_session_end(int status) { exit(status); }

int main(int argc, char **argv) {
    (void)argc;
    g_argv = argv;
    return qtc_bench_main();
}
