#pragma once
// A multiply-add rounded once, in SIMD registers and in scalars alike. xsimd 8 (Debian 12's) has
// no AVX-512 specialization of xsimd::fma: it falls back to x * y + z, rounded twice, which the
// compiler then fuses or not as it sees fit (g++ fused some terms and not others, clang none).
// The vector and scalar steps of one optimizer update then differed in the last bit, and so did
// g++ and clang builds. Every kernel whose bits are promised (the in-order sums of gemm_small.hpp,
// the optimizers' updates at any split) calls this instead.

#include <cmath>
#include <type_traits>

#include <xsimd/xsimd.hpp>

namespace xtnn::detail {

template <class T, class Arch>
xsimd::batch<T, Arch> fused_multiply_add(const xsimd::batch<T, Arch>& x, const xsimd::batch<T, Arch>& y,
                                         const xsimd::batch<T, Arch>& z) {
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>) {
        return _mm512_fmadd_ps(x, y, z);
    } else if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, double>) {
        return _mm512_fmadd_pd(x, y, z);
    } else {
        return xsimd::fma(x, y, z);
    }
#else
    return xsimd::fma(x, y, z);
#endif
}

inline float fused_multiply_add(float x, float y, float z) { return std::fma(x, y, z); }
inline double fused_multiply_add(double x, double y, double z) { return std::fma(x, y, z); }

}  // namespace xtnn::detail
