// Branch-free float exp / softplus that the compiler auto-vectorises in plain loops.
//
// Cephes-style range reduction and minimax polynomials, ~1-2 ulp over the range used here.
// std::exp / std::log1p calls would keep the hot loops scalar.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

#if defined(__GNUC__)
#define MMVMAMBA_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define MMVMAMBA_ALWAYS_INLINE inline
#endif

namespace mmvmamba::cpu {

// exp(x) for float x; returns 0 below -87.33 (where expf becomes denormal) and clamps at 88.7.
MMVMAMBA_ALWAYS_INLINE float fast_exp(float x) {
  const bool underflow = x < -87.33654f;
  x = x < -87.33654f ? -87.33654f : x;
  x = x > 88.72283f ? 88.72283f : x;
  // Round x / ln 2 to the nearest integer with the 1.5 * 2^23 trick (no libm call).
  const float fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - fx * 0.693359375f;
  r = r + fx * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t e = static_cast<int32_t>(fx) + 127;
  const float scale = std::bit_cast<float>(e << 23);
  return underflow ? 0.0f : y * scale;
}

// Natural log of x > 0 (normal floats only).
MMVMAMBA_ALWAYS_INLINE float fast_log(float x) {
  int32_t bits = std::bit_cast<int32_t>(x);
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  float m = std::bit_cast<float>((bits & 0x007fffff) | 0x3f000000);  // [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  float y = p * m * z;
  y = y - 2.12194440e-4f * e;
  y = y - 0.5f * z;
  return m + y + 0.693359375f * e;
}

// softplus(x) = log1p(exp(x)) with torch's threshold: x > 20 returns x.
MMVMAMBA_ALWAYS_INLINE float fast_softplus(float x) {
  const float ex = fast_exp(x < 20.0f ? x : 20.0f);
  const float w = 1.0f + ex;
  // log1p(ex) = log(w) * ex / (w - 1) keeps full precision when ex is tiny.
  const float denom = w - 1.0f;
  const float lp = denom == 0.0f ? ex : fast_log(w) * (ex / (denom == 0.0f ? 1.0f : denom));
  return x > 20.0f ? x : lp;
}

// d softplus / dx = sigmoid(x). Torch uses exp(x) / (exp(x) + 1) below its threshold 20 and 1
// above; 1 / (1 + exp(-x)) is the same function and rounds to exactly 1 above 20.
MMVMAMBA_ALWAYS_INLINE float softplus_grad(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

}  // namespace mmvmamba::cpu
