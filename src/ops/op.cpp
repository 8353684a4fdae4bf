// The op seam's building blocks: ValueSpec, SampleRng, Arena, OpArgs (include/ferry/op.h).
#include "ferry/op.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "ferry/error.h"
#include "util.h"

namespace ferry {

// ---- ValueSpec ----

ValueSpec ValueSpec::array(DType dtype, std::vector<uint64_t> shape) {
  return ValueSpec{FieldKind::ndarray, dtype, std::move(shape), 0};
}

ValueSpec ValueSpec::bytes(uint64_t max_size) {
  return ValueSpec{FieldKind::bytes, DType::u8, {}, max_size};
}

ValueSpec ValueSpec::variable_array(DType dtype, std::vector<uint64_t> shape) {
  ValueSpec v = array(dtype, std::move(shape));
  v.variable = true;
  return v;
}

ValueSpec ValueSpec::of(const FieldSpec& field, uint64_t max_bytes_length) {
  return field.kind == FieldKind::ndarray ? array(field.dtype, field.shape)
                                          : bytes(max_bytes_length);
}

uint64_t ValueSpec::num_elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

uint64_t ValueSpec::max_bytes() const {
  if (variable) return sizeof(VariableArray);
  return is_array() ? num_elements() * dtype_size(dtype) : max_size;
}

std::string ValueSpec::to_string() const {
  if (!is_array()) return "bytes(<= " + std::to_string(max_size) + ")";
  std::string s = std::string(dtype_name(dtype)) + "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? "," : "") + (variable && shape[i] == 0 ? std::string("?") : std::to_string(shape[i]));
  return s + (variable ? "] (shape varies per sample)" : "]");
}

// ---- SampleRng ----

// The stream of sample `id` of `epoch`: three mixing rounds, so neighbouring ids and epochs get
// unrelated streams (a plain seed + id would make sample k of epoch e+1 repeat sample k+1).
SampleRng::SampleRng(uint64_t seed, uint64_t epoch, uint64_t sample_id)
    : state_(detail::mix_seed(detail::mix_seed(seed, epoch + 0x5851F42D4C957F2Dull), sample_id)) {}

uint64_t SampleRng::next() {
  detail::SplitMix64 g(state_);
  state_ += 0x9E3779B97F4A7C15ull;
  return g.next();
}

double SampleRng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

uint64_t SampleRng::below(uint64_t bound) {
  if (bound == 0) return 0;
  detail::SplitMix64 g(next());
  return g.below(bound);
}

// ---- Arena ----

struct Arena::Chunk {
  explicit Chunk(uint64_t n)
      : size(n), data(static_cast<uint8_t*>(std::aligned_alloc(64, detail::align_up(n, 64)))) {
    if (!data) throw std::bad_alloc();
  }
  ~Chunk() { std::free(data); }
  uint64_t size;
  uint8_t* data;
};

Arena::Arena(uint64_t limit) : limit_(limit) {}
Arena::~Arena() = default;

uint8_t* Arena::allocate(uint64_t bytes) {
  bytes = detail::align_up(std::max<uint64_t>(bytes, 1), 64);
  if (in_use_total_ + bytes > limit_)
    throw CapacityError("op scratch: " + std::to_string(in_use_total_ + bytes) +
                        " bytes for one sample exceed the worker arena's limit of " +
                        std::to_string(limit_) + " bytes");
  while (current_ < chunks_.size()) {
    Chunk& c = *chunks_[current_];
    if (c.size - used_ >= bytes) {
      uint8_t* p = c.data + used_;
      used_ += bytes;
      in_use_total_ += bytes;
      return p;
    }
    ++current_;
    used_ = 0;
  }
  // A new chunk at least doubling what the arena holds, so a steady state stops allocating
  // after a few samples.
  const uint64_t size = std::max<uint64_t>({bytes, capacity(), 64 * 1024});
  chunks_.push_back(std::make_unique<Chunk>(size));
  current_ = chunks_.size() - 1;
  used_ = bytes;
  in_use_total_ += bytes;
  return chunks_.back()->data;
}

void Arena::reset() {
  // Fragmented into many chunks: merge them into one, so the next sample fits in a single one.
  if (chunks_.size() > 1 && current_ > 0) {
    const uint64_t total = capacity();
    chunks_.clear();
    chunks_.push_back(std::make_unique<Chunk>(std::min(total, limit_)));
  }
  current_ = 0;
  used_ = 0;
  in_use_total_ = 0;
}

uint64_t Arena::capacity() const {
  uint64_t n = 0;
  for (const auto& c : chunks_) n += c->size;
  return n;
}

// ---- OpArgs ----

struct OpArgs::Json {
  nlohmann::json value;
};

OpArgs::OpArgs(std::string op_name, const std::string& json_object)
    : op_(std::move(op_name)), json_(std::make_unique<Json>()) {
  try {
    json_->value =
        json_object.empty() ? nlohmann::json::object() : nlohmann::json::parse(json_object);
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument("op '" + op_ + "': arguments are not valid JSON: " + e.what());
  }
  if (!json_->value.is_object())
    throw InvalidArgument("op '" + op_ + "': arguments must be a JSON object");
}

OpArgs::~OpArgs() = default;
OpArgs::OpArgs(const OpArgs& o) : op_(o.op_), json_(std::make_unique<Json>(*o.json_)) {}

void OpArgs::fail(std::string_view key, std::string_view why) const {
  throw InvalidArgument("op '" + op_ + "': argument '" + std::string(key) +
                        "': " + std::string(why));
}

bool OpArgs::has(std::string_view key) const {
  return json_->value.contains(std::string(key)) && !json_->value.at(std::string(key)).is_null();
}

namespace {
const nlohmann::json& at(const nlohmann::json& j, std::string_view key) {
  return j.at(std::string(key));
}
}  // namespace

double OpArgs::number(std::string_view key) const {
  if (!has(key)) fail(key, "missing");
  const auto& v = at(json_->value, key);
  if (!v.is_number()) fail(key, "must be a number, got " + v.dump());
  return v.get<double>();
}
double OpArgs::number(std::string_view key, double fallback) const {
  return has(key) ? number(key) : fallback;
}

int64_t OpArgs::integer(std::string_view key) const {
  if (!has(key)) fail(key, "missing");
  const auto& v = at(json_->value, key);
  if (!v.is_number_integer()) fail(key, "must be an integer, got " + v.dump());
  return v.get<int64_t>();
}
int64_t OpArgs::integer(std::string_view key, int64_t fallback) const {
  return has(key) ? integer(key) : fallback;
}

bool OpArgs::boolean(std::string_view key, bool fallback) const {
  if (!has(key)) return fallback;
  const auto& v = at(json_->value, key);
  if (!v.is_boolean()) fail(key, "must be true or false, got " + v.dump());
  return v.get<bool>();
}

std::string OpArgs::string(std::string_view key) const {
  if (!has(key)) fail(key, "missing");
  const auto& v = at(json_->value, key);
  if (!v.is_string()) fail(key, "must be a string, got " + v.dump());
  return v.get<std::string>();
}
std::string OpArgs::string(std::string_view key, std::string fallback) const {
  return has(key) ? string(key) : std::move(fallback);
}

std::vector<double> OpArgs::numbers(std::string_view key) const {
  if (!has(key)) fail(key, "missing");
  const auto& v = at(json_->value, key);
  if (v.is_number()) return {v.get<double>()};
  if (!v.is_array() || v.empty())
    fail(key, "must be a number or a non-empty list of numbers, got " + v.dump());
  std::vector<double> out;
  for (const auto& x : v) {
    if (!x.is_number()) fail(key, "must hold numbers only, got " + v.dump());
    out.push_back(x.get<double>());
  }
  return out;
}
std::vector<double> OpArgs::numbers(std::string_view key, std::vector<double> fallback) const {
  return has(key) ? numbers(key) : std::move(fallback);
}

void OpArgs::allow_only(std::initializer_list<std::string_view> known) const {
  for (const auto& [k, v] : json_->value.items()) {
    if (std::find(known.begin(), known.end(), k) != known.end()) continue;
    std::string list;
    for (auto n : known) list += (list.empty() ? "" : ", ") + std::string(n);
    throw InvalidArgument("op '" + op_ + "': unknown argument '" + k +
                          "' (known: " + (list.empty() ? "none" : list) + ")");
  }
}

}  // namespace ferry
