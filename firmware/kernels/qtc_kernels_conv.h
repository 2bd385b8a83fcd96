/* qtc_kernels_conv.h: Conv2D/Conv1D, 1x1 conv, depthwise conv and fully connected,
 * specialised for each layer at compile time.
 *
 * Every kernel here is `static inline` and always inlined.  The generated model
 * file passes pointers to `static const` parameter structs, so after inlining
 * the compiler sees every shape, stride and mode as a constant: loops get
 * constant trip counts and are unrolled, offsets become immediates and the
 * paths a layer does not take disappear.  One copy of each loop nest is emitted
 * per layer, sized for that layer.
 *
 * Integer semantics are TFLM's reference_integer_ops (ConvPerChannel,
 * DepthwiseConvPerChannel, FullyConnectedPerChannel), bit for bit:
 *   acc = bias[c] + sum(w * (x - in_zp))
 *   y   = clamp(MultiplyByQuantizedMultiplier(acc, M[c], shift[c]) + out_zp, act_min, act_max)
 * The input zero point is folded into the bias (bias[c] - in_zp * sum(w[c])), so
 * the inner loops compute sum(w * x).  Padding: the kernel copies the k_h input
 * rows a row of outputs reads into a scratch band (k_h * band_w * in_c bytes),
 * with in_zp in the padded places, so every window is a plain window and padded
 * taps add w * in_zp, which the folded bias cancels exactly.
 *
 * Requantization (qtc_rq_t, one record per output channel):
 *   QTC_RQ_EXACT: qtc_requant (64-bit SaturatingRoundingDoublingHighMul, then
 *     RoundingDivideByPOT), for any multiplier and shift.
 *   QTC_RQ_FAST / QTC_RQ_FAST_NONNEG: the same two roundings, merged for a right
 *     shift r >= 1 and M >= 0 (what QuantizeMultiplier gives for real scales < 0.5):
 *       s1 = round_half_up(acc * M / 2^31) = hi32(acc * 2M + 2^31)
 *       y  = floor((s1 + 2^(r-1) - [s1 < 0]) / 2^r) + out_zp
 *     computed as hi = mulhsu(acc, 2M), lo = acc * 2M (low word),
 *     y = (hi + (lo >> 31) + add - [acc < 0]) >> r with add = 2^(r-1) + out_zp * 2^r.
 *     ([acc < 0] stands in for [s1 < 0]: they differ only when s1 == 0, where both
 *     give out_zp.)  The code generator proves at compile time, from the weights and
 *     bias, that no intermediate overflows int32; otherwise it picks QTC_RQ_EXACT.
 *     QTC_RQ_FAST_NONNEG drops the [acc < 0] term: valid when act_min >= out_zp,
 *     because then every negative s1 clamps to act_min either way.
 *   QTC_RQ_MULH: one high multiply, fitted at compile time (backends/c/requant_fit.py).
 *     The accumulator starts at 0 instead of the bias; then
 *       z = acc * 2^L + B                                    (B = bias * 2^L + a)
 *       y = z < 0 ? act_min : act_min + min(hi32(z * m) >> s, act_max - act_min)
 *     with L and s per layer (in the rq code, so they are immediates) and B, m per
 *     channel.  The output is a non-decreasing staircase in acc, as TFLite's is; the
 *     code generator computes TFLite's step points with the reference arithmetic and
 *     picks m and a so that every step lands on the same accumulator, over every
 *     accumulator an int8 input can give, and proves z fits int32.  z < 0 happens only
 *     below the lower clamp threshold (acc < T gives act_min exactly), so clamped
 *     outputs skip the multiply.  Layers without such a fit (in practice: outputs
 *     not clamped at the zero point) keep the modes above.  A kernel that pre-scales
 *     its weights by 2^L itself (the small fully connected table) uses L = 0: the
 *     accumulator then starts at B.
 *
 * Weight layouts, K = k_h * k_w * in_c / groups weights per output channel (OHWI):
 *   packed (groups == 1 conv, 1x1 conv, fully connected): output channels in
 *     blocks of four, interleaved: channel o = 4b + j, element k is at
 *     w[4b * K + 4k + j]; the last out_c % 4 channels form one block of width
 *     n = out_c % 4, interleaved the same way (w[4b * K + n * k + j]).
 *   plain (grouped conv): w[o * K + k];  depthwise: w[o * k_h * k_w + t].
 */
#ifndef QTC_KERNELS_CONV_H
#define QTC_KERNELS_CONV_H

#include <string.h>

