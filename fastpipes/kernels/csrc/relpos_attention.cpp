// fastpipes: flash attention for BF16 on CPUs with AVX512-BF16, with SAM's decomposed
// relative-position bias added inside the kernel (no mask tensor).
//
//   out[b, i, n, :] = sum_j softmax_j(scale * q_i . k_j + rel_h[b, n, i, j / W]
//                                      + rel_w[b, n, i, j % W]) v_j
//
// q, k, v: [B, N, L, C] BF16 with any batch / head / row strides (C contiguous); rel_h
// [B, N, L, H] and rel_w [B, N, L, W] FP32 contiguous (or null: no bias); out [B, N, L, C]
// BF16 with any batch / head / row strides. L = H * W.
//
// Per head, K is packed as [Lp/16][C/2][16][2] and V as [Lp/2][C][2] (the pair layout
// vdpbf16ps reads; Lp: L rounded up to 16, padding keys have zero K / V and a -1e30 bias).
// Per tile of QB query rows, blocks of up to KB keys go through S = Q K^T (vdpbf16ps, four
// rows at a time), the softmax step in registers (base 2, FP32; the bias is formed per 16
// keys from the tile's rows of rel_h / rel_w, by permutes when both fit a register), P in
// BF16, O += P V (vdpbf16ps). Threads: OpenMP's pool (std::thread without OpenMP), work
// items taken from an atomic counter.
//
// The portable path (scalar FP32, base e, keys padded to KB, the row max updated every
// block) is the reference the fast path is tested against; the two differ by BF16 roundings.
//
// Built by fastpipes/kernels/native.py with -march=native; without AVX512-BF16 only the
// portable path exists.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <thread>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>
#define FP_FAST 1
#else
#define FP_FAST 0
#endif

