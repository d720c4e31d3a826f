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
 * them once per call, in double, and casts them to the element type once.  Every
 * kernel's scalars include `grad_scale`, a per-step loss scale the gradient is divided
 * by before anything else uses it; 1 means none and selects the unscaled loop.
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

/*
 * Two-pass kernels (layer-wise trust ratios: LAMB, LARS).  A kernel that needs sums
 * over its whole parameter (squared norms) has a reduction beside it in the table:
 * `reduce(buf, begin, end, hyper, sums)` adds the kernel's `nsums` sums over elements
 * [begin, end) to `sums`, in double, reading the same buffers and scalars as the
 * kernel and writing none of them.  Before the kernel runs, the runner computes them
 * over FO_SUM_BLOCK-element blocks [k B, (k+1) B) of the parameter, each block into
 * zeroed partial sums, adds the partials in block order, and stores the totals in the
 * kernel's last `nsums` scalars (`fo_task.sums`).  The blocks are fixed by this ABI,
 * not by the runner, so the sums (and the NumPy reference that repeats them) do not
 * depend on how a runner splits or threads the work: blocks may run in parallel as
 * long as their partials are added in order.  Within a block a reduction keeps
 * FO_SUM_LANES running sums, element i going to lane (i - begin) % FO_SUM_LANES, and
 * combines the lanes pairwise ((0+1)+(2+3))+((4+5)+(6+7)).
 */
#define FO_MAX_SUMS 4
#define FO_SUM_BLOCK 32768
#define FO_SUM_LANES 8

typedef void (*fo_reduce_fn)(char *const *buf, int64_t begin, int64_t end,
                             const double *hyper, double *sums);

/* Instruction sets the kernels are compiled for (see kernels.c). */
#define FO_ISA_BASELINE 0
#define FO_ISA_AVX2 1
#define FO_ISA_AVX512 2
#define FO_NISA 3

typedef struct {
    const char *name;       /* registry name of the update rule, e.g. "adam" */
    fo_kernel_fn f32;       /* float32 kernel (baseline instruction set) */
    fo_kernel_fn f64;       /* float64 kernel (baseline instruction set) */
    const char *buffers;    /* space-separated buffer names, in `buf` order */
    const char *hyper;      /* space-separated scalar names, in `hyper` order */
    fo_reduce_fn reduce_f32; /* two-pass kernels only (else NULL): the first pass */
    fo_reduce_fn reduce_f64;
    int nsums;              /* how many sums it makes: the last `nsums` scalar names */
    fo_kernel_fn isa[FO_NISA][2];  /* [instruction set][0: float32, 1: float64]; NULL
                                      where this build has no such variant */
    fo_reduce_fn reduce_isa[FO_NISA][2];  /* the same for the first pass */
} fo_kernel_entry;

/*
 * Factored kernels (Adafactor): a whole-parameter step whose state is not shaped like
 * the parameter, beside the element-wise table.  `buf` = param, grad, then the state
 * buffers in the entry's order (NULL where the parameter does not use one); the
 * parameter is seen as `batch` matrices of rows x cols (one of fewer than two
 * dimensions as 1 x 1 x n).  A call is never split: it makes several passes over the
 * parameter, with its own reductions (see algos/adafactor.h).
 */
typedef void (*fo_factored_fn)(char *const *buf, int64_t batch, int64_t rows, int64_t cols,
                               const double *hyper);

typedef struct {
    const char *name;
    fo_factored_fn f32;
    fo_factored_fn f64;
    const char *buffers;
    const char *hyper;
    fo_factored_fn isa[FO_NISA][2];  /* as fo_kernel_entry.isa */
    /* NULL, or a two-pass element-wise kernel for a parameter of fewer than two
     * dimensions (batch = rows = 1), which the runner can split over threads: buffers
     * as above, scalars as above followed by "numel" and its two sums */
    const fo_kernel_entry *vector;
} fo_factored_entry;

extern const fo_factored_entry fo_factored_kernels[];
/* The factored kernel for the instruction set in use. */
fo_factored_fn fo_select_factored(const fo_factored_entry *entry, int is_f64);
/* Run one factored kernel (under flush-to-zero when set): a parameter it does not
 * factor (its last state buffer given, batch = rows = 1) through the entry's
 * element-wise kernel with `nthreads` threads (<= 0: the default), anything else on
 * the calling thread. */
void fo_run_factored(const fo_factored_entry *entry, int is_f64, char *const *buf,
                     int64_t batch, int64_t rows, int64_t cols, const double *hyper,
                     int nthreads);
extern const int fo_nfactored;