#include "qtc_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define QTC_INLINE static inline __attribute__((always_inline))
#define QTC_RESTRICT __restrict__
#define QTC_PRAGMA(x) _Pragma(#x)
#define QTC_UNROLL(n) QTC_PRAGMA(GCC unroll n)
/* A compiler-only barrier: loads after it are not hoisted above it (keeps the
 * register pressure of unrolled code bounded), stores are not merged across it. */
#define QTC_BARRIER() __asm__ __volatile__("" ::: "memory")
#else
#define QTC_BARRIER() ((void)0)
#define QTC_INLINE static inline
#define QTC_RESTRICT
#define QTC_UNROLL(n)
#endif

/* Layers whose window has at most this many taps (k_h * k_w * in_c) keep one
 * output channel's weights in registers and sweep four pixels at a time. */
#ifndef QTC_WS_MAX_K
#define QTC_WS_MAX_K 12
#endif

enum {
    QTC_RQ_EXACT = 0,       /* any multiplier / shift: qtc_requant */
    QTC_RQ_FAST = 1,        /* right shift >= 1: merged roundings */
    QTC_RQ_FAST_NONNEG = 2, /* as FAST, and act_min >= out_zp: no sign term */
    QTC_RQ_MULH = 3         /* one fitted high multiply; L and s in the rq code */
};

/* A layer's rq code: the mode in bits 0..3; QTC_RQ_MULH adds L (bits 4..8) and s (bits 9..13). */
#define QTC_RQ_MODE(rq) ((rq) & 15)
#define QTC_RQ_LSH(rq) (((rq) >> 4) & 31)
#define QTC_RQ_RSH(rq) (((rq) >> 9) & 31)
/* What an accumulator starts at: the bias, or 0 when QTC_RQ_MULH adds it after scaling. */
#define QTC_ACC0(qc, rq) (QTC_RQ_MODE(rq) == QTC_RQ_MULH && QTC_RQ_LSH(rq) > 0 ? 0 : (qc).bias)

/* Per output channel: bias and requantization constants (see the top of the file). */
typedef struct {
    int32_t bias;  /* bias - in_zp * sum(w);        MULH: B */
    int32_t mult;  /* EXACT: M (Q0.31); FAST: the bits of the uint32 2M; MULH: m */
    int32_t add;   /* EXACT: out_zp;     FAST: 2^(r-1) + out_zp * 2^r; MULH: unused */
    int32_t shift; /* EXACT: TFLite shift (> 0: left); FAST: r >= 1 (right); MULH: unused */
} qtc_rq_t;

/* One struct describes a Conv2D, Conv1D (in_h = 1) or depthwise conv on NHWC. */
typedef struct {
    int32_t batch;
    int32_t in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w;
    int32_t dil_h, dil_w;
    int32_t pad_top, pad_left;
    int32_t groups;      /* depthwise: in_c */
    int32_t in_zp;       /* what a padded tap reads */
    int32_t out_zp;      /* (folded into qtc_rq_t.add) */
    int32_t act_min, act_max;
    int32_t band_w;      /* > 0: padded row width of the scratch copy; 0: no padding, read x */
    int32_t ws;          /* 1: few taps, weight-stationary loop (the scratch holds the whole
                            padded input); 0: the scratch holds k_h rows at a time */
    int32_t rq;          /* rq code: QTC_RQ_* (+ L, s) */
} qtc_conv_params_t;

typedef struct {
    int32_t rows;        /* product of all leading dims of the input */
    int32_t in_features;
    int32_t out_features;
    int32_t out_zp;      /* (folded into qtc_rq_t.add) */
    int32_t act_min, act_max;
    int32_t rq;          /* rq code: QTC_RQ_* (+ L, s) */
} qtc_fc_params_t;

/* ------------------------------------------------------------ requantize */

/* Store one output byte. */
#define QTC_PUT(dst, v) ((dst) = (int8_t)(v))

/* QTC_RQ_MULH clamped outputs (z < 0) skip the multiply with one branch where that is
 * cheaper than a branchless clamp: on RV32 (no conditional move).  Elsewhere (x86-64,
 * Xtensa: conditional moves / min / max) the same value comes from a branchless clamp. */
#ifndef QTC_RQ_SKIP_CLAMPED
#if defined(__riscv)
#define QTC_RQ_SKIP_CLAMPED 1
#else
#define QTC_RQ_SKIP_CLAMPED 0
#endif
#endif

/* QTC_RQ_MULH: store act_min when z < 0 (below the lower clamp threshold, no multiply),
 * else act_min + min(hi32(z * m) >> s, act_max - act_min).  (For z < 0, hi32(z * m) < 0
 * as m > 0, so the branchless form clamps it to act_min too.)  With the branch, each side
 * stores, and the barrier keeps GCC from merging the two stores into one of a
 * sign-extended value (two more instructions). */
