#include "alou/mcp/service.hpp"

#include "local_tool.hpp"
#include "process.hpp"
#include "registered.hpp"
#include "schema.hpp"
#include "upstream.hpp"

#include "alou/core/metrics.hpp"
#include "alou/core/random.hpp"
#include "alou/http/client.hpp"
#include "alou/http/exchange.hpp"
#include "alou/http/router.hpp"
#include "alou/mcp/jsonrpc.hpp"
#include "alou/storage/database.hpp"
#include "alou/storage/kv.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>
#include <boost/beast/http/field.hpp>
#include <spdlog/spdlog.h>

#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

namespace alou::mcp {
namespace net = boost::asio;
using namespace std::chrono_literals;

const char* risk_name(Risk r) { return r == Risk::kReadOnly ? "read_only" : "external_write"; }

std::optional<Risk> parse_risk(std::string_view s) {
  if (s == "read_only") return Risk::kReadOnly;
  if (s == "external_write") return Risk::kExternalWrite;
  return std::nullopt;
}

json ToolInfo::to_mcp() const {
  json t = {{"name", name}, {"description", description}, {"inputSchema", input_schema}};
  if (!title.empty()) t["title"] = title;
  if (!output_schema.is_null()) t["outputSchema"] = output_schema;
  if (!annotations.is_null()) t["annotations"] = annotations;
  return t;
}

json ToolInfo::to_api() const {
  json t = to_mcp();
  t["source"] = source;
  t["server"] = server.empty() ? json(nullptr) : json(server);
  t["upstream_name"] = upstream_name;
  t["risk"] = risk_name(risk);
  if (!owner.empty()) t["owner"] = owner;
  return t;
}

namespace {

constexpr std::size_t kPageSize = 100;                 // tools/list, resources/list, prompts/list on /mcp
constexpr std::chrono::seconds kSessionTtl{3600};     // /mcp session idle expiry
constexpr std::string_view kSessionPrefix = "mcp:session:";
constexpr std::chrono::milliseconds kChildGrace{2000};  // SIGTERM → SIGKILL of command runs at shutdown

struct ToolMetrics {
  metrics::Counter* calls;
  metrics::Counter* errors;
  metrics::Histogram* latency;
};

struct Entry {
  ToolInfo info;
  std::shared_ptr<Upstream> upstream;          // MCP tools
  std::shared_ptr<LocalTool> local;            // registered tools
  std::shared_ptr<const InputSchema> schema;   // null: the schema did not compile (no validation)
  ToolMetrics* metrics = nullptr;
};

struct PromptEntry {
  json prompt;                                 // with the exposed name
  std::string upstream_name;
  std::shared_ptr<Upstream> upstream;
};

struct Snapshot {
  std::vector<Entry> tools;
  std::unordered_map<std::string, std::size_t> index;
  std::map<std::string, std::vector<std::string>> issues;  // by server: names not exposed and why
  std::vector<PromptEntry> prompts;
  std::unordered_map<std::string, std::size_t> prompt_index;
  json resources = json::array();
  json resource_templates = json::array();
  std::unordered_map<std::string, std::shared_ptr<Upstream>> resource_owner;  // uri -> server
};

Risk risk_of(const json& annotations) {
  if (annotations.is_object()) {
    auto ro = annotations.find("readOnlyHint");
    if (ro != annotations.end() && ro->is_boolean() && ro->get<bool>()) return Risk::kReadOnly;
  }
  return Risk::kExternalWrite;
}

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

class ServiceImpl final : public Service, public ToolCatalogue {
 public:
  explicit ServiceImpl(ServiceDeps d)
      : settings_(d.settings), ex_(d.executor), db_(d.db), kv_(d.kv), metrics_(d.metrics),
        tool_client_(d.executor, http::ClientOptions{}, &d.metrics),
        snapshot_(std::make_shared<Snapshot>()) {
    for (const auto& s : settings_.mcp_servers) {
      auto on_change = [this] { rebuild(); };
      upstreams_.push_back(s.transport == "http" ? Upstream::make_http(s, ex_, metrics_, on_change)
                                                 : Upstream::make_stdio(s, ex_, metrics_, on_change));
    }
    rebuild();
  }

  // --- Service ---
  void add_routes(http::Router& router) override;

