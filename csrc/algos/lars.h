/*
 * LARS (You, Gitman and Ginsburg 2017, "Large Batch Training of Convolutional
 * Networks", arXiv:1708.03888, Algorithm 1), a two-pass kernel:
 *
 *   d = (-g if maximize else g) / grad_scale
 *   pass 1 (lars_sums): param_sq_norm = sum p*p, grad_sq_norm = sum d*d (double)
 *   trust = trust_coefficient * |p| / (|d| + weight_decay * |p|) if |p| > 0 and the
 *           denominator is > 0, else 1                          (in double)
 *   pass 2 (lars):  u = d + weight_decay * p;  c = lr * trust
 *     momentum:  buf = buf * momentum + c * u
 *                p = p - (c * u + momentum * buf)   (nesterov)   or   p = p - buf
 *     else:      p = p - c * u
 *
 * buffers: param grad momentum_buffer
 * hyper:   lr momentum weight_decay trust_coefficient nesterov maximize grad_scale
 *          param_sq_norm grad_sq_norm                  (the last two from pass 1)
 */
static FO_INLINE void FN(lars_sums_body)(const T *restrict p, const T *restrict g,
                                         int64_t begin, int64_t end, T sign, T scale,
                                         double *sums, const int SCALED)
{
    double param_sq[FO_SUM_LANES] = {0}, grad_sq[FO_SUM_LANES] = {0};
    T d[FO_SUM_TILE];
    /* Negation cannot change a square, so only a loss scale needs d itself. */
    if (!SCALED) FN(fo_lane_sumsq2)(p + begin, g + begin, end - begin, param_sq, grad_sq);
    else for (int64_t start = begin; start < end; start += FO_SUM_TILE) {
        const int64_t n = end - start < FO_SUM_TILE ? end - start : FO_SUM_TILE;
        FO_FOR(i, start, start + n, g, p, NULL, NULL, NULL, NULL, NULL, NULL)
            d[i - start] = FN(fo_grad)(g[i], sign, scale, SCALED);
        FN(fo_lane_sumsq2)(p + start, d, n, param_sq, grad_sq);
    }
    sums[0] += FO_LANE_TOTAL(param_sq);
    sums[1] += FO_LANE_TOTAL(grad_sq);
}

FO_KERNEL void FN(lars_sums)(char *const *buf, int64_t begin, int64_t end, const double *h,
                             double *sums)
{
    const T sign = h[5] != 0 ? (T)-1 : (T)1, scale = (T)h[6];
#define FO_LARS_SUMS(_, G) FN(lars_sums_body)((const T *)buf[0], (const T *)buf[1], begin, end, sign, scale, sums, G)
    FO_OPT1(h[6] != 1, FO_LARS_SUMS, _);
#undef FO_LARS_SUMS
}

static FO_INLINE void FN(lars_body)(T *restrict p, const T *restrict g, T *restrict buf,
                                    int64_t begin, int64_t end, T sign, T scale, T wd,
                                    T local_lr, T mom, const int WD, const int MOMENTUM,
                                    const int NESTEROV, const int SCALED)
{
    FO_FOR(i, begin, end, p, g, MOMENTUM ? buf : NULL, NULL, NULL, NULL, NULL, NULL) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        T x = p[i];
        if (WD) d = d + wd * x;
        T step = local_lr * d;
        if (MOMENTUM) {
            T b = buf[i] * mom + step;
            buf[i] = b;
            step = NESTEROV ? step + mom * b : b;
        }
        p[i] = x - step;
    }
}

FO_KERNEL void FN(lars)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    const double lr = h[0], momentum = h[1], weight_decay = h[2], trust_coefficient = h[3];
    const int nesterov = h[4] != 0, scaled = h[6] != 1;
    const double param_norm = sqrt(h[7]), grad_norm = sqrt(h[8]);
    const double denom = grad_norm + weight_decay * param_norm;
    const double trust = param_norm > 0 && denom > 0
                             ? trust_coefficient * param_norm / denom : 1.0;
    const T sign = h[5] != 0 ? (T)-1 : (T)1, scale = (T)h[6];
#define FO_LARS_4(_, W, M, N, G) FN(lars_body)((T *)buf[0], (const T *)buf[1], (T *)buf[2], begin, end, sign, scale, (T)weight_decay, (T)(lr * trust), (T)momentum, W, M, N, G)
#define FO_LARS_3(_, W, M, N) FO_OPT4(scaled, FO_LARS_4, _, W, M, N)
#define FO_LARS_2(_, W, M) FO_OPT3(M && nesterov, FO_LARS_3, _, W, M)
#define FO_LARS_1(_, W) FO_OPT2(momentum != 0, FO_LARS_2, _, W)
    FO_OPT1(weight_decay != 0, FO_LARS_1, _);
#undef FO_LARS_1
#undef FO_LARS_2
#undef FO_LARS_3
#undef FO_LARS_4
}
