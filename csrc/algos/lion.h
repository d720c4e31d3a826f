/*
 * Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms",
 * arXiv:2302.06675, Program 1):
 *
 *   d = (-g if maximize else g) / grad_scale
 *   p = p * (1 - lr * weight_decay)                     (decoupled weight decay)
 *   c = exp_avg * beta1 + (1 - beta1) * d
 *   p = p + (-lr) * sign(c)           sign(0) = 0, sign(NaN) = NaN
 *   exp_avg = exp_avg * beta2 + (1 - beta2) * d
 *
 * buffers: param grad exp_avg
 * hyper:   lr beta1 beta2 weight_decay maximize grad_scale
 */
static FO_INLINE T FN(fo_sign_nan)(T x)
{
    return x != x ? x : (T)(x > 0) - (T)(x < 0);
}

static FO_INLINE void FN(lion_body)(T *restrict p, const T *restrict g, T *restrict m,
                                    int64_t begin, int64_t end, T sign, T decay, T beta1,
                                    T one_minus_beta1, T beta2, T one_minus_beta2, T neg_lr,
                                    T scale, const int WD, const int SCALED)
{
    FO_FOR(i, begin, end, p, g, m, NULL, NULL, NULL, NULL, NULL) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        T x = p[i];
        if (WD) x = x * decay;
        T mi = m[i];
        T c = mi * beta1 + one_minus_beta1 * d;
        p[i] = x + neg_lr * FN(fo_sign_nan)(c);
        m[i] = mi * beta2 + one_minus_beta2 * d;
    }
}

#if FO_VEC_LOOPS
/* The loop in intrinsics (FO_VEC_LOOPS in kernels_impl.h), for the sign: one
 * VFIXUPIMM maps each class of c to its sign (NaN: c itself; +-0: +0; negative, -inf:
 * -1; positive, +inf: +1; a subnormal is a nonzero value, or zero under
 * denormals-are-zero, as for the comparisons of fo_sign_nan), where GCC compiled
 * fo_sign_nan to four comparisons and four masked moves.  Same bits; against the C
 * loop, kernels called directly, side by side, with the Zen 5 defaults: float32 0.73
 * of its time at 65,536 elements, 0.97 at 262,144 and 0.77 to 0.88 at 1,048,576;
 * float64 0.94, 0.97 and 0.94 to 0.95; 16,000,000 elements 0.97 to 1.01.  With
 * software prefetch on (the default on other cores) float32 0.58 and float64 0.87 at
 * 65,536, but at 16,000,000 float32 1.04 to 1.06 (not measured on such a core). */
/* response nibble per class, lowest first: QNaN, SNaN -> 1 (c); zero -> 8 (+0);
 * +1 -> 10 (+1); -inf -> 9 (-1); +inf -> 10; negative -> 9; positive -> 10 */
#define FO_SIGN_TABLE 0xA9A9A811
static FO_INLINE void FN(lion_body_v)(T *restrict p, const T *restrict g, T *restrict m,
                                      int64_t begin, int64_t end, T sign, T decay, T beta1,
                                      T one_minus_beta1, T beta2, T one_minus_beta2,
                                      T neg_lr, T scale, const int WD, const int SCALED)
{
    const FO_V vsign = FO_VOP(set1)(sign), vdecay = FO_VOP(set1)(decay);
    const FO_V vb1 = FO_VOP(set1)(beta1), vomb1 = FO_VOP(set1)(one_minus_beta1);
    const FO_V vb2 = FO_VOP(set1)(beta2), vomb2 = FO_VOP(set1)(one_minus_beta2);
    const FO_V vnlr = FO_VOP(set1)(neg_lr), vscale = FO_VOP(set1)(scale);
#if FO_T_F64
    const __m512i table = _mm512_set1_epi64(FO_SIGN_TABLE);
#else
    const __m512i table = _mm512_set1_epi32(FO_SIGN_TABLE);
#endif
    int64_t i;
    FO_VEC_FOR(i, begin, end, p, g, m, NULL, NULL, NULL, NULL, NULL) {
        const FO_V d = FN(fo_grad_v)(FO_VOP(loadu)(g + i), vsign, vscale, SCALED);
        FO_V x = FO_VOP(loadu)(p + i);
        if (WD) x = FO_VOP(mul)(x, vdecay);
        const FO_V mi = FO_VOP(loadu)(m + i);
        const FO_V c = FO_VOP(add)(FO_VOP(mul)(mi, vb1), FO_VOP(mul)(vomb1, d));
        const FO_V sign_c = FO_VOP(fixupimm)(c, c, table, 0);
        FO_VOP(storeu)(p + i, FO_VOP(add)(x, FO_VOP(mul)(vnlr, sign_c)));
        FO_VOP(storeu)(m + i, FO_VOP(add)(FO_VOP(mul)(mi, vb2), FO_VOP(mul)(vomb2, d)));
    }
    FN(lion_body)(p, g, m, i, end, sign, decay, beta1, one_minus_beta1, beta2,
                  one_minus_beta2, neg_lr, scale, WD, SCALED);
}
#undef FO_SIGN_TABLE
#define FO_LION_BODY FN(lion_body_v)
#else
#define FO_LION_BODY FN(lion_body)
#endif

FO_KERNEL void FN(lion)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *m = (T *)buf[2];
    const double lr = h[0], beta1 = h[1], beta2 = h[2], weight_decay = h[3];
    const int maximize = h[4] != 0, scaled = h[5] != 1;
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[5];
#define FO_LION_2(_, W, G) FO_LION_BODY(p, g, m, begin, end, sign, (T)(1 - lr * weight_decay), (T)beta1, (T)(1 - beta1), (T)beta2, (T)(1 - beta2), (T)(-lr), scale, W, G)
#define FO_LION_1(_, W) FO_OPT2(scaled, FO_LION_2, _, W)
    FO_OPT1(weight_decay != 0, FO_LION_1, _);
#undef FO_LION_1
#undef FO_LION_2
}
#undef FO_LION_BODY
