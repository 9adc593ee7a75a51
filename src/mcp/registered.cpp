#include "registered.hpp"

#include "process.hpp"
#include "schema.hpp"

#include "alou/http/client.hpp"
#include "alou/mcp/jsonrpc.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace alou::mcp {
namespace net = boost::asio;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

constexpr std::size_t kMaxStdout = 1024 * 1024;
constexpr std::size_t kMaxStderr = 16 * 1024;
constexpr std::uint64_t kMaxTimeoutMs = 10 * 60 * 1000;

Error invalid(const std::string& what) { return Error::bad_request(what, "invalid_tool"); }

Result<json> ok(json j) { return Result<json>(boost::system::in_place_value, std::move(j)); }

std::optional<Error> check_common(const json& body, Risk& risk) {
  const auto r = body.find("risk");
  if (r == body.end() || !r->is_string() || !parse_risk(r->get<std::string>())) {
    return invalid("risk must be \"read_only\" or \"external_write\"");
  }
  risk = *parse_risk(r->get<std::string>());
  return std::nullopt;
}

std::optional<std::uint64_t> uint_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_unsigned()) return std::nullopt;
  return it->get<std::uint64_t>();
}

Result<std::vector<ToolDef>> parse_command(const json& body, const std::string& owner) {
  ToolDef d;
  d.kind = "command";
  d.owner = owner;
  if (auto e = check_common(body, d.risk)) return *e;
  d.name = body.value("name", "");
  if (!is_valid_tool_name(d.name)) return invalid("name must match ^[a-zA-Z0-9_-]{1,64}$");
  if (d.name.find("__") != std::string::npos) return invalid("name must not contain \"__\" (reserved for MCP servers)");
  const auto cmd = body.find("command");
  if (cmd == body.end() || !cmd->is_array() || cmd->empty()) {
    return invalid("command must be a non-empty array of strings (an argv, never a shell string)");
  }
  for (const auto& a : *cmd) {
    if (!a.is_string()) return invalid("command must be a non-empty array of strings");
  }
  if ((*cmd)[0].get<std::string>().find("{{") != std::string::npos) {
    return invalid("command[0] must be a fixed program, not a template");
  }
  json schema = body.value("input_schema", json{{"type", "object"}});
  if (auto s = InputSchema::compile(schema); !s) return invalid("input_schema: " + s.error().message);
  const std::uint64_t timeout = body.contains("timeout_ms") ? uint_field(body, "timeout_ms").value_or(0) : 10'000;
  if (timeout == 0 || timeout > kMaxTimeoutMs) return invalid("timeout_ms must be an integer in [1, 600000]");
  json limits = json::object();
  if (auto l = body.find("limits"); l != body.end()) {
    if (!l->is_object()) return invalid("limits must be an object {cpu_s, memory_mb, fsize_mb, nproc}");
    for (const auto& [k, v] : l->items()) {
      if (k != "cpu_s" && k != "memory_mb" && k != "fsize_mb" && k != "nproc") {
        return invalid("limits." + k + " is not a known limit (cpu_s, memory_mb, fsize_mb, nproc)");
      }
      if (!v.is_number_unsigned() || v.get<std::uint64_t>() == 0) return invalid("limits." + k + " must be a positive integer");
    }
    limits = *l;
  }
  d.spec = {{"kind", "command"},
            {"name", d.name},
            {"description", body.value("description", "")},
            {"risk", risk_name(d.risk)},
            {"input_schema", schema},
            {"command", *cmd},
            {"timeout_ms", timeout},
            {"limits", limits}};
  return std::vector<ToolDef>{d};
}

// Resolves local "#/components/..." references (depth-limited: cycles end as {}).
json resolve_refs(const json& node, const json& doc, int depth = 0) {
  if (depth > 20) return json::object();
  if (node.is_object()) {
    if (auto ref = node.find("$ref"); ref != node.end() && ref->is_string()) {
      const std::string r = ref->get<std::string>();
      if (r.rfind("#/", 0) == 0) {
        try {
          return resolve_refs(doc.at(json::json_pointer(r.substr(1))), doc, depth + 1);
        } catch (const std::exception&) {
          return json::object();
        }
      }
      return json::object();
    }
    json out = json::object();
    for (const auto& [k, v] : node.items()) out[k] = resolve_refs(v, doc, depth + 1);
    return out;
  }
  if (node.is_array()) {
    json out = json::array();
    for (const auto& v : node) out.push_back(resolve_refs(v, doc, depth + 1));
    return out;
  }
  return node;
}

