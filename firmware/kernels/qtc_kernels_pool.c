/* qtc_kernels_pool.c: max / average pooling and reductions (Mean, Sum, Max).
 *
 * Integer semantics (TFLM reference_integer_ops pooling.h, reference_ops
 * reduce.h): windows are clipped to the input; max ignores padding; average
 * divides the raw sum by the number of real elements with TFLite's rounding
 * ((sum +/- n/2) / n, truncating); Mean/Sum are TFLM's QuantizedMeanOrSum
 * (1/n folded into the multiplier at compile time).  A requantization between different in/out
 * params is applied afterwards by the generated code (a 256-entry table).
 */
#include "qtc_kernels.h"

static inline int32_t imax(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

static inline int32_t imin(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

void qtc_max_pool_s8(const qtc_pool_params_t *p, const int8_t *x, int8_t *y)
{
    const int32_t C = p->channels;
    int32_t b, oy, ox, iy, ix, c;
    for (b = 0; b < p->batch; ++b) {
        const int8_t *xb = x + b * p->in_h * p->in_w * C;
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            const int32_t ys = imax(y0, 0), ye = imin(y0 + p->k_h, p->in_h);
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                const int32_t xs = imax(x0, 0), xe = imin(x0 + p->k_w, p->in_w);
                for (c = 0; c < C; ++c) {
                    y[c] = INT8_MIN;
                }
                /* channels innermost: contiguous loads, the output is the accumulator */
                for (iy = ys; iy < ye; ++iy) {
                    for (ix = xs; ix < xe; ++ix) {
                        const int8_t *xp = xb + (iy * p->in_w + ix) * C;
                        for (c = 0; c < C; ++c) {
                            if (xp[c] > y[c]) {
                                y[c] = xp[c];
                            }
                        }
                    }
                }
                for (c = 0; c < C; ++c) {
                    y[c] = qtc_clamp_s8(y[c], p->act_min, p->act_max);
                }
                y += C;
            }
        }
    }
}

/* TFLite's rounded division: half away from zero, then truncation. */
static inline int32_t rounded_div(int32_t acc, int32_t n)
{
    return (acc > 0 ? acc + n / 2 : acc - n / 2) / n;
}

void qtc_avg_pool_s8(const qtc_pool_params_t *p, const int8_t *x, int8_t *y)
{
    const int32_t C = p->channels;
    int32_t b, oy, ox, iy, ix, c;
    for (b = 0; b < p->batch; ++b) {
        const int8_t *xb = x + b * p->in_h * p->in_w * C;
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            const int32_t ys = imax(y0, 0), ye = imin(y0 + p->k_h, p->in_h);
            const int32_t yn_pad = imin(y0 + p->k_h, p->in_h + p->pad_bottom) - y0;
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                const int32_t xs = imax(x0, 0), xe = imin(x0 + p->k_w, p->in_w);
                const int32_t n_real = (ye - ys) * (xe - xs);
                int32_t n = n_real, pad_sum = 0;
                if (p->count_include_pad) {
                    /* torch: the window clipped to the padded input; padding holds in_zp */
                    n = yn_pad * (imin(x0 + p->k_w, p->in_w + p->pad_right) - x0);
                    pad_sum = (n - n_real) * p->in_zp;
                }
                for (c = 0; c < C; ++c) {
                    int32_t acc = pad_sum;
                    for (iy = ys; iy < ye; ++iy) {
                        const int8_t *xp = xb + (iy * p->in_w + xs) * C + c;
                        for (ix = xs; ix < xe; ++ix) {
                            acc += *xp;
                            xp += C;
                        }
                    }
                    y[c] = qtc_clamp_s8(rounded_div(acc, n), p->act_min, p->act_max);
                }
                y += C;
            }
        }
    }
}

void qtc_reduce_s8(const qtc_reduce_params_t *p, const int8_t *x, int8_t *y)
{
    const int32_t R = p->reduce, I = p->inner;
    int32_t o, i, r;
    for (o = 0; o < p->outer; ++o) {
        const int8_t *xo = x + o * R * I;
        for (i = 0; i < I; ++i) {
            const int8_t *xp = xo + i;
            int32_t v;
            if (p->mode == QTC_REDUCE_MAX) {
                v = INT8_MIN;
                for (r = 0; r < R; ++r) {
                    v = imax(v, xp[r * I]);
                }
            } else {
                int32_t sum = 0;
                for (r = 0; r < R; ++r) {
                    sum += xp[r * I];
                }
                v = qtc_requant(sum - p->in_zp_times_n, p->mult, p->shift) + p->out_zp;
            }
            *y++ = qtc_clamp_s8(v, p->act_min, p->act_max);
        }
    }
}