QTC_INLINE void qtc_mulh_put(int8_t *dst, int32_t z, int32_t m, int s, int32_t lo, int32_t hi)
{
#if QTC_RQ_SKIP_CLAMPED
    if (z < 0) {
        QTC_PUT(*dst, lo);
        QTC_BARRIER();
    } else {
        int32_t u = (int32_t)(((int64_t)z * (int64_t)m) >> 32) >> s; /* mulh, srai */
        if (u > hi - lo) {
            u = hi - lo;
        }
        QTC_PUT(*dst, u + lo);
        QTC_BARRIER();
    }
#else
    int32_t u = (int32_t)(((int64_t)z * (int64_t)m) >> 32) >> s;
    u = u < 0 ? 0 : u;
    u = u > hi - lo ? hi - lo : u;
    QTC_PUT(*dst, u + lo);
#endif
}

/* acc: the accumulator as QTC_ACC0 started it; mode: the layer's rq code (not QTC_RQ_MULH). */
QTC_INLINE int32_t qtc_rq_s8(int32_t acc, const qtc_rq_t *q, int mode, int32_t lo, int32_t hi)
{
    int32_t v;
    if (mode == QTC_RQ_EXACT) {
        v = qtc_requant(acc, q->mult, q->shift) + q->add;
    } else {
        const int64_t prod = (int64_t)acc * (int64_t)(uint32_t)q->mult; /* mul + mulhsu */
        uint32_t t = (uint32_t)(prod >> 32) + ((uint32_t)prod >> 31) + (uint32_t)q->add;
        if (mode == QTC_RQ_FAST) {
            t += (uint32_t)(acc >> 31); /* -1 when acc < 0 */
        }
        v = (int32_t)t >> q->shift;
    }
    if (v < lo) {
        v = lo;
    }
    if (v > hi) {
        v = hi;
    }
    return v; /* in [lo, hi]: the caller stores it with QTC_PUT */
}

/* Requantize acc (started by QTC_ACC0) in any mode and store it in *dst. */
QTC_INLINE void qtc_rq_put(int8_t *dst, int32_t acc, const qtc_rq_t *q, int mode, int32_t lo, int32_t hi)
{
    if (QTC_RQ_MODE(mode) == QTC_RQ_MULH) {
        const int lsh = QTC_RQ_LSH(mode);
        /* |acc| * 2^L + |B| <= INT32_MAX: proven at compile time */
        qtc_mulh_put(dst, lsh > 0 ? acc * (int32_t)(1 << lsh) + q->bias : acc, q->mult, QTC_RQ_RSH(mode), lo, hi);
    } else {
        QTC_PUT(*dst, qtc_rq_s8(acc, q, mode, lo, hi));
    }
}

/* ------------------------------------------------------------------ conv */

/* Copy n input rows, iy0, iy0 + step, ..., into consecutive padded rows of band
 * (band_w * in_c bytes each): in_zp in the padded columns and in rows outside the input. */
QTC_INLINE void qtc_fill_rows(const qtc_conv_params_t *p, const int8_t *QTC_RESTRICT xb, int32_t iy0,
                              int32_t step, int32_t n, int8_t *QTC_RESTRICT band)
{
    const int32_t row = p->band_w * p->in_c;
    const int32_t left = p->pad_left * p->in_c;
    const int32_t inner = p->in_w * p->in_c;
    const int32_t right = row - left - inner;
    const int fill = (int)(int8_t)p->in_zp;
    int32_t r;
    for (r = 0; r < n; ++r) {
        int8_t *d = band + r * row;
        const int32_t iy = iy0 + r * step;
        if (iy < 0 || iy >= p->in_h) {
            memset(d, fill, (size_t)row);
            continue;
        }
        if (left > 0) {
            memset(d, fill, (size_t)left);
        }
        memcpy(d + left, xb + iy * inner, (size_t)inner);
        if (right > 0) {
            memset(d + left + inner, fill, (size_t)right);
        }
    }
}

/* np (1 or 2) pixels x nc (1..4) output channels of a groups == 1 conv or an FC.
 * xw: pixel 0's window (row ky at xw + ky * rs); pixel 1's is px_step further.
 * Each window row is nseg segments of seg contiguous inputs, seg_step apart.
 * wb: the packed weight block of these channels (width nc).  Outputs: y[j] and
 * y[y_step + j]. */
