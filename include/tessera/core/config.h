#pragma once
// Typed configuration structs <-> JSON, with validation.
//
// A config struct lists its fields once, in a visit() member, and may check itself in validate():
//
//   struct OptimizerConfig {
//     double learning_rate = 3e-4;
//     int64_t warmup_steps = 1000;
//     std::vector<int64_t> patch_nums = {1, 2, 3};
//     template <class Visitor> void visit(Visitor& v) {
//       v("learning_rate", learning_rate);
//       v("warmup_steps", warmup_steps);
//       v("patch_nums", patch_nums);
//     }
//     void validate() const { TESSERA_CHECK(learning_rate > 0, "..."); }
//   };
//
// from_json<OptimizerConfig>(j) starts from the defaults, overwrites the fields present in j, and
// rejects — with the key's full path and the closest known name — any key it does not know, so a
// typo never passes silently. A value of the wrong type (a string for a number, 2.5 for an
// integer, -1 for an unsigned) is an error naming the key, the expected type and the value.
// Fields may be: bool, integers, floating point, std::string, enums with ConfigEnum
// specialisations, std::vector and std::optional of those, and nested config structs.

#include <nlohmann/json.hpp>

#include <concepts>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/core/error.h"

namespace tessera {

/// The names of an enum's values in configs. Specialise it for every enum a config uses:
///   template <> struct ConfigEnum<Color> {
///     static constexpr std::pair<Color, const char*> values[] = {{Color::red, "red"}, ...};
///   };
template <typename E>
struct ConfigEnum;

namespace config_detail {

template <typename T>
struct is_vector : std::false_type {};
template <typename T>
struct is_vector<std::vector<T>> : std::true_type {};
template <typename T>
struct is_optional : std::false_type {};
template <typename T>
struct is_optional<std::optional<T>> : std::true_type {};

struct KeyCollector {
  std::vector<std::string> names;
  template <typename T>
  void operator()(const char* name, T&) {
    names.emplace_back(name);
  }
};

template <typename T>
concept ConfigStruct = requires(T& t, KeyCollector& c) { t.visit(c); };

template <typename T>
concept HasValidate = requires(const T& t) { t.validate(); };

/// "learning_rate" for "lerning_rate": the known key at the smallest edit distance (if close).
std::string closest_key(std::string_view key, const std::vector<std::string>& known);
std::string json_type_name(const nlohmann::json& j);
std::string json_excerpt(const nlohmann::json& j);
std::string join_path(const std::string& path, std::string_view key);

template <typename T>
void read_value(const nlohmann::json& j, T& out, const std::string& path);

class Reader {
 public:
  Reader(const nlohmann::json& j, std::string path) : json_(j), path_(std::move(path)) {}
  template <typename T>
  void operator()(const char* name, T& field) {
    known_.emplace_back(name);
    auto it = json_.find(name);
    if (it != json_.end()) read_value(*it, field, join_path(path_, name));
  }
  void reject_unknown_keys() const {
    for (const auto& item : json_.items()) {
      bool found = false;
      for (const auto& k : known_) found = found || (k == item.key());
      if (found) continue;
      std::string known_list;
      for (const auto& k : known_) known_list += (known_list.empty() ? "" : ", ") + k;
      std::string hint = closest_key(item.key(), known_);
      TESSERA_FAIL("unknown key '{}' in {}{}; known keys: {}", item.key(), path_,
                   hint.empty() ? "" : " (did you mean '" + hint + "'?)", known_list);
    }
  }

 private:
  const nlohmann::json& json_;
  std::string path_;
  std::vector<std::string> known_;
};

template <typename T>
void write_value(nlohmann::json& j, const T& value);

class Writer {
 public:
  explicit Writer(nlohmann::json& j) : json_(j) {}
  template <typename T>
  void operator()(const char* name, T& field) {
    write_value(json_[name], field);
  }

