/* qtc_kernels_conv.c: Conv2D/Conv1D, 1x1 conv, depthwise conv, fully connected.
 *
 * Integer semantics (TFLM reference_integer_ops ConvPerChannel,
 * DepthwiseConvPerChannel, FullyConnectedPerChannel):
 *   acc = bias[c] + sum(w * (x - in_zp))
 * Interior pixels use the bias folded with the input zero point (no offset
 * in the inner loop); pixels whose window crosses the padding loop over the
 * valid taps only, with x - in_zp and the raw bias.
 *   y   = clamp(requant(acc, mult[c], shift[c]) + out_zp, act_min, act_max)
 * Hot loops keep int32 accumulators in registers and share each input load
 * across four output channels.
 */
#include "qtc_kernels.h"

static inline int8_t out_s8(int32_t acc, int32_t mult, int32_t shift, int32_t zp,
                            int32_t lo, int32_t hi)
{
    return qtc_clamp_s8(qtc_requant(acc, mult, shift) + zp, lo, hi);
}

/* sum_i (x[i] - zp) * w[i].  Interior callers pass zp = 0 (the bias is folded),
 * a constant the compiler removes after inlining; border pixels pass in_zp. */
static inline int32_t dot1(const int8_t *x, const int8_t *w, int32_t n, int32_t zp)
{
    int32_t acc = 0;
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        acc += (x[i] - zp) * w[i] + (x[i + 1] - zp) * w[i + 1] + (x[i + 2] - zp) * w[i + 2] +
               (x[i + 3] - zp) * w[i + 3];
    }
    for (; i < n; ++i) {
        acc += (x[i] - zp) * w[i];
    }
    return acc;
}

/* Four output channels against one input vector; w is packed (see the header):
 * w[4 * i + j] is channel j's weight for input element i, so each input load
 * feeds four multiply-accumulates and one pointer walks all four rows. */
static inline void dot4(const int8_t *x, const int8_t *w, int32_t n, int32_t zp, int32_t acc[4])
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int32_t i = 0;
    for (; i + 2 <= n; i += 2) {
        const int32_t x0 = x[i] - zp, x1 = x[i + 1] - zp;
        a0 += x0 * w[0] + x1 * w[4];
        a1 += x0 * w[1] + x1 * w[5];
        a2 += x0 * w[2] + x1 * w[6];
        a3 += x0 * w[3] + x1 * w[7];
        w += 8;
    }
    if (i < n) {
        const int32_t x0 = x[i] - zp;
        a0 += x0 * w[0];
        a1 += x0 * w[1];
        a2 += x0 * w[2];
        a3 += x0 * w[3];
    }
    acc[0] += a0;
    acc[1] += a1;
    acc[2] += a2;
    acc[3] += a3;
}

/* One input row (in_c values) against all out_c weight rows: FC and 1x1 conv. */
static void matvec_row(const int8_t *x, const int8_t *w, int32_t in_c, int32_t out_c,
                       const int32_t *bias, const int32_t *mult, const int32_t *shift,
                       int32_t zp, int32_t lo, int32_t hi, int8_t *y)
{
    int32_t o = 0;
    for (; o + 4 <= out_c; o += 4) {
        int32_t acc[4];
        acc[0] = bias[o];
        acc[1] = bias[o + 1];
        acc[2] = bias[o + 2];
        acc[3] = bias[o + 3];
        dot4(x, w + o * in_c, in_c, 0, acc);
        y[o] = out_s8(acc[0], mult[o], shift[o], zp, lo, hi);
        y[o + 1] = out_s8(acc[1], mult[o + 1], shift[o + 1], zp, lo, hi);
        y[o + 2] = out_s8(acc[2], mult[o + 2], shift[o + 2], zp, lo, hi);
        y[o + 3] = out_s8(acc[3], mult[o + 3], shift[o + 3], zp, lo, hi);
    }
    for (; o < out_c; ++o) {
        const int32_t acc = bias[o] + dot1(x, w + o * in_c, in_c, 0);
        y[o] = out_s8(acc, mult[o], shift[o], zp, lo, hi);
    }
}

void qtc_fully_connected_s8(const qtc_fc_params_t *p, const int8_t *x, const int8_t *w,
                            const int32_t *bias, const int32_t *mult, const int32_t *shift,
                            int8_t *y)
{
    int32_t r;
    for (r = 0; r < p->rows; ++r) {
        matvec_row(x + r * p->in_features, w, p->in_features, p->out_features, bias, mult, shift,
                   p->out_zp, p->act_min, p->act_max, y + r * p->out_features);
    }
}

