/*
 * Adafactor (torch.optim.Adafactor, foreach=False; Shazeer and Stern 2018).
 *
 * Not an fo_kernel_fn: the second moment of a parameter with two or more dimensions,
 * seen as `batch` matrices of rows x cols, is kept factored as row_var (batch x rows)
 * and col_var (batch x cols), shapes unlike the parameter's, and the step needs the
 * parameter's norm, per-row and per-column sums of squared gradients and the update's
 * norm before it can write the parameter.  It runs over a whole parameter, in passes:
 *
 *   in double: one_minus_beta2_t = step**beta2_decay, rho_t = min(lr, 1 / step**0.5),
 *   eps1 = eps[0], or the element type's machine epsilon when eps[0] is None (NaN here)
 *   pass 1: param_sq = sum p*p;  alpha = max(eps2, sqrt(param_sq) / n**0.5) * rho_t
 *     factored:  row_sq[r] = sum_c d*d,  col_sq[c] = sum_r d*d      (double, in order)
 *                row_var = lerp(row_var, (T)(row_sq / cols), one_minus_beta2_t)
 *                col_var = lerp(col_var, (T)(col_sq / rows), one_minus_beta2_t)
 *                row_mean = max((T)(sum_r row_var / rows), eps1)
 *                v = (row_var[r] * col_var[c]) / row_mean
 *     else:      variance = lerp(variance, d * d, one_minus_beta2_t);  v = variance
 *   pass 2: u = (1 / sqrt(max(v, eps1 * eps1))) * d;  update_sq = sum u*u
 *           denom = max(1, sqrt(update_sq) / (n**0.5 * d_clip))
 *   pass 3: p = p * (1 - lr * weight_decay);  p = p + (-alpha / denom) * u
 *
 * (A parameter of fewer than two dimensions fuses passes 1 and 2; see
 * adafactor_vector_sums.)
 *
 * with d = (-g if maximize else g) / grad_scale.  param_sq and update_sq are summed in
 * the order fastopt.h fixes for reductions (blocks, lanes); row and column sums
 * sequentially.  max(a, b) with a NaN b gives a, as Python's max; the elementwise
 * maxima propagate NaN, as torch.clamp.
 *
 * buffers: param grad row_var col_var variance
 * hyper:   step lr beta2_decay eps1 eps2 d weight_decay maximize grad_scale
 */

/* The running state of a sum in fastopt's fixed reduction order. */
typedef struct {
    double lanes[FO_SUM_LANES];
    double total;
} FN(fo_ordered_acc);

static FO_INLINE void FN(fo_acc_add)(FN(fo_ordered_acc) *acc, int64_t i, double x)
{
    if (i > 0 && i % FO_SUM_BLOCK == 0) {
        acc->total += FO_LANE_TOTAL(acc->lanes);
        for (int j = 0; j < FO_SUM_LANES; j++) acc->lanes[j] = 0;
    }
    acc->lanes[i % FO_SUM_LANES] += x;
}

static FO_INLINE double FN(fo_acc_total)(const FN(fo_ordered_acc) *acc, int64_t n)
{
    return n > 0 ? acc->total + FO_LANE_TOTAL(acc->lanes) : 0.0;
}

/* Python's max(a, b) and min(a, b): the first argument unless the second compares
 * greater (smaller). */
static FO_INLINE double FN(fo_py_max)(double a, double b) { return b > a ? b : a; }
static FO_INLINE double FN(fo_py_min)(double a, double b) { return b < a ? b : a; }

/* A parameter with fewer than two dimensions (an unfactored `variance`) takes two
 * vectorized passes instead of three: pass 1 updates `variance` and sums the squares of
 * the parameter and of the update u (which needs only this element's new variance),
 * pass 2 writes the parameter.  The sums follow fastopt.h's order (FO_SUM_BLOCK
 * blocks, FO_SUM_LANES lanes), as the three-pass loops do, so the bits are the same. */
