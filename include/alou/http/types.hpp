#pragma once
// HTTP value types shared by the server, filters and handlers.
#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

#include <functional>

namespace alou::http {

namespace bhttp = boost::beast::http;
using Request = bhttp::request<bhttp::string_body>;
using Response = bhttp::response<bhttp::string_body>;
using Verb = bhttp::verb;
using Status = bhttp::status;

// The error shape a route answers in (DESIGN.md, Errors).
enum class ErrorFormat { kAlou, kOpenAi, kAnthropic };

// Who may call a route; enforced by the auth filter.
enum class Access { kPublic, kAuthenticated, kOwner };

class Exchange;
using Handler = std::function<boost::asio::awaitable<Response>(Exchange&)>;

}  // namespace alou::http