  void start() override {
    for (auto& u : upstreams_) u->start();
  }

  net::awaitable<void> shutdown() override {
    if (shut_down_) co_return;
    shut_down_ = true;
    // Command runs still in flight after the server's grace: SIGTERM, then
    // SIGKILL, each reaped before the io threads stop.
    co_await end_children(*runs_, kChildGrace);
    for (auto& u : upstreams_) co_await u->shutdown();
  }

  json servers_status() const override {
    auto snap = snapshot();
    json out = json::array();
    for (const auto& u : upstreams_) {
      json s = u->status();
      auto it = snap->issues.find(u->name());
      s["issues"] = it == snap->issues.end() ? json::array() : json(it->second);
      out.push_back(std::move(s));
    }
    return out;
  }

  ToolCatalogue& catalogue() override { return *this; }

  // --- ToolCatalogue ---
  std::vector<ToolInfo> list_tools(const Principal* who) const override {
    auto snap = snapshot();
    std::vector<ToolInfo> out;
    out.reserve(snap->tools.size());
    for (const auto& e : snap->tools) {
      if (!who || who->may_use_tool(e.info.name)) out.push_back(e.info);
    }
    return out;
  }

  std::optional<ToolInfo> find_tool(std::string_view name) const override {
    auto snap = snapshot();
    auto it = snap->index.find(std::string(name));
    if (it == snap->index.end()) return std::nullopt;
    return snap->tools[it->second].info;
  }

