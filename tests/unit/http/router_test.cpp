#include "alou/http/router.hpp"

#include "alou/http/filters.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace alou::http {
namespace {

// Handlers are never called here: a match is identified by its route.
Router make_router() {
  Router r;
  r.get("/", {});
  r.get("/v1/models", {});
  r.post("/v1/chat/completions", {});
  r.get("/api/session/{id}", {});
  r.del("/api/session/{id}", {});
  r.get("/v1/orgs/{org}/items/{item}", {});
  r.get("/files/{name}", {});
  return r;
}

TEST(Router, MatchesStaticPath) {
  const Router r = make_router();
  const auto m = r.match(Verb::get, "/v1/models");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->pattern, "/v1/models");
  EXPECT_EQ(m.route->method, Verb::get);
  EXPECT_TRUE(m.params.empty());
  EXPECT_TRUE(m.allow.empty());
}

TEST(Router, MatchesRoot) {
  const Router r = make_router();
  const auto m = r.match(Verb::get, "/");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->pattern, "/");
}

TEST(Router, ExtractsPercentDecodedParam) {
  const Router r = make_router();
  const auto m = r.match(Verb::get, "/api/session/a%20b%C3%A9");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->pattern, "/api/session/{id}");
  EXPECT_EQ(m.params, (Params{{"id", "a b\xC3\xA9"}}));
}

TEST(Router, EncodedSlashStaysInOneParam) {
  const Router r = make_router();
  const auto m = r.match(Verb::get, "/files/a%2Fb");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.params, (Params{{"name", "a/b"}}));
}

TEST(Router, PlusInPathParamIsKept) {
  const Router r = make_router();
  const auto m = r.match(Verb::get, "/files/a+b");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.params, (Params{{"name", "a+b"}}));
}

TEST(Router, MalformedEscapeInParamIsKeptRaw) {
  const Router r = make_router();
  const auto m = r.match(Verb::get, "/files/a%zz");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.params, (Params{{"name", "a%zz"}}));
}

TEST(Router, ExtractsMultipleParamsInOrder) {
  const Router r = make_router();
  const auto m = r.match(Verb::get, "/v1/orgs/acme/items/42");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->pattern, "/v1/orgs/{org}/items/{item}");
  EXPECT_EQ(m.params, (Params{{"org", "acme"}, {"item", "42"}}));
}

TEST(Router, ParamDoesNotMatchEmptySegment) {
  const Router r = make_router();
  EXPECT_EQ(r.match(Verb::get, "/api/session/").route, nullptr);
  EXPECT_EQ(r.match(Verb::get, "/v1/orgs//items/42").route, nullptr);
}

TEST(Router, TrailingSlashDoesNotMatch) {
  const Router r = make_router();
  const auto m = r.match(Verb::get, "/v1/models/");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_TRUE(m.allow.empty());
}

TEST(Router, ExtraOrMissingSegmentDoesNotMatch) {
  const Router r = make_router();
  EXPECT_EQ(r.match(Verb::get, "/v1").route, nullptr);
  EXPECT_EQ(r.match(Verb::get, "/v1/models/x").route, nullptr);
  EXPECT_EQ(r.match(Verb::get, "/api/session/a/b").route, nullptr);
}

TEST(Router, UnknownPathIs404WithoutAllow) {
  const Router r = make_router();
  const auto m = r.match(Verb::get, "/nope");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_TRUE(m.allow.empty());
  EXPECT_TRUE(m.params.empty());
}

TEST(Router, WrongMethodIs405ListingEveryMethodForThePath) {
  Router r;
  r.get("/api/keys", {});
  r.post("/api/keys", {});
  r.get("/api/other", {});
  r.del("/api/keys", {});
  const auto m = r.match(Verb::put, "/api/keys");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_EQ(m.allow, "GET, POST, DELETE");
}

TEST(Router, AllowHasNoDuplicates) {
  Router r;
  r.get("/api/session/{id}", {});
  r.get("/api/session/current", {});
  r.post("/api/session/{id}", {});
  const auto m = r.match(Verb::delete_, "/api/session/current");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_EQ(m.allow, "GET, POST");
}

TEST(Router, AllowListsAMethodWhoseNameIsInsideAnother) {
  Router r;
  r.add(Verb::unlock, "/dav", {});
  r.add(Verb::lock, "/dav", {});
  const auto m = r.match(Verb::get, "/dav");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_EQ(m.allow, "UNLOCK, LOCK");
}