static FO_INLINE void FN(adafactor_vector_sums)(const T *restrict p, const T *restrict g,
                                                T *restrict variance, int64_t n, T sign,
                                                T scale, T w, T one_minus_w, T teps1_sq,
                                                double *param_sq, double *update_sq,
                                                const int SMALL, const int SCALED)
{
    T u[FO_SUM_TILE];
    *param_sq = 0;
    *update_sq = 0;
    for (int64_t block = 0; block < n; block += FO_SUM_BLOCK) {
        const int64_t block_end = n - block < FO_SUM_BLOCK ? n : block + FO_SUM_BLOCK;
        double param_lanes[FO_SUM_LANES] = {0}, update_lanes[FO_SUM_LANES] = {0};
        for (int64_t start = block; start < block_end; start += FO_SUM_TILE) {
            const int64_t len = block_end - start < FO_SUM_TILE ? block_end - start
                                                                : FO_SUM_TILE;
            for (int64_t k = 0; k < len; k++) {
                const int64_t i = start + k;
                T d = FN(fo_grad)(g[i], sign, scale, SCALED);
                T v = FN(fo_lerp)(variance[i], d * d, w, one_minus_w, SMALL);
                variance[i] = v;
                u[k] = ((T)1 / SQRT(FN(fo_maximum)(v, teps1_sq))) * d;
            }
            FN(fo_lane_sumsq2)(p + start, u, len, param_lanes, update_lanes);
        }
        *param_sq += FO_LANE_TOTAL(param_lanes);
        *update_sq += FO_LANE_TOTAL(update_lanes);
    }
}

static FO_INLINE void FN(adafactor_vector_update)(T *restrict p, const T *restrict g,
                                                  const T *restrict variance, int64_t n,
                                                  T sign, T scale, T teps1_sq, T coef,
                                                  T decay, const int WD, const int SCALED)
{
    for (int64_t i = 0; i < n; i++) {
        T x = p[i];
        if (WD) x = x * decay;
        T d = FN(fo_grad)(g[i], sign, scale, SCALED);
        p[i] = x + coef * (((T)1 / SQRT(FN(fo_maximum)(variance[i], teps1_sq))) * d);
    }
}