  net::awaitable<Result<json>> call_tool(std::string name, json arguments, const Principal* who) override {
    // Before the lookup: a key gets the same answer for a tool outside its
    // list whether or not the tool exists.
    if (who && !who->may_use_tool(name)) {
      co_return Error::forbidden("this key may not use the tool \"" + name + "\"", "tool_not_allowed");
    }
    auto snap = snapshot();
    auto it = snap->index.find(name);
    if (it == snap->index.end()) co_return Error::not_found("no tool named \"" + name + "\"", "tool_not_found");
    const Entry& e = snap->tools[it->second];
    if (arguments.is_null()) arguments = json::object();
    if (!arguments.is_object()) {
      co_return Error::bad_request("arguments of " + name + " must be a JSON object", "invalid_arguments");
    }
    if (e.schema) {
      auto problems = e.schema->validate(arguments);
      if (!problems.empty()) {
        std::string msg = "arguments do not match the input schema of " + name + ": ";
        for (std::size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
        co_return Error::bad_request(std::move(msg), "invalid_arguments");
      }
    }
    const auto t0 = std::chrono::steady_clock::now();
    e.metrics->calls->inc();
    Result<json> r = Error::internal("no route for the tool");
    if (e.upstream) {
      json params = {{"name", e.info.upstream_name}, {"arguments", std::move(arguments)}};
      r = co_await e.upstream->request("tools/call", std::move(params));
      if (r && (!r->is_object() || !(*r)["content"].is_array())) {
        r = Error{502, "mcp_upstream_error", "MCP server \"" + e.info.server + "\" returned a malformed CallToolResult"};
      }
    } else if (e.local) {
      r = co_await e.local->call(std::move(arguments));
    }
    e.metrics->latency->observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (!r || r->value("isError", false)) e.metrics->errors->inc();
    if (r && !r->contains("isError")) (*r)["isError"] = false;
    co_return r;
  }

  // Loads the registered tools (start-up: blocking).
  Result<void> load_registered() {
    std::vector<ToolDef> defs;
    try {
      auto load = [](SQLite::Database& c) {
        std::vector<ToolDef> out;
        SQLite::Statement q(c, "SELECT name, kind, owner, risk, spec FROM tools ORDER BY created_at_ms, name");
        while (q.executeStep()) {
          ToolDef d;
          d.name = q.getColumn(0).getString();
          d.kind = q.getColumn(1).getString();
          d.owner = q.getColumn(2).getString();
          d.risk = parse_risk(q.getColumn(3).getString()).value_or(Risk::kExternalWrite);
          d.spec = json::parse(q.getColumn(4).getString(), nullptr, false);
          out.push_back(std::move(d));
        }
        return out;
      };
      defs = db_.run_sync(load);
    } catch (const std::exception& e) {
      return Error::internal(std::string("loading registered tools: ") + e.what(), "storage_error");
    }
    for (const auto& d : defs) {
      auto t = make_local_tool(d, tool_client_, runs_);
      if (!t) {
        spdlog::warn("registered tool {} not loaded: {}", d.name, t.error().message);
        continue;
      }
      std::lock_guard lock(local_mu_);
      local_.push_back(*t);
    }
    rebuild();
    return {};
  }

 private:
  std::shared_ptr<const Snapshot> snapshot() const {
    std::lock_guard lock(snap_mu_);
    return snapshot_;
  }

  ToolMetrics* tool_metrics(const std::string& server, const std::string& tool) {
    // Called under rebuild_mu_.
    const std::string key = server + "\n" + tool;
    auto it = tool_metrics_.find(key);
    if (it != tool_metrics_.end()) return &it->second;
    const metrics::Labels labels = {{"server", server}, {"tool", tool}};
    ToolMetrics m{
        .calls = &metrics_.counter("alou_mcp_tool_calls_total", "Tool calls through the catalogue", labels),
        .errors = &metrics_.counter("alou_mcp_tool_errors_total",
                                    "Tool calls that failed or returned isError", labels),
        .latency = &metrics_.histogram("alou_mcp_tool_latency_seconds", "Duration of a tool call", labels),
    };
    return &tool_metrics_.emplace(key, m).first->second;
  }

  // Rebuilds the catalogue from every source (any thread).
  void rebuild() {
    std::lock_guard rebuild_lock(rebuild_mu_);
    auto snap = std::make_shared<Snapshot>();
    auto report = [&](const std::string& key, const std::string& msg) {
      snap->issues[key].push_back(msg);
      // Once per distinct issue, not at every rebuild.
      if (logged_issues_.insert(key + "\n" + msg).second) spdlog::warn("mcp {}: {}", key, msg);
    };
    auto add = [&](Entry e, const std::string& issue_key) {
      if (!is_valid_tool_name(e.info.name)) {
        report(issue_key, "tool \"" + e.info.upstream_name + "\" not exposed: \"" + e.info.name +
                              "\" does not match ^[a-zA-Z0-9_-]{1,64}$");
        return;
      }
      if (auto it = snap->index.find(e.info.name); it != snap->index.end()) {
        const auto& first = snap->tools[it->second].info;
        report(issue_key, "tool \"" + e.info.upstream_name + "\" not exposed: the name \"" + e.info.name +
                              "\" is already taken by " +
                              (first.server.empty() ? "registered tool" : "server " + first.server) + " (\"" +
                              first.upstream_name + "\")");
        return;
      }
      auto schema = InputSchema::compile(e.info.input_schema);
      if (schema) {
        e.schema = *schema;
      } else {
        report(issue_key, "tool \"" + e.info.name + "\": arguments not validated: " + schema.error().message);
      }
      e.metrics = tool_metrics(e.info.server.empty() ? "registered" : e.info.server, e.info.name);
      snap->index.emplace(e.info.name, snap->tools.size());
      snap->tools.push_back(std::move(e));
    };
    for (const auto& u : upstreams_) {
      const ServerLists l = u->lists();
      for (const auto& t : l.tools) {
        if (!t.is_object()) continue;
        Entry e;
        e.info.upstream_name = str(t, "name");
        e.info.name = exposed_name(u->name(), e.info.upstream_name);
        e.info.title = str(t, "title");
        e.info.description = str(t, "description");
        e.info.input_schema = t.value("inputSchema", json{{"type", "object"}});
        e.info.output_schema = t.value("outputSchema", json(nullptr));
        e.info.annotations = t.value("annotations", json(nullptr));
        e.info.source = "mcp";
        e.info.server = u->name();
        e.info.risk = risk_of(e.info.annotations);
        e.upstream = u;
        add(std::move(e), u->name());
      }
      for (const auto& p : l.prompts) {
        if (!p.is_object()) continue;
        PromptEntry pe{.prompt = p, .upstream_name = str(p, "name"), .upstream = u};
        const std::string exposed = exposed_name(u->name(), pe.upstream_name);
        if (snap->prompt_index.count(exposed)) continue;
        pe.prompt["name"] = exposed;
        snap->prompt_index.emplace(exposed, snap->prompts.size());
        snap->prompts.push_back(std::move(pe));
      }
      for (const auto& r : l.resources) {
        const std::string uri = str(r, "uri");
        if (uri.empty() || snap->resource_owner.count(uri)) continue;
        snap->resource_owner.emplace(uri, u);
        snap->resources.push_back(r);
      }
      for (const auto& r : l.resource_templates) snap->resource_templates.push_back(r);
    }
    std::vector<std::shared_ptr<LocalTool>> local;
    {
      std::lock_guard lock(local_mu_);
      local = local_;
    }
    for (const auto& t : local) {
      Entry e;
      e.info = t->info();
      e.local = t;
      add(std::move(e), "registered");
    }
    std::lock_guard lock(snap_mu_);
    snapshot_ = std::move(snap);
  }

  // --- routes ---
  net::awaitable<http::Response> list_servers(http::Exchange& ex) {
    co_return ex.json(http::Status::ok, json{{"servers", servers_status()}}.dump());
  }

  net::awaitable<http::Response> list_tools_route(http::Exchange& ex) {
    json tools = json::array();
    for (const auto& t : list_tools(ex.principal ? &*ex.principal : nullptr)) tools.push_back(t.to_api());
    co_return ex.json(http::Status::ok, json{{"tools", std::move(tools)}}.dump());
  }

  net::awaitable<http::Response> call_route(http::Exchange& ex) {
    json body = json::parse(ex.request().body(), nullptr, false);
    if (ex.request().body().empty()) body = json::object();
    if (!body.is_object()) {
      co_return ex.error(Error::bad_request("the request body is not a JSON object", "invalid_json"));
    }
    json args = body.value("arguments", json::object());
    auto r = co_await call_tool(std::string(ex.param("name")), std::move(args),
                                ex.principal ? &*ex.principal : nullptr);
    if (!r) co_return ex.error(r.error());
    co_return ex.json(http::Status::ok, r->dump(-1, ' ', false, json::error_handler_t::replace));
  }

  net::awaitable<http::Response> register_route(http::Exchange& ex) {
    const json body = json::parse(ex.request().body(), nullptr, false);
    if (!body.is_object()) {
      co_return ex.error(Error::bad_request("the request body is not a JSON object", "invalid_json"));
    }
    const std::string owner = ex.principal ? ex.principal->id : std::string();
    auto defs = parse_registration(body, owner);
    if (!defs) co_return ex.error(defs.error());
    std::vector<std::shared_ptr<LocalTool>> tools;
    {
      auto snap = snapshot();
      for (const auto& d : *defs) {
        if (snap->index.count(d.name)) {
          co_return ex.error(Error::conflict("a tool named \"" + d.name + "\" already exists", "tool_exists"));
        }
        auto t = make_local_tool(d, tool_client_, runs_);
        if (!t) co_return ex.error(t.error());
        tools.push_back(*t);
      }
    }
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    auto insert = [defs = *defs, now_ms](SQLite::Database& c) -> std::string {
      try {
        SQLite::Transaction tx(c);
        for (const auto& d : defs) {
          SQLite::Statement q(c, "INSERT INTO tools (name, kind, owner, risk, spec, created_at_ms) VALUES (?, ?, ?, ?, ?, ?)");
          q.bind(1, d.name);
          q.bind(2, d.kind);
          q.bind(3, d.owner);
          q.bind(4, risk_name(d.risk));
          q.bind(5, d.spec.dump());
          q.bind(6, static_cast<std::int64_t>(now_ms));
          q.exec();
        }
        tx.commit();
        return {};
      } catch (const SQLite::Exception& e) {
        return e.getErrorCode() == SQLITE_CONSTRAINT ? "exists" : e.what();
      }
    };
    const std::string failed = co_await db_.run(std::move(insert));
    if (failed == "exists") co_return ex.error(Error::conflict("a tool with that name already exists", "tool_exists"));
    if (!failed.empty()) co_return ex.error(Error::internal("storing the tool failed", "storage_error"));
    {
      std::lock_guard lock(local_mu_);
      for (auto& t : tools) local_.push_back(t);
    }
    rebuild();
    json out = json::array();
    for (const auto& t : tools) out.push_back(t->info().to_api());
    co_return ex.json(http::Status::created, json{{"tools", std::move(out)}}.dump());
  }

  // --- /mcp (Streamable HTTP, MCP 2025-11-25) ---
  bool origin_allowed(const http::Exchange& ex) const {
    const auto origin = ex.request()[http::bhttp::field::origin];
    if (origin.empty()) return true;  // not a browser
    for (const auto& o : settings_.server.cors_origins) {
      if (o == "*" || o == origin) return true;
    }
    return origin == settings_.wallet.uri;
  }

  http::Response rpc(http::Exchange& ex, http::Status status, const json& msg) {
    return ex.json(status, msg.dump(-1, ' ', false, json::error_handler_t::replace));
  }

  http::Response rpc_error(http::Exchange& ex, http::Status status, int code, std::string_view message) {
    return rpc(ex, status, make_error(nullptr, code, message));
  }

  struct SessionCheck {
    std::optional<http::Response> refused;
    std::string version;
  };

  net::awaitable<SessionCheck> check_session(http::Exchange& ex) {
    SessionCheck out;
    const std::string sid(ex.request()["mcp-session-id"]);
    if (sid.empty()) {
      out.refused = rpc_error(ex, http::Status::bad_request, kInvalidRequest,
                              "Bad Request: Mcp-Session-Id header is required");
      co_return out;
    }
    auto got = co_await kv_.get(std::string(kSessionPrefix) + sid);
    if (!got) {
      out.refused = rpc_error(ex, http::Status::service_unavailable, kInternalError, got.error().message);
      co_return out;
    }
    json s = *got ? json::parse(**got, nullptr, false) : json();
    if (!s.is_object() || s.value("p", "") != (ex.principal ? ex.principal->id : std::string())) {
      out.refused = rpc_error(ex, http::Status::not_found, kInvalidRequest, "Session not found");
      co_return out;
    }
    out.version = s.value("v", std::string(kProtocolVersion));
    auto slid = co_await kv_.expire(std::string(kSessionPrefix) + sid, kSessionTtl);
    (void)slid;
    co_return out;
  }

  net::awaitable<http::Response> mcp_post(http::Exchange& ex) {
    if (!origin_allowed(ex)) co_return ex.error(Error::forbidden("Origin not allowed", "forbidden_origin"));
    const std::string header_version(ex.request()["mcp-protocol-version"]);
    if (!header_version.empty() && !is_supported_version(header_version)) {
      co_return rpc_error(ex, http::Status::bad_request, kInvalidRequest,
                          "Unsupported MCP-Protocol-Version: " + header_version);
    }
    const json body = json::parse(ex.request().body(), nullptr, false);
    if (body.is_discarded()) co_return rpc_error(ex, http::Status::bad_request, kParseError, "Parse error");
    if (body.is_array()) {
      co_return rpc_error(ex, http::Status::bad_request, kInvalidRequest, "JSON-RPC batches are not supported");
    }
    auto msg = parse_message(body);
    if (!msg) co_return rpc_error(ex, http::Status::bad_request, kInvalidRequest, msg.error().message);

    if (msg->kind == Message::Kind::kRequest && msg->method == "initialize") {
      const std::string asked = msg->params.is_object() ? str(msg->params, "protocolVersion") : "";
      const std::string version = is_supported_version(asked) ? asked : std::string(kProtocolVersion);
      const std::string sid = random_hex(16);
      const json session = {{"p", ex.principal ? ex.principal->id : std::string()}, {"v", version}};
      auto stored = co_await kv_.set(std::string(kSessionPrefix) + sid, session.dump(), kSessionTtl);
      if (!stored) {
        co_return rpc(ex, http::Status::service_unavailable, make_error(msg->id, kInternalError, stored.error().message));
      }
      json result = {{"protocolVersion", version},
                     {"capabilities",
                      {{"tools", {{"listChanged", false}}},
                       {"resources", {{"listChanged", false}}},
                       {"prompts", {{"listChanged", false}}}}},
                     {"serverInfo", {{"name", "alou"}, {"title", "Alou gateway"}, {"version", "0.1.0"}}},
                     {"instructions", "Tools of every MCP server configured in Alou, named <server>__<tool>, "
                                      "and the tools registered in Alou."}};
      auto res = rpc(ex, http::Status::ok, make_result(msg->id, std::move(result)));
      res.set("Mcp-Session-Id", sid);
      co_return res;
    }

    auto session = co_await check_session(ex);
    if (session.refused) co_return std::move(*session.refused);
    if (msg->kind != Message::Kind::kRequest) {
      http::Response res{http::Status::accepted, ex.request().version()};
      co_return res;
    }
    json reply = co_await dispatch(ex, *msg);
    co_return rpc(ex, http::Status::ok, reply);
  }

  // Pages `items` with an offset cursor.
  static std::optional<json> page(const json& items, const json& params, const char* key) {
    std::size_t offset = 0;
    if (params.is_object() && params.contains("cursor")) {
      const auto& c = params["cursor"];
      if (!c.is_string()) return std::nullopt;
      const std::string s = c.get<std::string>();
      if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 9) return std::nullopt;
      offset = std::stoul(s);
      if (offset > items.size()) return std::nullopt;
    }
    json out = {{key, json::array()}};
    const std::size_t end = std::min(items.size(), offset + kPageSize);
    for (std::size_t i = offset; i < end; ++i) out[key].push_back(items[i]);
    if (end < items.size()) out["nextCursor"] = std::to_string(end);
    return out;
  }

