/* qtc_kernels_eltwise.c: broadcasting Add/Sub/Mul, lookup tables, clamps.
 *
 * Integer semantics (TFLM reference_integer_ops add.h / mul.h):
 *   Add/Sub: a' = requant((a - a_zp) << 20, a_mult, a_shift), b' likewise,
 *            y = clamp(requant(a' +/- b', out_mult, out_shift) + out_zp)
 *   Mul:     y = clamp(requant((a - a_zp) * (b - b_zp), out_mult, out_shift) + out_zp)
 * Every output element is written after both of its inputs are read, so the
 * output may alias an input of the same shape.
 */
#include "qtc_kernels.h"

static inline int8_t add_one(const qtc_add_params_t *p, int32_t va, int32_t vb, int32_t sign)
{
    const int32_t sa = qtc_requant((va - p->a_zp) * (1 << p->left_shift), p->a_mult, p->a_shift);
    const int32_t sb = qtc_requant((vb - p->b_zp) * (1 << p->left_shift), p->b_mult, p->b_shift);
    const int32_t raw = sign > 0 ? sa + sb : sa - sb;
    return qtc_clamp_s8(qtc_requant(raw, p->out_mult, p->out_shift) + p->out_zp, p->act_min, p->act_max);
}

/* sign is a constant at each call site: the compiler specialises the loop. */
static inline void add_sub(const qtc_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *y,
                           int32_t sign)
{
    int32_t i0, i1, i2, i3;
    const int32_t as3 = p->a_stride[3], bs3 = p->b_stride[3];
    for (i0 = 0; i0 < p->shape[0]; ++i0) {
        for (i1 = 0; i1 < p->shape[1]; ++i1) {
            for (i2 = 0; i2 < p->shape[2]; ++i2) {
                const int8_t *pa = a + i0 * p->a_stride[0] + i1 * p->a_stride[1] + i2 * p->a_stride[2];
                const int8_t *pb = b + i0 * p->b_stride[0] + i1 * p->b_stride[1] + i2 * p->b_stride[2];
                for (i3 = 0; i3 < p->shape[3]; ++i3) {
                    *y++ = add_one(p, *pa, *pb, sign);
                    pa += as3;
                    pb += bs3;
                }
            }
        }
    }
}

void qtc_add_s8(const qtc_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *y)
{
    add_sub(p, a, b, y, 1);
}

void qtc_sub_s8(const qtc_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *y)
{
    add_sub(p, a, b, y, -1);
}

void qtc_mul_s8(const qtc_mul_params_t *p, const int8_t *a, const int8_t *b, int8_t *y)
{
    int32_t i0, i1, i2, i3;
    const int32_t as3 = p->a_stride[3], bs3 = p->b_stride[3];
    for (i0 = 0; i0 < p->shape[0]; ++i0) {
        for (i1 = 0; i1 < p->shape[1]; ++i1) {
            for (i2 = 0; i2 < p->shape[2]; ++i2) {
                const int8_t *pa = a + i0 * p->a_stride[0] + i1 * p->a_stride[1] + i2 * p->a_stride[2];
                const int8_t *pb = b + i0 * p->b_stride[0] + i1 * p->b_stride[1] + i2 * p->b_stride[2];
                for (i3 = 0; i3 < p->shape[3]; ++i3) {
                    const int32_t prod = (*pa - p->a_zp) * (*pb - p->b_zp);
                    *y++ = qtc_clamp_s8(qtc_requant(prod, p->out_mult, p->out_shift) + p->out_zp,
                                        p->act_min, p->act_max);
                    pa += as3;
                    pb += bs3;
                }
            }
        }
    }
}

void qtc_lut_s8(const int8_t table[256], const int8_t *x, int8_t *y, int32_t n)
{
    const int8_t *t = table + 128; /* t[v] for v in [-128, 127] */
    int32_t i;
    for (i = 0; i < n; ++i) {
        y[i] = t[x[i]];
    }
}

void qtc_clamp_s8_n(const int8_t *x, int8_t *y, int32_t n, int32_t lo, int32_t hi)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        y[i] = qtc_clamp_s8(x[i], lo, hi);
    }
}