Result<std::vector<ToolDef>> parse_openapi(const json& body, const std::string& owner) {
  Risk risk = Risk::kExternalWrite;
  if (auto e = check_common(body, risk)) return *e;
  const std::string prefix = body.value("prefix", "");
  if (!is_valid_tool_name(prefix) || prefix.size() > 30 || prefix.find("__") != std::string::npos) {
    return invalid("prefix must be 1-30 characters of [a-zA-Z0-9_-] without \"__\"");
  }
  json doc;
  if (auto d = body.find("openapi"); d != body.end()) {
    doc = *d;
  } else if (auto f = body.find("openapi_file"); f != body.end() && f->is_string()) {
    std::ifstream in(f->get<std::string>(), std::ios::binary);
    if (!in) return invalid("openapi_file: cannot read " + f->get<std::string>());
    std::ostringstream os;
    os << in.rdbuf();
    doc = json::parse(os.str(), nullptr, false);
    if (doc.is_discarded()) return invalid("openapi_file: not a JSON document");
  } else {
    return invalid("openapi (the document) or openapi_file (a path) is required");
  }
  if (!doc.is_object() || !doc.value("openapi", "").starts_with("3.")) return invalid("openapi: not an OpenAPI 3 document");
  std::string base = body.value("base_url", "");
  if (base.empty() && doc.contains("servers") && doc["servers"].is_array() && !doc["servers"].empty()) {
    base = doc["servers"][0].value("url", "");
  }
  if (!base.starts_with("http://") && !base.starts_with("https://")) {
    return invalid("base_url (or the document's servers[0].url) must be an absolute http(s) URL");
  }
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::vector<std::string> only;
  if (auto ops = body.find("operations"); ops != body.end()) {
    if (!ops->is_array()) return invalid("operations must be an array of operationIds");
    for (const auto& o : *ops) {
      if (o.is_string()) only.push_back(o.get<std::string>());
    }
  }
  if (!doc.contains("paths") || !doc["paths"].is_object()) return invalid("openapi: no paths");
  std::vector<ToolDef> out;
  for (const auto& [path, item] : doc["paths"].items()) {
    if (!item.is_object()) continue;
    const json shared_params = item.value("parameters", json::array());
    for (const char* method : {"get", "post", "put", "patch", "delete"}) {
      if (!item.contains(method)) continue;
      const json& op = item[method];
      const std::string id = op.value("operationId", "");
      if (id.empty()) return invalid("openapi: " + std::string(method) + " " + path + " has no operationId");
      if (!only.empty() && std::find(only.begin(), only.end(), id) == only.end()) continue;
      ToolDef d;
      d.kind = "http";
      d.owner = owner;
      d.risk = risk;
      d.name = prefix + "__" + id;
      if (!is_valid_tool_name(d.name)) return invalid("openapi: tool name \"" + d.name + "\" is not a valid tool name");
      json props = json::object();
      json required = json::array();
      json params = json::array();
      json all_params = shared_params;
      for (const auto& p : op.value("parameters", json::array())) all_params.push_back(p);
      for (const auto& raw : all_params) {
        const json p = resolve_refs(raw, doc);
        const std::string name = p.value("name", "");
        const std::string in = p.value("in", "");
        if (name.empty() || (in != "path" && in != "query" && in != "header")) continue;
        json schema = p.value("schema", json{{"type", "string"}});
        if (p.contains("description")) schema["description"] = p["description"];
        props[name] = schema;
        if (in == "path" || p.value("required", false)) required.push_back(name);
        params.push_back({{"name", name}, {"in", in}});
      }
      bool has_body = false;
      if (op.contains("requestBody")) {
        const json rb = resolve_refs(op["requestBody"], doc);
        if (rb.contains("content") && rb["content"].contains("application/json")) {
          props["body"] = rb["content"]["application/json"].value("schema", json::object());
          if (rb.value("required", false)) required.push_back("body");
          has_body = true;
        }
      }
      json schema = {{"type", "object"}, {"properties", props}};
      if (!required.empty()) schema["required"] = required;
      std::string upper = method;
      for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      d.spec = {{"kind", "http"},
                {"name", d.name},
                {"description", op.value("summary", op.value("description", upper + " " + path))},
                {"risk", risk_name(risk)},
                {"input_schema", schema},
                {"method", upper},
                {"url", base + path},
                {"params", params},
                {"body", has_body}};
      out.push_back(std::move(d));
    }
  }
  if (out.empty()) return invalid("openapi: no operation to register");
  return out;
}

ToolInfo info_of(const ToolDef& d) {
  ToolInfo i;
  i.name = d.name;
  i.description = d.spec.value("description", "");
  i.input_schema = d.spec.value("input_schema", json{{"type", "object"}});
  i.output_schema = nullptr;
  i.annotations = {{"readOnlyHint", d.risk == Risk::kReadOnly}};
  i.source = d.kind;
  i.upstream_name = d.name;
  i.risk = d.risk;
  i.owner = d.owner;
  return i;
}

std::string arg_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// ------------------------------------------------------------ command --

