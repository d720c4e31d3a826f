/*
 * fastopt gradient operations: norms for clipping, scaling, clamping, and the
 * all-finite check, for float32 and float64 buffers.
 *
 * Norm reductions have a FIXED order, so that the result never depends on how many
 * threads compute it: a buffer is cut into blocks of FO_NORM_BLOCK elements; within a
 * block, element k goes to lane k % FO_NORM_LANES and each lane accumulates in double,
 * sequentially; the lanes are combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)); the
 * block sums are combined by a pairwise tree that splits a range of nb blocks into
 * nb/2 (rounded down) and the rest.  Threads may compute the blocks in any partition;
 * the tree fixes how their sums combine.  fastopt.reference twins the same order.
 */
#ifndef FASTOPT_OPS_H
#define FASTOPT_OPS_H

#include <stdint.h>

#define FO_NORM_BLOCK 1024
#define FO_NORM_LANES 8

/* Which per-element term a norm sums: |x|, x*x, |x|**p; or the maximum of |x|. */
enum { FO_NORM_ONE = 1, FO_NORM_TWO = 2, FO_NORM_POW = 3, FO_NORM_INF = 4 };

/* Sum of the terms (or the maximum for FO_NORM_INF; NaN propagates) over x[0:n). */
double fo_norm_partial_f32(const float *x, int64_t n, int kind, double p);
double fo_norm_partial_f64(const double *x, int64_t n, int kind, double p);

/* x[i] = x[i] * (T)coef for every element. */
void fo_scale_f32(float *x, int64_t n, double coef);
void fo_scale_f64(double *x, int64_t n, double coef);

/* x[i] = clamp(x[i], -(T)c, (T)c); NaN stays NaN (torch.clamp). */
void fo_clamp_f32(float *x, int64_t n, double c);
void fo_clamp_f64(double *x, int64_t n, double c);

/* 1 when every element is finite (neither NaN nor +-inf), else 0. */
int fo_all_finite_f32(const float *x, int64_t n);
int fo_all_finite_f64(const double *x, int64_t n);

#endif
