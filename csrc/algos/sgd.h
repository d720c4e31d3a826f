/*
 * SGD with optional momentum, dampening, Nesterov momentum and weight decay
 * (torch.optim.SGD, foreach=False):
 *
 *   d = (-g if maximize else g) / grad_scale;  d += weight_decay * p
 *   buf = d (first step)  or  buf = buf * momentum + (1 - dampening) * d
 *   d = d + momentum * buf (nesterov)  or  d = buf
 *   p = p + (-lr) * d
 *
 * buffers: param grad momentum_buffer
 * hyper:   lr momentum dampening weight_decay nesterov maximize first_step grad_scale
 */
static FO_INLINE void FN(sgd_body)(T *restrict p, const T *restrict g, T *restrict buf,
                                   int64_t begin, int64_t end, T sign, T wd, T mom,
                                   T one_minus_damp, T neg_lr, T scale, const int WD,
                                   const int MOMENTUM, const int NESTEROV, const int FIRST,
                                   const int SCALED)
{
    /* A plain loop, not FO_FOR: SGD's arithmetic is too little for prefetching to help
     * from memory (measured 0.99 to 1.00 of the time), and the blocks cost it 8% in
     * cache. */
    for (int64_t i = begin; i < end; i++) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        if (WD) d = d + wd * p[i];
        if (MOMENTUM) {
            T b = FIRST ? d : buf[i] * mom + one_minus_damp * d;
            buf[i] = b;
            d = NESTEROV ? d + mom * b : b;
        }
        p[i] = p[i] + neg_lr * d;
    }
}

FO_KERNEL void FN(sgd)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *mb = (T *)buf[2];
    const double lr = h[0], momentum = h[1], dampening = h[2], weight_decay = h[3];
    const int nesterov = h[4] != 0, maximize = h[5] != 0, first = h[6] != 0;
    const T sign = maximize ? (T)-1 : (T)1, wd = (T)weight_decay, mom = (T)momentum;
    const T omd = (T)(1 - dampening), neg_lr = (T)(-lr), scale = (T)h[7];
    const int scaled = h[7] != 1;
#define FO_SGD_S(W, M, N, F, S) FN(sgd_body)(p, g, mb, begin, end, sign, wd, mom, omd, neg_lr, scale, W, M, N, F, S)
#define FO_SGD(W, M, N, F) FO_OPT1(scaled, FO_SGD_S, W, M, N, F)
    if (momentum == 0) {
        if (weight_decay != 0) FO_SGD(1, 0, 0, 0); else FO_SGD(0, 0, 0, 0);
    } else if (weight_decay != 0) {
        if (nesterov) { if (first) FO_SGD(1, 1, 1, 1); else FO_SGD(1, 1, 1, 0); }
        else          { if (first) FO_SGD(1, 1, 0, 1); else FO_SGD(1, 1, 0, 0); }
    } else {
        if (nesterov) { if (first) FO_SGD(0, 1, 1, 1); else FO_SGD(0, 1, 1, 0); }
        else          { if (first) FO_SGD(0, 1, 0, 1); else FO_SGD(0, 1, 0, 0); }
    }
#undef FO_SGD
#undef FO_SGD_S
}