 private:
  nlohmann::json& json_;
};

template <typename T>
void read_value(const nlohmann::json& j, T& out, const std::string& path) {
  if constexpr (std::is_same_v<T, bool>) {
    TESSERA_CHECK(j.is_boolean(), "{}: expected a boolean, got {} {}", path, json_type_name(j),
                  json_excerpt(j));
    out = j.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    // A float is accepted when it is a whole number inside int64's range: casting one outside
    // that range would be undefined behaviour, not a wrong value.
    TESSERA_CHECK(j.is_number_integer() ||
                      (j.is_number_float() && std::trunc(j.get<double>()) == j.get<double>() &&
                       j.get<double>() >= -0x1p63 && j.get<double>() < 0x1p63),
                  "{}: expected an integer, got {} {}", path, json_type_name(j), json_excerpt(j));
    if (j.is_number_unsigned()) {
      const uint64_t v = j.get<uint64_t>();
      TESSERA_CHECK(v <= static_cast<uint64_t>(std::numeric_limits<T>::max()),
                    "{}: {} is out of range (at most {})", path, v, std::numeric_limits<T>::max());
      out = static_cast<T>(v);
    } else {
      const int64_t v = j.is_number_float() ? static_cast<int64_t>(j.get<double>()) : j.get<int64_t>();
      TESSERA_CHECK(v >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                        (v < 0 || static_cast<uint64_t>(v) <=
                                      static_cast<uint64_t>(std::numeric_limits<T>::max())),
                    "{}: {} is out of range [{}, {}]", path, v, std::numeric_limits<T>::min(),
                    std::numeric_limits<T>::max());
      out = static_cast<T>(v);
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    TESSERA_CHECK(j.is_number(), "{}: expected a number, got {} {}", path, json_type_name(j),
                  json_excerpt(j));
    out = j.get<T>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    TESSERA_CHECK(j.is_string(), "{}: expected a string, got {} {}", path, json_type_name(j),
                  json_excerpt(j));
    out = j.get<std::string>();
  } else if constexpr (std::is_enum_v<T>) {
    TESSERA_CHECK(j.is_string(), "{}: expected a string naming a value, got {} {}", path,
                  json_type_name(j), json_excerpt(j));
    const std::string name = j.get<std::string>();
    std::vector<std::string> names;
    for (const auto& [value, value_name] : ConfigEnum<T>::values) {
      if (name == value_name) {
        out = value;
        return;
      }
      names.emplace_back(value_name);
    }
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    std::string hint = closest_key(name, names);
    TESSERA_FAIL("{}: unknown value '{}'{}; expected one of {}", path, name,
                 hint.empty() ? "" : " (did you mean '" + hint + "'?)", list);
  } else if constexpr (is_optional<T>::value) {
    if (j.is_null()) {
      out.reset();
    } else {
      typename T::value_type value{};
      if (out) value = *out;
      read_value(j, value, path);
      out = std::move(value);
    }
  } else if constexpr (is_vector<T>::value) {
    TESSERA_CHECK(j.is_array(), "{}: expected an array, got {} {}", path, json_type_name(j),
                  json_excerpt(j));
    T values;
    values.resize(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
      read_value(j[i], values[i], path + "[" + std::to_string(i) + "]");
    }
    out = std::move(values);
  } else if constexpr (ConfigStruct<T>) {
    TESSERA_CHECK(j.is_object(), "{}: expected an object, got {} {}", path, json_type_name(j),
                  json_excerpt(j));
    Reader reader(j, path);
    out.visit(reader);
    reader.reject_unknown_keys();
    if constexpr (HasValidate<T>) {
      try {
        out.validate();
      } catch (const Error& e) {
        TESSERA_FAIL("{}: {}", path, e.what());
      }
    }
  } else {
    static_assert(sizeof(T) == 0, "type not supported in configs");
  }
}

template <typename T>
void write_value(nlohmann::json& j, const T& value) {
  if constexpr (std::is_same_v<T, bool> || std::is_arithmetic_v<T> ||
                std::is_same_v<T, std::string>) {
    j = value;
  } else if constexpr (std::is_enum_v<T>) {
    for (const auto& [v, name] : ConfigEnum<T>::values) {
      if (v == value) {
        j = name;
        return;
      }
    }
    TESSERA_FAIL("config: enum value {} has no name", static_cast<int64_t>(value));
  } else if constexpr (is_optional<T>::value) {
    if (value) {
      write_value(j, *value);
    } else {
      j = nullptr;
    }
  } else if constexpr (is_vector<T>::value) {
    j = nlohmann::json::array();
    for (const auto& item : value) {
      nlohmann::json element;
      write_value(element, item);
      j.push_back(std::move(element));
    }
  } else if constexpr (ConfigStruct<T>) {
    j = nlohmann::json::object();
    Writer writer(j);
    const_cast<T&>(value).visit(writer);  // visit() only reads through the writer
  } else {
    static_assert(sizeof(T) == 0, "type not supported in configs");
  }
}

}  // namespace config_detail

/// A config from JSON: defaults for absent keys, an error for unknown keys and wrong types, then
/// validate(). `name` is the root of key paths in messages ("train.optimizer.learning_rate").
template <config_detail::ConfigStruct T>
T config_from_json(const nlohmann::json& j, const std::string& name = "config") {
  T out{};
  config_detail::read_value(j, out, name);
  return out;
}

template <config_detail::ConfigStruct T>
nlohmann::json config_to_json(const T& config) {
  nlohmann::json j;
  config_detail::write_value(j, config);
  return j;
}  ///< The JSON of a config: every field, defaults included.

/// Parses a JSON file; a syntax error names the file, line and column.
nlohmann::json read_json_file(const std::filesystem::path& path);
/// Writes JSON atomically (temporary file, fsync, rename), pretty-printed.
void write_json_file(const std::filesystem::path& path, const nlohmann::json& j);

template <config_detail::ConfigStruct T>
T load_config(const std::filesystem::path& path) {
  return config_from_json<T>(read_json_file(path), path.filename().string());
}  ///< A config from a JSON file (config_from_json, key paths rooted at the file name).

template <config_detail::ConfigStruct T>
void save_config(const std::filesystem::path& path, const T& config) {
  write_json_file(path, config_to_json(config));
}  ///< Writes a config as JSON, atomically (write_json_file).

}  // namespace tessera
