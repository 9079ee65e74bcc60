/* Fused AdaMod/DiffMod update for contiguous CPU tensors: one read and one write of every
 * state element. Compiled on first use by adamod/_cpu_kernel.py (gcc/clang, -O3 -march=native,
 * -fopenmp-simd; exp comes vectorised from glibc's libmvec).
 * Each call updates the elements [lo, hi) of the concatenation of n tensors, so a caller can
 * split one step across threads; stats (5 doubles) accumulates the bound telemetry of the range:
 * [count of s < eta, sum eta, max eta, sum min(eta, s), max min(eta, s)].
 * DiffMod's friction is xi = fa / (1 + exp(-fk * d)) + fb with d = |g_prev - g| (or without the
 * absolute value when use_abs == 0); prev == NULL means AdaMod (xi = 1).
 *
 * Two entry points share one segment function, so that their per-element maths is the same code:
 * bounded_update_* (one set of scalars, per-tensor c/eps/scale) and member_update_* (member
 * mode: every tensor is K contiguous slices of numel/K elements, slice k takes member k's
 * scalars and adds its telemetry to stats + 5k). A member therefore moves bit for bit as the
 * scalar kernel moves the same slice on its own.
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

/* The scalars of one segment: the update's coefficients as doubles, as Python computes them. */
typedef struct {
    double b1, b2, b3, decay, sign, c, eps, scale, fa, fk, fb;
    int64_t use_abs;
} Scalars;

/* m_t, v_t and eta_t of element i (names shared by the loops below) */
#define ADAMOD_STEP_SIZE(T, SQRT)                                                              \
    T gi = gg[i] * tsign;                                                                      \
    T mi = tb1 * mm[i] + ob1 * gi;                                                             \
    T vi = tb2 * vv[i] + ob2 * gi * gi;                                                        \
    T eta = tc / (SQRT(vi) + te);

/* ... then s_t and min(eta_t, s_t) */
#define ADAMOD_MOMENTS(T, SQRT)                                                                \
    ADAMOD_STEP_SIZE(T, SQRT)                                                                  \
    T si = tb3 * ss[i] + ob3 * eta;                                                            \
    T eff = si < eta ? si : eta;

/* DiffMod's friction xi of element i; stores g_t as the next step's previous gradient */
#define ADAMOD_FRICTION(T, EXP)                                                                \
    T d = qq[i] - gi;                                                                          \
    T ad = d < 0 ? -d : d;                                                                     \
    d = keep_sign != 0 ? d : ad;                                                               \
    T xi = tfa / ((T)1 + EXP(-tfk * d)) + tfb;                                                 \
    qq[i] = gi;

#define ADAMOD_TELEMETRY                                                                       \
    active += si < eta ? 1.0 : 0.0;                                                            \
    eta_sum += eta; eff_sum += eff;                                                            \
    eta_max = eta > eta_max ? eta : eta_max;                                                   \
    eff_max = eff > eff_max ? eff : eff_max;

#define ADAMOD_STORE(DIRECTION)                                                                \
    pp[i] = pp[i] * tdecay - tscale * eff * (DIRECTION);                                       \
    mm[i] = mi; vv[i] = vi; ss[i] = si;

/* Adam's store: no s_t, and the step size is eta_t itself (AdaMod with beta3 = 0: s_t = eta_t,
 * so min(eta_t, s_t) = eta_t bit for bit, whatever s_{t-1} held) */
#define ADAMOD_STORE_ADAM                                                                      \
    pp[i] = pp[i] * tdecay - tscale * eta * mi;                                                \
    mm[i] = mi; vv[i] = vi;

#define ADAMOD_REDUCTION                                                                       \
    _Pragma("omp simd reduction(+:active, eta_sum, eff_sum) reduction(max:eta_max, eff_max)")

/* Elements [start, end) of one tensor (pointers at its first element) with one set of scalars;
 * qq == NULL means AdaMod, stats == NULL no telemetry, ss == NULL Adam (no bound state: beta3
 * is taken as 0, and neither friction nor telemetry apply). Never inlined: both entry points
 * then run the very same machine code per element, whatever the compiler decides about
 * contraction. */
