/* qtc bench firmware: the same C on every board (QEMU RV32, host, ESP-IDF).
 *
 * Server mode (default): announce BOOT, then answer host requests framed as in
 * qtc_proto.h: HELLO, WRITE_INPUT, RUN, READ_SAMPLES, READ_OUTPUT, BYE.
 * Self-test mode (-DQTC_BENCH_SELFTEST): run the embedded test vectors
 * (qtc_model_testvec.h), print PASS/FAIL and timing lines, no host needed.
 *
 * Board specifics live behind qtc_board.h; the model behind qtc_model.h.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "qtc_board.h"
#include "qtc_model.h"
#include "qtc_proto.h"

#ifdef QTC_BENCH_SELFTEST
#include "qtc_model_testvec.h"
#endif

#ifndef QTC_BENCH_MAX_RUNS
#define QTC_BENCH_MAX_RUNS 256
#endif
#ifndef QTC_BENCH_MAX_WARMUP
#define QTC_BENCH_MAX_WARMUP 64
#endif
#ifndef QTC_SELFTEST_RUNS
#define QTC_SELFTEST_RUNS 10
#endif
#define QTC_INTERBYTE_TIMEOUT_MS 250

#if defined(__GNUC__)
#define QTC_ALIGNED __attribute__((aligned(16)))
#else
#define QTC_ALIGNED
#endif

static int8_t g_in[QTC_MODEL_INPUT_BYTES] QTC_ALIGNED;
static int8_t g_out[QTC_MODEL_OUTPUT_BYTES] QTC_ALIGNED;
static uint32_t g_cycles[QTC_BENCH_MAX_RUNS];
static uint32_t g_instr[QTC_BENCH_MAX_RUNS];
static uint32_t g_us[QTC_BENCH_MAX_RUNS];

static uint32_t clamp32(uint64_t v) { return v > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)v; }

/* One timed inference into sample slot i; returns qtc_model_invoke's code. */
static int timed_invoke(uint16_t i) {
    uint64_t c0 = board_cycles(), n0 = board_instructions(), t0 = board_time_us();
    int rc = qtc_model_invoke(g_in, g_out);
    uint64_t c1 = board_cycles(), n1 = board_instructions(), t1 = board_time_us();
    g_cycles[i] = clamp32(c1 - c0);
    g_instr[i] = clamp32(n1 - n0);
    g_us[i] = clamp32(t1 - t0);
    return rc;
}

/* ------------------------------------------------------------ server mode */
#ifndef QTC_BENCH_SELFTEST

static uint16_t g_nsamples;
static int g_has_result;
static uint8_t g_tx[QTC_PROTO_MAX_PAYLOAD + QTC_PROTO_OVERHEAD];
static qtc_parser_t g_rx;

static void send_frame(uint8_t type, uint8_t seq, const uint8_t *payload, uint16_t len) {
    size_t n = qtc_frame_build(g_tx, QTC_PROTO_VERSION, type, seq, payload, len);
    board_write(g_tx, n);
}

/* Payloads are assembled in place, after the header of g_tx. */
#define PAYLOAD (g_tx + QTC_PROTO_HEADER)

static void send_error(uint8_t seq, uint8_t code, uint32_t detail, const char *text) {
    size_t tlen = strlen(text);
    if (tlen > 64) tlen = 64;
    memset(PAYLOAD, 0, 8);
    PAYLOAD[0] = code;
    qtc_put_u32(PAYLOAD + 4, detail);
    memcpy(PAYLOAD + 8, text, tlen);
    send_frame(QTC_MSG_ERROR, seq, PAYLOAD, (uint16_t)(8 + tlen));
}

static uint16_t put_str(uint8_t *p, const char *s) {
    size_t n = strlen(s);
    if (n > 48) n = 48;
    p[0] = (uint8_t)n;
    memcpy(p + 1, s, n);
    return (uint16_t)(1 + n);
}

static void send_boot(void) {
    PAYLOAD[0] = QTC_PROTO_VERSION;
    uint16_t len = (uint16_t)(1 + put_str(PAYLOAD + 1, board_info()->name));
    send_frame(QTC_MSG_BOOT, 0, PAYLOAD, len);
}