  net::awaitable<json> dispatch(http::Exchange& ex, const Message& m) {
    const json params = m.params.is_object() ? m.params : json::object();
    auto snap = snapshot();
    if (m.method == "ping") co_return make_result(m.id, json::object());
    if (m.method == "logging/setLevel") co_return make_result(m.id, json::object());
    if (m.method == "tools/list") {
      json all = json::array();
      for (const auto& t : list_tools(ex.principal ? &*ex.principal : nullptr)) all.push_back(t.to_mcp());
      auto p = page(all, params, "tools");
      if (!p) co_return make_error(m.id, kInvalidParams, "Invalid cursor");
      co_return make_result(m.id, std::move(*p));
    }
    if (m.method == "tools/call") {
      const std::string name = str(params, "name");
      if (name.empty()) co_return make_error(m.id, kInvalidParams, "params.name is required");
      auto r = co_await call_tool(name, params.value("arguments", json::object()),
                                  ex.principal ? &*ex.principal : nullptr);
      if (r) co_return make_result(m.id, std::move(*r));
      if (r.error().code == "tool_not_found") co_return make_error(m.id, kInvalidParams, "Unknown tool: " + name);
      if (r.error().code == "tool_not_allowed") {
        co_return make_error(m.id, kInvalidParams, "Tool not allowed for this key: " + name,
                             json{{"code", "tool_not_allowed"}});
      }
      // Input validation and execution failures are tool results the model
      // can read and act on (MCP 2025-11-25, Tools: error handling).
      co_return make_result(m.id, text_result(r.error().message, true));
    }
    if (m.method == "prompts/list") {
      json all = json::array();
      for (const auto& p : snap->prompts) all.push_back(p.prompt);
      auto p = page(all, params, "prompts");
      if (!p) co_return make_error(m.id, kInvalidParams, "Invalid cursor");
      co_return make_result(m.id, std::move(*p));
    }
    if (m.method == "prompts/get") {
      const std::string name = str(params, "name");
      auto it = snap->prompt_index.find(name);
      if (it == snap->prompt_index.end()) co_return make_error(m.id, kInvalidParams, "Unknown prompt: " + name);
      const auto& pe = snap->prompts[it->second];
      json up = params;
      up["name"] = pe.upstream_name;
      auto r = co_await pe.upstream->request("prompts/get", std::move(up));
      if (!r) co_return make_error(m.id, kInternalError, r.error().message);
      co_return make_result(m.id, std::move(*r));
    }
    if (m.method == "resources/list") {
      auto p = page(snap->resources, params, "resources");
      if (!p) co_return make_error(m.id, kInvalidParams, "Invalid cursor");
      co_return make_result(m.id, std::move(*p));
    }
    if (m.method == "resources/templates/list") {
      auto p = page(snap->resource_templates, params, "resourceTemplates");
      if (!p) co_return make_error(m.id, kInvalidParams, "Invalid cursor");
      co_return make_result(m.id, std::move(*p));
    }
    if (m.method == "resources/read") {
      const std::string uri = str(params, "uri");
      if (uri.empty()) co_return make_error(m.id, kInvalidParams, "params.uri is required");
      std::vector<std::shared_ptr<Upstream>> candidates;
      if (auto it = snap->resource_owner.find(uri); it != snap->resource_owner.end()) {
        candidates.push_back(it->second);
      } else {
        // Not listed: a templated URI; ask the servers that have templates.
        for (const auto& u : upstreams_) {
          if (!u->lists().resource_templates.empty()) candidates.push_back(u);
        }
      }
      for (const auto& u : candidates) {
        json read_params = {{"uri", uri}};  // not inside co_await: GCC 12 (initializer_list)
        auto r = co_await u->request("resources/read", std::move(read_params));
        if (r) co_return make_result(m.id, std::move(*r));
      }
      co_return make_error(m.id, kResourceNotFound, "Resource not found", json{{"uri", uri}});
    }
    co_return make_error(m.id, kMethodNotFound, "Method not found: " + m.method);
  }