void qtc_conv1x1_s8(const qtc_conv_params_t *p, const int8_t *x, const int8_t *w,
                    const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *y)
{
    int32_t b, oy, ox;
    for (b = 0; b < p->batch; ++b) {
        for (oy = 0; oy < p->out_h; ++oy) {
            const int8_t *xrow = x + ((b * p->in_h + oy * p->stride_h) * p->in_w) * p->in_c;
            for (ox = 0; ox < p->out_w; ++ox) {
                matvec_row(xrow + ox * p->stride_w * p->in_c, w, p->in_c, p->out_c, bias, mult,
                           shift, p->out_zp, p->act_min, p->act_max, y);
                y += p->out_c;
            }
        }
    }
}

/* ---------------------------------------------------------------- conv */

/* The taps of a window that fall inside the input form a rectangle:
 * [k0, k1) along one axis for window start i0, dilation d, input size n. */
static inline void valid_taps(int32_t i0, int32_t d, int32_t k, int32_t n, int32_t *k0, int32_t *k1)
{
    int32_t lo = i0 < 0 ? (-i0 + d - 1) / d : 0;
    int32_t hi = n - i0 > 0 ? (n - i0 + d - 1) / d : 0;
    hi = hi < k ? hi : k;
    *k0 = lo;
    *k1 = hi > lo ? hi : lo;
}

/* A pixel whose whole window lies inside the input (groups == 1): folded bias. */
static void conv_pixel_interior(const qtc_conv_params_t *p, const int8_t *xwin, const int8_t *w,
                                const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                int8_t *y)
{
    const int32_t row_stride = p->dil_h * p->in_w * p->in_c; /* input step per ky */
    const int32_t wsize = p->k_h * p->k_w * p->in_c;          /* weights per out channel */
    /* dilation 1 along W: one contiguous k_w * in_c segment per kernel row */
    const int32_t seg = p->dil_w == 1 ? p->k_w * p->in_c : p->in_c;
    const int32_t nseg = p->dil_w == 1 ? 1 : p->k_w;
    const int32_t seg_stride = p->dil_w * p->in_c;
    int32_t o = 0, ky, s;
    for (; o + 4 <= p->out_c; o += 4) {
        int32_t acc[4];
        const int8_t *wo = w + o * wsize;
        acc[0] = bias[o];
        acc[1] = bias[o + 1];
        acc[2] = bias[o + 2];
        acc[3] = bias[o + 3];
        for (ky = 0; ky < p->k_h; ++ky) {
            for (s = 0; s < nseg; ++s) {
                dot4(xwin + ky * row_stride + s * seg_stride, wo + 4 * (ky * nseg + s) * seg, seg, 0, acc);
            }
        }
        y[o] = out_s8(acc[0], mult[o], shift[o], p->out_zp, p->act_min, p->act_max);
        y[o + 1] = out_s8(acc[1], mult[o + 1], shift[o + 1], p->out_zp, p->act_min, p->act_max);
        y[o + 2] = out_s8(acc[2], mult[o + 2], shift[o + 2], p->out_zp, p->act_min, p->act_max);
        y[o + 3] = out_s8(acc[3], mult[o + 3], shift[o + 3], p->out_zp, p->act_min, p->act_max);
    }
    for (; o < p->out_c; ++o) {
        const int8_t *wo = w + o * wsize;
        int32_t acc = bias[o];
        for (ky = 0; ky < p->k_h; ++ky) {
            for (s = 0; s < nseg; ++s) {
                acc += dot1(xwin + ky * row_stride + s * seg_stride, wo + (ky * nseg + s) * seg, seg, 0);
            }
        }
        y[o] = out_s8(acc, mult[o], shift[o], p->out_zp, p->act_min, p->act_max);
    }
}

/* Any pixel, any groups: raw bias + sum over the valid taps of w * (x - in_zp),
 * i.e. padded taps contribute nothing, exactly as in the reference. */