class CommandTool final : public LocalTool {
 public:
  CommandTool(const ToolDef& d, std::shared_ptr<RunningChildren> runs)
      : info_(info_of(d)), spec_(d.spec), runs_(std::move(runs)) {}
  const ToolInfo& info() const override { return info_; }

  net::awaitable<Result<json>> call(json arguments) override {
    namespace fs = std::filesystem;
    std::vector<std::string> argv;
    for (const auto& t : spec_["command"]) {
      std::string a = t.get<std::string>();
      std::string out;
      std::size_t pos = 0;
      while (true) {
        auto open = a.find("{{", pos);
        auto close = open == std::string::npos ? open : a.find("}}", open + 2);
        if (close == std::string::npos) {
          out += a.substr(pos);
          break;
        }
        out += a.substr(pos, open - pos);
        const std::string key = a.substr(open + 2, close - open - 2);
        if (arguments.contains(key)) out += arg_text(arguments[key]);
        pos = close + 2;
      }
      argv.push_back(std::move(out));
    }
    // A fresh working directory, removed afterwards.
    std::string tmpl = (fs::temp_directory_path() / "alou-tool-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) co_return Error::internal("cannot create a temp directory", "tool_failed");
    const fs::path cwd = tmpl;
    const json& l = spec_["limits"];
    Rlimits lim;
    if (l.contains("cpu_s")) lim.cpu_s = l["cpu_s"].get<std::uint64_t>();
    if (l.contains("memory_mb")) lim.memory_bytes = l["memory_mb"].get<std::uint64_t>() << 20;
    if (l.contains("fsize_mb")) lim.fsize_bytes = l["fsize_mb"].get<std::uint64_t>() << 20;
    if (l.contains("nproc")) lim.nproc = l["nproc"].get<std::uint64_t>();
    SpawnSpec spec{.argv = argv,
                   .env = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + cwd.string(), "LANG=C.UTF-8"},
                   .cwd = cwd.string(),
                   .limits = lim};
    auto result = co_await run(spec, arguments.dump());
    std::error_code ec;
    fs::remove_all(cwd, ec);
    co_return result;
  }

 private:
  struct Run {
    bool timed_out = false;
  };

  static net::awaitable<std::string> read_capped(net::posix::stream_descriptor& d, std::size_t cap) {
    std::string out;
    char buf[8192];
    for (;;) {
      auto [ec, n] = co_await d.async_read_some(net::buffer(buf), net::as_tuple(net::use_awaitable));
      if (n && out.size() < cap) out.append(buf, std::min(n, cap - out.size()));
      if (ec) break;
    }
    co_return out;
  }

  static net::awaitable<void> write_close(net::posix::stream_descriptor& d, std::string data) {
    auto [ec, n] = co_await net::async_write(d, net::buffer(data), net::as_tuple(net::use_awaitable));
    (void)ec;
    (void)n;
    boost::system::error_code ignored;
    d.close(ignored);
  }

  static Error shutting_down() { return Error{503, "shutting_down", "Alou is shutting down; the command was not run"}; }

  // SIGKILL and reaping in a coroutine of its own: the caller's was
  // cancelled, so its next wait would throw before the child is reaped.
  static void kill_and_reap_later(net::any_io_executor ex, pid_t pid, std::shared_ptr<RunningChildren> runs) {
    kill_group(pid, SIGKILL);
    auto reaper = [pid, runs = std::move(runs)]() -> net::awaitable<void> {
      co_await reap(pid, std::chrono::milliseconds(1000), runs.get());
    };
    net::co_spawn(ex, std::move(reaper), net::detached);
  }

