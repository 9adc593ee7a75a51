#pragma once
// The Server-Sent Events writer shared by the gateway, the agent and MCP.
// Obtained from Exchange::stream_sse; used only from the producer running
// on the connection's strand.
//
// send() queues an encoded event; while the queue is full it waits
// (back-pressure: a slow client slows the producer instead of growing
// memory). It returns false once the client has gone or the server is
// shutting down; the producer should then stop.
#include <boost/asio/awaitable.hpp>

#include <string>
#include <string_view>

namespace alou::http {

struct SseEvent {
  std::string_view event;  // "event:" line, omitted if empty
  std::string_view data;   // split on '\n' into several "data:" lines
  std::string_view id;     // "id:" line, omitted if empty
};

// The wire form of one event (what SseWriter::send writes).
std::string encode_sse(const SseEvent& event);

class SseWriter {
 public:
  virtual ~SseWriter() = default;
  virtual boost::asio::awaitable<bool> send(const SseEvent& event) = 0;
  // Raw, already-encoded SSE text (for relaying an upstream stream as is).
  virtual boost::asio::awaitable<bool> send_raw(std::string_view text) = 0;
  virtual bool closed() const = 0;
};

}  // namespace alou::http
