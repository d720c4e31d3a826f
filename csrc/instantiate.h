/*
 * Instantiates every kernel (kernels_impl.h) and the streaming ceiling kernel for
 * float and double, with names ending in FO_SFX_F32 and FO_SFX_F64.  kernels.c
 * includes this once per instruction set, inside that set's target region, with
 * FO_FAST_CDIV saying whether fo_div_sqrt_const may avoid the divider there.  SFX_BASE
 * names the baseline instantiation, which the others fall back on.
 */
#define T float
#define FO_T_F64 0
#define SFX_BASE f32
#define SQRT sqrtf
#define FABS fabsf
#define FO_EPS FLT_EPSILON
#define SFX FO_SFX_F32
#include "kernels_impl.h"
FO_STREAM_DEFINE
#undef SFX
#undef SFX_BASE
#undef FO_T_F64
#undef T
#undef SQRT
#undef FABS
#undef FO_EPS

#define T double
#define FO_T_F64 1
#define SFX_BASE f64
#define SQRT sqrt
#define FABS fabs
#define FO_EPS DBL_EPSILON
#define SFX FO_SFX_F64
#include "kernels_impl.h"
FO_STREAM_DEFINE
#undef SFX
#undef SFX_BASE
#undef FO_T_F64
#undef T
#undef SQRT
#undef FABS
#undef FO_EPS