  net::awaitable<Result<json>> run(const SpawnSpec& spec, std::string input) {
    using namespace net::experimental::awaitable_operators;
    if (runs_->closed()) co_return shutting_down();
    auto child = spawn_process(spec);
    if (!child) co_return child.error();
    auto ex = co_await net::this_coro::executor;
    net::posix::stream_descriptor in(ex, child->stdin_fd), out(ex, child->stdout_fd), err(ex, child->stderr_fd);
    const pid_t pid = child->pid;
    if (!runs_->add(pid)) {  // shutdown began during the spawn
      kill_and_reap_later(ex, pid, nullptr);
      co_return shutting_down();
    }
    const auto timeout = std::chrono::milliseconds(spec_["timeout_ms"].get<std::uint64_t>());
    auto state = std::make_shared<Run>();
    net::steady_timer timer(ex, timeout);
    auto on_timeout = [state, pid](boost::system::error_code ec) {
      if (ec) return;
      state->timed_out = true;
      kill_group(pid, SIGKILL);
    };
    timer.async_wait(on_timeout);
    std::string so, se;
    bool completed = false;
    try {
      auto both = co_await (write_close(in, std::move(input)) && read_capped(out, kMaxStdout) &&
                            read_capped(err, kMaxStderr));
      so = std::move(std::get<0>(both));
      se = std::move(std::get<1>(both));
      completed = true;
    } catch (const std::exception&) {
      // Cancelled (the caller went away): the process goes too.
    }
    timer.cancel();
    // A cancelled read ends like EOF: the state tells a cancelled call
    // from a finished one.
    const auto cs = co_await net::this_coro::cancellation_state;
    if (!completed || cs.cancelled() != net::cancellation_type::none) {
      kill_and_reap_later(ex, pid, runs_);
      co_return Error{499, "cancelled", "the call was cancelled; the command was killed"};
    }
    const int st = co_await reap(pid, std::chrono::milliseconds(1000), runs_.get());
    const auto& l = spec_["limits"];
    std::string reason;
    if (state->timed_out) {
      reason = "killed: timeout after " + std::to_string(timeout.count()) + " ms";
    } else if (WIFSIGNALED(st) && (WTERMSIG(st) == SIGXCPU || (WTERMSIG(st) == SIGKILL && l.contains("cpu_s")))) {
      reason = "killed: CPU limit of " + l.value("cpu_s", json(0)).dump() + " s exceeded";
    } else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGXFSZ) {
      reason = "killed: file size limit exceeded";
    } else if (WIFSIGNALED(st) && runs_->closed()) {
      reason = "killed: Alou is shutting down";
    } else if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
      reason = describe_status(st);
    }
    if (!reason.empty()) {
      std::string text = "command failed (" + reason + ")";
      if (!se.empty()) text += ": " + se;
      co_return ok(text_result(std::move(text), true));
    }
    co_return ok(text_result(std::move(so), false));
  }

  ToolInfo info_;
  json spec_;
  std::shared_ptr<RunningChildren> runs_;
};

// --------------------------------------------------------------- HTTP --

std::string pct_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

class HttpTool final : public LocalTool {
 public:
  HttpTool(const ToolDef& d, http::Client& client) : info_(info_of(d)), spec_(d.spec), client_(client) {}
  const ToolInfo& info() const override { return info_; }

  net::awaitable<Result<json>> call(json arguments) override {
    std::string url = spec_["url"].get<std::string>();
    std::string query;
    http::ClientRequest req;
    req.method = http::bhttp::string_to_verb(spec_["method"].get<std::string>());
    for (const auto& p : spec_["params"]) {
      const std::string name = p["name"];
      if (!arguments.contains(name)) continue;
      const std::string v = arg_text(arguments[name]);
      const std::string in = p["in"];
      if (in == "path") {
        const std::string token = "{" + name + "}";
        for (auto pos = url.find(token); pos != std::string::npos; pos = url.find(token)) {
          url.replace(pos, token.size(), pct_encode(v));
        }
      } else if (in == "query") {
        query += (query.empty() ? "" : "&") + pct_encode(name) + "=" + pct_encode(v);
      } else if (in == "header") {
        req.headers.emplace_back(name, v);
      }
    }
    if (!query.empty()) url += "?" + query;
    req.url = url;
    req.headers.emplace_back("Accept", "application/json");
    if (spec_.value("body", false) && arguments.contains("body")) {
      req.headers.emplace_back("Content-Type", "application/json");
      req.body = arguments["body"].dump();
    }
    auto r = co_await client_.request(std::move(req));
    if (!r) co_return ok(text_result("request failed: " + r.error().message, true));
    if (r->status < 200 || r->status >= 300) {
      co_return ok(text_result("HTTP " + std::to_string(r->status) + ": " + r->body.substr(0, 4096), true));
    }
    json out = text_result(r->body, false);
    json parsed = json::parse(r->body, nullptr, false);
    if (parsed.is_object()) out["structuredContent"] = std::move(parsed);
    co_return ok(std::move(out));
  }

 private:
  ToolInfo info_;
  json spec_;
  http::Client& client_;
};

}  // namespace

Result<std::vector<ToolDef>> parse_registration(const json& body, const std::string& owner) {
  if (!body.is_object()) return invalid("the body must be a JSON object");
  const std::string kind = body.value("kind", "");
  if (kind == "command") return parse_command(body, owner);
  if (kind == "openapi") return parse_openapi(body, owner);
  return invalid("kind must be \"command\" or \"openapi\"");
}

Result<std::shared_ptr<LocalTool>> make_local_tool(const ToolDef& def, http::Client& client,
                                                   std::shared_ptr<RunningChildren> runs) {
  if (def.kind == "command") return std::shared_ptr<LocalTool>(std::make_shared<CommandTool>(def, std::move(runs)));
  if (def.kind == "http") return std::shared_ptr<LocalTool>(std::make_shared<HttpTool>(def, client));
  return Error::internal("unknown tool kind " + def.kind);
}

}  // namespace alou::mcp
