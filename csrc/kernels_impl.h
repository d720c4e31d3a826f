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

/* a * b with the product's bits, as the FMA a*b + (-0) where the instruction set has
 * FMA (FO_FMA_SUMS), else as the multiplication.  The FMA rounds the exact product
 * once, as the multiplication does, and adding -0 changes no value (+0 + -0 is +0),
 * so the results, zeros' signs and exception flags are the same.
 *
 * It is for speed with subnormal numbers.  On AMD Zen 5 a vector multiplication whose
 * operand or result is subnormal can take a slow path, and an FMA giving the same
 * result does not.  In standalone loops of AVX-512 instructions (one thread, data in
 * L1): multiplying normal numbers into subnormal results took 2.4x the time of the
 * same loop over normal results, the FMA 1.00x; Adafactor's update (a division and a
 * square root per element, then the product by a subnormal gradient) took 1.8 to
 * 3.2x, with the FMA 1.00x.  How slow the multiplication is changes over time on the
 * same core (bench/subnormal_probe.c).  Not a rule for every loop: the same FMAs in
 * Adam's loop left its step over subnormal state no faster, and at 2**20 elements
 * slower (1.9x its normal step, where the multiplications gave 1.0x), so only the
 * kernels whose slowdown they remove use them: Adafactor and Rprop.  GCC keeps the
 * FMA; clang (14) folds it back into the multiplication, a valid rewrite, so a clang
 * build gives the same results without the speed-up. */
static FO_INLINE T FN(fo_mul_fma)(T a, T b)
{
#if FO_FMA_SUMS
    return FO_T_F64 ? __builtin_fma(a, b, -0.0) : __builtin_fmaf(a, b, -0.0f);
#else
    return a * b;
#endif
}

