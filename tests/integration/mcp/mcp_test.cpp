// The MCP proxy against real MCP servers: the npm reference servers
// (@modelcontextprotocol/server-everything over stdio and Streamable HTTP,
// server-filesystem over stdio) from tests/e2e/node_modules, and a
// deliberately faulty Python server (fake_mcp_server.py) for restarts,
// timeouts, malformed output, pagination and name collisions.
#include "harness.hpp"

#include "alou/core/metrics.hpp"

#include <spawn.h>

#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

namespace alou::itest {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kNodeModules = ALOU_E2E_NODE_MODULES;
const std::string kFakeServer = ALOU_MCP_FAKE_SERVER;

json body_json(const Res& r) { return json::parse(r.body(), nullptr, false); }

void expect_error(const Res& r, int status, std::string_view code) {
  EXPECT_EQ(r.result_int(), status) << r.body();
  const json b = body_json(r);
  ASSERT_TRUE(b.is_object() && b.contains("error")) << r.body();
  EXPECT_EQ(b["error"]["code"], code) << r.body();
  EXPECT_TRUE(b["error"]["message"].is_string());
  EXPECT_FALSE(header(r, "x-request-id").empty());
}

McpServerSettings stdio_server(std::string name, std::vector<std::string> command) {
  McpServerSettings s;
  s.name = std::move(name);
  s.transport = "stdio";
  s.command = std::move(command);
  s.timeout_ms = 10'000;
  return s;
}

McpServerSettings fake(std::string name, std::vector<std::string> extra = {}) {
  std::vector<std::string> cmd = {"python3", kFakeServer};
  for (auto& e : extra) cmd.push_back(std::move(e));
  return stdio_server(std::move(name), std::move(cmd));
}

std::string bin(const std::string& name) { return kNodeModules + "/.bin/" + name; }

class Mcp : public AppTest {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(bin("mcp-server-everything")))
        << "run scripts/setup (npm ci in tests/e2e): " << bin("mcp-server-everything") << " is missing";
    AppTest::SetUp();
  }

  Headers admin() const { return bearer(kAdminKey); }

  json servers() {
    const Res r = get("/api/mcp/servers", admin());
    EXPECT_EQ(r.result_int(), 200) << r.body();
    return body_json(r)["servers"];
  }

  json server(std::string_view name) {
    for (auto& s : servers()) {
      if (s["name"] == name) return s;
    }
    return json();
  }

  // Waits until the server is ready (and, optionally, has restarted `restarts` times).
  bool wait_ready(std::string_view name, std::chrono::milliseconds within = 20'000ms, std::uint64_t restarts = 0) {
    return eventually(
        [&] {
          const json s = server(name);
          return s.is_object() && s["state"] == "ready" && s["restarts"].get<std::uint64_t>() >= restarts;
        },
        within);
  }

  json tools() {
    const Res r = get("/api/tools", admin());
    EXPECT_EQ(r.result_int(), 200) << r.body();
    return body_json(r)["tools"];
  }

  json tool(std::string_view name) {
    for (auto& t : tools()) {
      if (t["name"] == name) return t;
    }
    return json();
  }

  Res call(std::string_view name, const json& arguments, const Headers& h = {}) {
    Headers hh = h.empty() ? admin() : h;
    hh.emplace_back("content-type", "application/json");
    return request(bhttp::verb::post, "/api/tools/" + std::string(name) + "/call", hh,
                   json{{"arguments", arguments}}.dump());
  }

  static std::string text_of(const Res& r) {
    const json b = body_json(r);
    if (!b.is_object() || !b.contains("content") || !b["content"].is_array() || b["content"].empty()) return {};
    return b["content"][0].value("text", "");
  }
};

// ------------------------------------------------------ server-everything --

class McpEverything : public Mcp {
 protected:
  void configure(Settings& s) override {
    s.mcp_servers.push_back(stdio_server("everything", {bin("mcp-server-everything"), "stdio"}));
  }
};

