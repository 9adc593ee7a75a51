// Per-key tool allow-lists (api_keys.tools, Principal::tools): what a key
// sees in GET /api/tools and /mcp tools/list, and that a call outside its
// list is refused before anything reaches a server.
#include "harness.hpp"

#include "alou/auth/keys.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace alou::itest {
namespace {

using json = nlohmann::json;

const std::string kFakeServer = ALOU_MCP_FAKE_SERVER;

json body_json(const Res& r) { return json::parse(r.body(), nullptr, false); }

bool has(const std::vector<std::string>& v, std::string_view s) { return std::find(v.begin(), v.end(), s) != v.end(); }

class AllowList : public AppTest {
 protected:
  void configure(Settings& s) override {
    for (const char* name : {"fake", "other"}) {
      McpServerSettings f;
      f.name = name;
      f.transport = "stdio";
      f.command = {"python3", kFakeServer};
      f.timeout_ms = 2000;
      s.mcp_servers.push_back(f);
    }
  }

  void SetUp() override {
    AppTest::SetUp();
    ASSERT_TRUE(eventually(
        [&] {
          const json b = body_json(get("/api/mcp/servers", bearer(kAdminKey)));
          return b["servers"][0]["state"] == "ready" && b["servers"][1]["state"] == "ready";
        },
        20'000ms));
    // The fake server: echo, pid, hang, garbage, crash, grow, cancels.
    limited_ = key_with_tools({"fake__echo", "other__*"});
  }

  std::string key_with_tools(std::vector<std::string> tools) {
    auth::NewKey nk;
    nk.name = unique_name("tools");
    nk.tools = std::move(tools);
    auto created = app_->keys().create(nk);
    if (!created) {
      ADD_FAILURE() << created.error().message;
      return {};
    }
    return created->second;
  }

  std::vector<std::string> rest_tools(const std::string& key) {
    const Res r = get("/api/tools", bearer(key));
    EXPECT_EQ(r.result_int(), 200) << r.body();
    std::vector<std::string> names;
    const json b = body_json(r);  // named: a range-for over a temporary's member dangles
    for (const auto& t : b["tools"]) names.push_back(t["name"]);
    return names;
  }

  Res call(const std::string& key, const std::string& tool, const json& args = json::object()) {
    Headers h = bearer(key);
    h.emplace_back("content-type", "application/json");
    return request(bhttp::verb::post, "/api/tools/" + tool + "/call", h, json{{"arguments", args}}.dump());
  }

  std::uint64_t calls(const std::string& server, const std::string& tool) {
    return counter("alou_mcp_tool_calls_total", {{"server", server}, {"tool", tool}});
  }

  Res mcp(const std::string& key, const json& msg, const std::string& session = {}) {
    Headers h = bearer(key);
    h.emplace_back("content-type", "application/json");
    h.emplace_back("accept", "application/json, text/event-stream");
    if (!session.empty()) h.emplace_back("mcp-session-id", session);
    return request(bhttp::verb::post, "/mcp", h, msg.dump());
  }

  std::string initialize(const std::string& key) {
    const Res r = mcp(key, {{"jsonrpc", "2.0"},
                            {"id", 1},
                            {"method", "initialize"},
                            {"params",
                             {{"protocolVersion", "2025-11-25"},
                              {"capabilities", json::object()},
                              {"clientInfo", {{"name", "itest"}, {"version", "1"}}}}}});
    EXPECT_EQ(r.result_int(), 200) << r.body();
    return header(r, "mcp-session-id");
  }

  json rpc(const std::string& key, const std::string& sid, int id, const std::string& method, json params) {
    const Res r = mcp(key, {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}}, sid);
    EXPECT_EQ(r.result_int(), 200) << r.body();
    return body_json(r);
  }

  std::string limited_;
};

TEST_F(AllowList, TheListIsStoredWithTheKeyAndBadEntriesAreRefused) {
  auto list = app_->keys().list();
  ASSERT_TRUE(list) << list.error().message;
  const auto it = std::find_if(list->begin(), list->end(), [](const auth::ApiKey& k) { return !k.tools.empty(); });
  ASSERT_NE(it, list->end());
  EXPECT_EQ(it->tools, (std::vector<std::string>{"fake__echo", "other__*"}));

  const std::vector<std::string> bads = {"*", "__*", "fake*", "a b", "a,b", "x__*__*", std::string(65, 'a'), ""};
  for (const auto& bad : bads) {
    auth::NewKey nk;
    nk.name = unique_name("badtools");
    nk.tools = {"fake__echo", bad};
    auto created = app_->keys().create(nk);
    ASSERT_FALSE(created) << "accepted \"" << bad << "\"";
    EXPECT_EQ(created.error().status, 400);
    EXPECT_EQ(created.error().code, "invalid_tools");
    EXPECT_FALSE(app_->keys().find_blocking(nk.name)) << "a refused key was written";
  }
}

TEST_F(AllowList, RestListsOnlyAllowedTools) {
  const auto names = rest_tools(limited_);
  EXPECT_TRUE(has(names, "fake__echo"));
  EXPECT_FALSE(has(names, "fake__pid"));
  EXPECT_FALSE(has(names, "fake__crash"));
  EXPECT_TRUE(has(names, "other__echo"));
  EXPECT_TRUE(has(names, "other__crash"));
  EXPECT_EQ(names.size(), 1u + 7u) << json(names).dump();
  // No list: every tool.
  const auto all = rest_tools(key_with_tools({}));
  EXPECT_EQ(all.size(), 14u) << json(all).dump();
  EXPECT_EQ(rest_tools(std::string(kAdminKey)).size(), 14u);
}

TEST_F(AllowList, RestCallOutsideTheListIs403AndNothingRuns) {
  const std::string pid_before = body_json(call(std::string(kAdminKey), "fake__pid"))["content"][0]["text"];
  const Res r = call(limited_, "fake__crash");
  EXPECT_EQ(r.result_int(), 403) << r.body();
  EXPECT_EQ(body_json(r)["error"]["code"], "tool_not_allowed") << r.body();
  EXPECT_EQ(calls("fake", "fake__crash"), 0u);
  // The same answer for a tool that does not exist: the list does not tell.
  const Res missing = call(limited_, "fake__nope");
  EXPECT_EQ(missing.result_int(), 403) << missing.body();
  EXPECT_EQ(body_json(missing)["error"]["code"], "tool_not_allowed");
  // The server never saw the crash call: same process, no restart.
  EXPECT_EQ(counter("alou_mcp_server_restarts_total", {{"server", "fake"}}), 0u);
  EXPECT_EQ(body_json(call(std::string(kAdminKey), "fake__pid"))["content"][0]["text"], pid_before);

  const Res ok = call(limited_, "fake__echo", {{"text", "hi"}});
  ASSERT_EQ(ok.result_int(), 200) << ok.body();
  EXPECT_EQ(body_json(ok)["content"][0]["text"], "echo: hi");
  const Res pattern = call(limited_, "other__echo", {{"text", "yo"}});
  ASSERT_EQ(pattern.result_int(), 200) << pattern.body();
  EXPECT_EQ(body_json(pattern)["content"][0]["text"], "echo: yo");
}

TEST_F(AllowList, McpListsOnlyAllowedToolsAndRefusesOtherCalls) {
  const std::string sid = initialize(limited_);
  ASSERT_FALSE(sid.empty());
  const json list = rpc(limited_, sid, 2, "tools/list", json::object());
  std::vector<std::string> names;
  for (const auto& t : list["result"]["tools"]) names.push_back(t["name"]);
  EXPECT_EQ(names.size(), 8u) << list.dump();
  EXPECT_TRUE(has(names, "fake__echo"));
  EXPECT_FALSE(has(names, "fake__crash"));
  EXPECT_TRUE(has(names, "other__pid"));

  const json refused = rpc(limited_, sid, 3, "tools/call", {{"name", "fake__crash"}, {"arguments", json::object()}});
  EXPECT_FALSE(refused.contains("result")) << refused.dump();
  EXPECT_EQ(refused["error"]["code"], -32602) << refused.dump();
  EXPECT_EQ(refused["error"]["data"]["code"], "tool_not_allowed") << refused.dump();
  EXPECT_EQ(calls("fake", "fake__crash"), 0u);
  EXPECT_EQ(counter("alou_mcp_server_restarts_total", {{"server", "fake"}}), 0u);

  const json ok = rpc(limited_, sid, 4, "tools/call", {{"name", "fake__echo"}, {"arguments", {{"text", "x"}}}});
  EXPECT_EQ(ok["result"]["content"][0]["text"], "echo: x") << ok.dump();
  EXPECT_EQ(calls("fake", "fake__echo"), 1u);
}

}  // namespace
}  // namespace alou::itest
