/*
 * Adam and AdamW (torch.optim.Adam / AdamW, foreach=False):
 *
 *   d = (-g if maximize else g) / grad_scale
 *   decoupled:  p = p * (1 - lr * weight_decay)      else:  d += weight_decay * p
 *   exp_avg = lerp(exp_avg, d, 1 - beta1)
 *   exp_avg_sq = exp_avg_sq * beta2 + ((1 - beta2) * d) * d
 *   amsgrad:  max_exp_avg_sq = maximum(max_exp_avg_sq, exp_avg_sq);  v = max_exp_avg_sq
 *   else:     v = exp_avg_sq
 *   p = p + (-step_size * exp_avg) / (sqrt(v) / bias_correction2_sqrt + eps)
 *
 * with bias_correction1 = 1 - beta1**step, step_size = lr / bias_correction1 and
 * bias_correction2_sqrt = (1 - beta2**step)**0.5, computed in double.
 *
 * buffers: param grad exp_avg exp_avg_sq max_exp_avg_sq
 * hyper:   step lr beta1 beta2 eps weight_decay amsgrad maximize decoupled_weight_decay
 *          grad_scale
 */
static FO_INLINE void FN(adam_body)(T *restrict p, const T *restrict g, T *restrict m,
                                    T *restrict v, T *restrict vmax, int64_t begin,
                                    int64_t end, T sign, T wd, T decay, T w, T one_minus_w,
                                    T beta2, T one_minus_beta2, FN(fo_cdiv) bc2_sqrt, T eps,
                                    T neg_step_size, T scale, const int WD,
                                    const int DECOUPLED, const int AMSGRAD, const int SMALL,
                                    const int SCALED, const int FAST)
{
    FO_FOR(i, begin, end, p, g, m, v, AMSGRAD ? vmax : NULL, NULL, NULL, NULL) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        T x = p[i];
        FN(fo_weight_decay)(&x, &d, wd, decay, WD, DECOUPLED);
        T mi, vi;
        FN(fo_adam_moments)(&m[i], &v[i], d, w, one_minus_w, beta2, one_minus_beta2, &mi, &vi,
                            SMALL);
        if (AMSGRAD) {
            vi = FN(fo_maximum)(vmax[i], vi);
            vmax[i] = vi;
        }
        const T root = SQRT(vi);
        const T q = FAST ? FN(fo_div_sqrt_const)(root, bc2_sqrt) : root / bc2_sqrt.c;
        p[i] = x + (neg_step_size * mi) / (q + eps);
    }
}

#if FO_VEC_LOOPS
/* The loop in intrinsics (FO_VEC_LOOPS in kernels_impl.h).  Given a cheaper select in C (the root
 * compared with infinity), GCC either applied its mask to the correction's first
 * multiplication, which puts the comparison on the chain from the square root through
 * the division, or, written as a select of bits, made it three bit operations on that
 * chain: with software prefetch on, 0.99 to 1.07 of the time of the C loop with
 * fo_div_sqrt_const's select.  Against that C loop, kernels called directly, side by
 * side, same bits, 65,536 elements: with software prefetch on (as on cores other than
 * AMD Zen 5) float64 0.92 to 0.93 of its time, float32 0.79 to 0.80, AMSGrad 0.82;
 * with the Zen 5 defaults (no prefetch) float64 0.95 to 1.01, AdamW 0.94 to 0.98,
 * AMSGrad 0.87 to 0.90 (the C loop lost more to the prefetch than this one does).
 * At 16,000,000 elements 0.98 to 1.01.  Where the division divides (float32 on the
 * Zen 5 core by default) this loop runs too, unlike AdaBelief's and Adan's: side by
 * side it took 0.98 to 1.03 of the C loop's time, and against the -march=native build
 * (bench/native_vs_dispatch.py, two runs each) float32 Adam read 1.00 with it and
 * 1.05 with the C loop.  AdamW's decay of the parameter (x * (1 - lr * wd)) is written
 * after the division, not where the C loop has it: the same multiplication of the
 * same values, so the same bits, but GCC then schedules it off the square root's and
 * the divisions' way.  Written first, float32 AdamW read 1.02 to 1.06 of the
 * -march=native build's time where Adam read 1.00 to 1.03; written last, 0.99 to 1.01
 * in four runs (float64 unchanged, 0.80 to 0.82). */
