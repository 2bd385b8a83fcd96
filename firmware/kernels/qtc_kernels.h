/* qtc_kernels.h: hand-written C99 int8 kernels for qtc's generated C.
 *
 * Every kernel is bit-exact with qtc's reference interpreter (tflite numerics,
 * the arithmetic of TFLM's reference_integer_ops):
 *   - activations are int8, NHWC (channels last), row-major;
 *   - weights are int8 with zero point 0, per-output-channel multipliers;
 *   - requantization is MultiplyByQuantizedMultiplier with double rounding:
 *     SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT;
 *   - conv / depthwise / fully-connected kernels live in qtc_kernels_conv.h.
 * Shifts follow TFLite's convention: shift > 0 shifts left, shift < 0 right.
 * Output pointers may equal input pointers for the elementwise kernels
 * (marked "in place ok"); no other aliasing is allowed.
 */
#ifndef QTC_KERNELS_H
#define QTC_KERNELS_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* return codes of the generated qtc_<model>_invoke() */
#define QTC_OK 0
#define QTC_ERR_ARG (-1)     /* a NULL in/out pointer */
#define QTC_ERR_SCRATCH (-2) /* an ESP-NN scratch buffer is too small */

#if defined(__GNUC__) || defined(__clang__)
#define QTC_ALIGNED(n) __attribute__((aligned(n)))
#else
#define QTC_ALIGNED(n)
#endif

/* ------------------------------------------------------------ arithmetic */

/* gemmlowp SaturatingRoundingDoublingHighMul: round(a * b / 2^31), saturating
 * the single overflow case a == b == INT32_MIN. */
static inline int32_t qtc_srdhm(int32_t a, int32_t b)
{
    int64_t ab, t;
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    t = ab + (ab >= 0 ? (int64_t)(1 << 30) : (int64_t)(1 - (1 << 30)));
    /* C's division truncates toward zero; shift magnitudes to avoid a libcall */
    return (int32_t)(t >= 0 ? (t >> 31) : -((-t) >> 31));
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero. */
static inline int32_t qtc_rdbypot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)((1u << exponent) - 1u); /* exponent in [0, 31] */
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLite MultiplyByQuantizedMultiplier (default double-rounding build). */
static inline int32_t qtc_requant(int32_t x, int32_t mult, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    const int32_t xl = (int32_t)((uint32_t)x << left); /* wraps like int32 C++ */
    return qtc_rdbypot(qtc_srdhm(xl, mult), right);
}

