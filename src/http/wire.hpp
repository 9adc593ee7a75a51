#pragma once
// HTTP/1.1 heads written as one contiguous string, for the hot paths: a
// response or request goes out as two buffers (head, body) in one gather
// write. Beast's serializer walks a buffer sequence with one entry per
// header field on every write, which cost more than the rest of a proxied
// request's own work.
#include "alou/http/types.hpp"

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/verb.hpp>

#include <string>
#include <string_view>

namespace alou::http::wire {

// "name: value\r\n" for each field, in order.
inline void append_fields(std::string& out, const bhttp::fields& fields) {
  for (const auto& f : fields) {
    const auto name = f.name_string();
    const auto value = f.value();
    out.append(name.data(), name.size());
    out.append(": ", 2);
    out.append(value.data(), value.size());
    out.append("\r\n", 2);
  }
}

// The status line and fields of `res` (prepare_payload() and keep_alive()
// already applied), ending with the blank line.
inline void append_response_head(std::string& out, const bhttp::fields& fields, unsigned status,
                                 std::string_view reason, unsigned version) {
  out.append(version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  char code[4] = {static_cast<char>('0' + status / 100 % 10), static_cast<char>('0' + status / 10 % 10),
                  static_cast<char>('0' + status % 10), ' '};
  out.append(code, sizeof code);
  out.append(reason.data(), reason.size());
  out.append("\r\n", 2);
  append_fields(out, fields);
  out.append("\r\n", 2);
}

template <class Body>
void append_response_head(std::string& out, const bhttp::response<Body>& res) {
  append_response_head(out, res.base(), res.result_int(), res.reason(), res.version());
}

}  // namespace alou::http::wire
