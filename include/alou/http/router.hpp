#pragma once
// Method + path routing with {param} segments. A path that matches no route
// is a 404; a path that matches only with other methods is a 405 whose
// `Allow` header lists them. Not thread-safe to modify; immutable once the
// server starts, then safe to read from every io thread.
#include "alou/http/types.hpp"

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace alou::http {

struct RouteOptions {
  Access access = Access::kAuthenticated;
  ErrorFormat format = ErrorFormat::kAlou;
  // Watch the socket while the handler runs and cancel it if the client
  // goes away (long-running and streaming routes).
  bool watch_client = false;
  // A model call: its handler applies the caller's whole usage policy
  // (UsagePolicy::admit), so the rate-limit filter leaves it alone.
  bool metered = false;
};

struct Route {
  Verb method;
  std::string pattern;                 // "/api/session/{id}"; also the metrics label
  Handler handler;
  RouteOptions options;
  std::vector<std::string> segments;   // split pattern; "{x}" marks a parameter
  std::size_t index = 0;               // position in the router (metrics)
};

using Params = std::vector<std::pair<std::string, std::string>>;

struct RouteMatch {
  const Route* route = nullptr;        // null: 404 or 405
  Params params;                       // percent-decoded
  std::string allow;                   // for a 405: "GET, POST"
};

class Router final {
 public:
  // Patterns start with '/'; a segment "{name}" matches one non-empty segment.
  Router& add(Verb method, std::string_view pattern, Handler handler, RouteOptions options = {});
  Router& get(std::string_view p, Handler h, RouteOptions o = {}) { return add(Verb::get, p, std::move(h), o); }
  Router& post(std::string_view p, Handler h, RouteOptions o = {}) { return add(Verb::post, p, std::move(h), o); }
  Router& put(std::string_view p, Handler h, RouteOptions o = {}) { return add(Verb::put, p, std::move(h), o); }
  Router& del(std::string_view p, Handler h, RouteOptions o = {}) { return add(Verb::delete_, p, std::move(h), o); }

  // `path` excludes the query string. HEAD matches GET routes.
  RouteMatch match(Verb method, std::string_view path) const;
  const std::vector<std::unique_ptr<Route>>& routes() const { return routes_; }

 private:
  std::vector<std::unique_ptr<Route>> routes_;
};

// Percent-decodes one path segment or query component ('+' kept as is for
// paths). Returns false on a malformed escape.
bool percent_decode(std::string_view in, std::string& out, bool plus_as_space = false);

}  // namespace alou::http