QTC_INLINE void qtc_conv_block(const int8_t *QTC_RESTRICT xw, const int8_t *QTC_RESTRICT wb,
                               const qtc_rq_t *QTC_RESTRICT q, int8_t *QTC_RESTRICT y, const int np,
                               const int nc, const int32_t kh, const int32_t rs, const int32_t nseg,
                               const int32_t seg, const int32_t seg_step, const int32_t px_step,
                               const int32_t y_step, const int mode, const int32_t lo, const int32_t hi)
{
    int32_t a0 = QTC_ACC0(q[0], mode), a1 = nc > 1 ? QTC_ACC0(q[1], mode) : 0;
    int32_t a2 = nc > 2 ? QTC_ACC0(q[2], mode) : 0, a3 = nc > 3 ? QTC_ACC0(q[3], mode) : 0;
    int32_t b0 = a0, b1 = a1, b2 = a2, b3 = a3;
    const int8_t *wp = wb;
    int32_t ky, s, k;
    for (ky = 0; ky < kh; ++ky) {
        for (s = 0; s < nseg; ++s) {
            const int8_t *xp = xw + ky * rs + s * seg_step;
            QTC_UNROLL(8)
            for (k = 0; k < seg; ++k) {
                const int32_t xa = xp[k];
                const int32_t xb = np > 1 ? xp[k + px_step] : 0;
                const int32_t w0 = wp[0];
                a0 += xa * w0;
                b0 += xb * w0;
                if (nc > 1) {
                    const int32_t w1 = wp[1];
                    a1 += xa * w1;
                    b1 += xb * w1;
                }
                if (nc > 2) {
                    const int32_t w2 = wp[2];
                    a2 += xa * w2;
                    b2 += xb * w2;
                }
                if (nc > 3) {
                    const int32_t w3 = wp[3];
                    a3 += xa * w3;
                    b3 += xb * w3;
                }
                wp += nc;
            }
        }
    }
    qtc_rq_put(&y[0], a0, &q[0], mode, lo, hi);
    if (np > 1) {
        qtc_rq_put(&y[y_step], b0, &q[0], mode, lo, hi);
    }
    if (nc > 1) {
        qtc_rq_put(&y[1], a1, &q[1], mode, lo, hi);
        if (np > 1) {
            qtc_rq_put(&y[y_step + 1], b1, &q[1], mode, lo, hi);
        }
    }
    if (nc > 2) {
        qtc_rq_put(&y[2], a2, &q[2], mode, lo, hi);
        if (np > 1) {
            qtc_rq_put(&y[y_step + 2], b2, &q[2], mode, lo, hi);
        }
    }
    if (nc > 3) {
        qtc_rq_put(&y[3], a3, &q[3], mode, lo, hi);
        if (np > 1) {
            qtc_rq_put(&y[y_step + 3], b3, &q[3], mode, lo, hi);
        }
    }
}

/* One output row of a groups == 1 conv: pairs of pixels x blocks of 4 channels. */
QTC_INLINE void qtc_conv_row_blocks(const qtc_conv_params_t *p, const int8_t *QTC_RESTRICT base, int32_t rs,
                                    const int8_t *QTC_RESTRICT w, const qtc_rq_t *QTC_RESTRICT q,
                                    int8_t *QTC_RESTRICT y)
{
    const int32_t C = p->in_c, OC = p->out_c, OW = p->out_w;
    const int32_t K = p->k_h * p->k_w * C;
    const int32_t nseg = p->dil_w == 1 ? 1 : p->k_w;
    const int32_t seg = p->dil_w == 1 ? p->k_w * C : C;
    const int32_t seg_step = p->dil_w * C;
    const int32_t px = p->stride_w * C;
    const int32_t nb = OC / 4, tail = OC % 4;
    const int mode = (int)p->rq;
    const int32_t lo = p->act_min, hi = p->act_max;
    int32_t ox = 0, b;
    for (; ox + 2 <= OW; ox += 2) {
        const int8_t *xw = base + ox * px;
        for (b = 0; b < nb; ++b) {
            qtc_conv_block(xw, w + b * 4 * K, q + 4 * b, y + 4 * b, 2, 4, p->k_h, rs, nseg, seg, seg_step, px, OC,
                           mode, lo, hi);
        }
        if (tail) {
            qtc_conv_block(xw, w + nb * 4 * K, q + 4 * nb, y + 4 * nb, 2, tail, p->k_h, rs, nseg, seg, seg_step,
                           px, OC, mode, lo, hi);
        }
        y += 2 * OC;
    }
    if (ox < OW) {
        const int8_t *xw = base + ox * px;
        for (b = 0; b < nb; ++b) {
            qtc_conv_block(xw, w + b * 4 * K, q + 4 * b, y + 4 * b, 1, 4, p->k_h, rs, nseg, seg, seg_step, px, OC,
                           mode, lo, hi);
        }
        if (tail) {
            qtc_conv_block(xw, w + nb * 4 * K, q + 4 * nb, y + 4 * nb, 1, tail, p->k_h, rs, nseg, seg, seg_step,
                           px, OC, mode, lo, hi);
        }
    }
}