namespace {

typedef uint16_t bf16;
constexpr int QB = 32;  // query rows per tile
constexpr int KB = 64;  // keys per block
constexpr float NEG = -1e30f;
// tile x key-block steps (32 x 64 scores each) a thread must have before another is started:
// about 0.1 ms of work at C = 64; below it, starting a thread costs more than it saves
constexpr int64_t MIN_STEPS_PER_THREAD = 64;

inline float bf2f(bf16 x) {
  uint32_t u = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline bf16 f2bf(float f) {  // round to nearest even, as vcvtneps2bf16
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<bf16>(u >> 16);
}

struct Args {
  const bf16 *q, *k, *v;
  const float *rel_h, *rel_w;
  bf16* out;
  int64_t B, N, L, C, H, W;
  int64_t qs[3], ks[3], vs[3], os[3];  // strides in elements: batch, head, row
  float scale;
  int64_t Cp, Lp;  // C rounded up to 16, L rounded up to KB
};

inline const bf16* row(const bf16* base, const int64_t* s, int64_t b, int64_t n, int64_t i) {
  return base + b * s[0] + n * s[1] + i * s[2];
}

// The portable path (scalar FP32, unpacked K / V): for CPUs without AVX512-BF16 and as the
// reference the fast path is tested against.
#include "relpos_portable.h"

#if FP_FAST
// ---- AVX512-BF16 path. The softmax runs in base 2: scores and bias are scaled by log2(e)
// once, so each score costs one FMA before exp2. A row's reference max is only moved when
// a score passes it by more than RESCALE_AT (then O and the row sum are rescaled): P may
// reach 2^RESCALE_AT, which BF16 and the FP32 sums hold exactly as well as 1.
constexpr float LOG2E = 1.44269504f;
constexpr float RESCALE_AT = 8.f;

inline __m512 exp2_512(__m512 x) {  // 2^x, |rel. error| < 5e-5 (far below BF16's 4e-3); 0 for x < -150
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_sub_ps(x, n);  // [-0.5, 0.5]
  __m512 p = _mm512_set1_ps(9.6181291e-3f);  // Taylor series of 2^r to r^4
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.5504109e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4022651e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.9314718e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

inline __m512bh as_bh(__m512i x) { return (__m512bh)x; }

inline __m512bh pair_at(const bf16* p) {  // (p[0], p[1]) in every 32-bit lane
  int32_t v;
  std::memcpy(&v, p, 4);
  return as_bh(_mm512_set1_epi32(v));
}

// K [L, C] of one head -> kp [Lp/16][Cp/2][16][2]; V -> vp [Lp/2][Cp][2]; zero padded.
void pack_head(const Args& a, int64_t b, int64_t n, bf16* kp, bf16* vp) {
  std::memset(kp, 0, sizeof(bf16) * a.Lp * a.Cp);
  std::memset(vp, 0, sizeof(bf16) * a.Lp * a.Cp);
  const int64_t half = a.Cp / 2;
  for (int64_t j = 0; j < a.L; ++j) {
    const bf16* kj = row(a.k, a.ks, b, n, j);
    const bf16* vj = row(a.v, a.vs, b, n, j);
    bf16* kdst = kp + (j / 16) * half * 32 + (j % 16) * 2;
    bf16* vdst = vp + (j / 2) * a.Cp * 2 + (j % 2);
    for (int64_t c = 0; c < a.C; ++c) {
      kdst[(c / 2) * 32 + (c % 2)] = kj[c];
      vdst[c * 2] = vj[c];
    }
  }
}

// How the bias of 16 keys is formed, chosen once per call from the grid.
enum class BiasMode { none, aligned, small, general };

struct Grid {  // per call: the bias mode and, for `small`, each key vector's table indices
  BiasMode mode;
  std::vector<int32_t> ih, iw;  // [Lp]: key j's row j / W and column j % W (0 for padding)
  std::vector<__mmask16> valid;  // [Lp / 16]: which of the 16 keys exist
  Grid(const Args& a) : ih(a.Lp, 0), iw(a.Lp, 0), valid(a.Lp / 16, 0) {
    mode = !a.rel_h ? BiasMode::none
           : a.W % 16 == 0 ? BiasMode::aligned
           : (a.H <= 16 && a.W <= 16) ? BiasMode::small : BiasMode::general;
    for (int64_t j = 0; j < a.L; ++j) {
      ih[j] = static_cast<int32_t>(j / a.W);
      iw[j] = static_cast<int32_t>(j % a.W);
      valid[j / 16] |= static_cast<__mmask16>(1u << (j % 16));
    }
  }
};

struct FastScratch {  // one per thread
  std::vector<bf16> qt, p;
  std::vector<float> o, m, lsum, rh, rw, bias;
  FastScratch(const Args& a)
      : qt(QB * a.Cp), p(QB * KB), o(QB * a.Cp), m(QB), lsum(QB * 16),
        rh(QB * a.H), rw(QB * a.W), bias(KB) {}
};

// The log2-scaled bias of the NT key vectors from k0 for row i of the tile (rh, rw: its rows
// of the scaled tables), with -1e30 on padding keys.
template <int NT>
inline void bias_vectors(const Args& a, const Grid& g, const float* rh, const float* rw,
                         float* buf, int64_t k0, __m512* out) {
  const int64_t v0 = k0 / 16;
  const __m512 neg = _mm512_set1_ps(NEG);
  switch (g.mode) {
    case BiasMode::none:
      for (int t = 0; t < NT; ++t) out[t] = _mm512_mask_mov_ps(neg, g.valid[v0 + t], _mm512_setzero_ps());
      return;
    case BiasMode::aligned:  // 16 keys share one grid row: L % 16 == 0, no padding
      for (int t = 0; t < NT; ++t) {
        const int64_t j = k0 + 16 * t;
        out[t] = _mm512_add_ps(_mm512_set1_ps(rh[g.ih[j]]), _mm512_loadu_ps(rw + g.iw[j]));
      }
      return;
    case BiasMode::small: {  // both tables fit one register: permute from them
      const __m512 th = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << a.H) - 1), rh);
      const __m512 tw = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << a.W) - 1), rw);
      for (int t = 0; t < NT; ++t) {
        const int64_t j = k0 + 16 * t;
        const __m512 h = _mm512_permutexvar_ps(_mm512_loadu_si512(g.ih.data() + j), th);
        const __m512 w = _mm512_permutexvar_ps(_mm512_loadu_si512(g.iw.data() + j), tw);
        out[t] = _mm512_mask_add_ps(neg, g.valid[v0 + t], h, w);
      }
      return;
    }
    case BiasMode::general:
      for (int t = 0; t < NT * 16; ++t) {
        const int64_t j = k0 + t;
        buf[t] = j < a.L ? rh[g.ih[j]] + rw[g.iw[j]] : NEG;
      }
      for (int t = 0; t < NT; ++t) out[t] = _mm512_loadu_ps(buf + 16 * t);
      return;
  }
}

