#include "alou/core/config.hpp"

#include <toml++/toml.h>

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <thread>

namespace alou {

unsigned ServerSettings::io_threads() const {
  if (threads > 0) return static_cast<unsigned>(threads);
  return std::max(1u, std::thread::hardware_concurrency());
}

namespace {

// How a setting is typed; environment overrides are converted by kind.
enum class Kind { kString, kUint, kInt, kBool, kDouble, kStringList, kUintList, kStringMap };

struct Field {
  const char* key;
  Kind kind;
  std::function<void(const toml::node&)> assign;  // node already checked for kind
  std::int64_t min = 0;
  std::int64_t max = std::numeric_limits<std::int32_t>::max();
  std::vector<std::string> one_of = {};
};

std::string describe(const toml::node& n) {
  std::ostringstream os;
  if (n.is_string()) {
    os << '"' << *n.value<std::string>() << '"';
  } else if (n.is_table()) {
    os << "a table";
  } else if (n.is_array()) {
    os << "an array";
  } else if (n.is_integer()) {
    os << *n.value<std::int64_t>();
  } else if (n.is_floating_point()) {
    os << *n.value<double>();
  } else if (n.is_boolean()) {
    os << (*n.value<bool>() ? "true" : "false");
  } else {
    os << "a date/time";
  }
  return os.str();
}

const char* kind_name(const Field& f) {
  switch (f.kind) {
    case Kind::kString: return "a string";
    case Kind::kUint: return "a non-negative integer";
    case Kind::kInt: return "an integer";
    case Kind::kBool: return "true or false";
    case Kind::kDouble: return "a number";
    case Kind::kStringList: return "an array of strings";
    case Kind::kUintList: return "an array of non-negative integers";
    case Kind::kStringMap: return "a table of strings";
  }
  return "a value";
}

class Binder {
 public:
  Binder(std::string source, EnvLookup env) : source_(std::move(source)), env_(env) {}

  Error error(const std::string& path, const std::string& what) const {
    return Error{400, "config_invalid", source_ + ": " + path + ": " + what};
  }

  // Checks `n` against the field and assigns it.
  std::optional<Error> assign(const Field& f, const toml::node& n, const std::string& path) const {
    bool ok = false;
    switch (f.kind) {
      case Kind::kString: ok = n.is_string(); break;
      case Kind::kUint:
      case Kind::kInt: ok = n.is_integer(); break;
      case Kind::kBool: ok = n.is_boolean(); break;
      case Kind::kDouble: ok = n.is_number(); break;
      case Kind::kStringList: {
        ok = n.is_array();
        if (ok) {
          for (const auto& e : *n.as_array()) ok = ok && e.is_string();
        }
        break;
      }
      case Kind::kUintList: {
        ok = n.is_array();
        if (ok) {
          for (const auto& e : *n.as_array()) ok = ok && e.is_integer() && *e.value<std::int64_t>() >= 0;
        }
        break;
      }
      case Kind::kStringMap: {
        ok = n.is_table();
        if (ok) {
          for (const auto& [mk, mv] : *n.as_table()) {
            if (!mv.is_string()) {
              return error(path + "." + std::string(mk.str()), "expected a string, got " + describe(mv));
            }
            if (!f.one_of.empty()) {
              const auto v = *mv.value<std::string>();
              bool found = false;
              std::string list;
              for (const auto& o : f.one_of) {
                found = found || o == v;
                list += (list.empty() ? "" : ", ") + o;
              }
              if (!found) {
                return error(path + "." + std::string(mk.str()), "expected one of " + list + ", got \"" + v + "\"");
              }
            }
          }
          f.assign(n);
          return std::nullopt;
        }
        break;
      }
    }
    if (!ok) return error(path, std::string("expected ") + kind_name(f) + ", got " + describe(n));
    if (f.kind == Kind::kUint || f.kind == Kind::kInt) {
      const auto v = *n.value<std::int64_t>();
      if (v < f.min || v > f.max) {
        return error(path, "expected an integer in [" + std::to_string(f.min) + ", " +
                               std::to_string(f.max) + "], got " + std::to_string(v));
      }
    }
    if (!f.one_of.empty()) {
      const auto v = *n.value<std::string>();
      bool found = false;
      std::string list;
      for (const auto& o : f.one_of) {
        found = found || o == v;
        list += (list.empty() ? "" : ", ") + o;
      }
      if (!found) return error(path, "expected one of " + list + ", got \"" + v + "\"");
    }
    f.assign(n);
    return std::nullopt;
  }

