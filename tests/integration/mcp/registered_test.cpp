// Tools registered through POST /api/tools: command tools (argv template,
// JSON on stdin, timeout, rlimits) and HTTP tools from an OpenAPI document,
// persisted in SQLite.
#include "harness.hpp"

#include "alou/mcp/service.hpp"
#include "alou/storage/database.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <SQLiteCpp/SQLiteCpp.h>
#include <nlohmann/json.hpp>

#include <fstream>

namespace alou::itest {
namespace {

using json = nlohmann::json;

json body_json(const Res& r) { return json::parse(r.body(), nullptr, false); }

void expect_error(const Res& r, int status, std::string_view code) {
  EXPECT_EQ(r.result_int(), status) << r.body();
  const json b = body_json(r);
  ASSERT_TRUE(b.is_object() && b.contains("error")) << r.body();
  EXPECT_EQ(b["error"]["code"], code) << r.body();
}

class Registered : public AppTest {
 protected:
  Res post(std::string_view target, const json& body, const Headers& auth = bearer(kAdminKey)) {
    Headers h = auth;
    h.emplace_back("content-type", "application/json");
    return request(bhttp::verb::post, target, h, body.dump());
  }
  Res reg(const json& body, const Headers& auth = bearer(kAdminKey)) { return post("/api/tools", body, auth); }
  Res call(std::string_view name, const json& args) {
    return post("/api/tools/" + std::string(name) + "/call", {{"arguments", args}});
  }
  int rows() {
    auto count = [](SQLite::Database& c) { return c.execAndGet("SELECT COUNT(*) FROM tools").getInt(); };
    return app_->db().run_sync(count);
  }
  json tool(std::string_view name) {
    const json all = body_json(get("/api/tools", bearer(kAdminKey)));
    for (const auto& t : all["tools"]) {
      if (t["name"] == name) return t;
    }
    return json();
  }
  static json greet() {
    return {{"kind", "command"},
            {"name", "greet"},
            {"description", "says hello"},
            {"risk", "read_only"},
            {"input_schema",
             {{"type", "object"}, {"properties", {{"who", {{"type", "string"}}}}}, {"required", {"who"}}}},
            {"command",
             {"python3", "-c",
              "import sys, json, os; a = json.load(sys.stdin); "
              "print('hello ' + sys.argv[1] + ' ' + a['who'] + ' ' + str(sorted(os.environ)) + ' ' + os.getcwd())",
              "{{who}}"}},
            {"timeout_ms", 5000}};
  }
  static std::string text(const Res& r) { return body_json(r)["content"][0].value("text", ""); }
};

TEST_F(Registered, CommandToolRunsWithArgvStdinScrubbedEnvAndTempDir) {
  ::setenv("ALOU_SECRET_FOR_TEST", "do-not-leak", 1);
  const Res r = reg(greet());
  ASSERT_EQ(r.result_int(), 201) << r.body();
  EXPECT_EQ(body_json(r)["tools"][0]["name"], "greet");
  const json t = tool("greet");
  EXPECT_EQ(t["source"], "command");
  EXPECT_EQ(t["risk"], "read_only");
  EXPECT_EQ(t["owner"], "admin");
  const Res c = call("greet", {{"who", "ann"}});
  ASSERT_EQ(c.result_int(), 200) << c.body();
  EXPECT_EQ(body_json(c)["isError"], false) << c.body();
  const std::string out = text(c);
  EXPECT_EQ(out.rfind("hello ann ann ", 0), 0u) << out;
  EXPECT_EQ(out.find("ALOU"), std::string::npos) << out;  // no environment leaks through
  EXPECT_NE(out.find("alou-tool-"), std::string::npos) << out;
  EXPECT_EQ(rows(), 1);
  expect_error(call("greet", json::object()), 400, "invalid_arguments");
}

TEST_F(Registered, RegisteredToolsSurviveARestart) {
  ASSERT_EQ(reg(greet()).result_int(), 201);
  app_->stop();
  app_.reset();
  boot();
  ASSERT_TRUE(tool("greet").is_object());
  EXPECT_EQ(text(call("greet", {{"who", "bo"}})).rfind("hello bo bo", 0), 0u);
}

TEST_F(Registered, BadRegistrationsAre400AndNothingIsWritten) {
  json shell = greet();
  shell["command"] = "python3 -c 'print(1)'";
  expect_error(reg(shell), 400, "invalid_tool");
  json bad_name = greet();
  bad_name["name"] = "has space";
  expect_error(reg(bad_name), 400, "invalid_tool");
  json reserved = greet();
  reserved["name"] = "x__y";
  expect_error(reg(reserved), 400, "invalid_tool");
  json no_risk = greet();
  no_risk.erase("risk");
  expect_error(reg(no_risk), 400, "invalid_tool");
  json bad_limit = greet();
  bad_limit["limits"] = {{"cpu", 1}};
  expect_error(reg(bad_limit), 400, "invalid_tool");
  expect_error(reg({{"kind", "openapi"}, {"prefix", "p"}, {"risk", "read_only"}, {"openapi", {{"swagger", "2.0"}}}}),
               400, "invalid_tool");
  expect_error(reg({{"kind", "plugin"}}), 400, "invalid_tool");
  EXPECT_EQ(rows(), 0);
  EXPECT_FALSE(tool("greet").is_object());
}

TEST_F(Registered, MembersCannotRegisterAndNamesAreUnique) {
  const std::string member = create_key(unique_name("m"));
  expect_error(reg(greet(), bearer(member)), 403, "owner_only");
  EXPECT_EQ(rows(), 0);
  ASSERT_EQ(reg(greet()).result_int(), 201);
  expect_error(reg(greet()), 409, "tool_exists");
  EXPECT_EQ(rows(), 1);
}

TEST_F(Registered, ACommandOverItsCpuLimitIsKilledAndReported) {
  ASSERT_EQ(reg({{"kind", "command"},
                 {"name", "spin"},
                 {"risk", "read_only"},
                 {"command", {"python3", "-c", "while True: pass"}},
                 {"timeout_ms", 20000},
                 {"limits", {{"cpu_s", 1}, {"memory_mb", 512}, {"nproc", 4096}}}})
                .result_int(),
            201);
  const auto t0 = std::chrono::steady_clock::now();
  const Res r = call("spin", json::object());
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(body_json(r)["isError"], true);
  EXPECT_NE(text(r).find("CPU limit of 1 s exceeded"), std::string::npos) << r.body();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(counter("alou_mcp_tool_errors_total", {{"server", "registered"}, {"tool", "spin"}}), 1u);
}

TEST_F(Registered, ACommandOverItsTimeIsKilledAndReported) {
  ASSERT_EQ(reg({{"kind", "command"},
                 {"name", "nap"},
                 {"risk", "read_only"},
                 {"command", {"sleep", "30"}},
                 {"timeout_ms", 300}})
                .result_int(),
            201);
  const auto t0 = std::chrono::steady_clock::now();
  const Res r = call("nap", json::object());
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(body_json(r)["isError"], true);
  EXPECT_NE(text(r).find("timeout after 300 ms"), std::string::npos) << r.body();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  ASSERT_EQ(reg({{"kind", "command"},
                 {"name", "fails"},
                 {"risk", "external_write"},
                 {"command", {"python3", "-c", "import sys; sys.stderr.write('broken'); sys.exit(4)"}}})
                .result_int(),
            201);
  const Res f = call("fails", json::object());
  EXPECT_EQ(body_json(f)["isError"], true);
  EXPECT_NE(text(f).find("exit code 4"), std::string::npos) << f.body();
  EXPECT_NE(text(f).find("broken"), std::string::npos) << f.body();
}

// A command that writes its pid to the file named by its argument, then
// sleeps: the tests see the process itself.
json sleeper(std::string name) {
  return {{"kind", "command"},
          {"name", std::move(name)},
          {"risk", "read_only"},
          {"input_schema", {{"type", "object"}, {"properties", {{"pidfile", {{"type", "string"}}}}}}},
          {"command", {"sh", "-c", "echo $$ > \"$1.tmp\" && mv \"$1.tmp\" \"$1\" && exec sleep 300", "sh", "{{pidfile}}"}},
          {"timeout_ms", 120000}};
}

pid_t read_pid(const std::filesystem::path& file) {
  std::ifstream in(file);
  pid_t pid = 0;
  in >> pid;
  return pid;
}

// Gone from /proc: killed and reaped (a zombie still has its entry).
bool gone(pid_t pid) { return !std::filesystem::exists("/proc/" + std::to_string(pid)); }

TEST_F(Registered, ACallWhoseClientGoesAwayKillsAndReapsTheCommand) {
  ASSERT_EQ(reg(sleeper("sleeper")).result_int(), 201);
  const auto pidfile = dir_ / "sleeper.pid";
  Client c(ep());
  Headers h = bearer(kAdminKey);
  h.emplace_back("content-type", "application/json");
  const json body = {{"arguments", {{"pidfile", pidfile.string()}}}};
  ASSERT_FALSE(c.send(make_request(bhttp::verb::post, "/api/tools/sleeper/call", h, body.dump())));
  ASSERT_TRUE(eventually([&] { return read_pid(pidfile) > 0; }, 5000ms));
  const pid_t pid = read_pid(pidfile);
  ASSERT_FALSE(gone(pid));
  c.close();
  EXPECT_TRUE(eventually([&] { return gone(pid); }, 3000ms)) << "the command (pid " << pid << ") outlived its call";
}

class RegisteredShutdown : public Registered {
 protected:
  void configure(Settings& s) override { s.server.shutdown_timeout_ms = 300; }
};

TEST_F(RegisteredShutdown, StopEndsACommandStillRunningAndRefusesNewRuns) {
  ASSERT_EQ(reg(sleeper("sleeper")).result_int(), 201);
  const auto pidfile = dir_ / "sleeper.pid";
  Client c(ep());
  Headers h = bearer(kAdminKey);
  h.emplace_back("content-type", "application/json");
  const json body = {{"arguments", {{"pidfile", pidfile.string()}}}};
  ASSERT_FALSE(c.send(make_request(bhttp::verb::post, "/api/tools/sleeper/call", h, body.dump())));
  ASSERT_TRUE(eventually([&] { return read_pid(pidfile) > 0; }, 5000ms));
  const pid_t pid = read_pid(pidfile);
  const auto t0 = std::chrono::steady_clock::now();
  app_->stop();
  // stop() returns once every child is reaped: nothing left to wait for.
  EXPECT_TRUE(gone(pid)) << "the command (pid " << pid << ") outlived Alou's shutdown";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  // After shutdown the catalogue refuses to start a command.
  boost::asio::io_context ioc;
  auto call = boost::asio::co_spawn(
      ioc, app_->mcp().catalogue().call_tool("sleeper", {{"pidfile", (dir_ / "late.pid").string()}}, nullptr),
      boost::asio::use_future);
  ioc.run();
  const auto r = call.get();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "shutting_down");
  EXPECT_FALSE(std::filesystem::exists(dir_ / "late.pid"));
}

TEST_F(Registered, OpenApiOperationsBecomeHttpTools) {
  // The harness's probe route GET /test/slow?ms=N answers {"slept":N}.
  const json doc = {
      {"openapi", "3.0.3"},
      {"info", {{"title", "probe"}, {"version", "1"}}},
      {"servers", {{{"url", app_->url()}}}},
      {"paths",
       {{"/test/slow",
         {{"get",
           {{"operationId", "slow"},
            {"summary", "sleeps"},
            {"parameters", {{{"name", "ms"}, {"in", "query"}, {"required", true}, {"schema", {{"type", "integer"}}}}}}}}}},
        {"/test/missing/{id}",
         {{"get",
           {{"operationId", "missing"},
            {"parameters", {{{"$ref", "#/components/parameters/Id"}}}}}}}}}},
      {"components", {{"parameters", {{"Id", {{"name", "id"}, {"in", "path"}, {"schema", {{"type", "string"}}}}}}}}}};
  const Res r = reg({{"kind", "openapi"}, {"prefix", "probe"}, {"risk", "read_only"}, {"openapi", doc}});
  ASSERT_EQ(r.result_int(), 201) << r.body();
  EXPECT_EQ(body_json(r)["tools"].size(), 2u);
  const json t = tool("probe__slow");
  ASSERT_TRUE(t.is_object());
  EXPECT_EQ(t["source"], "http");
  EXPECT_EQ(t["inputSchema"]["required"], json::array({"ms"}));
  EXPECT_EQ(tool("probe__missing")["inputSchema"]["required"], json::array({"id"}));
  const Res c = call("probe__slow", {{"ms", 3}});
  ASSERT_EQ(c.result_int(), 200) << c.body();
  EXPECT_EQ(body_json(c)["isError"], false) << c.body();
  EXPECT_EQ(body_json(c)["structuredContent"]["slept"], 3) << c.body();
  expect_error(call("probe__slow", {{"ms", "three"}}), 400, "invalid_arguments");
  const Res m = call("probe__missing", {{"id", "a b"}});
  EXPECT_EQ(body_json(m)["isError"], true);
  EXPECT_NE(text(m).find("HTTP 404"), std::string::npos) << m.body();
  EXPECT_EQ(rows(), 2);
}

}  // namespace
}  // namespace alou::itest
