/*
 * RAdam (torch.optim.RAdam, foreach=False):
 *
 *   d = (-g if maximize else g) / grad_scale
 *   decoupled:  p = p * (1 - lr * weight_decay)      else:  d += weight_decay * p
 *   exp_avg = lerp(exp_avg, d, 1 - beta1)
 *   exp_avg_sq = exp_avg_sq * beta2 + ((1 - beta2) * d) * d
 *   corrected = exp_avg / bias_correction1
 *   rho_t > 5:  adaptive = (1 / (sqrt(exp_avg_sq) + eps)) * bias_correction2**0.5
 *               p = p - ((corrected * lr) * adaptive) * rect
 *   else:       p = p - corrected * lr
 *
 * with, in double: bias_correction1 = 1 - beta1**step, bias_correction2 = 1 - beta2**step,
 * rho_inf = 2 / (1 - beta2) - 1, rho_t = rho_inf - 2 * step * beta2**step /
 * bias_correction2, rect = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4)
 * (rho_inf - 2) rho_t)).  torch evaluates `float / tensor` as `reciprocal(tensor) *
 * float`, hence the form of `adaptive`.
 *
 * buffers: param grad exp_avg exp_avg_sq
 * hyper:   step lr beta1 beta2 eps weight_decay decoupled_weight_decay maximize
 *          grad_scale
 */
static FO_INLINE void FN(radam_body)(T *restrict p, const T *restrict g, T *restrict m,
                                     T *restrict v, int64_t begin, int64_t end, T sign,
                                     T wd, T decay, T w, T one_minus_w, T beta2,
                                     T one_minus_beta2, T bc1, T lr, T bc2_sqrt, T eps,
                                     T rect, T scale, const int WD, const int DECOUPLED,
                                     const int SMALL, const int RECTIFY, const int SCALED)
{
    FO_FOR(i, begin, end, p, g, m, v, NULL, NULL, NULL, NULL) {
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        T x = p[i];
        FN(fo_weight_decay)(&x, &d, wd, decay, WD, DECOUPLED);
        T mi, vi;
        FN(fo_adam_moments)(&m[i], &v[i], d, w, one_minus_w, beta2, one_minus_beta2, &mi, &vi,
                            SMALL);
        T corrected = mi / bc1;
        if (RECTIFY) {
            T adaptive = ((T)1 / (SQRT(vi) + eps)) * bc2_sqrt;
            p[i] = x - ((corrected * lr) * adaptive) * rect;
        } else {
            p[i] = x - corrected * lr;
        }
    }
}

FO_KERNEL void FN(radam)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *m = (T *)buf[2], *v = (T *)buf[3];
    const double step = h[0], lr = h[1], beta1 = h[2], beta2 = h[3], eps = h[4];
    const double weight_decay = h[5];
    const int decoupled = h[6] != 0, maximize = h[7] != 0, scaled = h[8] != 1;
    const double bias_correction1 = 1 - pow(beta1, step);
    const double bias_correction2 = 1 - pow(beta2, step);
    const double rho_inf = 2 / (1 - beta2) - 1;
    const double rho_t = rho_inf - 2 * step * pow(beta2, step) / bias_correction2;
    const int rectify = rho_t > 5.0;
    const double rect = rectify ? pow((rho_t - 4) * (rho_t - 2) * rho_inf /
                                      ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.5)
                                : 0.0;
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[8];
    const T w = (T)(1 - beta1), one_minus_w = (T)1 - w;
    const int small = (w < 0 ? -w : w) < (T)0.5;
    const T wd = (T)weight_decay, decay = (T)(1 - lr * weight_decay);
#define FO_RADAM_5(_, W, D, S, R, G) FN(radam_body)(p, g, m, v, begin, end, sign, wd, decay, w, one_minus_w, (T)beta2, (T)(1 - beta2), (T)bias_correction1, (T)lr, (T)pow(bias_correction2, 0.5), (T)eps, (T)rect, scale, W, D, S, R, G)
#define FO_RADAM_4(_, W, D, S, R) FO_OPT5(scaled, FO_RADAM_5, _, W, D, S, R)
#define FO_RADAM_3(_, W, D, S) FO_OPT4(rectify, FO_RADAM_4, _, W, D, S)
#define FO_RADAM_2(_, W, D) FO_OPT3(small, FO_RADAM_3, _, W, D)
#define FO_RADAM_1(_, W) FO_OPT2(W && decoupled, FO_RADAM_2, _, W)
    FO_OPT1(weight_decay != 0, FO_RADAM_1, _);
#undef FO_RADAM_1
#undef FO_RADAM_2
#undef FO_RADAM_3
#undef FO_RADAM_4
#undef FO_RADAM_5
}
