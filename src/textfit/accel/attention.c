// Fused attention for bf16 inference on x86-64 CPUs with AMX (textfit/accel/attention.py builds and calls it):
// out = softmax(q k^T * scale + mask) v for head sizes that are multiples of 32, one (batch, head) pair at a time.
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef uint16_t bf16;

typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

int textfit_amx_init(void) {
    // Linux: ask for the AMX tile state (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); 0 on success
    return (int)syscall(SYS_arch_prctl, 0x1023, 18);
}

static inline __m512 exp2_neg(__m512 t) {
    // 2^t for finite t <= 0: 2^round(t) times a cubic for 2^f on [-1/2, 1/2] (relative error 7.5e-5;
    // the probabilities are rounded to bf16, 3.9e-3, for the product with v)
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(5.5171654e-2f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4261115e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9326097e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.9992806e-1f));
    return _mm512_scalef_ps(p, n);
}

static inline __mmask16 lanes_below(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

// Four rows of scores (row stride Lp floats) to unnormalised bf16 probabilities and 1/sum each.
static inline void softmax_rows4(const float *s, bf16 *p, int64_t Lp, int64_t Lv, int64_t Lk, int holes,
                                 const float *madd, float c, float *inv) {
    const __m512 vc = _mm512_set1_ps(c);
    __m512 mx[4], mx2[4], sum[4], off[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) { mx[r] = mx2[r] = _mm512_set1_ps(-__builtin_inff()); sum[r] = _mm512_setzero_ps(); }
    if (!holes) {  // keys [0, Lv) all kept (no mask, or padding at the end): the max of the raw scores
        int64_t j = 0;
        for (; j + 32 <= Lv; j += 32) {
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                mx[r] = _mm512_max_ps(mx[r], _mm512_load_ps(s + r * Lp + j));
                mx2[r] = _mm512_max_ps(mx2[r], _mm512_load_ps(s + r * Lp + j + 16));
            }
        }
        for (; j < Lv; j += 16) {
            const __mmask16 km = lanes_below(Lv - j);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) mx[r] = _mm512_mask_max_ps(mx[r], km, mx[r], _mm512_load_ps(s + r * Lp + j));
        }
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) off[r] = _mm512_set1_ps(-_mm512_reduce_max_ps(_mm512_max_ps(mx[r], mx2[r])) * c);
        for (j = 0; j < Lk; j += 32) {
            const int tail = j + 32 > Lv;
            const __mmask16 k0 = lanes_below(Lv - j), k1 = lanes_below(Lv - j - 16);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                __m512 e0 = exp2_neg(_mm512_fmadd_ps(_mm512_load_ps(s + r * Lp + j), vc, off[r]));
                __m512 e1 = exp2_neg(_mm512_fmadd_ps(_mm512_load_ps(s + r * Lp + j + 16), vc, off[r]));
                if (tail) { e0 = _mm512_maskz_mov_ps(k0, e0); e1 = _mm512_maskz_mov_ps(k1, e1); }
                sum[r] = _mm512_add_ps(sum[r], _mm512_add_ps(e0, e1));
                _mm512_store_si512((void *)(p + r * Lp + j), (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
            }
        }
    } else {  // any mask: scores scaled and masked, max, then 2^(y - max)
        for (int64_t j = 0; j < Lk; j += 16) {
            const __m512 ma = _mm512_load_ps(madd + j);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) mx[r] = _mm512_max_ps(mx[r], _mm512_fmadd_ps(_mm512_load_ps(s + r * Lp + j), vc, ma));
        }
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) off[r] = _mm512_set1_ps(_mm512_reduce_max_ps(mx[r]));
        for (int64_t j = 0; j < Lk; j += 32) {
            const __m512 ma0 = _mm512_load_ps(madd + j), ma1 = _mm512_load_ps(madd + j + 16);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                __m512 e0 = exp2_neg(_mm512_sub_ps(_mm512_fmadd_ps(_mm512_load_ps(s + r * Lp + j), vc, ma0), off[r]));
                __m512 e1 = exp2_neg(_mm512_sub_ps(_mm512_fmadd_ps(_mm512_load_ps(s + r * Lp + j + 16), vc, ma1), off[r]));
                sum[r] = _mm512_add_ps(sum[r], _mm512_add_ps(e0, e1));
                _mm512_store_si512((void *)(p + r * Lp + j), (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) inv[r] = 1.0f / _mm512_reduce_add_ps(sum[r]);
}


// q, k, v: bf16, strides in elements (batch, head, position), the head dimension contiguous; out likewise.
// mask: NULL or fp32 [batch][mask_stride], added to the scaled scores of each key (0, or a large negative
// number to leave the key out). Computes the pairs begin <= batch * H + head < end; returns 0 when done.
int textfit_attention(const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, const float *mask,
                      int64_t B, int64_t H, int64_t L, int64_t D,
                      int64_t qsb, int64_t qsh, int64_t qsl, int64_t ksb, int64_t ksh, int64_t ksl,
                      int64_t vsb, int64_t vsh, int64_t vsl, int64_t osb, int64_t osh, int64_t osl,
                      int64_t mask_stride, float scale, int64_t begin, int64_t end) {
    if (D % 32 != 0 || D > 256 || L < 1 || ksl % 2 || ksl / 2 * 16 > INT32_MAX) return 1;
    const int64_t Lp = (L + 31) / 32 * 32;  // keys padded to the 32 of one product step
    bf16 *kv = aligned_alloc(64, D * Lp * 2);      // k as [D/2][Lp][2]
    bf16 *vv = aligned_alloc(64, Lp * D * 2);      // v as [Lp/2][D][2]
    float *s = aligned_alloc(64, 16 * Lp * 4);     // scores of 16 queries
    bf16 *p = aligned_alloc(64, 16 * Lp * 2);      // their probabilities (unnormalised)
    bf16 *qt = aligned_alloc(64, 16 * D * 2);      // a tail block of queries, zero-padded
    float *o = aligned_alloc(64, 16 * D * 4);      // 16 output rows
    float *madd = aligned_alloc(64, Lp * 4);       // per key: mask * log2(e), padding -inf
    if (!kv || !vv || !s || !p || !qt || !o || !madd) {
        free(kv); free(vv); free(s); free(p); free(qt); free(o); free(madd);
        return 2;
    }
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    _tile_loadconfig(&cfg);
    const float log2e = 1.44269504088896341f, c = scale * log2e;
    int64_t last_b = -1, Lv = L, Lk = Lp, holes = 0;
    // interleave two rows of 32 bf16: r0[0] r1[0] r0[1] r1[1] ... (index 32+i picks r1[i])
    int16_t lo[32], hi[32];
    for (int i = 0; i < 16; i++) {
        lo[2 * i] = i; lo[2 * i + 1] = 32 + i;
        hi[2 * i] = 16 + i; hi[2 * i + 1] = 48 + i;
    }
    const __m512i lo_idx = _mm512_loadu_si512(lo), hi_idx = _mm512_loadu_si512(hi);
    const __m512i kidx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32((int)(ksl / 2)));
    for (int64_t bh = begin; bh < end; bh++) {
        const int64_t b = bh / H, h = bh % H;
        const bf16 *qb = q + b * qsb + h * qsh, *kb = k + b * ksb + h * ksh, *vb = v + b * vsb + h * vsh;
        bf16 *ob = out + b * osb + h * osh;
        if (b != last_b) {
            // per key: the mask in base 2, kept finite (2^(-1e30 - max) is 0, where -inf would give NaN)
            for (int64_t j = 0; j < Lp; j++) {
                float a = j >= L ? -1e30f : (mask ? mask[b * mask_stride + j] * log2e : 0.0f);
                madd[j] = a < -1e30f ? -1e30f : a;
            }
            last_b = b;
            // keys up to the last one kept; "holes": some key before it is masked (else only padding at the end)
            Lv = 0;
            holes = 0;
            for (int64_t j = 0; j < L; j++)
                if (madd[j] > -1e29f) Lv = j + 1;
            for (int64_t j = 0; j < Lv; j++)
                if (madd[j] != 0.0f) holes = 1;
            if (Lv == 0) { Lv = L; holes = 1; }  // every key masked: softmax over all of them, as SDPA
            Lk = (Lv + 31) / 32 * 32;
        }
        // k to [D/2][Lp][2] (16 keys at a time, gathered) and v to [Lp/2][D][2]: AMX's pairs layout, zeros past L
        {
            const int32_t *k32 = (const int32_t *)kb;
            int32_t *kv32 = (int32_t *)kv;
            for (int64_t j0 = 0; j0 < Lk; j0 += 16) {
                const int64_t n = L - j0 >= 16 ? 16 : (L > j0 ? L - j0 : 0);
                const __mmask16 km = (__mmask16)((1u << n) - 1);
                const int32_t *base = k32 + j0 * (ksl / 2);
                for (int64_t d2 = 0; d2 < D / 2; d2++)
                    _mm512_store_si512((void *)(kv32 + d2 * Lp + j0),
                                       _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), km, kidx, base + d2, 4));
            }
        }
        for (int64_t j2 = 0; j2 < Lk / 2; j2++) {
            const int64_t j = 2 * j2;
            bf16 *dst = vv + j2 * D * 2;
            for (int64_t d = 0; d < D; d += 32) {
                __m512i r0 = j < L ? _mm512_loadu_si512((const void *)(vb + j * vsl + d)) : _mm512_setzero_si512();
                __m512i r1 = j + 1 < L ? _mm512_loadu_si512((const void *)(vb + (j + 1) * vsl + d)) : _mm512_setzero_si512();
                _mm512_store_si512((void *)(dst + 2 * d), _mm512_permutex2var_epi16(r0, lo_idx, r1));
                _mm512_store_si512((void *)(dst + 2 * d + 32), _mm512_permutex2var_epi16(r0, hi_idx, r1));
            }
        }
        for (int64_t i0 = 0; i0 < L; i0 += 16) {
            const int64_t rows = L - i0 < 16 ? L - i0 : 16;
            const bf16 *qblk = qb + i0 * qsl;
            int64_t qstride = qsl * 2;
            if (rows < 16) {
                memset(qt, 0, 16 * D * 2);
                for (int64_t r = 0; r < rows; r++) memcpy(qt + r * D, qblk + r * qsl, D * 2);
                qblk = qt;
                qstride = D * 2;
            }
            // scores: s[16][Lp] = q k^T
            if (D <= 64) {  // the query block stays in tiles 1 (and 7); two key tiles per step
                _tile_loadd(1, qblk, qstride);
                if (D == 64) _tile_loadd(7, qblk + 32, qstride);
                for (int64_t jt = 0; jt < Lk / 16; jt += 2) {
                    _tile_zero(0);
                    _tile_zero(5);
                    _tile_loadd(2, kv + jt * 32, Lp * 4);
                    _tile_loadd(4, kv + jt * 32 + 32, Lp * 4);
                    _tile_dpbf16ps(0, 1, 2);
                    _tile_dpbf16ps(5, 1, 4);
                    if (D == 64) {
                        _tile_loadd(2, kv + 16 * Lp * 2 + jt * 32, Lp * 4);
                        _tile_loadd(4, kv + 16 * Lp * 2 + jt * 32 + 32, Lp * 4);
                        _tile_dpbf16ps(0, 7, 2);
                        _tile_dpbf16ps(5, 7, 4);
                    }
                    _tile_stored(0, s + jt * 16, Lp * 4);
                    _tile_stored(5, s + jt * 16 + 16, Lp * 4);
                }
            } else {
                for (int64_t jt = 0; jt < Lk / 16; jt++) {
                    _tile_zero(0);
                    for (int64_t dc = 0; dc < D / 32; dc++) {
                        _tile_loadd(1, qblk + dc * 32, qstride);
                        _tile_loadd(2, kv + (dc * 16) * Lp * 2 + jt * 32, Lp * 4);
                        _tile_dpbf16ps(0, 1, 2);
                    }
                    _tile_stored(0, s + jt * 16, Lp * 4);
                }
            }
            // softmax rows, base 2: p = 2^(s*c + madd - max), unnormalised, bf16; four rows at a time
            // so that their dependency chains (running max, sums, horizontal reductions) overlap
            float inv[16];
            for (int64_t r0 = 0; r0 < 16; r0 += 4)
                softmax_rows4(s + r0 * Lp, p + r0 * Lp, Lp, Lv, Lk, holes, madd, c, inv + r0);
            // out rows = p v / sum
            for (int64_t dp = 0; dp < D / 32; dp++) {
                _tile_zero(5);
                _tile_zero(6);
                for (int64_t kc = 0; kc < Lk / 32; kc++) {
                    _tile_loadd(3, p + kc * 32, Lp * 2);
                    _tile_loadd(4, vv + (kc * 16) * D * 2 + dp * 64, D * 4);
                    _tile_dpbf16ps(5, 3, 4);
                    _tile_loadd(4, vv + (kc * 16) * D * 2 + dp * 64 + 32, D * 4);
                    _tile_dpbf16ps(6, 3, 4);
                }
                _tile_stored(5, o + dp * 32, D * 4);
                _tile_stored(6, o + dp * 32 + 16, D * 4);
            }
            for (int64_t r = 0; r < rows; r++) {
                bf16 *dst = ob + (i0 + r) * osl;
                const __m512 sc = _mm512_set1_ps(inv[r]);
                for (int64_t d = 0; d < D; d += 32) {
                    __m512 a = _mm512_mul_ps(_mm512_load_ps(o + r * D + d), sc);
                    __m512 b2 = _mm512_mul_ps(_mm512_load_ps(o + r * D + d + 16), sc);
                    _mm512_storeu_si512((void *)(dst + d), (__m512i)_mm512_cvtne2ps_pbh(b2, a));
                }
            }
        }
    }
    _tile_release();
    free(kv); free(vv); free(s); free(p); free(qt); free(o); free(madd);
    return 0;
}

