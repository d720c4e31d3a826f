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
 * A parameter of fewer than two dimensions runs as an element-wise two-pass kernel
 * instead (adafactor_vector below), split over threads like LAMB.
 *
 * The passes are written to vectorize without changing a sum's order: the norms add
 * into vector lanes (fo_acc_add_sq), the row sums are taken eight rows at a time
 * (eight independent chains, each in column order), u is computed a run of one row
 * at a time, and the division by row_mean takes the FMA form where it is exact.  Side
 * by side with the element-at-a-time loops before (kernels called directly, AVX-512,
 * one thread, 1000 x 1000 to 4000 x 4000 and 8 x 512 x 512): float 0.38 to 0.44 of
 * the time, double 0.51.
 *
 * Where a product may be subnormal (the gradient's sign, d*d, u = (1 / sqrt(v)) * d,
 * the state's lerps, the factored estimate and the parameter's update) it is an FMA
 * (fo_mul_fma, kernels_impl.h): with state and gradients full of subnormal numbers the
 * step took 1.3 to 2.4x its normal time, 0.96 to 1.06x with the FMAs (float32, 65,536
 * elements and 512 x 512, both cores), and the same time as before over normal
 * numbers.  Pass 1's row and column sums square in double, where a float's square is
 * normal, and keep the sign's multiplication: as an FMA it made float64's step 1.06x
 * slower.
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

static FO_INLINE double FN(fo_acc_total)(const FN(fo_ordered_acc) *acc, int64_t n)
{
    return n > 0 ? acc->total + FO_LANE_TOTAL(acc->lanes) : 0.0;
}

/* Adds x[t]^2, in double, for the elements at flat indices i = i0 + t, t in [0, n), in
 * fastopt.h's order: element i goes to lane i % FO_SUM_LANES of its block of
 * FO_SUM_BLOCK elements, and when i starts a new block the lanes' total joins `total`
 * first.  A caller goes through a parameter's elements in increasing i, in runs; the
 * part of a run inside one block goes through fo_lane_sumsq2's vector lanes, which add
 * element t to lane t % FO_SUM_LANES, with the lanes rotated by i0 % FO_SUM_LANES. */
static FO_INLINE void FN(fo_acc_add_sq)(FN(fo_ordered_acc) *acc, int64_t i0, const T *x,
                                        int64_t n)
{
    while (n > 0) {
        if (i0 > 0 && i0 % FO_SUM_BLOCK == 0) {
            acc->total += FO_LANE_TOTAL(acc->lanes);
            for (int j = 0; j < FO_SUM_LANES; j++) acc->lanes[j] = 0;
        }
        int64_t len = FO_SUM_BLOCK - i0 % FO_SUM_BLOCK;
        if (len > n) len = n;
        const int k = (int)(i0 % FO_SUM_LANES);
        double rotated[FO_SUM_LANES], unused[FO_SUM_LANES] = {0};
        for (int j = 0; j < FO_SUM_LANES; j++) rotated[j] = acc->lanes[(k + j) % FO_SUM_LANES];
        FN(fo_lane_sumsq2)(x, x, len, rotated, unused);
        for (int j = 0; j < FO_SUM_LANES; j++) acc->lanes[(k + j) % FO_SUM_LANES] = rotated[j];
        x += len;
        i0 += len;
        n -= len;
    }
}

/* u for `len` elements of one row of a factored parameter (row_var value rv, the
 * row's columns' col_var cv, the matrix's row_mean rm, made into rmk) or of a vector's
 * variance (cv = variance, rv and rm unused); g the gradients.  With FAST the division
 * by rm takes the FMA form of fo_div_const_checked, exact where the run's exception
 * flags say so (the caller checks them). */
static FO_INLINE void FN(adafactor_u_loop)(T *restrict u, const T *restrict g,
                                           const T *restrict cv, T rv, T rm,
                                           FN(fo_cdiv) rmk, int64_t len, T teps1_sq, T sign,
                                           T scale, const int SCALED, const int FACTORED,
                                           const int FAST)
{
    for (int64_t c = 0; c < len; c++) {
        const T v = !FACTORED ? cv[c]
                    : FAST    ? FN(fo_div_const_checked)(FN(fo_mul_fma)(rv, cv[c]), rmk)
                              : FN(fo_mul_fma)(rv, cv[c]) / rm;
        u[c] = FN(fo_mul_fma)((T)1 / SQRT(FN(fo_maximum)(v, teps1_sq)),
                              FN(fo_grad_fma)(g[c], sign, scale, SCALED));
    }
}

