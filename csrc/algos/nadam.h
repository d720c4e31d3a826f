/*
 * NAdam (torch.optim.NAdam, foreach=False):
 *
 *   d = (-g if maximize else g) / grad_scale
 *   decoupled:  p = p * (1 - lr * weight_decay)      else:  d += weight_decay * p
 *   exp_avg = lerp(exp_avg, d, 1 - beta1)
 *   exp_avg_sq = exp_avg_sq * beta2 + ((1 - beta2) * d) * d
 *   denom = sqrt(exp_avg_sq / bias_correction2) + eps
 *   p = p + (c_grad * d) / denom
 *   p = p + (c_avg * exp_avg) / denom
 *
 * with, in double: bias_correction2 = 1 - beta2**step,
 * mu = beta1 * (1 - 0.5 * 0.96**(step * momentum_decay)), mu_next likewise at step + 1,
 * c_grad = -lr * (1 - mu) / (1 - mu_product), c_avg = (-lr * mu_next) /
 * (1 - mu_product * mu_next).  mu_product is the per-parameter scalar state after this
 * step's update (the caller keeps it, as torch keeps a 0-d tensor).
 *
 * Where FO_CDIV_ON, the division by bias_correction2 takes the FMA form of
 * fo_div_const_checked (as LAMB's), and for double on AVX-512 the two divisions by
 * denom too, sharing its reciprocal (nadam_update): exact in a block whose operations
 * raise no exception flag other than inexact (and whose denominators are not NaN), and
 * a block that raises one is computed again with the divisions, from the new moments it
 * has written and the parameter it kept.
 *
 * buffers: param grad exp_avg exp_avg_sq
 * hyper:   step lr beta1 beta2 eps weight_decay momentum_decay decoupled_weight_decay
 *          maximize mu_product grad_scale
 */
/* One element; x is the parameter (weight decay applied), d the gradient term.
 * With FAST the division by bias_correction2 takes the FMA form of
 * fo_div_const_checked, exact where the block's flags say so.  With FAST == 2 (only
 * where FO_NADAM_SHARED, and where the run-time mode fo_fma_division allows it) the
 * two divisions by denom take it too, with denom's reciprocal
 * (fo_cdiv_make_shared): one division where there were two, denom noted in `*dtop`
 * (fo_cdiv_divisor_note).
 *
 * Against the two divisions, side by side: double on AVX-512 0.89 to 0.94 of the time
 * at 65,536 elements, 0.90 to 1.00 at 16,000,000 (repeated runs, with the range
 * tests the flags replaced), where the double divider bounds the loop; float on
 * AVX-512 1.09x as long and double on AVX2 1.26x in cache (with the flags: the
 * shared form's five vector operations in place of each division, in loops bound by
 * their vector operations rather than by the divider), so only double on AVX-512
 * shares; on an AMD Zen 5 core, whose divider is faster, the two divisions took 0.68
 * to 0.70 of the shared form's time in cache and 0.91 from memory, so it does not
 * share there (fo_fma_division_default). */
#undef FO_NADAM_SHARED
#define FO_NADAM_SHARED (FO_FAST_CDIV == 2 && FO_T_F64)
static FO_INLINE T FN(nadam_update)(T x, T d, T mi, T vi, T bc2, FN(fo_cdiv) bc2k, T eps,
                                    T c_grad, T c_avg, FN(fo_cdiv_acc) *dtop,
                                    const int FAST)
{
    T q;
    if (FAST) {
        q = FN(fo_div_const_checked)(vi, bc2k);
    } else {
        q = vi / bc2;
    }
    const T denom = SQRT(q) + eps;
    if (FAST == 2 && FO_NADAM_SHARED) {
        FN(fo_cdiv_divisor_note)(denom, dtop);
        const FN(fo_cdiv) dk = FN(fo_cdiv_make_shared)(denom);
        x = x + FN(fo_div_const_checked)(c_grad * d, dk);
        return x + FN(fo_div_const_checked)(c_avg * mi, dk);
    }
    x = x + (c_grad * d) / denom;
    return x + (c_avg * mi) / denom;
}

/* One block of elements [start, stop): with F the FMA form of the divisions (F == 2:
 * one reciprocal for both), keeping each parameter as it was in x_old and noting the
 * shared divisors in dtop. */
static FO_INLINE void FN(nadam_block)(T *restrict p, const T *restrict g, T *restrict m,
                                      T *restrict v, T *restrict x_old, int64_t start,
                                      int64_t stop, FN(fo_cdiv_acc) *dtop, T sign, T wd,
                                      T decay, T w, T one_minus_w, T beta2,
                                      T one_minus_beta2, T bc2, FN(fo_cdiv) bc2k, T eps,
                                      T c_grad, T c_avg, T scale, const int F, const int WD,
                                      const int DECOUPLED, const int SMALL, const int SCALED)
{
    for (int64_t i = start; i < stop; i++) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        T x = p[i];
        if (F) x_old[i - start] = x;
        FN(fo_weight_decay)(&x, &d, wd, decay, WD, DECOUPLED);
        T mi, vi;
        FN(fo_adam_moments)(&m[i], &v[i], d, w, one_minus_w, beta2, one_minus_beta2, &mi,
                            &vi, SMALL);
        p[i] = FN(nadam_update)(x, d, mi, vi, bc2, bc2k, eps, c_grad, c_avg, dtop, F);
    }
}

