// Fused CPU selective scan (Mamba-1 S6 core), forward and backward.
//
// Compiled at first use by clplat/kernels/selective_cpu.py (plain g++, no PyTorch headers, so the
// build takes about two seconds) and called through ctypes on buffers whose rows may be strided:
//
//   u, dt, z : (Bsz, L, Din)     At : (N, Din)  (A transposed)     Bm, Cm : (Bsz, L, N)    D : (Din)
//   h_t[d, n] = exp(dt_t[d] A[d, n]) h_{t-1}[d, n] + dt_t[d] u_t[d] Bm_t[n]
//   y_t[d]    = (sum_n Cm_t[n] h_t[d, n] + D[d] u_t[d]) * silu(z_t[d])       (D, z optional)
//
// The same file holds Mamba's causal depthwise convolution + SiLU (forward and backward) in the
// same (Bsz, L, Din) layout, which spares the transposes of nn.Conv1d.
//
// One work item is a block of W consecutive channels of one sequence. Its state, W x N numbers
// laid out [n][lane], stays in L1 for the whole sequence; the lanes are the SIMD dimension (the
// inner loops over W compile to vector code), so the state is never written to memory except at
// checkpoints: every K steps (the state entering each chunk, for the backward pass) and at the end.
//
// Backward, per block, chunks from last to first: recompute the chunk's gates and states from
// its checkpoint into a K x N x W scratch buffer, then walk it in reverse with the adjoint
//   g_t = C_t dy_t + a_{t+1} g_{t+1}   (g_{L-1} also gets dlast),
// forming dB_t[n] = sum_d g dt u, dC_t[n] = sum_d dy h, d(dt u) = sum_n g B and
// d(dt A) = g h_{t-1} a (which feeds dA and ddt). dB/dC are accumulated over channel blocks of
// one sequence (one thread owns a sequence); dA and dD are written per sequence and summed by the
// caller. The output gate's backward needs the core output, which the recomputation yields.
// Lanes past Din are padded with dt = 0 (gate 1, input 0) and dy = 0, so they stay exactly zero.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace {

// Denormal inputs and results flushed to zero (MXCSR's FTZ and DAZ bits) while a kernel runs on a
// thread, restored on return. A loss that reads only the last step (sequence classification) gives
// the backward an adjoint that decays geometrically through the denormal range, where x86
// arithmetic slows down by 10-100x; what is flushed is below 1.2e-38 (float32) and 2.2e-308
// (float64), far under any gradient that matters. Without x86, or compiled with
// -DCLPLAT_KEEP_DENORMALS (benchmarks/selective_scan_builds.py compares the two), it does nothing.
struct FlushDenormals {
#if (defined(__x86_64__) || defined(__i386__)) && !defined(CLPLAT_KEEP_DENORMALS)
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved); }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;
  unsigned int saved;
#endif
};

constexpr int W = 16;  // channels per block = SIMD lanes (one AVX-512 or two AVX2 fp32 vectors)

// 16-lane vectors (GCC vector extensions: the compiler maps them to whatever SIMD the target has).
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(W * sizeof(float)), aligned(4)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(W * sizeof(double)), aligned(8)));
};
template <typename T>
using V = typename VecOf<T>::type;
typedef int32_t VI __attribute__((vector_size(W * sizeof(int32_t))));

template <typename T>
inline V<T> splat(T x) {
  return V<T>{} + x;
}

// c[0] + x (c[1] + x (c[2] + ...)) by Horner's rule; the coefficients are compile-time constants.
template <size_t K>
inline V<float> horner(V<float> x, const float (&c)[K]) {
  V<float> p = splat(c[K - 1]);
  for (int i = static_cast<int>(K) - 2; i >= 0; --i) p = p * x + c[i];
  return p;
}