static void handle_hello(uint8_t seq) {
    const qtc_board_info_t *b = board_info();
    uint8_t *p = PAYLOAD;
    uint64_t macs = (uint64_t)(QTC_MODEL_MACS);
    p[0] = QTC_PROTO_VERSION;
    p[1] = b->timing_kind;
    p[2] = b->flags;
    p[3] = 0;
    qtc_put_u32(p + 4, b->cpu_hz);
    qtc_put_u32(p + 8, (uint32_t)QTC_MODEL_INPUT_BYTES);
    qtc_put_u32(p + 12, (uint32_t)QTC_MODEL_OUTPUT_BYTES);
    qtc_put_u32(p + 16, (uint32_t)(QTC_MODEL_ARENA_BYTES));
    qtc_put_u32(p + 20, (uint32_t)macs);
    qtc_put_u32(p + 24, (uint32_t)(macs >> 32));
    qtc_put_u16(p + 28, (uint16_t)QTC_PROTO_MAX_PAYLOAD);
    qtc_put_u16(p + 30, (uint16_t)QTC_BENCH_MAX_RUNS);
    qtc_put_u32(p + 32, b->stack_bytes);
    uint16_t len = 36;
    len = (uint16_t)(len + put_str(p + len, b->name));
    len = (uint16_t)(len + put_str(p + len, QTC_MODEL_NAME));
    g_has_result = 0;
    send_frame(QTC_MSG_INFO, seq, p, len);
}

static void handle_write_input(uint8_t seq, const uint8_t *pl, uint16_t len) {
    if (len < 4) { send_error(seq, QTC_ERR_LENGTH, len, "WRITE_INPUT needs u32 offset + data"); return; }
    uint32_t off = qtc_get_u32(pl);
    uint32_t n = (uint32_t)len - 4u;
    if (off > (uint32_t)QTC_MODEL_INPUT_BYTES || n > (uint32_t)QTC_MODEL_INPUT_BYTES - off) {
        send_error(seq, QTC_ERR_RANGE, off, "input write past the input tensor");
        return;
    }
    memcpy((uint8_t *)g_in + off, pl + 4, n);
    qtc_put_u32(PAYLOAD, off);
    qtc_put_u16(PAYLOAD + 4, (uint16_t)n);
    send_frame(QTC_MSG_ACK, seq, PAYLOAD, 6);
}

static void handle_run(uint8_t seq, const uint8_t *pl, uint16_t len) {
    if (len != 4) { send_error(seq, QTC_ERR_LENGTH, len, "RUN needs u16 runs + u16 warmup"); return; }
    uint16_t runs = qtc_get_u16(pl), warmup = qtc_get_u16(pl + 2);
    if (runs == 0 || runs > QTC_BENCH_MAX_RUNS || warmup > QTC_BENCH_MAX_WARMUP) {
        send_error(seq, QTC_ERR_RUNS, QTC_BENCH_MAX_RUNS, "runs must be 1..max_runs, warmup <= 64");
        return;
    }
    g_has_result = 0;
    board_stack_paint();
    for (uint16_t w = 0; w < warmup; w++) {
        int rc = qtc_model_invoke(g_in, g_out);
        if (rc != 0) { send_error(seq, QTC_ERR_INVOKE, (uint32_t)rc, "qtc_model_invoke failed"); return; }
        board_idle();
    }
    uint16_t first_crc = 0, unstable = 0;
    for (uint16_t i = 0; i < runs; i++) {
        int rc = timed_invoke(i);
        if (rc != 0) { send_error(seq, QTC_ERR_INVOKE, (uint32_t)rc, "qtc_model_invoke failed"); return; }
        uint16_t crc = qtc_crc16(0xFFFFu, (const uint8_t *)g_out, QTC_MODEL_OUTPUT_BYTES);
        if (i == 0) first_crc = crc;
        else if (crc != first_crc) unstable++;
        board_idle();
    }
    g_nsamples = runs;
    g_has_result = 1;
    uint8_t *p = PAYLOAD;
    qtc_put_u32(p, 0);  /* status */
    qtc_put_u16(p + 4, runs);
    qtc_put_u16(p + 6, warmup);
    qtc_put_u32(p + 8, board_stack_used());
    qtc_put_u16(p + 12, first_crc);
    qtc_put_u16(p + 14, unstable);
    send_frame(QTC_MSG_RESULT, seq, p, 16);
}