static FO_INLINE void FN(nadam_body)(T *restrict p, const T *restrict g, T *restrict m,
                                     T *restrict v, int64_t begin, int64_t end, T sign,
                                     T wd, T decay, T w, T one_minus_w, T beta2,
                                     T one_minus_beta2, T bc2, FN(fo_cdiv) bc2k, T eps,
                                     T c_grad, T c_avg, T scale, const int FAST,
                                     const int WD, const int DECOUPLED, const int SMALL,
                                     const int SCALED)
{
    /* each block's parameter as it was, to write it again if the block must divide */
    T x_old[FO_CHECK_LONG];
    const int64_t block = FO_CHECK_N(end - begin);
    fo_fpflags flags = {0, 0, 0, 0};
    if (FAST) flags = fo_fpflags_begin();
    fo_retry retry = fo_retry_start();
#define FO_NADAM_BLOCK(F)                                                                \
    FN(nadam_block)(p, g, m, v, x_old, start, stop, &dtop, sign, wd, decay, w, one_minus_w, \
                    beta2, one_minus_beta2, bc2, bc2k, eps, c_grad, c_avg, scale, F, WD,   \
                    DECOUPLED, SMALL, SCALED)
    for (int64_t start = begin; start < end; start += block) {
        const int64_t stop = end - start < block ? end : start + block;
        FN(fo_cdiv_acc) dtop = 0;
        FN(fo_pf_block)(start, p, g, m, v, NULL, NULL, NULL, NULL);
        if (!FAST || !fo_retry_try(&retry, &flags)) {
            FO_NADAM_BLOCK(0);
            continue;
        }
        FO_NADAM_BLOCK(FAST);
        const int ok = fo_fpflags_clean(&flags) && FN(fo_cdiv_divisors_ok)(dtop);
        if (fo_retry_redo(&retry, ok)) {
            /* m and v hold the new moments: from them and the old parameter, divide */
            for (int64_t i = start; i < stop; i++) {
                T d = FN(fo_grad)(g[i], sign, scale, SCALED);
                T x = x_old[i - start];
                FN(fo_weight_decay)(&x, &d, wd, decay, WD, DECOUPLED);
                p[i] = FN(nadam_update)(x, d, m[i], v[i], bc2, bc2k, eps, c_grad, c_avg,
                                        &dtop, 0);
            }
        }
    }
#undef FO_NADAM_BLOCK
    if (FAST) fo_fpflags_end(flags);
}

FO_KERNEL void FN(nadam)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *m = (T *)buf[2], *v = (T *)buf[3];
    const double step = h[0], lr = h[1], beta1 = h[2], beta2 = h[3], eps = h[4];
    const double weight_decay = h[5], momentum_decay = h[6], mu_product = h[9];
    const int decoupled = h[7] != 0, maximize = h[8] != 0, scaled = h[10] != 1;
    const double bias_correction2 = 1 - pow(beta2, step);
    const double mu = beta1 * (1.0 - 0.5 * pow(0.96, step * momentum_decay));
    const double mu_next = beta1 * (1.0 - 0.5 * pow(0.96, (step + 1) * momentum_decay));
    const double c_grad = -lr * (1.0 - mu) / (1.0 - mu_product);
    const double c_avg = (-lr * mu_next) / (1.0 - mu_product * mu_next);
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[10];
    const T w = (T)(1 - beta1), one_minus_w = (T)1 - w;
    const int small = (w < 0 ? -w : w) < (T)0.5;
    const T wd = (T)weight_decay, decay = (T)(1 - lr * weight_decay);
    const T bc2 = (T)bias_correction2;
    const FN(fo_cdiv) bc2k = FN(fo_cdiv_make)(bc2);
    /* against the division, AVX-512, side by side: float 0.81 of its time at 65,536
     * elements, 0.91 at 16,000,000 (with fo_div_sqrt_const's select, 1.02 and 1.10);
     * double 0.83 and 0.79 */
    const int fast = !FN(fo_cdiv_use)(bc2) ? 0
                     : FO_NADAM_SHARED && fo_fma_division >= 2 ? 2 : 1;
#define FO_NADAM_5(_, F, W, D, S, G) FN(nadam_body)(p, g, m, v, begin, end, sign, wd, decay, w, one_minus_w, (T)beta2, (T)(1 - beta2), bc2, bc2k, (T)eps, (T)c_grad, (T)c_avg, scale, F, W, D, S, G)
#define FO_NADAM_4(_, F, W, D, S) FO_OPT5(scaled, FO_NADAM_5, _, F, W, D, S)
#define FO_NADAM_3(_, F, W, D) FO_OPT4(small, FO_NADAM_4, _, F, W, D)
#define FO_NADAM_2(_, F, W) FO_OPT3(W && decoupled, FO_NADAM_3, _, F, W)
#define FO_NADAM_1(_, F) FO_OPT2(weight_decay != 0, FO_NADAM_2, _, F)
    if (FO_NADAM_SHARED && fast == 2) FO_NADAM_1(_, 2);
    else FO_OPT1(fast, FO_NADAM_1, _);
#undef FO_NADAM_1
#undef FO_NADAM_5
#undef FO_NADAM_2
#undef FO_NADAM_3
#undef FO_NADAM_4
}