static void conv_pixel_border(const qtc_conv_params_t *p, const int8_t *x, int32_t b, int32_t iy0,
                              int32_t ix0, const int8_t *w, const int32_t *raw_bias,
                              const int32_t *mult, const int32_t *shift, int8_t *y)
{
    const int32_t ig = p->in_c / p->groups;
    const int32_t og = p->out_c / p->groups;
    const int32_t wsize = p->k_h * p->k_w * ig;
    const int32_t zp = p->in_zp;
    int32_t ky0, ky1, kx0, kx1, o = 0, ky, kx;
    valid_taps(iy0, p->dil_h, p->k_h, p->in_h, &ky0, &ky1);
    valid_taps(ix0, p->dil_w, p->k_w, p->in_w, &kx0, &kx1);
    if (p->groups == 1) { /* four output channels share each input load */
        for (; o + 4 <= p->out_c; o += 4) {
            const int8_t *wb = w + o * wsize; /* packed block of channels o..o+3 */
            int32_t acc[4];
            acc[0] = raw_bias[o];
            acc[1] = raw_bias[o + 1];
            acc[2] = raw_bias[o + 2];
            acc[3] = raw_bias[o + 3];
            for (ky = ky0; ky < ky1; ++ky) {
                const int8_t *xr = x + ((b * p->in_h + iy0 + ky * p->dil_h) * p->in_w + ix0) * p->in_c;
                if (p->dil_w == 1) {
                    dot4(xr + kx0 * p->in_c, wb + 4 * (ky * p->k_w + kx0) * ig, (kx1 - kx0) * ig, zp, acc);
                } else {
                    for (kx = kx0; kx < kx1; ++kx) {
                        dot4(xr + kx * p->dil_w * p->in_c, wb + 4 * (ky * p->k_w + kx) * ig, ig, zp, acc);
                    }
                }
            }
            y[o] = out_s8(acc[0], mult[o], shift[o], p->out_zp, p->act_min, p->act_max);
            y[o + 1] = out_s8(acc[1], mult[o + 1], shift[o + 1], p->out_zp, p->act_min, p->act_max);
            y[o + 2] = out_s8(acc[2], mult[o + 2], shift[o + 2], p->out_zp, p->act_min, p->act_max);
            y[o + 3] = out_s8(acc[3], mult[o + 3], shift[o + 3], p->out_zp, p->act_min, p->act_max);
        }
    }
    for (; o < p->out_c; ++o) {
        const int32_t c0 = (o / og) * ig;
        int32_t acc = raw_bias[o];
        for (ky = ky0; ky < ky1; ++ky) {
            const int8_t *xr = x + ((b * p->in_h + iy0 + ky * p->dil_h) * p->in_w + ix0) * p->in_c + c0;
            const int8_t *wr = w + o * wsize + ky * p->k_w * ig;
            for (kx = kx0; kx < kx1; ++kx) {
                acc += dot1(xr + kx * p->dil_w * p->in_c, wr + kx * ig, ig, zp);
            }
        }
        y[o] = out_s8(acc, mult[o], shift[o], p->out_zp, p->act_min, p->act_max);
    }
}

void qtc_conv_s8(const qtc_conv_params_t *p, const int8_t *x, const int8_t *w,
                 const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *y)
{
    const int32_t span_h = (p->k_h - 1) * p->dil_h; /* window extent - 1 */
    const int32_t span_w = (p->k_w - 1) * p->dil_w;
    const int32_t *raw_bias = bias + p->out_c;
    int32_t b, oy, ox;
    for (b = 0; b < p->batch; ++b) {
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_top;
            const int32_t rows_inside = iy0 >= 0 && iy0 + span_h < p->in_h;
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_left;
                if (p->groups == 1 && rows_inside && ix0 >= 0 && ix0 + span_w < p->in_w) {
                    conv_pixel_interior(p, x + ((b * p->in_h + iy0) * p->in_w + ix0) * p->in_c, w,
                                        bias, mult, shift, y);
                } else {
                    conv_pixel_border(p, x, b, iy0, ix0, w, raw_bias, mult, shift, y);
                }
                y += p->out_c;
            }
        }
    }
}

/* ----------------------------------------------------------- depthwise */

/* Any pixel, any channel multiplier: raw bias + valid taps of w * (x - in_zp). */
static void dw_pixel_border(const qtc_conv_params_t *p, const int8_t *x, int32_t b, int32_t iy0,
                            int32_t ix0, const int8_t *w, const int32_t *raw_bias,
                            const int32_t *mult, const int32_t *shift, int8_t *y)
{
    const int32_t cm = p->out_c / p->in_c; /* channel multiplier */
    const int32_t ksize = p->k_h * p->k_w;
    const int32_t dx = p->dil_w * p->in_c;
    const int32_t zp = p->in_zp;
    int32_t ky0, ky1, kx0, kx1, o, ky, kx;
    valid_taps(iy0, p->dil_h, p->k_h, p->in_h, &ky0, &ky1);
    valid_taps(ix0, p->dil_w, p->k_w, p->in_w, &kx0, &kx1);
    for (o = 0; o < p->out_c; ++o) {
        const int8_t *wk = w + o * ksize;
        int32_t acc = raw_bias[o];
        for (ky = ky0; ky < ky1; ++ky) {
            const int8_t *xp = x + ((b * p->in_h + iy0 + ky * p->dil_h) * p->in_w + ix0 + kx0 * p->dil_w)
                                   * p->in_c + o / cm;
            for (kx = kx0; kx < kx1; ++kx) {
                acc += (*xp - zp) * wk[ky * p->k_w + kx];
                xp += dx;
            }
        }
        y[o] = out_s8(acc, mult[o], shift[o], p->out_zp, p->act_min, p->act_max);
    }
}

