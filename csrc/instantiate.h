/*
 * Instantiates every kernel (kernels_impl.h) and the streaming ceiling kernel for
 * float and double, with names ending in FO_SFX_F32 and FO_SFX_F64.  kernels.c
 * includes this once per instruction set, inside that set's target region.
 */
#define T float
#define SQRT sqrtf
#define FABS fabsf
#define FO_EPS FLT_EPSILON
#define SFX FO_SFX_F32
#include "kernels_impl.h"
FO_STREAM_DEFINE
#undef SFX
#undef T
#undef SQRT
#undef FABS
#undef FO_EPS

#define T double
#define SQRT sqrt
#define FABS fabs
#define FO_EPS DBL_EPSILON
#define SFX FO_SFX_F64
#include "kernels_impl.h"
FO_STREAM_DEFINE
#undef SFX
#undef T
#undef SQRT
#undef FABS
#undef FO_EPS
