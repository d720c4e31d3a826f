/*
 * LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT
 * in 76 minutes", ICLR 2020, Algorithm 2, with phi = identity), a two-pass kernel:
 *
 *   d = (-g if maximize else g) / grad_scale
 *   exp_avg' = exp_avg * beta1 + (1 - beta1) * d
 *   exp_avg_sq' = exp_avg_sq * beta2 + (1 - beta2) * (d * d)
 *   u = (exp_avg' / bias_correction1) / (sqrt(exp_avg_sq' / bias_correction2) + eps)
 *       + weight_decay * p
 *   pass 1 (lamb_sums): param_sq_norm = sum p*p, update_sq_norm = sum u*u (double)
 *   trust = |p| / |u| if both are > 0, else 1            (in double)
 *   pass 2 (lamb):      exp_avg = exp_avg', exp_avg_sq = exp_avg_sq',
 *                       p = p + (-(lr * trust)) * u
 *
 * Pass 1 computes u without storing anything; pass 2 computes it again, identically.
 * Where FO_CDIV_ON, the divisions by the bias corrections take the FMA form of
 * fo_div_const_checked (the division's bits without the divide unit: three divisions
 * and a square root per element and pass become one and one); a block (a tile in pass
 * 1) whose operations raise an exception flag other than inexact is computed again with
 * the divisions, pass 2 from the new moments it has written and the parameter it kept.
 *
 * buffers: param grad exp_avg exp_avg_sq
 * hyper:   step lr beta1 beta2 eps weight_decay maximize grad_scale
 *          param_sq_norm update_sq_norm            (the last two from pass 1)
 */
typedef struct {
    T sign, scale, beta1, one_minus_beta1, beta2, one_minus_beta2, bc1, bc2, eps, wd;
    FN(fo_cdiv) bc1k, bc2k;
    int fast;     /* both bias corrections take the FMA form */
} FN(lamb_consts);

static FO_INLINE FN(lamb_consts) FN(lamb_setup)(const double *h)
{
    const double step = h[0], beta1 = h[2], beta2 = h[3];
    const T bc1 = (T)(1 - pow(beta1, step)), bc2 = (T)(1 - pow(beta2, step));
    FN(lamb_consts) c = {
        h[6] != 0 ? (T)-1 : (T)1, (T)h[7], (T)beta1, (T)(1 - beta1), (T)beta2,
        (T)(1 - beta2), bc1, bc2, (T)h[4], (T)h[5],
        FN(fo_cdiv_make)(bc1), FN(fo_cdiv_make)(bc2),
        FN(fo_cdiv_use)(bc1) && FN(fo_cdiv_use)(bc2)};
    return c;
}

/* u without weight decay from the new moments, dividing by the bias corrections. */
static FO_INLINE T FN(lamb_divided)(const FN(lamb_consts) *c, T m, T v)
{
    return (m / c->bc1) / (SQRT(v / c->bc2) + c->eps);
}

/* u for one element, and the moments it comes from.  With FAST the two divisions by
 * the bias corrections take the FMA form of fo_div_const_checked, and the caller
 * computes a block again without FAST when its flags say to (fo_fpflags_clean). */
static FO_INLINE T FN(lamb_direction)(const FN(lamb_consts) *c, T grad, T x, T m_old,
                                      T v_old, T *m_new, T *v_new, const int FAST,
                                      const int WD, const int SCALED)
{
    T d = FN(fo_grad)(grad, c->sign, c->scale, SCALED);
    T m = m_old * c->beta1 + c->one_minus_beta1 * d;
    T v = v_old * c->beta2 + c->one_minus_beta2 * (d * d);
    *m_new = m;
    *v_new = v;
    T u;
    if (FAST) {
        u = FN(fo_div_const_checked)(m, c->bc1k) /
            (SQRT(FN(fo_div_const_checked)(v, c->bc2k)) + c->eps);
    } else {
        u = FN(lamb_divided)(c, m, v);
    }
    return WD ? u + c->wd * x : u;
}

static FO_INLINE void FN(lamb_sums_body)(const T *restrict p, const T *restrict g,
                                         const T *restrict m, const T *restrict v,
                                         int64_t begin, int64_t end,
                                         const FN(lamb_consts) *c, double *sums,
                                         const int FAST, const int WD, const int SCALED)
{
    double param_sq[FO_SUM_LANES] = {0}, update_sq[FO_SUM_LANES] = {0};
    T u[FO_SUM_TILE];
    fo_fpflags flags = {0, 0, 0, 0};
    if (FAST) flags = fo_fpflags_begin();
    fo_retry retry = fo_retry_start();
#define FO_LAMB_TILE(F)                                                                  \
    FO_FOR(i, start, start + n, p, g, m, v, NULL, NULL, NULL, NULL) {                    \
        T mn, vn;                                                                        \
        u[i - start] = FN(lamb_direction)(c, g[i], p[i], m[i], v[i], &mn, &vn, F, WD,    \
                                          SCALED);                                       \
    }
    for (int64_t start = begin; start < end; start += FO_SUM_TILE) {
        const int64_t n = end - start < FO_SUM_TILE ? end - start : FO_SUM_TILE;
        if (!FAST || !fo_retry_try(&retry, &flags)) {
            FO_LAMB_TILE(0)
        } else {
            FO_LAMB_TILE(FAST)
            /* where an operation raised a flag, divide the tile (this pass writes
             * nothing, so the tile's inputs are as they were) */
            if (fo_retry_redo(&retry, fo_fpflags_clean(&flags))) {
                FO_LAMB_TILE(0)
            }
        }
        FN(fo_lane_sumsq2)(p + start, u, n, param_sq, update_sq);
    }
#undef FO_LAMB_TILE
    if (FAST) fo_fpflags_end(flags);
    sums[0] += FO_LANE_TOTAL(param_sq);
    sums[1] += FO_LANE_TOTAL(update_sq);
}

