/*
 * RMSprop (torch.optim.RMSprop, foreach=False):
 *
 *   d = (-g if maximize else g) / grad_scale;  d += weight_decay * p
 *   square_avg = square_avg * alpha + ((1 - alpha) * d) * d
 *   centered:  grad_avg = lerp(grad_avg, d, 1 - alpha)
 *              avg = sqrt(square_avg + (-1 * grad_avg) * grad_avg) + eps
 *   else:      avg = sqrt(square_avg) + eps
 *   momentum > 0:  momentum_buffer = momentum_buffer * momentum + (1 * d) / avg
 *                  p = p + (-lr) * momentum_buffer
 *   else:          p = p + (-lr * d) / avg
 *
 * buffers: param grad square_avg momentum_buffer grad_avg
 * hyper:   step lr alpha eps weight_decay momentum centered maximize grad_scale
 */
static FO_INLINE void FN(rmsprop_body)(T *restrict p, const T *restrict g, T *restrict sq,
                                       T *restrict mb, T *restrict ga, int64_t begin,
                                       int64_t end, T sign, T wd, T alpha, T one_minus_alpha,
                                       T one_minus_w, T eps, T mom, T neg_lr, T scale,
                                       const int WD, const int CENTERED, const int MOMENTUM,
                                       const int SMALL, const int SCALED)
{
    FO_FOR(i, begin, end, p, g, sq, MOMENTUM ? mb : NULL, CENTERED ? ga : NULL, NULL, NULL, NULL) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        if (WD) d = d + wd * p[i];
        T s = sq[i] * alpha + (one_minus_alpha * d) * d;
        sq[i] = s;
        T avg;
        if (CENTERED) {
            T a = FN(fo_lerp)(ga[i], d, one_minus_alpha, one_minus_w, SMALL);
            ga[i] = a;
            avg = SQRT(s + -a * a) + eps;
        } else {
            avg = SQRT(s) + eps;
        }
        if (MOMENTUM) {
            T b = mb[i] * mom + d / avg;
            mb[i] = b;
            p[i] = p[i] + neg_lr * b;
        } else {
            p[i] = p[i] + (neg_lr * d) / avg;
        }
    }
}

FO_KERNEL void FN(rmsprop)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *sq = (T *)buf[2], *mb = (T *)buf[3], *ga = (T *)buf[4];
    const double lr = h[1], alpha = h[2], eps = h[3], weight_decay = h[4], momentum = h[5];
    const int centered = h[6] != 0, maximize = h[7] != 0;
    const T sign = maximize ? (T)-1 : (T)1, wd = (T)weight_decay;
    /* grad_avg.lerp_(grad, 1 - alpha): ATen casts the weight, then branches on it */
    const T w = (T)(1 - alpha), one_minus_w = (T)1 - w;
    const int small = (w < 0 ? -w : w) < (T)0.5;
    const T ta = (T)alpha, te = (T)eps, tm = (T)momentum, neg_lr = (T)(-lr), scale = (T)h[8];
    const int scaled = h[8] != 1;
#define FO_RMS_G(W, C, M, S, G) FN(rmsprop_body)(p, g, sq, mb, ga, begin, end, sign, wd, ta, w, one_minus_w, te, tm, neg_lr, scale, W, C, M, S, G)
#define FO_RMS(W, C, M, S) FO_OPT1(scaled, FO_RMS_G, W, C, M, S)
#define FO_RMS_CM(W)                                                                     \
    do {                                                                                 \
        if (centered) {                                                                  \
            if (momentum > 0) { if (small) FO_RMS(W, 1, 1, 1); else FO_RMS(W, 1, 1, 0); } \
            else              { if (small) FO_RMS(W, 1, 0, 1); else FO_RMS(W, 1, 0, 0); } \
        } else {                                                                         \
            if (momentum > 0) FO_RMS(W, 0, 1, 0); else FO_RMS(W, 0, 0, 0);              \
        }                                                                                \
    } while (0)
    if (weight_decay != 0) FO_RMS_CM(1); else FO_RMS_CM(0);
#undef FO_RMS_CM
#undef FO_RMS
#undef FO_RMS_G
}
