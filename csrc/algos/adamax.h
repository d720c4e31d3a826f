/*
 * Adamax (torch.optim.Adamax, foreach=False):
 *
 *   d = (-g if maximize else g) / grad_scale;  d += weight_decay * p
 *   exp_avg = lerp(exp_avg, d, 1 - beta1)
 *   exp_inf = maximum(exp_inf * beta2, |d| + eps)
 *   p = p + (-clr * exp_avg) / exp_inf
 *
 * with clr = lr / (1 - beta1**step), computed in double.
 *
 * buffers: param grad exp_avg exp_inf
 * hyper:   step lr beta1 beta2 eps weight_decay maximize grad_scale
 */
static FO_INLINE void FN(adamax_body)(T *restrict p, const T *restrict g, T *restrict m,
                                      T *restrict u, int64_t begin, int64_t end, T sign,
                                      T wd, T w, T one_minus_w, T beta2, T eps, T neg_clr,
                                      T scale, const int WD, const int SMALL,
                                      const int SCALED)
{
    FO_FOR(i, begin, end, p, g, m, u, NULL, NULL, NULL, NULL) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        T x = p[i];
        if (WD) d = d + wd * x;
        T mi = FN(fo_lerp)(m[i], d, w, one_minus_w, SMALL);
        m[i] = mi;
        /* torch.maximum (NaN propagates), written with fabs and a non-short-circuit
         * `|`: with a ternary abs or fo_maximum's `||`, GCC 12 sees control flow here
         * and leaves the loop scalar, with mispredicted branches (~7x slower). */
        T decayed = u[i] * beta2, fresh = FABS(d) + eps;
        T ui = ((decayed != decayed) | (decayed > fresh)) ? decayed : fresh;
        u[i] = ui;
        p[i] = x + (neg_clr * mi) / ui;
    }
}

FO_KERNEL void FN(adamax)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *m = (T *)buf[2], *u = (T *)buf[3];
    const double step = h[0], lr = h[1], beta1 = h[2], beta2 = h[3], eps = h[4];
    const double weight_decay = h[5];
    const int maximize = h[6] != 0, scaled = h[7] != 1;
    const double clr = lr / (1 - pow(beta1, step));
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[7];
    const T w = (T)(1 - beta1), one_minus_w = (T)1 - w;
    const int small = (w < 0 ? -w : w) < (T)0.5;
#define FO_ADAMAX_3(_, W, S, G) FN(adamax_body)(p, g, m, u, begin, end, sign, (T)weight_decay, w, one_minus_w, (T)beta2, (T)eps, (T)(-clr), scale, W, S, G)
#define FO_ADAMAX_2(_, W, S) FO_OPT3(scaled, FO_ADAMAX_3, _, W, S)
#define FO_ADAMAX_1(_, W) FO_OPT2(small, FO_ADAMAX_2, _, W)
    FO_OPT1(weight_decay != 0, FO_ADAMAX_1, _);
#undef FO_ADAMAX_1
#undef FO_ADAMAX_2
#undef FO_ADAMAX_3
}
