/*
 * Adan (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm for Faster
 * Optimizing Deep Models", arXiv:2208.06677, Algorithm 1), in the parameterization of
 * the authors' PyTorch code (sail-sg/Adan): beta_k here is 1 - beta_k of the paper, the
 * moments are bias-corrected, and the first step has no gradient difference.
 *
 *   d = (-g if maximize else g) / grad_scale
 *   diff = 0 (first step)  or  d - pre_grad
 *   u = diff * beta2 + d
 *   exp_avg = exp_avg * beta1 + (1 - beta1) * d
 *   exp_avg_diff = exp_avg_diff * beta2 + (1 - beta2) * diff
 *   exp_avg_sq = exp_avg_sq * beta3 + ((1 - beta3) * u) * u
 *   denom = sqrt(exp_avg_sq) / bc3_sqrt + eps
 *   no_prox:  p = p * (1 - lr * weight_decay)
 *   p = p + (-step_size * exp_avg) / denom
 *   p = p + (-step_size_diff * exp_avg_diff) / denom
 *   not no_prox:  p = p / (1 + lr * weight_decay)
 *   pre_grad = d
 *
 * with bc_k = 1 - beta_k**step, bc3_sqrt = bc3**0.5, step_size = lr / bc1 and
 * step_size_diff = lr * beta2 / bc2, in double (the order of the authors' code).
 *
 * buffers: param grad exp_avg exp_avg_diff exp_avg_sq pre_grad
 * hyper:   step lr beta1 beta2 beta3 eps weight_decay no_prox maximize first_step
 *          grad_scale
 */
static FO_INLINE void FN(adan_body)(T *restrict p, const T *restrict g, T *restrict m,
                                    T *restrict md, T *restrict n, T *restrict pre,
                                    int64_t begin, int64_t end, T sign, T beta1,
                                    T one_minus_beta1, T beta2, T one_minus_beta2, T beta3,
                                    T one_minus_beta3, FN(fo_cdiv) bc3_sqrt, T eps,
                                    T neg_step_size, T neg_step_size_diff, T decay, T prox,
                                    T scale, const int WD,
                                    const int NO_PROX, const int FIRST, const int SCALED,
                                    const int FAST)
{
    FO_FOR(i, begin, end, p, g, m, md, n, pre, NULL, NULL) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        T diff = FIRST ? (T)0 : d - pre[i];
        T u = diff * beta2 + d;
        T mi = m[i] * beta1 + one_minus_beta1 * d;
        m[i] = mi;
        T mdi = md[i] * beta2 + one_minus_beta2 * diff;
        md[i] = mdi;
        T ni = n[i] * beta3 + (one_minus_beta3 * u) * u;
        n[i] = ni;
        const T root = SQRT(ni);
        T denom = (FAST ? FN(fo_div_sqrt_const)(root, bc3_sqrt) : root / bc3_sqrt.c) + eps;
        T x = p[i];
        if (WD && NO_PROX) x = x * decay;
        x = x + (neg_step_size * mi) / denom;
        x = x + (neg_step_size_diff * mdi) / denom;
        if (WD && !NO_PROX) x = x / prox;
        p[i] = x;
        pre[i] = d;
    }
}

#if FO_VEC_LOOPS
/* The loop in intrinsics (FO_VEC_LOOPS in kernels_impl.h; Adam's says why), where the
 * division by bc3_sqrt takes the FMA form.  Against the C loop, kernels called
 * directly, side by side, same bits, with the Zen 5 defaults: float64 0.96 of its time
 * at 65,536 elements and 0.93 at 262,144, 0.97 to 0.99 at 1,048,576, 1.00 at
 * 4,194,304 and 0.99 at 16,000,000; with software prefetch on float64 0.84 and
 * float32 0.83 at 65,536.  Where the division divides (float32 on that core) the C
 * loop runs: the intrinsics gave 1.00 to 1.10 there. */
