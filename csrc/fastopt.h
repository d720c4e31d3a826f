/*
 * fastopt kernel ABI.
 *
 * Every optimizer kernel has one signature: it updates elements [begin, end) of one
 * parameter in a single pass, reading every element of the parameter, gradient and
 * state once and writing it once.  `buf` holds the buffers in the order the kernel
 * table names them (parameter first, gradient second, then the state buffers; NULL
 * for a state buffer the chosen options do not use).  `hyper` holds the scalar
 * hyperparameters as doubles, in the order the kernel table names them; a kernel
 * computes its step-dependent scalars (bias corrections, decayed learning rates) from
 * them once per call, in double, and casts them to the element type once.
 *
 * Kernels are compiled with -ffp-contract=off, so a*b+c is never fused: the kernel
 * performs exactly the operations of its NumPy reference twin, in the same order and
 * the same precision, and its results do not depend on the instruction set the
 * dispatcher picks.
 */
#ifndef FASTOPT_H
#define FASTOPT_H

#include <stdint.h>

#define FO_MAX_BUFS 8
#define FO_MAX_HYPER 16

typedef void (*fo_kernel_fn)(char *const *buf, int64_t begin, int64_t end,
                             const double *hyper);

typedef struct {
    const char *name;       /* registry name of the update rule, e.g. "adam" */
    fo_kernel_fn f32;       /* float32 kernel */
    fo_kernel_fn f64;       /* float64 kernel */
    const char *buffers;    /* space-separated buffer names, in `buf` order */
    const char *hyper;      /* space-separated scalar names, in `hyper` order */
} fo_kernel_entry;

/* One unit of work: one kernel over one parameter's buffers. */
typedef struct {
    fo_kernel_fn fn;
    char *buf[FO_MAX_BUFS];
    int64_t n;
    const double *hyper;
} fo_task;

extern const fo_kernel_entry fo_kernels[];
extern const int fo_nkernels;

/* Run every task; called without the GIL. */
void fo_run(const fo_task *tasks, int64_t ntasks);

#endif
