/*
 * The fastopt kernels: every algorithm of algos/ instantiated for float32 and
 * float64 and for each instruction set the dispatcher can pick, the kernel table the
 * Python layer reads, the streaming "ceiling" kernels the benchmark compares against,
 * and the task runner (threads, chunking, flush-to-zero).
 *
 * Instruction sets.  The shipped build has no -march: the kernels are compiled once
 * for the x86-64 baseline and, where the compiler can target them, again for AVX2
 * (x86-64-v3) and AVX-512 (x86-64-v4, 512-bit vectors).  fo_isa_best() picks the
 * widest one the CPU and OS support, once; FASTOPT_ISA (read by the Python module) or
 * fo_isa_set() can force a narrower one.  Kernels are compiled with
 * -ffp-contract=off and do only correctly rounded IEEE operations (+ - * / sqrt), so
 * every instruction set gives the same bits; the tests check that.
 *
 * Threads.  A task table is cut into chunks of FO_CHUNK elements, at offsets that do
 * not depend on the number of threads, and the chunks are shared out statically.
 * Since every kernel is element-wise, each element sees the same operations whatever
 * the chunking, so results are bitwise identical for every thread count.  A table
 * with fewer than fo_parallel_min elements in all runs on the calling thread.
 */
#define _DEFAULT_SOURCE 1 /* getloadavg */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__linux__) || defined(__APPLE__)
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>
#endif
#if defined(__SSE2__)
#include <xmmintrin.h>
#include <immintrin.h>
#endif
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

#include "fastopt.h"

/* Software prefetch in the kernels' block loops (FO_FOR, kernels_impl.h) and ASGD's
 * prefetch for writing: on, except where fo_prefetch_default() says the core's
 * hardware prefetchers do better alone.  Read by every block; set by the Python
 * module at import (fastopt.set_prefetch, FASTOPT_PREFETCH). */
static int fo_prefetch = 1;
/* Where the instruction set allows, divisions by a divisor fixed for the loop (and
 * float64 NAdam's two by one denominator) take FMA operations (kernels_impl.h):
 * 2 = for both dtypes and NAdam's shared reciprocal, 1 = float64 only and not NAdam's
 * shared reciprocal, 0 = never.  fo_fma_division_default() gives this CPU's; read
 * once per kernel call.  The bits are the same in every mode. */
static int fo_fma_division = 2;

#define FO_INLINE inline __attribute__((always_inline))
#define FO_KERNEL

/* Streaming kernels with an algorithm's memory shape: the parameter and `nstate`
 * state buffers are read and written, the gradient is read, with one addition per
 * buffer and element (the least arithmetic that still makes each write depend on
 * the reads).  buf[0] = param, buf[1] = grad, buf[2..] = state; hyper[0] = nstate,
 * or -1 for no writing pass (the first pass alone, timed by the benchmark);
 * hyper[8] nonzero adds grad * 0 instead of grad, which leaves every value as it
 * was (a zero's sign aside) at the cost of one multiplication per element: the
 * ceiling then streams an optimizer's own buffers without changing its state. */
#define FO_DIVSQRT_CASE(S, D)                                                          \
    case S * 7 + D: FN(fo_divsqrt_body)(x, y, begin, end, D, S); break;
#define FO_DIVSQRT_CASES(S)                                                            \
    FO_DIVSQRT_CASE(S, 0) FO_DIVSQRT_CASE(S, 1) FO_DIVSQRT_CASE(S, 2)                  \
    FO_DIVSQRT_CASE(S, 3) FO_DIVSQRT_CASE(S, 4) FO_DIVSQRT_CASE(S, 5)                  \
    FO_DIVSQRT_CASE(S, 6)
#define FO_STREAM_CASE(K, KEEP)                                                        \
    case K * 2 + KEEP:                                                                 \
        FN(fo_stream_body)(p, g, s[0], s[1], s[2], s[3], s[4], s[5], begin, end, K, KEEP); \
        break;