/* Inputs one 4-pixel step of the weight-stationary loop reads per kernel row. */
#define QTC_WS_SPAN(p) (3 * (p)->stride_w * (p)->in_c + ((p)->k_w - 1) * (p)->dil_w * (p)->in_c + (p)->in_c)

/* Pixel P of a 4-pixel step takes input e of kernel row ky (e counted from pixel 0's
 * window start) when it falls on one of its taps. */
#define QTC_WS_MAC(acc, P)                                                                  \
    do {                                                                                    \
        const int32_t d_ = e - (P) * px;                                                    \
        if (d_ >= 0 && d_ < (KW - 1) * dx + C && d_ % dx < C) {                             \
            acc += xv * WK((ky * KW + d_ / dx) * C + d_ % dx);                              \
        }                                                                                   \
    } while (0)

/* A groups == 1 conv with few taps (K = k_h * k_w * in_c <= QTC_WS_MAX_K): one output
 * channel at a time with its K weights in registers, four pixels per step; each input
 * is loaded once per step and multiplied into every pixel window that holds it.
 * base: the input (or its padded copy), rows row_stride bytes apart. */
QTC_INLINE void qtc_conv_ws(const qtc_conv_params_t *p, const int8_t *QTC_RESTRICT base, int32_t row_stride,
                            const int8_t *QTC_RESTRICT w, const qtc_rq_t *QTC_RESTRICT q, int8_t *QTC_RESTRICT y)
{
    const int32_t C = p->in_c, OC = p->out_c, OW = p->out_w, KW = p->k_w;
    const int32_t K = p->k_h * KW * C;
    const int32_t px = p->stride_w * C, dx = p->dil_w * C, rs = p->dil_h * row_stride;
    const int32_t E = QTC_WS_SPAN(p);
    const int32_t nb = OC / 4, tail = OC % 4;
    const int mode = (int)p->rq;
    const int32_t lo = p->act_min, hi = p->act_max;
    int32_t c;
    for (c = 0; c < OC; ++c) {
        const int32_t width = c / 4 < nb ? 4 : tail; /* packed block width of this channel */
        const int8_t *wc = w + (c / 4) * 4 * K + c % 4;
        const qtc_rq_t qc = q[c];
        int32_t wk[QTC_WS_MAX_K];
        int32_t t, oy;
        QTC_UNROLL(16)
        for (t = 0; t < K; ++t) {
            wk[t] = wc[t * width];
        }
        for (oy = 0; oy < p->out_h; ++oy) {
            const int8_t *xrow = base + oy * p->stride_h * row_stride;
            int8_t *yc = y + oy * OW * OC + c;
            int32_t ox = 0;
#define WK(t) wc[(t) * width] /* reloaded each step: frees registers for the accumulators */
            for (; ox + 4 <= OW; ox += 4) {
                int32_t a0 = QTC_ACC0(qc, mode), a1 = a0, a2 = a0, a3 = a0, ky, e;
                QTC_UNROLL(16)
                for (ky = 0; ky < p->k_h; ++ky) {
                    const int8_t *xr = xrow + ky * rs + ox * px;
                    QTC_UNROLL(64)
                    for (e = 0; e < E; ++e) {
                        const int32_t xv = xr[e];
                        QTC_WS_MAC(a0, 0);
                        QTC_WS_MAC(a1, 1);
                        QTC_WS_MAC(a2, 2);
                        QTC_WS_MAC(a3, 3);
                    }
                    if (ky + 1 < p->k_h) {
                        QTC_BARRIER(); /* one kernel row's inputs live at a time */
                    }
                }
                qtc_rq_put(&yc[0], a0, &qc, mode, lo, hi);
                qtc_rq_put(&yc[OC], a1, &qc, mode, lo, hi);
                qtc_rq_put(&yc[2 * OC], a2, &qc, mode, lo, hi);
                qtc_rq_put(&yc[3 * OC], a3, &qc, mode, lo, hi);
                yc += 4 * OC;
            }
#undef WK
#define WK(t) wk[t]
            for (; ox < OW; ++ox) {
                int32_t a0 = QTC_ACC0(qc, mode), ky, e;
                QTC_UNROLL(16)
                for (ky = 0; ky < p->k_h; ++ky) {
                    const int8_t *xr = xrow + ky * rs + ox * px;
                    QTC_UNROLL(64)
                    for (e = 0; e < (KW - 1) * dx + C; ++e) {
                        const int32_t xv = xr[e];
                        QTC_WS_MAC(a0, 0);
                    }
                }
                qtc_rq_put(&yc[0], a0, &qc, mode, lo, hi);
                yc += OC;
            }
#undef WK
        }
    }
}

