#pragma once
// A server-side WebSocket connection (after Exchange::accept_websocket).
// Pings are sent automatically when idle and a peer that stops answering is
// dropped. One read and one write may be pending at a time; callers with
// several writers serialize them.
#include "alou/core/error.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace alou::http {

struct WsMessage {
  std::string data;
  bool binary = false;
};

class WebSocket {
 public:
  virtual ~WebSocket() = default;
  // One whole message. Error code "ws_closed" when the peer closed or the
  // connection dropped, "ws_too_large" when a message exceeds the limit.
  virtual boost::asio::awaitable<Result<WsMessage>> read() = 0;
  virtual boost::asio::awaitable<Result<void>> write(std::string_view data, bool binary = false) = 0;
  virtual boost::asio::awaitable<void> close(std::uint16_t code = 1000, std::string_view reason = {}) = 0;
};

}  // namespace alou::http