  net::awaitable<http::Response> mcp_get(http::Exchange& ex) {
    if (!origin_allowed(ex)) co_return ex.error(Error::forbidden("Origin not allowed", "forbidden_origin"));
    // Alou sends nothing unprompted, so it offers no GET stream (the spec
    // allows 405 here).
    http::Response res{http::Status::method_not_allowed, ex.request().version()};
    res.set(http::bhttp::field::allow, "POST, DELETE");
    co_return res;
  }

  net::awaitable<http::Response> mcp_delete(http::Exchange& ex) {
    if (!origin_allowed(ex)) co_return ex.error(Error::forbidden("Origin not allowed", "forbidden_origin"));
    auto session = co_await check_session(ex);
    if (session.refused) co_return std::move(*session.refused);
    const std::string sid(ex.request()["mcp-session-id"]);
    auto gone = co_await kv_.del(std::string(kSessionPrefix) + sid);
    (void)gone;
    http::Response res{http::Status::no_content, ex.request().version()};
    co_return res;
  }

  const Settings& settings_;
  net::any_io_executor ex_;
  storage::Database& db_;
  storage::Kv& kv_;
  metrics::Registry& metrics_;
  http::Client tool_client_;  // HTTP (OpenAPI) tools
  std::shared_ptr<RunningChildren> runs_ = std::make_shared<RunningChildren>();  // command tools in flight
  std::vector<std::shared_ptr<Upstream>> upstreams_;
  bool shut_down_ = false;

