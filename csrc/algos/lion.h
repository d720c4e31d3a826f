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

FO_KERNEL void FN(lion)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *m = (T *)buf[2];
    const double lr = h[0], beta1 = h[1], beta2 = h[2], weight_decay = h[3];
    const int maximize = h[4] != 0, scaled = h[5] != 1;
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[5];
#define FO_LION_2(_, W, G) FN(lion_body)(p, g, m, begin, end, sign, (T)(1 - lr * weight_decay), (T)beta1, (T)(1 - beta1), (T)beta2, (T)(1 - beta2), (T)(-lr), scale, W, G)
#define FO_LION_1(_, W) FO_OPT2(scaled, FO_LION_2, _, W)
    FO_OPT1(weight_decay != 0, FO_LION_1, _);
#undef FO_LION_1
#undef FO_LION_2
}
