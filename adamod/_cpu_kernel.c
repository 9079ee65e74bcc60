/* Fused AdaMod/DiffMod update for contiguous CPU tensors: one read and one write of every
 * state element. Compiled on first use by adamod/_cpu_kernel.py (gcc/clang, -O3 -march=native).
 * Each call updates the elements [lo, hi) of the concatenation of n tensors, so a caller can
 * split one step across threads; stats (5 doubles) accumulates the bound telemetry of the range.
 */
#include <math.h>
#include <stdint.h>

#define DEFINE_KERNEL(NAME, T, SQRT, EXP)                                                     \
void NAME(int64_t n, T **p, T **g, T **m, T **v, T **s, T **prev, const int64_t *sizes,   \
          const double *c, const double *eps, const double *scale, int64_t lo, int64_t hi,     \
          double b1, double b2, double b3, double decay, double sign, int64_t version,         \
          double *stats) {                                                                     \
    const T tb1 = (T)b1, tb2 = (T)b2, tb3 = (T)b3, tdecay = (T)decay, tsign = (T)sign;         \
    const T ob1 = (T)(1.0 - b1), ob2 = (T)(1.0 - b2), ob3 = (T)(1.0 - b3);                     \
    int64_t base = 0;                                                                          \
    for (int64_t t = 0; t < n && base < hi; base += sizes[t], ++t) {                           \
        int64_t start = lo > base ? lo - base : 0;                                             \
        int64_t end = hi - base < sizes[t] ? hi - base : sizes[t];                             \
        if (end <= start) continue;                                                            \
        T *pp = p[t], *gg = g[t], *mm = m[t], *vv = v[t], *ss = s[t];                          \
        const T tc = (T)c[t], te = (T)eps[t], tscale = (T)scale[t];                            \
        if (version < 0 && !stats) {                                                           \
            _Pragma("omp simd")                                                                \
            for (int64_t i = start; i < end; ++i) {                                            \
                T gi = gg[i] * tsign;                                                          \
                T mi = tb1 * mm[i] + ob1 * gi;                                                 \
                T vi = tb2 * vv[i] + ob2 * gi * gi;                                            \
                T eta = tc / (SQRT(vi) + te);                                                  \
                T si = tb3 * ss[i] + ob3 * eta;                                                \
                T eff = si < eta ? si : eta;                                                   \
                pp[i] = pp[i] * tdecay - tscale * eff * mi;                                    \
                mm[i] = mi; vv[i] = vi; ss[i] = si;                                            \
            }                                                                                  \
            continue;                                                                          \
        }                                                                                      \
        T *qq = prev ? prev[t] : 0;                                                            \
        double active = 0, eta_sum = 0, eta_max = stats ? stats[2] : 0, eff_sum = 0,           \
               eff_max = stats ? stats[4] : 0;                                                 \
        for (int64_t i = start; i < end; ++i) {                                                \
            T gi = gg[i] * tsign;                                                              \
            T mi = tb1 * mm[i] + ob1 * gi;                                                     \
            T vi = tb2 * vv[i] + ob2 * gi * gi;                                                \
            T eta = tc / (SQRT(vi) + te);                                                      \
            T si = tb3 * ss[i] + ob3 * eta;                                                    \
            T eff = si < eta ? si : eta;                                                       \
            T dir = mi;                                                                        \
            if (version >= 0) {                                                                \
                T d = qq[i] - gi;                                                              \
                if (version != 1) d = d < 0 ? -d : d;                                          \
                if (version == 2) dir = mi * ((T)9 / ((T)1 + EXP((T)-0.5 * d)) - (T)4);        \
                else dir = mi / ((T)1 + EXP(-d));                                              \
                qq[i] = gi;                                                                    \
            }                                                                                  \
            if (stats) {                                                                       \
                active += si < eta;                                                            \
                eta_sum += eta; eff_sum += eff;                                                \
                if (eta > eta_max) eta_max = eta;                                              \
                if (eff > eff_max) eff_max = eff;                                              \
            }                                                                                  \
            pp[i] = pp[i] * tdecay - tscale * eff * dir;                                       \
            mm[i] = mi; vv[i] = vi; ss[i] = si;                                                \
        }                                                                                      \
        if (stats) {                                                                           \
            stats[0] += active; stats[1] += eta_sum; stats[2] = eta_max;                       \
            stats[3] += eff_sum; stats[4] = eff_max;                                           \
        }                                                                                      \
    }                                                                                          \
}

DEFINE_KERNEL(bounded_update_f32, float, sqrtf, expf)
DEFINE_KERNEL(bounded_update_f64, double, sqrt, exp)