#define FO_STREAM_CASES(K) FO_STREAM_CASE(K, 0) FO_STREAM_CASE(K, 1)
#define FO_STREAM_DEFINE                                                               \
    static FO_INLINE void FN(fo_stream_body)(                                          \
        T *restrict p, const T *restrict g, T *restrict s0, T *restrict s1,            \
        T *restrict s2, T *restrict s3, T *restrict s4, T *restrict s5,               \
        int64_t begin, int64_t end, const int K, const int KEEP)                      \
    {                                                                                  \
        for (int64_t i = begin; i < end; i++) {                                        \
            T d = KEEP ? g[i] * (T)0 : g[i];                                           \
            p[i] = p[i] + d;                                                           \
            if (K > 0) s0[i] = s0[i] + d;                                              \
            if (K > 1) s1[i] = s1[i] + d;                                              \
            if (K > 2) s2[i] = s2[i] + d;                                              \
            if (K > 3) s3[i] = s3[i] + d;                                              \
            if (K > 4) s4[i] = s4[i] + d;                                              \
            if (K > 5) s5[i] = s5[i] + d;                                              \
        }                                                                              \
    }                                                                                  \
    FO_KERNEL void FN(fo_stream)(char *const *buf, int64_t begin, int64_t end,         \
                                 const double *h)                                      \
    {                                                                                  \
        T *p = (T *)buf[0];                                                            \
        const T *g = (const T *)buf[1];                                                \
        T *s[6];                                                                       \
        for (int k = 0; k < 6; k++) s[k] = (T *)buf[2 + k];                           \
        if ((int)h[0] < 0) return;                                                     \
        switch (((int)h[0] < 6 ? (int)h[0] : 6) * 2 + (h[8] != 0)) {                  \
        FO_STREAM_CASES(0) FO_STREAM_CASES(1) FO_STREAM_CASES(2) FO_STREAM_CASES(3)    \
        FO_STREAM_CASES(4) FO_STREAM_CASES(5) FO_STREAM_CASES(6)                       \
        }                                                                              \
    }                                                                                  \
    /* The ceiling's first pass, for algorithms that must read some buffers once more \
     * before the update (whole-parameter sums): reads the h[1] (at most 6) buffers   \
     * whose indices follow in h[2...], all in one loop as a kernel does, OR-ing their \
     * bytes (a reduction the compiler vectorizes, unlike a floating-point sum), and   \
     * adds one bit of the result to sums[0]. */                                       \
    static FO_INLINE unsigned char FN(fo_stream_or)(                                   \
        const unsigned char *restrict x0, const unsigned char *restrict x1,            \
        const unsigned char *restrict x2, const unsigned char *restrict x3,            \
        const unsigned char *restrict x4, const unsigned char *restrict x5,            \
        int64_t first, int64_t last, const int K)                                      \
    {                                                                                  \
        unsigned char acc = 0;                                                         \
        for (int64_t i = first; i < last; i++) {                                       \
            unsigned char b = x0[i];                                                   \
            if (K > 1) b |= x1[i];                                                     \
            if (K > 2) b |= x2[i];                                                     \
            if (K > 3) b |= x3[i];                                                     \
            if (K > 4) b |= x4[i];                                                     \
            if (K > 5) b |= x5[i];                                                     \
            acc |= b;                                                                  \
        }                                                                              \
        return acc;                                                                    \
    }                                                                                  \
    FO_KERNEL void FN(fo_stream_sums)(char *const *buf, int64_t begin, int64_t end,    \
                                      const double *h, double *sums)                   \
    {                                                                                  \
        const unsigned char *x[6];                                                     \
        const int k = (int)h[1] < 6 ? (int)h[1] : 6;                                   \
        for (int j = 0; j < 6; j++)                                                    \
            x[j] = (const unsigned char *)buf[(int)h[2 + (j < k ? j : 0)]];             \
        const int64_t first = begin * (int64_t)sizeof(T), last = end * (int64_t)sizeof(T); \
        unsigned char bits = 0;                                                        \
        switch (k) {                                                                   \
        case 0: break;                                                                 \
        case 1: bits = FN(fo_stream_or)(x[0], x[1], x[2], x[3], x[4], x[5], first, last, 1); break; \
        case 2: bits = FN(fo_stream_or)(x[0], x[1], x[2], x[3], x[4], x[5], first, last, 2); break; \
        case 3: bits = FN(fo_stream_or)(x[0], x[1], x[2], x[3], x[4], x[5], first, last, 3); break; \
        case 4: bits = FN(fo_stream_or)(x[0], x[1], x[2], x[3], x[4], x[5], first, last, 4); break; \
        case 5: bits = FN(fo_stream_or)(x[0], x[1], x[2], x[3], x[4], x[5], first, last, 5); break; \
        default: bits = FN(fo_stream_or)(x[0], x[1], x[2], x[3], x[4], x[5], first, last, 6); break; \
        }                                                                              \
        sums[0] += (double)(bits & 1);                                                 \
    }                                                                                  \
    /* The benchmark's divider floor: per element, S square roots and then D          \
     * divisions (x = sqrt(x + y) S times, x = y / (x + y) D times; y in [1, 2) keeps  \
     * every value normal), nothing else but one load of x and y and one store of x:   \
     * the least time D divisions and S square roots take on this core and            \
     * instruction set.  buf[0] = x (written), buf[1] = y; hyper[0] = D (0 to 6),     \
     * hyper[1] = S (0 to 2). */                                                       \
    static FO_INLINE void FN(fo_divsqrt_body)(T *restrict x, const T *restrict y,     \
                                              int64_t begin, int64_t end, const int D, \
                                              const int S)                             \
    {                                                                                  \
        for (int64_t i = begin; i < end; i++) {                                        \
            T r = x[i];                                                                \
            const T b = y[i];                                                          \
            if (S > 0) r = SQRT(r + b);                                                \
            if (S > 1) r = SQRT(r + b);                                                \
            if (D > 0) r = b / (r + b);                                                \
            if (D > 1) r = b / (r + b);                                                \
            if (D > 2) r = b / (r + b);                                                \
            if (D > 3) r = b / (r + b);                                                \
            if (D > 4) r = b / (r + b);                                                \
            if (D > 5) r = b / (r + b);                                                \
            x[i] = r;                                                                  \
        }                                                                              \
    }                                                                                  \
    FO_KERNEL void FN(fo_divsqrt)(char *const *buf, int64_t begin, int64_t end,        \
                                  const double *h)                                     \
    {                                                                                  \
        T *x = (T *)buf[0];                                                            \
        const T *y = (const T *)buf[1];                                                \
        const int d = (int)h[0], s = (int)h[1];                                        \
        switch (s * 7 + d) {                                                           \
        FO_DIVSQRT_CASES(0) FO_DIVSQRT_CASES(1) FO_DIVSQRT_CASES(2)                    \
        default: break;                                                                \
        }                                                                              \
    }

/* Every kernel computes its step-dependent scalars (bias corrections) with pow() in
 * its prologue, once per call.  That costs as much as the update of a few hundred
 * elements, and a step over many small parameters makes one call per parameter with
 * the same few (base, exponent) pairs.  Inside the kernels, pow therefore goes
 * through a small per-thread cache: a hit returns the very value pow returned for the
 * same arguments, so results do not change. */
#define FO_POW_CACHE 8
typedef struct { double x, y, result; } fo_pow_entry;
typedef struct {
    fo_pow_entry entry[FO_POW_CACHE];
    unsigned next;
    int used;
} fo_pow_table;
/* The default TLS model: initial-exec would save a call per access but can make a
 * dlopen'ed module fail to load when the static TLS reserve is used up. */
static _Thread_local fo_pow_table fo_pow_cache;

static double fo_pow(double x, double y)
{
    fo_pow_table *table = &fo_pow_cache;
    for (int k = 0; k < table->used; k++) {
        /* compare bit patterns: -0.0 and 0.0, or two NaNs, are different inputs */
        if (memcmp(&table->entry[k].x, &x, sizeof x) == 0 &&
            memcmp(&table->entry[k].y, &y, sizeof y) == 0)
            return table->entry[k].result;
    }
    const double result = pow(x, y);
    fo_pow_entry *slot = &table->entry[table->next++ % FO_POW_CACHE];
    slot->x = x;
    slot->y = y;
    slot->result = result;
    if (table->used < FO_POW_CACHE) table->used++;
    return result;
}
#define pow fo_pow

