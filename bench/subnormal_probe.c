/*
 * How much slower a loop runs over subnormal numbers than over normal ones, over
 * time, on this core (x86-64 with AVX-512F only).
 *
 * rprop_loop is the AVX-512 main loop GCC made of fastopt's float32 Rprop kernel
 * (csrc/algos/rprop.h) before that kernel's multiplications became FMAs (fo_mul_fma
 * in csrc/kernels_impl.h: the slow path of multiplications over subnormal operands,
 * which this loop shows, is why), copied instruction for instruction; clamp_only is
 * a piece of it (a multiply and the clamp of the step size).  Both run over 4,096 elements per
 * buffer (L1/L2-resident), restored before every call, first with normal values and
 * then with every buffer subnormal, 1,000 calls each; each block prints the ratio of
 * the best subnormal call to the best normal call, for both loops.  No fastopt code
 * runs: the same instructions on the same data, so a ratio that changes from block
 * to block is the core's handling of subnormal operands, not the kernel.
 *
 *     cc -O2 -mavx512f bench/subnormal_probe.c -o subnormal_probe
 *     taskset -c 0 ./subnormal_probe; taskset -c 1 ./subnormal_probe
 */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define N 4096
static float P[N] __attribute__((aligned(64))), G[N] __attribute__((aligned(64))),
    PR[N] __attribute__((aligned(64))), S[N] __attribute__((aligned(64)));

/* The constants the kernel broadcasts before its loop: zmm24 the gradient's sign (1),
 * zmm8 1, zmm23 etaplus, zmm20 etaminus, zmm17 step_size_min, zmm11 step_size_max,
 * zmm22 -1, zmm7 -0, zmm6 0; rax the byte offset into every buffer. */
#define PROLOGUE                                                                         \
    "vbroadcastss %[one], %%zmm24\n vbroadcastss %[one], %%zmm8\n"                       \
    "vbroadcastss %[etaplus], %%zmm23\n vbroadcastss %[etaminus], %%zmm20\n"             \
    "vbroadcastss %[lo], %%zmm17\n vbroadcastss %[hi], %%zmm11\n"                        \
    "vbroadcastss %[minus_one], %%zmm22\n vbroadcastss %[minus_zero], %%zmm7\n"          \
    "vxorps %%xmm6, %%xmm6, %%xmm6\n xor %%eax, %%eax\n"                                 \
    "1:\n"
#define EPILOGUE                                                                         \
    "add $0x40, %%rax\n cmp %%rax, %[n]\n jne 1b\n"                                      \
    :: [g] "r"(G), [pr] "r"(PR), [s] "r"(S), [p] "r"(P), [n] "r"((long)sizeof P),         \
       [one] "m"((float){1.0f}), [etaplus] "m"((float){1.2f}),                          \
       [etaminus] "m"((float){0.5f}), [lo] "m"((float){1e-6f}), [hi] "m"((float){50.f}),  \
       [minus_one] "m"((float){-1.0f}), [minus_zero] "m"((float){-0.0f})                  \
    : "rax", "memory", "xmm0", "xmm6", "xmm7", "xmm8", "xmm11", "xmm17", "xmm20",         \
      "xmm22", "xmm23", "xmm24", "xmm26", "xmm27", "xmm28", "k0", "k1", "k2"

/* zmm0 = min(max(zmm0, step_size_min), step_size_max), NaN kept (fo_maximum and
 * fo_minimum as GCC compiles them). */
#define CLAMP                                                                            \
    "vcmpgtps %%zmm17,%%zmm0,%%k0\n vcmpneqps %%zmm0,%%zmm0,%%k1\n korw %%k0,%%k1,%%k1\n"      \
    "vblendmps %%zmm0,%%zmm17,%%zmm0%{%%k1%}\n"                                            \
    "vcmpneqps %%zmm0,%%zmm0,%%k1\n vcmpltps %%zmm11,%%zmm0,%%k0\n korw %%k0,%%k1,%%k1\n"      \
    "vblendmps %%zmm0,%%zmm11,%%zmm0%{%%k1%}\n"