/* One unit of work: one kernel over one parameter's buffers. */
typedef struct {
    fo_kernel_fn fn;
    char *buf[FO_MAX_BUFS];
    int64_t n;
    const double *hyper;
    fo_reduce_fn reduce;    /* NULL, or the first pass of a two-pass kernel */
    int nsums;
    double *sums;           /* where the first pass's totals go: hyper's last nsums */
    int itemsize;           /* bytes per element, for fo_run's alignment of long ranges;
                               0: the range is run as it is */
} fo_task;

extern const fo_kernel_entry fo_kernels[];
extern const int fo_nkernels;

/* Run every task; called without the GIL.  Uses the default number of threads. */
void fo_run(const fo_task *tasks, int64_t ntasks);

/* The first pass of every two-pass task (see above), on the calling thread; fo_run
 * runs it first (a threaded run splits it over the team by blocks instead). */
void fo_reduce_tasks(const fo_task *tasks, int64_t ntasks);

/* Run every task with `nthreads` threads (<= 0: the default).  Tasks are cut into
 * chunks of FO_CHUNK elements at offsets independent of the thread count; a table
 * with fewer than fo_parallel_min elements in all runs on the calling thread. */
void fo_run_threads(const fo_task *tasks, int64_t ntasks, int nthreads);

#define FO_CHUNK 32768
/* fo_run starts the bulk of a range of at least FO_ALIGN_MIN elements where the
 * parameter is aligned to FO_ALIGN bytes (see fo_call in kernels.c). */
#define FO_ALIGN 64
#define FO_ALIGN_MIN 16384
#define FO_PARALLEL_MIN_DEFAULT 262144
extern int64_t fo_parallel_min;

/* The streaming kernel with an algorithm's memory shape (the benchmark's ceiling):
 * buf = param, grad, then hyper[0] state buffers, each read and written once.  Its
 * first pass (`reduce`, optional) reads hyper[1] of the buffers once more, those with
 * the indices in hyper[2...], for algorithms whose update needs sums over them. */
extern const fo_kernel_entry fo_stream_kernel;
/* The benchmark's divider floor: D divisions and S square roots per element and
 * nothing else (kernels.c). */
extern const fo_kernel_entry fo_divsqrt_kernel;

/* Instruction-set dispatch: the best set this CPU supports, the one in use, and a
 * setter (-1: the best; returns -1 if `isa` is not available). */
extern const char *const fo_isa_names[FO_NISA];
int fo_isa_best(void);
int fo_isa_get(void);
int fo_isa_set(int isa);
fo_kernel_fn fo_select(const fo_kernel_entry *entry, int is_f64);
/* The first pass of a two-pass kernel for the instruction set in use (NULL if none). */
fo_reduce_fn fo_select_reduce(const fo_kernel_entry *entry, int is_f64);

/* Threads: whether OpenMP is compiled in; fastopt's own setting (0: follow OpenMP's
 * OMP_NUM_THREADS / omp_set_num_threads, which threadpoolctl uses); the default. */
int fo_openmp(void);
void fo_set_num_threads(int nthreads);
int fo_get_num_threads_setting(void);
int fo_default_threads(void);
/* Whether a step with the default thread count (nothing set by fastopt's setter, the
 * optimizer or OMP_NUM_THREADS) uses only the CPUs the load average shows idle. */
void fo_set_auto_threads(int on);
int fo_get_auto_threads(void);
/* This process's own share of the load average that rule discounts (CPU seconds per
 * second, averaged over about a minute; 0 where it is not tracked). */
double fo_own_load_average(void);

/* Software prefetch in the kernels: on or off (-1: this CPU's default, which
 * fo_prefetch_default gives).  No result depends on it. */
void fo_set_prefetch(int on);
int fo_get_prefetch(void);
int fo_prefetch_default(void);

/* The FMA form of divisions by a fixed divisor where the instruction set allows it:
 * 2 = both dtypes and float64 NAdam's shared reciprocal, 1 = float64 only, 0 = never
 * (-1: this CPU's default, fo_fma_division_default).  No result depends on it. */
void fo_set_fma_division(int mode);
int fo_get_fma_division(void);
int fo_fma_division_default(void);

/* Flush subnormals to zero (FTZ and DAZ) during each call, restored after it. */
void fo_set_flush_denormal(int on);
int fo_get_flush_denormal(void);
int fo_flush_supported(void);

/* Whether the kernels that take a division's FMA form in blocks may trust the
 * floating-point exception flags to tell them which blocks to divide again (found at
 * load; false under an emulator that does not raise them, where every block
 * divides). */
int fo_fpflags_checked(void);

#endif