static FO_INLINE void FN(adan_body_v)(T *restrict p, const T *restrict g, T *restrict m,
                                      T *restrict md, T *restrict n, T *restrict pre,
                                      int64_t begin, int64_t end, T sign, T beta1,
                                      T one_minus_beta1, T beta2, T one_minus_beta2, T beta3,
                                      T one_minus_beta3, FN(fo_cdiv) bc3_sqrt, T eps,
                                      T neg_step_size, T neg_step_size_diff, T decay, T prox,
                                      T scale, const int WD, const int NO_PROX,
                                      const int FIRST, const int SCALED, const int FAST)
{
    /* where the division divides, the C loop (see above) */
    if (!FAST) {
        FN(adan_body)(p, g, m, md, n, pre, begin, end, sign, beta1, one_minus_beta1, beta2,
                      one_minus_beta2, beta3, one_minus_beta3, bc3_sqrt, eps, neg_step_size,
                      neg_step_size_diff, decay, prox, scale, WD, NO_PROX, FIRST, SCALED,
                      FAST);
        return;
    }
    const FO_V vsign = FO_VOP(set1)(sign), vb1 = FO_VOP(set1)(beta1);
    const FO_V vomb1 = FO_VOP(set1)(one_minus_beta1), vb2 = FO_VOP(set1)(beta2);
    const FO_V vomb2 = FO_VOP(set1)(one_minus_beta2), vb3 = FO_VOP(set1)(beta3);
    const FO_V vomb3 = FO_VOP(set1)(one_minus_beta3), veps = FO_VOP(set1)(eps);
    const FO_V vnss = FO_VOP(set1)(neg_step_size);
    const FO_V vnssd = FO_VOP(set1)(neg_step_size_diff), vdecay = FO_VOP(set1)(decay);
    const FO_V vprox = FO_VOP(set1)(prox), vscale = FO_VOP(set1)(scale);
    const FN(fo_cdiv_v) k = FN(fo_cdiv_v_of)(bc3_sqrt);
    int64_t i;
    FO_VEC_FOR(i, begin, end, p, g, m, md, n, pre, NULL, NULL) {
        const FO_V d = FN(fo_grad_v)(FO_VOP(loadu)(g + i), vsign, vscale, SCALED);
        const FO_V diff = FIRST ? FO_VOP(setzero)() : FO_VOP(sub)(d, FO_VOP(loadu)(pre + i));
        const FO_V u = FO_VOP(add)(FO_VOP(mul)(diff, vb2), d);
        const FO_V mi = FO_VOP(add)(FO_VOP(mul)(FO_VOP(loadu)(m + i), vb1),
                                    FO_VOP(mul)(vomb1, d));
        FO_VOP(storeu)(m + i, mi);
        const FO_V mdi = FO_VOP(add)(FO_VOP(mul)(FO_VOP(loadu)(md + i), vb2),
                                     FO_VOP(mul)(vomb2, diff));
        FO_VOP(storeu)(md + i, mdi);
        const FO_V ni = FO_VOP(add)(FO_VOP(mul)(FO_VOP(loadu)(n + i), vb3),
                                    FO_VOP(mul)(FO_VOP(mul)(vomb3, u), u));
        FO_VOP(storeu)(n + i, ni);
        const FO_V root = FO_VOP(sqrt)(ni);
        const FO_V denom = FO_VOP(add)(FN(fo_div_sqrt_const_v)(root, k), veps);
        FO_V x = FO_VOP(loadu)(p + i);
        if (WD && NO_PROX) x = FO_VOP(mul)(x, vdecay);
        x = FO_VOP(add)(x, FO_VOP(div)(FO_VOP(mul)(vnss, mi), denom));
        x = FO_VOP(add)(x, FO_VOP(div)(FO_VOP(mul)(vnssd, mdi), denom));
        if (WD && !NO_PROX) x = FO_VOP(div)(x, vprox);
        FO_VOP(storeu)(p + i, x);
        FO_VOP(storeu)(pre + i, d);
    }
    FN(adan_body)(p, g, m, md, n, pre, i, end, sign, beta1, one_minus_beta1, beta2,
                  one_minus_beta2, beta3, one_minus_beta3, bc3_sqrt, eps, neg_step_size,
                  neg_step_size_diff, decay, prox, scale, WD, NO_PROX, FIRST, SCALED, FAST);
}
#define FO_ADAN_BODY FN(adan_body_v)
#else
#define FO_ADAN_BODY FN(adan_body)
#endif

FO_KERNEL void FN(adan)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *m = (T *)buf[2], *md = (T *)buf[3], *n = (T *)buf[4], *pre = (T *)buf[5];
    const double step = h[0], lr = h[1], beta1 = h[2], beta2 = h[3], beta3 = h[4];
    const double eps = h[5], weight_decay = h[6];
    const int no_prox = h[7] != 0, maximize = h[8] != 0, first = h[9] != 0;
    const int scaled = h[10] != 1;
    const double bc1 = 1 - pow(beta1, step), bc2 = 1 - pow(beta2, step);
    const double bc3_sqrt = pow(1 - pow(beta3, step), 0.5);
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[10];
    const int fast = FN(fo_cdiv_use)((T)bc3_sqrt);
    const FN(fo_cdiv) bc3k = FN(fo_cdiv_make)((T)bc3_sqrt);
#define FO_ADAN_5(_, W, N, F, G, K) FO_ADAN_BODY(p, g, m, md, n, pre, begin, end, sign, (T)beta1, (T)(1 - beta1), (T)beta2, (T)(1 - beta2), (T)beta3, (T)(1 - beta3), bc3k, (T)eps, (T)(-(lr / bc1)), (T)(-(lr * beta2 / bc2)), (T)(1 - lr * weight_decay), (T)(1 + lr * weight_decay), scale, W, N, F, G, K)
#define FO_ADAN_4(_, W, N, F, G) FO_OPT5(FO_CDIV_ON && fast, FO_ADAN_5, _, W, N, F, G)
#define FO_ADAN_3(_, W, N, F) FO_OPT4(scaled, FO_ADAN_4, _, W, N, F)
#define FO_ADAN_2(_, W, N) FO_OPT3(first, FO_ADAN_3, _, W, N)
#define FO_ADAN_1(_, W) FO_OPT2(W && no_prox, FO_ADAN_2, _, W)
    FO_OPT1(weight_decay != 0, FO_ADAN_1, _);
#undef FO_ADAN_1
#undef FO_ADAN_2
#undef FO_ADAN_3
#undef FO_ADAN_4
#undef FO_ADAN_5
}
#undef FO_ADAN_BODY
