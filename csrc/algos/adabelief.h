/*
 * AdaBelief (Zhuang et al. 2020, "AdaBelief Optimizer: Adapting Stepsizes by the
 * Belief in Observed Gradients", NeurIPS 2020, Algorithm 2; operation order of the
 * authors' adabelief-pytorch 0.2, without its optional rectification):
 *
 *   d = (-g if maximize else g) / grad_scale
 *   decoupled:  p = p * (1 - lr * weight_decay)      else:  d += weight_decay * p
 *   exp_avg = exp_avg * beta1 + (1 - beta1) * d
 *   r = d - exp_avg
 *   exp_avg_var = exp_avg_var * beta2 + ((1 - beta2) * r) * r + eps
 *   p = p + (-step_size * exp_avg) / (sqrt(exp_avg_var) / bias_correction2_sqrt + eps)
 *
 * with step_size = lr / (1 - beta1**step), bias_correction2_sqrt = (1 - beta2**step)**0.5.
 *
 * buffers: param grad exp_avg exp_avg_var
 * hyper:   step lr beta1 beta2 eps weight_decay decoupled_weight_decay maximize grad_scale
 */
static FO_INLINE void FN(adabelief_body)(T *restrict p, const T *restrict g, T *restrict m,
                                         T *restrict s, int64_t begin, int64_t end, T sign,
                                         T wd, T decay, T beta1, T one_minus_beta1, T beta2,
                                         T one_minus_beta2, T eps, FN(fo_cdiv) bc2_sqrt,
                                         T neg_step_size, T scale, const int WD,
                                         const int DECOUPLED, const int SCALED, const int FAST)
{
    FO_FOR(i, begin, end, p, g, m, s, NULL, NULL, NULL, NULL) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        T x = p[i];
        FN(fo_weight_decay)(&x, &d, wd, decay, WD, DECOUPLED);
        T mi = m[i] * beta1 + one_minus_beta1 * d;
        m[i] = mi;
        T r = d - mi;
        T si = s[i] * beta2 + (one_minus_beta2 * r) * r;
        si = si + eps;
        s[i] = si;
        const T root = SQRT(si);
        const T q = FAST ? FN(fo_div_sqrt_const)(root, bc2_sqrt) : root / bc2_sqrt.c;
        p[i] = x + (neg_step_size * mi) / (q + eps);
    }
}

#if FO_VEC_LOOPS
/* The loop in intrinsics (FO_VEC_LOOPS in kernels_impl.h; Adam's says why), where the
 * division by bias_correction2_sqrt takes the FMA form.  Against the C loop, kernels
 * called directly, side by side, same bits, with the Zen 5 defaults: float64 0.92 of
 * its time at 65,536 elements and 0.90 at 262,144, 0.87 to 0.95 at 1,048,576, 1.00
 * at 4,194,304 and 16,000,000; with software prefetch on float64 0.85 and float32
 * 0.81 at 65,536.  Where the division divides (float32 on that core) the C loop runs:
 * the intrinsics gave 1.00 to 1.05 there. */