/* Interior pixel: no bounds checks; xwin points at the window's top-left, channel 0. */
static void dw_pixel_interior(const qtc_conv_params_t *p, const int8_t *xwin, const int8_t *w,
                              const int32_t *bias, const int32_t *mult, const int32_t *shift,
                              int8_t *y)
{
    const int32_t cm = p->out_c / p->in_c;
    const int32_t ksize = p->k_h * p->k_w;
    const int32_t dy = p->dil_h * p->in_w * p->in_c;
    const int32_t dx = p->dil_w * p->in_c;
    int32_t o, ky, kx;
    for (o = 0; o < p->out_c; ++o) {
        const int8_t *wk = w + o * ksize;
        const int8_t *xr = xwin + o / cm;
        int32_t acc = bias[o];
        for (ky = 0; ky < p->k_h; ++ky) {
            const int8_t *xp = xr;
            for (kx = 0; kx < p->k_w; ++kx) {
                acc += *xp * *wk++;
                xp += dx;
            }
            xr += dy;
        }
        y[o] = out_s8(acc, mult[o], shift[o], p->out_zp, p->act_min, p->act_max);
    }
}

void qtc_depthwise_conv_s8(const qtc_conv_params_t *p, const int8_t *x, const int8_t *w,
                           const int32_t *bias, const int32_t *mult, const int32_t *shift,
                           int8_t *y)
{
    const int32_t span_h = (p->k_h - 1) * p->dil_h;
    const int32_t span_w = (p->k_w - 1) * p->dil_w;
    int32_t b, oy, ox;
    for (b = 0; b < p->batch; ++b) {
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_top;
            const int32_t rows_inside = iy0 >= 0 && iy0 + span_h < p->in_h;
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_left;
                if (rows_inside && ix0 >= 0 && ix0 + span_w < p->in_w) {
                    dw_pixel_interior(p, x + ((b * p->in_h + iy0) * p->in_w + ix0) * p->in_c, w, bias,
                                      mult, shift, y);
                } else {
                    dw_pixel_border(p, x, b, iy0, ix0, w, bias + p->out_c, mult, shift, y);
                }
                y += p->out_c;
            }
        }
    }
}

/* 3x3, multiplier 1: nine taps unrolled, weights [c][9]. */
static void dw3x3_pixel_interior(const qtc_conv_params_t *p, const int8_t *xwin, const int8_t *w,
                                 const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                 int8_t *y)
{
    const int32_t dy = p->dil_h * p->in_w * p->in_c;
    const int32_t dx = p->dil_w * p->in_c;
    const int32_t dx2 = 2 * dx;
    const int8_t *r0 = xwin;
    const int8_t *r1 = xwin + dy;
    const int8_t *r2 = r1 + dy;
    int32_t c;
    for (c = 0; c < p->in_c; ++c) {
        int32_t acc = bias[c];
        acc += r0[0] * w[0] + r0[dx] * w[1] + r0[dx2] * w[2];
        acc += r1[0] * w[3] + r1[dx] * w[4] + r1[dx2] * w[5];
        acc += r2[0] * w[6] + r2[dx] * w[7] + r2[dx2] * w[8];
        y[c] = out_s8(acc, mult[c], shift[c], p->out_zp, p->act_min, p->act_max);
        ++r0;
        ++r1;
        ++r2;
        w += 9;
    }
}

void qtc_depthwise_conv3x3_s8(const qtc_conv_params_t *p, const int8_t *x, const int8_t *w,
                              const int32_t *bias, const int32_t *mult, const int32_t *shift,
                              int8_t *y)
{
    const int32_t span_h = 2 * p->dil_h;
    const int32_t span_w = 2 * p->dil_w;
    int32_t b, oy, ox;
    for (b = 0; b < p->batch; ++b) {
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_top;
            const int32_t rows_inside = iy0 >= 0 && iy0 + span_h < p->in_h;
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_left;
                if (rows_inside && ix0 >= 0 && ix0 + span_w < p->in_w) {
                    dw3x3_pixel_interior(p, x + ((b * p->in_h + iy0) * p->in_w + ix0) * p->in_c, w,
                                         bias, mult, shift, y);
                } else {
                    dw_pixel_border(p, x, b, iy0, ix0, w, bias + p->out_c, mult, shift, y);
                }
                y += p->out_c;
            }
        }
    }
}
