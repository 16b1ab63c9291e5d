// Dropout for CPU training (textfit/accel/dropout.py builds and calls it): out = x * scale where an
// element is kept, 0 where dropped, in one pass. Element i is dropped when the 16 bits (i % 4) of
// splitmix64(seed + i / 4) are below `threshold` (p * 65536, rounded): a counter-based draw, so the
// backward pass recomputes the same mask from the seed instead of storing it.
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// eight consecutive counters at once: 32 draws of 16 bits, in element order
static inline __m512i mix64x8(uint64_t first) {
    __m512i z = _mm512_add_epi64(_mm512_set1_epi64((long long)first), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    z = _mm512_add_epi64(z, _mm512_set1_epi64((long long)0x9E3779B97F4A7C15ull));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), _mm512_set1_epi64((long long)0xBF58476D1CE4E5B9ull));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), _mm512_set1_epi64((long long)0x94D049BB133111EBull));
    return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {  // round to nearest even; NaN stays NaN
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// Words [w, wend) one element at a time (the vector loops' remainder); bf16 or fp32 elements.
static void drop_tail(const void *x, void *out, int bf16, int64_t n, uint64_t seed, uint32_t threshold, float scale,
                      int64_t w, int64_t wend) {
    for (; w < wend; w++) {
        const uint64_t r = mix64(seed + (uint64_t)w);
        for (int k = 0; k < 4; k++) {
            const int64_t i = 4 * w + k;
            if (i >= n) break;
            const int drop = ((r >> (16 * k)) & 0xFFFFu) < threshold;
            if (bf16)
                ((uint16_t *)out)[i] = drop ? 0 : f32_to_bf16(bf16_to_f32(((const uint16_t *)x)[i]) * scale);
            else
                ((float *)out)[i] = drop ? 0.0f : ((const float *)x)[i] * scale;
        }
    }
}

// Words [wbegin, wend) of 4 elements each, the last one possibly partial (n elements in all);
// x and out are bf16 (bf16 != 0) or fp32.
void textfit_dropout(const void *x, void *out, int bf16, int64_t n, uint64_t seed, uint32_t threshold, float scale,
                     int64_t wbegin, int64_t wend) {
    const __m512i thr = _mm512_set1_epi16((short)threshold);
    const __m512 sc = _mm512_set1_ps(scale);
    int64_t w = wbegin;
    for (; w + 8 <= wend && 4 * (w + 8) <= n; w += 8) {  // 32 elements
        const __mmask32 keep = _mm512_cmpge_epu16_mask(mix64x8(seed + (uint64_t)w), thr);
        const int64_t i = 4 * w;
        if (bf16) {
            const __m512i v = _mm512_loadu_si512((const uint16_t *)x + i);
            const __m512 lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(v)), 16));
            const __m512 hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(v, 1)), 16));
            const __m512i r = (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(hi, sc), _mm512_mul_ps(lo, sc));
            _mm512_storeu_si512((uint16_t *)out + i, _mm512_maskz_mov_epi16(keep, r));
        } else {
            const float *xf = (const float *)x + i;
            float *of = (float *)out + i;
            _mm512_storeu_ps(of, _mm512_maskz_mul_ps((__mmask16)keep, _mm512_loadu_ps(xf), sc));
            _mm512_storeu_ps(of + 16, _mm512_maskz_mul_ps((__mmask16)(keep >> 16), _mm512_loadu_ps(xf + 16), sc));
        }
    }
    drop_tail(x, out, bf16, n, seed, threshold, scale, w, wend);
}