TEST_F(McpEverything, ListsItsToolsUnderThePrefixedNames) {
  ASSERT_TRUE(wait_ready("everything")) << servers().dump();
  const json s = server("everything");
  EXPECT_EQ(s["transport"], "stdio");
  EXPECT_EQ(s["protocol_version"], "2025-11-25");
  EXPECT_GE(s["tools"].get<int>(), 5);
  EXPECT_EQ(s["issues"], json::array());
  const json echo = tool("everything__echo");
  ASSERT_TRUE(echo.is_object()) << tools().dump();
  EXPECT_EQ(echo["source"], "mcp");
  EXPECT_EQ(echo["server"], "everything");
  EXPECT_EQ(echo["upstream_name"], "echo");
  EXPECT_EQ(echo["risk"], "read_only");  // annotations.readOnlyHint
  EXPECT_EQ(echo["inputSchema"]["required"], json::array({"message"}));
  for (const auto& t : tools()) {
    EXPECT_TRUE(t["name"].get<std::string>().rfind("everything__", 0) == 0) << t["name"];
  }
}

TEST_F(McpEverything, CallsATool) {
  ASSERT_TRUE(wait_ready("everything"));
  const Res r = call("everything__echo", {{"message", "hello there"}});
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(body_json(r)["isError"], false);
  EXPECT_EQ(text_of(r), "Echo: hello there");
  const Res sum = call("everything__get-sum", {{"a", 2}, {"b", 40}});
  ASSERT_EQ(sum.result_int(), 200) << sum.body();
  EXPECT_NE(text_of(sum).find("42"), std::string::npos) << sum.body();
  EXPECT_EQ(counter("alou_mcp_tool_calls_total", {{"server", "everything"}, {"tool", "everything__echo"}}), 1u);
  EXPECT_EQ(counter("alou_mcp_tool_errors_total", {{"server", "everything"}, {"tool", "everything__echo"}}), 0u);
  EXPECT_NE(metrics_text().find("alou_mcp_tool_latency_seconds_count{server=\"everything\",tool=\"everything__echo\"} 1"),
            std::string::npos);
}

TEST_F(McpEverything, ArgumentsFailingTheSchemaAre400AndNothingIsSent) {
  ASSERT_TRUE(wait_ready("everything"));
  const Res missing = call("everything__echo", json::object());
  expect_error(missing, 400, "invalid_arguments");
  EXPECT_NE(body_json(missing)["error"]["message"].get<std::string>().find("message"), std::string::npos)
      << missing.body();
  const Res wrong_type = call("everything__get-sum", {{"a", "two"}, {"b", 3}});
  expect_error(wrong_type, 400, "invalid_arguments");
  EXPECT_NE(body_json(wrong_type)["error"]["message"].get<std::string>().find("/a"), std::string::npos)
      << wrong_type.body();
  // Nothing reached the server.
  EXPECT_EQ(counter("alou_mcp_tool_calls_total", {{"server", "everything"}, {"tool", "everything__echo"}}), 0u);
  EXPECT_EQ(counter("alou_mcp_tool_calls_total", {{"server", "everything"}, {"tool", "everything__get-sum"}}), 0u);
}

TEST_F(McpEverything, BadRequestsAreRefused) {
  ASSERT_TRUE(wait_ready("everything"));
  expect_error(call("everything__nope", json::object()), 404, "tool_not_found");
  expect_error(call("everything__echo", json::array({1})), 400, "invalid_arguments");
  Headers h = admin();
  h.emplace_back("content-type", "application/json");
  expect_error(request(bhttp::verb::post, "/api/tools/everything__echo/call", h, "{nope"), 400, "invalid_json");
  expect_error(request(bhttp::verb::post, "/api/tools/everything__echo/call", {}, "{}"), 401, "missing_credentials");
  const std::string member = create_key(unique_name("member"));
  expect_error(get("/api/mcp/servers", bearer(member)), 403, "owner_only");
  // A member may list and call tools.
  EXPECT_EQ(get("/api/tools", bearer(member)).result_int(), 200);
  EXPECT_EQ(call("everything__echo", {{"message", "m"}}, bearer(member)).result_int(), 200);
  EXPECT_EQ(counter("alou_mcp_tool_calls_total", {{"server", "everything"}, {"tool", "everything__echo"}}), 1u);
}