/* One output row of a grouped conv (plain weights). */
QTC_INLINE void qtc_conv_row_grouped(const qtc_conv_params_t *p, const int8_t *QTC_RESTRICT base, int32_t rs,
                                     const int8_t *QTC_RESTRICT w, const qtc_rq_t *QTC_RESTRICT q,
                                     int8_t *QTC_RESTRICT y)
{
    const int32_t C = p->in_c, OC = p->out_c;
    const int32_t ig = C / p->groups, og = OC / p->groups;
    const int32_t K = p->k_h * p->k_w * ig;
    const int32_t px = p->stride_w * C, dx = p->dil_w * C;
    int32_t ox, o, ky, kx, i;
    for (ox = 0; ox < p->out_w; ++ox) {
        const int8_t *xw = base + ox * px;
        for (o = 0; o < OC; ++o) {
            const int8_t *wo = w + o * K;
            int32_t acc = QTC_ACC0(q[o], p->rq);
            for (ky = 0; ky < p->k_h; ++ky) {
                for (kx = 0; kx < p->k_w; ++kx) {
                    const int8_t *xs = xw + ky * rs + kx * dx + (o / og) * ig;
                    for (i = 0; i < ig; ++i) {
                        acc += xs[i] * *wo++;
                    }
                }
            }
            qtc_rq_put(&y[o], acc, &q[o], (int)p->rq, p->act_min, p->act_max);
        }
        y += OC;
    }
}

/* One output row of a depthwise conv (weights [out_c][k_h * k_w]). */
QTC_INLINE void qtc_dw_row(const qtc_conv_params_t *p, const int8_t *QTC_RESTRICT base, int32_t rs,
                           const int8_t *QTC_RESTRICT w, const qtc_rq_t *QTC_RESTRICT q, int8_t *QTC_RESTRICT y)
{
    const int32_t C = p->in_c, OC = p->out_c, KW = p->k_w;
    const int32_t T = p->k_h * KW, cm = OC / C;
    const int32_t px = p->stride_w * C, dx = p->dil_w * C;
    int32_t ox, o, t;
    for (ox = 0; ox < p->out_w; ++ox) {
        const int8_t *xw = base + ox * px;
        const int8_t *wo = w;
        for (o = 0; o < OC; ++o) {
            const int8_t *xc = xw + o / cm;
            int32_t acc = QTC_ACC0(q[o], p->rq);
            QTC_UNROLL(25)
            for (t = 0; t < T; ++t) {
                acc += xc[(t / KW) * rs + (t % KW) * dx] * wo[t];
            }
            wo += T;
            qtc_rq_put(&y[o], acc, &q[o], (int)p->rq, p->act_min, p->act_max);
        }
        y += OC;
    }
}

enum { QTC_CONV_DENSE = 0, QTC_CONV_GROUPED = 1, QTC_CONV_DEPTHWISE = 2 };

QTC_INLINE void qtc_conv_any(const qtc_conv_params_t *p, const int kind, const int8_t *QTC_RESTRICT x,
                             const int8_t *QTC_RESTRICT w, const qtc_rq_t *QTC_RESTRICT q,
                             int8_t *QTC_RESTRICT scratch, int8_t *QTC_RESTRICT y)
{
    const int32_t C = p->in_c, IW = p->in_w, IH = p->in_h;
    int32_t b, oy;
    for (b = 0; b < p->batch; ++b) {
        const int8_t *xb = x + b * IH * IW * C;
        if (kind == QTC_CONV_DENSE && p->ws) { /* the whole (padded) input at once */
            const int32_t rows = (p->out_h - 1) * p->stride_h + (p->k_h - 1) * p->dil_h + 1;
            if (p->band_w > 0) {
                qtc_fill_rows(p, xb, -p->pad_top, 1, rows, scratch);
                qtc_conv_ws(p, scratch, p->band_w * C, w, q, y);
            } else {
                qtc_conv_ws(p, xb, IW * C, w, q, y);
            }
            y += p->out_h * p->out_w * p->out_c;
            continue;
        }
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_top;
            const int8_t *base;
            int32_t rs;
            if (p->band_w > 0) { /* the k_h rows this output row reads, padded */
                qtc_fill_rows(p, xb, iy0, p->dil_h, p->k_h, scratch);
                base = scratch;
                rs = p->band_w * C;
            } else { /* no padding: pad_top = pad_left = 0, every window is inside */
                base = xb + iy0 * IW * C;
                rs = p->dil_h * IW * C;
            }
            if (kind == QTC_CONV_DEPTHWISE) {
                qtc_dw_row(p, base, rs, w, q, y);
            } else if (kind == QTC_CONV_GROUPED) {
                qtc_conv_row_grouped(p, base, rs, w, q, y);
            } else {
                qtc_conv_row_blocks(p, base, rs, w, q, y);
            }
            y += p->out_w * p->out_c;
        }
    }
}