// One key block (NT vectors of 16 keys from k0) for the tile's rows: S = Q K^T four rows at
// a time, then each row's softmax step in registers, writing P (BF16) and rescaling O and
// the row sums when the row's reference max moves.
template <int NT>
void scores_block(const Args& a, const Grid& g, FastScratch& w, int64_t rows, int64_t k0,
                  const bf16* kp) {
  const int64_t half = a.Cp / 2, Cp = a.Cp;
  const __m512 c1 = _mm512_set1_ps(a.scale * LOG2E);
  const bf16* kb = kp + (k0 / 16) * half * 32;
  for (int64_t r0 = 0; r0 < rows; r0 += 4) {
    __m512 acc[4][NT];
    for (int r = 0; r < 4; ++r)
      for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
    const bf16* qt = w.qt.data() + r0 * Cp;
    for (int64_t cp = 0; cp < half; ++cp) {
      __m512bh kv[NT];
      for (int t = 0; t < NT; ++t) kv[t] = as_bh(_mm512_loadu_si512(kb + (t * half + cp) * 32));
      for (int r = 0; r < 4; ++r) {
        const __m512bh qv = pair_at(qt + r * Cp + 2 * cp);
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], qv, kv[t]);
      }
    }
    for (int r = 0; r < 4 && r0 + r < rows; ++r) {
      const int64_t i = r0 + r;
      __m512 x[NT];
      bias_vectors<NT>(a, g, w.rh.data() + i * a.H, w.rw.data() + i * a.W, w.bias.data(), k0, x);
      __m512 mx = _mm512_set1_ps(NEG);
      for (int t = 0; t < NT; ++t) {
        x[t] = _mm512_fmadd_ps(acc[r][t], c1, x[t]);
        mx = _mm512_max_ps(mx, x[t]);
      }
      float& m = w.m[i];
      float* ls = w.lsum.data() + i * 16;
      __m512 sum = _mm512_loadu_ps(ls);
      if (_mm512_cmp_ps_mask(mx, _mm512_set1_ps(m + RESCALE_AT), _CMP_GT_OQ)) {
        const float m_new = _mm512_reduce_max_ps(mx);
        const __m512 al = _mm512_set1_ps(std::exp2(m - m_new));
        float* o = w.o.data() + i * Cp;
        for (int64_t c = 0; c < Cp; c += 16)
          _mm512_storeu_ps(o + c, _mm512_mul_ps(_mm512_loadu_ps(o + c), al));
        sum = _mm512_mul_ps(sum, al);
        m = m_new;
      }
      const __m512 mv = _mm512_set1_ps(m);
      bf16* p = w.p.data() + i * KB;
      for (int t = 0; t < NT; ++t) {
        const __m512 e = exp2_512(_mm512_sub_ps(x[t], mv));
        sum = _mm512_add_ps(sum, e);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + t * 16),
                            (__m256i)_mm512_cvtneps_pbh(e));
      }
      _mm512_storeu_ps(ls, sum);
    }
  }
}