/* The floating-point status flags of the calling thread, for the kernels that take a
 * division's FMA form in blocks and divide a block again where one of its operations
 * raised invalid, denormal operand, divide-by-zero, overflow or underflow (see
 * fo_div_const_checked in kernels_impl.h).  A kernel clears them on entry
 * (fo_fpflags_begin) and reads them after each block (fo_fpflags_clean: one read of
 * the status register); after dividing a block that raised one it clears them again
 * (fo_fpflags_reset), so that the next block is judged by its own operations.  On
 * return the flags are those it found together with those its operations raised
 * (fo_fpflags_end), as a kernel that divides would leave them.
 *
 * The flags are trusted only where the library's load found an operation of each
 * kind raising its flag (fo_fpflags_probe): an emulator may not keep them (under
 * valgrind none is ever raised), and there, as on a build without SSE, every block
 * reads as raised and divides. */
#define FO_FP_RAISED 0x1fu   /* invalid, denormal, divide-by-zero, overflow, underflow */
#define FO_FP_ALL 0x3fu      /* and inexact */
typedef struct {
    unsigned int entry, raised;
    int trusted, cleared;
} fo_fpflags;
static int fo_fpflags_trusted = 0;
int fo_fpflags_checked(void) { return fo_fpflags_trusted; }
#if defined(__SSE2__)
__attribute__((constructor)) static void fo_fpflags_probe(void)
{
    const unsigned int csr = _mm_getcsr();
    static const unsigned int flag[5] = {0x10u, 0x02u, 0x08u, 0x01u, 0x04u};
    volatile double tiny = 0x1p-1000, subnormal = 0x1p-1070, huge = 0x1p1000;
    volatile double inf = INFINITY, zero = 0, r;
    int all = 1;
    for (int k = 0; k < 5; k++) {
        _mm_setcsr(0x1f80u);    /* exceptions masked, no flush to zero, flags clear */
        switch (k) {
        case 0: r = tiny * tiny; break;       /* underflow */
        case 1: r = subnormal + 1.0; break;   /* denormal operand */
        case 2: r = huge * huge; break;       /* overflow */
        case 3: r = inf - inf; break;         /* invalid */
        default: r = 1.0 / zero; break;       /* divide-by-zero */
        }
        all &= (_mm_getcsr() & flag[k]) != 0;
    }
    (void)r;
    _mm_setcsr(csr);
    fo_fpflags_trusted = all;
}
/* Writing the status register costs far more than reading it (about 50 ns a write
 * here: clearing on entry and restoring on return added 80 to 115 ns to a kernel
 * call on 16 elements), so it is written only where a flag that matters is set: on
 * entry rarely, and after a block that divided again; a kernel that wrote nothing
 * leaves the caller's flags with its own raised ones already added. */
static FO_INLINE fo_fpflags fo_fpflags_begin(void)
{
    const unsigned int csr = _mm_getcsr();
    const int cleared = (csr & FO_FP_RAISED) != 0;
    const fo_fpflags f = {csr, 0, fo_fpflags_trusted, cleared};
    if (cleared) _mm_setcsr(csr & ~FO_FP_ALL);
    return f;
}
static FO_INLINE int fo_fpflags_clean(const fo_fpflags *f)
{
    return f->trusted && !(_mm_getcsr() & FO_FP_RAISED);
}
static FO_INLINE void fo_fpflags_reset(fo_fpflags *f)
{
    const unsigned int csr = _mm_getcsr();
    f->raised |= csr & FO_FP_ALL;
    f->cleared = 1;
    _mm_setcsr(csr & ~FO_FP_ALL);
}
static FO_INLINE void fo_fpflags_end(fo_fpflags f)
{
    if (f.cleared) _mm_setcsr(f.entry | f.raised | (_mm_getcsr() & FO_FP_ALL));
}
#else
static FO_INLINE fo_fpflags fo_fpflags_begin(void)
{
    const fo_fpflags f = {0, 0, 0, 0};
    return f;
}
static FO_INLINE int fo_fpflags_clean(const fo_fpflags *f) { return f->trusted; }
static FO_INLINE void fo_fpflags_reset(fo_fpflags *f) { (void)f; }
static FO_INLINE void fo_fpflags_end(fo_fpflags f) { (void)f; }
#endif

/* Which blocks of a flag-checked kernel (LAMB, NAdam, RAdam) try the FMA form.  A
 * block whose flags send it to the division costs both forms, and what raised them
 * (subnormal state, above all) usually goes on into the next blocks.  So after such a
 * block the next ones divide at once: one block after the first, then two, four, ...
 * up to FO_RETRY_MAX after each further one in a row, and one again once a block
 * passes.  The flags raised by a block computed again or divided at once are cleared
 * (fo_fpflags_reset) before the next try, so that each try is judged by its own
 * operations.  Which form a block takes never changes its bits.  float64 at 2**20
 * elements (AVX-512, one thread, both cores), a step over subnormal state took, before
 * this, 2.2 to 3.1x its normal time for NAdam, 1.6 to 3.1x for RAdam and 2.8 to 3.3x
 * for LAMB; with it, 1.00 to 1.34, 0.94 to 1.32 and 1.34 to 1.56 (with the FMA form
 * off, the division throughout: 1.06 to 1.20, 0.97 to 1.22 and 1.23 to 1.45).  Over
 * normal numbers at 65,536 elements, 0.97 to 1.02 of the time before.
 *
 * A kernel's loop over its blocks:
 *     if (!fo_retry_try(&retry, &flags)) { divide this block; continue; }
 *     the FMA form of this block;
 *     if (fo_retry_redo(&retry, fo_fpflags_clean(&flags))) divide it again; */
