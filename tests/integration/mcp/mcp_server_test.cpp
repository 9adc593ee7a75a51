// Alou as an MCP server: POST/GET/DELETE /mcp (Streamable HTTP, MCP
// 2025-11-25) over a catalogue served by the faulty Python server.
#include "harness.hpp"

#include <nlohmann/json.hpp>

namespace alou::itest {
namespace {

using json = nlohmann::json;

const std::string kFakeServer = ALOU_MCP_FAKE_SERVER;

json body_json(const Res& r) { return json::parse(r.body(), nullptr, false); }

class McpEndpoint : public AppTest {
 protected:
  void configure(Settings& s) override {
    McpServerSettings f;
    f.name = "fake";
    f.transport = "stdio";
    f.command = {"python3", kFakeServer, "--tools", extra_tools()};
    f.timeout_ms = 1000;
    s.mcp_servers.push_back(f);
    s.wallet.uri = "http://localhost:8080";
  }

  // 120 extra tools: tools/list on /mcp needs two pages.
  static std::string extra_tools() {
    std::string out;
    for (int i = 0; i < 120; ++i) out += (i ? "," : "") + std::string("t") + std::to_string(i);
    return out;
  }

  void SetUp() override {
    AppTest::SetUp();
    ASSERT_TRUE(eventually(
        [&] {
          const json b = body_json(get("/api/mcp/servers", bearer(kAdminKey)));
          return b["servers"][0]["state"] == "ready";
        },
        20'000ms));
  }

  Res post(const json& msg, const std::string& session = {}, Headers extra = {}) {
    Headers h = bearer(kAdminKey);
    h.emplace_back("content-type", "application/json");
    h.emplace_back("accept", "application/json, text/event-stream");
    if (!session.empty()) h.emplace_back("mcp-session-id", session);
    for (auto& e : extra) h.push_back(std::move(e));
    return request(bhttp::verb::post, "/mcp", h, msg.dump());
  }

  std::string initialize(const std::string& version = "2025-11-25") {
    const Res r = post({{"jsonrpc", "2.0"},
                        {"id", 1},
                        {"method", "initialize"},
                        {"params",
                         {{"protocolVersion", version},
                          {"capabilities", json::object()},
                          {"clientInfo", {{"name", "itest"}, {"version", "1"}}}}}});
    EXPECT_EQ(r.result_int(), 200) << r.body();
    const std::string sid = header(r, "mcp-session-id");
    EXPECT_FALSE(sid.empty());
    EXPECT_EQ(post({{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}}, sid).result_int(), 202);
    return sid;
  }

  json rpc(const std::string& sid, int id, const std::string& method, json params = json::object()) {
    const Res r = post({{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}}, sid,
                       {{"mcp-protocol-version", "2025-11-25"}});
    EXPECT_EQ(r.result_int(), 200) << r.body();
    const json b = body_json(r);
    EXPECT_EQ(b["id"], id) << r.body();
    return b;
  }
};

TEST_F(McpEndpoint, InitializeNegotiatesTheVersion) {
  const Res r = post({{"jsonrpc", "2.0"},
                      {"id", "init-1"},
                      {"method", "initialize"},
                      {"params", {{"protocolVersion", "2025-06-18"}, {"capabilities", json::object()},
                                  {"clientInfo", {{"name", "x"}, {"version", "1"}}}}}});
  ASSERT_EQ(r.result_int(), 200) << r.body();
  const json b = body_json(r);
  EXPECT_EQ(b["id"], "init-1");
  EXPECT_EQ(b["result"]["protocolVersion"], "2025-06-18");
  EXPECT_TRUE(b["result"]["capabilities"].contains("tools"));
  EXPECT_EQ(b["result"]["serverInfo"]["name"], "alou");
  // An unknown version: the server offers its own.
  const Res r2 = post({{"jsonrpc", "2.0"},
                       {"id", 2},
                       {"method", "initialize"},
                       {"params", {{"protocolVersion", "1999-01-01"}, {"capabilities", json::object()},
                                   {"clientInfo", {{"name", "x"}, {"version", "1"}}}}}});
  EXPECT_EQ(body_json(r2)["result"]["protocolVersion"], "2025-11-25");
}

TEST_F(McpEndpoint, ListsEveryToolAcrossPages) {
  const std::string sid = initialize();
  std::vector<std::string> names;
  json params = json::object();
  for (int page = 0; page < 10; ++page) {
    const json b = rpc(sid, 10 + page, "tools/list", params);
    for (const auto& t : b["result"]["tools"]) names.push_back(t["name"]);
    if (!b["result"].contains("nextCursor")) break;
    params = {{"cursor", b["result"]["nextCursor"]}};
  }
  EXPECT_EQ(names.size(), 127u);  // 7 + 120, in two pages
  EXPECT_NE(std::find(names.begin(), names.end(), "fake__t119"), names.end());
  const json bad = rpc(sid, 99, "tools/list", {{"cursor", "zzz"}});
  EXPECT_EQ(bad["error"]["code"], -32602);
}

TEST_F(McpEndpoint, CallsToolsAndReportsErrors) {
  const std::string sid = initialize();
  const json ok = rpc(sid, 2, "tools/call", {{"name", "fake__echo"}, {"arguments", {{"text", "hi"}}}});
  EXPECT_EQ(ok["result"]["content"][0]["text"], "echo: hi") << ok.dump();
  EXPECT_EQ(ok["result"]["isError"], false);
  const json unknown = rpc(sid, 3, "tools/call", {{"name", "nope"}, {"arguments", json::object()}});
  EXPECT_EQ(unknown["error"]["code"], -32602) << unknown.dump();
  // Bad arguments and failures are tool results the model can read.
  const json bad = rpc(sid, 4, "tools/call", {{"name", "fake__echo"}, {"arguments", {{"text", 5}}}});
  EXPECT_EQ(bad["result"]["isError"], true) << bad.dump();
  EXPECT_NE(bad["result"]["content"][0]["text"].get<std::string>().find("/text"), std::string::npos);
  const json hang = rpc(sid, 5, "tools/call", {{"name", "fake__hang"}, {"arguments", json::object()}});
  EXPECT_EQ(hang["result"]["isError"], true) << hang.dump();
  EXPECT_EQ(rpc(sid, 6, "ping")["result"], json::object());
  EXPECT_EQ(rpc(sid, 7, "no/such/method")["error"]["code"], -32601);
}

TEST_F(McpEndpoint, SessionsAreRequiredAndEnd) {
  const json list = {{"jsonrpc", "2.0"}, {"id", 1}, {"method", "tools/list"}};
  const Res none = post(list);
  EXPECT_EQ(none.result_int(), 400) << none.body();
  EXPECT_EQ(body_json(none)["error"]["code"], -32600);
  EXPECT_EQ(post(list, "not-a-session").result_int(), 404);
  const std::string sid = initialize();
  EXPECT_EQ(post(list, sid).result_int(), 200);
  // Another key cannot use this session.
  const std::string other = create_key(unique_name("other"));
  Headers h = bearer(other);
  h.emplace_back("mcp-session-id", sid);
  h.emplace_back("content-type", "application/json");
  EXPECT_EQ(request(bhttp::verb::post, "/mcp", h, list.dump()).result_int(), 404);
  // DELETE ends it.
  Headers d = bearer(kAdminKey);
  d.emplace_back("mcp-session-id", sid);
  EXPECT_EQ(request(bhttp::verb::delete_, "/mcp", d).result_int(), 204);
  EXPECT_EQ(post(list, sid).result_int(), 404);
  EXPECT_EQ(request(bhttp::verb::delete_, "/mcp", d).result_int(), 404);
}

TEST_F(McpEndpoint, RefusesForeignOriginsBadVersionsAndNoCredentials) {
  const json init = {{"jsonrpc", "2.0"}, {"id", 1}, {"method", "initialize"},
                     {"params", {{"protocolVersion", "2025-11-25"}, {"capabilities", json::object()},
                                 {"clientInfo", {{"name", "x"}, {"version", "1"}}}}}};
  const Res evil = post(init, {}, {{"origin", "http://evil.example"}});
  EXPECT_EQ(evil.result_int(), 403) << evil.body();
  EXPECT_EQ(body_json(evil)["error"]["code"], "forbidden_origin");
  EXPECT_TRUE(header(evil, "mcp-session-id").empty());
  EXPECT_EQ(post(init, {}, {{"origin", "http://localhost:8080"}}).result_int(), 200);
  const std::string sid = initialize();
  const Res bad_version = post({{"jsonrpc", "2.0"}, {"id", 2}, {"method", "ping"}}, sid,
                               {{"mcp-protocol-version", "1999-01-01"}});
  EXPECT_EQ(bad_version.result_int(), 400);
  const Res no_auth = request(bhttp::verb::post, "/mcp", {{"content-type", "application/json"}}, init.dump());
  EXPECT_EQ(no_auth.result_int(), 401);
  EXPECT_EQ(post(json::array({init})).result_int(), 400);
  const Res garbage = request(bhttp::verb::post, "/mcp", bearer(kAdminKey), "{not json");
  EXPECT_EQ(garbage.result_int(), 400);
  EXPECT_EQ(body_json(garbage)["error"]["code"], -32700);
  Headers g = bearer(kAdminKey);
  g.emplace_back("mcp-session-id", sid);
  EXPECT_EQ(request(bhttp::verb::get, "/mcp", g).result_int(), 405);
}

}  // namespace
}  // namespace alou::itest
