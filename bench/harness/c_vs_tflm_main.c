/* c_vs_tflm_main.c: run the generated model over its embedded test vectors,
 * check every output byte, and print instruction counts (bench/c_vs_tflm.py).
 *
 * Host build (gcc -O2): prints the outputs; callgrind counts the instructions
 * of qtc_model_invoke (--toggle-collect).
 * RV32 build (-DQTC_HARNESS_RV32, linked with the QEMU board): reads minstret
 * around each invoke, and with -DQTC_PROFILE_LAYERS around each layer
 * (qtc_layer_profile.h), and prints one line per figure on the UART:
 *   N <vectors>   T <instructions of all invokes>   C <instructions a bare reading pair counts>
 *   L <node> <instructions of that layer, all invokes>   P <instructions an empty layer hook pair counts>
 *   S <stack bytes used>   OK | FAIL <vector>
 */
#include <stdint.h>
#include <string.h>

#include "qtc_layer_profile.h"
#include "qtc_model.h"
#include "qtc_model_testvec.h"

static int8_t g_in[QTC_MODEL_INPUT_BYTES] __attribute__((aligned(16)));
static int8_t g_out[QTC_MODEL_OUTPUT_BYTES] __attribute__((aligned(16)));

#ifdef QTC_HARNESS_RV32
#include "qtc_board.h"

uint32_t qtc_prof_t0;
uint32_t qtc_prof_acc[QTC_PROF_MAX_LAYERS];

static void put_str(const char *s) { board_write((const uint8_t *)s, strlen(s)); }

static void put_u32(uint32_t v)
{
    char buf[11];
    int n = 10;
    buf[n] = 0;
    do {
        buf[--n] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    put_str(buf + n);
}

static inline uint32_t instret(void)
{
    uint32_t v;
    __asm__ volatile("csrr %0, minstret" : "=r"(v));
    return v;
}

int qtc_bench_main(void)
{
    uint32_t total = 0, c0, c1, k, empty, hook = 0;
    int bad = -1;
    board_init();
    c0 = instret();
    c1 = instret();
    empty = c1 - c0; /* cost of one reading pair, subtracted by the Python side */
#ifdef QTC_LAYER_BEGIN
    QTC_LAYER_BEGIN(QTC_PROF_MAX_LAYERS - 1); /* an empty layer: the hooks' own cost */
    QTC_LAYER_END(QTC_PROF_MAX_LAYERS - 1);
    hook = qtc_prof_acc[QTC_PROF_MAX_LAYERS - 1];
    qtc_prof_acc[QTC_PROF_MAX_LAYERS - 1] = 0;
#endif
    board_stack_paint();
    for (k = 0; k < QTC_TESTVEC_COUNT; ++k) {
        memcpy(g_in, qtc_testvec_in[k], QTC_MODEL_INPUT_BYTES);
        c0 = instret();
        qtc_model_invoke(g_in, g_out);
        c1 = instret();
        total += c1 - c0;
        if (memcmp(g_out, qtc_testvec_out[k], QTC_MODEL_OUTPUT_BYTES) != 0 && bad < 0) {
            bad = (int)k;
        }
    }
    put_str("N ");
    put_u32(QTC_TESTVEC_COUNT);
    put_str("\nC ");
    put_u32(empty);
    put_str("\nT ");
    put_u32(total);
    put_str("\nP ");
    put_u32(hook);
    put_str("\nS ");
    put_u32(board_stack_used());
    put_str("\n");
    for (k = 0; k < QTC_PROF_MAX_LAYERS; ++k) {
        if (qtc_prof_acc[k]) {
            put_str("L ");
            put_u32(k);
            put_str(" ");
            put_u32(qtc_prof_acc[k]);
            put_str("\n");
        }
    }
    if (bad >= 0) {
        put_str("FAIL ");
        put_u32((uint32_t)bad);
        put_str("\n");
        return 1;
    }
    put_str("OK\n");
    return 0;
}

#else /* host */
#include <stdio.h>

int main(void)
{
    int k, i, bad = 0;
    for (k = 0; k < QTC_TESTVEC_COUNT; ++k) {
        memcpy(g_in, qtc_testvec_in[k], QTC_MODEL_INPUT_BYTES);
        if (qtc_model_invoke(g_in, g_out) != 0) {
            printf("ERR %d\n", k);
            return 1;
        }
        bad |= memcmp(g_out, qtc_testvec_out[k], QTC_MODEL_OUTPUT_BYTES) != 0;
        printf("Y");
        for (i = 0; i < QTC_MODEL_OUTPUT_BYTES; ++i) {
            printf(" %d", g_out[i]);
        }
        printf("\n");
    }
    printf(bad ? "FAIL\n" : "OK\n");
    return bad;
}
#endif
