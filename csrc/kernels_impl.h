/*
 * Element-type template for the kernels: included once per element type by
 * kernels.c with T (the element type), SFX (its suffix) and SQRT (its square root)
 * defined.  Each algorithm lives in algos/<name>.h and defines FN(<name>), a
 * fo_kernel_fn.
 *
 * The pattern in every algorithm: an always-inline body that takes its options as
 * `const int` arguments, and an exported kernel that calls the body once per option
 * combination with literal constants, so that each combination compiles to its own
 * branch-free, vectorizable loop.
 */
#define FO_CAT_(a, b) a##_##b
#define FO_CAT(a, b) FO_CAT_(a, b)
#define FN(name) FO_CAT(name, SFX)

/* torch's lerp (ATen's scalar formula): the weight is cast to the element type and
 * the branch that keeps the result exact at the nearer end is taken. */
static FO_INLINE T FN(fo_lerp)(T self, T end, T weight, T one_minus_weight, const int small)
{
    return small ? self + weight * (end - self) : end - (end - self) * one_minus_weight;
}

/* torch.maximum / np.maximum: NaN in either argument propagates. */
static FO_INLINE T FN(fo_maximum)(T a, T b)
{
    return (a != a || a > b) ? a : b;
}

/* torch.minimum / np.minimum: NaN in either argument propagates. */
static FO_INLINE T FN(fo_minimum)(T a, T b)
{
    return (a != a || a < b) ? a : b;
}

/* x / c for x = sqrt(v) (v >= 0, or NaN) and a divisor c that stays the same over the
 * loop, with the bits of the division but, where FO_CDIV_ON (below), without the
 * divider, whose throughput bounds the Adam family in cache (one vector division
 * every several cycles at any vector width).
 *
 * q1 = x*zh + x*zl, where zh + zl is 1/c to about twice the precision, is within one
 * ulp of x/c; one correction, q1 + (x - q1*c)*zh with the remainder exact in an FMA,
 * is then the rounded quotient (Markstein's theorem).  It needs the remainder not to
 * underflow, which holds for a square root (zero, or at least 2**-74.5 in float and
 * 2**-537 in double) over c within 2**-32..2**32 (float) or 2**-64..2**64 (double);
 * kernels check c with FO_CDIV_GUARD and run the baseline's plain division outside
 * that range.  For zeros, infinities and NaN (where q1 or the correction is NaN or
 * zero) x * zh is the quotient.  Checked, for float, against the division for the
 * square root of every non-negative float and NaN, with twelve divisors including
 * both ends of the range.
 *
 * The float form was measured against the obvious alternative, x * (1/c) in double
 * rounded to float (also exact, for every x): as fast in cache, but its conversions
 * made the loop 3 to 14% slower than the division when it streams from memory.
 *
 * Where the correction pays (FO_CDIV_ON), measured against the division at 65,536
 * elements for Adam, AdamW, AdaBelief and Adan: AVX-512, both types (0.73 to 1.00 of
 * the time); AVX2, double only (0.75 to 0.84): there the select below costs the float
 * loop more than the division it saves (1.06 to 1.33). */
#undef FO_CDIV_ON
#if FO_FAST_CDIV == 2 || (FO_FAST_CDIV == 1 && FO_T_F64)
#define FO_CDIV_ON 1
#else
#define FO_CDIV_ON 0
#endif
#if FO_CDIV_ON
#if FO_T_F64
#define FO_FMA __builtin_fma
typedef uint64_t FN(fo_bits);
#else
#define FO_FMA __builtin_fmaf
typedef uint32_t FN(fo_bits);
#endif
#endif

