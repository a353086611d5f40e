/* SiLU, x / (1 + exp(-x)), for float32 on x86-64 with AVX2 + FMA: the hidden-layer
 * activation of the "cpu" rollout backend (kernels/rollout_step_cpu.py).
 *
 * exp is the Cody-Waite range reduction n = round(t log2 e), r = t - n ln 2 (ln 2 split in two
 * constants), a degree-6 polynomial for exp(r) on [-ln2/2, ln2/2] (the coefficients of Cephes'
 * expf, S. Moshier) and 2^n built in the exponent bits. Measured against ATen's F.silu on
 * N(0, 16) inputs: relative error <= 2.5e-7 (about 2 ulp). Special values match ATen's formula:
 * NaN -> NaN, +inf -> +inf, -inf -> NaN (-inf / inf), x < -88.7 -> -0.
 *
 * Built and loaded by kernels/native.py with the system C compiler; the AVX2 code is compiled
 * with a target attribute, and simloop_cpu_supported() tells at run time whether it may run.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

int simloop_cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#define AVX2 __attribute__((target("avx2,fma")))

/* exp(-x) for 8 lanes; +inf where -x > 88.72 (so that x / (1 + exp(-x)) follows ATen there). */
static inline AVX2 __m256 exp_neg(__m256 x) {
    const __m256 t_raw = _mm256_sub_ps(_mm256_setzero_ps(), x);
    /* clamp (max/min return the constant for a NaN lane; NaN still propagates through x / d) */
    __m256 t = _mm256_min_ps(t_raw, _mm256_set1_ps(88.3762626647949f));
    t = _mm256_max_ps(t, _mm256_set1_ps(-87.3365447505531f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), t);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    const __m256 over = _mm256_cmp_ps(t_raw, _mm256_set1_ps(88.72283935546875f), _CMP_GT_OQ);
    return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), over);
}

/* y = x / (1 + exp(-x)); y may be x (in place). */
static AVX2 void silu_range(const float *x, float *y, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) { /* two independent vectors per iteration hide the latency */
        const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        const __m256 da = _mm256_add_ps(one, exp_neg(a)), db = _mm256_add_ps(one, exp_neg(b));
        _mm256_storeu_ps(y + i, _mm256_div_ps(a, da));
        _mm256_storeu_ps(y + i + 8, _mm256_div_ps(b, db));
    }
    for (; i < n; ++i) y[i] = x[i] / (1.0f + expf(-x[i]));
}

/* Threads for n elements: at most `threads`, at least 32768 elements each. The split uses OpenMP;
 * loaded after torch, this library binds to the libgomp torch already loaded (same soname), so it
 * runs on torch's own OpenMP pool: its threads are awake right after the preceding GEMM, and no
 * second pool competes with them for the cores. Blocks are 16-float aligned. */
static int split(int64_t n, int threads, int64_t *per) {
    enum { MIN_PER_THREAD = 32768 };
    if (threads > 1 && n / threads < MIN_PER_THREAD) threads = (int)(n / MIN_PER_THREAD);
    if (threads < 1) threads = 1;
    *per = ((n / threads) + 15) / 16 * 16;
    return threads;
}

/* SiLU of n contiguous floats x into y (y == x: in place), over up to `threads` threads. */
void simloop_silu(const float *x, float *y, int64_t n, int threads) {
    int64_t per;
    threads = split(n, threads, &per);
    if (threads == 1) {
        silu_range(x, y, n);
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; ++t) {
        const int64_t lo = per * t, hi = (t == threads - 1) ? n : per * (t + 1);
        if (hi > lo) silu_range(x + lo, y + lo, hi - lo);
    }
}