void FN(adafactor)(char *const *buf, int64_t batch, int64_t rows, int64_t cols,
                   const double *h)
{
    T *p = (T *)buf[0];
    const T *g = (const T *)buf[1];
    T *row_var = (T *)buf[2], *col_var = (T *)buf[3], *variance = (T *)buf[4];
    const int factored = variance == NULL;
    const int64_t n = batch * rows * cols;
    const double step = h[0], lr = h[1], beta2_decay = h[2];
    const double eps1 = h[3] != h[3] ? (double)FO_EPS : h[3], eps2 = h[4];
    const double d_clip = h[5], weight_decay = h[6];
    const T sign = h[7] != 0 ? (T)-1 : (T)1, scale = (T)h[8];
    const int scaled = h[8] != 1;
    const double one_minus_beta2_t = pow(step, beta2_decay);
    const double rho_t = FN(fo_py_min)(lr, 1 / pow(step, 0.5));
    const T w = (T)one_minus_beta2_t, one_minus_w = (T)1 - w;
    const int small = (w < 0 ? -w : w) < (T)0.5;
    const T teps1 = (T)eps1, teps1_sq = (T)(eps1 * eps1);

    if (!factored) {
        double param_sq, update_sq;
#define FO_ADAFACTOR_SUMS(_, S, G) FN(adafactor_vector_sums)(p, g, variance, n, sign, scale, w, one_minus_w, teps1_sq, &param_sq, &update_sq, S, G)
#define FO_ADAFACTOR_SUMS_S(_, S) FO_OPT2(scaled, FO_ADAFACTOR_SUMS, _, S)
        FO_OPT1(small, FO_ADAFACTOR_SUMS_S, _);
#undef FO_ADAFACTOR_SUMS_S
#undef FO_ADAFACTOR_SUMS
        const double alpha_v =
            FN(fo_py_max)(eps2, sqrt(n > 0 ? param_sq : 0.0) / pow((double)n, 0.5)) * rho_t;
        const double denom_v = FN(fo_py_max)(
            1.0, sqrt(n > 0 ? update_sq : 0.0) / (pow((double)n, 0.5) * d_clip));
        const T coef_v = (T)(-alpha_v / denom_v), decay_v = (T)(1 - lr * weight_decay);
#define FO_ADAFACTOR_UPDATE(_, W, G) FN(adafactor_vector_update)(p, g, variance, n, sign, scale, teps1_sq, coef_v, decay_v, W, G)
#define FO_ADAFACTOR_UPDATE_W(_, W) FO_OPT2(scaled, FO_ADAFACTOR_UPDATE, _, W)
        FO_OPT1(weight_decay != 0, FO_ADAFACTOR_UPDATE_W, _);
#undef FO_ADAFACTOR_UPDATE_W
#undef FO_ADAFACTOR_UPDATE
        return;
    }

    /* pass 1: the parameter's norm, then the second-moment state */
    FN(fo_ordered_acc) acc = {{0}, 0};
    for (int64_t i = 0; i < n; i++) FN(fo_acc_add)(&acc, i, (double)p[i] * (double)p[i]);
    const double alpha =
        FN(fo_py_max)(eps2, sqrt(FN(fo_acc_total)(&acc, n)) / pow((double)n, 0.5)) * rho_t;
    double *col_sq = NULL;
    T *row_mean = NULL;
    if (factored) {
        col_sq = (double *)malloc((size_t)(cols > 0 ? cols : 1) * sizeof(double));
        row_mean = (T *)malloc((size_t)(batch > 0 ? batch : 1) * sizeof(T));
        if (col_sq == NULL || row_mean == NULL) {
            /* cannot happen for sane sizes; leave everything unwritten */
            free(col_sq);
            free(row_mean);
            return;
        }
        for (int64_t b = 0; b < batch; b++) {
            const T *gb = g + b * rows * cols;
            T *rv = row_var + b * rows, *cv = col_var + b * cols;
            for (int64_t c = 0; c < cols; c++) col_sq[c] = 0;
            for (int64_t r = 0; r < rows; r++) {
                double row_sq = 0;
                for (int64_t c = 0; c < cols; c++) {
                    double x = (double)FN(fo_grad)(gb[r * cols + c], sign, scale, scaled);
                    row_sq += x * x;
                    col_sq[c] += x * x;
                }
                rv[r] = FN(fo_lerp)(rv[r], (T)(row_sq / (double)cols), w, one_minus_w, small);
            }
            for (int64_t c = 0; c < cols; c++)
                cv[c] = FN(fo_lerp)(cv[c], (T)(col_sq[c] / (double)rows), w, one_minus_w, small);
            double row_sum = 0;
            for (int64_t r = 0; r < rows; r++) row_sum += (double)rv[r];
            row_mean[b] = FN(fo_maximum)((T)(row_sum / (double)rows), teps1);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            T d = FN(fo_grad)(g[i], sign, scale, scaled);
            variance[i] = FN(fo_lerp)(variance[i], d * d, w, one_minus_w, small);
        }
    }

    /* pass 2: the update's norm; pass 3: the parameter.  u is computed alike in both. */
#define FO_ADAFACTOR_U(i, b, r, c)                                                      \
    (((T)1 / SQRT(FN(fo_maximum)(                                                        \
         factored ? (row_var[(b) * rows + (r)] * col_var[(b) * cols + (c)]) / row_mean[b] \
                  : variance[i],                                                         \
         teps1_sq))) *                                                                   \
     FN(fo_grad)(g[i], sign, scale, scaled))
    FN(fo_ordered_acc) uacc = {{0}, 0};
    for (int64_t b = 0, i = 0; b < batch; b++)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++, i++) {
                double u = (double)FO_ADAFACTOR_U(i, b, r, c);
                FN(fo_acc_add)(&uacc, i, u * u);
            }
    const double denom = FN(fo_py_max)(
        1.0, sqrt(FN(fo_acc_total)(&uacc, n)) / (pow((double)n, 0.5) * d_clip));
    const T coef = (T)(-alpha / denom), decay = (T)(1 - lr * weight_decay);
    for (int64_t b = 0, i = 0; b < batch; b++)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++, i++) {
                T x = p[i];
                if (weight_decay != 0) x = x * decay;
                p[i] = x + coef * FO_ADAFACTOR_U(i, b, r, c);
            }
#undef FO_ADAFACTOR_U
    free(col_sq);
    free(row_mean);
}