// O [R rows][NC * 16] += P [R rows][2 * pairs keys] times V's keys from k0.
template <int R, int NC>
inline void pv_rows(int64_t Cp, int64_t pairs, const bf16* p, const bf16* vp, int64_t k0,
                    float* o) {
  __m512 acc[R][NC];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < NC; ++t) acc[r][t] = _mm512_loadu_ps(o + r * Cp + t * 16);
  const bf16* vb = vp + (k0 / 2) * Cp * 2;
  for (int64_t jp = 0; jp < pairs; ++jp) {
    __m512bh vv[NC];
    for (int t = 0; t < NC; ++t) vv[t] = as_bh(_mm512_loadu_si512(vb + (jp * Cp + t * 16) * 2));
    for (int r = 0; r < R; ++r) {
      const __m512bh pv = pair_at(p + r * KB + 2 * jp);
      for (int t = 0; t < NC; ++t) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], pv, vv[t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < NC; ++t) _mm512_storeu_ps(o + r * Cp + t * 16, acc[r][t]);
}

template <int NC>
void pv_tile(int64_t Cp, int64_t rows, int64_t pairs, const bf16* p, const bf16* vp,
             int64_t k0, float* o) {
  constexpr int R = NC <= 5 ? 4 : 2;  // rows above `rows` hold P = 0 and are not written out
  for (int64_t r0 = 0; r0 < rows; r0 += R)
    pv_rows<R, NC>(Cp, pairs, p + r0 * KB, vp, k0, o + r0 * Cp);
}

typedef void (*PvFn)(int64_t, int64_t, int64_t, const bf16*, const bf16*, int64_t, float*);
constexpr PvFn PV[8] = {pv_tile<1>, pv_tile<2>, pv_tile<3>, pv_tile<4>,
                        pv_tile<5>, pv_tile<6>, pv_tile<7>, pv_tile<8>};
typedef void (*ScoresFn)(const Args&, const Grid&, FastScratch&, int64_t, int64_t, const bf16*);
constexpr ScoresFn SCORES[KB / 16] = {scores_block<1>, scores_block<2>, scores_block<3>,
                                      scores_block<4>};

void tile_fast(const Args& a, const Grid& g, FastScratch& w, int64_t b, int64_t n, int64_t q0,
               const bf16* kp, const bf16* vp) {
  const int64_t rows = std::min<int64_t>(QB, a.L - q0), Cp = a.Cp;
  std::fill(w.qt.begin(), w.qt.end(), 0);
  for (int64_t i = 0; i < rows; ++i)
    std::memcpy(w.qt.data() + i * Cp, row(a.q, a.qs, b, n, q0 + i), sizeof(bf16) * a.C);
  if (a.rel_h) {  // this tile's rows of the bias tables, scaled to base 2
    const int64_t bn = b * a.N + n;
    const float* rh = a.rel_h + (bn * a.L + q0) * a.H;
    const float* rw = a.rel_w + (bn * a.L + q0) * a.W;
    for (int64_t t = 0; t < rows * a.H; ++t) w.rh[t] = rh[t] * LOG2E;
    for (int64_t t = 0; t < rows * a.W; ++t) w.rw[t] = rw[t] * LOG2E;
  }
  std::fill(w.o.begin(), w.o.end(), 0.f);
  std::fill(w.m.begin(), w.m.end(), NEG);
  std::fill(w.lsum.begin(), w.lsum.end(), 0.f);
  std::fill(w.p.begin(), w.p.end(), 0);
  const PvFn pv = PV[Cp / 16 - 1];
  for (int64_t k0 = 0; k0 < a.Lp; k0 += KB) {
    const int64_t nt = std::min<int64_t>(KB, a.Lp - k0) / 16;  // Lp is a multiple of 16
    SCORES[nt - 1](a, g, w, rows, k0, kp);
    pv(Cp, rows, nt * 8, w.p.data(), vp, k0, w.o.data());
  }
  for (int64_t i = 0; i < rows; ++i) {
    bf16* dst = a.out + b * a.os[0] + n * a.os[1] + (q0 + i) * a.os[2];
    const float inv = 1.f / _mm512_reduce_add_ps(_mm512_loadu_ps(w.lsum.data() + i * 16));
    for (int64_t c = 0; c < a.C; ++c) dst[c] = f2bf(w.o[i * Cp + c] * inv);
  }
}
#endif  // FP_FAST