  // Converts an environment string to a TOML node of the field's kind.
  std::optional<Error> assign_env(const Field& f, const std::string& var, const std::string& value) const {
    const std::string path = "environment " + var;
    switch (f.kind) {
      case Kind::kString: return assign(f, toml::value<std::string>(value), path);
      case Kind::kStringMap: return error(path, "a table cannot be set from the environment");
      case Kind::kUint:
      case Kind::kInt: {
        std::int64_t v = 0;
        auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
        if (ec != std::errc{} || p != value.data() + value.size()) {
          return error(path, std::string("expected ") + kind_name(f) + ", got \"" + value + "\"");
        }
        return assign(f, toml::value<std::int64_t>(v), path);
      }
      case Kind::kBool: {
        if (value == "true" || value == "1") return assign(f, toml::value<bool>(true), path);
        if (value == "false" || value == "0") return assign(f, toml::value<bool>(false), path);
        return error(path, "expected true or false, got \"" + value + "\"");
      }
      case Kind::kDouble: {
        char* end = nullptr;
        const double v = std::strtod(value.c_str(), &end);
        if (value.empty() || end != value.c_str() + value.size()) {
          return error(path, "expected a number, got \"" + value + "\"");
        }
        return assign(f, toml::value<double>(v), path);
      }
      case Kind::kStringList: {
        toml::array arr;
        std::string item;
        std::istringstream in(value);
        while (std::getline(in, item, ',')) {
          if (!item.empty()) arr.push_back(item);
        }
        return assign(f, arr, path);
      }
      case Kind::kUintList: {
        toml::array arr;
        std::string item;
        std::istringstream in(value);
        while (std::getline(in, item, ',')) {
          std::int64_t v = 0;
          auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
          if (ec != std::errc{} || p != item.data() + item.size()) {
            return error(path, std::string("expected ") + kind_name(f) + ", got \"" + value + "\"");
          }
          arr.push_back(v);
        }
        return assign(f, arr, path);
      }
    }
    return std::nullopt;
  }

  // Binds one [section] table: unknown keys are errors, then env overrides.
  std::optional<Error> section(const toml::table* table, const std::string& name,
                               const std::vector<Field>& fields, bool env_overrides = true) const {
    if (table) {
      for (const auto& [k, v] : *table) {
        const std::string key(k.str());
        const Field* f = find(fields, key);
        if (!f) return error(name + "." + key, "unknown setting");
        if (auto e = assign(*f, v, name + "." + key)) return e;
      }
    }
    if (!env_overrides) return std::nullopt;
    for (const auto& f : fields) {
      std::string var = "ALOU_" + upper(name) + "_" + upper(f.key);
      if (auto v = env_(var.c_str())) {
        if (auto e = assign_env(f, var, *v)) return e;
      }
    }
    return std::nullopt;
  }

  static const Field* find(const std::vector<Field>& fields, const std::string& key) {
    for (const auto& f : fields) {
      if (key == f.key) return &f;
    }
    return nullptr;
  }

  static std::string upper(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
  }

