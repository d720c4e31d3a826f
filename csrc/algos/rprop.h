/*
 * Rprop, resilient backpropagation (torch.optim.Rprop, foreach=False):
 *
 *   d = (-g if maximize else g) / grad_scale
 *   f = etaplus if d * prev > 0, etaminus if d * prev < 0, else 1   (NaN product: 1)
 *   step_size = clamp(step_size * f, step_size_min, step_size_max)   (NaN propagates)
 *   d = 0 where f == etaminus
 *   p = p + (-1 * sign(d)) * step_size,  sign(NaN) = 0 as torch.sign
 *   prev = d
 *
 * The product, f and the comparison with etaminus are in the element type, as torch
 * computes them.
 *
 * The gradient's sign, the product and the step size's growth are multiplications as
 * FMAs (fo_mul_fma, kernels_impl.h): with state full of subnormal numbers the step
 * took 1.01 to 3.09x its normal time at 65,536 float32 elements as the core's state
 * changed (40 samples on each of two cores), and 0.94 to 1.03x with the FMAs; over
 * normal numbers the FMAs cost 1.03 to 1.07x in cache and nothing at 4,000,000.
 *
 * buffers: param grad prev step_size
 * hyper:   etaminus etaplus step_size_min step_size_max maximize grad_scale
 */
static FO_INLINE void FN(rprop_body)(T *restrict p, const T *restrict g, T *restrict prev,
                                     T *restrict step_size, int64_t begin, int64_t end,
                                     T sign, T etaminus, T etaplus, T lo, T hi, T scale,
                                     const int SCALED)
{
    FO_FOR(i, begin, end, p, g, prev, step_size, NULL, NULL, NULL, NULL) {
        T d = FN(fo_grad_fma)(g[i], sign, scale, SCALED);
        T product = FN(fo_mul_fma)(d, prev[i]);
        T f = product > 0 ? etaplus : (product < 0 ? etaminus : (T)1);
        T s = FN(fo_minimum)(FN(fo_maximum)(FN(fo_mul_fma)(step_size[i], f), lo), hi);
        step_size[i] = s;
        d = f == etaminus ? (T)0 : d;
        T direction = (T)(d > 0) - (T)(d < 0);
        p[i] = p[i] + -direction * s;
        prev[i] = d;
    }
}

FO_KERNEL void FN(rprop)(char *const *buf, int64_t begin, int64_t end, const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *prev = (T *)buf[2], *step_size = (T *)buf[3];
    const int maximize = h[4] != 0, scaled = h[5] != 1;
    const T sign = maximize ? (T)-1 : (T)1, scale = (T)h[5];
#define FO_RPROP(_, G) FN(rprop_body)(p, g, prev, step_size, begin, end, sign, (T)h[0], (T)h[1], (T)h[2], (T)h[3], scale, G)
    FO_OPT1(scaled, FO_RPROP, _);
#undef FO_RPROP
}
