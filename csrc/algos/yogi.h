/*
 * Yogi (Zaheer et al. 2018, "Adaptive Methods for Nonconvex Optimization", NeurIPS
 * 2018, Algorithm 2; no bias correction, as the paper and optax):
 *
 *   d = (-g if maximize else g) / grad_scale;  d += weight_decay * p
 *   exp_avg = exp_avg * beta1 + (1 - beta1) * d
 *   exp_avg_sq = exp_avg_sq - ((1 - beta2) * sign(exp_avg_sq - d * d)) * (d * d)
 *   p = p + (-lr * exp_avg) / (sqrt(exp_avg_sq) + eps)
 *
 * sign(0) = 0 (a NaN difference gives 0, but then d * d is NaN and propagates).
 *
 * buffers: param grad exp_avg exp_avg_sq
 * hyper:   lr beta1 beta2 eps weight_decay maximize grad_scale
 */
static FO_INLINE void FN(yogi_body)(T *restrict p, const T *restrict g, T *restrict m,
                                    T *restrict v, int64_t begin, int64_t end, T sign, T wd,
                                    T beta1, T one_minus_beta1, T one_minus_beta2, T eps,
                                    T neg_lr, T scale, const int WD, const int SCALED)
{
    FO_FOR(i, begin, end, p, g, m, v, NULL, NULL, NULL, NULL) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        T x = p[i];
        if (WD) d = d + wd * x;
        T mi = m[i] * beta1 + one_minus_beta1 * d;
        m[i] = mi;
        T d2 = d * d;
        T vi = v[i];
        T diff = vi - d2;
        T s = (T)(diff > 0) - (T)(diff < 0);
        vi = vi - (one_minus_beta2 * s) * d2;
        v[i] = vi;
        p[i] = x + (neg_lr * mi) / (SQRT(vi) + eps);
    }
}

FO_KERNEL void FN(yogi)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *m = (T *)buf[2], *v = (T *)buf[3];
    const double lr = h[0], beta1 = h[1], beta2 = h[2], eps = h[3], weight_decay = h[4];
    const int maximize = h[5] != 0, scaled = h[6] != 1;
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[6];
#define FO_YOGI_2(_, W, G) FN(yogi_body)(p, g, m, v, begin, end, sign, (T)weight_decay, (T)beta1, (T)(1 - beta1), (T)(1 - beta2), (T)eps, (T)(-lr), scale, W, G)
#define FO_YOGI_1(_, W) FO_OPT2(scaled, FO_YOGI_2, _, W)
    FO_OPT1(weight_decay != 0, FO_YOGI_1, _);
#undef FO_YOGI_1
#undef FO_YOGI_2
}