static FO_INLINE T FN(fo_div_sqrt_const)(T x, T c)
{
#if FO_CDIV_ON
    const T zh = (T)1 / c, zl = FO_FMA(-zh, c, (T)1) / c;
    const T q1 = FO_FMA(x, zh, x * zl);
    const T q2 = FO_FMA(FO_FMA(-q1, c, x), zh, q1);
#if FO_FAST_CDIV == 2
    return (q1 != 0 && q2 == q2) ? q2 : x * zh;
#else
    /* The same select, of bits: written as a conditional, GCC moves the product into
     * the branch, and without AVX-512's masks does not vectorize a loop that would
     * then multiply speculatively (the loop ran scalar, 7x slower). */
    const T alt = x * zh;
    const FN(fo_bits) keep = (FN(fo_bits))0 - (FN(fo_bits))((q1 != 0) & (q2 == q2));
    FN(fo_bits) b2, balt;
    memcpy(&b2, &q2, sizeof b2);
    memcpy(&balt, &alt, sizeof balt);
    const FN(fo_bits) bits = (b2 & keep) | (balt & ~keep);
    T q;
    memcpy(&q, &bits, sizeof q);
    return q;
#endif
#else
    return x / c;
#endif
}
#undef FO_FMA

/* Whether fo_div_sqrt_const may take c (false for NaN). */
static FO_INLINE int FN(fo_cdiv_ok)(T c)
{
    return FO_T_F64 ? (c >= (T)0x1p-64 && c <= (T)0x1p64) : (c >= (T)0x1p-32 && c <= (T)0x1p32);
}

/* In a kernel that calls fo_div_sqrt_const(x, c): run the baseline instantiation
 * instead when c is outside the range the correction needs. */
#undef FO_CDIV_GUARD
#if FO_CDIV_ON
#define FO_CDIV_GUARD(name, c)                                                         \
    do {                                                                               \
        if (!FN(fo_cdiv_ok)(c)) {                                                      \
            FO_CAT(name, SFX_BASE)(buf, begin, end, h);                                \
            return;                                                                    \
        }                                                                              \
    } while (0)
#else
#define FO_CDIV_GUARD(name, c) ((void)0)
#endif

/* The gradient as the update sees it: negated for maximize (sign = -1), divided by the
 * loss scale when SCALED (torch's fused kernels divide by grad_scale first and negate
 * after; the two orders give the same bits). */
static FO_INLINE T FN(fo_grad)(T g, T sign, T grad_scale, const int SCALED)
{
    T d = sign * g;
    return SCALED ? d / grad_scale : d;
}

/* Weight decay of the Adam family: decoupled (AdamW's x = x * (1 - lr * wd), `decay`)
 * or coupled into the gradient (d = d + wd * x), as the options say. */
static FO_INLINE void FN(fo_weight_decay)(T *x, T *d, T wd, T decay, const int WD,
                                          const int DECOUPLED)
{
    if (WD) {
        if (DECOUPLED) *x = *x * decay;
        else *d = *d + wd * *x;
    }
}

/* Adam's moments, stored and returned: m = lerp(m, d, 1 - beta1) (`w`),
 * v = v * beta2 + ((1 - beta2) * d) * d. */
static FO_INLINE void FN(fo_adam_moments)(T *m, T *v, T d, T w, T one_minus_w, T beta2,
                                          T one_minus_beta2, T *m_new, T *v_new,
                                          const int SMALL)
{
    *m_new = FN(fo_lerp)(*m, d, w, one_minus_w, SMALL);
    *m = *m_new;
    *v_new = *v * beta2 + (one_minus_beta2 * d) * d;
    *v = *v_new;
}

/* Fold FO_SUM_LANES lane sums into one, in the order fastopt.h fixes. */
#ifndef FO_LANE_TOTAL
#define FO_LANE_TOTAL(a) \
    ((((a)[0] + (a)[1]) + ((a)[2] + (a)[3])) + (((a)[4] + (a)[5]) + ((a)[6] + (a)[7])))
#endif

/* Lane sums of squares (fo_lane_sumsq2): add x[k]^2, in double, to
 * lanes[k % FO_SUM_LANES] for k in [0, n), each lane in increasing k (the sums
 * fastopt.h defines).  The eight lanes are one GCC vector, so the loop runs on vector
 * registers of any width the instruction set has (the loop vectorizer does not
 * vectorize the lane pattern written with scalars); each lane still does exactly its
 * own multiplications and additions in order. */
