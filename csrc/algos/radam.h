/*
 * RAdam (torch.optim.RAdam, foreach=False):
 *
 *   d = (-g if maximize else g) / grad_scale
 *   decoupled:  p = p * (1 - lr * weight_decay)      else:  d += weight_decay * p
 *   exp_avg = lerp(exp_avg, d, 1 - beta1)
 *   exp_avg_sq = exp_avg_sq * beta2 + ((1 - beta2) * d) * d
 *   corrected = exp_avg / bias_correction1
 *   rho_t > 5:  adaptive = (1 / (sqrt(exp_avg_sq) + eps)) * bias_correction2**0.5
 *               p = p - ((corrected * lr) * adaptive) * rect
 *   else:       p = p - corrected * lr
 *
 * with, in double: bias_correction1 = 1 - beta1**step, bias_correction2 = 1 - beta2**step,
 * rho_inf = 2 / (1 - beta2) - 1, rho_t = rho_inf - 2 * step * beta2**step /
 * bias_correction2, rect = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4)
 * (rho_inf - 2) rho_t)).  torch evaluates `float / tensor` as `reciprocal(tensor) *
 * float`, hence the form of `adaptive`.
 *
 * For double on AVX-512 the division by bias_correction1 takes the FMA form of
 * fo_div_const_checked (as NAdam's by bias_correction2): exact in a block whose
 * operations raise no exception flag other than inexact; a block that raises one is
 * computed again with the division, from the moments it has written and the parameter
 * it kept.  Against the division, side by side (kernels called directly, rectified
 * steps): 0.72 and 0.81 of the time at 65,536 elements (two runs) and 0.78 at
 * 16,000,000, where the double divider bounds the loop (its reciprocal, its square root
 * and this division); float on AVX-512 took 1.16x as long in cache and 1.04x from
 * memory, double on AVX2 1.05x, so they divide, and their loops are the ones they had
 * (the FAST body below runs only for double on AVX-512).
 *
 * buffers: param grad exp_avg exp_avg_sq
 * hyper:   step lr beta1 beta2 eps weight_decay decoupled_weight_decay maximize
 *          grad_scale
 */
#undef FO_RADAM_FMA
#define FO_RADAM_FMA (FO_FAST_CDIV == 2 && FO_T_F64)
/* One element: x is the parameter (weight decay applied), mi and vi the new moments.
 * With FAST the division by bias_correction1 takes the FMA form. */
static FO_INLINE T FN(radam_update)(T x, T mi, T vi, T bc1, FN(fo_cdiv) bc1k, T lr,
                                    T bc2_sqrt, T eps, T rect, const int RECTIFY,
                                    const int FAST)
{
    T corrected;
    if (FAST) {
        corrected = FN(fo_div_const_checked)(mi, bc1k);
    } else {
        corrected = mi / bc1;
    }
    if (RECTIFY) {
        const T adaptive = ((T)1 / (SQRT(vi) + eps)) * bc2_sqrt;
        return x - ((corrected * lr) * adaptive) * rect;
    }
    return x - corrected * lr;
}

/* One block of elements [start, stop): with F the FMA form of the division, keeping
 * each parameter as it was in x_old. */
static FO_INLINE void FN(radam_block)(T *restrict p, const T *restrict g, T *restrict m,
                                      T *restrict v, T *restrict x_old, int64_t start,
                                      int64_t stop, T sign, T wd, T decay, T w,
                                      T one_minus_w, T beta2, T one_minus_beta2, T bc1,
                                      FN(fo_cdiv) bc1k, T lr, T bc2_sqrt, T eps, T rect,
                                      T scale, const int F, const int WD,
                                      const int DECOUPLED, const int SMALL,
                                      const int RECTIFY, const int SCALED)
{
    for (int64_t i = start; i < stop; i++) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        T x = p[i];
        if (F) x_old[i - start] = x;
        FN(fo_weight_decay)(&x, &d, wd, decay, WD, DECOUPLED);
        T mi, vi;
        FN(fo_adam_moments)(&m[i], &v[i], d, w, one_minus_w, beta2, one_minus_beta2, &mi,
                            &vi, SMALL);
        p[i] = FN(radam_update)(x, mi, vi, bc1, bc1k, lr, bc2_sqrt, eps, rect, RECTIFY, F);
    }
}

