/*
 * Adadelta (torch.optim.Adadelta, foreach=False):
 *
 *   d = (-g if maximize else g) / grad_scale;  d += weight_decay * p
 *   square_avg = square_avg * rho + ((1 - rho) * d) * d
 *   delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * d
 *   acc_delta = acc_delta * rho + ((1 - rho) * delta) * delta
 *   p = p + (-lr) * delta
 *
 * buffers: param grad square_avg acc_delta
 * hyper:   step lr rho eps weight_decay maximize grad_scale
 */
static FO_INLINE void FN(adadelta_body)(T *restrict p, const T *restrict g, T *restrict sq,
                                        T *restrict acc, int64_t begin, int64_t end, T sign,
                                        T wd, T rho, T one_minus_rho, T eps, T neg_lr,
                                        T scale, const int WD, const int SCALED)
{
    FO_FOR(i, begin, end, p, g, sq, acc, NULL, NULL, NULL, NULL) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        if (WD) d = d + wd * p[i];
        T s = sq[i] * rho + (one_minus_rho * d) * d;
        sq[i] = s;
        T std = SQRT(s + eps);
        T a = acc[i];
        T delta = SQRT(a + eps) / std * d;
        acc[i] = a * rho + (one_minus_rho * delta) * delta;
        p[i] = p[i] + neg_lr * delta;
    }
}

FO_KERNEL void FN(adadelta)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *sq = (T *)buf[2], *acc = (T *)buf[3];
    const double lr = h[1], rho = h[2], eps = h[3], weight_decay = h[4];
    const int maximize = h[5] != 0;
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[6];
    const int scaled = h[6] != 1;
#define FO_ADADELTA(W, S) FN(adadelta_body)(p, g, sq, acc, begin, end, sign, (T)weight_decay, (T)rho, (T)(1 - rho), (T)eps, (T)(-lr), scale, W, S)
#define FO_ADADELTA_W(_, W) FO_OPT2(scaled, FO_ADADELTA, W)
    FO_OPT1(weight_decay != 0, FO_ADADELTA_W, _);
#undef FO_ADADELTA_W
#undef FO_ADADELTA
}