static inline int8_t qtc_clamp_s8(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* Conv, depthwise and fully-connected kernels: qtc_kernels_conv.h (inline,
 * specialised per layer by the compiler). */

/* --------------------------------------------------------- elementwise */

/* Binary ops broadcast over up to 4 collapsed dims: element (i0,i1,i2,i3)
 * reads a[sum(i_k * a_stride[k])] and b[...]; a stride of 0 broadcasts. */
typedef struct {
    int32_t shape[4];
    int32_t a_stride[4];
    int32_t b_stride[4];
    int32_t a_zp, b_zp;
    int32_t a_mult, a_shift;   /* TFLite Add/Sub: inputs to a common scale */
    int32_t b_mult, b_shift;
    int32_t left_shift;        /* 20 for int8 */
    int32_t out_mult, out_shift;
    int32_t out_zp;
    int32_t act_min, act_max;
} qtc_add_params_t;

/* TFLite int8 ADD / SUB (in place ok). */
void qtc_add_s8(const qtc_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *y);
void qtc_sub_s8(const qtc_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *y);

typedef struct {
    int32_t shape[4];
    int32_t a_stride[4];
    int32_t b_stride[4];
    int32_t a_zp, b_zp;
    int32_t out_mult, out_shift;
    int32_t out_zp;
    int32_t act_min, act_max;
} qtc_mul_params_t;

/* TFLite int8 MUL (in place ok). */
void qtc_mul_s8(const qtc_mul_params_t *p, const int8_t *a, const int8_t *b, int8_t *y);

/* y[i] = table[x[i] + 128]: any int8 -> int8 elementwise op (in place ok). */
void qtc_lut_s8(const int8_t table[256], const int8_t *x, int8_t *y, int32_t n);

/* y[i] = clamp(x[i], lo, hi): Relu/Relu6/Clip with equal in/out params (in place ok). */
void qtc_clamp_s8_n(const int8_t *x, int8_t *y, int32_t n, int32_t lo, int32_t hi);

/* ------------------------------------------------------------- pooling */

typedef struct {
    int32_t batch;
    int32_t in_h, in_w, channels;
    int32_t out_h, out_w;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left;
    int32_t pad_bottom, pad_right;  /* avg pool with count_include_pad only */
    int32_t count_include_pad;      /* 0: divide by the real elements (TFLite) */
    int32_t in_zp;                  /* what a padded element holds when counted */
    int32_t act_min, act_max;
} qtc_pool_params_t;

/* Max over the real elements of each window (padding never wins). */
void qtc_max_pool_s8(const qtc_pool_params_t *p, const int8_t *x, int8_t *y);

/* TFLite AveragePool: sum / count rounded half away from zero. */
void qtc_avg_pool_s8(const qtc_pool_params_t *p, const int8_t *x, int8_t *y);

/* ---------------------------------------------------------- reductions */

enum {
    QTC_REDUCE_REQUANT = 0,   /* TFLite QuantizedMeanOrSum: requant(sum - n * in_zp) + out_zp */
    QTC_REDUCE_MAX = 1        /* max of the raw integers */
};

/* x viewed as [outer][reduce][inner], reduced over the middle axis -> y[outer][inner]. */
typedef struct {
    int32_t outer, reduce, inner;
    int32_t mode;
    int32_t in_zp_times_n;     /* QTC_REDUCE_REQUANT: in_zp * n (1/n is in mult/shift) */
    int32_t mult, shift;
    int32_t out_zp;
    int32_t act_min, act_max;
} qtc_reduce_params_t;

void qtc_reduce_s8(const qtc_reduce_params_t *p, const int8_t *x, int8_t *y);

/* ------------------------------------------------------------- softmax */

/* TFLM int8 softmax over the middle axis of x viewed as [outer][depth][inner].
 * exp_table[d] / sum_table[d] hold, for diff = -d (d = 0..255), the Q0.31
 * exp_on_negative_values of the rescaled diff and the same in Q12.19. */
typedef struct {
    int32_t outer, depth, inner;
    int32_t diff_min;          /* diffs below it give -128 */
} qtc_softmax_params_t;

void qtc_softmax_s8(const qtc_softmax_params_t *p, const int32_t exp_table[256],
                    const int32_t sum_table[256], const int8_t *x, int8_t *y);

/* -------------------------------------------------------- data movement */

/* y (contiguous, shape[6]) = x[offset + sum(i_k * stride_k)], optionally
 * through a 256-entry requantization table (lut may be NULL).
 * Transpose, Slice, Split. */
typedef struct {
    int32_t shape[6];
    int32_t stride[6];
    int32_t offset;
} qtc_gather_params_t;

void qtc_gather_s8(const qtc_gather_params_t *p, const int8_t *lut, const int8_t *x, int8_t *y);

/* rows of row_len bytes: y[r * y_stride + i] = x[r * x_stride + i] (through lut
 * unless NULL). Concat copies each input into its slot with one call. */
void qtc_copy_rows_s8(const int8_t *x, int8_t *y, int32_t rows, int32_t row_len, int32_t x_stride,
                      int32_t y_stride, const int8_t *lut);

/* Constant pad of a (collapsed) 4-D tensor; lut may be NULL. */
typedef struct {
    int32_t in_shape[4];
    int32_t out_shape[4];
    int32_t before[4];         /* leading pad per dim (>= 0) */
    int32_t fill;
} qtc_pad_params_t;

void qtc_pad_s8(const qtc_pad_params_t *p, const int8_t *lut, const int8_t *x, int8_t *y);

#ifdef __cplusplus
}
#endif

#endif /* QTC_KERNELS_H */
