#pragma once
// Incremental parser of a Server-Sent Events stream (the WHATWG
// "event stream" grammar): feed it body pieces as they arrive, get whole
// events out. Handles \n, \r\n and \r line ends, several data lines,
// comments, and events split across pieces at any byte.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace alou::gateway {

struct SseMessage {
  std::string event;  // empty: "message"
  std::string data;   // data lines joined with '\n'
  std::string id;
};

class SseParser final {
 public:
  explicit SseParser(std::size_t max_event_bytes = 16 * 1024 * 1024) : max_event_bytes_(max_event_bytes) {}
  // Appends `piece` and moves every completed event into `out`. Returns
  // false when one event exceeds max_event_bytes (the stream is unusable).
  bool feed(std::string_view piece, std::vector<SseMessage>& out);

 private:
  void line(std::string_view l, std::vector<SseMessage>& out);
  std::string buf_;
  std::size_t scan_ = 0;
  bool skip_lf_ = false;
  SseMessage cur_;
  bool has_data_ = false;
  std::size_t max_event_bytes_;
};

}  // namespace alou::gateway