#define FO_RETRY_MAX 64
typedef struct {
    int64_t wait, next;   /* blocks left to divide at once; after the next failure */
    int dirty;            /* the flags hold those of blocks not to be judged */
} fo_retry;
static FO_INLINE fo_retry fo_retry_start(void)
{
    const fo_retry r = {0, 1, 0};
    return r;
}
/* Whether this block tries the FMA form (else it divides at once, and is counted). */
static FO_INLINE int fo_retry_try(fo_retry *r, fo_fpflags *f)
{
    if (r->wait > 0) {
        r->wait--;
        return 0;
    }
    if (r->dirty) {
        fo_fpflags_reset(f);
        r->dirty = 0;
    }
    return 1;
}
/* After a try: whether the block must be computed again with the division (`ok`
 * false: its flags, or another check, say so). */
static FO_INLINE int fo_retry_redo(fo_retry *r, int ok)
{
    if (ok) {
        r->next = 1;
        return 0;
    }
    r->wait = r->next;
    r->next = r->next < FO_RETRY_MAX ? 2 * r->next : FO_RETRY_MAX;
    r->dirty = 1;
    return 1;
}

/* The baseline instantiation: names end in _f32 / _f64.  It divides plainly
 * (FO_FAST_CDIV 0; see fo_div_sqrt_const in kernels_impl.h): the other instruction
 * sets fall back on it for divisors outside the range their correction needs. */
#define FO_SFX_F32 f32
#define FO_SFX_F64 f64
#define FO_FAST_CDIV 0
#if defined(__FMA__)
#define FO_FMA_SUMS 1    /* fo_lane_sumsq2: see there; an -march=native build's */
#else
#define FO_FMA_SUMS 0
#endif
/* register width for explicit GCC vectors (fo_lane_sumsq2): the command line's */
#if defined(__AVX512F__)
#define FO_VEC_BITS 512
#elif defined(__AVX__)
#define FO_VEC_BITS 256
#else
#define FO_VEC_BITS 128
#endif
#include "instantiate.h"
#undef FO_VEC_BITS
#undef FO_FMA_SUMS
#undef FO_FAST_CDIV
#undef FO_SFX_F32
#undef FO_SFX_F64

/* The wider instruction sets: GCC and clang can compile a region of a file for a
 * target the command line does not enable.  FASTOPT_NO_DISPATCH=1 at build time (or a
 * compiler without this) leaves only the baseline. */
#if !defined(FO_NO_DISPATCH) && (defined(__x86_64__) || defined(_M_X64)) &&            \
    (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 8)) && !defined(__AVX512F__)
