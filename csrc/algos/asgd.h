/*
 * ASGD, averaged SGD (torch.optim.ASGD, foreach=False):
 *
 *   d = (-g if maximize else g) / grad_scale;  d += weight_decay * p
 *   p = p * (1 - lambd * eta)
 *   p = p + (-eta) * d
 *   ax = p                       if mu == 1
 *   ax = ax + (p - ax) * mu      otherwise
 *
 * eta and mu are the per-parameter scalar state before this step (torch keeps them as
 * 0-d tensors and updates them after the pass; the caller does that here).
 *
 * buffers: param grad ax
 * hyper:   lambd weight_decay maximize eta mu grad_scale
 */
static FO_INLINE void FN(asgd_body)(T *restrict p, const T *restrict g, T *restrict ax,
                                    int64_t begin, int64_t end, T sign, T wd, T decay,
                                    T neg_eta, T mu, T scale, const int WD, const int COPY,
                                    const int SCALED)
{
    if (COPY) {
        /* ax is only written: without a read the hardware prefetchers do not fetch
         * its lines ahead, and every store waits for its line (measured 1.3 to 1.9x
         * slower than reading and writing ax); ask for the lines ahead, for writing,
         * where the kernels prefetch (fo_prefetch) */
        const int64_t line = 64 / (int64_t)sizeof(T), ahead = 16 * line;
        for (int64_t block = begin; block < end; block += line) {
            const int64_t stop = end - block < line ? end : block + line;
            if (fo_prefetch) __builtin_prefetch(ax + block + ahead, 1, 3);
            for (int64_t i = block; i < stop; i++) {
                T d = FN(fo_grad)(g[i], sign, scale, SCALED);
                T x = p[i];
                if (WD) d = d + wd * x;
                x = x * decay;
                x = x + neg_eta * d;
                p[i] = x;
                ax[i] = x;
            }
        }
        return;
    }
    FO_FOR(i, begin, end, p, g, ax, NULL, NULL, NULL, NULL, NULL) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        T x = p[i];
        if (WD) d = d + wd * x;
        x = x * decay;
        x = x + neg_eta * d;
        p[i] = x;
        ax[i] = COPY ? x : ax[i] + (x - ax[i]) * mu;
    }
}

FO_KERNEL void FN(asgd)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *ax = (T *)buf[2];
    const double lambd = h[0], weight_decay = h[1], eta = h[3], mu = h[4];
    const int maximize = h[2] != 0, scaled = h[5] != 1, copy = mu == 1;
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[5];
#define FO_ASGD_3(_, W, C, G) FN(asgd_body)(p, g, ax, begin, end, sign, (T)weight_decay, (T)(1 - lambd * eta), (T)(-eta), (T)mu, scale, W, C, G)
#define FO_ASGD_2(_, W, C) FO_OPT3(scaled, FO_ASGD_3, _, W, C)
#define FO_ASGD_1(_, W) FO_OPT2(copy, FO_ASGD_2, _, W)
    FO_OPT1(weight_decay != 0, FO_ASGD_1, _);
#undef FO_ASGD_1
#undef FO_ASGD_2
#undef FO_ASGD_3
}