static void handle_read_samples(uint8_t seq, const uint8_t *pl, uint16_t len) {
    if (len != 4) { send_error(seq, QTC_ERR_LENGTH, len, "READ_SAMPLES needs u16 start + u16 count"); return; }
    if (!g_has_result) { send_error(seq, QTC_ERR_NO_RESULT, 0, "no RUN result to read"); return; }
    uint16_t start = qtc_get_u16(pl), count = qtc_get_u16(pl + 2);
    uint16_t max_count = (uint16_t)((QTC_PROTO_MAX_PAYLOAD - 4u) / QTC_SAMPLE_BYTES);
    if (count > max_count || start > g_nsamples || count > g_nsamples - start) {
        send_error(seq, QTC_ERR_RANGE, start, "sample range outside the last RUN");
        return;
    }
    uint8_t *p = PAYLOAD;
    qtc_put_u16(p, start);
    qtc_put_u16(p + 2, count);
    for (uint16_t k = 0; k < count; k++) {
        uint8_t *s = p + 4 + (size_t)k * QTC_SAMPLE_BYTES;
        qtc_put_u32(s, g_cycles[start + k]);
        qtc_put_u32(s + 4, g_instr[start + k]);
        qtc_put_u32(s + 8, g_us[start + k]);
    }
    send_frame(QTC_MSG_SAMPLES, seq, p, (uint16_t)(4 + count * QTC_SAMPLE_BYTES));
}

static void handle_read_output(uint8_t seq, const uint8_t *pl, uint16_t len) {
    if (len != 6) { send_error(seq, QTC_ERR_LENGTH, len, "READ_OUTPUT needs u32 offset + u16 len"); return; }
    if (!g_has_result) { send_error(seq, QTC_ERR_NO_RESULT, 0, "no RUN result to read"); return; }
    uint32_t off = qtc_get_u32(pl);
    uint16_t n = qtc_get_u16(pl + 4);
    if (n > QTC_PROTO_MAX_PAYLOAD - 4u || off > (uint32_t)QTC_MODEL_OUTPUT_BYTES ||
        n > (uint32_t)QTC_MODEL_OUTPUT_BYTES - off) {
        send_error(seq, QTC_ERR_RANGE, off, "output read past the output tensor");
        return;
    }
    qtc_put_u32(PAYLOAD, off);
    memcpy(PAYLOAD + 4, (const uint8_t *)g_out + off, n);
    send_frame(QTC_MSG_OUTPUT, seq, PAYLOAD, (uint16_t)(4 + n));
}

static void handle_frame(const qtc_frame_t *f) {
    if (f->type & 0x80u) return; /* a device->host frame (an echo): not for us */
    if (f->version != QTC_PROTO_VERSION) {
        send_error(f->seq, QTC_ERR_VERSION, QTC_PROTO_VERSION, "protocol version mismatch");
        return;
    }
    switch (f->type) {
    case QTC_MSG_HELLO: handle_hello(f->seq); break;
    case QTC_MSG_WRITE_INPUT: handle_write_input(f->seq, f->payload, f->len); break;
    case QTC_MSG_RUN: handle_run(f->seq, f->payload, f->len); break;
    case QTC_MSG_READ_SAMPLES: handle_read_samples(f->seq, f->payload, f->len); break;
    case QTC_MSG_READ_OUTPUT: handle_read_output(f->seq, f->payload, f->len); break;
    case QTC_MSG_BYE:
        send_frame(QTC_MSG_ACK, f->seq, NULL, 0);
        board_session_end(0);
        break;
    default: send_error(f->seq, QTC_ERR_TYPE, f->type, "unknown message type"); break;
    }
}

static void serve(void) {
    uint8_t chunk[64];
    qtc_frame_t frame;
    qtc_parser_reset(&g_rx);
    send_boot();
    for (;;) {
        /* wait forever between frames; a frame cut off mid-way is dropped after a pause */
        int32_t timeout = g_rx.n ? QTC_INTERBYTE_TIMEOUT_MS : -1;
        size_t got = board_read(chunk, sizeof chunk, timeout);
        if (got == 0) { qtc_parser_reset(&g_rx); continue; }
        for (size_t i = 0; i < got; i++)
            if (qtc_parser_feed(&g_rx, chunk[i], &frame)) handle_frame(&frame);
    }
}

#endif /* !QTC_BENCH_SELFTEST */

/* --------------------------------------------------------- self-test mode */
#ifdef QTC_BENCH_SELFTEST

static void say(const char *line) { board_write((const uint8_t *)line, strlen(line)); }