// exp for 16 floats without libm: round-to-nearest k = x / ln2 (the 1.5 * 2^23 trick, whose bits
// also give k as an integer), Cody-Waite reduction r = x - k ln2, degree-6 polynomial (Cephes
// coefficients, ~1 ulp), scale by 2^k through the exponent bits. Inputs are clamped to the normal
// range (exp(-87.3) ~ 1.2e-38).
inline V<float> vexp(V<float> x) {
  const V<float> lo = splat(-87.3f), hi = splat(88.7f), magic = splat(12582912.0f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const V<float> t = x * 1.44269504088896341f + magic;
  const V<float> k = t - magic;
  const VI ki = (VI)t - (VI)magic;
  const V<float> r = x - k * 0.693359375f + k * 2.12194440e-4f;
  static constexpr float c[] = {5.0000001201e-1f, 1.6666665459e-1f, 4.1665795894e-2f, 8.3334519073e-3f,
                                1.3981999507e-3f, 1.9875691500e-4f};
  const V<float> p = horner(r, c) * r * r + r + 1.0f;
  const VI bits = (ki + 127) << 23;
  return p * (V<float>)bits;  // vector casts reinterpret the bits
}

inline V<double> vexp(V<double> x) {  // float64 is the checking path: libm, lane by lane
  for (int i = 0; i < W; ++i) x[i] = std::exp(x[i]);
  return x;
}

// 2^x for 16 floats: k = the nearest integer (the same 1.5 * 2^23 trick), f = x - k in [-1/2, 1/2]
// exactly, a degree-6 near-minimax polynomial for 2^f (relative error 2e-9 before float rounding,
// 1e-7 after), scaled by 2^k through the exponent bits; inputs clamped to the normal range. Cheaper
// than vexp (no Cody-Waite reduction, no scaling by 1/ln2): the state gates use it with A
// pre-scaled by log2(e) once per block (see Gate).
inline V<float> vexp2(V<float> x) {
  const V<float> lo = splat(-126.0f), hi = splat(127.0f), magic = splat(12582912.0f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const V<float> t = x + magic;
  const V<float> f = x - (t - magic);
  const VI ki = (VI)t - (VI)magic;
  static constexpr float c[] = {1.0f, 6.931472e-1f, 2.4022648e-1f, 5.5503324e-2f, 9.618437e-3f, 1.3398875e-3f,
                                1.5353362e-4f};
  return horner(f, c) * (V<float>)((ki + 127) << 23);
}

// The state gate exp(dt A) as Gate<T>::exp(dt * (A * Gate<T>::scale)): float32 takes vexp2 on A
// scaled by log2 e once per block (about 14 vector operations per gate instead of vexp's 19; the
// forward is mostly gates, and took 0.84x the time); float64, the checking path, keeps libm's exp.
template <typename T>
struct Gate;
template <>
struct Gate<float> {
  static constexpr float scale = 1.44269504088896341f;
  static V<float> exp(V<float> x) { return vexp2(x); }
};
template <>
struct Gate<double> {
  static constexpr double scale = 1.0;
  static V<double> exp(V<double> x) { return vexp(x); }
};

// Sum of the 16 lanes as a tree of half-width vector adds (4 adds instead of 15 scalar ones).
template <typename T>
inline T hsum(V<T> v) {
  typedef T V8 __attribute__((vector_size(8 * sizeof(T))));
  typedef T V4 __attribute__((vector_size(4 * sizeof(T))));
  typedef T V2 __attribute__((vector_size(2 * sizeof(T))));
  const V8 s8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const V4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
  const V2 s2 = __builtin_shufflevector(s4, s4, 0, 1) + __builtin_shufflevector(s4, s4, 2, 3);
  return s2[0] + s2[1];
}

// Lane sums of 16 vectors at once: out[j] = sum of v[j]'s lanes. Each level adds the first and second
// halves of every segment of two vectors (15 vector adds for all 16 sums instead of 16 hsums).
template <typename T>
inline V<T> reduce16(const V<T>* v) {
  V<T> r[8], s[4], q[2];
  for (int i = 0; i < 8; ++i)
    r[i] = __builtin_shufflevector(v[2 * i], v[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(v[2 * i], v[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30,
                                   31);
  for (int i = 0; i < 4; ++i)
    s[i] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
           __builtin_shufflevector(r[2 * i], r[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  for (int i = 0; i < 2; ++i)
    q[i] = __builtin_shufflevector(s[2 * i], s[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
           __builtin_shufflevector(s[2 * i], s[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  return __builtin_shufflevector(q[0], q[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(q[0], q[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

// Adds the lane sums of v[0..N) to out[0..N).
template <typename T>
inline void add_lane_sums(const V<T>* v, int64_t N, T* out) {
  int64_t n = 0;
  for (; n + W <= N; n += W) {
    V<T> acc;
    std::memcpy(&acc, out + n, sizeof acc);
    acc += reduce16<T>(v + n);
    std::memcpy(out + n, &acc, sizeof acc);
  }
  for (; n < N; ++n) out[n] += hsum<T>(v[n]);
}

// Owned, 64-byte aligned array of n vectors, zero-initialised.
template <typename T>
struct VecBuf {
  explicit VecBuf(int64_t n) : ptr(static_cast<V<T>*>(std::aligned_alloc(64, std::max<int64_t>(1, n) * sizeof(V<T>)))) {
    if (!ptr) throw std::bad_alloc();
    std::memset(static_cast<void*>(ptr), 0, std::max<int64_t>(1, n) * sizeof(V<T>));
  }
  ~VecBuf() { std::free(ptr); }
  VecBuf(const VecBuf&) = delete;
  VecBuf& operator=(const VecBuf&) = delete;
  V<T>* data() { return ptr; }
  V<T>& operator[](int64_t i) { return ptr[i]; }
  V<T>* ptr;
};

// log(x) for 16 positive normal floats: x = m 2^k with m in [sqrt(1/2), sqrt(2)), Cephes' logf
// polynomial in m - 1 (~1 ulp).
inline V<float> vlog(V<float> x) {
  const VI bits = (VI)x;
  VI k = ((bits >> 23) & 0xff) - 126;
  V<float> m = (V<float>)((bits & 0x007fffff) | 0x3f000000);  // [0.5, 1)
  const VI small = m < 0.707106781186547524f;
  k += small;  // the mask is -1 where true
  m = small ? m + m - 1.0f : m - 1.0f;
  const V<float> kf = __builtin_convertvector(k, V<float>);
  const V<float> z = m * m;
  static constexpr float c[] = {3.3333331174e-1f, -2.4999993993e-1f, 2.0000714765e-1f,
                                -1.6668057665e-1f, 1.4249322787e-1f,  -1.2420140846e-1f,
                                1.1676998740e-1f,  -1.1514610310e-1f, 7.0376836292e-2f};
  V<float> y = horner(m, c) * m * z;
  y += kf * -2.12194440e-4f;
  y += z * -0.5f;
  return m + y + kf * 0.693359375f;
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)) and its derivative sigmoid(x), from one exp and one
// division. log1p(e) = log(u) - (u - 1 - e) / u with u = fl(1 + e): the correction restores the
// rounding of 1 + e, so tiny e keep full relative precision.
inline void vsoftplus(V<float> x, V<float>& sp, V<float>& sig) {
  const V<float> zero = V<float>{};
  const V<float> ax = x < zero ? -x : x;
  const V<float> e = vexp(-ax);
  const V<float> u = 1.0f + e;
  const V<float> r = 1.0f / u;
  const V<float> lp = vlog(u) - ((u - 1.0f) - e) * r;
  sp = (x > zero ? x : zero) + lp;
  sig = x >= zero ? r : e * r;
}

inline void vsoftplus(V<double> x, V<double>& sp, V<double>& sig) {
  for (int i = 0; i < W; ++i) {
    const double e = std::exp(-std::fabs(x[i]));
    sp[i] = std::max(x[i], 0.0) + std::log1p(e);
    sig[i] = x[i] >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
  }
}

inline V<float> vsigmoid(V<float> x) { return 1.0f / (1.0f + vexp(-x)); }
inline V<double> vsigmoid(V<double> x) { return 1.0 / (1.0 + vexp(-x)); }

// A (Bsz, L, Din)-like operand whose rows (b, t) are `stride` elements apart (the last dimension
// contiguous): lets the kernel read slices such as the z half of a projection without copies.
template <typename T>
struct Rows {
  const T* ptr;
  int64_t stride;
};

template <typename T>
struct Args {
  Rows<T> u, dt, Bm, Cm, z;
  const T* At;  // (N, Din)
  const T* Dv;     // (Din,) or null
  const T* dbias;  // (Din,) or null: dt <- dt + dbias
  bool softplus;   // dt <- softplus(dt) (after the bias)
  const T* WdtT;   // (R, Din) or null: dt rows hold R numbers and dt <- dt @ WdtT first (low rank)
  int64_t R;
  int64_t Bsz, L, Din, N, K;
  int64_t sdz;  // row stride of the dz output (Din when contiguous)
  const T* row(const Rows<T>& r, int64_t b, int64_t t) const { return r.ptr + (b * L + t) * r.stride; }
};

// W lanes starting at channel d0 of a row, zero-padded past Din.
template <typename T>
inline V<T> load_row(const T* src, int64_t w) {
  V<T> out;
  if (w == W) {
    std::memcpy(&out, src, sizeof out);
  } else {
    out = V<T>{};
    for (int64_t i = 0; i < w; ++i) out[i] = src[i];
  }
  return out;
}

template <typename T>
inline void store_row(T* dst, int64_t w, V<T> in) {
  if (w == W) {
    std::memcpy(dst, &in, sizeof in);
  } else {
    for (int64_t i = 0; i < w; ++i) dst[i] = in[i];
  }
}

// The block's A (lanes = channels) and its copy scaled for Gate<T>::exp.
template <typename T>
void load_A(const Args<T>& p, int64_t d0, int64_t w, V<T>* Ablk, V<T>* Ascaled) {
  for (int64_t n = 0; n < p.N; ++n) {
    Ablk[n] = V<T>{};
    for (int64_t i = 0; i < w; ++i) Ablk[n][i] = p.At[n * p.Din + d0 + i];
    Ascaled[n] = Ablk[n] * Gate<T>::scale;
  }
}

// State block [n] (lanes = channels) <-> (.., N, Din) row-major checkpoints.
template <typename T>
void save_ckpt(const Args<T>& p, T* ckpt, int64_t b, int64_t c, int64_t d0, int64_t w, const V<T>* h) {
  const int64_t nchunks = (p.L + p.K - 1) / p.K;
  T* dst = ckpt + ((b * nchunks + c) * p.N) * p.Din + d0;
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t i = 0; i < w; ++i) dst[n * p.Din + i] = h[n][i];
}

template <typename T>
void load_ckpt(const Args<T>& p, const T* ckpt, int64_t b, int64_t c, int64_t d0, int64_t w, V<T>* h) {
  const int64_t nchunks = (p.L + p.K - 1) / p.K;
  const T* src = ckpt + ((b * nchunks + c) * p.N) * p.Din + d0;
  for (int64_t n = 0; n < p.N; ++n) {
    h[n] = V<T>{};
    for (int64_t i = 0; i < w; ++i) h[n][i] = src[n * p.Din + i];
  }
}

// The step size of lanes d0.. at (b, t), after projection, bias and softplus; sig = its derivative
// wrt the pre-softplus value. Wblk: the block's R projection vectors (low-rank dt only).
template <typename T>
inline V<T> load_dt(const Args<T>& p, int64_t b, int64_t t, int64_t d0, int64_t w, V<T> biasv, const V<T>* Wblk,
                    V<T>* sig) {
  V<T> x;
  if (p.WdtT) {
    const T* r = p.row(p.dt, b, t);
    x = V<T>{};
    for (int64_t k = 0; k < p.R; ++k) x += r[k] * Wblk[k];
  } else {
    x = load_row(p.row(p.dt, b, t) + d0, w);
  }
  if (p.dbias) x += biasv;
  if (!p.softplus) {
    if (sig) *sig = splat(T(1));
    return x;
  }
  V<T> sp, sg;
  vsoftplus(x, sp, sg);
  if (w < W)
    for (int i = w; i < W; ++i) sp[i] = T(0);  // padded lanes: dt = 0 exactly
  if (sig) *sig = sg;
  return sp;
}

template <typename T>
void load_W(const Args<T>& p, int64_t d0, int64_t w, V<T>* Wblk) {
  for (int64_t k = 0; k < p.R; ++k) {
    Wblk[k] = V<T>{};
    for (int64_t i = 0; i < w; ++i) Wblk[k][i] = p.WdtT[k * p.Din + d0 + i];
  }
}

// One recurrence step for a block: hout = a * hin + dt u B (hout may alias hin); returns
// sum_n C[n] h[n]. Ascaled: the block's A scaled for Gate<T>::exp. The gates go to `gates` if given.
template <typename T>
inline V<T> step(int64_t N, const V<T>* Ascaled, V<T> dl, V<T> dxu, const T* Bt, const T* Ct, const V<T>* hin,
                 V<T>* hout, V<T>* gates) {
  V<T> y = V<T>{};
  for (int64_t n = 0; n < N; ++n) {
    const V<T> a = Gate<T>::exp(dl * Ascaled[n]);
    const V<T> hv = a * hin[n] + dxu * Bt[n];
    hout[n] = hv;
    y += Ct[n] * hv;
    if (gates) gates[n] = a;
  }
  return y;
}

// out = (core + D u) * silu(z), with D and z optional.
template <typename T>
inline V<T> gate_out(V<T> core, V<T> uu, V<T> Dblk, const T* zrow, int64_t w, bool hasD) {
  V<T> y = hasD ? core + Dblk * uu : core;
  if (zrow) {
    const V<T> zz = load_row(zrow, w);
    y *= zz * vsigmoid(zz);
  }
  return y;
}

template <typename T>
void forward_seq(const Args<T>& p, int64_t b, T* y, T* last, T* ckpt) {
  VecBuf<T> h(p.N), Ablk(p.N), Ascaled(p.N), Wblk(p.R);
  for (int64_t d0 = 0; d0 < p.Din; d0 += W) {
    const int64_t w = std::min<int64_t>(W, p.Din - d0);
    load_A(p, d0, w, Ablk.data(), Ascaled.data());
    const V<T> Dblk = p.Dv ? load_row(p.Dv + d0, w) : V<T>{};
    const V<T> biasv = p.dbias ? load_row(p.dbias + d0, w) : V<T>{};
    if (p.WdtT) load_W(p, d0, w, Wblk.data());
    for (int64_t n = 0; n < p.N; ++n) h[n] = V<T>{};
    for (int64_t t = 0; t < p.L; ++t) {
      if (ckpt && t % p.K == 0) save_ckpt(p, ckpt, b, t / p.K, d0, w, h.data());
      const V<T> dl = load_dt(p, b, t, d0, w, biasv, Wblk.data(), nullptr);
      const V<T> uu = load_row(p.row(p.u, b, t) + d0, w);
      const V<T> core = step<T>(p.N, Ascaled.data(), dl, dl * uu, p.row(p.Bm, b, t), p.row(p.Cm, b, t), h.data(),
                                h.data(), nullptr);
      const T* zrow = p.z.ptr ? p.row(p.z, b, t) + d0 : nullptr;
      store_row(y + (b * p.L + t) * p.Din + d0, w, gate_out(core, uu, Dblk, zrow, w, p.Dv != nullptr));
    }
    if (last) {
      T* dst = last + (b * p.Din + d0) * p.N;
      for (int64_t i = 0; i < w; ++i)
        for (int64_t n = 0; n < p.N; ++n) dst[i * p.N + n] = h[n][i];
    }
  }
}

// Outputs: du, ddt (wrt the raw dt input), dz (Bsz, L, Din) contiguous; dAb (Bsz, N, Din), dDb and
// dbiasb (Bsz, Din) per sequence; with a low-rank dt, ddt is (Bsz, L, R), accumulated (zeroed by
// the caller), and dWb (Bsz, R, Din) per sequence;
// dB, dC (Bsz, L, N) contiguous, accumulated (zeroed by the caller).
template <typename T>
void backward_seq(const Args<T>& p, int64_t b, const T* ckpt, const T* dout, const T* dlast, T* du, T* ddt, T* dz,
                  T* dAb, T* dDb, T* dbiasb, T* dWb, T* dB, T* dC) {
  const int64_t N = p.N;
  const int64_t R16 = (p.R + W - 1) / W * W;  // lane-sum groups of 16, zero-padded
  VecBuf<T> g(N), h0(N), Ablk(N), Ascaled(N), dA(N), gates(p.K * N), states(p.K * N), cores(p.K), dls(p.K), sigs(p.K),
      sumC(N), sumB(N), Wblk(p.R), dW(p.R), sumR(R16);
  std::vector<T> rowR(R16);
  const int64_t nchunks = (p.L + p.K - 1) / p.K;
  const bool hasD = p.Dv != nullptr;
  for (int64_t d0 = 0; d0 < p.Din; d0 += W) {
    const int64_t w = std::min<int64_t>(W, p.Din - d0);
    load_A(p, d0, w, Ablk.data(), Ascaled.data());
    const V<T> Dblk = hasD ? load_row(p.Dv + d0, w) : V<T>{};
    const V<T> biasv = p.dbias ? load_row(p.dbias + d0, w) : V<T>{};
    if (p.WdtT) {
      load_W(p, d0, w, Wblk.data());
      for (int64_t k = 0; k < p.R; ++k) dW[k] = V<T>{};
    }
    V<T> dDacc = V<T>{}, dbias = V<T>{};
    for (int64_t n = 0; n < N; ++n) dA[n] = g[n] = V<T>{};
    if (dlast) {
      const T* src = dlast + (b * p.Din + d0) * N;
      for (int64_t i = 0; i < w; ++i)
        for (int64_t n = 0; n < N; ++n) g[n][i] = src[i * N + n];
    }
    for (int64_t c = nchunks - 1; c >= 0; --c) {
      const int64_t t0 = c * p.K, t1 = std::min(p.L, t0 + p.K);
      load_ckpt(p, ckpt, b, c, d0, w, h0.data());
      const V<T>* hcur = h0.data();
      for (int64_t t = t0; t < t1; ++t) {  // recompute the chunk's step sizes, states, gates and outputs
        const V<T> dl = load_dt(p, b, t, d0, w, biasv, Wblk.data(), &sigs[t - t0]);
        dls[t - t0] = dl;
        const V<T> dxu = dl * load_row(p.row(p.u, b, t) + d0, w);
        V<T>* slot = states.data() + (t - t0) * N;
        cores[t - t0] = step<T>(N, Ascaled.data(), dl, dxu, p.row(p.Bm, b, t), p.row(p.Cm, b, t), hcur, slot,
                                gates.data() + (t - t0) * N);
        hcur = slot;
      }
      for (int64_t t = t1 - 1; t >= t0; --t) {
        const int64_t off = (b * p.L + t) * p.Din + d0;
        const V<T> dl = dls[t - t0];
        const V<T> uu = load_row(p.row(p.u, b, t) + d0, w);
        V<T> dyv = load_row(dout + off, w);
        if (p.z.ptr) {  // out = pre * silu(z), pre = core + D u
          const V<T> zz = load_row(p.row(p.z, b, t) + d0, w);
          const V<T> sg = vsigmoid(zz);
          const V<T> pre = hasD ? cores[t - t0] + Dblk * uu : cores[t - t0];
          store_row(dz + (b * p.L + t) * p.sdz + d0, w, dyv * pre * sg * (T(1) + zz * (T(1) - sg)));
          dyv *= zz * sg;
        }
        const V<T> dxu = dl * uu;
        V<T> gxu = V<T>{}, gdl = V<T>{};
        const T* Bt = p.row(p.Bm, b, t);
        const T* Ct = p.row(p.Cm, b, t);
        T* dBt = dB + (b * p.L + t) * N;
        T* dCt = dC + (b * p.L + t) * N;
        const V<T>* ht = states.data() + (t - t0) * N;
        const V<T>* hp = t > t0 ? ht - N : h0.data();
        const V<T>* at = gates.data() + (t - t0) * N;
        for (int64_t n = 0; n < N; ++n) {
          const V<T> gi = g[n] + Ct[n] * dyv;  // dL/dh_t, complete
          sumC[n] = dyv * ht[n];
          sumB[n] = gi * dxu;
          gxu += gi * Bt[n];
          const V<T> dlog = gi * hp[n] * at[n];  // dL/d(dt A)
          gdl += dlog * Ablk[n];
          dA[n] += dlog * dl;
          g[n] = gi * at[n];  // carried to step t - 1
        }
        add_lane_sums<T>(sumC.data(), N, dCt);
        add_lane_sums<T>(sumB.data(), N, dBt);
        V<T> duv = gxu * dl;
        if (hasD) {
          duv += dyv * Dblk;
          dDacc += dyv * uu;
        }
        store_row(du + off, w, duv);
        V<T> draw = (gdl + gxu * uu) * sigs[t - t0];
        if (w < W)
          for (int i = w; i < W; ++i) draw[i] = T(0);
        dbias += draw;
        if (p.WdtT) {  // dt = r @ WdtT: dr[k] = sum_d draw[d] W[k, d], dW[k] += draw r[k]
          const T* r = p.row(p.dt, b, t);
          for (int64_t k = 0; k < p.R; ++k) {
            sumR[k] = draw * Wblk[k];
            dW[k] += draw * r[k];
          }
          std::fill(rowR.begin(), rowR.end(), T(0));
          add_lane_sums<T>(sumR.data(), R16, rowR.data());
          T* dr = ddt + (b * p.L + t) * p.R;
          for (int64_t k = 0; k < p.R; ++k) dr[k] += rowR[k];
        } else {
          store_row(ddt + off, w, draw);
        }
      }
    }
    T* dst = dAb + b * N * p.Din + d0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < w; ++i) dst[n * p.Din + i] = dA[n][i];
    if (hasD) store_row(dDb + b * p.Din + d0, w, dDacc);
    if (p.dbias) store_row(dbiasb + b * p.Din + d0, w, dbias);
    if (p.WdtT)
      for (int64_t k = 0; k < p.R; ++k) store_row(dWb + (b * p.R + k) * p.Din + d0, w, dW[k]);
  }
}

// Causal depthwise convolution along time followed by SiLU, (Bsz, L, Din) layout:
//   pre_t[d] = bias[d] + sum_k w[k, d] x_{t - (Kc - 1) + k}[d]  (x_s = 0 for s < 0),  out = silu(pre).
// The Kc inputs a step sees are kept in a sliding window of vectors (win[k] = x_{t - (Kc - 1) + k}),
// so every input row is loaded once per pass.
template <typename T>
inline V<T> load_x(const Rows<T>& x, int64_t b, int64_t s, int64_t L, int64_t d0, int64_t w) {
  return s >= 0 ? load_row(x.ptr + (b * L + s) * x.stride + d0, w) : V<T>{};
}

template <typename T>
void conv_forward_seq(const Rows<T>& x, const T* wT, const T* bias, T* out, int64_t b, int64_t L, int64_t Din,
                      int64_t Kc) {
  VecBuf<T> win(Kc), wblk(Kc);
  for (int64_t d0 = 0; d0 < Din; d0 += W) {
    const int64_t w = std::min<int64_t>(W, Din - d0);
    const V<T> bv = bias ? load_row(bias + d0, w) : V<T>{};
    for (int64_t k = 0; k < Kc; ++k) {
      win[k] = V<T>{};
      wblk[k] = load_row(wT + k * Din + d0, w);
    }
    for (int64_t t = 0; t < L; ++t) {
      for (int64_t k = 0; k + 1 < Kc; ++k) win[k] = win[k + 1];
      win[Kc - 1] = load_x(x, b, t, L, d0, w);
      V<T> pre = bv;
      for (int64_t k = 0; k < Kc; ++k) pre += wblk[k] * win[k];
      store_row(out + (b * L + t) * Din + d0, w, pre * vsigmoid(pre));
    }
  }
}

// dwb (Bsz, Kc, Din) and dbb (Bsz, Din) per sequence. One reverse pass: dx_t = sum_k w[k] dpre_{t+Kc-1-k}
// needs dpre at t..t+Kc-1 only, kept in a second window (fut[j] = dpre_{t+j}, zeros past the end).
template <typename T>
void conv_backward_seq(const Rows<T>& x, const T* wT, const T* bias, const T* dout, T* dx, int64_t sdx, T* dwb, T* dbb,
                       int64_t b, int64_t L, int64_t Din, int64_t Kc) {
  VecBuf<T> dw(Kc), fut(Kc), win(Kc), wblk(Kc);
  for (int64_t d0 = 0; d0 < Din; d0 += W) {
    const int64_t w = std::min<int64_t>(W, Din - d0);
    const V<T> bv = bias ? load_row(bias + d0, w) : V<T>{};
    V<T> db = V<T>{};
    for (int64_t k = 0; k < Kc; ++k) {
      dw[k] = fut[k] = V<T>{};
      wblk[k] = load_row(wT + k * Din + d0, w);
      win[k] = load_x(x, b, L - Kc + k, L, d0, w);
    }
    for (int64_t t = L - 1; t >= 0; --t) {
      if (t < L - 1) {  // slide the input window one step back
        for (int64_t k = Kc - 1; k > 0; --k) win[k] = win[k - 1];
        win[0] = load_x(x, b, t - (Kc - 1), L, d0, w);
      }
      V<T> pre = bv;
      for (int64_t k = 0; k < Kc; ++k) pre += wblk[k] * win[k];
      const int64_t off = (b * L + t) * Din + d0;
      const V<T> sg = vsigmoid(pre);
      const V<T> dp = load_row(dout + off, w) * sg * (T(1) + pre * (T(1) - sg));
      for (int64_t j = Kc - 1; j > 0; --j) fut[j] = fut[j - 1];
      fut[0] = dp;
      db += dp;
      V<T> acc = V<T>{};
      for (int64_t k = 0; k < Kc; ++k) {
        dw[k] += dp * win[k];
        acc += wblk[k] * fut[Kc - 1 - k];
      }
      store_row(dx + (b * L + t) * sdx + d0, w, acc);
    }
    for (int64_t k = 0; k < Kc; ++k) store_row(dwb + (b * Kc + k) * Din + d0, w, dw[k]);
    if (bias) store_row(dbb + b * Din + d0, w, db);
  }
}

// Runs fn(b) for every sequence, on `threads` std::threads (static split; 1 = the calling thread),
// each with denormals flushed (FlushDenormals).
template <typename F>
void for_each_seq(int64_t Bsz, int threads, F fn) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, Bsz)));
  if (threads == 1) {
    const FlushDenormals flush;
    for (int64_t b = 0; b < Bsz; ++b) fn(b);
    return;
  }
  std::vector<std::thread> pool;
  for (int k = 0; k < threads; ++k)
    pool.emplace_back([=] {
      const FlushDenormals flush;
      for (int64_t b = k; b < Bsz; b += threads) fn(b);
    });
  for (auto& th : pool) th.join();
}

// Compute floor: one pass of exp(dt A) over the (Bsz, L, Din, N) volume, summed (nothing stored).
template <typename T>
T exp_pass(const T* dt, const T* At, int64_t Bsz, int64_t L, int64_t Din, int64_t N) {
  VecBuf<T> Ascaled(N);
  V<T> acc = V<T>{};
  for (int64_t d0 = 0; d0 + W <= Din; d0 += W) {
    for (int64_t n = 0; n < N; ++n) {
      std::memcpy(&Ascaled[n], At + n * Din + d0, sizeof(V<T>));
      Ascaled[n] *= Gate<T>::scale;
    }
    for (int64_t r = 0; r < Bsz * L; ++r) {
      V<T> dl;
      std::memcpy(&dl, dt + r * Din + d0, sizeof dl);
      for (int64_t n = 0; n < N; ++n) acc += Gate<T>::exp(dl * Ascaled[n]);
    }
  }
  return hsum<T>(acc);
}

}  // namespace

extern "C" {

int clplat_selective_abi_version() { return 8; }

// Row strides (s*) are in elements; null z / D / last / ckpt / dlast mean "absent".
#define CLPLAT_DEFINE(T, SUFFIX)                                                                                   \
  void clplat_selective_fwd_##SUFFIX(const T* u, int64_t su, const T* dt, int64_t sdt, const T* At, const T* Bm,  \
                                     int64_t sB, const T* Cm, int64_t sC, const T* Dv, const T* z, int64_t sz,    \
                                     const T* dbias, int softplus, const T* WdtT, int64_t R, T* y, T* last,       \
                                     T* ckpt, int64_t Bsz, int64_t L, int64_t Din, int64_t N, int64_t K,          \
                                     int threads) {                                                               \
    const Args<T> p{{u, su}, {dt, sdt}, {Bm, sB}, {Cm, sC}, {z, sz}, At, Dv, dbias, softplus != 0, WdtT, R,     \
                    Bsz, L, Din, N, K, Din};                                                                     \
    for_each_seq(Bsz, threads, [&](int64_t b) { forward_seq(p, b, y, last, ckpt); });                          \
  }                                                                                                              \
  void clplat_selective_bwd_##SUFFIX(const T* u, int64_t su, const T* dt, int64_t sdt, const T* At, const T* Bm,  \
                                     int64_t sB, const T* Cm, int64_t sC, const T* Dv, const T* z, int64_t sz,    \
                                     const T* dbias, int softplus, const T* WdtT, int64_t R, const T* ckpt,       \
                                     const T* dout, const T* dlast, T* du, T* ddt, T* dz, int64_t sdz, T* dAb,    \
                                     T* dDb, T* dbiasb, T* dWb, T* dB, T* dC, int64_t Bsz, int64_t L,             \
                                     int64_t Din, int64_t N, int64_t K, int threads) {                            \
    const Args<T> p{{u, su}, {dt, sdt}, {Bm, sB}, {Cm, sC}, {z, sz}, At, Dv, dbias, softplus != 0, WdtT, R,     \
                    Bsz, L, Din, N, K, sdz};                                                                     \
    for_each_seq(Bsz, threads, [&](int64_t b) {                                                                  \
      backward_seq(p, b, ckpt, dout, dlast, du, ddt, dz, dAb, dDb, dbiasb, dWb, dB, dC);                         \
    });                                                                                                          \
  }                                                                                                              \
  void clplat_conv_silu_fwd_##SUFFIX(const T* x, int64_t sx, const T* wT, const T* bias, T* out, int64_t Bsz,     \
                                     int64_t L, int64_t Din, int64_t Kc, int threads) {                           \
    const Rows<T> xr{x, sx};                                                                                     \
    for_each_seq(Bsz, threads, [&](int64_t b) { conv_forward_seq(xr, wT, bias, out, b, L, Din, Kc); });        \
  }                                                                                                              \
  void clplat_conv_silu_bwd_##SUFFIX(const T* x, int64_t sx, const T* wT, const T* bias, const T* dout, T* dx,    \
                                     int64_t sdx, T* dwb, T* dbb, int64_t Bsz, int64_t L, int64_t Din,            \
                                     int64_t Kc, int threads) {                                                   \
    const Rows<T> xr{x, sx};                                                                                     \
    for_each_seq(Bsz, threads,                                                                                   \
                 [&](int64_t b) { conv_backward_seq(xr, wT, bias, dout, dx, sdx, dwb, dbb, b, L, Din, Kc); });  \
  }                                                                                                              \
  double clplat_selective_exp_pass_##SUFFIX(const T* dt, const T* At, int64_t Bsz, int64_t L, int64_t Din,       \
                                            int64_t N) {                                                         \
    return static_cast<double>(exp_pass<T>(dt, At, Bsz, L, Din, N));                                             \
  }

CLPLAT_DEFINE(float, f32)
CLPLAT_DEFINE(double, f64)

}  // extern "C"
