/* Fused AdaMod/DiffMod update for contiguous CPU tensors: one read and one write of every
 * state element. Compiled on first use by adamod/_cpu_kernel.py (gcc/clang, -O3 -march=native,
 * -fopenmp-simd; exp comes vectorised from glibc's libmvec).
 * Each call updates the elements [lo, hi) of the concatenation of n tensors, so a caller can
 * split one step across threads; stats (5 doubles) accumulates the bound telemetry of the range:
 * [count of s < eta, sum eta, max eta, sum min(eta, s), max min(eta, s)].
 * DiffMod's friction is xi = fa / (1 + exp(-fk * d)) + fb with d = |g_prev - g| (or without the
 * absolute value when use_abs == 0); prev == NULL means AdaMod (xi = 1).
 */
#include <stdint.h>

#ifndef ADAMOD_NO_MVEC /* vector exp from libmvec (glibc); without it exp stays scalar */
#pragma omp declare simd notinbranch
#endif
extern float expf(float);
#ifndef ADAMOD_NO_MVEC
#pragma omp declare simd notinbranch
#endif
extern double exp(double);

#define DEFINE_KERNEL(NAME, T, EXP, SQRT)                                                     \
void NAME(int64_t n, T **p, T **g, T **m, T **v, T **s, T **prev, const int64_t *sizes,   \
          const double *c, const double *eps, const double *scale, int64_t lo, int64_t hi,     \
          double b1, double b2, double b3, double decay, double sign, int64_t use_abs,         \
          double fa, double fk, double fb, double *stats) {                                    \
    const T tb1 = (T)b1, tb2 = (T)b2, tb3 = (T)b3, tdecay = (T)decay, tsign = (T)sign;         \
    const T ob1 = (T)(1.0 - b1), ob2 = (T)(1.0 - b2), ob3 = (T)(1.0 - b3);                     \
    const T tfa = (T)fa, tfk = (T)fk, tfb = (T)fb;                                             \
    int64_t base = 0;                                                                          \
    for (int64_t t = 0; t < n && base < hi; base += sizes[t], ++t) {                           \
        int64_t start = lo > base ? lo - base : 0;                                             \
        int64_t end = hi - base < sizes[t] ? hi - base : sizes[t];                             \
        if (end <= start) continue;                                                            \
        T *restrict pp = p[t], *restrict gg = g[t], *restrict mm = m[t];                       \
        T *restrict vv = v[t], *restrict ss = s[t];                                            \
        const T tc = (T)c[t], te = (T)eps[t], tscale = (T)scale[t];                            \
        if (!prev && !stats) {                                                                 \
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
        T *restrict qq = prev ? prev[t] : 0;                                                   \
        const T keep_sign = use_abs ? (T)0 : (T)1;                                             \
        if (qq && !stats) {                                                                    \
            _Pragma("omp simd")                                                                \
            for (int64_t i = start; i < end; ++i) {                                            \
                T gi = gg[i] * tsign;                                                          \
                T mi = tb1 * mm[i] + ob1 * gi;                                                 \
                T vi = tb2 * vv[i] + ob2 * gi * gi;                                            \
                T eta = tc / (SQRT(vi) + te);                                                  \
                T si = tb3 * ss[i] + ob3 * eta;                                                \
                T eff = si < eta ? si : eta;                                                   \
                T d = qq[i] - gi;                                                              \
                T ad = d < 0 ? -d : d;                                                         \
                d = keep_sign != 0 ? d : ad;                                                   \
                T xi = tfa / ((T)1 + EXP(-tfk * d)) + tfb;                                     \
                qq[i] = gi;                                                                    \
                pp[i] = pp[i] * tdecay - tscale * eff * (mi * xi);                             \
                mm[i] = mi; vv[i] = vi; ss[i] = si;                                            \
            }                                                                                  \
            continue;                                                                          \
        }                                                                                      \
        double active = 0, eta_sum = 0, eta_max = 0, eff_sum = 0, eff_max = 0;                 \
        if (!qq) {                                                                             \
            _Pragma("omp simd reduction(+:active, eta_sum, eff_sum) reduction(max:eta_max, eff_max)") \
            for (int64_t i = start; i < end; ++i) {                                            \
                T gi = gg[i] * tsign;                                                          \
                T mi = tb1 * mm[i] + ob1 * gi;                                                 \
                T vi = tb2 * vv[i] + ob2 * gi * gi;                                            \
                T eta = tc / (SQRT(vi) + te);                                                  \
                T si = tb3 * ss[i] + ob3 * eta;                                                \
                T eff = si < eta ? si : eta;                                                   \
                active += si < eta ? 1.0 : 0.0;                                                \
                eta_sum += eta; eff_sum += eff;                                                \
                eta_max = eta > eta_max ? eta : eta_max;                                       \
                eff_max = eff > eff_max ? eff : eff_max;                                       \
                pp[i] = pp[i] * tdecay - tscale * eff * mi;                                    \
                mm[i] = mi; vv[i] = vi; ss[i] = si;                                            \
            }                                                                                  \
        } else {                                                                               \
            _Pragma("omp simd reduction(+:active, eta_sum, eff_sum) reduction(max:eta_max, eff_max)") \
            for (int64_t i = start; i < end; ++i) {                                            \
                T gi = gg[i] * tsign;                                                          \
                T mi = tb1 * mm[i] + ob1 * gi;                                                 \
                T vi = tb2 * vv[i] + ob2 * gi * gi;                                            \
                T eta = tc / (SQRT(vi) + te);                                                  \
                T si = tb3 * ss[i] + ob3 * eta;                                                \
                T eff = si < eta ? si : eta;                                                   \
                T d = qq[i] - gi;                                                              \
                T ad = d < 0 ? -d : d;                                                         \
                d = keep_sign != 0 ? d : ad;                                                   \
                T xi = tfa / ((T)1 + EXP(-tfk * d)) + tfb;                                     \
                qq[i] = gi;                                                                    \
                active += si < eta ? 1.0 : 0.0;                                                \
                eta_sum += eta; eff_sum += eff;                                                \
                eta_max = eta > eta_max ? eta : eta_max;                                       \
                eff_max = eff > eff_max ? eff : eff_max;                                       \
                pp[i] = pp[i] * tdecay - tscale * eff * (mi * xi);                             \
                mm[i] = mi; vv[i] = vi; ss[i] = si;                                            \
            }                                                                                  \
        }                                                                                      \
        if (stats) {                                                                           \
            stats[0] += active; stats[1] += eta_sum; stats[3] += eff_sum;                      \
            if (eta_max > stats[2]) stats[2] = eta_max;                                        \
            if (eff_max > stats[4]) stats[4] = eff_max;                                        \
        }                                                                                      \
    }                                                                                          \
}

DEFINE_KERNEL(bounded_update_f32, float, expf, __builtin_sqrtf)
DEFINE_KERNEL(bounded_update_f64, double, exp, __builtin_sqrt)

#ifdef _OPENMP
#include <omp.h>
/* The same update split over `nthreads` threads of the OpenMP runtime that torch itself uses
 * (torch's libgomp is already loaded, so this library binds to it): torch's worker threads spin
 * for a while after each parallel op, and threads of our own would compete with them for the
 * cores. Thread k writes its telemetry to stats + 5k. */
#define DEFINE_PARALLEL(NAME, KERNEL, T)                                                      \
void NAME(int64_t nthreads, int64_t n, T **p, T **g, T **m, T **v, T **s, T **prev,         \
          const int64_t *sizes, const double *c, const double *eps, const double *scale,       \
          int64_t lo, int64_t hi, double b1, double b2, double b3, double decay, double sign,  \
          int64_t use_abs, double fa, double fk, double fb, double *stats) {                   \
    _Pragma("omp parallel num_threads(nthreads)")                                              \
    {                                                                                          \
        int64_t k = omp_get_thread_num(), w = omp_get_num_threads();                           \
        int64_t a = lo + (hi - lo) * k / w, b = lo + (hi - lo) * (k + 1) / w;                  \
        KERNEL(n, p, g, m, v, s, prev, sizes, c, eps, scale, a, b, b1, b2, b3, decay, sign,    \
               use_abs, fa, fk, fb, stats ? stats + 5 * k : 0);                                \
    }                                                                                          \
}

DEFINE_PARALLEL(bounded_update_f32_parallel, bounded_update_f32, float)
DEFINE_PARALLEL(bounded_update_f64_parallel, bounded_update_f64, double)
#endif