static FO_INLINE void FN(adam_body_v)(T *restrict p, const T *restrict g, T *restrict m,
                                      T *restrict v, T *restrict vmax, int64_t begin,
                                      int64_t end, T sign, T wd, T decay, T w,
                                      T one_minus_w, T beta2, T one_minus_beta2,
                                      FN(fo_cdiv) bc2_sqrt, T eps, T neg_step_size, T scale,
                                      const int WD, const int DECOUPLED, const int AMSGRAD,
                                      const int SMALL, const int SCALED, const int FAST)
{
    const FO_V vsign = FO_VOP(set1)(sign), vwd = FO_VOP(set1)(wd);
    const FO_V vdecay = FO_VOP(set1)(decay), vw = FO_VOP(set1)(w);
    const FO_V vomw = FO_VOP(set1)(one_minus_w), vb2 = FO_VOP(set1)(beta2);
    const FO_V vomb2 = FO_VOP(set1)(one_minus_beta2), veps = FO_VOP(set1)(eps);
    const FO_V vnss = FO_VOP(set1)(neg_step_size), vscale = FO_VOP(set1)(scale);
    const FN(fo_cdiv_v) k = FN(fo_cdiv_v_of)(bc2_sqrt);
    int64_t i;
    FO_VEC_FOR(i, begin, end, p, g, m, v, AMSGRAD ? vmax : NULL, NULL, NULL, NULL) {
        FO_V d = FN(fo_grad_v)(FO_VOP(loadu)(g + i), vsign, vscale, SCALED);
        FO_V x = FO_VOP(loadu)(p + i);
        if (!DECOUPLED) FN(fo_weight_decay_v)(&x, &d, vwd, vdecay, WD, 0);
        const FO_V m0 = FO_VOP(loadu)(m + i);
        const FO_V mi = SMALL ? FO_VOP(add)(m0, FO_VOP(mul)(vw, FO_VOP(sub)(d, m0)))
                              : FO_VOP(sub)(d, FO_VOP(mul)(FO_VOP(sub)(d, m0), vomw));
        FO_VOP(storeu)(m + i, mi);
        FO_V vi = FO_VOP(add)(FO_VOP(mul)(FO_VOP(loadu)(v + i), vb2),
                              FO_VOP(mul)(FO_VOP(mul)(vomb2, d), d));
        FO_VOP(storeu)(v + i, vi);
        if (AMSGRAD) {
            /* fo_maximum: the old maximum where it is NaN or above */
            const FO_V a = FO_VOP(loadu)(vmax + i);
            vi = FO_VOP(mask_blend)(FO_VMASK(cmp)(a, a, _CMP_UNORD_Q) |
                                        FO_VMASK(cmp)(a, vi, _CMP_GT_OQ),
                                    vi, a);
            FO_VOP(storeu)(vmax + i, vi);
        }
        const FO_V root = FO_VOP(sqrt)(vi);
        const FO_V q = FAST ? FN(fo_div_sqrt_const_v)(root, k) : FO_VOP(div)(root, k.c);
        const FO_V step = FO_VOP(div)(FO_VOP(mul)(vnss, mi), FO_VOP(add)(q, veps));
        /* AdamW's decay of the parameter, written last: see above */
        if (DECOUPLED) FN(fo_weight_decay_v)(&x, &d, vwd, vdecay, WD, 1);
        FO_VOP(storeu)(p + i, FO_VOP(add)(x, step));
    }
    FN(adam_body)(p, g, m, v, vmax, i, end, sign, wd, decay, w, one_minus_w, beta2,
                  one_minus_beta2, bc2_sqrt, eps, neg_step_size, scale, WD, DECOUPLED,
                  AMSGRAD, SMALL, SCALED, FAST);
}
#define FO_ADAM_BODY FN(adam_body_v)
#else
#define FO_ADAM_BODY FN(adam_body)
#endif

FO_KERNEL void FN(adam)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *m = (T *)buf[2], *v = (T *)buf[3], *vmax = (T *)buf[4];
    const double step = h[0], lr = h[1], beta1 = h[2], beta2 = h[3], eps = h[4];
    const double weight_decay = h[5];
    const int amsgrad = h[6] != 0, maximize = h[7] != 0, decoupled = h[8] != 0;
    const double bias_correction1 = 1 - pow(beta1, step);
    const double bias_correction2 = 1 - pow(beta2, step);
    const double step_size = lr / bias_correction1;
    const double bias_correction2_sqrt = pow(bias_correction2, 0.5);
    const T sign = maximize ? (T)-1 : (T)1;
    const T w = (T)(1 - beta1), one_minus_w = (T)1 - w;
    const int small = (w < 0 ? -w : w) < (T)0.5;
    const T wd = (T)weight_decay, decay = (T)(1 - lr * weight_decay);
    const T tb2 = (T)beta2, omb2 = (T)(1 - beta2), bc2s = (T)bias_correction2_sqrt;
    const T te = (T)eps, nss = (T)(-step_size), scale = (T)h[9];
    const int scaled = h[9] != 1;
    const int fast = FN(fo_cdiv_use)(bc2s);
    const FN(fo_cdiv) bc2k = FN(fo_cdiv_make)(bc2s);
#define FO_ADAM_F(W, D, A, S, G, F) FO_ADAM_BODY(p, g, m, v, vmax, begin, end, sign, wd, decay, w, one_minus_w, tb2, omb2, bc2k, te, nss, scale, W, D, A, S, G, F)
#define FO_ADAM_G(W, D, A, S, G) FO_OPT2(FO_CDIV_ON && fast, FO_ADAM_F, W, D, A, S, G)
#define FO_ADAM(W, D, A, S) FO_OPT1(scaled, FO_ADAM_G, W, D, A, S)
#define FO_ADAM_AS(W, D)                                                    \
    do {                                                                    \
        if (amsgrad) { if (small) FO_ADAM(W, D, 1, 1); else FO_ADAM(W, D, 1, 0); } \
        else         { if (small) FO_ADAM(W, D, 0, 1); else FO_ADAM(W, D, 0, 0); } \
    } while (0)
    if (weight_decay == 0) FO_ADAM_AS(0, 0);
    else if (decoupled) FO_ADAM_AS(1, 1);
    else FO_ADAM_AS(1, 0);
#undef FO_ADAM_AS
#undef FO_ADAM
#undef FO_ADAM_G
#undef FO_ADAM_F
}
#undef FO_ADAM_BODY