/* The loop above with `scaled` a constant in each copy: with the gradient's sign as an
 * FMA, GCC no longer takes the test out of the loop and divides every element by the
 * loss scale under a mask, which costs the division's time even where the mask is
 * off (float64, 512 x 512: 1.3x the step's time). */
static FO_INLINE void FN(adafactor_u_run)(T *restrict u, const T *restrict g,
                                          const T *restrict cv, T rv, T rm,
                                          FN(fo_cdiv) rmk, int64_t len, T teps1_sq, T sign,
                                          T scale, int scaled, const int FACTORED,
                                          const int FAST)
{
    if (scaled)
        FN(adafactor_u_loop)(u, g, cv, rv, rm, rmk, len, teps1_sq, sign, scale, 1, FACTORED,
                             FAST);
    else
        FN(adafactor_u_loop)(u, g, cv, rv, rm, rmk, len, teps1_sq, sign, scale, 0, FACTORED,
                             FAST);
}

/* Python's max(a, b) and min(a, b): the first argument unless the second compares
 * greater (smaller). */
static FO_INLINE double FN(fo_py_max)(double a, double b) { return b > a ? b : a; }
static FO_INLINE double FN(fo_py_min)(double a, double b) { return b < a ? b : a; }

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


    /* pass 1: the parameter's norm, then the second-moment state */
    FN(fo_ordered_acc) acc = {{0}, 0};
    FN(fo_acc_add_sq)(&acc, 0, p, n);
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
            /* eight rows at a time: eight independent row sums (each in column order)
             * instead of one chain of additions, and each column's sum still takes
             * the rows in order */
            int64_t r0 = 0;
            for (; r0 + 8 <= rows; r0 += 8) {
                double row_sq[8] = {0};
                const T *g8 = gb + r0 * cols;
                for (int64_t c = 0; c < cols; c++) {
                    double col = col_sq[c];
                    for (int j = 0; j < 8; j++) {
                        double x = (double)FN(fo_grad)(g8[j * cols + c], sign, scale, scaled);
                        row_sq[j] += x * x;
                        col += x * x;
                    }
                    col_sq[c] = col;
                }
                for (int j = 0; j < 8; j++)
                    rv[r0 + j] = FN(fo_lerp_fma)(rv[r0 + j], (T)(row_sq[j] / (double)cols),
                                                 w, one_minus_w, small);
            }
            for (int64_t r = r0; r < rows; r++) {
                double row_sq = 0;
                for (int64_t c = 0; c < cols; c++) {
                    double x = (double)FN(fo_grad)(gb[r * cols + c], sign, scale, scaled);
                    row_sq += x * x;
                    col_sq[c] += x * x;
                }
                rv[r] = FN(fo_lerp_fma)(rv[r], (T)(row_sq / (double)cols), w, one_minus_w,
                                        small);
            }
            for (int64_t c = 0; c < cols; c++)
                cv[c] = FN(fo_lerp_fma)(cv[c], (T)(col_sq[c] / (double)rows), w, one_minus_w,
                                        small);
            double row_sum = 0;
            for (int64_t r = 0; r < rows; r++) row_sum += (double)rv[r];
            row_mean[b] = FN(fo_maximum)((T)(row_sum / (double)rows), teps1);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            T d = FN(fo_grad)(g[i], sign, scale, scaled);
            variance[i] = FN(fo_lerp_fma)(variance[i], FN(fo_mul_fma)(d, d), w, one_minus_w,
                                          small);
        }
    }

    /* pass 2: the update's norm; pass 3: the parameter.  u is computed alike in both,
     * a run of at most FO_SUM_TILE elements of one row at a time into a stack tile.
     * Where FO_CDIV_ON, a matrix whose row_mean passes fo_cdiv_ok divides by it with
     * the FMA form, and a run whose operations raise an exception flag other than
     * inexact is computed again with the division before it is used (as LAMB's
     * blocks; csrc/kernels_impl.h). */
    T u[FO_SUM_TILE];
    const int64_t nrows = factored ? batch * rows : 1, ncols = factored ? cols : n;
    fo_fpflags flags = {0, 0, 0, 0};
    if (factored && FO_CDIV_ON) flags = fo_fpflags_begin();
    FN(fo_cdiv) rmk = FN(fo_cdiv_make)((T)1);   /* row_mean's divisor pair, per matrix */
    int64_t rmk_of = -1;
