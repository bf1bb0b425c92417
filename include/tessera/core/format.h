#pragma once
// fmt formatters for the LibTorch types that error messages name: shapes, dtypes, devices.
// Include this (not <fmt/ostream.h> ad hoc) where a TESSERA_CHECK message formats them.

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
/// Formats shapes (and any int64 list) as "[2, 3, 4]".
template <>
struct fmt::formatter<c10::IntArrayRef> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(c10::IntArrayRef sizes, FormatContext& ctx) const {
    return fmt::format_to(ctx.out(), "[{}]", fmt::join(sizes.begin(), sizes.end(), ", "));
  }  ///< Writes `sizes`.
};
/// Formats dtypes by name ("Float", "BFloat16", ...).
template <>
struct fmt::formatter<c10::ScalarType> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(c10::ScalarType type, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(c10::toString(type), ctx);
  }  ///< Writes the dtype's name.
};
/// Formats devices as "cpu" or "cuda:0".
template <>
struct fmt::formatter<c10::Device> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(const c10::Device& device, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(device.str(), ctx);
  }  ///< Writes device.str().
};