 private:
  std::string source_;
  EnvLookup env_;
};

template <class T>
std::function<void(const toml::node&)> set_to(T& target) {
  return [&target](const toml::node& n) {
    if constexpr (std::is_same_v<T, std::string>) {
      target = *n.value<std::string>();
    } else if constexpr (std::is_same_v<T, bool>) {
      target = *n.value<bool>();
    } else if constexpr (std::is_same_v<T, double>) {
      target = *n.value<double>();
    } else if constexpr (std::is_same_v<T, std::optional<double>>) {
      target = *n.value<double>();
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      target.clear();
      for (const auto& e : *n.as_array()) target.push_back(*e.value<std::string>());
    } else if constexpr (std::is_same_v<T, std::vector<std::uint64_t>>) {
      target.clear();
      for (const auto& e : *n.as_array()) target.push_back(static_cast<std::uint64_t>(*e.value<std::int64_t>()));
    } else {
      target = static_cast<T>(*n.value<std::int64_t>());
    }
  };
}

constexpr std::int64_t kU32Max = std::numeric_limits<std::uint32_t>::max();

std::optional<Error> bind_array(const Binder& b, const toml::node* node, const std::string& name,
                                const std::function<std::vector<Field>(std::size_t)>& make) {
  if (!node) return std::nullopt;
  const auto* arr = node->as_array();
  if (!arr) return b.error(name, "expected an array of tables ([[" + name + "]])");
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const std::string path = name + "[" + std::to_string(i) + "]";
    const auto* t = (*arr)[i].as_table();
    if (!t) return b.error(path, "expected a table");
    if (auto e = b.section(t, path, make(i), false)) return e;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> process_env(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  return std::string(v);
}

Result<Settings> parse_settings(std::string_view toml_text, std::string source, EnvLookup env) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << source << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
       << e.description();
    return Error{400, "config_invalid", os.str()};
  }

  Settings s;
  s.source = source;
  Binder b(source, env);

