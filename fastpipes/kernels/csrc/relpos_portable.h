// fastpipes: the portable path of relpos_attention.cpp (scalar FP32, unpacked K / V, base e,
// keys padded to KB, the row max updated every block). Included by relpos_attention.cpp inside
// its anonymous namespace, after Args, row(), bf2f(), f2bf(), QB, KB and NEG; not a header to
// include anywhere else.
#pragma once

// Bias of keys [k0, k0 + KB) for query row i of head (b, n); -1e30 for padding keys.
void bias_block(const Args& a, int64_t b, int64_t n, int64_t i, int64_t k0, float* bias) {
  const int64_t end = std::min(k0 + KB, a.L);
  if (!a.rel_h) {
    for (int64_t j = k0; j < end; ++j) bias[j - k0] = 0.f;
  } else {
    const int64_t bn = b * a.N + n;
    const float* rh = a.rel_h + (bn * a.L + i) * a.H;
    const float* rw = a.rel_w + (bn * a.L + i) * a.W;
    for (int64_t j = k0; j < end;) {
      const int64_t kh = j / a.W, kw = j % a.W;
      const int64_t cnt = std::min(a.W - kw, end - j);
      const float h = rh[kh];
      float* dst = bias + (j - k0);
      for (int64_t t = 0; t < cnt; ++t) dst[t] = h + rw[kw + t];
      j += cnt;
    }
  }
  for (int64_t j = end; j < k0 + KB; ++j) bias[j - k0] = NEG;
}

struct Scratch {  // one per thread
  std::vector<bf16> qt, p;
  std::vector<float> s, o, m, l, bias;
  explicit Scratch(int64_t Cp)
      : qt(QB * Cp), p(QB * KB), s(QB * KB), o(QB * Cp), m(QB), l(QB), bias(KB) {}
};

// Softmax step of one row: s (KB scores, already scaled and biased) -> p (BF16), updates
// the running max m and sum l; returns the factor the row's accumulator is rescaled by.
float softmax_row_portable(float* s, bf16* p, float& m, float& l) {
  float mx = m;
  for (int j = 0; j < KB; ++j) mx = std::max(mx, s[j]);
  const float alpha = std::exp(m - mx);
  float sum = 0.f;
  for (int j = 0; j < KB; ++j) {
    const float e = std::exp(s[j] - mx);
    sum += e;
    p[j] = f2bf(e);
  }
  l = l * alpha + sum;
  m = mx;
  return alpha;
}

// ---- portable path: scalar, unpacked K / V (for CPUs without AVX512-BF16 and as a check)
void tile_portable(const Args& a, Scratch& w, int64_t b, int64_t n, int64_t q0) {
  const int64_t rows = std::min<int64_t>(QB, a.L - q0), C = a.C;
  std::fill(w.o.begin(), w.o.end(), 0.f);
  std::fill(w.m.begin(), w.m.end(), NEG);
  std::fill(w.l.begin(), w.l.end(), 0.f);
  for (int64_t k0 = 0; k0 < a.Lp; k0 += KB) {
    const int64_t kend = std::min(k0 + KB, a.L);
    for (int64_t i = 0; i < rows; ++i) {
      const bf16* qi = row(a.q, a.qs, b, n, q0 + i);
      float* s = w.s.data() + i * KB;
      bias_block(a, b, n, q0 + i, k0, w.bias.data());
      for (int64_t j = 0; j < KB; ++j) {
        float dot = 0.f;
        if (k0 + j < kend) {
          const bf16* kj = row(a.k, a.ks, b, n, k0 + j);
          for (int64_t c = 0; c < C; ++c) dot += bf2f(qi[c]) * bf2f(kj[c]);
        }
        s[j] = dot * a.scale + w.bias[j];
      }
      bf16* p = w.p.data() + i * KB;
      const float alpha = softmax_row_portable(s, p, w.m[i], w.l[i]);
      float* o = w.o.data() + i * a.Cp;
      for (int64_t c = 0; c < C; ++c) o[c] *= alpha;
      for (int64_t j = 0; j < kend - k0; ++j) {
        const float pj = bf2f(p[j]);
        const bf16* vj = row(a.v, a.vs, b, n, k0 + j);
        for (int64_t c = 0; c < C; ++c) o[c] += pj * bf2f(vj[c]);
      }
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    bf16* dst = a.out + b * a.os[0] + n * a.os[1] + (q0 + i) * a.os[2];
    const float inv = 1.f / w.l[i];
    for (int64_t c = 0; c < C; ++c) dst[c] = f2bf(w.o[i * a.Cp + c] * inv);
  }
}