/* Conv2D / Conv1D, any stride, dilation, padding and groups (groups > 1: plain weights;
 * groups == 1: packed).  scratch: k_h * band_w * in_c bytes when band_w > 0, else unused. */
QTC_INLINE void qtc_conv_s8(const qtc_conv_params_t *p, const int8_t *x, const int8_t *w, const qtc_rq_t *q,
                            int8_t *scratch, int8_t *y)
{
    qtc_conv_any(p, p->groups == 1 ? QTC_CONV_DENSE : QTC_CONV_GROUPED, x, w, q, scratch, y);
}

/* 1x1, no padding, groups 1, any stride (packed weights). */
QTC_INLINE void qtc_conv1x1_s8(const qtc_conv_params_t *p, const int8_t *x, const int8_t *w, const qtc_rq_t *q,
                               int8_t *y)
{
    qtc_conv_any(p, QTC_CONV_DENSE, x, w, q, NULL, y);
}

/* Depthwise (groups == in_c, out_c = in_c * multiplier): weights [out_c][k_h][k_w]. */
QTC_INLINE void qtc_depthwise_conv_s8(const qtc_conv_params_t *p, const int8_t *x, const int8_t *w,
                                      const qtc_rq_t *q, int8_t *scratch, int8_t *y)
{
    qtc_conv_any(p, QTC_CONV_DEPTHWISE, x, w, q, scratch, y);
}

/* Depthwise 3x3, multiplier 1: the same loop nest, its nine taps unrolled. */
QTC_INLINE void qtc_depthwise_conv3x3_s8(const qtc_conv_params_t *p, const int8_t *x, const int8_t *w,
                                         const qtc_rq_t *q, int8_t *scratch, int8_t *y)
{
    qtc_conv_any(p, QTC_CONV_DEPTHWISE, x, w, q, scratch, y);
}

/* ------------------------------------------------------- fully connected */

/* Inputs per row up to which the fully-connected kernel keeps the row in registers
 * and computes one output at a time. */
#ifndef QTC_FC_SMALL_K
#define QTC_FC_SMALL_K 8
#endif

/* One output of a small fully-connected row: the row is in xk, the weights of
 * output j of a packed block of width nc start at wb + j. */
#define QTC_FC_SMALL_OUT(j, nc)                                                              \
    do {                                                                                    \
        int32_t acc_ = QTC_ACC0(q[j], mode), k_;                                            \
        QTC_UNROLL(8)                                                                       \
        for (k_ = 0; k_ < K; ++k_) {                                                        \
            acc_ += xk[k_] * wb[(nc) * k_ + (j)];                                           \
        }                                                                                   \
        qtc_rq_put(&yr[j], acc_, &q[j], mode, lo, hi);                                      \
        QTC_BARRIER();                                                                      \
    } while (0)

/* A fully-connected layer with few inputs per row (K <= QTC_FC_SMALL_K). */
QTC_INLINE void qtc_fc_small(const qtc_fc_params_t *p, const int8_t *QTC_RESTRICT x,
                             const int8_t *QTC_RESTRICT w, const qtc_rq_t *QTC_RESTRICT q0,
                             int8_t *QTC_RESTRICT y)
{
    const int32_t K = p->in_features, OC = p->out_features;
    const int32_t nb = OC / 4, tail = OC % 4;
    const int mode = (int)p->rq;
    const int32_t lo = p->act_min, hi = p->act_max;
    int32_t r, b, k;
    for (r = 0; r < p->rows; ++r) {
        int32_t xk[QTC_FC_SMALL_K];
        const int8_t *wb = w;
        const qtc_rq_t *q = q0;
        int8_t *yr = y + r * OC;
        QTC_UNROLL(8)
        for (k = 0; k < K; ++k) {
            xk[k] = x[r * K + k];
        }
        for (b = 0; b < nb; ++b) {
            QTC_FC_SMALL_OUT(0, 4);
            QTC_FC_SMALL_OUT(1, 4);
            QTC_FC_SMALL_OUT(2, 4);
            QTC_FC_SMALL_OUT(3, 4);
            wb += 4 * K;
            q += 4;
            yr += 4;
        }
        if (tail > 0) {
            QTC_FC_SMALL_OUT(0, tail);
        }
        if (tail > 1) {
            QTC_FC_SMALL_OUT(1, tail);
        }
        if (tail > 2) {
            QTC_FC_SMALL_OUT(2, tail);
        }
    }
}