/* fo_lerp with its multiplication as fo_mul_fma. */
static FO_INLINE T FN(fo_lerp_fma)(T self, T end, T weight, T one_minus_weight,
                                   const int small)
{
    return small ? self + FN(fo_mul_fma)(weight, end - self)
                 : end - FN(fo_mul_fma)(end - self, one_minus_weight);
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
 * kernels check c with fo_cdiv_use and divide plainly outside that range.  For zeros,
 * infinities and NaN (where q1 or the correction is NaN or zero) x * zh is the
 * quotient.  Checked, for float, against the division for the
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
 * loop more than the division it saves (1.06 to 1.33).  On AVX-512 the loops that
 * call it run in intrinsics, with the select made otherwise (fo_div_sqrt_const_v,
 * below); this one takes the few elements after their last whole vector. */
#undef FO_CDIV_ON
#if FO_FAST_CDIV == 2 || (FO_FAST_CDIV == 1 && FO_T_F64)
#define FO_CDIV_ON 1
#else
#define FO_CDIV_ON 0
#endif
#if FO_T_F64
typedef uint64_t FN(fo_bits);
#else
typedef uint32_t FN(fo_bits);
#endif
/* The bits of x.  For x >= +0 they order as the values do, infinity above every finite
 * value and a positive NaN above infinity; a negative number's, -0 included, and a
 * negative NaN's are above them all. */
static FO_INLINE FN(fo_bits) FN(fo_bits_of)(T x)
{
    FN(fo_bits) b;
    memcpy(&b, &x, sizeof b);
    return b;
}
#if FO_CDIV_ON
#if FO_T_F64
#define FO_FMA __builtin_fma
#define FO_COPYSIGN __builtin_copysign
#else
#define FO_FMA __builtin_fmaf
#define FO_COPYSIGN __builtin_copysignf
#endif
#endif

/* The divisor and its two-part reciprocal, computed once per kernel call, outside
 * the loops: GCC does not hoist the two divisions out of an outer loop (a blocked
 * one, FO_FOR) when the inner loop might not run, so they would cost every block. */
typedef struct { T c, zh, zl; } FN(fo_cdiv);

static FO_INLINE FN(fo_cdiv) FN(fo_cdiv_make)(T c)
{
#if FO_CDIV_ON
    const T zh = (T)1 / c;
    FN(fo_cdiv) k = {c, zh, FO_FMA(-zh, c, (T)1) / c};
#else
    FN(fo_cdiv) k = {c, (T)0, (T)0};
#endif
    return k;
}

/* A divisor that several dividends share (NAdam's two terms over one denominator):
 * one division gives zh = 1/b, and zl = (1 - b*zh) * zh, the reciprocal's remainder
 * exact in an FMA times zh, makes zh + zl 1/b to about twice the precision (relative
 * error near 2u**2, as fo_cdiv_make's second division leaves), so that
 * fo_div_const_checked divides every dividend by b with the bits of the division
 * (Markstein's theorem, as for fo_div_sqrt_const): one division for the divisor,
 * none per dividend.  A block checks b with fo_cdiv_divisor_note and its flags
 * (below).  Checked against the division
 * for double on 3 * 10**8 random pairs over both ranges and at their ends, and for
 * float with every divisor mantissa and 128 dividends each (standalone programs, not
 * in the tree). */
static FO_INLINE FN(fo_cdiv) FN(fo_cdiv_make_shared)(T b)
{
#if FO_CDIV_ON
    const T zh = (T)1 / b;
    FN(fo_cdiv) k = {b, zh, FO_FMA(-zh, b, (T)1) * zh};
#else
    FN(fo_cdiv) k = {b, (T)0, (T)0};
#endif
    return k;
}

#if FO_CDIV_ON && FO_FAST_CDIV != 2
/* `keep ? a : b` as a select of bits: written as a conditional, GCC moves a product
 * into the branch and, without AVX-512's masks, does not vectorize a loop that would
 * then compute it speculatively (AVX2's Adam loop ran scalar, 7x slower). */
static FO_INLINE T FN(fo_pick)(int keep, T a, T b)
{
    const FN(fo_bits) mask = (FN(fo_bits))0 - (FN(fo_bits))keep;
    const FN(fo_bits) bits = (FN(fo_bits_of)(a) & mask) | (FN(fo_bits_of)(b) & ~mask);
    T q;
    memcpy(&q, &bits, sizeof q);
    return q;
}
#endif

static FO_INLINE T FN(fo_div_sqrt_const)(T x, FN(fo_cdiv) k)
{
#if FO_CDIV_ON
    const T c = k.c, zh = k.zh, zl = k.zl;
    const T q1 = FO_FMA(x, zh, x * zl);
    const T q2 = FO_FMA(FO_FMA(-q1, c, x), zh, q1);
#if FO_FAST_CDIV == 2
    return (q1 != 0 && q2 == q2) ? q2 : x * zh;
#else
    return FN(fo_pick)((q1 != 0) & (q2 == q2), q2, x * zh);
#endif
#else
    return x / k.c;
#endif
}

/* x / c, c having passed fo_cdiv_ok, where the block's flags say so (below): the
 * result of fo_div_sqrt_const without its select.  The kernels that check their
 * blocks (LAMB, NAdam, RAdam) save the select's comparisons: float32 LAMB at
 * 65,536 elements 0.79 of the division's time with it, where with the select it was
 * 1.19 (AVX-512, side by side).  Nor is there a select for zero: the correction takes
 * x's sign (c > 0, so a quotient has x's sign, and for a zero x the correction is a
 * zero that may have lost it), one bit operation where the select took a comparison
 * and a masked move: LAMB float32 0.94 to 1.00 of each pass's time on AVX-512; on
 * AVX2 (float64 only) the same time as the select of bits. */
static FO_INLINE T FN(fo_div_const_checked)(T x, FN(fo_cdiv) k)
{
#if FO_CDIV_ON
    const T q1 = FO_FMA(x, k.zh, x * k.zl);
    const T q2 = FO_FMA(FO_FMA(-q1, k.c, x), k.zh, q1);
    return FO_COPYSIGN(q2, x);
#else
    return x / k.c;
#endif
}
#undef FO_FMA
#undef FO_COPYSIGN

/* When fo_div_const_checked is the division.  By Markstein's theorem its result is
 * the quotient's bits when its operations neither underflow nor overflow, and near
 * either end of the range it may be an ulp off.  A kernel learns which from the
 * floating-point status flags instead of from its operands: it computes a block of
 * quotients the FMA way, then reads the sticky exception flags (fo_fpflags_clean,
 * kernels.c), and computes a block in which any operation raised invalid, denormal
 * operand, divide-by-zero, overflow or underflow again with the divisions.  In a
 * block that raised none of them, for a divisor c that passed fo_cdiv_ok (or a shared
 * one, below):
 *   - x = +-0: the quotient is a zero, and the sign copied from x is the division's.
 *   - x a quiet NaN (a signalling one raises invalid): every operation returns x's
 *     NaN, quieted, with x's sign: the division's.
 *   - x infinite: x * zl is inf * 0 or the remainder inf - inf (invalid), so this
 *     never passes.
 *   - otherwise x is normal (a subnormal operand raises denormal), and so are q1 and
 *     the remainder's inputs (a tiny result is either inexact, raising underflow, or
 *     exact and then a subnormal operand of the next operation).  q1 is within an ulp
 *     of x/c and zh is 1/c rounded, so the remainder x - q1*c, rounded once in its
 *     FMA, is exact (an inexact tiny one raises underflow), and the correction is
 *     x/c rounded: by the theorem where it is normal; where it is subnormal it is
 *     exact (else underflow), and it lies within |remainder| * |1/c - zh|, far less
 *     than half the subnormal spacing, of x/c, so it is x/c rounded too.
 * The flags cost one read of the status register per block, where testing the
 * dividends' range took four vector operations for each (NAdam float64 on AVX-512
 * 0.86 of the time at 65,536 elements, 0.87 at 16,000,000; LAMB float32 0.83 to
 * 0.98 per pass; side by side).  Checked against the division, with the flags read as
 * the kernels read them, for every float dividend with five divisors (2**-32 and the
 * largest float under 2**32 among them), for 1.9 * 10**9 random double dividends
 * over the whole range with four divisors, and for shared divisors (below) on 10**9
 * random pairs of each type, half with exponents within 64 of each other,
 * subnormals, zeros, infinities and NaN included (a standalone program, not in the
 * tree).  Blocks whose other arithmetic
 * raises one of the flags (a gradient whose square underflows, moments decayed into
 * the subnormals) divide too: the same results, at the division's speed. */

/* The divisors the FMA form takes: 2**-32..2**32 (float), 2**-64..2**64 (double). */
#if FO_T_F64
#define FO_CDIV_DIVISOR_HI 0x1p64
#define FO_CDIV_DIVISOR_LO 0x1p-64
#else
#define FO_CDIV_DIVISOR_HI 0x1p32f
#define FO_CDIV_DIVISOR_LO 0x1p-32f
#endif

/* Whether fo_div_sqrt_const may take c (false for NaN). */
static FO_INLINE int FN(fo_cdiv_ok)(T c)
{
    return c >= FO_CDIV_DIVISOR_LO && c <= FO_CDIV_DIVISOR_HI;
}
#undef FO_CDIV_DIVISOR_HI
#undef FO_CDIV_DIVISOR_LO

/* A divisor that several dividends share (fo_cdiv_make_shared), computed in the
 * block: its reciprocal's operations raise a flag for a zero, an infinity, a
 * subnormal, or one whose reciprocal is not normal, but not for a NaN or a negative
 * number, whose quotients would take x's sign or NaN in place of the division's.
 * A block keeps the largest of its divisors' bits, which exceed an infinity's for
 * exactly those (fo_cdiv_divisors_ok): one vector operation per divisor on AVX-512;
 * elsewhere an int flag and two comparisons. */
#if FO_FAST_CDIV == 2
typedef FN(fo_bits) FN(fo_cdiv_acc);
#else
typedef int FN(fo_cdiv_acc);
#endif
static FO_INLINE void FN(fo_cdiv_divisor_note)(T b, FN(fo_cdiv_acc) *top)
{
#if FO_FAST_CDIV == 2
    const FN(fo_bits) bits = FN(fo_bits_of)(b);
    *top = bits > *top ? bits : *top;
#else
    *top |= !((b >= 0) & (b <= (T)INFINITY));
#endif
}
static FO_INLINE int FN(fo_cdiv_divisors_ok)(FN(fo_cdiv_acc) top)
{
#if FO_FAST_CDIV == 2
    return top <= FN(fo_bits_of)((T)INFINITY);
#else
    return top == 0;
#endif
}

/* Whether a kernel call divides by a fixed divisor c with FMA operations: the
 * instruction set has the form, c is in the range it needs, and the run-time mode
 * (fo_fma_division, kernels.c) allows it for this dtype. */
static FO_INLINE int FN(fo_cdiv_use)(T c)
{
    return FO_CDIV_ON && fo_fma_division >= (FO_T_F64 ? 1 : 2) && FN(fo_cdiv_ok)(c);
}

/* The gradient as the update sees it: negated for maximize (sign = -1), divided by the
 * loss scale when SCALED (torch's fused kernels divide by grad_scale first and negate
 * after; the two orders give the same bits). */
static FO_INLINE T FN(fo_grad)(T g, T sign, T grad_scale, const int SCALED)
{
    T d = sign * g;
    return SCALED ? d / grad_scale : d;
}

/* fo_grad with its multiplication as fo_mul_fma. */
static FO_INLINE T FN(fo_grad_fma)(T g, T sign, T grad_scale, const int SCALED)
{
    T d = FN(fo_mul_fma)(sign, g);
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

/* Software prefetch.  A kernel whose arithmetic takes a good part of its memory time
 * (a division and a square root per element) streams from memory at well under the
 * ceiling: while the core waits on the divide unit, its out-of-order window fills
 * and stops issuing the loads that would keep the memory system busy, and the
 * hardware prefetcher alone runs too short a distance ahead.  The loops therefore
 * run in blocks of FO_PF_BLOCK elements (256 bytes of every buffer) and, before each
 * block, ask for the lines FO_PF_DIST bytes ahead in every buffer the loop touches.
 * The elements and their order are unchanged, so are the results; a prefetch never
 * faults, so asking past a buffer's end is harmless.  Measured on one AVX-512 core
 * at 16,000,000 elements, against the same kernels without it: 0.71 to 0.98 of the
 * time (ASGD unchanged: its default path, which only writes its average, already
 * prefetched that stream); 0.74 to 1.07 at 65,536 elements (in cache).  SGD keeps a
 * plain loop (no gain from memory, 8% slower in cache).  A plain streaming loop gains
 * nothing (0.97 to 1.13 of its time), so the benchmark's ceiling stays one.  Cores
 * whose hardware prefetchers do better alone (AMD Zen 5) turn it off at run time
 * (fo_prefetch, kernels.c). */
#ifndef FO_PF_DIST
#define FO_PF_DIST 1024           /* bytes ahead */
#define FO_PF_BLOCK_BYTES 256     /* bytes of each buffer per block */
#endif
#define FO_PF_BLOCK (FO_PF_BLOCK_BYTES / (int64_t)sizeof(T))
#ifndef FO_PF_LINES_DEFINED
#define FO_PF_LINES_DEFINED
static FO_INLINE void fo_pf_lines(const void *x, int64_t offset)
{
    if (x && fo_prefetch) {
        const char *a = (const char *)x + offset + FO_PF_DIST;
        for (int l = 0; l < FO_PF_BLOCK_BYTES; l += 64) __builtin_prefetch(a + l, 0, 3);
    }
}
/* Prefetches FO_PF_DIST bytes ahead of byte `offset` of the (at most eight) buffers,
 * which may be NULL (unused). */
static FO_INLINE void fo_pf_block_bytes(int64_t offset, const void *x0, const void *x1,
                                        const void *x2, const void *x3, const void *x4,
                                        const void *x5, const void *x6, const void *x7)
{
    fo_pf_lines(x0, offset);
    fo_pf_lines(x1, offset);
    fo_pf_lines(x2, offset);
    fo_pf_lines(x3, offset);
    fo_pf_lines(x4, offset);
    fo_pf_lines(x5, offset);
    fo_pf_lines(x6, offset);
    fo_pf_lines(x7, offset);
}
#endif
/* The same ahead of element `b`; returns `b`. */
static FO_INLINE int64_t FN(fo_pf_block)(int64_t b, const void *x0, const void *x1,
                                         const void *x2, const void *x3, const void *x4,
                                         const void *x5, const void *x6, const void *x7)
{
    fo_pf_block_bytes(b * (int64_t)sizeof(T), x0, x1, x2, x3, x4, x5, x6, x7);
    return b;
}
/* The blocks of the kernels that read the exception flags after each block and
 * compute a block that raised one again (LAMB's second pass, NAdam, RAdam), for a
 * call over n elements: FO_PF_BLOCK elements where they prefetch ahead of each
 * block, else FO_CHECK_BLOCK, which sets the loop up and reads the flags a quarter
 * as often, and FO_CHECK_LONG (four times that again) for a call of at least
 * FO_CHECK_LONG_MIN elements, whose buffers stream from memory.  Reading the flags
 * waits for the block's operations; from memory that wait costs bandwidth, in cache
 * the longer blocks cost more than they save.  Side by side on the Zen 5 core
 * (float64, without prefetch), the longer blocks took at 16,000,000 elements 0.89 to
 * 0.95 of the time for RAdam, 0.88 to 0.94 for NAdam, 0.95 to 0.98 for LAMB; at
 * 2,097,152 0.90 to 0.98; at 262,144 RAdam 1.02, and in cache, at 65,536, 1.05 to
 * 1.12. */
#define FO_CHECK_BLOCK (4 * FO_PF_BLOCK)
#define FO_CHECK_LONG (4 * FO_CHECK_BLOCK)
#define FO_CHECK_LONG_MIN ((int64_t)1 << 20)
#define FO_CHECK_N(n) \
    (fo_prefetch ? FO_PF_BLOCK : (n) >= FO_CHECK_LONG_MIN ? FO_CHECK_LONG : FO_CHECK_BLOCK)

/* FO_FOR(i, begin, end, x0, ..., x7) { body }: `for (i = begin; i < end; i++)` in
 * blocks, prefetching the buffers (NULL for none) ahead of each block.  Without
 * prefetch (fo_prefetch off) one block spans the range: each block sets up its loop
 * again (the scalars broadcast into vectors, the vector loop's bounds), which in a
 * block of four 512-bit vectors cost a float64 kernel in cache several percent. */
#define FO_FOR(i, begin, end, x0, x1, x2, x3, x4, x5, x6, x7)                           \
    for (int64_t fo_b_ = (begin), fo_end_ = (end),                                      \
                 fo_n_ = fo_prefetch ? FO_PF_BLOCK : fo_end_ - fo_b_;                   \
         fo_b_ < fo_end_; fo_b_ += fo_n_)                                               \
        for (int64_t i = FN(fo_pf_block)(fo_b_, x0, x1, x2, x3, x4, x5, x6, x7),        \
                     fo_e_ = fo_end_ - fo_b_ < fo_n_ ? fo_end_ : fo_b_ + fo_n_;         \
             i < fo_e_; i++)

/* Lane sums of squares (fo_lane_sumsq2): add x[k]^2, in double, to
 * lanes[k % FO_SUM_LANES] for k in [0, n), each lane in increasing k (the sums
 * fastopt.h defines).  The eight lanes are held in GCC vectors of the instruction
 * set's register width (FO_VEC_BITS: one 512-bit vector, two 256-bit or four 128-bit
 * ones), so the loop runs on vector registers (the loop vectorizer does not vectorize
 * the lane pattern written with scalars); each lane still does exactly its own
 * multiplications and additions in order.  Vectors wider than the registers are
 * lowered through the stack, a store and a load on every addition's critical path,
 * and __builtin_convertvector from float splits into 128-bit pieces (GCC 12), so each
 * vector is built from an initializer list of its elements, which compiles to one
 * conversion from memory. */
#ifndef FO_VEC_BITS
#define FO_VEC_BITS 128
#endif
#if FO_VEC_BITS >= 512
#define FO_LANE_W 8
#define FO_LANE_LOAD(p) {(p)[0], (p)[1], (p)[2], (p)[3], (p)[4], (p)[5], (p)[6], (p)[7]}
#elif FO_VEC_BITS >= 256
#define FO_LANE_W 4
#define FO_LANE_LOAD(p) {(p)[0], (p)[1], (p)[2], (p)[3]}
#else
#define FO_LANE_W 2
#define FO_LANE_LOAD(p) {(p)[0], (p)[1]}
#endif
typedef double FN(fo_lanes) __attribute__((vector_size(FO_LANE_W * sizeof(double))));

/* acc + v * v, lane by lane.  A float's square is exact in double (24 significant
 * bits squared are at most 48 of double's 53), so the sum rounds once either way and,
 * where the instruction set has FMA (FO_FMA_SUMS), one FMA gives the same bits as the
 * product and the sum: one vector operation fewer per 8 squares (LAMB float32's first
 * pass 0.95 of its time, AVX-512 and AVX2, side by side).  A double's square is not
 * exact, so double keeps both operations. */
#undef FO_LANE_SQ_ADD
#if !FO_T_F64 && FO_FMA_SUMS && FO_VEC_BITS >= 512
#define FO_LANE_SQ_ADD(acc, v) ((acc) = _mm512_fmadd_pd((v), (v), (acc)))
#elif !FO_T_F64 && FO_FMA_SUMS && FO_VEC_BITS >= 256
#define FO_LANE_SQ_ADD(acc, v) ((acc) = _mm256_fmadd_pd((v), (v), (acc)))
#else
#define FO_LANE_SQ_ADD(acc, v) ((acc) += (v) * (v))
#endif

/* One group of FO_SUM_LANES elements of each array into its lanes. */
#define FO_LANE_STEP(q)                                                                \
    for (int j = 0; j < NV; j++) {                                                     \
        const FN(fo_lanes) vx = FO_LANE_LOAD(x + (q) + j * FO_LANE_W);                 \
        const FN(fo_lanes) vy = FO_LANE_LOAD(y + (q) + j * FO_LANE_W);                 \
        FO_LANE_SQ_ADD(acc_x[j], vx);                                                  \
        FO_LANE_SQ_ADD(acc_y[j], vy);                                                  \
    }

/* Both arrays at once, `x` into `x_lanes` and `y` into `y_lanes`: independent chains
 * of vector additions, so none waits on another's latency.  Prefetches ahead in
 * blocks of FO_PF_BLOCK elements (a multiple of FO_SUM_LANES). */
static FO_INLINE void FN(fo_lane_sumsq2)(const T *restrict x, const T *restrict y, int64_t n,
                                         double *restrict x_lanes, double *restrict y_lanes)
{
    enum { NV = FO_SUM_LANES / FO_LANE_W };
    FN(fo_lanes) acc_x[NV], acc_y[NV];
    memcpy(acc_x, x_lanes, sizeof acc_x);
    memcpy(acc_y, y_lanes, sizeof acc_y);
    int64_t k = 0;
    for (; k + FO_PF_BLOCK <= n; k += FO_PF_BLOCK) {
        FN(fo_pf_block)(k, x, y, NULL, NULL, NULL, NULL, NULL, NULL);
        for (int64_t q = k; q < k + FO_PF_BLOCK; q += FO_SUM_LANES) FO_LANE_STEP(q)
    }
    for (; k + FO_SUM_LANES <= n; k += FO_SUM_LANES) FO_LANE_STEP(k)
    memcpy(x_lanes, acc_x, sizeof acc_x);
    memcpy(y_lanes, acc_y, sizeof acc_y);
    for (int j = 0; k + j < n; j++) {
        x_lanes[j] += (double)x[k + j] * (double)x[k + j];
        y_lanes[j] += (double)y[k + j] * (double)y[k + j];
    }
}
#undef FO_LANE_STEP
#undef FO_LANE_LOAD
#undef FO_LANE_W

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
#define FO_OPT6(c, M, ...) do { if (c) M(__VA_ARGS__, 1); else M(__VA_ARGS__, 0); } while (0)
#endif

/* The loops written in intrinsics (AVX-512 only, FO_VEC_LOOPS): Adam's, and
 * AdaBelief's and Adan's where their square root divided by a fixed divisor takes the
 * FMA form (fo_div_sqrt_const), whose select GCC, compiling it from C, puts on the
 * chain from the square root through the division (algos/adam.h), and Lion's, whose
 * sign is one instruction here (algos/lion.h).  Each does the C loop's operations in
 * the same order on vectors of FO_VN elements, so it gives the same bits, and leaves
 * the last elements of a range (fewer than a vector) to the C loop. */
#undef FO_VEC_LOOPS
#define FO_VEC_LOOPS (FO_FAST_CDIV == 2)
#if FO_VEC_LOOPS
#if FO_T_F64
#define FO_V __m512d
#define FO_VN 8
#define FO_VOP(op) _mm512_##op##_pd
#define FO_VMASK(op) _mm512_##op##_pd_mask
#else
#define FO_V __m512
#define FO_VN 16
#define FO_VOP(op) _mm512_##op##_ps
#define FO_VMASK(op) _mm512_##op##_ps_mask
#endif
/* The divisor of fo_div_sqrt_const and its reciprocal's two parts, as vectors. */
typedef struct { FO_V c, zh, zl; } FN(fo_cdiv_v);

static FO_INLINE FN(fo_cdiv_v) FN(fo_cdiv_v_of)(FN(fo_cdiv) k)
{
    FN(fo_cdiv_v) v = {FO_VOP(set1)(k.c), FO_VOP(set1)(k.zh), FO_VOP(set1)(k.zl)};
    return v;
}

/* fo_div_sqrt_const on a vector of square roots: the same correction, and the select
 * as a class test of the root (zero, infinite or NaN: _mm512_fpclass classes QNaN
 * 0x01, +0 0x02, -0 0x04, +inf 0x08, -inf 0x10, SNaN 0x80), which waits on nothing
 * but the square root, and one masked move of the root over the correction. */
static FO_INLINE FO_V FN(fo_div_sqrt_const_v)(FO_V root, FN(fo_cdiv_v) k)
{
    const FO_V q1 = FO_VOP(fmadd)(root, k.zh, FO_VOP(mul)(root, k.zl));
    const FO_V q2 = FO_VOP(fmadd)(FO_VOP(fnmadd)(q1, k.c, root), k.zh, q1);
    return FO_VOP(mask_blend)(FO_VMASK(fpclass)(root, 0x9F), q2, root);
}

/* fo_grad and fo_weight_decay on vectors, the same operations. */
static FO_INLINE FO_V FN(fo_grad_v)(FO_V g, FO_V sign, FO_V grad_scale, const int SCALED)
{
    const FO_V d = FO_VOP(mul)(sign, g);
    return SCALED ? FO_VOP(div)(d, grad_scale) : d;
}

static FO_INLINE void FN(fo_weight_decay_v)(FO_V *x, FO_V *d, FO_V wd, FO_V decay,
                                            const int WD, const int DECOUPLED)
{
    if (WD) {
        if (DECOUPLED) *x = FO_VOP(mul)(*x, decay);
        else *d = FO_VOP(add)(*d, FO_VOP(mul)(wd, *x));
    }
}

/* FO_VEC_FOR(i, begin, end, x0, ..., x7) { body }: FO_FOR's blocks (and prefetch),
 * with i stepping over the whole vectors of each block; `i` is declared before it and
 * is left at the first element no vector took. */
#define FO_VEC_FOR(i, begin, end, x0, x1, x2, x3, x4, x5, x6, x7)                        \
    for (int64_t fo_b_ = (i) = (begin), fo_end_ = (end),                                 \
                 fo_n_ = fo_prefetch ? FO_PF_BLOCK : fo_end_ - fo_b_;                    \
         fo_b_ < fo_end_; fo_b_ += fo_n_)                                                \
        for ((i) = FN(fo_pf_block)(fo_b_, x0, x1, x2, x3, x4, x5, x6, x7);               \
             (i) + FO_VN <= (fo_end_ - fo_b_ < fo_n_ ? fo_end_ : fo_b_ + fo_n_);         \
             (i) += FO_VN)
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
#if FO_VEC_LOOPS
#undef FO_VEC_FOR
#undef FO_VMASK
#undef FO_VOP
#undef FO_VN
#undef FO_V
#endif
