#pragma once
// Finding an OpenAI response's usage without parsing the whole response
// (a long reply, or every stream chunk, would otherwise be parsed only to
// read a few integers).
#include <cstddef>
#include <string_view>

namespace alou::gateway {

// Where the `"usage": {` object of an OpenAI response or chunk starts, or
// npos (absent or null). Quotes inside JSON strings are escaped, so a raw
// `"usage"` is a key; usage is the last key OpenAI writes, hence the last
// occurrence.
std::size_t usage_object_at(std::string_view text);
// One past the '}' closing the object that starts at `at`, or npos.
std::size_t object_end(std::string_view text, std::size_t at);

// The length of the text a chat chunk or response carries: the string
// values of its "content" and "arguments" keys (escaped length), for a
// usage estimate when the upstream's own usage never arrives.
std::size_t delta_chars(std::string_view text);

}  // namespace alou::gateway
