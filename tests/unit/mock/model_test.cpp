#include "alou/mock/model.hpp"

#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

namespace alou::mock {
namespace {

std::vector<Message> user(std::string text) { return {Message{.role = "user", .content = std::move(text)}}; }

std::string joined(const std::vector<std::string>& pieces) {
  return std::accumulate(pieces.begin(), pieces.end(), std::string{});
}

TEST(MockModel, EchoesLastUserMessage) {
  const std::vector<Message> conv = {{.role = "system", .content = "be brief"},
                                     {.role = "user", .content = "first"},
                                     {.role = "assistant", .content = "echo: first"},
                                     {.role = "user", .content = "hi there"}};
  const Reply r = respond(conv);
  EXPECT_EQ(r.text, "echo: hi there");
  EXPECT_FALSE(r.tool_call);
  EXPECT_FALSE(r.fail_status);
  EXPECT_FALSE(r.cut_after);
  EXPECT_EQ(r.slow_ms, 0);
}

TEST(MockModel, EchoKeepsTheMessageVerbatim) {
  EXPECT_EQ(respond(user("  spaced  out \n")).text, "echo:   spaced  out \n");
}

TEST(MockModel, EchoIgnoresTrailingAssistantMessage) {
  const std::vector<Message> conv = {{.role = "user", .content = "question"},
                                     {.role = "assistant", .content = "partial"}};
  EXPECT_EQ(respond(conv).text, "echo: question");
}

TEST(MockModel, EmptyConversationEchoesNothing) { EXPECT_EQ(respond({}).text, "echo: "); }

TEST(MockModel, UnknownSlashWordIsEchoed) {
  EXPECT_EQ(respond(user("/help me")).text, "echo: /help me");
  EXPECT_EQ(respond(user("/failure 500")).text, "echo: /failure 500");
}

TEST(MockModel, PiecesSplitWordByWord) {
  const Reply r = respond(user("hi there"));
  EXPECT_EQ(r.pieces, (std::vector<std::string>{"echo:", " hi", " there"}));
  EXPECT_EQ(joined(r.pieces), r.text);
}

TEST(MockModel, SplitWordsKeepsEveryByte) {
  EXPECT_EQ(split_words("a  b\nc "), (std::vector<std::string>{"a", "  b", "\nc "}));
  EXPECT_EQ(split_words("  lead"), (std::vector<std::string>{"  lead"}));
  EXPECT_EQ(split_words(""), (std::vector<std::string>{""}));
}

TEST(MockModel, ToolDirectiveMakesOneToolCall) {
  const Reply r = respond(user(R"(/tool get_weather {"city": "Paris", "days": 2})"));
  ASSERT_TRUE(r.tool_call);
  EXPECT_EQ(r.tool_call->name, "get_weather");
  EXPECT_EQ(r.tool_call->arguments, R"({"city":"Paris","days":2})");
  EXPECT_TRUE(r.text.empty());
  EXPECT_GE(r.pieces.size(), 2u);
  EXPECT_LE(r.pieces.size(), 3u);
  EXPECT_EQ(joined(r.pieces), r.tool_call->arguments);
}

TEST(MockModel, ToolWithoutArgumentsGetsEmptyObject) {
  const Reply r = respond(user("/tool now"));
  ASSERT_TRUE(r.tool_call);
  EXPECT_EQ(r.tool_call->name, "now");
  EXPECT_EQ(r.tool_call->arguments, "{}");
  EXPECT_EQ(joined(r.pieces), "{}");
}

TEST(MockModel, ToolWithInvalidJsonExplains) {
  const Reply r = respond(user("/tool get_weather {city: Paris}"));
  EXPECT_FALSE(r.tool_call);
  EXPECT_EQ(r.text, "mock: /tool get_weather: the arguments are not valid JSON");
}

TEST(MockModel, ToolWithNonObjectArgumentsExplains) {
  const Reply r = respond(user("/tool f [1,2]"));
  EXPECT_FALSE(r.tool_call);
  EXPECT_EQ(r.text, "mock: /tool f: the arguments must be a JSON object");
}

TEST(MockModel, ToolWithBadNameExplains) {
  const Reply r = respond(user("/tool {\"a\":1}"));
  EXPECT_FALSE(r.tool_call);
  EXPECT_TRUE(r.text.starts_with("mock: /tool expects a tool name")) << r.text;
}

TEST(MockModel, ToolResultRepliesWithNameFromTheCall) {
  const std::vector<Message> conv = {
      {.role = "user", .content = "/tool add {\"a\":1}"},
      {.role = "assistant", .content = "", .tool_calls = {{.id = "call_1", .name = "add", .arguments = "{}"}}},
      {.role = "tool", .content = "42", .tool_call_id = "call_1"}};
  EXPECT_EQ(respond(conv).text, "tool add returned: 42");
}

TEST(MockModel, ToolResultPrefersItsOwnName) {
  const std::vector<Message> conv = {{.role = "user", .content = "/tool x"},
                                     {.role = "tool", .content = "{\"ok\":true}", .name = "lookup"}};
  EXPECT_EQ(respond(conv).text, "tool lookup returned: {\"ok\":true}");
}

TEST(MockModel, ToolResultWithUnknownCallIsNamedUnknown) {
  const std::vector<Message> conv = {{.role = "tool", .content = "x", .tool_call_id = "nope"}};
  EXPECT_EQ(respond(conv).text, "tool unknown returned: x");
}

TEST(MockModel, FailDirective) {
  const Reply r = respond(user("/fail 503"));
  ASSERT_TRUE(r.fail_status);
  EXPECT_EQ(*r.fail_status, 503);
  EXPECT_TRUE(r.text.empty());
  EXPECT_TRUE(r.pieces.empty());
  EXPECT_EQ(r.completion_tokens, 0);
}

TEST(MockModel, FailAcceptsSurroundingWhitespace) {
  const Reply r = respond(user("  /fail 429\n"));
  ASSERT_TRUE(r.fail_status);
  EXPECT_EQ(*r.fail_status, 429);
}

TEST(MockModel, FailIsStrict) {
  for (const char* bad : {"/fail", "/fail 200", "/fail 600", "/fail 5000", "/fail abc", "/fail 500 now",
                          "/fail -500", "/fail +500"}) {
    const Reply r = respond(user(bad));
    EXPECT_FALSE(r.fail_status) << bad;
    EXPECT_TRUE(r.text.starts_with("mock: /fail expects")) << bad << " -> " << r.text;
  }
  EXPECT_TRUE(respond(user("/fail 400")).fail_status);
  EXPECT_TRUE(respond(user("/fail 599")).fail_status);
}

TEST(MockModel, SlowEchoesTheRest) {
  const Reply r = respond(user("/slow 50 hello world"));
  EXPECT_EQ(r.slow_ms, 50);
  EXPECT_EQ(r.text, "echo: hello world");
  EXPECT_FALSE(r.cut_after);
}

TEST(MockModel, SlowAloneEchoesEmpty) {
  const Reply r = respond(user("/slow 0"));
  EXPECT_EQ(r.slow_ms, 0);
  EXPECT_EQ(r.text, "echo: ");
}

TEST(MockModel, SlowIsStrict) {
  for (const char* bad : {"/slow", "/slow 60001", "/slow fast", "/slow -1 x", "/slow 1.5 x"}) {
    const Reply r = respond(user(bad));
    EXPECT_EQ(r.slow_ms, 0) << bad;
    EXPECT_TRUE(r.text.starts_with("mock: /slow expects")) << bad << " -> " << r.text;
  }
  EXPECT_EQ(respond(user("/slow 60000 x")).slow_ms, 60000);
}

TEST(MockModel, CutEchoesTheRest) {
  const Reply r = respond(user("/cut 2 hi there"));
  ASSERT_TRUE(r.cut_after);
  EXPECT_EQ(*r.cut_after, 2);
  EXPECT_EQ(r.text, "echo: hi there");
}

TEST(MockModel, CutIsStrict) {
  const Reply r = respond(user("/cut many"));
  EXPECT_FALSE(r.cut_after);
  EXPECT_TRUE(r.text.starts_with("mock: /cut expects")) << r.text;
  EXPECT_FALSE(respond(user("/cut 10001")).cut_after);
}

TEST(MockModel, DirectivesChain) {
  const Reply r = respond(user("/slow 20 /cut 3 /tool f {\"x\":1}"));
  EXPECT_EQ(r.slow_ms, 20);
  ASSERT_TRUE(r.cut_after);
  EXPECT_EQ(*r.cut_after, 3);
  ASSERT_TRUE(r.tool_call);
  EXPECT_EQ(r.tool_call->arguments, "{\"x\":1}");

  const Reply f = respond(user("/slow 100 /fail 504"));
  EXPECT_EQ(f.slow_ms, 100);
  ASSERT_TRUE(f.fail_status);
  EXPECT_EQ(*f.fail_status, 504);
}

TEST(MockModel, RepeatedDirectiveExplains) {
  EXPECT_EQ(respond(user("/slow 1 /slow 2 x")).text, "mock: /slow given twice");
  EXPECT_EQ(respond(user("/cut 1 /cut 2 x")).text, "mock: /cut given twice");
}

TEST(MockModel, DirectiveOnlyInLastUserMessage) {
  const std::vector<Message> conv = {{.role = "user", .content = "/fail 500"},
                                     {.role = "assistant", .content = "?"},
                                     {.role = "user", .content = "ok"}};
  const Reply r = respond(conv);
  EXPECT_FALSE(r.fail_status);
  EXPECT_EQ(r.text, "echo: ok");
}

TEST(MockModel, ParseDirectiveExposesRest) {
  const std::string text = "/cut 4   and the rest ";
  const Directive d = parse_directive(text);
  EXPECT_EQ(d.kind, Directive::kCut);
  EXPECT_EQ(d.n, 4);
  EXPECT_EQ(d.rest, "and the rest");
  EXPECT_EQ(parse_directive("plain").kind, Directive::kNone);
  EXPECT_TRUE(parse_directive("plain").error.empty());
}

TEST(MockModel, TokenArithmetic) {
  EXPECT_EQ(tokens_for_chars(0), 0);
  EXPECT_EQ(tokens_for_chars(1), 1);
  EXPECT_EQ(tokens_for_chars(4), 1);
  EXPECT_EQ(tokens_for_chars(5), 2);
  EXPECT_EQ(tokens_for_chars(8), 2);

  // "hi there" (8) + "sys" (3) = 11 chars -> 3; "echo: hi there" = 14 -> 4.
  const std::vector<Message> conv = {{.role = "system", .content = "sys"}, {.role = "user", .content = "hi there"}};
  const Reply r = respond(conv);
  EXPECT_EQ(r.prompt_tokens, 3);
  EXPECT_EQ(r.completion_tokens, 4);
}

TEST(MockModel, TokensCountCodePointsNotBytes) {
  // "héllo wörld" is 11 code points (13 bytes); "日本語" 3 code points (9 bytes);
  // "🙂" one code point (4 bytes).
  EXPECT_EQ(count_chars("h\xC3\xA9llo w\xC3\xB6rld"), 11);
  EXPECT_EQ(count_chars("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"), 3);
  EXPECT_EQ(count_chars("\xF0\x9F\x99\x82"), 1);

  const Reply r = respond(user("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xF0\x9F\x99\x82"));  // 4 code points
  EXPECT_EQ(r.prompt_tokens, 1);
  // "echo: " (6) + 4 = 10 -> 3 (bytes would be 19 -> 5).
  EXPECT_EQ(r.completion_tokens, 3);
}

TEST(MockModel, ToolCallTokensCountTheArguments) {
  const Reply r = respond(user("/tool f {\"k\":\"v\"}"));  // 17 chars -> 5
  ASSERT_TRUE(r.tool_call);
  EXPECT_EQ(r.prompt_tokens, 5);
  EXPECT_EQ(r.tool_call->arguments, "{\"k\":\"v\"}");  // 9 chars -> 3
  EXPECT_EQ(r.completion_tokens, 3);
}

TEST(MockModel, PromptCountsEveryMessageContent) {
  const std::vector<Message> conv = {
      {.role = "user", .content = "abcd"},
      {.role = "assistant", .content = "", .tool_calls = {{.id = "c", .name = "f", .arguments = "{\"long\":1}"}}},
      {.role = "tool", .content = "ef", .tool_call_id = "c"}};
  const Reply r = respond(conv);
  EXPECT_EQ(r.prompt_tokens, 2);  // 4 + 0 + 2 = 6 -> 2; arguments do not count
  EXPECT_EQ(r.text, "tool f returned: ef");
  EXPECT_EQ(r.completion_tokens, 5);  // 19 -> 5
}

TEST(MockModel, SplitEvenRespectsCodePoints) {
  const auto pieces = split_even("\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9");  // 4 x 'é'
  EXPECT_EQ(pieces, (std::vector<std::string>{"\xC3\xA9\xC3\xA9", "\xC3\xA9\xC3\xA9"}));
  EXPECT_EQ(split_even("{\"a\":\"bcdef\"}").size(), 3u);
  EXPECT_EQ(split_even(""), (std::vector<std::string>{""}));
}

TEST(MockModel, IsDeterministic) {
  const auto a = respond(user("/tool f {\"b\":2,\"a\":1}"));
  const auto b = respond(user("/tool f {\"b\":2,\"a\":1}"));
  ASSERT_TRUE(a.tool_call && b.tool_call);
  EXPECT_EQ(a.tool_call->arguments, b.tool_call->arguments);
  EXPECT_EQ(a.pieces, b.pieces);
}

TEST(MockModel, AnOutputLimitCutsTheTextAtFourCharactersAToken) {
  const Reply r = respond(user("one two three four five six"), 3);
  EXPECT_EQ(r.text, "echo: one tw");  // 12 characters
  EXPECT_EQ(r.completion_tokens, 3);
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(joined(r.pieces), r.text);
  // Code points, not bytes: "é" is one character.
  const Reply u = respond(user("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"), 2);
  EXPECT_EQ(u.text, "echo: \xc3\xa9\xc3\xa9");
  EXPECT_EQ(u.completion_tokens, 2);
}

TEST(MockModel, AnOutputLimitTheReplyFitsChangesNothing) {
  const Reply r = respond(user("hi"), 100);
  EXPECT_EQ(r.text, "echo: hi");
  EXPECT_FALSE(r.truncated);
  // Tool calls are not cut.
  const Reply t = respond(user(R"(/tool add {"x": 123456789, "y": 987654321})"), 1);
  ASSERT_TRUE(t.tool_call);
  EXPECT_FALSE(t.truncated);
  EXPECT_GT(t.completion_tokens, 1);
}

}  // namespace
}  // namespace alou::mock
