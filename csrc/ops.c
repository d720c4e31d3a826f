/*
 * Gradient operations around an optimizer step; see ops.h for the contract and the
 * fixed reduction order.  Built with the kernels' flags (-O3 -fno-math-errno
 * -ffp-contract=off, never -ffast-math), so the lane loops vectorize without any
 * reassociation the reference could not reproduce.
 */
#include <math.h>

#include "ops.h"

#define FO_INLINE static inline __attribute__((always_inline))

/* Runtime ISA dispatch for the loops (GCC's target_clones, resolved once at load):
 * wider vectors, same operations in the same order, so the same bits on every CPU
 * (no FMA: -ffp-contract=off forbids contraction whatever the target allows). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FO_DISPATCH __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FO_DISPATCH
#endif

/* The per-element term of a sum norm, in double (exact for float32 squares). */
#define FO_TERM(v, kind, p) \
    ((kind) == FO_NORM_ONE ? fabs(v) : (kind) == FO_NORM_TWO ? (v) * (v) : pow(fabs(v), p))

/* NaN-propagating maximum (torch.max / np.max semantics). */
FO_INLINE double fo_max_nan(double a, double b)
{
    return (a != a || a > b) ? a : b;
}

#define FO_DEFINE_OPS(T, SFX)                                                              \
    /* One block of at most FO_NORM_BLOCK elements: lanes, then the fixed lane tree. */  \
    FO_INLINE double fo_block_##SFX(const T *x, int64_t n, const int kind, double p)     \
    {                                                                                    \
        double acc[FO_NORM_LANES] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};            \
        int64_t j = 0;                                                                   \
        for (; j + FO_NORM_LANES <= n; j += FO_NORM_LANES) {                             \
            for (int l = 0; l < FO_NORM_LANES; l++) {                                    \
                double v = (double)x[j + l];                                             \
                if (kind == FO_NORM_INF) acc[l] = fo_max_nan(acc[l], fabs(v));           \
                else acc[l] = acc[l] + FO_TERM(v, kind, p);                              \
            }                                                                            \
        }                                                                                \
        for (int l = 0; j + l < n; l++) {                                                \
            double v = (double)x[j + l];                                                 \
            if (kind == FO_NORM_INF) acc[l] = fo_max_nan(acc[l], fabs(v));               \
            else acc[l] = acc[l] + FO_TERM(v, kind, p);                                  \
        }                                                                                \
        if (kind == FO_NORM_INF) {                                                       \
            double m = acc[0];                                                           \
            for (int l = 1; l < FO_NORM_LANES; l++) m = fo_max_nan(m, acc[l]);           \
            return m;                                                                    \
        }                                                                                \
        return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])); \
    }                                                                                    \
                                                                                         \
    /* Blocks [b0, b1) of x (n elements in all), combined by the pairwise tree. */      \
    FO_DISPATCH static double fo_tree_##SFX(const T *x, int64_t n, int64_t b0, int64_t b1,           \
                                const int kind, double p)                                \
    {                                                                                    \
        if (b1 - b0 == 1) {                                                              \
            int64_t start = b0 * FO_NORM_BLOCK;                                          \
            int64_t len = n - start < FO_NORM_BLOCK ? n - start : FO_NORM_BLOCK;         \
            switch (kind) { /* literal kinds: one branch-free loop each */               \
            case FO_NORM_ONE: return fo_block_##SFX(x + start, len, FO_NORM_ONE, p);     \
            case FO_NORM_TWO: return fo_block_##SFX(x + start, len, FO_NORM_TWO, p);     \
            case FO_NORM_INF: return fo_block_##SFX(x + start, len, FO_NORM_INF, p);     \
            default: return fo_block_##SFX(x + start, len, FO_NORM_POW, p);              \
            }                                                                            \
        }                                                                                \
        int64_t mid = b0 + (b1 - b0) / 2;                                                \
        double left = fo_tree_##SFX(x, n, b0, mid, kind, p);                             \
        double right = fo_tree_##SFX(x, n, mid, b1, kind, p);                            \
        return kind == FO_NORM_INF ? fo_max_nan(left, right) : left + right;             \
    }                                                                                    \
                                                                                         \
    double fo_norm_partial_##SFX(const T *x, int64_t n, int kind, double p)              \
    {                                                                                    \
        if (n <= 0) return 0.0;                                                          \
        return fo_tree_##SFX(x, n, 0, (n + FO_NORM_BLOCK - 1) / FO_NORM_BLOCK, kind, p); \
    }                                                                                    \
                                                                                         \
    FO_DISPATCH void fo_scale_##SFX(T *restrict x, int64_t n, double coef)                           \
    {                                                                                    \
        const T c = (T)coef;                                                             \
        for (int64_t i = 0; i < n; i++) x[i] = x[i] * c;                                 \
    }                                                                                    \
                                                                                         \
    FO_DISPATCH void fo_clamp_##SFX(T *restrict x, int64_t n, double clip)                           \
    {                                                                                    \
        const T hi = (T)clip, lo = -(T)clip;                                             \
        for (int64_t i = 0; i < n; i++) {                                                \
            T v = x[i];                                                                  \
            x[i] = v < lo ? lo : (v > hi ? hi : v);                                      \
        }                                                                                \
    }                                                                                    \
                                                                                         \
    FO_DISPATCH int fo_all_finite_##SFX(const T *restrict x, int64_t n)                             \
    {                                                                                    \
        /* v - v is 0 for a finite v and NaN for NaN or +-inf; blocks allow an early   \
         * exit without a data-dependent branch in the vectorized loop. */              \
        for (int64_t b = 0; b < n; b += FO_NORM_BLOCK) {                                 \
            int64_t e = n - b < FO_NORM_BLOCK ? n : b + FO_NORM_BLOCK;                   \
            int ok = 1;                                                                  \
            for (int64_t i = b; i < e; i++) ok &= (x[i] - x[i] == (T)0);                 \
            if (!ok) return 0;                                                           \
        }                                                                                \
        return 1;                                                                        \
    }

FO_DEFINE_OPS(float, f32)
FO_DEFINE_OPS(double, f64)