// body(thread, item) for items [0, items) on up to nthreads threads. With OpenMP these are
// the threads of the process's OpenMP pool: libgomp.so.1 is the one PyTorch loaded, so no
// thread is started per call and none of PyTorch's spins beside ours.
template <typename F>
void parallel(int64_t items, int nthreads, F&& body) {
  std::atomic<int64_t> next{0};
  auto work = [&](int tid) {
    for (int64_t it = next.fetch_add(1); it < items; it = next.fetch_add(1)) body(tid, it);
  };
  const int n = static_cast<int>(std::min<int64_t>(nthreads, items));
#ifdef _OPENMP
  if (n > 1) {
#pragma omp parallel num_threads(n)
    work(omp_get_thread_num());
    return;
  }
#else
  std::vector<std::thread> pool;
  for (int t = 1; t < n; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();
  return;
#endif
  work(0);
}

}  // namespace

extern "C" {

// 1 if this build has the AVX512-BF16 path.
int fp_relpos_fast_available() { return FP_FAST; }

// Returns 0 on success, 1 if C > 128 (the fast path's limit), 2 if `portable` is 0 and
// this build has no fast path.
int fp_relpos_attention(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                        const float* rel_h, const float* rel_w, uint16_t* out,
                        const int64_t* shape,    // B, N, L, C, H, W
                        const int64_t* strides,  // q, k, v, out: batch, head, row (12)
                        float scale, int nthreads, int portable) {
  Args a{q, k, v, rel_h, rel_w, out, shape[0], shape[1], shape[2], shape[3], shape[4], shape[5],
         {}, {}, {}, {}, scale, 0, 0};
  for (int i = 0; i < 3; ++i) {
    a.qs[i] = strides[i];
    a.ks[i] = strides[3 + i];
    a.vs[i] = strides[6 + i];
    a.os[i] = strides[9 + i];
  }
  a.Cp = (a.C + 15) / 16 * 16;
  a.Lp = (a.L + KB - 1) / KB * KB;
  if (a.Cp > 128) return 1;
  const int64_t tiles = (a.L + QB - 1) / QB, heads = a.B * a.N;
  const int64_t steps = heads * tiles * (a.Lp / KB);
  nthreads = static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>(nthreads, steps / MIN_STEPS_PER_THREAD)));
  if (portable) {
    std::vector<Scratch> scratch;
    for (int t = 0; t < nthreads; ++t) scratch.emplace_back(a.Cp);
    parallel(heads * tiles, nthreads, [&](int tid, int64_t it) {
      const int64_t bn = it / tiles;
      tile_portable(a, scratch[tid], bn / a.N, bn % a.N, (it % tiles) * QB);
    });
    return 0;
  }
#if FP_FAST
  a.Lp = (a.L + 15) / 16 * 16;  // the fast path pads keys to whole vectors only
  const int64_t per_head = a.Lp * a.Cp;
  bf16* kp = static_cast<bf16*>(std::aligned_alloc(64, sizeof(bf16) * per_head * heads * 2));
  bf16* vp = kp + per_head * heads;
  parallel(heads, nthreads, [&](int, int64_t bn) {
    pack_head(a, bn / a.N, bn % a.N, kp + bn * per_head, vp + bn * per_head);
  });
  const Grid grid(a);
  std::vector<FastScratch> scratch;
  for (int t = 0; t < nthreads; ++t) scratch.emplace_back(a);
  parallel(heads * tiles, nthreads, [&](int tid, int64_t it) {
    const int64_t bn = it / tiles;
    tile_fast(a, grid, scratch[tid], bn / a.N, bn % a.N, (it % tiles) * QB,
              kp + bn * per_head, vp + bn * per_head);
  });
  std::free(kp);
  return 0;
#else
  return 2;
#endif
}

}  // extern "C"