TEST(Router, MatchAfterAnotherMethodClearsAllow) {
  Router r;
  r.post("/v1/models", {});
  r.get("/v1/models", {});
  const auto m = r.match(Verb::get, "/v1/models");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->method, Verb::get);
  EXPECT_TRUE(m.allow.empty());
}

TEST(Router, FirstRegisteredRouteWins) {
  Router r;
  r.get("/api/session/current", {});
  r.get("/api/session/{id}", {});
  const auto m = r.match(Verb::get, "/api/session/current");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->pattern, "/api/session/current");
  EXPECT_EQ(m.route->index, 0u);
  EXPECT_EQ(r.match(Verb::get, "/api/session/abc").route->index, 1u);
}

TEST(Router, HeadMatchesGetRoute) {
  const Router r = make_router();
  const auto m = r.match(Verb::head, "/api/session/x");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->method, Verb::get);
  EXPECT_EQ(m.params, (Params{{"id", "x"}}));
}

TEST(Router, HeadOnPostOnlyPathIs405) {
  const Router r = make_router();
  const auto m = r.match(Verb::head, "/v1/chat/completions");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_EQ(m.allow, "POST");
}

std::string deep_path(int segments) {
  std::string p;
  for (int i = 0; i < segments; ++i) p += "/s";
  return p;
}

TEST(Router, ThirtyTwoSegmentsMatch) {
  Router r;
  r.get(deep_path(32), {});
  EXPECT_NE(r.match(Verb::get, deep_path(32)).route, nullptr);
}

TEST(Router, DeeperPathsDoNotMatch) {
  Router r;
  r.get(deep_path(33), {});
  r.get("/s/{x}", {});
  for (const int n : {33, 34, 1000}) {
    const auto m = r.match(Verb::get, deep_path(n));
    EXPECT_EQ(m.route, nullptr) << n;
    EXPECT_TRUE(m.allow.empty()) << n;
  }
}

TEST(Router, RejectsPatternWithoutLeadingSlash) {
  Router r;
  EXPECT_THROW(r.get("v1/models", {}), std::invalid_argument);
  EXPECT_THROW(r.get("", {}), std::invalid_argument);
  EXPECT_TRUE(r.routes().empty());
}

TEST(PercentDecode, DecodesEscapes) {
  std::string out;
  ASSERT_TRUE(percent_decode("a%20b%2fc%2F%41", out));
  EXPECT_EQ(out, "a b/c/A");
}

TEST(PercentDecode, EmptyInputGivesEmptyOutput) {
  std::string out = "stale";
  ASSERT_TRUE(percent_decode("", out));
  EXPECT_EQ(out, "");
}

TEST(PercentDecode, PlusIsKeptUnlessAskedForSpace) {
  std::string out;
  ASSERT_TRUE(percent_decode("a+b", out));
  EXPECT_EQ(out, "a+b");
  ASSERT_TRUE(percent_decode("a+b%2B", out, true));
  EXPECT_EQ(out, "a b+");
}

TEST(PercentDecode, EscapeAtTheVeryEndIsDecoded) {
  std::string out;
  ASSERT_TRUE(percent_decode("%41", out));
  EXPECT_EQ(out, "A");
}

TEST(PercentDecode, RejectsMalformedEscapes) {
  for (const char* in : {"%", "%4", "a%2", "100%", "%zz", "%g0", "%0g", "%%41", "% 41"}) {
    std::string out;
    EXPECT_FALSE(percent_decode(in, out)) << '"' << in << '"';
  }
}

TEST(RequestId, AcceptsWellFormedIds) {
  EXPECT_TRUE(valid_request_id("a"));
  EXPECT_TRUE(valid_request_id("req-123_abc.DEF:9"));
  EXPECT_TRUE(valid_request_id("0123456789abcdef0123456789abcdef"));
  EXPECT_TRUE(valid_request_id(std::string(128, 'x')));
}

TEST(RequestId, RejectsMalformedIds) {
  EXPECT_FALSE(valid_request_id(""));
  EXPECT_FALSE(valid_request_id(std::string(129, 'x')));
  for (const char* id : {"a b", "a/b", "a\"b", "a\r\nx-evil: 1", "a,b", "a;b", "\xC3\xA9", "a\tb", "<script>"}) {
    EXPECT_FALSE(valid_request_id(id)) << '"' << id << '"';
  }
  EXPECT_FALSE(valid_request_id(std::string_view("a\0b", 3)));
}

}  // namespace
}  // namespace alou::http