#define FO_DISPATCH 1

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,bmi,bmi2,f16c,lzcnt,movbe,popcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,f16c,lzcnt,movbe,popcnt")
#endif
#define FO_SFX_F32 f32_avx2
#define FO_SFX_F64 f64_avx2
#define FO_FAST_CDIV 1   /* fo_div_sqrt_const: double only */
#define FO_FMA_SUMS 1
#define FO_VEC_BITS 256
#include "instantiate.h"
#undef FO_VEC_BITS
#undef FO_FMA_SUMS
#undef FO_FAST_CDIV
#undef FO_SFX_F32
#undef FO_SFX_F64
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
/* (clang takes no prefer-vector-width in a target attribute and would ignore the
 * whole attribute; it picks the vector width itself).  prfchw: a prefetch for writing
 * (ASGD's average) is `prefetchw`, as in an -march=native build; every CPU with
 * AVX-512 has it (and older x86 cores execute it as a no-op). */
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512cd,avx2,fma,bmi,bmi2,f16c,lzcnt,movbe,popcnt,prfchw"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512cd,avx2,fma,bmi,bmi2,f16c,lzcnt,movbe,popcnt,prfchw,prefer-vector-width=512")
#endif
#define FO_SFX_F32 f32_avx512
#define FO_SFX_F64 f64_avx512
#define FO_FAST_CDIV 2   /* fo_div_sqrt_const: float and double */
#define FO_FMA_SUMS 1
#define FO_VEC_BITS 512
#include "instantiate.h"
#undef FO_VEC_BITS
#undef FO_FMA_SUMS
#undef FO_FAST_CDIV
#undef FO_SFX_F32
#undef FO_SFX_F64
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#define FO_ISA_FNS(name)                                                               \
    {{name##_f32, name##_f64}, {name##_f32_avx2, name##_f64_avx2},                     \
     {name##_f32_avx512, name##_f64_avx512}}
#define FO_ISA_SUMS(name)                                                              \
    {{name##_sums_f32, name##_sums_f64}, {name##_sums_f32_avx2, name##_sums_f64_avx2}, \
     {name##_sums_f32_avx512, name##_sums_f64_avx512}}
#else
#define FO_DISPATCH 0
#define FO_ISA_FNS(name) {{name##_f32, name##_f64}, {NULL, NULL}, {NULL, NULL}}
#define FO_ISA_SUMS(name) {{name##_sums_f32, name##_sums_f64}, {NULL, NULL}, {NULL, NULL}}
#endif

#undef pow

#define FO_ENTRY(NAME, BUFFERS, HYPER)                                                 \
    {.name = #NAME, .f32 = NAME##_f32, .f64 = NAME##_f64, .buffers = BUFFERS,           \
     .hyper = HYPER, .isa = FO_ISA_FNS(NAME)}
/* A two-pass kernel: its first pass is NAME_sums_f32/f64 (baseline instruction set;
 * reduce_isa has every instruction set's), making NSUMS sums. */
#define FO_ENTRY_SUMS(NAME, BUFFERS, HYPER, NSUMS)                                     \
    {.name = #NAME, .f32 = NAME##_f32, .f64 = NAME##_f64, .buffers = BUFFERS,           \
     .hyper = HYPER, .reduce_f32 = NAME##_sums_f32, .reduce_f64 = NAME##_sums_f64,     \
     .nsums = NSUMS, .isa = FO_ISA_FNS(NAME), .reduce_isa = FO_ISA_SUMS(NAME)}

const fo_kernel_entry fo_kernels[] = {
    FO_ENTRY(sgd, "param grad momentum_buffer",
             "lr momentum dampening weight_decay nesterov maximize first_step grad_scale"),
    FO_ENTRY(adagrad, "param grad sum", "step lr lr_decay weight_decay eps maximize grad_scale"),
    FO_ENTRY(rmsprop, "param grad square_avg momentum_buffer grad_avg",
             "step lr alpha eps weight_decay momentum centered maximize grad_scale"),
    FO_ENTRY(adadelta, "param grad square_avg acc_delta",
             "step lr rho eps weight_decay maximize grad_scale"),
    FO_ENTRY(adam, "param grad exp_avg exp_avg_sq max_exp_avg_sq",
             "step lr beta1 beta2 eps weight_decay amsgrad maximize decoupled_weight_decay grad_scale"),
    FO_ENTRY(adamax, "param grad exp_avg exp_inf",
             "step lr beta1 beta2 eps weight_decay maximize grad_scale"),
    FO_ENTRY(nadam, "param grad exp_avg exp_avg_sq",
             "step lr beta1 beta2 eps weight_decay momentum_decay decoupled_weight_decay "
             "maximize mu_product grad_scale"),
    FO_ENTRY(radam, "param grad exp_avg exp_avg_sq",
             "step lr beta1 beta2 eps weight_decay decoupled_weight_decay maximize grad_scale"),
    FO_ENTRY(asgd, "param grad ax", "lambd weight_decay maximize eta mu grad_scale"),
    FO_ENTRY(rprop, "param grad prev step_size",
             "etaminus etaplus step_size_min step_size_max maximize grad_scale"),
    FO_ENTRY(lion, "param grad exp_avg", "lr beta1 beta2 weight_decay maximize grad_scale"),
    FO_ENTRY(adabelief, "param grad exp_avg exp_avg_var",
             "step lr beta1 beta2 eps weight_decay decoupled_weight_decay maximize grad_scale"),
    FO_ENTRY(yogi, "param grad exp_avg exp_avg_sq",
             "lr beta1 beta2 eps weight_decay maximize grad_scale"),
    FO_ENTRY(adan, "param grad exp_avg exp_avg_diff exp_avg_sq pre_grad",
             "step lr beta1 beta2 beta3 eps weight_decay no_prox maximize first_step grad_scale"),
    FO_ENTRY_SUMS(lamb, "param grad exp_avg exp_avg_sq",
                  "step lr beta1 beta2 eps weight_decay maximize grad_scale "
                  "param_sq_norm update_sq_norm", 2),
    FO_ENTRY_SUMS(lars, "param grad momentum_buffer",
                  "lr momentum weight_decay trust_coefficient nesterov maximize grad_scale "
                  "param_sq_norm grad_sq_norm", 2),
};
const int fo_nkernels = (int)(sizeof(fo_kernels) / sizeof(fo_kernels[0]));

static const fo_kernel_entry fo_adafactor_vector = {
    .name = "adafactor_vector", .f32 = adafactor_vector_f32, .f64 = adafactor_vector_f64,
    .buffers = "param grad row_var col_var variance",
    .hyper = "step lr beta2_decay eps1 eps2 d weight_decay maximize grad_scale numel "
             "param_sq_norm update_sq_norm",
    .reduce_f32 = adafactor_vector_sums_f32, .reduce_f64 = adafactor_vector_sums_f64,
    .nsums = 2, .isa = FO_ISA_FNS(adafactor_vector),
    .reduce_isa = FO_ISA_SUMS(adafactor_vector)};

const fo_factored_entry fo_factored_kernels[] = {
    {"adafactor", adafactor_f32, adafactor_f64, "param grad row_var col_var variance",
     "step lr beta2_decay eps1 eps2 d weight_decay maximize grad_scale",
     FO_ISA_FNS(adafactor), &fo_adafactor_vector},
};
const int fo_nfactored = (int)(sizeof(fo_factored_kernels) / sizeof(fo_factored_kernels[0]));

const fo_kernel_entry fo_stream_kernel = {
    .name = "stream", .f32 = fo_stream_f32, .f64 = fo_stream_f64,
    .buffers = "param grad s0 s1 s2 s3 s4 s5", .hyper = "nstate nreads reads...",
    .reduce_f32 = fo_stream_sums_f32, .reduce_f64 = fo_stream_sums_f64, .nsums = 1,
    .isa = FO_ISA_FNS(fo_stream), .reduce_isa = FO_ISA_SUMS(fo_stream)};

const fo_kernel_entry fo_divsqrt_kernel = {
    .name = "divsqrt", .f32 = fo_divsqrt_f32, .f64 = fo_divsqrt_f64,
    .buffers = "x y", .hyper = "divisions square_roots", .isa = FO_ISA_FNS(fo_divsqrt)};

/* -- per-CPU defaults: software prefetch, the FMA form of a division ---------------- */

/* The CPU family of an AMD processor (0x19 Zen 3 and 4, 0x1a Zen 5), 0 for any other. */
static unsigned int fo_amd_family(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    unsigned int a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    /* "AuthenticAMD" */
    if (b != 0x68747541u || d != 0x69746e65u || c != 0x444d4163u) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    unsigned int family = (a >> 8) & 0xfu;
    if (family == 0xfu) family += (a >> 20) & 0xffu;
    return family;
#else
    return 0;
#endif
}

/* Whether the kernels prefetch by default on this CPU.  Measured with the kernels
 * called side by side at 16,000,000 elements, one thread, AVX-512: on the Intel Xeon
 * core where it was introduced prefetching took the divider-bound kernels to 0.71 to
 * 0.98 of their time (kernels_impl.h); on an AMD Zen 5 core (family 1Ah) the kernels without it
 * take 0.84 to 1.01 of the time with it (LARS, Adafactor and ASGD float32 0.84,
 * 0.85 and 0.92, none slower by more than 1%), and 0.88 to 1.03 at 65,536 elements. */
int fo_prefetch_default(void) { return fo_amd_family() < 0x1a; }

void fo_set_prefetch(int on) { fo_prefetch = on < 0 ? fo_prefetch_default() : on != 0; }
int fo_get_prefetch(void) { return fo_prefetch; }

/* The FMA form of a division replaces one pass through the divide unit with about
 * five vector operations: a gain where that unit bounds the loop, a loss where it is
 * fast.  On an AMD Zen 5 core (family 1Ah), in cache (65,536 elements, AVX-512, the
 * package builds side by side), plain division took float32 Adam, NAdam, AdaBelief,
 * Adan and LAMB 0.80 to 0.93 of the FMA form's time and float64 NAdam 0.68 to 0.70
 * of its shared reciprocal's, while float64 Adam, AdaBelief and Adan took 1.04 to
 * 1.18 of the FMA form's; on the Intel Xeon core where it was introduced the FMA
 * form gained everywhere it is used. */
int fo_fma_division_default(void) { return fo_amd_family() >= 0x1a ? 1 : 2; }

void fo_set_fma_division(int mode)
{
    fo_fma_division = mode < 0 ? fo_fma_division_default() : mode > 2 ? 2 : mode;
}
int fo_get_fma_division(void) { return fo_fma_division; }

/* -- instruction-set dispatch ------------------------------------------------------ */

const char *const fo_isa_names[FO_NISA] = {"baseline", "avx2", "avx512"};

int fo_isa_best(void)
{
#if FO_DISPATCH
    static int best = -1;
    if (best < 0) {
        __builtin_cpu_init();
        /* __builtin_cpu_supports also checks that the OS saves the wide registers. */
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
            __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx2") &&
            __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
            best = FO_ISA_AVX512;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                 __builtin_cpu_supports("bmi2"))
            best = FO_ISA_AVX2;
        else
            best = FO_ISA_BASELINE;
    }
    return best;
#else
    return FO_ISA_BASELINE;
#endif
}

static int fo_isa_current = -1;

int fo_isa_get(void)
{
    if (fo_isa_current < 0) fo_isa_current = fo_isa_best();
    return fo_isa_current;
}

int fo_isa_set(int isa)
{
    if (isa < 0) isa = fo_isa_best();
    if (isa >= FO_NISA || isa > fo_isa_best()) return -1;
    fo_isa_current = isa;
    return isa;
}

fo_kernel_fn fo_select(const fo_kernel_entry *entry, int is_f64)
{
    fo_kernel_fn fn = entry->isa[fo_isa_get()][is_f64 ? 1 : 0];
    if (fn == NULL) fn = is_f64 ? entry->f64 : entry->f32;
    return fn;
}

fo_reduce_fn fo_select_reduce(const fo_kernel_entry *entry, int is_f64)
{
    if (entry->nsums == 0) return NULL;
    fo_reduce_fn fn = entry->reduce_isa[fo_isa_get()][is_f64 ? 1 : 0];
    if (fn == NULL) fn = is_f64 ? entry->reduce_f64 : entry->reduce_f32;
    return fn;
}

fo_factored_fn fo_select_factored(const fo_factored_entry *entry, int is_f64)
{
    fo_factored_fn fn = entry->isa[fo_isa_get()][is_f64 ? 1 : 0];
    if (fn == NULL) fn = is_f64 ? entry->f64 : entry->f32;
    return fn;
}

/* -- threads ------------------------------------------------------------------------ */

int64_t fo_parallel_min = FO_PARALLEL_MIN_DEFAULT;
static int fo_threads_setting = 0;
static int fo_flush_setting = 0;
static int fo_auto_setting = 1;

void fo_set_auto_threads(int on) { fo_auto_setting = on != 0; }
int fo_get_auto_threads(void) { return fo_auto_setting; }

int fo_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

void fo_set_num_threads(int nthreads) { fo_threads_setting = nthreads > 0 ? nthreads : 0; }
int fo_get_num_threads_setting(void) { return fo_threads_setting; }

int fo_default_threads(void)
{
#ifdef _OPENMP
    /* omp_get_max_threads follows OMP_NUM_THREADS and omp_set_num_threads, which is
     * what threadpoolctl calls to limit OpenMP libraries. */
    return fo_threads_setting > 0 ? fo_threads_setting : omp_get_max_threads();
#else
    return 1;
#endif
}

void fo_set_flush_denormal(int on) { fo_flush_setting = on != 0; }
int fo_get_flush_denormal(void) { return fo_flush_setting; }

/* Flush-to-zero and denormals-are-zero, set on the running thread for the length of
 * one call and then restored: never left set for the process. */
#if defined(__SSE2__)
#define FO_FTZ_DAZ 0x8040u
#define FO_FLUSH_BEGIN(on) unsigned int fo_saved_csr = _mm_getcsr(); \
    if (on) _mm_setcsr(fo_saved_csr | FO_FTZ_DAZ)
#define FO_FLUSH_END(on) if (on) _mm_setcsr(fo_saved_csr)
int fo_flush_supported(void) { return 1; }
#else
#define FO_FLUSH_BEGIN(on) (void)(on)
#define FO_FLUSH_END(on) (void)(on)
int fo_flush_supported(void) { return 0; }
#endif

/* Runs a task's kernel over [begin, end).  A long range is run as two calls, the
 * second starting where the parameter is aligned to FO_ALIGN bytes: a vector load or
 * store that crosses a cache line costs two, and NumPy places a large array 16 bytes
 * past a page boundary, so every 512-bit access of a plain loop over it crosses one.
 * The state buffers fastopt allocates share the parameter's alignment within a line
 * (fastopt/_buffers.py), and so does a gradient from NumPy, so one split aligns them
 * all.  Every kernel is element-wise (the sums of the two-pass kernels are made apart,
 * in fixed blocks), so the split changes no result.  Measured at 16,000,000 elements
 * on a core with AVX-512 (AMD Zen 5): the streaming ceiling with Adam's memory shape
 * took 0.82 to 0.86 of its time, the kernels 0.91 to 0.99 (they space their memory
 * accesses with arithmetic); below FO_ALIGN_MIN elements (fastopt.h) the second
 * call's fixed cost outweighs the gain. */
static FO_INLINE void fo_call(const fo_task *task, int64_t begin, int64_t end)
{
    const int64_t size = task->itemsize;
    if (size > 0 && end - begin >= FO_ALIGN_MIN) {
        const uintptr_t at = (uintptr_t)task->buf[0] + (uintptr_t)(begin * size);
        const int64_t gap = (int64_t)((FO_ALIGN - at % FO_ALIGN) % FO_ALIGN);
        if (gap > 0 && gap % size == 0) {
            task->fn(task->buf, begin, begin + gap / size, task->hyper);
            begin += gap / size;
        }
    }
    task->fn(task->buf, begin, end, task->hyper);
}

static void fo_run_serial(const fo_task *tasks, int64_t ntasks)
{
    for (int64_t t = 0; t < ntasks; t++) {
        if (tasks[t].n > 0) fo_call(&tasks[t], 0, tasks[t].n);
    }
}

#ifdef _OPENMP
/* The chunks of all tasks, numbered in task order: `first[t]` is the number of the
 * first chunk of task t, first[ntasks] the total.  A chunk is also a block of the
 * two-pass kernels' sums (FO_SUM_BLOCK == FO_CHUNK), so with `partials` (FO_MAX_SUMS
 * doubles per chunk) the team first computes every block's partial sums, one thread
 * adds them in block order exactly as fo_reduce_tasks does, and then the team runs the
 * update: the sums, and so the results, do not depend on the thread count. */
#if FO_SUM_BLOCK != FO_CHUNK
#error "the threaded first pass assumes a sum block is a chunk"
#endif
static void fo_run_parallel(const fo_task *tasks, int64_t ntasks, const int64_t *first,
                            int nthreads, int flush, double *partials)
{
    const int64_t nchunks = first[ntasks];
#pragma omp parallel num_threads(nthreads)
    {
        FO_FLUSH_BEGIN(flush);
        int64_t t = 0;
        if (partials != NULL) {
#pragma omp for schedule(static)
            for (int64_t c = 0; c < nchunks; c++) {
                while (first[t + 1] <= c) t++;
                while (first[t] > c) t--;
                double *partial = &partials[c * FO_MAX_SUMS];
                for (int k = 0; k < FO_MAX_SUMS; k++) partial[k] = 0;
                if (tasks[t].reduce == NULL) continue;
                const int64_t begin = (c - first[t]) * FO_CHUNK;
                int64_t end = begin + FO_CHUNK;
                if (end > tasks[t].n) end = tasks[t].n;
                tasks[t].reduce(tasks[t].buf, begin, end, tasks[t].hyper, partial);
            }
#pragma omp single
            for (int64_t u = 0; u < ntasks; u++) {
                if (tasks[u].reduce == NULL) continue;
                for (int k = 0; k < tasks[u].nsums; k++) tasks[u].sums[k] = 0;
                for (int64_t c = first[u]; c < first[u + 1]; c++)
                    for (int k = 0; k < tasks[u].nsums; k++)
                        tasks[u].sums[k] += partials[c * FO_MAX_SUMS + k];
            }
            t = 0;
        }
#pragma omp for schedule(static)
        for (int64_t c = 0; c < nchunks; c++) {
            while (first[t + 1] <= c) t++;      /* chunks come in increasing order */
            while (first[t] > c) t--;
            const int64_t begin = (c - first[t]) * FO_CHUNK;
            int64_t end = begin + FO_CHUNK;
            if (end > tasks[t].n) end = tasks[t].n;
            fo_call(&tasks[t], begin, end);
        }
        FO_FLUSH_END(flush);
    }
}
#endif

/* With nothing set by the user (no fastopt setting, no OMP_NUM_THREADS), use only the
 * CPUs the load average says are idle: an OpenMP team on a machine whose cores are
 * busy waits at its barrier for a worker the scheduler has not run yet, and libgomp's
 * spinning makes that wait milliseconds long (a step 10x slower than on one thread).
 *
 * The load average counts this process too: a run of threaded steps raises it, and
 * taken as other processes' load it would cut the team down to one thread on an idle
 * machine.  So this process's own CPU use (all its threads, OpenMP workers spinning
 * between steps included) is averaged the way the kernel averages the one-minute
 * load, and only the rest counts as others' load; the calling thread counts as at
 * least one unit of this process's load. */
#ifdef _OPENMP
#if defined(__linux__) || defined(__APPLE__)
static pthread_mutex_t fo_own_lock = PTHREAD_MUTEX_INITIALIZER;
static double fo_own_load = 0, fo_own_cpu = -1, fo_own_wall = 0;

/* This process's CPU seconds per second of wall time, as an exponential average with
 * the one-minute load average's time constant, updated at most every 50 ms (the first
 * call, at import, only starts the clock). */
double fo_own_load_average(void)
{
    struct rusage usage;
    struct timespec now;
    if (getrusage(RUSAGE_SELF, &usage) != 0 || clock_gettime(CLOCK_MONOTONIC, &now) != 0)
        return fo_own_load;
    const double cpu = (double)usage.ru_utime.tv_sec + 1e-6 * (double)usage.ru_utime.tv_usec +
                       (double)usage.ru_stime.tv_sec + 1e-6 * (double)usage.ru_stime.tv_usec;
    const double wall = (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
    if (pthread_mutex_trylock(&fo_own_lock) != 0) return fo_own_load;
    if (fo_own_cpu < 0) {
        fo_own_cpu = cpu;
        fo_own_wall = wall;
    } else if (wall - fo_own_wall >= 0.05) {
        const double elapsed = wall - fo_own_wall, keep = exp(-elapsed / 60.0);
        fo_own_load = fo_own_load * keep + (cpu - fo_own_cpu) / elapsed * (1 - keep);
        fo_own_cpu = cpu;
        fo_own_wall = wall;
    }
    const double result = fo_own_load;
    pthread_mutex_unlock(&fo_own_lock);
    return result;
}
#else
double fo_own_load_average(void) { return 0; }
#endif

static int fo_auto_threads(int nthreads)
{
#if defined(__linux__) || defined(__APPLE__)
    static int explicit_env = -1;
    if (explicit_env < 0) explicit_env = getenv("OMP_NUM_THREADS") != NULL;
    if (fo_threads_setting > 0 || explicit_env || !fo_auto_setting) return nthreads;
    double load;
    if (getloadavg(&load, 1) == 1) {
        double own = fo_own_load_average();
        if (own < 1.0) own = 1.0;
        const double others = load > own ? load - own : 0.0;
        const double idle = (double)nthreads - others;
        int usable = idle < 1.0 ? 1 : (int)(idle + 0.5);
        if (usable < nthreads) nthreads = usable;
    }
#endif
    return nthreads;
}
#else
double fo_own_load_average(void) { return 0; }
#endif

void fo_reduce_tasks(const fo_task *tasks, int64_t ntasks)
{
    for (int64_t t = 0; t < ntasks; t++) {
        const fo_task *task = &tasks[t];
        if (task->reduce == NULL) continue;
        for (int k = 0; k < task->nsums; k++) task->sums[k] = 0;
        for (int64_t begin = 0; begin < task->n; begin += FO_SUM_BLOCK) {
            int64_t end = task->n - begin < FO_SUM_BLOCK ? task->n : begin + FO_SUM_BLOCK;
            double partial[FO_MAX_SUMS] = {0};
            task->reduce(task->buf, begin, end, task->hyper, partial);
            for (int k = 0; k < task->nsums; k++) task->sums[k] += partial[k];
        }
    }
}

void fo_run_threads(const fo_task *tasks, int64_t ntasks, int nthreads)
{
    const int flush = fo_flush_setting;
    const int automatic = nthreads <= 0;
    if (automatic) nthreads = fo_default_threads();
#ifdef _OPENMP
    if (nthreads > 1) {
        int64_t total = 0;
        int reduces = 0;
        for (int64_t t = 0; t < ntasks; t++) {
            total += tasks[t].n;
            reduces |= tasks[t].reduce != NULL;
        }
        if (total >= fo_parallel_min && automatic) nthreads = fo_auto_threads(nthreads);
        if (total >= fo_parallel_min && nthreads > 1) {
            int64_t stack_first[65];
            int64_t *first = ntasks < 65 ? stack_first
                                         : (int64_t *)malloc((ntasks + 1) * sizeof(int64_t));
            if (first != NULL) {
                first[0] = 0;
                for (int64_t t = 0; t < ntasks; t++)
                    first[t + 1] = first[t] + (tasks[t].n + FO_CHUNK - 1) / FO_CHUNK;
                int64_t useful = first[ntasks];
                if (useful < nthreads) nthreads = (int)useful;
                double *partials = reduces ? (double *)malloc(
                                                 (size_t)useful * FO_MAX_SUMS * sizeof(double))
                                           : NULL;
                if (nthreads > 1 && (partials != NULL || !reduces)) {
                    fo_run_parallel(tasks, ntasks, first, nthreads, flush, partials);
                    free(partials);
                    if (first != stack_first) free(first);
                    return;
                }
                free(partials);
                if (first != stack_first) free(first);
            }
        }
    }
#endif
    {
        FO_FLUSH_BEGIN(flush);
        fo_reduce_tasks(tasks, ntasks);
        fo_run_serial(tasks, ntasks);
        FO_FLUSH_END(flush);
    }
}

void fo_run(const fo_task *tasks, int64_t ntasks) { fo_run_threads(tasks, ntasks, 0); }

/* The number of space-separated names in `names`. */
static int fo_count_words(const char *names)
{
    int count = 0;
    for (const char *c = names; *c; c++)
        if (*c != ' ' && (c == names || c[-1] == ' ')) count++;
    return count;
}

void fo_run_factored(const fo_factored_entry *entry, int is_f64, char *const *buf,
                     int64_t batch, int64_t rows, int64_t cols, const double *hyper,
                     int nthreads)
{
    /* the counts, once per entry (a 16-element step is a few hundred cycles, as long
     * as scanning the two name lists) */
    static int counts[sizeof(fo_factored_kernels) / sizeof(fo_factored_kernels[0])][2];
    const ptrdiff_t e = entry - fo_factored_kernels;
    int nbuf = __atomic_load_n(&counts[e][0], __ATOMIC_RELAXED);
    int nhyper = __atomic_load_n(&counts[e][1], __ATOMIC_RELAXED);
    if (nbuf == 0 || nhyper == 0) {
        nbuf = fo_count_words(entry->buffers);
        nhyper = fo_count_words(entry->hyper);
        __atomic_store_n(&counts[e][0], nbuf, __ATOMIC_RELAXED);
        __atomic_store_n(&counts[e][1], nhyper, __ATOMIC_RELAXED);
    }
    /* a parameter the kernel does not factor keeps its last state buffer (a matrix of
     * one row does not) */
    if (batch == 1 && rows == 1 && entry->vector != NULL && buf[nbuf - 1] != NULL) {
        double h[FO_MAX_HYPER] = {0};
        for (int k = 0; k < nhyper && k < FO_MAX_HYPER - 3; k++) h[k] = hyper[k];
        h[nhyper] = (double)cols;
        fo_task task;
        memset(&task, 0, sizeof task);
        task.fn = fo_select(entry->vector, is_f64);
        task.itemsize = is_f64 ? 8 : 4;
        for (int k = 0; k < FO_MAX_BUFS; k++) task.buf[k] = buf[k];
        task.n = cols;
        task.hyper = h;
        task.reduce = fo_select_reduce(entry->vector, is_f64);
        task.nsums = 2;
        task.sums = &h[nhyper + 1];
        fo_run_threads(&task, 1, nthreads);
        return;
    }
    const int flush = fo_flush_setting;
    FO_FLUSH_BEGIN(flush);
    fo_select_factored(entry, is_f64)(buf, batch, rows, cols, hyper);
    FO_FLUSH_END(flush);
}