static FO_INLINE void FN(adabelief_body_v)(T *restrict p, const T *restrict g,
                                           T *restrict m, T *restrict s, int64_t begin,
                                           int64_t end, T sign, T wd, T decay, T beta1,
                                           T one_minus_beta1, T beta2, T one_minus_beta2,
                                           T eps, FN(fo_cdiv) bc2_sqrt, T neg_step_size,
                                           T scale, const int WD, const int DECOUPLED,
                                           const int SCALED, const int FAST)
{
    /* where the division divides, the C loop (see above) */
    if (!FAST) {
        FN(adabelief_body)(p, g, m, s, begin, end, sign, wd, decay, beta1, one_minus_beta1,
                           beta2, one_minus_beta2, eps, bc2_sqrt, neg_step_size, scale, WD,
                           DECOUPLED, SCALED, FAST);
        return;
    }
    const FO_V vsign = FO_VOP(set1)(sign), vwd = FO_VOP(set1)(wd);
    const FO_V vdecay = FO_VOP(set1)(decay), vb1 = FO_VOP(set1)(beta1);
    const FO_V vomb1 = FO_VOP(set1)(one_minus_beta1), vb2 = FO_VOP(set1)(beta2);
    const FO_V vomb2 = FO_VOP(set1)(one_minus_beta2), veps = FO_VOP(set1)(eps);
    const FO_V vnss = FO_VOP(set1)(neg_step_size), vscale = FO_VOP(set1)(scale);
    const FN(fo_cdiv_v) k = FN(fo_cdiv_v_of)(bc2_sqrt);
    int64_t i;
    FO_VEC_FOR(i, begin, end, p, g, m, s, NULL, NULL, NULL, NULL) {
        FO_V d = FN(fo_grad_v)(FO_VOP(loadu)(g + i), vsign, vscale, SCALED);
        FO_V x = FO_VOP(loadu)(p + i);
        FN(fo_weight_decay_v)(&x, &d, vwd, vdecay, WD, DECOUPLED);
        const FO_V mi = FO_VOP(add)(FO_VOP(mul)(FO_VOP(loadu)(m + i), vb1),
                                    FO_VOP(mul)(vomb1, d));
        FO_VOP(storeu)(m + i, mi);
        const FO_V r = FO_VOP(sub)(d, mi);
        FO_V si = FO_VOP(add)(FO_VOP(mul)(FO_VOP(loadu)(s + i), vb2),
                              FO_VOP(mul)(FO_VOP(mul)(vomb2, r), r));
        si = FO_VOP(add)(si, veps);
        FO_VOP(storeu)(s + i, si);
        const FO_V root = FO_VOP(sqrt)(si);
        const FO_V q = FN(fo_div_sqrt_const_v)(root, k);
        const FO_V step = FO_VOP(div)(FO_VOP(mul)(vnss, mi), FO_VOP(add)(q, veps));
        FO_VOP(storeu)(p + i, FO_VOP(add)(x, step));
    }
    FN(adabelief_body)(p, g, m, s, i, end, sign, wd, decay, beta1, one_minus_beta1, beta2,
                       one_minus_beta2, eps, bc2_sqrt, neg_step_size, scale, WD, DECOUPLED,
                       SCALED, FAST);
}
#define FO_ADABELIEF_BODY FN(adabelief_body_v)
#else
#define FO_ADABELIEF_BODY FN(adabelief_body)
#endif

FO_KERNEL void FN(adabelief)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *m = (T *)buf[2], *s = (T *)buf[3];
    const double step = h[0], lr = h[1], beta1 = h[2], beta2 = h[3], eps = h[4];
    const double weight_decay = h[5];
    const int decoupled = h[6] != 0, maximize = h[7] != 0, scaled = h[8] != 1;
    const double step_size = lr / (1 - pow(beta1, step));
    const double bias_correction2_sqrt = pow(1 - pow(beta2, step), 0.5);
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[8];
    const int fast = FN(fo_cdiv_use)((T)bias_correction2_sqrt);
    const FN(fo_cdiv) bc2k = FN(fo_cdiv_make)((T)bias_correction2_sqrt);
#define FO_ADABELIEF_4(_, W, D, G, F) FO_ADABELIEF_BODY(p, g, m, s, begin, end, sign, (T)weight_decay, (T)(1 - lr * weight_decay), (T)beta1, (T)(1 - beta1), (T)beta2, (T)(1 - beta2), (T)eps, bc2k, (T)(-step_size), scale, W, D, G, F)
#define FO_ADABELIEF_3(_, W, D, G) FO_OPT4(FO_CDIV_ON && fast, FO_ADABELIEF_4, _, W, D, G)
#define FO_ADABELIEF_2(_, W, D) FO_OPT3(scaled, FO_ADABELIEF_3, _, W, D)
#define FO_ADABELIEF_1(_, W) FO_OPT2(W && decoupled, FO_ADABELIEF_2, _, W)
    FO_OPT1(weight_decay != 0, FO_ADABELIEF_1, _);
#undef FO_ADABELIEF_1
#undef FO_ADABELIEF_2
#undef FO_ADABELIEF_3
#undef FO_ADABELIEF_4
}
#undef FO_ADABELIEF_BODY