  mutable std::mutex snap_mu_;
  std::shared_ptr<const Snapshot> snapshot_;
  std::mutex rebuild_mu_;
  std::map<std::string, ToolMetrics> tool_metrics_;
  std::set<std::string> logged_issues_;
  std::mutex local_mu_;
  std::vector<std::shared_ptr<LocalTool>> local_;

  friend class Service;
};

void ServiceImpl::add_routes(http::Router& router) {
  const http::RouteOptions owner{.access = http::Access::kOwner};
  const http::RouteOptions member{.access = http::Access::kAuthenticated};
  const http::RouteOptions watched{.access = http::Access::kAuthenticated, .watch_client = true};
  router.get("/api/mcp/servers", [this](http::Exchange& ex) { return list_servers(ex); }, owner);
  router.get("/api/tools", [this](http::Exchange& ex) { return list_tools_route(ex); }, member);
  router.post("/api/tools", [this](http::Exchange& ex) { return register_route(ex); }, owner);
  router.post("/api/tools/{name}/call", [this](http::Exchange& ex) { return call_route(ex); }, watched);
  router.post("/mcp", [this](http::Exchange& ex) { return mcp_post(ex); }, watched);
  router.get("/mcp", [this](http::Exchange& ex) { return mcp_get(ex); }, member);
  router.del("/mcp", [this](http::Exchange& ex) { return mcp_delete(ex); }, member);
}

}  // namespace

Result<std::unique_ptr<Service>> Service::create(ServiceDeps deps) {
  auto s = std::make_unique<ServiceImpl>(deps);
  if (auto r = s->load_registered(); !r) return r.error();
  return std::unique_ptr<Service>(std::move(s));
}

}  // namespace alou::mcp