#define DEFINE_SEGMENT(NAME, T, EXP, SQRT)                                                    \
__attribute__((noinline)) static void NAME(                                                    \
    T *restrict pp, const T *restrict gg, T *restrict mm, T *restrict vv, T *restrict ss,      \
    T *restrict qq, int64_t start, int64_t end, const Scalars *x, double *stats) {             \
    const T tb1 = (T)x->b1, tb2 = (T)x->b2, tb3 = (T)x->b3, tdecay = (T)x->decay;              \
    const T tsign = (T)x->sign, tc = (T)x->c, te = (T)x->eps, tscale = (T)x->scale;            \
    const T ob1 = (T)(1.0 - x->b1), ob2 = (T)(1.0 - x->b2), ob3 = (T)(1.0 - x->b3);            \
    const T tfa = (T)x->fa, tfk = (T)x->fk, tfb = (T)x->fb;                                    \
    const T keep_sign = x->use_abs ? (T)0 : (T)1;                                              \
    (void)tfa; (void)tfk; (void)tfb; (void)keep_sign;                                          \
    if (!ss) {                                                                                 \
        _Pragma("omp simd")                                                                    \
        for (int64_t i = start; i < end; ++i) {                                                \
            ADAMOD_STEP_SIZE(T, SQRT)                                                          \
            ADAMOD_STORE_ADAM                                                                  \
        }                                                                                      \
        return;                                                                                \
    }                                                                                          \
    if (!qq && !stats) {                                                                       \
        _Pragma("omp simd")                                                                    \
        for (int64_t i = start; i < end; ++i) {                                                \
            ADAMOD_MOMENTS(T, SQRT)                                                            \
            ADAMOD_STORE(mi)                                                                   \
        }                                                                                      \
        return;                                                                                \
    }                                                                                          \
    if (!stats) {                                                                              \
        _Pragma("omp simd")                                                                    \
        for (int64_t i = start; i < end; ++i) {                                                \
            ADAMOD_MOMENTS(T, SQRT)                                                            \
            ADAMOD_FRICTION(T, EXP)                                                            \
            ADAMOD_STORE(mi * xi)                                                              \
        }                                                                                      \
        return;                                                                                \
    }                                                                                          \
    double active = 0, eta_sum = 0, eta_max = 0, eff_sum = 0, eff_max = 0;                     \
    if (!qq) {                                                                                 \
        ADAMOD_REDUCTION                                                                       \
        for (int64_t i = start; i < end; ++i) {                                                \
            ADAMOD_MOMENTS(T, SQRT)                                                            \
            ADAMOD_TELEMETRY                                                                   \
            ADAMOD_STORE(mi)                                                                   \
        }                                                                                      \
    } else {                                                                                   \
        ADAMOD_REDUCTION                                                                       \
        for (int64_t i = start; i < end; ++i) {                                                \
            ADAMOD_MOMENTS(T, SQRT)                                                            \
            ADAMOD_FRICTION(T, EXP)                                                            \
            ADAMOD_TELEMETRY                                                                   \
            ADAMOD_STORE(mi * xi)                                                              \
        }                                                                                      \
    }                                                                                          \
    stats[0] += active; stats[1] += eta_sum; stats[3] += eff_sum;                              \
    if (eta_max > stats[2]) stats[2] = eta_max;                                                \
    if (eff_max > stats[4]) stats[4] = eff_max;                                                \
}

DEFINE_SEGMENT(segment_f32, float, expf, __builtin_sqrtf)
DEFINE_SEGMENT(segment_f64, double, exp, __builtin_sqrt)

#define DEFINE_KERNEL(NAME, SEGMENT, T)                                                       \
void NAME(int64_t n, T **p, T **g, T **m, T **v, T **s, T **prev, const int64_t *sizes,   \
          const double *c, const double *eps, const double *scale, int64_t lo, int64_t hi,     \
          double b1, double b2, double b3, double decay, double sign, int64_t use_abs,         \
          double fa, double fk, double fb, double *stats) {                                    \
    Scalars x = {b1, b2, b3, decay, sign, 0, 0, 0, fa, fk, fb, use_abs};                       \
    int64_t base = 0;                                                                          \
    for (int64_t t = 0; t < n && base < hi; base += sizes[t], ++t) {                           \
        int64_t start = lo > base ? lo - base : 0;                                             \
        int64_t end = hi - base < sizes[t] ? hi - base : sizes[t];                             \
        if (end <= start) continue;                                                            \
        x.c = c[t]; x.eps = eps[t]; x.scale = scale[t];                                        \
        SEGMENT(p[t], g[t], m[t], v[t], s ? s[t] : 0, prev ? prev[t] : 0, start, end, &x,     \
                stats);                                                                        \
    }                                                                                          \
}

