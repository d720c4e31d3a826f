/*
 * Adagrad (torch.optim.Adagrad, foreach=False):
 *
 *   clr = lr / (1 + (step - 1) * lr_decay)
 *   d = (-g if maximize else g) / grad_scale;  d += weight_decay * p
 *   sum = sum + (1 * d) * d
 *   p = p + (-clr * d) / (sqrt(sum) + eps)
 *
 * buffers: param grad sum
 * hyper:   step lr lr_decay weight_decay eps maximize grad_scale
 */
static FO_INLINE void FN(adagrad_body)(T *restrict p, const T *restrict g, T *restrict sum,
                                       int64_t begin, int64_t end, T sign, T wd, T eps,
                                       T neg_clr, T scale, const int WD, const int SCALED)
{
    FO_FOR(i, begin, end, p, g, sum, NULL, NULL, NULL, NULL, NULL) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        if (WD) d = d + wd * p[i];
        T s = sum[i] + d * d;
        sum[i] = s;
        p[i] = p[i] + (neg_clr * d) / (SQRT(s) + eps);
    }
}

FO_KERNEL void FN(adagrad)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *sum = (T *)buf[2];
    const double step = h[0], lr = h[1], lr_decay = h[2], weight_decay = h[3], eps = h[4];
    const int maximize = h[5] != 0;
    const double clr = lr / (1 + (step - 1) * lr_decay);
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[6];
    const int scaled = h[6] != 1;
#define FO_ADAGRAD(W, S) FN(adagrad_body)(p, g, sum, begin, end, sign, (T)weight_decay, (T)eps, (T)(-clr), scale, W, S)
#define FO_ADAGRAD_W(_, W) FO_OPT2(scaled, FO_ADAGRAD, W)
    FO_OPT1(weight_decay != 0, FO_ADAGRAD_W, _);
#undef FO_ADAGRAD_W
#undef FO_ADAGRAD
}