#define FO_ADAFACTOR_RUNS(BODY)                                                          \
    for (int64_t row = 0; row < nrows; row++)                                          \
        for (int64_t c0 = 0; c0 < ncols; c0 += FO_SUM_TILE) {                           \
            const int64_t i = row * ncols + c0;                                          \
            const int64_t len = ncols - c0 < FO_SUM_TILE ? ncols - c0 : FO_SUM_TILE;   \
            if (factored) {                                                              \
                const int64_t mat = row / rows;                                          \
                const T *cvr = col_var + mat * cols + c0, rm = row_mean[mat];            \
                if (mat != rmk_of) {                                                     \
                    rmk = FN(fo_cdiv_make)(rm);                                          \
                    rmk_of = mat;                                                        \
                }                                                                        \
                int fast = FN(fo_cdiv_use)(rm);                                         \
                if (fast) {                                                              \
                    FN(adafactor_u_run)(u, g + i, cvr, row_var[row], rm, rmk, len,       \
                                        teps1_sq, sign, scale, scaled, 1, 1);            \
                    fast = fo_fpflags_clean(&flags);                                     \
                    if (!fast) fo_fpflags_reset(&flags);                                 \
                }                                                                        \
                if (!fast)                                                               \
                    FN(adafactor_u_run)(u, g + i, cvr, row_var[row], rm, rmk, len,       \
                                        teps1_sq, sign, scale, scaled, 1, 0);            \
            } else {                                                                     \
                FN(adafactor_u_run)(u, g + i, variance + i, 0, 0, rmk, len, teps1_sq,    \
                                    sign, scale, scaled, 0, 0);                          \
            }                                                                            \
            BODY                                                                         \
        }
    FN(fo_ordered_acc) uacc = {{0}, 0};
    FO_ADAFACTOR_RUNS(FN(fo_acc_add_sq)(&uacc, i, u, len);)
    const double denom = FN(fo_py_max)(
        1.0, sqrt(FN(fo_acc_total)(&uacc, n)) / (pow((double)n, 0.5) * d_clip));
    const T coef = (T)(-alpha / denom), decay = (T)(1 - lr * weight_decay);
    FO_ADAFACTOR_RUNS(for (int64_t k = 0; k < len; k++) {
        T x = p[i + k];
        if (weight_decay != 0) x = FN(fo_mul_fma)(x, decay);
        p[i + k] = x + FN(fo_mul_fma)(coef, u[k]);
    })
#undef FO_ADAFACTOR_RUNS
    if (factored && FO_CDIV_ON) fo_fpflags_end(flags);
    free(col_sq);
    free(row_mean);
}

/*
 * Adafactor for a parameter of fewer than two dimensions, as a two-pass element-wise
 * kernel (fastopt.h): the first pass (adafactor_vector_sums) computes each element's
 * new variance and update without writing them and sums the squares of the parameter
 * and of the update; the kernel computes them again, writes the variance and the
 * parameter.  The same operations as the vector case of FN(adafactor), in the same
 * order, and the sums in the same blocks and lanes, so the bits are the same; the
 * runner can split both passes over threads.
 *
 * buffers: param grad row_var col_var variance (row_var and col_var unused)
 * hyper:   step lr beta2_decay eps1 eps2 d weight_decay maximize grad_scale numel
 *          param_sq_norm update_sq_norm
 */
typedef struct {
    T sign, scale, w, one_minus_w, teps1_sq;
    int small, scaled;
} FN(adafactor_vconsts);

static FO_INLINE FN(adafactor_vconsts) FN(adafactor_vsetup)(const double *h)
{
    const double eps1 = h[3] != h[3] ? (double)FO_EPS : h[3];
    const T w = (T)pow(h[0], h[2]);
    FN(adafactor_vconsts) c = {h[7] != 0 ? (T)-1 : (T)1, (T)h[8], w, (T)1 - w,
                               (T)(eps1 * eps1), (w < 0 ? -w : w) < (T)0.5, h[8] != 1};
    return c;
}