  auto& sv = s.server;
  const std::vector<Field> server = {
      {"listen", Kind::kString, set_to(sv.listen)},
      {"threads", Kind::kUint, set_to(sv.threads), 0, 256},
      {"max_body_bytes", Kind::kUint, set_to(sv.max_body_bytes), 1, std::int64_t{1} << 40},
      {"max_header_bytes", Kind::kUint, set_to(sv.max_header_bytes), 1024, 1 << 20},
      {"max_connections", Kind::kUint, set_to(sv.max_connections), 1, 1'000'000},
      {"header_timeout_ms", Kind::kUint, set_to(sv.header_timeout_ms), 1, kU32Max},
      {"body_timeout_ms", Kind::kUint, set_to(sv.body_timeout_ms), 1, kU32Max},
      {"idle_timeout_ms", Kind::kUint, set_to(sv.idle_timeout_ms), 1, kU32Max},
      {"shutdown_timeout_ms", Kind::kUint, set_to(sv.shutdown_timeout_ms), 0, kU32Max},
      {"sse_heartbeat_ms", Kind::kUint, set_to(sv.sse_heartbeat_ms), 10, kU32Max},
      {"sse_queue_events", Kind::kUint, set_to(sv.sse_queue_events), 1, 1'000'000},
      {"ws_max_message_bytes", Kind::kUint, set_to(sv.ws_max_message_bytes), 16, kU32Max},
      {"tls_cert", Kind::kString, set_to(sv.tls_cert)},
      {"tls_key", Kind::kString, set_to(sv.tls_key)},
      {"cors_origins", Kind::kStringList, set_to(sv.cors_origins)},
      {"web_dir", Kind::kString, set_to(sv.web_dir)},
      {"busy_poll_us", Kind::kUint, set_to(sv.busy_poll_us), 0, 100'000},
  };
  auto& st = s.storage;
  const std::vector<Field> storage = {
      {"data_dir", Kind::kString, set_to(st.data_dir)},
      {"redis_url", Kind::kString, set_to(st.redis_url)},
      {"sqlite_synchronous", Kind::kString, set_to(st.sqlite_synchronous), 0, 0, {"NORMAL", "FULL"}},
      {"redis_timeout_ms", Kind::kUint, set_to(st.redis_timeout_ms), 1, kU32Max},
      {"kv_flush_ms", Kind::kUint, set_to(st.kv_flush_ms), 1, kU32Max},
  };
  const std::vector<Field> log = {
      {"level", Kind::kString, set_to(s.log.level), 0, 0,
       {"trace", "debug", "info", "warn", "error", "critical", "off"}},
      {"format", Kind::kString, set_to(s.log.format), 0, 0, {"text", "json"}},
      {"access_log", Kind::kBool, set_to(s.log.access_log)},
  };
  const std::vector<Field> auth = {
      {"admin_key_env", Kind::kString, set_to(s.auth.admin_key_env)},
      {"key_cache_ms", Kind::kUint, set_to(s.auth.key_cache_ms), 0, kU32Max},
  };
  const std::vector<Field> wallet = {
      {"domain", Kind::kString, set_to(s.wallet.domain)},
      {"uri", Kind::kString, set_to(s.wallet.uri)},
      {"nonce_ttl_s", Kind::kUint, set_to(s.wallet.nonce_ttl_s), 1, kU32Max},
      {"token_ttl_s", Kind::kUint, set_to(s.wallet.token_ttl_s), 1, kU32Max},
      {"chain_ids", Kind::kUintList, set_to(s.wallet.chain_ids)},
      {"solana_chains", Kind::kStringList, set_to(s.wallet.solana_chains)},
      {"jwt_secret_env", Kind::kString, set_to(s.wallet.jwt_secret_env)},
      {"nonce_per_minute", Kind::kUint, set_to(s.wallet.nonce_per_minute), 1, kU32Max},
      {"clock_skew_s", Kind::kUint, set_to(s.wallet.clock_skew_s), 0, 3600},
  };
  const std::vector<Field> sessions = {
      {"ttl_s", Kind::kUint, set_to(s.sessions.ttl_s), 1, kU32Max},
      {"max_messages", Kind::kUint, set_to(s.sessions.max_messages), 1, 100000},
  };
  const std::vector<Field> agent = {
      {"model", Kind::kString, set_to(s.agent.model)},
      {"max_steps", Kind::kUint, set_to(s.agent.max_steps), 1, 1000},
      {"workers", Kind::kUint, set_to(s.agent.workers), 1, 1024},
      {"queue_max", Kind::kUint, set_to(s.agent.queue_max), 0, 1'000'000},
      {"tool_timeout_s", Kind::kUint, set_to(s.agent.tool_timeout_s), 1, 86400},
      {"approval_ttl_s", Kind::kUint, set_to(s.agent.approval_ttl_s), 1, kU32Max},
      {"max_tool_output_bytes", Kind::kUint, set_to(s.agent.max_tool_output_bytes), 256, 64 << 20},
      {"tool_risk", Kind::kStringMap,
       [&s](const toml::node& nd) {
         for (const auto& [mk, mv] : *nd.as_table()) s.agent.tool_risk[std::string(mk.str())] = *mv.value<std::string>();
       },
       0, 0, {"read", "read_only", "write", "external_write"}},
  };

  const std::vector<Field> billing = {
      {"default_max_output_tokens", Kind::kUint, set_to(s.billing.default_max_output_tokens), 1, kU32Max},
      {"checkpoint_every", Kind::kUint, set_to(s.billing.checkpoint_every), 1, kU32Max},
  };

  struct Section {
    const char* name;
    const std::vector<Field>* fields;
  };
  const Section sections[] = {{"server", &server}, {"storage", &storage}, {"log", &log},
                              {"auth", &auth},     {"wallet", &wallet},   {"sessions", &sessions},
                              {"agent", &agent},   {"billing", &billing}};
  for (const auto& [k, v] : root) {
    const std::string key(k.str());
    bool known = key == "providers" || key == "models" || key == "mcp_servers";
    for (const auto& sec : sections) known = known || key == sec.name;
    if (!known) return b.error(key, "unknown section");
    if (!known || key == "providers" || key == "models" || key == "mcp_servers") continue;
    if (!v.is_table()) return b.error(key, "expected a table ([" + key + "])");
  }
  for (const auto& sec : sections) {
    if (auto e = b.section(root[sec.name].as_table(), sec.name, *sec.fields)) return *e;
  }

  // [[providers]]
  if (const auto* n = root.get("providers")) {
    const auto* arr = n->as_array();
    s.providers.resize(arr ? arr->size() : 0);
  }
  if (auto e = bind_array(b, root.get("providers"), "providers", [&](std::size_t i) {
        auto& p = s.providers[i];
        std::vector<Field> f = {
            {"name", Kind::kString, set_to(p.name)},
            {"kind", Kind::kString, set_to(p.kind), 0, 0,
             {"mock", "openai", "anthropic", "gemini", "azure", "bedrock"}},
            {"base_url", Kind::kString, set_to(p.base_url)},
            {"api_key_env", Kind::kString, set_to(p.api_key_env)},
        };
        // Kind-specific string options (api_version, region, deployment, ...).
        for (const char* extra : {"api_version", "region", "deployment", "organization", "anthropic_version"}) {
          f.push_back({extra, Kind::kString, [&p, extra](const toml::node& nd) {
                         p.extra[extra] = *nd.value<std::string>();
                       }});
        }
        // The request field an output cap goes in (openai, azure): docs/billing.md.
        f.push_back({"max_tokens_field", Kind::kString,
                     [&p](const toml::node& nd) { p.extra["max_tokens_field"] = *nd.value<std::string>(); }, 0, 0,
                     {"max_tokens", "max_completion_tokens"}});
        // kind anthropic: max_tokens when the client sends none (Anthropic requires one).
        f.push_back({"default_max_tokens", Kind::kInt,
                     [&p](const toml::node& nd) { p.extra["default_max_tokens"] = std::to_string(*nd.value<std::int64_t>()); },
                     1});
        return f;
      })) {
    return *e;
  }
  // [[models]]
  if (const auto* n = root.get("models")) {
    const auto* arr = n->as_array();
    s.models.resize(arr ? arr->size() : 0);
  }
  if (const auto* n = root.get("models")) {
    if (!n->as_array()) return b.error("models", "expected an array of tables ([[models]])");
    const auto& arr = *n->as_array();
    for (std::size_t i = 0; i < arr.size(); ++i) {
      const auto* t = arr[i].as_table();
      if (!t) return b.error("models[" + std::to_string(i) + "]", "expected a table");
      auto& m = s.models[i];
      const std::string path = "models[" + std::to_string(i) + "]";
      for (const auto& [k, v] : *t) {
        const std::string key(k.str());
        if (key == "name" || key == "fallbacks") {
          const Field f = key == "name" ? Field{"name", Kind::kString, set_to(m.name)}
                                        : Field{"fallbacks", Kind::kStringList, set_to(m.fallbacks)};
          if (auto e = b.assign(f, v, path + "." + key)) return *e;
        } else if (key == "routes") {
          const auto* ra = v.as_array();
          if (!ra) return b.error(path + ".routes", "expected an array of tables");
          m.routes.resize(ra->size());
          for (std::size_t j = 0; j < ra->size(); ++j) {
            const std::string rp = path + ".routes[" + std::to_string(j) + "]";
            const auto* rt = (*ra)[j].as_table();
            if (!rt) return b.error(rp, "expected a table {provider, model, weight}");
            auto& r = m.routes[j];
            if (auto e = b.section(rt, rp,
                                   {{"provider", Kind::kString, set_to(r.provider)},
                                    {"model", Kind::kString, set_to(r.model)},
                                    {"weight", Kind::kUint, set_to(r.weight), 0, 1'000'000}},
                                   false)) {
              return *e;
            }
            if (r.provider.empty()) return b.error(rp + ".provider", "is required");
          }
        } else if (key == "max_output_tokens") {
          if (auto e = b.assign(Field{"max_output_tokens", Kind::kUint, set_to(m.max_output_tokens), 1, kU32Max}, v,
                                path + "." + key)) {
            return *e;
          }
        } else if (key == "price") {
          const auto* pt = v.as_table();
          if (!pt) return b.error(path + ".price", "expected a table {input_per_mtok, output_per_mtok}");
          if (auto e = b.section(pt, path + ".price",
                                 {{"input_per_mtok", Kind::kDouble, set_to(m.price.input_per_mtok)},
                                  {"output_per_mtok", Kind::kDouble, set_to(m.price.output_per_mtok)},
                                  {"cached_input_per_mtok", Kind::kDouble,
                                   set_to(m.price.cached_input_per_mtok)}},
                                 false)) {
            return *e;
          }
          if (m.price.input_per_mtok < 0 || m.price.output_per_mtok < 0 ||
              m.price.cached_input_per_mtok.value_or(0) < 0) {
            return b.error(path + ".price", "prices must not be negative");
          }
        } else {
          return b.error(path + "." + key, "unknown setting");
        }
      }
      if (m.name.empty()) return b.error(path + ".name", "is required");
    }
  }
  // [[mcp_servers]]
  if (const auto* n = root.get("mcp_servers")) {
    const auto* arr = n->as_array();
    s.mcp_servers.resize(arr ? arr->size() : 0);
  }
  if (auto e = bind_array(b, root.get("mcp_servers"), "mcp_servers", [&](std::size_t i) {
        auto& m = s.mcp_servers[i];
        return std::vector<Field>{
            {"name", Kind::kString, set_to(m.name)},
            {"transport", Kind::kString, set_to(m.transport), 0, 0, {"stdio", "http"}},
            {"command", Kind::kStringList, set_to(m.command)},
            {"url", Kind::kString, set_to(m.url)},
            {"env", Kind::kStringList, set_to(m.env)},
            {"cwd", Kind::kString, set_to(m.cwd)},
            {"timeout_ms", Kind::kUint, set_to(m.timeout_ms), 1, kU32Max},
            {"ping_interval_ms", Kind::kUint, set_to(m.ping_interval_ms), 10, kU32Max},
        };
      })) {
    return *e;
  }

  // Cross-field checks.
  for (std::size_t i = 0; i < s.providers.size(); ++i) {
    const auto& p = s.providers[i];
    const std::string path = "providers[" + std::to_string(i) + "]";
    if (p.name.empty()) return b.error(path + ".name", "is required");
    if (p.kind.empty()) return b.error(path + ".kind", "is required");
    for (std::size_t j = 0; j < i; ++j) {
      if (s.providers[j].name == p.name) return b.error(path + ".name", "duplicate provider \"" + p.name + "\"");
    }
  }
  for (std::size_t i = 0; i < s.models.size(); ++i) {
    const auto& m = s.models[i];
    const std::string path = "models[" + std::to_string(i) + "]";
    for (std::size_t j = 0; j < i; ++j) {
      if (s.models[j].name == m.name) return b.error(path + ".name", "duplicate model \"" + m.name + "\"");
    }
    for (std::size_t r = 0; r < m.routes.size(); ++r) {
      bool found = false;
      for (const auto& p : s.providers) found = found || p.name == m.routes[r].provider;
      if (!found) {
        return b.error(path + ".routes[" + std::to_string(r) + "].provider",
                       "no provider named \"" + m.routes[r].provider + "\"");
      }
    }
  }
  for (std::size_t i = 0; i < s.mcp_servers.size(); ++i) {
    const auto& m = s.mcp_servers[i];
    const std::string path = "mcp_servers[" + std::to_string(i) + "]";
    if (m.name.empty()) return b.error(path + ".name", "is required");
    // The name prefixes its tools' names ("<server>__<tool>", at most 64 characters).
    bool name_ok = m.name.size() <= 30 && m.name.find("__") == std::string::npos;
    for (char c : m.name) name_ok = name_ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-');
    if (!name_ok) {
      return b.error(path + ".name", "expected at most 30 characters of [a-zA-Z0-9_-] without \"__\", got \"" + m.name + "\"");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (s.mcp_servers[j].name == m.name) return b.error(path + ".name", "duplicate MCP server \"" + m.name + "\"");
    }
    if (m.transport.empty()) return b.error(path + ".transport", "is required (stdio or http)");
    if (m.transport == "stdio" && m.command.empty()) return b.error(path + ".command", "is required for stdio");
    if (m.transport == "http" && m.url.empty()) return b.error(path + ".url", "is required for http");
  }
  if (sv.tls_cert.empty() != sv.tls_key.empty()) {
    return b.error(sv.tls_cert.empty() ? "server.tls_cert" : "server.tls_key",
                   "tls_cert and tls_key must be set together");
  }
  if (sv.listen.rfind(':') == std::string::npos) {
    return b.error("server.listen", "expected HOST:PORT, got \"" + sv.listen + "\"");
  }
  return s;
}

Result<Settings> load_settings(const std::string& path, EnvLookup env) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{400, "config_invalid", path + ": cannot read the file"};
  std::ostringstream os;
  os << in.rdbuf();
  return parse_settings(os.str(), path, env);
}

}  // namespace alou