static void sort_u32(uint32_t *v, unsigned n) {
    for (unsigned i = 1; i < n; i++) {
        uint32_t x = v[i];
        unsigned j = i;
        for (; j > 0 && v[j - 1] > x; j--) v[j] = v[j - 1];
        v[j] = x;
    }
}

/* min / median / p95 (nearest rank) / max of v[0..n), sorted in place */
static void timing_line(const char *what, uint32_t *v, unsigned n) {
    char line[160];
    sort_u32(v, n);
    unsigned p95 = (95u * n + 99u) / 100u;
    uint32_t median = (n % 2) ? v[n / 2] : (uint32_t)(((uint64_t)v[n / 2 - 1] + v[n / 2]) / 2u);
    snprintf(line, sizeof line, "timing: %s min=%lu median=%lu p95=%lu max=%lu (n=%u)\r\n", what,
             (unsigned long)v[0], (unsigned long)median, (unsigned long)v[p95 ? p95 - 1 : 0],
             (unsigned long)v[n - 1], n);
    say(line);
}

static int selftest(void) {
    char line[160];
    const qtc_board_info_t *b = board_info();
    static const char *kinds[] = {"cycle counter", "emulated (instructions)", "host clock"};
    unsigned failed = 0;
    snprintf(line, sizeof line, "qtc selftest: model %s on %s (%s, %lu MHz), %u vectors\r\n", QTC_MODEL_NAME,
             b->name, kinds[b->timing_kind < 3 ? b->timing_kind : 0], (unsigned long)(b->cpu_hz / 1000000u),
             (unsigned)QTC_TESTVEC_COUNT);
    say(line);
    board_stack_paint();
    for (unsigned v = 0; v < QTC_TESTVEC_COUNT; v++) {
        memcpy(g_in, qtc_testvec_in[v], QTC_MODEL_INPUT_BYTES);
        int rc = qtc_model_invoke(g_in, g_out);
        if (rc != 0) {
            snprintf(line, sizeof line, "vector %u: FAIL (qtc_model_invoke returned %d)\r\n", v, rc);
            failed++;
        } else if (memcmp(g_out, qtc_testvec_out[v], QTC_MODEL_OUTPUT_BYTES) != 0) {
            unsigned k = 0;
            while (g_out[k] == qtc_testvec_out[v][k]) k++;
            snprintf(line, sizeof line, "vector %u: FAIL (byte %u: got %d, want %d)\r\n", v, k, g_out[k],
                     qtc_testvec_out[v][k]);
            failed++;
        } else {
            snprintf(line, sizeof line, "vector %u: PASS\r\n", v);
        }
        say(line);
    }
    unsigned runs = QTC_SELFTEST_RUNS < QTC_BENCH_MAX_RUNS ? QTC_SELFTEST_RUNS : QTC_BENCH_MAX_RUNS;
    memcpy(g_in, qtc_testvec_in[0], QTC_MODEL_INPUT_BYTES);
    for (unsigned i = 0; i < runs; i++) {
        if (timed_invoke((uint16_t)i) != 0) failed++;
        board_idle();
    }
    /* the host board's cycle counter is its nanosecond clock */
    if (b->flags & QTC_INFO_HAS_CYCLES)
        timing_line(b->timing_kind == QTC_TIMING_HOST ? "ns" : "cycles", g_cycles, runs);
    if (b->flags & QTC_INFO_HAS_INSTRET) timing_line("instructions", g_instr, runs);
    timing_line("us", g_us, runs);
    uint32_t stack = board_stack_used();
    if (stack != QTC_STACK_UNKNOWN) {
        snprintf(line, sizeof line, "stack: %lu bytes used of %lu\r\n", (unsigned long)stack,
                 (unsigned long)b->stack_bytes);
        say(line);
    }
    snprintf(line, sizeof line, "arena: %lu bytes\r\n", (unsigned long)(QTC_MODEL_ARENA_BYTES));
    say(line);
    if (failed)
        snprintf(line, sizeof line, "qtc selftest: FAIL (%u failures)\r\n", failed);
    else
        snprintf(line, sizeof line, "qtc selftest: PASS\r\n");
    say(line);
    return failed ? 1 : 0;
}
#endif /* QTC_BENCH_SELFTEST */

int qtc_bench_main(void) {
    board_init();
#ifdef QTC_BENCH_SELFTEST
    int rc = selftest();
    board_session_end(rc);
    return rc;
#else
    serve();
    return 0;
#endif
}