static FO_INLINE void FN(radam_body)(T *restrict p, const T *restrict g, T *restrict m,
                                     T *restrict v, int64_t begin, int64_t end, T sign,
                                     T wd, T decay, T w, T one_minus_w, T beta2,
                                     T one_minus_beta2, T bc1, FN(fo_cdiv) bc1k, T lr,
                                     T bc2_sqrt, T eps, T rect, T scale, const int FAST,
                                     const int WD, const int DECOUPLED, const int SMALL,
                                     const int RECTIFY, const int SCALED)
{
    if (!FAST) {
        FO_FOR(i, begin, end, p, g, m, v, NULL, NULL, NULL, NULL) {
            T d = FN(fo_grad)(g[i], sign, scale, SCALED);
            T x = p[i];
            FN(fo_weight_decay)(&x, &d, wd, decay, WD, DECOUPLED);
            T mi, vi;
            FN(fo_adam_moments)(&m[i], &v[i], d, w, one_minus_w, beta2, one_minus_beta2,
                                &mi, &vi, SMALL);
            p[i] = FN(radam_update)(x, mi, vi, bc1, bc1k, lr, bc2_sqrt, eps, rect, RECTIFY,
                                    0);
        }
        return;
    }
    /* each block's parameter as it was, to write it again if the block must divide */
    T x_old[FO_CHECK_LONG];
    const int64_t block = FO_CHECK_N(end - begin);
    fo_fpflags flags = fo_fpflags_begin();
    fo_retry retry = fo_retry_start();
#define FO_RADAM_BLOCK(F)                                                                \
    FN(radam_block)(p, g, m, v, x_old, start, stop, sign, wd, decay, w, one_minus_w, beta2, \
                    one_minus_beta2, bc1, bc1k, lr, bc2_sqrt, eps, rect, scale, F, WD,     \
                    DECOUPLED, SMALL, RECTIFY, SCALED)
    for (int64_t start = begin; start < end; start += block) {
        const int64_t stop = end - start < block ? end : start + block;
        FN(fo_pf_block)(start, p, g, m, v, NULL, NULL, NULL, NULL);
        if (!fo_retry_try(&retry, &flags)) {
            FO_RADAM_BLOCK(0);
            continue;
        }
        FO_RADAM_BLOCK(1);
        if (fo_retry_redo(&retry, fo_fpflags_clean(&flags))) {
            /* m and v hold the new moments: from them and the old parameter, divide */
            for (int64_t i = start; i < stop; i++) {
                T d = FN(fo_grad)(g[i], sign, scale, SCALED);
                T x = x_old[i - start];
                FN(fo_weight_decay)(&x, &d, wd, decay, WD, DECOUPLED);
                p[i] = FN(radam_update)(x, m[i], v[i], bc1, bc1k, lr, bc2_sqrt, eps, rect,
                                        RECTIFY, 0);
            }
        }
    }
#undef FO_RADAM_BLOCK
    fo_fpflags_end(flags);
}

FO_KERNEL void FN(radam)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *m = (T *)buf[2], *v = (T *)buf[3];
    const double step = h[0], lr = h[1], beta1 = h[2], beta2 = h[3], eps = h[4];
    const double weight_decay = h[5];
    const int decoupled = h[6] != 0, maximize = h[7] != 0, scaled = h[8] != 1;
    const double bias_correction1 = 1 - pow(beta1, step);
    const double bias_correction2 = 1 - pow(beta2, step);
    const double rho_inf = 2 / (1 - beta2) - 1;
    const double rho_t = rho_inf - 2 * step * pow(beta2, step) / bias_correction2;
    const int rectify = rho_t > 5.0;
    const double rect = rectify ? pow((rho_t - 4) * (rho_t - 2) * rho_inf /
                                      ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.5)
                                : 0.0;
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[8];
    const T w = (T)(1 - beta1), one_minus_w = (T)1 - w;
    const int small = (w < 0 ? -w : w) < (T)0.5;
    const T wd = (T)weight_decay, decay = (T)(1 - lr * weight_decay);
    const T bc1 = (T)bias_correction1;
#if FO_RADAM_FMA
    const FN(fo_cdiv) bc1k = FN(fo_cdiv_make)(bc1);
    const int fast = FN(fo_cdiv_use)(bc1);
#else
    /* no reciprocal to compute: the other instantiations keep the native build's code */
    const FN(fo_cdiv) bc1k = {bc1, (T)0, (T)0};
    const int fast = 0;
#endif
#define FO_RADAM_6(_, F, W, D, S, R, G) FN(radam_body)(p, g, m, v, begin, end, sign, wd, decay, w, one_minus_w, (T)beta2, (T)(1 - beta2), bc1, bc1k, (T)lr, (T)pow(bias_correction2, 0.5), (T)eps, (T)rect, scale, F, W, D, S, R, G)
#define FO_RADAM_5(_, F, W, D, S, R) FO_OPT6(scaled, FO_RADAM_6, _, F, W, D, S, R)
#define FO_RADAM_4(_, F, W, D, S) FO_OPT5(rectify, FO_RADAM_5, _, F, W, D, S)
#define FO_RADAM_3(_, F, W, D) FO_OPT4(small, FO_RADAM_4, _, F, W, D)
#define FO_RADAM_2(_, F, W) FO_OPT3(W && decoupled, FO_RADAM_3, _, F, W)
#define FO_RADAM_1(_, F) FO_OPT2(weight_decay != 0, FO_RADAM_2, _, F)
    FO_OPT1(fast, FO_RADAM_1, _);
#undef FO_RADAM_6
#undef FO_RADAM_1
#undef FO_RADAM_2
#undef FO_RADAM_3
#undef FO_RADAM_4
#undef FO_RADAM_5
}