FO_KERNEL void FN(lamb_sums)(char *const *buf, int64_t begin, int64_t end, const double *h,
                             double *sums)
{
    const FN(lamb_consts) c = FN(lamb_setup)(h);
    const int scaled = h[7] != 1;
#define FO_LAMB_SUMS(_, F, W, G) FN(lamb_sums_body)((const T *)buf[0], (const T *)buf[1], (const T *)buf[2], (const T *)buf[3], begin, end, &c, sums, F, W, G)
#define FO_LAMB_SUMS_W(_, F, W) FO_OPT3(scaled, FO_LAMB_SUMS, _, F, W)
#define FO_LAMB_SUMS_F(_, F) FO_OPT2(h[5] != 0, FO_LAMB_SUMS_W, _, F)
    FO_OPT1(c.fast, FO_LAMB_SUMS_F, _);
#undef FO_LAMB_SUMS_F
#undef FO_LAMB_SUMS_W
#undef FO_LAMB_SUMS
}

static FO_INLINE void FN(lamb_body)(T *restrict p, const T *restrict g, T *restrict m,
                                    T *restrict v, int64_t begin, int64_t end,
                                    const FN(lamb_consts) *c, T neg_step, const int FAST,
                                    const int WD, const int SCALED)
{
    /* each block's parameter as it was, to write it again if the block must divide */
    T x_old[FO_CHECK_LONG];
    const int64_t block = FO_CHECK_N(end - begin);
    fo_fpflags flags = {0, 0, 0, 0};
    if (FAST) flags = fo_fpflags_begin();
    fo_retry retry = fo_retry_start();
#define FO_LAMB_BLOCK(F)                                                                 \
    for (int64_t i = start; i < stop; i++) {                                             \
        T mn, vn, x = p[i];                                                              \
        if (F) x_old[i - start] = x;                                                     \
        T u = FN(lamb_direction)(c, g[i], x, m[i], v[i], &mn, &vn, F, WD, SCALED);       \
        m[i] = mn;                                                                       \
        v[i] = vn;                                                                       \
        p[i] = x + neg_step * u;                                                         \
    }
    for (int64_t start = begin; start < end; start += block) {
        const int64_t stop = end - start < block ? end : start + block;
        FN(fo_pf_block)(start, p, g, m, v, NULL, NULL, NULL, NULL);
        if (!FAST || !fo_retry_try(&retry, &flags)) {
            FO_LAMB_BLOCK(0)
            continue;
        }
        FO_LAMB_BLOCK(FAST)
        if (fo_retry_redo(&retry, fo_fpflags_clean(&flags))) {
            /* m and v hold the new moments: from them, divide */
            for (int64_t i = start; i < stop; i++) {
                const T x = x_old[i - start];
                T u = FN(lamb_divided)(c, m[i], v[i]);
                if (WD) u = u + c->wd * x;
                p[i] = x + neg_step * u;
            }
        }
    }
#undef FO_LAMB_BLOCK
    if (FAST) fo_fpflags_end(flags);
}

FO_KERNEL void FN(lamb)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    const FN(lamb_consts) c = FN(lamb_setup)(h);
    const int scaled = h[7] != 1;
    const double param_norm = sqrt(h[8]), update_norm = sqrt(h[9]);
    const double trust = param_norm > 0 && update_norm > 0 ? param_norm / update_norm : 1.0;
    const T neg_step = (T)(-(h[1] * trust));
#define FO_LAMB(_, F, W, G) FN(lamb_body)((T *)buf[0], (const T *)buf[1], (T *)buf[2], (T *)buf[3], begin, end, &c, neg_step, F, W, G)
#define FO_LAMB_W(_, F, W) FO_OPT3(scaled, FO_LAMB, _, F, W)
#define FO_LAMB_F(_, F) FO_OPT2(h[5] != 0, FO_LAMB_W, _, F)
    FO_OPT1(c.fast, FO_LAMB_F, _);
#undef FO_LAMB_F
#undef FO_LAMB_W
#undef FO_LAMB
}