// The same computation spread over the OpenMP threads PyTorch itself runs on (its libgomp's
// GOMP_parallel and omp_get_thread_num, passed in), so that no second pool of threads competes
// with PyTorch's spinning workers for the cores.
typedef struct {
    const bf16 *q, *k, *v;
    bf16 *out;
    const float *mask;
    int64_t B, H, L, D, qsb, qsh, qsl, ksb, ksh, ksl, vsb, vsh, vsl, osb, osh, osl, mask_stride;
    float scale;
    int (*thread_num)(void), (*num_threads)(void);
    volatile int failed;
} attention_job;

static void attention_part(void *data) {
    attention_job *j = (attention_job *)data;
    const int64_t t = j->thread_num(), n = j->num_threads(), pairs = j->B * j->H;  // the team OpenMP gave
    const int64_t begin = pairs * t / n, end = pairs * (t + 1) / n;
    if (begin < end && textfit_attention(j->q, j->k, j->v, j->out, j->mask, j->B, j->H, j->L, j->D, j->qsb, j->qsh, j->qsl,
                                         j->ksb, j->ksh, j->ksl, j->vsb, j->vsh, j->vsl, j->osb, j->osh, j->osl,
                                         j->mask_stride, j->scale, begin, end))
        j->failed = 1;
}

int textfit_attention_omp(const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, const float *mask,
                          int64_t B, int64_t H, int64_t L, int64_t D,
                          int64_t qsb, int64_t qsh, int64_t qsl, int64_t ksb, int64_t ksh, int64_t ksl,
                          int64_t vsb, int64_t vsh, int64_t vsl, int64_t osb, int64_t osh, int64_t osl,
                          int64_t mask_stride, float scale, int64_t nthreads,
                          void (*gomp_parallel)(void (*)(void *), void *, unsigned, unsigned), int (*thread_num)(void),
                          int (*num_threads)(void)) {
    attention_job job = {q, k, v, out, mask, B, H, L, D, qsb, qsh, qsl, ksb, ksh, ksl, vsb, vsh, vsl, osb, osh, osl,
                         mask_stride, scale, thread_num, num_threads, 0};
    gomp_parallel(attention_part, &job, (unsigned)nthreads, 0);
    return job.failed;
}
