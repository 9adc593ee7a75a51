// JsonObject and the escaper: the text must parse back (nlohmann) to the
// same values, for every kind of string the hot path may carry.
#include "alou/core/json_text.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

using alou::JsonObject;
using nlohmann::json;

namespace {

std::string escaped(std::string_view s) {
  std::string out;
  alou::append_json_string(out, s);
  return out;
}

std::string object_with(std::string_view value) { return JsonObject{}.str("v", value).done(); }

}  // namespace

TEST(JsonText, EscapesWhatJsonRequires) {
  EXPECT_EQ(escaped("plain"), "\"plain\"");
  EXPECT_EQ(escaped("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(escaped("\n\r\t\b\f"), "\"\\n\\r\\t\\b\\f\"");
  EXPECT_EQ(escaped(std::string("\x01\x1f", 2)), "\"\\u0001\\u001f\"");
  EXPECT_EQ(escaped(std::string("nul\0x", 5)), "\"nul\\u0000x\"");
  EXPECT_EQ(escaped("\x7f"), "\"\x7f\"");  // DEL needs no escape
  EXPECT_EQ(object_with("a\"b\\c\n\x01"), "{\"v\":\"a\\\"b\\\\c\\n\\u0001\"}");
}

TEST(JsonText, PassesValidUtf8AndReplacesInvalidBytes) {
  const std::string text = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";  // é € 😀
  EXPECT_EQ(escaped(text), "\"" + text + "\"");
  EXPECT_EQ(object_with(text), "{\"v\":\"" + text + "\"}");
  // A lone continuation byte, a truncated sequence, an overlong '/', a
  // UTF-16 surrogate and a code point above U+10FFFF: each byte is U+FFFD.
  EXPECT_EQ(escaped("a\x80z"), "\"a\\ufffdz\"");
  EXPECT_EQ(escaped("\xe2\x82"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(escaped("\xc0\xaf"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(escaped("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");
  EXPECT_EQ(escaped("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
  EXPECT_EQ(object_with("a\x80z"), "{\"v\":\"a\\ufffdz\"}");
  // Whatever the bytes, the object parses.
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  EXPECT_TRUE(json::accept(object_with(all)));
}

TEST(JsonText, ObjectKeepsOrderAndTypes) {
  const std::string text = JsonObject{}
                               .str("s", "x")
                               .num("n", -9223372036854775807LL - 1)
                               .num("z", 0)
                               .boolean("t", true)
                               .boolean("f", false)
                               .null("nil")
                               .raw("o", JsonObject{}.num("a", 1).done())
                               .done();
  EXPECT_EQ(text, "{\"s\":\"x\",\"n\":-9223372036854775808,\"z\":0,\"t\":true,\"f\":false,\"nil\":null,\"o\":{\"a\":1}}");
  EXPECT_EQ(JsonObject{}.done(), "{}");
}

TEST(JsonText, GrowsPastItsFirstBuffer) {
  const std::string big(10'000, '"');  // escapes to twice its size
  JsonObject o;
  for (int i = 0; i < 50; ++i) o.num("k" + std::to_string(i), i);
  o.str("big", big);
  const auto parsed = json::parse(o.done());
  EXPECT_EQ(parsed.size(), 51U);
  EXPECT_EQ(parsed["k49"], 49);
  EXPECT_EQ(parsed["big"].get<std::string>(), big);
}
