/* qtc_layer_profile.h: per-layer retired-instruction counters for a bench build.
 *
 * Force-included (gcc -include) into the generated model file by
 * bench/c_vs_tflm.py.  The generated invoke() wraps every node's kernel call in
 * QTC_LAYER_BEGIN(i) / QTC_LAYER_END(i), which are empty unless this header
 * defines them: with QTC_PROFILE_LAYERS on RV32 they read `minstret` (retired
 * instructions) and add the difference to qtc_prof_acc[i].
 */
#ifndef QTC_LAYER_PROFILE_H
#define QTC_LAYER_PROFILE_H

#ifndef __ASSEMBLER__
#include <stdint.h>

#define QTC_PROF_MAX_LAYERS 256

#if defined(QTC_PROFILE_LAYERS) && defined(__riscv)
extern uint32_t qtc_prof_t0;
extern uint32_t qtc_prof_acc[QTC_PROF_MAX_LAYERS];

static inline uint32_t qtc_prof_now(void)
{
    uint32_t v;
    __asm__ volatile("csrr %0, minstret" : "=r"(v) : : "memory");
    return v;
}

#define QTC_LAYER_BEGIN(i) (qtc_prof_t0 = qtc_prof_now())
#define QTC_LAYER_END(i) (qtc_prof_acc[(i)] += qtc_prof_now() - qtc_prof_t0)
#endif
#endif /* __ASSEMBLER__ */

#endif /* QTC_LAYER_PROFILE_H */