// ----------------------------------------------------- server-filesystem --

class McpFilesystem : public Mcp {
 protected:
  void configure(Settings& s) override {
    root_ = fs::canonical(dir_);
    std::ofstream(root_ / "hello.txt") << "hello from a file\n";
    s.mcp_servers.push_back(stdio_server("fs", {bin("mcp-server-filesystem"), root_.string()}));
  }
  fs::path root_;
};

TEST_F(McpFilesystem, ReadsAndListsTheFolder) {
  ASSERT_TRUE(wait_ready("fs")) << servers().dump();
  const Res read = call("fs__read_text_file", {{"path", (root_ / "hello.txt").string()}});
  ASSERT_EQ(read.result_int(), 200) << read.body();
  EXPECT_EQ(body_json(read)["isError"], false) << read.body();
  EXPECT_NE(text_of(read).find("hello from a file"), std::string::npos) << read.body();
  const Res list = call("fs__list_directory", {{"path", root_.string()}});
  ASSERT_EQ(list.result_int(), 200) << list.body();
  EXPECT_NE(text_of(list).find("hello.txt"), std::string::npos) << list.body();
  // Outside the allowed folder: the server's own error, as isError.
  const Res outside = call("fs__read_text_file", {{"path", "/etc/hostname"}});
  ASSERT_EQ(outside.result_int(), 200) << outside.body();
  EXPECT_EQ(body_json(outside)["isError"], true) << outside.body();
  EXPECT_EQ(counter("alou_mcp_tool_errors_total", {{"server", "fs"}, {"tool", "fs__read_text_file"}}), 1u);
}

// ------------------------------------------------------------- the fake --

class McpFake : public Mcp {
 protected:
  void configure(Settings& s) override {
    auto f = fake("fake");
    f.timeout_ms = 1500;
    s.mcp_servers.push_back(f);
  }
};

TEST_F(McpFake, PagesThroughToolsList) {
  ASSERT_TRUE(wait_ready("fake")) << servers().dump();
  // 7 tools in pages of 3.
  EXPECT_EQ(server("fake")["tools"], 7);
  for (const char* t : {"echo", "pid", "hang", "garbage", "crash", "grow", "cancels"}) {
    EXPECT_TRUE(tool(std::string("fake__") + t).is_object()) << t;
  }
  EXPECT_EQ(tool("fake__echo")["risk"], "read_only");
  EXPECT_EQ(tool("fake__pid")["risk"], "external_write");
}

