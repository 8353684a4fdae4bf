// LoaderState's JSON form (versioned; version 1 had no "version" key).
#include <nlohmann/json.hpp>

#include "ferry/error.h"
#include "ferry/loader.h"

namespace ferry {

std::string LoaderState::to_json() const {
  std::string list;  // "j:count,j:count": kept as one string, as version 1 wrote it
  for (const auto& [j, n] : borrowed)
    list += (list.empty() ? "" : ",") + std::to_string(j) + ":" + std::to_string(n);
  nlohmann::ordered_json j = {{"version", version},
                              {"epoch", epoch},
                              {"next_batch", next_batch},
                              {"seed", seed},
                              {"order", std::string(order_name(order))},
                              {"window_pages", window_pages},
                              {"batch_size", batch_size},
                              {"rank", rank},
                              {"world_size", world_size},
                              {"drop_last", drop_last},
                              {"remainder", remainder == ShardRemainder::pad ? "pad" : "drop"},
                              {"on_error", skip_errors ? "skip" : "raise"},
                              {"num_samples", num_samples},
                              {"file_xxh64", file_xxh64},
                              {"data_xxh64", data_xxh64},
                              {"fields", fields},
                              {"pipeline_xxh64", pipeline_xxh64},
                              {"borrowed", list}};
  nlohmann::ordered_json& runs = j["elastic"] = nlohmann::ordered_json::array();
  for (const auto& step : elastic)
    runs.push_back({{"world_size", step.world_size}, {"consumed", step.consumed}});
  return j.dump();
}

namespace {

const nlohmann::json& need(const nlohmann::json& j, const char* key) {
  if (!j.contains(key)) throw InvalidArgument(std::string("loader state: missing '") + key + "'");
  return j[key];
}

uint64_t number(const nlohmann::json& j, const char* key) {
  const auto& v = need(j, key);
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    throw InvalidArgument(std::string("loader state: '") + key +
                          "' is not a non-negative integer: " + v.dump());
  return v.get<uint64_t>();
}

uint32_t number32(const nlohmann::json& j, const char* key) {
  const uint64_t v = number(j, key);
  if (v > UINT32_MAX)
    throw InvalidArgument(std::string("loader state: '") + key + "' is out of range");
  return static_cast<uint32_t>(v);
}

std::string string(const nlohmann::json& j, const char* key) {
  const auto& v = need(j, key);
  if (!v.is_string())
    throw InvalidArgument(std::string("loader state: '") + key + "' is not a string");
  return v.get<std::string>();
}

std::map<uint64_t, uint64_t> parse_borrowed(const std::string& list) {
  std::map<uint64_t, uint64_t> out;
  size_t pos = 0;
  while (pos < list.size()) {
    const size_t comma = std::min(list.find(',', pos), list.size());
    const std::string item = list.substr(pos, comma - pos);
    const size_t colon = item.find(':');
    try {
      if (colon == std::string::npos) throw std::invalid_argument(item);
      out[std::stoull(item.substr(0, colon))] = std::stoull(item.substr(colon + 1));
    } catch (const std::exception&) {
      throw InvalidArgument("loader state: malformed 'borrowed' entry '" + item + "'");
    }
    pos = comma + 1;
  }
  return out;
}

std::vector<ElasticStep> parse_elastic(const nlohmann::json& runs) {
  if (!runs.is_array()) throw InvalidArgument("loader state: 'elastic' is not a list");
  std::vector<ElasticStep> out;
  for (const auto& run : runs) {
    if (!run.is_object())
      throw InvalidArgument("loader state: an 'elastic' entry is not an object");
    ElasticStep step;
    step.world_size = number32(run, "world_size");
    const auto& consumed = need(run, "consumed");
    if (!consumed.is_array() || consumed.size() != step.world_size || step.world_size == 0)
      throw InvalidArgument("loader state: an 'elastic' entry needs one 'consumed' count per rank");
    for (const auto& c : consumed) {
      if (!c.is_number_unsigned() && !(c.is_number_integer() && c.get<int64_t>() >= 0))
        throw InvalidArgument("loader state: 'consumed' holds " + c.dump());
      step.consumed.push_back(c.get<uint64_t>());
    }
    out.push_back(std::move(step));
  }
  return out;
}

}  // namespace

LoaderState LoaderState::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(std::string("loader state is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw InvalidArgument("loader state must be a JSON object");
  LoaderState s;
  s.version = j.contains("version") ? number32(j, "version") : 1;
  if (s.version < 1 || s.version > kVersion)
    throw InvalidArgument("loader state version " + std::to_string(s.version) +
                          " is not supported (this ferry reads 1.." + std::to_string(kVersion) +
                          ")");
  s.epoch = number(j, "epoch");
  s.next_batch = number(j, "next_batch");
  s.seed = number(j, "seed");
  s.order = parse_order(string(j, "order"));
  s.window_pages = number32(j, "window_pages");
  s.batch_size = number(j, "batch_size");
  s.rank = number32(j, "rank");
  s.world_size = number32(j, "world_size");
  if (!need(j, "drop_last").is_boolean())
    throw InvalidArgument("loader state: 'drop_last' is not a boolean");
  s.drop_last = j["drop_last"].get<bool>();
  s.num_samples = number(j, "num_samples");
  s.file_xxh64 = number(j, "file_xxh64");
  if (j.contains("borrowed")) s.borrowed = parse_borrowed(string(j, "borrowed"));
  if (s.version >= 2) {
    const std::string rem = string(j, "remainder");
    if (rem != "pad" && rem != "drop")
      throw InvalidArgument("loader state: 'remainder' must be 'pad' or 'drop'");
    s.remainder = rem == "pad" ? ShardRemainder::pad : ShardRemainder::drop;
    const std::string err = string(j, "on_error");
    if (err != "raise" && err != "skip")
      throw InvalidArgument("loader state: 'on_error' must be 'raise' or 'skip'");
    s.skip_errors = err == "skip";
    s.data_xxh64 = number(j, "data_xxh64");
    s.fields = string(j, "fields");
    s.pipeline_xxh64 = number(j, "pipeline_xxh64");
  }
  if (s.version >= 3) s.elastic = parse_elastic(need(j, "elastic"));
  return s;
}

std::vector<LoaderState> LoaderState::list_from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(std::string("rank states are not valid JSON: ") + e.what());
  }
  if (!j.is_array()) throw InvalidArgument("rank states must be a JSON list of loader states");
  std::vector<LoaderState> out;
  for (const auto& item : j) out.push_back(LoaderState::from_json(item.dump()));
  return out;
}

}  // namespace ferry
