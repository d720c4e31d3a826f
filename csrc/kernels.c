/*
 * The fastopt kernels: every algorithm of algos/ instantiated for float32 and
 * float64, the kernel table the Python layer reads, and the task runner.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "fastopt.h"

#define FO_INLINE inline __attribute__((always_inline))
#define FO_KERNEL

#define T float
#define SFX f32
#define SQRT sqrtf
#define FABS fabsf
#define FO_EPS FLT_EPSILON
#include "kernels_impl.h"
#undef T
#undef SFX
#undef SQRT
#undef FABS
#undef FO_EPS

#define T double
#define SFX f64
#define SQRT sqrt
#define FABS fabs
#define FO_EPS DBL_EPSILON
#include "kernels_impl.h"
#undef T
#undef SFX
#undef SQRT
#undef FABS
#undef FO_EPS

#define FO_ENTRY(name, buffers, hyper) {#name, name##_f32, name##_f64, buffers, hyper}
/* A two-pass kernel: its reduction is name_sums_f32/f64, making `nsums` sums. */
#define FO_ENTRY_SUMS(name, buffers, hyper, nsums)                                     \
    {#name, name##_f32, name##_f64, buffers, hyper, name##_sums_f32, name##_sums_f64, nsums}

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

const fo_factored_entry fo_factored_kernels[] = {
    {"adafactor", adafactor_f32, adafactor_f64, "param grad row_var col_var variance",
     "step lr beta2_decay eps1 eps2 d weight_decay maximize grad_scale"},
};
const int fo_nfactored = (int)(sizeof(fo_factored_kernels) / sizeof(fo_factored_kernels[0]));

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

void fo_run(const fo_task *tasks, int64_t ntasks)
{
    fo_reduce_tasks(tasks, ntasks);
    for (int64_t t = 0; t < ntasks; t++) {
        if (tasks[t].n > 0) tasks[t].fn(tasks[t].buf, 0, tasks[t].n, tasks[t].hyper);
    }
}