static FO_INLINE T FN(adafactor_vnew)(const FN(adafactor_vconsts) *c, T g, T v_old, T *v_new,
                                      const int SMALL, const int SCALED)
{
    T d = FN(fo_grad_fma)(g, c->sign, c->scale, SCALED);
    T v = FN(fo_lerp_fma)(v_old, FN(fo_mul_fma)(d, d), c->w, c->one_minus_w, SMALL);
    *v_new = v;
    return FN(fo_mul_fma)((T)1 / SQRT(FN(fo_maximum)(v, c->teps1_sq)), d);
}

static FO_INLINE void FN(adafactor_vector_sums_body)(const T *restrict p, const T *restrict g,
                                                     const T *restrict variance,
                                                     int64_t begin, int64_t end,
                                                     const FN(adafactor_vconsts) *c,
                                                     double *sums, const int SMALL,
                                                     const int SCALED)
{
    double param_lanes[FO_SUM_LANES] = {0}, update_lanes[FO_SUM_LANES] = {0};
    T u[FO_SUM_TILE];
    for (int64_t start = begin; start < end; start += FO_SUM_TILE) {
        const int64_t n = end - start < FO_SUM_TILE ? end - start : FO_SUM_TILE;
        FO_FOR(i, start, start + n, p, g, variance, NULL, NULL, NULL, NULL, NULL) {
            T v;
            u[i - start] = FN(adafactor_vnew)(c, g[i], variance[i], &v, SMALL, SCALED);
        }
        FN(fo_lane_sumsq2)(p + start, u, n, param_lanes, update_lanes);
    }
    sums[0] += FO_LANE_TOTAL(param_lanes);
    sums[1] += FO_LANE_TOTAL(update_lanes);
}

FO_KERNEL void FN(adafactor_vector_sums)(char *const *buf, int64_t begin, int64_t end,
                                         const double *h, double *sums)
{
    const FN(adafactor_vconsts) c = FN(adafactor_vsetup)(h);
#define FO_AFV_SUMS(_, S, G) FN(adafactor_vector_sums_body)((const T *)buf[0], (const T *)buf[1], (const T *)buf[4], begin, end, &c, sums, S, G)
#define FO_AFV_SUMS_S(_, S) FO_OPT2(c.scaled, FO_AFV_SUMS, _, S)
    FO_OPT1(c.small, FO_AFV_SUMS_S, _);
#undef FO_AFV_SUMS_S
#undef FO_AFV_SUMS
}

static FO_INLINE void FN(adafactor_vector_body)(T *restrict p, const T *restrict g,
                                                T *restrict variance, int64_t begin,
                                                int64_t end, const FN(adafactor_vconsts) *c,
                                                T coef, T decay, const int WD, const int SMALL,
                                                const int SCALED)
{
    FO_FOR(i, begin, end, p, g, variance, NULL, NULL, NULL, NULL, NULL) {
        T v;
        T x = p[i];
        if (WD) x = FN(fo_mul_fma)(x, decay);
        T u = FN(adafactor_vnew)(c, g[i], variance[i], &v, SMALL, SCALED);
        variance[i] = v;
        p[i] = x + FN(fo_mul_fma)(coef, u);
    }
}

FO_KERNEL void FN(adafactor_vector)(char *const *buf, int64_t begin, int64_t end,
                                    const double *h)
{
    const FN(adafactor_vconsts) c = FN(adafactor_vsetup)(h);
    const double step = h[0], lr = h[1], eps2 = h[4], d_clip = h[5], weight_decay = h[6];
    const double n = h[9], param_sq = h[10], update_sq = h[11];
    const double rho_t = FN(fo_py_min)(lr, 1 / pow(step, 0.5));
    const double alpha =
        FN(fo_py_max)(eps2, sqrt(n > 0 ? param_sq : 0.0) / pow(n, 0.5)) * rho_t;
    const double denom =
        FN(fo_py_max)(1.0, sqrt(n > 0 ? update_sq : 0.0) / (pow(n, 0.5) * d_clip));
    const T coef = (T)(-alpha / denom), decay = (T)(1 - lr * weight_decay);
#define FO_AFV(_, W, S, G) FN(adafactor_vector_body)((T *)buf[0], (const T *)buf[1], (T *)buf[4], begin, end, &c, coef, decay, W, S, G)
#define FO_AFV_S(_, W, S) FO_OPT3(c.scaled, FO_AFV, _, W, S)
#define FO_AFV_W(_, W) FO_OPT2(c.small, FO_AFV_S, _, W)
    FO_OPT1(weight_decay != 0, FO_AFV_W, _);
#undef FO_AFV_W
#undef FO_AFV_S
#undef FO_AFV
}