/* One output of the fully-connected table: the row is in xk; its record starts at t + (j) * T. */
#define QTC_FC_TABLE_OUT(j)                                                                 \
    do {                                                                                    \
        const int32_t *tj_ = t + (j) * T;                                                   \
        int32_t z_ = tj_[0], k_;                                                            \
        QTC_UNROLL(8)                                                                       \
        for (k_ = 0; k_ < K; ++k_) {                                                        \
            z_ += xk[k_] * tj_[2 + k_];                                                     \
        }                                                                                   \
        qtc_mulh_put(&yr[j], z_, tj_[1], QTC_RQ_RSH(p->rq), lo, hi);                        \
    } while (0)

/* A fully-connected layer with few inputs per row (K <= QTC_FC_SMALL_K) in QTC_RQ_MULH,
 * from one int32 table with a record of T = K + 2 words per output:
 *   {B, m, w[0] * 2^L, ..., w[K-1] * 2^L}
 * (L folded into the weights, so the rq code has L = 0 and z starts at B).  The row
 * stays in registers; per output: K loads, multiplies and adds, one load of m, mulh,
 * srai, the clamp, one store; one pointer walks the table. */
QTC_INLINE void qtc_fc_table_s8(const qtc_fc_params_t *p, const int8_t *QTC_RESTRICT x,
                                const int32_t *QTC_RESTRICT table, int8_t *QTC_RESTRICT y)
{
    const int32_t K = p->in_features, OC = p->out_features, T = K + 2;
    const int32_t lo = p->act_min, hi = p->act_max;
    int32_t r, o, k;
    for (r = 0; r < p->rows; ++r) {
        int32_t xk[QTC_FC_SMALL_K];
        const int32_t *t = table;
        int8_t *yr = y + r * OC;
        QTC_UNROLL(8)
        for (k = 0; k < K; ++k) {
            xk[k] = x[r * K + k];
        }
        for (o = 0; o + 4 <= OC; o += 4) {
            QTC_FC_TABLE_OUT(0);
            QTC_FC_TABLE_OUT(1);
            QTC_FC_TABLE_OUT(2);
            QTC_FC_TABLE_OUT(3);
            t += 4 * T;
            yr += 4;
        }
        for (; o < OC; ++o) {
            QTC_FC_TABLE_OUT(0);
            t += T;
            yr += 1;
        }
    }
}

/* y[r][o] = requant(bias[o] + sum_i x[r][i] * w[o][i]); weights packed by 4 outputs. */
QTC_INLINE void qtc_fully_connected_s8(const qtc_fc_params_t *p, const int8_t *QTC_RESTRICT x,
                                       const int8_t *QTC_RESTRICT w, const qtc_rq_t *QTC_RESTRICT q,
                                       int8_t *QTC_RESTRICT y)
{
    const int32_t K = p->in_features, OC = p->out_features;
    const int32_t nb = OC / 4, tail = OC % 4;
    const int mode = (int)p->rq;
    const int32_t lo = p->act_min, hi = p->act_max;
    int32_t r = 0, b;
    if (K <= QTC_FC_SMALL_K) {
        qtc_fc_small(p, x, w, q, y);
        return;
    }
    for (; r + 2 <= p->rows; r += 2) {
        for (b = 0; b < nb; ++b) {
            qtc_conv_block(x, w + b * 4 * K, q + 4 * b, y + 4 * b, 2, 4, 1, 0, 1, K, 0, K, OC, mode, lo, hi);
        }
        if (tail) {
            qtc_conv_block(x, w + nb * 4 * K, q + 4 * nb, y + 4 * nb, 2, tail, 1, 0, 1, K, 0, K, OC, mode, lo, hi);
        }
        x += 2 * K;
        y += 2 * OC;
    }
    if (r < p->rows) {
        for (b = 0; b < nb; ++b) {
            qtc_conv_block(x, w + b * 4 * K, q + 4 * b, y + 4 * b, 1, 4, 1, 0, 1, K, 0, K, OC, mode, lo, hi);
        }
        if (tail) {
            qtc_conv_block(x, w + nb * 4 * K, q + 4 * nb, y + 4 * nb, 1, tail, 1, 0, 1, K, 0, K, OC, mode, lo, hi);
        }
    }
}

#ifdef __cplusplus
}
#endif

#endif /* QTC_KERNELS_CONV_H */
