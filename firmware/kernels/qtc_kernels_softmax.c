/* qtc_kernels_softmax.c: TFLM int8 softmax (reference_ops::Softmax, int8 -> int8).
 *
 * Per row: diff = x - max(row).  Diffs >= diff_min contribute
 * exp(diff * beta * s_in) in gemmlowp fixed point; those per-diff values are
 * compile-time tables (only 256 diffs exist).  The row sum (Q12.19) is inverted
 * with gemmlowp's GetReciprocal (Newton-Raphson on 1/(1+x)), then each output
 * is RoundingDivideByPOT(SRDHM(reciprocal, exp), 23 + bits_over_unit) - 128.
 */
#include "qtc_kernels.h"

static inline int32_t wrap_add(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

/* gemmlowp SaturatingRoundingMultiplyByPOT, exponent > 0. */
static int32_t sat_mul_pot(int32_t x, int32_t exponent)
{
    const int32_t threshold = (int32_t)((1u << (31 - exponent)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << exponent);
}

/* gemmlowp RoundingHalfSum: (a + b) / 2 rounded half away from zero. */
static int32_t rounding_half_sum(int32_t a, int32_t b)
{
    const int64_t s = (int64_t)a + (int64_t)b;
    const int64_t num = s >= 0 ? s + 1 : s - 1;
    return (int32_t)(num / 2);
}

/* gemmlowp one_over_one_plus_x_for_x_in_0_1: Q0.31 in and out. */
static int32_t one_over_one_plus_x(int32_t a)
{
    const int32_t half_denominator = rounding_half_sum(a, INT32_MAX);
    const int32_t c48_17 = 1515870810;
    const int32_t cneg32_17 = -1010580540;
    int32_t x = wrap_add(c48_17, qtc_srdhm(half_denominator, cneg32_17)); /* Q2.29 */
    int32_t i;
    for (i = 0; i < 3; ++i) {
        const int32_t hd_x = qtc_srdhm(half_denominator, x);
        const int32_t one_minus = wrap_add(1 << 29, -hd_x);
        x = wrap_add(x, sat_mul_pot(qtc_srdhm(x, one_minus), 2));
    }
    return sat_mul_pot(x, 1);
}

static int32_t clz32(uint32_t v)
{
    int32_t n = 0;
    if (v == 0) {
        return 32;
    }
    while (!(v & 0x80000000u)) {
        v <<= 1;
        ++n;
    }
    return n;
}

/* RoundingDivideByPOT for x >= 0 and any exponent up to 62. */
static int32_t rdbypot_wide(int32_t x, int32_t exponent)
{
    const int64_t mask = ((int64_t)1 << exponent) - 1;
    const int64_t remainder = (int64_t)x & mask;
    const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (int32_t)(((int64_t)x >> exponent) + (remainder > threshold ? 1 : 0));
}

void qtc_softmax_s8(const qtc_softmax_params_t *p, const int32_t exp_table[256],
                    const int32_t sum_table[256], const int8_t *x, int8_t *y)
{
    const int32_t D = p->depth, I = p->inner;
    int32_t o, i, d;
    for (o = 0; o < p->outer; ++o) {
        for (i = 0; i < I; ++i) {
            const int8_t *xr = x + o * D * I + i;
            int8_t *yr = y + o * D * I + i;
            int32_t max_v = INT8_MIN, headroom, bits_over_unit, shifted_scale, exponent;
            uint32_t sum = 0, shifted;
            for (d = 0; d < D; ++d) {
                max_v = xr[d * I] > max_v ? xr[d * I] : max_v;
            }
            for (d = 0; d < D; ++d) {
                const int32_t diff = xr[d * I] - max_v;
                if (diff >= p->diff_min) {
                    sum += (uint32_t)sum_table[-diff];
                }
            }
            /* GetReciprocal(sum, 12 integer bits) */
            headroom = clz32(sum);
            bits_over_unit = 12 - headroom;
            shifted = sum << headroom;
            shifted_scale = one_over_one_plus_x((int32_t)(shifted - 0x80000000u));
            exponent = bits_over_unit + 31 - 8;
            for (d = 0; d < D; ++d) {
                const int32_t diff = xr[d * I] - max_v;
                int32_t v = INT8_MIN;
                if (diff >= p->diff_min) {
                    v = rdbypot_wide(qtc_srdhm(shifted_scale, exp_table[-diff]), exponent) - 128;
                }
                yr[d * I] = qtc_clamp_s8(v, -128, 127);
            }
        }
    }
}