TEST_F(McpFake, KilledServerIsRestartedAndLaterCallsSucceed) {
  ASSERT_TRUE(wait_ready("fake"));
  const Res first = call("fake__pid", json::object());
  ASSERT_EQ(first.result_int(), 200) << first.body();
  const int pid = std::stoi(text_of(first));
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(wait_ready("fake", 10'000ms, 1)) << servers().dump();
  const Res second = call("fake__pid", json::object());
  ASSERT_EQ(second.result_int(), 200) << second.body();
  EXPECT_NE(std::stoi(text_of(second)), pid);
  EXPECT_GE(counter("alou_mcp_server_restarts_total", {{"server", "fake"}}), 1u);
}

TEST_F(McpFake, ACrashDuringACallFailsItClearly) {
  ASSERT_TRUE(wait_ready("fake"));
  const Res r = call("fake__crash", json::object());
  expect_error(r, 503, "mcp_server_unavailable");
  EXPECT_NE(body_json(r)["error"]["message"].get<std::string>().find("exited during the call"), std::string::npos)
      << r.body();
  ASSERT_TRUE(wait_ready("fake", 10'000ms, 1));
  EXPECT_EQ(text_of(call("fake__echo", {{"text", "back"}})), "echo: back");
}

TEST_F(McpFake, AServerThatNeverAnswersTimesOutAndAlouStaysHealthy) {
  ASSERT_TRUE(wait_ready("fake"));
  const auto t0 = std::chrono::steady_clock::now();
  const Res r = call("fake__hang", json::object());
  expect_error(r, 504, "tool_timeout");
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 1400ms);
  EXPECT_EQ(get("/api/health").result_int(), 200);
  EXPECT_EQ(text_of(call("fake__echo", {{"text", "still here"}})), "echo: still here");
  EXPECT_EQ(counter("alou_mcp_tool_errors_total", {{"server", "fake"}, {"tool", "fake__hang"}}), 1u);
}

TEST_F(McpFake, TimeoutsAndCallersThatGoAwaySendNotificationsCancelled) {
  ASSERT_TRUE(wait_ready("fake"));
  {
    Client c(ep());
    Headers h = admin();
    h.emplace_back("content-type", "application/json");
    ASSERT_FALSE(c.send(make_request(bhttp::verb::post, "/api/tools/fake__hang/call", h, R"({"arguments":{}})")));
    Res r;
    EXPECT_TRUE(c.read(r, 300ms));  // no answer within 300 ms: the client gives up
    c.close();
  }
  EXPECT_TRUE(eventually(
      [&] {
        const std::string seen = text_of(call("fake__cancels", json::object()));
        return seen.find("the caller went away") != std::string::npos;
      },
      1200ms));  // well before the 1500 ms timeout would have sent "timeout"
  expect_error(call("fake__hang", json::object()), 504, "tool_timeout");
  EXPECT_TRUE(eventually([&] {
    return text_of(call("fake__cancels", json::object())).find("\"timeout\"") != std::string::npos;
  }));
}

TEST_F(McpFake, MalformedMessagesAreLoggedNotFatal) {
  ASSERT_TRUE(wait_ready("fake"));
  const Res r = call("fake__garbage", json::object());
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(text_of(r), "ok");
  EXPECT_GE(counter("alou_mcp_malformed_messages_total", {{"server", "fake"}}), 2u);
  EXPECT_EQ(server("fake")["restarts"], 0);
  EXPECT_EQ(text_of(call("fake__echo", {{"text", "fine"}})), "echo: fine");
}

TEST_F(McpFake, ListChangedReListsTheTools) {
  ASSERT_TRUE(wait_ready("fake"));
  EXPECT_FALSE(tool("fake__grown").is_object());
  EXPECT_EQ(call("fake__grow", json::object()).result_int(), 200);
  EXPECT_TRUE(eventually([&] { return tool("fake__grown").is_object(); }, 5000ms)) << tools().dump();
}

class McpSilent : public Mcp {
 protected:
  void configure(Settings& s) override {
    auto f = fake("silent", {"--silent"});
    f.timeout_ms = 300;
    s.mcp_servers.push_back(f);
  }
};

TEST_F(McpSilent, NeverReadyCallsAre503AndAlouStaysHealthy) {
  EXPECT_TRUE(eventually(
      [&] {
        const json s = server("silent");
        return s["last_error"].is_string() && s["last_error"].get<std::string>().find("did not answer initialize") !=
                                                  std::string::npos;
      },
      5000ms))
      << servers().dump();
  EXPECT_NE(server("silent")["state"], "ready");
  EXPECT_TRUE(tools().empty());
  expect_error(call("silent__echo", {{"text", "x"}}), 404, "tool_not_found");
  EXPECT_EQ(get("/api/health").result_int(), 200);
}

class McpVersions : public Mcp {
 protected:
  void configure(Settings& s) override {
    s.mcp_servers.push_back(fake("old", {"--version", "2025-03-26"}));
    s.mcp_servers.push_back(fake("mid", {"--version", "2025-06-18"}));
    s.mcp_servers.push_back(fake("alien", {"--version", "1999-01-01"}));
  }
};

TEST_F(McpVersions, AcceptsOlderVersionsRefusesUnknownOnes) {
  ASSERT_TRUE(wait_ready("old"));
  ASSERT_TRUE(wait_ready("mid"));
  EXPECT_EQ(server("old")["protocol_version"], "2025-03-26");
  EXPECT_EQ(server("mid")["protocol_version"], "2025-06-18");
  EXPECT_TRUE(eventually([&] {
    const json s = server("alien");
    return s["last_error"].is_string() && s["last_error"].get<std::string>().find("1999-01-01") != std::string::npos;
  }));
  EXPECT_NE(server("alien")["state"], "ready");
  EXPECT_FALSE(tool("alien__echo").is_object());
}

class McpNames : public Mcp {
 protected:
  void configure(Settings& s) override {
    // "a" + "__" + "_y" and "a_" + "__" + "y" are both "a___y".
    s.mcp_servers.push_back(fake("a", {"--tools", "_y,bad.name"}));
    s.mcp_servers.push_back(fake("a_", {"--tools", "y"}));
  }
};

TEST_F(McpNames, CollisionsAndInvalidNamesAreReportedNeverShadowed) {
  ASSERT_TRUE(wait_ready("a"));
  ASSERT_TRUE(wait_ready("a_"));
  EXPECT_TRUE(eventually([&] { return !server("a_")["issues"].empty(); })) << servers().dump();
  const json t = tool("a___y");
  ASSERT_TRUE(t.is_object());
  EXPECT_EQ(t["server"], "a");  // the first in config order keeps the name
  const std::string issue = server("a_")["issues"][0];
  EXPECT_NE(issue.find("already taken by server a"), std::string::npos) << issue;
  const json a_issues = server("a")["issues"];
  ASSERT_EQ(a_issues.size(), 1u) << a_issues.dump();
  EXPECT_NE(a_issues[0].get<std::string>().find("bad.name"), std::string::npos);
  EXPECT_FALSE(tool("a__bad.name").is_object());
  // The call goes to "a" (whose tool is "_y"), not to "a_" (whose tool is "y").
  EXPECT_EQ(text_of(call("a___y", json::object())), "extra:_y");
}

// ------------------------------------------- Streamable HTTP upstream --

class McpHttp : public Mcp {
 protected:
  void configure(Settings& s) override {
    {
      net::io_context ioc;
      tcp::acceptor a(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
      port_ = a.local_endpoint().port();
    }
    start_server();
    McpServerSettings m;
    m.name = "remote";
    m.transport = "http";
    m.url = "http://127.0.0.1:" + std::to_string(port_) + "/mcp";
    m.timeout_ms = 5000;
    m.ping_interval_ms = 200;
    s.mcp_servers.push_back(m);
  }

  void TearDown() override {
    AppTest::TearDown();
    stop_server();
  }

  // server-everything in streamableHttp mode on port_, output to /dev/null.
  void start_server() {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    const std::string exe = bin("mcp-server-everything");
    const std::string port = "PORT=" + std::to_string(port_);
    const std::string path = std::string("PATH=") + (std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin");
    char* argv[] = {const_cast<char*>(exe.c_str()), const_cast<char*>("streamableHttp"), nullptr};
    char* envp[] = {const_cast<char*>(port.c_str()), const_cast<char*>(path.c_str()), nullptr};
    ASSERT_EQ(posix_spawn(&server_pid_, exe.c_str(), &fa, nullptr, argv, envp), 0);
    posix_spawn_file_actions_destroy(&fa);
    const tcp::endpoint ep(net::ip::make_address("127.0.0.1"), port_);
    ASSERT_TRUE(eventually([&] { return !Client::try_connect(ep, 200ms); }, 20'000ms));
  }

  void stop_server() {
    if (server_pid_ <= 0) return;
    ::kill(server_pid_, SIGKILL);
    int st = 0;
    ::waitpid(server_pid_, &st, 0);
    server_pid_ = -1;
  }

  unsigned short port_ = 0;
  pid_t server_pid_ = -1;
};

TEST_F(McpHttp, CallsToolsAndSurvivesAServerRestart) {
  ASSERT_TRUE(wait_ready("remote")) << servers().dump();
  const json s = server("remote");
  EXPECT_EQ(s["transport"], "http");
  EXPECT_EQ(s["protocol_version"], "2025-11-25");
  EXPECT_TRUE(tool("remote__echo").is_object());
  EXPECT_EQ(text_of(call("remote__echo", {{"message", "one"}})), "Echo: one");
  // The server restarts and forgets every session: Alou initializes again.
  stop_server();
  start_server();
  EXPECT_TRUE(eventually([&] { return text_of(call("remote__echo", {{"message", "two"}})) == "Echo: two"; },
                         10'000ms))
      << servers().dump();
}

}  // namespace
}  // namespace alou::itest