#ifndef FO_LANES_DEFINED
#define FO_LANES_DEFINED
typedef double fo_lanes_f64 __attribute__((vector_size(FO_SUM_LANES * sizeof(double))));
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 9)
#define FO_TO_LANES_F64(t) __builtin_convertvector(t, fo_lanes_f64)
#else
#define FO_TO_LANES_F64(t) \
    ((fo_lanes_f64){(t)[0], (t)[1], (t)[2], (t)[3], (t)[4], (t)[5], (t)[6], (t)[7]})
#endif
#endif
typedef T FN(fo_lanes) __attribute__((vector_size(FO_SUM_LANES * sizeof(T))));

/* Both arrays at once, `x` into `x_lanes` and `y` into `y_lanes`: two independent
 * chains of vector additions, so neither waits on the other's latency. */
static FO_INLINE void FN(fo_lane_sumsq2)(const T *restrict x, const T *restrict y, int64_t n,
                                         double *restrict x_lanes, double *restrict y_lanes)
{
    fo_lanes_f64 acc_x, acc_y;
    memcpy(&acc_x, x_lanes, sizeof acc_x);
    memcpy(&acc_y, y_lanes, sizeof acc_y);
    int64_t k = 0;
    for (; k + FO_SUM_LANES <= n; k += FO_SUM_LANES) {
        FN(fo_lanes) tx, ty;
        memcpy(&tx, x + k, sizeof tx);
        memcpy(&ty, y + k, sizeof ty);
        fo_lanes_f64 vx = FO_TO_LANES_F64(tx);
        fo_lanes_f64 vy = FO_TO_LANES_F64(ty);
        acc_x += vx * vx;
        acc_y += vy * vy;
    }
    memcpy(x_lanes, &acc_x, sizeof acc_x);
    memcpy(y_lanes, &acc_y, sizeof acc_y);
    for (int j = 0; k + j < n; j++) {
        x_lanes[j] += (double)x[k + j] * (double)x[k + j];
        y_lanes[j] += (double)y[k + j] * (double)y[k + j];
    }
}

/* Elements a two-pass kernel's first pass computes into a stack tile before summing
 * their squares with fo_lane_sumsq2 (a multiple of FO_SUM_LANES, so lanes keep
 * following element indices from tile to tile). */
#define FO_SUM_TILE 512

#ifndef FO_OPT1
/* Option dispatch: FO_OPTk(cond, M, args...) calls M(args..., 1) when cond holds and
 * M(args..., 0) otherwise, so nesting k of them instantiates a body once per option
 * combination with literal constants.  One name per nesting level, because a macro
 * does not expand inside its own expansion. */
#define FO_OPT1(c, M, ...) do { if (c) M(__VA_ARGS__, 1); else M(__VA_ARGS__, 0); } while (0)
#define FO_OPT2(c, M, ...) do { if (c) M(__VA_ARGS__, 1); else M(__VA_ARGS__, 0); } while (0)
#define FO_OPT3(c, M, ...) do { if (c) M(__VA_ARGS__, 1); else M(__VA_ARGS__, 0); } while (0)
#define FO_OPT4(c, M, ...) do { if (c) M(__VA_ARGS__, 1); else M(__VA_ARGS__, 0); } while (0)
#define FO_OPT5(c, M, ...) do { if (c) M(__VA_ARGS__, 1); else M(__VA_ARGS__, 0); } while (0)
#endif

#include "algos/sgd.h"
#include "algos/adagrad.h"
#include "algos/rmsprop.h"
#include "algos/adadelta.h"
#include "algos/adam.h"
#include "algos/adamax.h"
#include "algos/nadam.h"
#include "algos/radam.h"
#include "algos/asgd.h"
#include "algos/rprop.h"
#include "algos/lion.h"
#include "algos/adabelief.h"
#include "algos/yogi.h"
#include "algos/adan.h"
#include "algos/lamb.h"
#include "algos/lars.h"
#include "algos/adafactor.h"
