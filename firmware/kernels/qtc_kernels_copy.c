/* qtc_kernels_copy.c: data movement (Transpose, Slice, Split, Concat, Pad).
 *
 * The integers move unchanged; where an output's quant params differ from
 * its input's, the generated code passes a 256-entry requantization table
 * (TFLite Requantize evaluated at compile time for every int8 value).
 */
#include <string.h>

#include "qtc_kernels.h"

static void copy_run(const int8_t *x, int32_t step, int8_t *y, int32_t n, const int8_t *lut)
{
    int32_t i;
    if (lut == NULL && step == 1) {
        memcpy(y, x, (size_t)n);
        return;
    }
    if (lut == NULL) {
        for (i = 0; i < n; ++i) {
            y[i] = x[i * step];
        }
        return;
    }
    lut += 128;
    for (i = 0; i < n; ++i) {
        y[i] = lut[x[i * step]];
    }
}

void qtc_gather_s8(const qtc_gather_params_t *p, const int8_t *lut, const int8_t *x, int8_t *y)
{
    int32_t i0, i1, i2, i3, i4;
    const int32_t *s = p->shape, *st = p->stride;
    x += p->offset;
    for (i0 = 0; i0 < s[0]; ++i0) {
        for (i1 = 0; i1 < s[1]; ++i1) {
            for (i2 = 0; i2 < s[2]; ++i2) {
                for (i3 = 0; i3 < s[3]; ++i3) {
                    for (i4 = 0; i4 < s[4]; ++i4) {
                        const int8_t *xp = x + i0 * st[0] + i1 * st[1] + i2 * st[2] + i3 * st[3] + i4 * st[4];
                        copy_run(xp, st[5], y, s[5], lut);
                        y += s[5];
                    }
                }
            }
        }
    }
}

void qtc_copy_rows_s8(const int8_t *x, int8_t *y, int32_t rows, int32_t row_len, int32_t x_stride,
                      int32_t y_stride, const int8_t *lut)
{
    int32_t r;
    for (r = 0; r < rows; ++r) {
        copy_run(x + r * x_stride, 1, y + r * y_stride, row_len, lut);
    }
}

void qtc_pad_s8(const qtc_pad_params_t *p, const int8_t *lut, const int8_t *x, int8_t *y)
{
    const int32_t *is = p->in_shape, *os = p->out_shape, *b = p->before;
    int32_t i0, i1, i2;
    for (i0 = 0; i0 < os[0]; ++i0) {
        const int32_t j0 = i0 - b[0];
        for (i1 = 0; i1 < os[1]; ++i1) {
            const int32_t j1 = i1 - b[1];
            for (i2 = 0; i2 < os[2]; ++i2) {
                const int32_t j2 = i2 - b[2];
                if (j0 < 0 || j0 >= is[0] || j1 < 0 || j1 >= is[1] || j2 < 0 || j2 >= is[2]) {
                    memset(y, p->fill, (size_t)os[3]);
                } else {
                    const int8_t *xr = x + ((j0 * is[1] + j1) * is[2] + j2) * is[3];
                    memset(y, p->fill, (size_t)b[3]);
                    copy_run(xr, 1, y + b[3], is[3], lut);
                    memset(y + b[3] + is[3], p->fill, (size_t)(os[3] - b[3] - is[3]));
                }
                y += os[3];
            }
        }
    }
}