/* Rprop's loop: p = param, g = grad, pr = prev, s = step_size. */
static void rprop_loop(void)
{
    __asm__ volatile(PROLOGUE
        "vmulps (%[g],%%rax,1),%%zmm24,%%zmm27\n"
        "vmulps (%[pr],%%rax,1),%%zmm27,%%zmm0\n"
        "vcmpltps %%zmm0,%%zmm6,%%k1\n"
        "vblendmps %%zmm23,%%zmm20,%%zmm26%{%%k1%}\n"
        "vcmpneq_oqps %%zmm6,%%zmm0,%%k1\n"
        "vblendmps %%zmm26,%%zmm8,%%zmm26%{%%k1%}\n"
        "vmulps (%[s],%%rax,1),%%zmm26,%%zmm0\n"
        "vcmpneqps %%zmm26,%%zmm20,%%k2\n"
        "vmovaps %%zmm27,%%zmm26%{%%k2%}%{z%}\n"
        "vmovups %%zmm26,(%[pr],%%rax,1)\n"
        CLAMP
        "vcmpgtps %%zmm6,%%zmm27,%%k1%{%%k2%}\n"
        "vmovups %%zmm0,(%[s],%%rax,1)\n"
        "vblendmps %%zmm22,%%zmm7,%%zmm27%{%%k1%}\n"
        "vblendmps %%zmm7,%%zmm8,%%zmm28%{%%k1%}\n"
        "vcmpltps %%zmm6,%%zmm26,%%k1\n"
        "vmovaps %%zmm28,%%zmm27%{%%k1%}\n"
        "vmulps %%zmm27,%%zmm0,%%zmm0\n"
        "vaddps (%[p],%%rax,1),%%zmm0,%%zmm0\n"
        "vmovups %%zmm0,(%[p],%%rax,1)\n"
        EPILOGUE);
}

/* The step size times 1, clamped to [step_size_min, step_size_max], stored. */
static void clamp_only(void)
{
    __asm__ volatile(PROLOGUE
        "vmulps (%[s],%%rax,1),%%zmm8,%%zmm0\n"
        CLAMP
        "vmovups %%zmm0,(%[s],%%rax,1)\n"
        EPILOGUE);
}

static double one_call(void (*loop)(void), const float *from)
{
    memcpy(P, from, sizeof P);
    memcpy(G, from + N, sizeof G);
    memcpy(PR, from + 2 * N, sizeof PR);
    memcpy(S, from + 3 * N, sizeof S);
    double t = now();
    loop();
    return now() - t;
}

static double slowdown(void (*loop)(void), const float *normal, const float *subnormal)
{
    double best_normal = 1e9, best_subnormal = 1e9;
    for (int r = 0; r < 1000; r++) {
        double t = one_call(loop, normal);
        if (t < best_normal) best_normal = t;
    }
    for (int r = 0; r < 1000; r++) {
        double t = one_call(loop, subnormal);
        if (t < best_subnormal) best_subnormal = t;
    }
    return best_subnormal / best_normal;
}

int main(void)
{
    volatile float smallest = FLT_MIN;
    const float sub = smallest / 8;
    float *normal = malloc(4 * N * sizeof(float)), *subnormal = malloc(4 * N * sizeof(float));
    for (int i = 0; i < N; i++) {   /* param, grad, prev, step_size */
        normal[i] = 0.5f, normal[N + i] = normal[2 * N + i] = normal[3 * N + i] = 1.0f;
        subnormal[i] = sub / 2, subnormal[N + i] = subnormal[2 * N + i] = subnormal[3 * N + i] = sub;
    }
    double start = now();
    printf("subnormal time / normal time, per block: Rprop loop, clamp only\n");
    for (int block = 0; block < 30; block++)
        printf("%6.0f ms  %.2f  %.2f\n", (now() - start) * 1e3,
               slowdown(rprop_loop, normal, subnormal), slowdown(clamp_only, normal, subnormal));
    free(normal);
    free(subnormal);
    return 0;
}