DEFINE_KERNEL(bounded_update_f32, segment_f32, float)
DEFINE_KERNEL(bounded_update_f64, segment_f64, double)

/* Member mode: tensor t holds `members` contiguous slices of sizes[t] / members elements; the
 * elements of slice k take b1[k], b2[k], b3[k], decay[k], c[t][k], eps[t][k], scale[t][k] and add
 * their telemetry to stats + 5k. c, eps and scale point, per tensor, to K values (tensors of
 * one step count share them). The pointers handed to the segment start at the slice, so that
 * its loop is the one the scalar kernel runs on that slice alone. */
#define DEFINE_MEMBER_KERNEL(NAME, SEGMENT, T)                                                \
void NAME(int64_t n, int64_t members, T **p, T **g, T **m, T **v, T **s, T **prev,          \
          const int64_t *sizes, const double *const *c, const double *const *eps,              \
          const double *const *scale, const double *b1, const double *b2, const double *b3,    \
          const double *decay, int64_t lo, int64_t hi, double sign, int64_t use_abs,           \
          double fa, double fk, double fb, double *stats) {                                    \
    Scalars x = {0, 0, 0, 0, sign, 0, 0, 0, fa, fk, fb, use_abs};                              \
    int64_t base = 0;                                                                          \
    for (int64_t t = 0; t < n && base < hi; base += sizes[t], ++t) {                           \
        int64_t start = lo > base ? lo - base : 0;                                             \
        int64_t end = hi - base < sizes[t] ? hi - base : sizes[t];                             \
        if (end <= start) continue;                                                            \
        int64_t rows = sizes[t] / members;                                                     \
        for (int64_t k = start / rows; k < members && k * rows < end; ++k) {                   \
            int64_t off = k * rows;                                                            \
            int64_t a = start > off ? start - off : 0;                                         \
            int64_t b = end - off < rows ? end - off : rows;                                   \
            x.b1 = b1[k]; x.b2 = b2[k]; x.b3 = b3[k]; x.decay = decay[k];                      \
            x.c = c[t][k]; x.eps = eps[t][k]; x.scale = scale[t][k];                           \
            SEGMENT(p[t] + off, g[t] + off, m[t] + off, v[t] + off, s ? s[t] + off : 0,        \
                    prev ? prev[t] + off : 0, a, b, &x, stats ? stats + 5 * k : 0);            \
        }                                                                                      \
    }                                                                                          \
}

DEFINE_MEMBER_KERNEL(member_update_f32, segment_f32, float)
DEFINE_MEMBER_KERNEL(member_update_f64, segment_f64, double)

#ifdef _OPENMP
#include <omp.h>
/* The same updates split over `nthreads` threads of the OpenMP runtime that torch itself uses
 * (torch's libgomp is already loaded, so this library binds to it): torch's worker threads spin
 * for a while after each parallel op, and threads of our own would compete with them for the
 * cores. Thread k writes its telemetry to stats + 5k (member mode: stats + 5 * members * k). */
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

#define DEFINE_MEMBER_PARALLEL(NAME, KERNEL, T)                                               \
void NAME(int64_t nthreads, int64_t n, int64_t members, T **p, T **g, T **m, T **v, T **s,  \
          T **prev, const int64_t *sizes, const double *const *c, const double *const *eps,    \
          const double *const *scale, const double *b1, const double *b2, const double *b3,    \
          const double *decay, int64_t lo, int64_t hi, double sign, int64_t use_abs,           \
          double fa, double fk, double fb, double *stats) {                                    \
    _Pragma("omp parallel num_threads(nthreads)")                                              \
    {                                                                                          \
        int64_t k = omp_get_thread_num(), w = omp_get_num_threads();                           \
        int64_t a = lo + (hi - lo) * k / w, b = lo + (hi - lo) * (k + 1) / w;                  \
        KERNEL(n, members, p, g, m, v, s, prev, sizes, c, eps, scale, b1, b2, b3, decay, a, b, \
               sign, use_abs, fa, fk, fb, stats ? stats + 5 * members * k : 0);                \
    }                                                                                          \
}

DEFINE_MEMBER_PARALLEL(member_update_f32_parallel, member_update_f32, float)
DEFINE_MEMBER_PARALLEL(member_update_f64_parallel, member_update_f64, double)
#endif
