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
#define FO_ADABELIEF_4(_, W, D, G, F) FN(adabelief_body)(p, g, m, s, begin, end, sign, (T)weight_decay, (T)(1 - lr * weight_decay), (T)beta1, (T)(1 - beta1), (T)beta2, (T)(1 - beta2), (T)eps, bc2k, (T)(-step_size), scale, W, D, G, F)
#define FO_ADABELIEF_3(_, W, D, G) FO_OPT4(FO_CDIV_ON && fast, FO_ADABELIEF_4, _, W, D, G)
#define FO_ADABELIEF_2(_, W, D) FO_OPT3(scaled, FO_ADABELIEF_3, _, W, D)
#define FO_ADABELIEF_1(_, W) FO_OPT2(W && decoupled, FO_ADABELIEF_2, _, W)
    FO_OPT1(weight_decay != 0, FO_ADABELIEF_1, _);
#undef FO_ADABELIEF_1
#undef FO_ADABELIEF_2
#undef FO_ADABELIEF_3
#undef FO_ADABELIEF_4
}
