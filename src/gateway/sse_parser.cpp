#include "alou/gateway/sse_parser.hpp"

namespace alou::gateway {

bool SseParser::feed(std::string_view piece, std::vector<SseMessage>& out) {
  buf_.append(piece);
  std::size_t start = 0;
  for (std::size_t i = scan_; i < buf_.size(); ++i) {
    const char c = buf_[i];
    if (c == '\n' && skip_lf_ && i == start) {
      // The \n of a \r\n whose \r ended the previous line.
      skip_lf_ = false;
      start = i + 1;
      continue;
    }
    skip_lf_ = false;
    if (c == '\n' || c == '\r') {
      line(std::string_view(buf_).substr(start, i - start), out);
      skip_lf_ = c == '\r';
      start = i + 1;
    }
  }
  buf_.erase(0, start);
  scan_ = buf_.size();
  return buf_.size() + cur_.data.size() <= max_event_bytes_;
}

void SseParser::line(std::string_view l, std::vector<SseMessage>& out) {
  if (l.empty()) {
    if (has_data_) out.push_back(std::move(cur_));
    cur_ = SseMessage{};
    has_data_ = false;
    return;
  }
  if (l.front() == ':') return;  // comment
  const auto colon = l.find(':');
  std::string_view field = l.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? std::string_view{} : l.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) cur_.data.push_back('\n');
    cur_.data.append(value);
    has_data_ = true;
  } else if (field == "event") {
    cur_.event.assign(value);
  } else if (field == "id") {
    cur_.id.assign(value);
  }
}

}  // namespace alou::gateway
