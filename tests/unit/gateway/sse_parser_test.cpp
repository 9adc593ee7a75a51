#include "alou/gateway/sse_parser.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using alou::gateway::SseMessage;
using alou::gateway::SseParser;

namespace {

std::vector<SseMessage> parse_all(const std::string& text) {
  SseParser p;
  std::vector<SseMessage> out;
  EXPECT_TRUE(p.feed(text, out));
  return out;
}

}  // namespace

TEST(SseParser, ParsesEventsWithFields) {
  const auto out = parse_all("event: message_start\nid: 7\ndata: {\"a\":1}\n\ndata: [DONE]\n\n");
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].event, "message_start");
  EXPECT_EQ(out[0].id, "7");
  EXPECT_EQ(out[0].data, "{\"a\":1}");
  EXPECT_EQ(out[1].event, "");
  EXPECT_EQ(out[1].data, "[DONE]");
}

TEST(SseParser, JoinsDataLinesWithNewline) {
  const auto out = parse_all("data: one\ndata: two\ndata:three\n\n");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "one\ntwo\nthree");
}

TEST(SseParser, SkipsCommentsAndEventsWithoutData) {
  const auto out = parse_all(": ping\n\nevent: lonely\n\ndata: x\n\n");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "x");
  EXPECT_EQ(out[0].event, "");
}

TEST(SseParser, AcceptsCrLfAndCrLineEnds) {
  const auto crlf = parse_all("data: a\r\n\r\ndata: b\r\n\r\n");
  ASSERT_EQ(crlf.size(), 2u);
  EXPECT_EQ(crlf[0].data, "a");
  EXPECT_EQ(crlf[1].data, "b");
  const auto cr = parse_all("data: c\r\rdata: d\r\r");
  ASSERT_EQ(cr.size(), 2u);
  EXPECT_EQ(cr[0].data, "c");
  EXPECT_EQ(cr[1].data, "d");
}

TEST(SseParser, SameEventsWhateverTheSplit) {
  const std::string text =
      "event: content_block_delta\r\ndata: {\"t\":\"h\xc3\xa9llo\"}\r\n\r\n: keep-alive\n\ndata: a\ndata: b\n\n"
      "data: [DONE]\r\n\r\n";
  const auto whole = parse_all(text);
  ASSERT_EQ(whole.size(), 3u);
  // Every split point, including inside \r\n pairs and UTF-8 sequences.
  for (std::size_t cut = 0; cut <= text.size(); ++cut) {
    SseParser p;
    std::vector<SseMessage> out;
    ASSERT_TRUE(p.feed(text.substr(0, cut), out));
    ASSERT_TRUE(p.feed(text.substr(cut), out));
    ASSERT_EQ(out.size(), whole.size()) << "split at " << cut;
    for (std::size_t i = 0; i < out.size(); ++i) {
      EXPECT_EQ(out[i].data, whole[i].data) << "split at " << cut;
      EXPECT_EQ(out[i].event, whole[i].event) << "split at " << cut;
    }
  }
  // One byte at a time.
  SseParser p;
  std::vector<SseMessage> out;
  for (const char c : text) ASSERT_TRUE(p.feed(std::string(1, c), out));
  ASSERT_EQ(out.size(), whole.size());
  EXPECT_EQ(out[0].data, whole[0].data);
}

TEST(SseParser, IncompleteEventIsHeldBack) {
  SseParser p;
  std::vector<SseMessage> out;
  ASSERT_TRUE(p.feed("data: partial", out));
  EXPECT_TRUE(out.empty());
  ASSERT_TRUE(p.feed("\n", out));
  EXPECT_TRUE(out.empty());
  ASSERT_TRUE(p.feed("\n", out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "partial");
}

TEST(SseParser, RefusesAnOversizedEvent) {
  SseParser p(64);
  std::vector<SseMessage> out;
  EXPECT_FALSE(p.feed("data: " + std::string(100, 'x'), out));
  EXPECT_TRUE(out.empty());
}
